"""Puts a kernel in its sandbox, then starts it.

    python -m grader.sandbox_launch POLICY_JSON|@POLICY_FILE -- python -m ipykernel_launcher -f conn.json

Run as root, in this order: the kernel's cgroup joined (one memory and process budget, one kill for
all its processes), a new session, new mount, network, IPC and process-id namespaces; then, in the
namespace's first process (its init, which stays to reap orphans and pass signals on): private
size-capped scratch space, the course's secret paths hidden, a /proc that shows only the kernel's
own processes, a private copy of the connection file; then, in the kernel's process: an
unprivileged user, resource limits, and exec. Three processes in all:

    launcher (outside, what jupyter_client signals) -> init of the namespace (root) -> kernel

A signal the launcher gets (interrupt, terminate) is passed to the kernel's process group; when the
launcher dies, the namespace dies with it. Each step the OS refuses is written to the report file
and skipped; the steps after it still apply. Nothing here imports torch or the course.

The launcher is either this module run by jupyter_client, or a fork of the grading process's kernel forker
(grader.kernel_fork), which runs the same steps and starts the kernel in-process where this execs it.
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 4096, 16384, 1 << 18
MNT_DETACH = 2
# Every tmpfs a kernel gets has a cap on its files too: a size limit alone lets millions of empty files through.
DEFAULT_INODES = 65536

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {target}")


class Steps:
    """Runs the sandbox's steps; each refusal is recorded, never fatal."""

    def __init__(self):
        self.refused: list[str] = []

    def __call__(self, name: str, fn) -> bool:
        try:
            fn()
            return True
        except Exception as exc:
            self.refused.append(f"{name}: {exc}")
            return False


def enter(policy: dict, step: Steps, pid_namespace: bool) -> bool:
    """In the launcher: the cgroup, a new session, the namespaces. True if the namespaces were made."""
    for procs in policy.get("cgroup_procs", []):
        step(f"join the kernel's cgroup ({os.path.dirname(procs)})", lambda p=procs: _join_cgroup(p))
    step("new session", lambda: os.getpid() == os.getsid(0) or os.setsid())
    is_root = os.geteuid() == 0
    flags = CLONE_NEWNS | CLONE_NEWIPC | (CLONE_NEWNET if policy.get("no_network", True) else 0)
    if not is_root:
        flags |= CLONE_NEWUSER
    namespaces = step("mount, IPC and network namespaces", lambda: _check(_libc.unshare(flags), "unshare"))
    if namespaces and not is_root:
        uid, gid = policy["real_uid"], policy["real_gid"]
        step("user namespace maps", lambda: _write_maps(uid, gid))
    if namespaces and pid_namespace:
        step("process-id namespace", lambda: _check(_libc.unshare(CLONE_NEWPID), "unshare"))
    return namespaces


def prepare(policy: dict, step: Steps, namespaces: bool, own_proc: bool) -> None:
    """As root in the new namespaces: the kernel's private view of the file system."""
    uid = policy.get("uid") if os.geteuid() == 0 else None
    work = policy["workdir"]
    inodes = policy.get("inodes") or DEFAULT_INODES
    if not namespaces:
        return
    step("private mounts", lambda: _mount("none", "/", None, MS_REC | MS_PRIVATE))
    step("scratch space for the submission", lambda: _tmpfs_keep(work, policy["disk_bytes"], uid, inodes))
    # Every world-writable place gets a private copy, so kernels cannot leave files for each other.
    for scratch in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock"):
        # The course itself may live under /tmp (a CI checkout, say): keep what the kernel needs.
        keep = [p for p in policy.get("expose", []) if _under(p, scratch)]
        step(f"private {scratch}", lambda s=scratch, k=keep: _private_scratch(s, policy["disk_bytes"], uid, k,
                                                                              policy["staging"], inodes))
    if os.path.isdir("/dev/mqueue") and not os.path.islink("/dev/mqueue"):
        # The queues of this IPC namespace only (the queues themselves are private without the mount too).
        step("private /dev/mqueue", lambda: _mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC))
    for path in policy.get("hide", []):
        step(f"hide {path}", lambda p=path: _hide(p))
    for device in policy.get("hide_devices", []):
        step(f"hide {device}", lambda d=device: _hide_device(d))
    for walled in policy.get("private_roots", []):
        step(f"show only what kernels need of {walled['root']}",
             lambda w=walled: _wall_off(w["root"], w["keep"], policy["staging"]))
    if uid is not None:
        for path in policy.get("expose", []):
            step(f"make {path} reachable for the kernel's user", lambda p=path: _expose(p, uid, policy["staging"]))
    if own_proc:
        # Only this namespace's processes, so no kernel reads another's command line or environment.
        step("a /proc of the kernel's own", lambda: _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC))


