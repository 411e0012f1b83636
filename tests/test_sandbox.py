"""A grading kernel is sandboxed: no network, no secrets, an unprivileged user, limits, one kill for all."""
from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path

import pytest

from grader.remote import run_code
from grader.sandbox import SandboxedKernelManager


@contextlib.asynccontextmanager
async def running_kernel(cwd):
    """A sandboxed kernel started on `cwd` and a client ready to talk to it; both stopped afterwards."""
    km = SandboxedKernelManager()
    await km.start_kernel(cwd=str(cwd))
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        yield km, kc
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


pytestmark = pytest.mark.slow

PROBE = r'''
import os, socket, json, resource
r = {}
try:
    socket.create_connection(("127.0.0.1", 9), timeout=2); r["network"] = "reached"
except OSError as e:
    r["network"] = type(e).__name__
try:
    os.listdir(SECRET); r["secret"] = os.listdir(SECRET)
except OSError as e:
    r["secret"] = type(e).__name__
try:
    open(os.path.join(SECRET, "answer.txt")).read(); r["secret_file"] = "read"
except OSError as e:
    r["secret_file"] = type(e).__name__
try:
    open("/etc/llmcourse-sandbox-test", "w").write("x"); r["write_outside"] = "written"
except OSError as e:
    r["write_outside"] = type(e).__name__
open("mine.txt", "w").write("ok")
r["cwd_files"] = sorted(os.listdir("."))
r["uid"] = os.getuid()
r["mem"] = resource.getrlimit(resource.RLIMIT_AS)[0]
from IPython.display import publish_display_data
publish_display_data({"application/x-probe": json.dumps(r)})
'''


@pytest.fixture
def secret_dir(tmp_path):
    # Outside /tmp (which every kernel gets privately anyway) and world-readable: only the mount hides it.
    import tempfile

    artifacts = Path(__file__).parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    secret = Path(tempfile.mkdtemp(prefix="secret-", dir=artifacts))
    secret.chmod(0o755)
    (secret / "answer.txt").write_text("42")
    (secret / "answer.txt").chmod(0o644)
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "notebook.ipynb").write_text("{}")
    return secret, submission


async def _probe(secret: Path, submission: Path) -> dict:
    import json

    km = SandboxedKernelManager(hide_paths=[str(secret)], memory_limit=4 * 2**30)
    await km.start_kernel(cwd=str(submission))
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        status, payloads = await run_code(kc, f"SECRET = {str(secret)!r}\n" + PROBE, 60, "application/x-probe")
        assert status == "ok", status
        return {**json.loads(payloads[-1]), "refused": km.refused(), "pgid": km._pgid}
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


def test_kernel_has_no_network_no_secrets_and_its_own_scratch(secret_dir):
    secret, submission = secret_dir
    r = asyncio.run(_probe(secret, submission))
    assert r["network"] in ("OSError", "ConnectionRefusedError", "PermissionError") or "Unreachable" in r["network"]
    assert r["network"] != "reached"
    # A repository checked out under /tmp puts the secret there too: the kernel's private /tmp then hides it
    # before the mount does, and the folder is not found at all (as safe, and only possible there).
    under_tmp = secret.resolve().is_relative_to("/tmp")
    assert r["secret"] in ([], "PermissionError", *(["FileNotFoundError"] if under_tmp else []))
    assert r["secret_file"] in ("FileNotFoundError", "PermissionError")
    assert r["write_outside"] in ("PermissionError", "OSError", "FileNotFoundError")
    assert [f for f in r["cwd_files"] if not f.startswith(".")] == ["mine.txt", "notebook.ipynb"]  # the submission + its own files
    assert not (submission / "mine.txt").exists()  # ... in its own scratch space, not the grader's disk
    if os.geteuid() == 0:
        assert r["uid"] >= 200000 and r["refused"] == []  # a user of its own, with no rights anywhere
    assert r["mem"] == 4 * 2**30


def test_stopping_the_kernel_kills_every_process_it_started_even_in_a_new_session(secret_dir):
    secret, submission = secret_dir
    # The kernel has a process-id namespace of its own: its pids mean nothing here, so the child is
    # found on the host by a token on its command line.
    token = f"llmcourse-stray-{uuid.uuid4().hex}"

    async def scenario():
        async with running_kernel(submission) as (km, kc):
            await run_code(kc, "import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', "
                               f"{token!r}], start_new_session=True)", 30)
            assert _host_processes(token), "the child did not start"

    asyncio.run(scenario())
    assert _host_processes(token) == [], "a process started by the kernel outlived it"