def confine(policy: dict, step: Steps) -> None:
    """In the kernel's own process, last: an unprivileged user and resource limits."""
    uid = policy.get("uid") if os.geteuid() == 0 else None
    if uid is not None:
        def drop():
            os.setgroups([])
            os.setgid(policy.get("gid", uid))
            os.setuid(uid)
        step("unprivileged user", drop)
    limits = {
        "memory limit": (resource.RLIMIT_AS, policy.get("memory_bytes")),
        "process limit": (resource.RLIMIT_NPROC, policy.get("max_processes")),
        "file size limit": (resource.RLIMIT_FSIZE, policy.get("file_bytes")),
        "CPU time limit": (resource.RLIMIT_CPU, policy.get("cpu_seconds")),
        "no core dumps": (resource.RLIMIT_CORE, 0),
    }
    for name, (which, value) in limits.items():
        if value is not None:
            step(name, lambda w=which, v=value: resource.setrlimit(w, (int(v), int(v))))
    os.chdir(policy["workdir"])


def apply(policy: dict) -> list[str]:
    """The whole sandbox in this one process, without a process-id namespace (that takes a fork);
    return the list of steps the OS refused."""
    step = Steps()
    namespaces = enter(policy, step, pid_namespace=False)
    prepare(policy, step, namespaces, own_proc=False)
    confine(policy, step)
    return step.refused


def _join_cgroup(procs: str) -> None:
    fd = os.open(procs, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.write(fd, str(os.getpid()).encode())
    finally:
        os.close(fd)


def private_connection_file(source: str, uid: int | None, folder: str) -> str:
    """A copy of the connection file (kept by the grader where the kernel cannot write) in a folder of
    the kernel's own: ipykernel rewrites its connection file, and must never touch the grader's."""
    with open(source, "rb") as f:
        data = f.read()
    dest = os.path.join(folder, "kernel.json")
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        if uid is not None:
            os.fchown(fd, uid, uid)
    finally:
        os.close(fd)
    return dest


def with_connection_file(command: list[str], old: str, new: str) -> list[str]:
    """`command` with the connection file after -f replaced."""
    out = list(command)
    for i, arg in enumerate(out[:-1]):
        if arg == "-f" and out[i + 1] == old:
            out[i + 1] = new
    return out


def _write_maps(uid: int, gid: int) -> None:
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def _tmpfs(path: str, size: int, uid: int | None, mode: int = 0o700, inodes: int = DEFAULT_INODES) -> None:
    if not os.path.isdir(path) or os.path.islink(path):
        return
    _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(size)},nr_inodes={int(inodes)},mode={mode:o}")
    if uid is not None:
        os.chown(path, uid, uid)


def _under(path: str, parent: str) -> bool:
    return os.path.realpath(path).startswith(parent.rstrip("/") + "/")


def _private_scratch(path: str, size: int, uid: int | None, keep: list[str], staging: str,
                     inodes: int = DEFAULT_INODES) -> None:
    """A fresh tmpfs over `path`, with the directories in `keep` bound back into it."""
    aside = []
    for i, kept in enumerate(keep):
        target = os.path.join(staging, f"keep-{os.path.basename(path)}-{i}")
        os.makedirs(target)
        _mount(kept, target, None, MS_BIND | MS_REC)
        aside.append((target, kept))
    _tmpfs(path, size, uid, mode=0o1777, inodes=inodes)
    for target, kept in aside:
        os.makedirs(kept, exist_ok=True)
        _mount(target, kept, None, MS_BIND | MS_REC)


def _tmpfs_keep(path: str, size: int, uid: int | None, inodes: int = DEFAULT_INODES) -> None:
    """Replace `path` by a size-capped tmpfs holding the same files (so a full disk is the sandbox's own)."""
    staged = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                staged[os.path.relpath(full, path)] = f.read()
    _tmpfs(path, size, uid, inodes=inodes)
    for rel, data in staged.items():
        dest = os.path.join(path, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as f:
            f.write(data)
    if uid is not None:
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), uid, uid)


def _blocked_ancestor(path: str, uid: int) -> str | None:
    """The highest directory above `path` that `uid` may not pass through (mode without o+x)."""
    current = "/"
    for part in os.path.abspath(path).strip("/").split("/")[:-1]:
        current = os.path.join(current, part)
        st = os.stat(current)
        if st.st_uid != uid and not st.st_mode & 0o001:
            return current
    return None