GRADER_THAT_DIES = """
import asyncio, sys
from grader.remote import run_code
from grader.sandbox import SandboxedKernelManager

async def main(cwd, token):
    km = SandboxedKernelManager()
    await km.start_kernel(cwd=cwd)
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    await run_code(kc, "import subprocess, sys\\np = subprocess.Popen([sys.executable, '-c', 'import time; "
                       "time.sleep(300)', %r])" % token, 60)
    print("ready", flush=True)
    await asyncio.sleep(3600)  # killed long before

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_a_grading_process_killed_mid_grade_takes_its_kernels_with_it(secret_dir):
    """A worker SIGKILLed while it grades (out of memory, say) cannot shut its kernel down: the launcher dies
    with it, and so does everything in the kernel's namespace, instead of living on unwatched."""
    import subprocess
    import sys

    import psutil

    _, submission = secret_dir
    token = f"llmcourse-orphan-{uuid.uuid4().hex}"
    grader = subprocess.Popen([sys.executable, "-c", GRADER_THAT_DIES, str(submission), token],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert grader.stdout.readline().strip() == "ready", "the grading process did not start its kernel"
        survivors = [psutil.Process(p) for p in _host_processes(token)]
        assert survivors, "the kernel's child did not start"
    finally:
        grader.kill()
        grader.wait()
    _, alive = psutil.wait_procs(survivors, timeout=60)  # the kill is immediate; this only bounds a failure
    assert alive == [], "processes of a dead grader's kernel live on"


def _host_processes(token: str) -> list[int]:
    """Live host processes with `token` on their command line."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if token.encode() not in f.read():
                        continue
                with open(f"/proc/{entry.name}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
            except OSError:
                continue
            found.append(int(entry.name))
    return found


def test_each_kernel_sees_one_gpu_and_no_address_space_limit_with_cuda():
    """GPU settings (checked without a GPU: they only shape the launch)."""
    a = SandboxedKernelManager(gpus=[3, 5], gpu_memory_fraction=0.25)
    b = SandboxedKernelManager(gpus=[3, 5])
    try:
        assert {a._gpu(), b._gpu()} == {3, 5}  # two kernels, two GPUs
        assert a._policy()["memory_bytes"] is None  # never RLIMIT_AS with CUDA: it breaks its mappings
    finally:
        for km in (a, b):
            km._release_uid()
            import shutil

            shutil.rmtree(km.sandbox_dir, ignore_errors=True)


def test_without_gpus_kernels_see_none_and_keep_the_memory_limit():
    km = SandboxedKernelManager(memory_limit=2**30)
    try:
        assert km._gpu() is None and km._policy()["memory_bytes"] == 2**30
    finally:
        km._release_uid()
        import shutil

        shutil.rmtree(km.sandbox_dir, ignore_errors=True)


def test_the_kernel_gets_the_courses_thread_setting_and_nothing_else_of_the_graders(monkeypatch, tmp_path):
    """LLMCOURSE_THREADS is the one course setting a grading kernel inherits: the notebooks' torch threads follow it
    at grading time as they do on a laptop. The grader's other variables (a secret among them) stay out."""
    from grader.sandbox import kernel_environment

    monkeypatch.setenv("LLMCOURSE_THREADS", "3")
    monkeypatch.setenv("GRADER_DATABASE_PASSWORD", "hunter2")
    env = kernel_environment(str(tmp_path), threads=2)
    assert env["LLMCOURSE_THREADS"] == "3" and env["OMP_NUM_THREADS"] == "2"
    assert "GRADER_DATABASE_PASSWORD" not in env
    monkeypatch.delenv("LLMCOURSE_THREADS")
    assert "LLMCOURSE_THREADS" not in kernel_environment(str(tmp_path), threads=2)  # the course's default applies


def test_a_refused_protection_is_reported_and_the_others_still_hold(tmp_path):
    """Ask for something the OS refuses (a scratch tmpfs of an impossible size): it is named in the
    report, and the network namespace and the limits after it are still applied."""
    import json
    import subprocess
    import sys

    work = tmp_path / "work"
    work.mkdir()
    policy = {"workdir": str(work), "staging": str(tmp_path), "disk_bytes": "not-a-size", "no_network": True,
              "max_processes": 300, "file_bytes": 2**20}
    probe = ("import json, resource, socket\n"
             "from grader.sandbox_launch import apply\n"
             f"refused = apply(json.loads({json.dumps(json.dumps(policy))}))\n"
             "try:\n    socket.create_connection(('127.0.0.1', 9), timeout=1); net = 'reached'\n"
             "except OSError as e:\n    net = type(e).__name__\n"
             "print(json.dumps({'refused': refused, 'net': net, 'nproc': resource.getrlimit(resource.RLIMIT_NPROC)[0]}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if os.geteuid() == 0:
        assert any(r.startswith("scratch space") for r in result["refused"])
        assert result["net"] != "reached"
    assert result["nproc"] == 300


def test_the_graded_notebook_keeps_what_the_os_refused_its_sandbox(tmp_path):
    """Read while the kernel lives: the sandbox's report goes with the kernel at the end of grading."""
    import nbformat

    from grader.preprocessors import RunChecks

    class Refused(SandboxedKernelManager):
        def refused(self):
            return [*super().refused(), "a protection this test says was refused"]

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    RunChecks(kernel_manager_class=Refused, timeout=60).preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert "a protection this test says was refused" in nb.metadata["llmcourse"]["grading"]["sandbox_refused"]


# -- the grader never follows a link a kernel could have placed ------------------------------------------
def test_a_kernel_cannot_touch_the_files_root_opens_for_it(secret_dir):
    """The connection file and the report are in a folder of root's; the socket folder is root's once the
    kernel is up, with only the kernel's own sockets in it; the kernel works on a private copy."""
    if os.geteuid() != 0:
        pytest.skip("kernels run as the grader's own user when it is not root")
    import json
    import stat

    _, submission = secret_dir
    probe = r'''
import json, os, sys
r = {"argv_f": sys.argv[sys.argv.index("-f") + 1]}
for name, path in (("ipc", IPC + "/planted"), ("conn", CONN + "/planted")):
    try:
        open(path, "w"); r[name] = "written"
    except OSError as e:
        r[name] = type(e).__name__
from IPython.display import publish_display_data
publish_display_data({"application/x-probe": json.dumps(r)})
'''

    async def scenario():
        async with running_kernel(submission) as (km, kc):
            code = f"IPC, CONN = {str(km.ipcdir)!r}, {str(km.conndir)!r}\n" + probe
            status, payloads = await run_code(kc, code, 60, "application/x-probe")
            ipc, conn = os.lstat(km.ipcdir), os.lstat(km.conndir)
            sockets = [f"{km.ip}-{port}" for port in km.ports]
            return json.loads(payloads[-1]), ipc, conn, sockets, [os.lstat(s) for s in sockets], km._uid()

    r, ipc, conn, sockets, socket_stats, uid = asyncio.run(scenario())
    assert r["ipc"] in ("PermissionError", "OSError") and r["conn"] in ("PermissionError", "OSError")
    assert r["argv_f"] == "/tmp/kernel.json"  # its own copy, in its private /tmp
    assert (ipc.st_uid, stat.S_IMODE(ipc.st_mode)) == (0, 0o755)
    assert (conn.st_uid, conn.st_mode & 0o777) == (0, 0o700)  # (jupyter_client adds the sticky bit)
    assert all(stat.S_ISSOCK(st.st_mode) and st.st_uid == uid for st in socket_stats)


def test_only_sockets_of_the_kernels_own_user_pass_the_check(tmp_path):
    import socket

    from grader.sandbox import foreign_sockets

    def bound(name, owner):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(tmp_path / name))
        os.chown(tmp_path / name, owner, owner, follow_symlinks=False)
        return s

    owner = os.getuid() + 1 if os.geteuid() == 0 else os.getuid()
    other = 0 if os.geteuid() == 0 else None
    keep = [bound("k-1", owner)]
    (tmp_path / "k-2").symlink_to(tmp_path / "k-1")  # a link to a socket, even a good one, is refused
    (tmp_path / "k-3").write_text("")
    paths = [str(tmp_path / n) for n in ("k-1", "k-2", "k-3", "k-4")]  # k-4: never bound
    if other is not None:
        keep.append(bound("k-5", other))  # another user's socket (another kernel's, say)
        paths.append(str(tmp_path / "k-5"))
    try:
        expected = [p for p in paths if p.endswith(("k-2", "k-3", "k-5"))]
        assert foreign_sockets(paths, owner) == expected
    finally:
        for s in keep:
            s.close()


def test_a_restart_makes_the_sandbox_folders_afresh_without_following_links(tmp_path):
    """Whatever a kernel left in its folders (a link to a folder of root's, say) goes, and the link's target
    is untouched."""
    target = tmp_path / "roots"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    km = SandboxedKernelManager()
    try:
        km._fresh_folders()
        for folder in (km.workdir, km.conndir):
            (folder / "kernel.json").symlink_to(target)
            (folder / "sub").symlink_to(target)
        km._fresh_folders()
        for folder in (km.workdir, km.ipcdir, km.conndir):
            assert list(folder.iterdir()) == []
        assert (target / "keep.txt").read_text() == "x"
        assert os.stat(target).st_uid == os.geteuid()
    finally:
        km._unmount_ipc()
        km._release_uid()
        import shutil

        shutil.rmtree(km.sandbox_dir, ignore_errors=True)


def test_the_private_connection_file_is_never_written_through_a_link(tmp_path):
    from grader.sandbox_launch import private_connection_file, with_connection_file

    source = tmp_path / "conn.json"
    source.write_text('{"key": "k"}')
    folder = tmp_path / "private"
    folder.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (folder / "kernel.json").symlink_to(victim)
    with pytest.raises(FileExistsError):
        private_connection_file(str(source), None, str(folder))
    assert victim.read_text() == "untouched"
    (folder / "kernel.json").unlink()
    copy = private_connection_file(str(source), None, str(folder))
    assert open(copy).read() == '{"key": "k"}'
    command = ["python", "-m", "ipykernel_launcher", "-f", str(source), "--x=1"]
    assert with_connection_file(command, str(source), copy) == ["python", "-m", "ipykernel_launcher", "-f", copy, "--x=1"]


# -- cgroups ------------------------------------------------------------------------------------------------
V1_MOUNTS = """cgroup {root}/memory cgroup rw,relatime,memory 0 0
cgroup {root}/pids cgroup rw,relatime,pids 0 0
cgroup {root}/freezer cgroup rw,relatime,freezer 0 0
cgroup2 {root}/unified cgroup2 rw,relatime 0 0
proc /proc proc rw 0 0
"""
MEMBERSHIP = "4:memory:/grading\n8:pids:/\n6:freezer:/\n0::/\n"


def _fake_hierarchy(root: Path, v2_controllers: str) -> None:
    for name in ("memory/grading", "pids", "freezer", "unified"):
        (root / name).mkdir(parents=True)
    (root / "unified" / "cgroup.controllers").write_text(v2_controllers)
    (root / "unified" / "cgroup.subtree_control").write_text("")


def test_cgroup_v2_is_chosen_when_it_offers_memory_and_pids(tmp_path):
    from grader.cgroups import KernelCgroup

    _fake_hierarchy(tmp_path, "cpu io memory pids")
    (tmp_path / "unified" / "llmcourse-grader").mkdir()
    (tmp_path / "unified" / "llmcourse-grader" / "cgroup.subtree_control").write_text("")
    group = KernelCgroup("kernel-a", memory_bytes=2**30, max_pids=100,
                         mounts=V1_MOUNTS.format(root=tmp_path), membership=MEMBERSHIP)
    group.create()
    assert group.version == 2
    assert group.dirs == {"": str(tmp_path / "unified" / "llmcourse-grader" / "kernel-a")}
    assert (tmp_path / "unified" / "cgroup.subtree_control").read_text() == "+memory +pids +io"


def test_cgroup_v1_is_used_below_the_graders_own_group_when_v2_has_no_controllers(tmp_path):
    from grader.cgroups import KernelCgroup

    _fake_hierarchy(tmp_path, "")
    group = KernelCgroup("kernel-b", memory_bytes=2**30, max_pids=100,
                         mounts=V1_MOUNTS.format(root=tmp_path), membership=MEMBERSHIP)
    group.create()
    assert group.version == 1
    assert group.dirs == {"memory": str(tmp_path / "memory" / "grading" / "llmcourse-grader" / "kernel-b"),
                          "pids": str(tmp_path / "pids" / "llmcourse-grader" / "kernel-b"),
                          "freezer": str(tmp_path / "freezer" / "llmcourse-grader" / "kernel-b")}
    assert sorted(group.procs_files()) == sorted(os.path.join(d, "cgroup.procs") for d in group.dirs.values())


def test_without_any_usable_cgroup_one_refusal_says_why():
    from grader.cgroups import KernelCgroup

    group = KernelCgroup("kernel-c", memory_bytes=2**30, mounts="proc /proc proc rw 0 0\n", membership="")
    group.create()
    assert group.version is None and group.dirs == {} and group.procs_files() == []
    assert len(group.refused) == 1 and "no cgroup v2 hierarchy" in group.refused[0]
    group.kill()  # nothing to do, and no error
    group.remove()


def test_a_real_cgroup_limits_and_kills_every_process_in_it():
    """On this machine's own cgroups (as root): the limits are written, a process that joins and forks a
    child in a new session is killed with it at once, and the group is removed."""
    if os.geteuid() != 0:
        pytest.skip("creating cgroups needs root")
    import subprocess
    import sys

    from grader.cgroups import KernelCgroup

    group = KernelCgroup(f"test-{uuid.uuid4().hex[:8]}", memory_bytes=2**30, max_pids=64)
    group.create()
    if not group.dirs:
        pytest.skip(f"no usable cgroup here: {group.refused}")
    try:
        assert group.refused == []
        if group.version == 1:
            assert open(os.path.join(group.dirs["memory"], "memory.limit_in_bytes")).read().strip() == str(2**30)
            assert open(os.path.join(group.dirs["pids"], "pids.max")).read().strip() == "64"
        else:
            assert open(os.path.join(group.dirs[""], "memory.max")).read().strip() == str(2**30)
        procs = group.procs_files()
        code = ("import os, subprocess, sys\n"
                f"for p in {procs!r}:\n    open(p, 'w').write(str(os.getpid()))\n"
                "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True)\n"
                "print('ready', flush=True)\nimport time; time.sleep(300)")
        parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert parent.stdout.readline().strip() == "ready"
        pids = group.pids()
        assert parent.pid in pids and len(pids) == 2  # the parent and its child in a session of its own
        group.kill()
        parent.wait(timeout=60)
        assert group.wait_empty()
    finally:
        group.remove()
    assert group.dirs == {} and not any(os.path.exists(p) for p in procs)


# -- user ids and GPUs -----------------------------------------------------------------------------------
def test_consecutive_kernels_of_one_process_get_different_user_ids():
    if os.geteuid() != 0:
        pytest.skip("user ids are handed out only when the grader is root")
    import shutil

    first = SandboxedKernelManager()
    uid = first._uid()
    first._release_uid()
    shutil.rmtree(first.sandbox_dir, ignore_errors=True)
    second = SandboxedKernelManager()
    try:
        assert second._uid() != uid  # a uid just freed is not handed on at once
    finally:
        second._release_uid()
        shutil.rmtree(second.sandbox_dir, ignore_errors=True)


def test_a_user_id_is_cleared_of_every_process_before_it_is_handed_out():
    if os.geteuid() != 0:
        pytest.skip("needs root to run a process as another user")
    import subprocess
    import sys

    from grader.sandbox import clear_user, user_processes

    uid = 200000 + 9999
    code = f"import os, time\nos.setsid()\nos.setgid({uid})\nos.setuid({uid})\ntime.sleep(300)"
    left = subprocess.Popen([sys.executable, "-c", code])
    try:
        for _ in range(200):
            if user_processes(uid):
                break
            left.poll()
            import time

            time.sleep(0.05)
        assert user_processes(uid) == [left.pid]
        assert clear_user(uid)
        assert user_processes(uid) == []
    finally:
        left.kill()
        left.wait()


def test_a_kernel_sees_only_the_gpu_it_was_given():
    from grader.sandbox import hidden_gpu_devices

    devices = ["nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm", "nvidia-modeset", "null", "nvidia10"]
    assert hidden_gpu_devices(1, devices) == ["/dev/nvidia0", "/dev/nvidia10", "/dev/nvidia2"]
    assert hidden_gpu_devices(None, devices) == ["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidia10", "/dev/nvidia2"]
    assert hidden_gpu_devices(0, ["null", "zero"]) == []
    km = SandboxedKernelManager(gpus=[0])
    try:
        assert km._policy()["hide_devices"] == hidden_gpu_devices(0, os.listdir("/dev"))
    finally:
        km._release_uid()
        import shutil

        shutil.rmtree(km.sandbox_dir, ignore_errors=True)


def test_of_a_course_root_a_kernel_sees_only_the_packages_and_assets(tmp_path):
    """The repository as a course root: its package and assets stay, everything else goes, including a file
    made there after the kernel started (as a gradebook's journal is)."""
    if os.geteuid() != 0:
        pytest.skip("private mounts need root here")
    import json

    repo = Path(__file__).resolve().parents[1]
    submission = tmp_path / "submission"
    submission.mkdir()
    late = repo / f"gradebook.db-journal-test-{uuid.uuid4().hex[:8]}"
    probe = r'''
import json, os
import llmcourse.assets
r = {"listing": sorted(os.listdir(REPO)), "assets": str(llmcourse.assets.assets_dir())}
try:
    open(LATE).read(); r["late"] = "read"
except OSError as e:
    r["late"] = type(e).__name__
from IPython.display import publish_display_data
publish_display_data({"application/x-probe": json.dumps(r)})
'''

    async def scenario():
        km = SandboxedKernelManager(private_roots=[str(repo)])
        await km.start_kernel(cwd=str(submission))
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            late.write_text("journal")  # appears on the host after the kernel's view was made
            status, payloads = await run_code(kc, f"REPO, LATE = {str(repo)!r}, {str(late)!r}\n" + probe, 60,
                                              "application/x-probe")
            return json.loads(payloads[-1]), km.refused()
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
            late.unlink(missing_ok=True)

    r, refused = asyncio.run(scenario())
    assert refused == []
    assert set(r["listing"]) <= {"assets", "llmcourse", ".venv"} and "llmcourse" in r["listing"]
    assert r["assets"] == str(repo / "assets")
    assert r["late"] == "FileNotFoundError"


def test_a_course_root_keeps_only_the_outermost_needed_paths(tmp_path):
    from grader.sandbox import private_roots

    root = tmp_path / "course"
    (root / "llmcourse" / "assets").mkdir(parents=True)
    needed = [str(root / "llmcourse"), str(root / "llmcourse" / "assets"), "/usr"]
    assert private_roots([str(root)], needed) == [{"root": str(root), "keep": [str(root / "llmcourse")]}]
    assert private_roots([str(root / "llmcourse")], needed) == []  # needed itself: left as it is
    assert private_roots([str(tmp_path / "missing")], needed) == []


def test_an_interrupt_reaches_the_kernel_through_its_launcher_and_init(secret_dir):
    """jupyter_client signals the launcher; the kernel, two processes further, gets the KeyboardInterrupt."""
    _, submission = secret_dir

    async def scenario():
        async with running_kernel(submission) as (km, kc):
            msg_id = kc.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(120)")
            while True:  # interrupt once the cell is running, not before
                msg = await kc.get_iopub_msg(timeout=60)
                if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                    break
            await km.interrupt_kernel()
            while True:
                reply = await kc.get_shell_msg(timeout=60)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return reply["content"]

    content = asyncio.run(scenario())
    assert content["status"] == "error" and content["ename"] == "KeyboardInterrupt"


def test_a_kernel_that_fails_to_start_leaves_no_mount_and_no_cgroup(tmp_path):
    """A submission folder the grader cannot copy (a socket in a subfolder) fails the start: the socket
    folder's tmpfs and the kernel's cgroup go with it."""
    import shutil
    import socket

    submission = tmp_path / "submission"
    (submission / "sub").mkdir(parents=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(submission / "sub" / "sock"))
    km = SandboxedKernelManager()
    seen = {}
    real = km._make_cgroup

    def make_cgroup():
        seen["group"] = real()
        seen["dirs"] = dict(seen["group"].dirs) if seen["group"] is not None else {}
        return seen["group"]

    km._make_cgroup = make_cgroup
    try:
        with pytest.raises(shutil.Error):
            asyncio.run(km.start_kernel(cwd=str(submission)))
        assert not os.path.ismount(km.ipcdir)
        assert not any(os.path.exists(d) for d in seen["dirs"].values())
        if os.geteuid() == 0:
            assert seen["dirs"]  # there was a cgroup to remove
    finally:
        listener.close()
        km._tear_down()
        km._release_uid()
        shutil.rmtree(km.sandbox_dir, ignore_errors=True)