def _expose(path: str, uid: int, staging: str) -> None:
    """Let the kernel's user reach `path` (e.g. a Python under /root): hide what surrounds it instead.

    `path` is bound aside, a tmpfs replaces its closed ancestor, and `path` is bound back inside it,
    so the kernel sees the interpreter and nothing else of that ancestor.
    """
    path = os.path.realpath(path)
    blocked = _blocked_ancestor(path, uid)
    if blocked is None:
        return
    aside = os.path.join(staging, str(len(os.listdir(staging))))
    os.makedirs(aside)
    _mount(path, aside, None, MS_BIND | MS_REC)
    if not os.path.ismount(blocked) or os.stat(blocked).st_mode & 0o777 != 0o755:
        _mount("tmpfs", blocked, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,nr_inodes=64,mode=755")
    os.makedirs(path, exist_ok=True)
    _mount(aside, path, None, MS_BIND | MS_REC)


def _hide(path: str) -> None:
    if os.path.isdir(path):
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,nr_inodes=2,mode=000")
    elif os.path.exists(path):
        _mount("/dev/null", path, None, MS_BIND)


def _wall_off(root: str, keep: list[str], staging: str) -> None:
    """Cover `root` with an empty tmpfs of root's and bind back only `keep` (paths inside it): files made
    in `root` later (a gradebook's journal) stay out of sight too."""
    if not os.path.isdir(root):
        return
    aside = []
    for kept in keep:
        target = os.path.join(staging, f"root-{len(os.listdir(staging))}")
        os.makedirs(target) if os.path.isdir(kept) else open(target, "x").close()
        _mount(kept, target, None, MS_BIND | MS_REC)
        aside.append((target, kept))
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,nr_inodes=256,mode=755")
    for target, kept in aside:
        if os.path.isdir(target):
            os.makedirs(kept, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            open(kept, "a").close()
        _mount(target, kept, None, MS_BIND | MS_REC)


def _hide_device(path: str) -> None:
    """A GPU the kernel was not given: its device node becomes /dev/null."""
    if os.path.exists(path) and not os.path.islink(path):
        _mount("/dev/null", path, None, MS_BIND)


def main(argv: list[str], run=None) -> None:
    """The launcher's steps. `run`, if given, is called in the kernel's process, sandboxed, with the kernel's
    command, in place of exec (grader.kernel_fork: a kernel that starts with what its forker imported)."""
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python -m grader.sandbox_launch POLICY_JSON -- COMMAND...\n")
        raise SystemExit(2)
    policy = read_policy(argv[0])
    command = argv[2:]
    report = _open_report(policy.get("report"))
    step = Steps()
    # The launcher dies with the grading process that started it (a worker killed mid-grade cannot shut its
    # kernel down); the namespace's init dies with the launcher, and with it every process of the kernel.
    step("die with the grading process", lambda: _die_with(policy.get("grader_pid")))
    namespaces = enter(policy, step, pid_namespace=True)
    pid_namespace = namespaces and not _was_refused(step, "process-id namespace")
    init = _fork_and_forward(step)
    if init:
        _wait_and_exit(init)  # the launcher: what jupyter_client watches and signals
    # The namespace's init: root, and alive exactly as long as the launcher.
    step("die with the launcher", _die_with_parent)
    prepare(policy, step, namespaces, own_proc=pid_namespace)
    uid = policy.get("uid") if os.geteuid() == 0 else None
    source = policy.get("connection_file")
    if source and uid is not None:
        folder = "/tmp" if namespaces and not _was_refused(step, "private /tmp") else policy["workdir"]

        def copy():
            nonlocal command
            command = with_connection_file(command, source, private_connection_file(source, uid, folder))
        step("a private copy of the connection file", copy)
    kernel = _fork_and_forward(step, group=True)
    if kernel:
        _wait_and_exit(kernel)
    step("die with the namespace's init", _die_with_parent)
    confine(policy, step)
    if report is not None:
        try:
            os.write(report, json.dumps(step.refused).encode())
        except OSError:
            pass
    # ipykernel exits when its parent looks like init, unless told its parent is init: here it is, on purpose.
    os.environ["JPY_PARENT_PID"] = "1"
    if run is not None:
        if report is not None:
            os.close(report)  # an exec would have closed it
        run(command)
    os.execvpe(command[0], command, os.environ)


def read_policy(arg: str) -> dict:
    """The policy: JSON, or @FILE for a file of JSON (read while still root)."""
    if arg.startswith("@"):
        with open(arg[1:]) as f:
            return json.load(f)
    return json.loads(arg)


def _was_refused(step: Steps, name: str) -> bool:
    return any(r.startswith(name + ":") for r in step.refused)


def _open_report(path: str | None) -> int | None:
    """Opened while still root, in the grader's folder (the kernel cannot swap it for a link), and
    written by the kernel's process just before exec, when every step is known."""
    if not path:
        return None
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError:
        return None


def _die_with_parent() -> None:
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")


def _die_with(parent: int | None) -> None:
    _die_with_parent()
    if parent and os.getppid() != parent:  # the grader died before the line above took effect
        os._exit(1)


_target = 0  # the child that signals are passed on to
_target_group = False


def _forward(signum, _frame) -> None:
    if not _target:
        return
    try:
        (os.killpg if _target_group else os.kill)(_target, signum)
    except OSError:
        pass


def _fork_and_forward(step: Steps, group: bool = False) -> int:
    """Fork; the parent passes the signals in FORWARDED on to the child (to its whole process group if
    `group`: the kernel and the processes it started). Returns the child's pid in the parent, 0 in it."""
    global _target, _target_group
    _target = 0
    for signum in FORWARDED:  # before the fork: no signal may find the parent without a handler
        signal.signal(signum, _forward)
    child = os.fork()
    if child == 0:
        for signum in FORWARDED:
            signal.signal(signum, signal.SIG_DFL)
        # A group of its own: a signal to the launcher's group reaches the launcher alone, which passes it on
        # once (it would reach the kernel twice otherwise).
        step("a process group of its own", lambda: os.setpgid(0, 0))
        return 0
    try:
        os.setpgid(child, child)  # also here: a signal may come before the child has run
    except OSError:
        pass
    _target, _target_group = child, group
    return child


def _wait_and_exit(child: int) -> None:
    """Reap every child (an init must, or orphans stay zombies) until `child` exits; exit as it did."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main(sys.argv[1:])
