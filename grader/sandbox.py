"""A kernel manager that starts every grading kernel in its own sandbox.

nbgrader's Execute preprocessor (and ours, `RunChecks`) takes a `kernel_manager_class`; this is it.
Each kernel gets:
- a fresh scratch directory holding only the submission's files (copied in), size-capped;
- no network (its own network namespace) and Unix-socket (ipc) transport to the grader;
- its own IPC and process-id namespaces: no shared memory or message queue reaches another kernel, and
  its /proc shows only its own processes;
- the course's secrets hidden: grader/, source/, solutions/, the gradebook, other submissions;
- an unprivileged user of its own when the grader runs as root, never handed on while a process of it lives;
- a cgroup: one limit on memory (tmpfs pages included), processes and disk throughput for all its
  processes together, and one kill that reaches all of them when it is stopped;
- the same Python and packages as the grader, whatever kernel the notebook names.

A CPU kernel's process is a fork of the grading process's kernel forker (grader/kernel_fork.py), a clean
Python that has imported torch, ipykernel and the course's packages once (forked in turn from its program's
forker parent, where the grading process came from the program's template), and that goes through every step
above (grader/sandbox_launch.py) before it starts ipykernel in-process; a GPU kernel, or any kernel when
`fork_kernels` is off or the forker cannot serve, is a new Python, exec'd.

The grader, which runs as root, never follows a link that a kernel could have placed: the connection
file lives in a folder only root can write (the kernel gets a private copy), the sandbox's folders are
made afresh for every start, and the kernel's socket folder (a tiny tmpfs) is taken back from the kernel
once its sockets are bound, each checked to be a socket of the kernel's own user before the grader
connects. What the OS refuses is logged once per grading process; everything else still applies.

GPUs: a kernel sees one GPU (CUDA_VISIBLE_DEVICES), and the device nodes of the others (/dev/nvidia<N>)
are /dev/null in its namespace, so it cannot open them even by undoing CUDA_VISIBLE_DEVICES. This takes
the CUDA index of a GPU to be the <N> of its node, which CUDA_DEVICE_ORDER=PCI_BUS_ID makes true on usual
machines (check `nvidia-smi -q | grep Minor` where it matters). What stays advisory: the share of its GPU's
memory (gpu_memory_fraction is applied by the kernel's own torch, which the student's code could undo) and
compute time on the shared GPU; /dev/nvidiactl and /dev/nvidia-uvm stay visible, as CUDA needs them. MIG
partitions give hard limits where they are needed.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import time
from pathlib import Path

import zmq
from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool, Float, Integer, List, Unicode, default

from .cgroups import KernelCgroup

_REPORTED: set[str] = set()

# What a kernel must never see in a course directory: the secrets, the gradebook, other students' work.
COURSE_SECRETS = ("grader", "source", "solutions", "autograded", "submitted", "feedback", "tests", "demo",
                  "exchange", "reports", "gradebook.db", "gradebook.db-journal", "gradebook.db-wal",
                  "gradebook.db-shm", ".git", ".grader", ".pytest_cache")


def course_secrets(root: str | os.PathLike) -> list[str]:
    """The paths in course directory `root` to hide from kernels, plus the grader's own code wherever
    it is installed."""
    return [os.path.join(root, name) for name in COURSE_SECRETS] + [os.path.dirname(os.path.abspath(__file__))]


def sandbox_base() -> Path:
    """Where sandboxes live: outside /tmp, which each kernel gets privately."""
    env = os.environ.get("GRADER_SANDBOX_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/llmcourse-grader")
    return Path(os.path.expanduser("~/.cache/llmcourse-grader/sandboxes"))


def kernel_environment(workdir: str, threads: int) -> dict[str, str]:
    """A small, clean environment: nothing of the grader's leaks in, nothing reaches a hub.

    LLMCOURSE_THREADS is the one course setting passed on: the kernel's torch threads are the course's thread
    setting (llmcourse.setup.threads_wanted), so that the instructor who sets it for a bigger model grades with it.
    """
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                       "LLMCOURSE_THREADS") if k in os.environ}
    return {
        **keep,
        "HOME": workdir,
        "TMPDIR": "/tmp",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",  # set and dict orders are the same at every grading
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": os.path.join(workdir, ".cache", "huggingface"),
        "MPLCONFIGDIR": os.path.join(workdir, ".cache", "matplotlib"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
    }


def kernel_threads(setting: int = 0) -> int:
    """The BLAS threads of a kernel for `SandboxedKernelManager.threads` = `setting` (0: one per core)."""
    return setting or max(1, os.cpu_count() or 1)


class SandboxedKernelManager(AsyncKernelManager):
    memory_limit = Integer(6 * 2**30, help="Memory of the kernel and all its processes together, tmpfs pages included "
                                           "(a cgroup), and the address-space limit of each process (CPU only), in "
                                           "bytes; 0: none.").tag(config=True)
    disk_limit = Integer(512 * 2**20, help="Size of the kernel's scratch space and private /tmp, in bytes.").tag(config=True)
    file_size_limit = Integer(256 * 2**20, help="Largest file the kernel may write, in bytes.").tag(config=True)
    max_processes = Integer(512, help="Processes and threads the sandbox user may run at once.").tag(config=True)
    io_limit = Integer(256 * 2**20, help="Bytes per second the kernel may read, and write, from the disk that holds "
                                         "the Python packages (a cgroup); 0: no limit.").tag(config=True)
    inode_limit = Integer(65536, help="Files and folders in each tmpfs the kernel gets (its scratch space, /tmp, "
                                      "...).").tag(config=True)
    cpu_time_limit = Integer(3600, help="CPU seconds for the kernel's whole life (a backstop; wall-clock limits come first).").tag(config=True)
    threads = Integer(0, help="Threads the kernel's BLAS libraries may use (OMP_NUM_THREADS, MKL_NUM_THREADS; 0: one "
                      "per core). torch's own threads are the course's setting, LLMCOURSE_THREADS, which "
                      "notebook_setup() applies (llmcourse.setup.threads_wanted).").tag(config=True)
    sandbox_uid = Integer(0, help="User the kernel runs as when the grader is root; 0: a user of its own from "
                                  "uid_range, so that process limits and files are per kernel.").tag(config=True)
    uid_range = Integer(200000, help="First of 10,000 user ids handed out to kernels (they need no account).").tag(config=True)
    no_network = Bool(True, help="Start the kernel in its own network namespace (no network at all).").tag(config=True)
    hide_paths = List(Unicode(), help="Paths the kernel must not see: the course's secrets, other submissions.").tag(config=True)
    private_roots = List(Unicode(), help="Folders (course roots) of which kernels see only what they need: the Python "
                                         "packages and assets/; everything else there, including files made while "
                                         "grading (a gradebook's journal), is hidden. Default: the course's root "
                                         "(CourseDirectory.root).").tag(config=True)
    gpus = List(Integer(), help="GPUs kernels may use (default: all the grader sees); each kernel sees exactly one, "
                                "handed out in turn.").tag(config=True)
    gpu_memory_fraction = Float(0.0, help="Share of its GPU's memory one kernel's torch may allocate (0: no cap). "
                                          "Size it as 1 / (kernels per GPU).").tag(config=True)

    fork_kernels = Bool(True, help="Start each CPU kernel as a fork of the grading process's kernel forker, which has "
                                   "imported torch, ipykernel and the course's packages once (grader.kernel_fork): "
                                   "about 2 CPU seconds less per kernel. False: every kernel is a new Python, "
                                   "exec'd.").tag(config=True)

    max_message_bytes = Integer(80 * 2**20, help="Largest single message the grader accepts from a kernel, in bytes: "
                                                 "ZeroMQ drops a larger one on arrival, before the grader holds it "
                                                 "(the checks' answers are at most 64 MB).").tag(config=True)

    _started = 0
    _claims = 0  # uids claimed by this process: the next claim starts past them

    @default("private_roots")
    def _private_roots_default(self) -> list[str]:
        course = self.config.get("CourseDirectory")
        root = course.get("root") if course else None
        return [str(root)] if root else []

    # Every socket to the kernel (the manager's and each client's, which make their own ZeroMQ contexts)
    # refuses an oversized message: the output caps only ever see what gets through.
    @default("context")
    def _context_default(self):
        context = super()._context_default()
        context.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        return context

    def client(self, **kwargs):
        kc = super().client(**kwargs)
        kc.context.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        return kc

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc"  # Unix sockets cross into a network namespace; TCP cannot.

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        base = sandbox_base()
        base.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.sandbox_dir = Path(tempfile.mkdtemp(prefix="kernel-", dir=base))
        self.sandbox_dir.chmod(0o711)  # the kernel's user may pass through, not list
        self.workdir = self.sandbox_dir / "work"
        self.ipcdir = self.sandbox_dir / "ipc"  # the kernel's sockets: its own until they are bound
        self.conndir = self.sandbox_dir / "conn"  # the connection file and the launcher's report: root's only
        self.ip = str(self.ipcdir / "k")
        self.connection_file = str(self.conndir / "kernel.json")
        self._pgid: int | None = None
        self._own_uid: int | None = None
        self._cgroup: KernelCgroup | None = None
        self._refusals: list[str] = []  # what the OS refused the grader's side of the sandbox
        self._forker = None  # the kernel forker of the next launch (format_kernel_cmd), None: exec
        # Kernels take GPUs in turn: by user id across grading processes, by count within one.
        SandboxedKernelManager._started += 1
        uid = self._uid()
        self._slot = uid if uid is not None else SandboxedKernelManager._started

    # The notebook's kernelspec is ignored on purpose: a submission cannot choose what runs it.
    def format_kernel_cmd(self, extra_arguments=None):
        # The policy goes in a file of root's, not on the command line: the namespace's init keeps its
        # command line, which every process in the namespace may read.
        policy_file = self.conndir / "policy.json"
        self._forker = self._kernel_forker()
        self._write_policy(self._forker.pid if self._forker is not None else os.getpid())
        return [sys.executable, "-m", "grader.sandbox_launch", f"@{policy_file}", "--",
                sys.executable, "-m", "ipykernel_launcher", "-f", self.connection_file,
                "--HistoryManager.hist_file=:memory:"]

    def _write_policy(self, parent_pid: int) -> None:
        """The policy, for a launcher whose parent is `parent_pid` (it dies with that process)."""
        fd = os.open(self.conndir / "policy.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._policy(parent_pid), f)

    def _kernel_forker(self):
        """This grading process's kernel forker for this kernel, or None: the kernel is exec'd (forking is off,
        the kernel gets a GPU, or the forker cannot start: said once in the log)."""
        if not self.fork_kernels or self._gpu() is not None:
            return None
        from .kernel_fork import ForkerUnavailable, KernelForker, forker_environment

        try:
            return KernelForker.for_environment(forker_environment(self._threads()))
        except (ForkerUnavailable, OSError) as exc:
            self._note_exec(exc)
            return None

    def _note_exec(self, exc: BaseException) -> None:
        item = f"kernels are exec'd, not forked ({exc})"
        if item not in _REPORTED:
            _REPORTED.add(item)
            self.log.warning("Sandbox: %s.", item)

    def _threads(self) -> int:
        return kernel_threads(self.threads)

    def _uid(self) -> int | None:
        if os.geteuid() != 0:
            return None
        if self.sandbox_uid:
            return self.sandbox_uid
        if self._own_uid is None:
            self._own_uid = self._claim_uid()
        return self._own_uid

    def _gpu(self) -> int | None:
        """The GPU this kernel gets: kernels take the configured (or visible) GPUs in turn."""
        gpus = list(self.gpus) or list(range(_cuda_device_count()))
        if not gpus:
            return None
        return gpus[self._slot % len(gpus)]

    def _claim_uid(self) -> int:
        """A user id no other live kernel has: a lock on uids/<n> that dies with this process."""
        import fcntl

        folder = sandbox_base() / "uids"
        folder.mkdir(exist_ok=True, mode=0o700)
        # Consecutive kernels of one process take different uids, so a kernel never inherits one just freed.
        start = (os.getpid() * 7919 + SandboxedKernelManager._claims) % 10_000
        for i in range(10_000):
            n = (start + i) % 10_000
            fd = os.open(folder / str(n), os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            # The last holder may have died without cleaning up (a grading machine's worker killed): its
            # kernel's processes must not live on next to ours under the same user id.
            if not clear_user(self.uid_range + n):
                os.close(fd)
                continue
            self._uid_lock = fd
            SandboxedKernelManager._claims += i + 1
            return self.uid_range + n
        raise RuntimeError("no free user id for a sandboxed kernel")

    def _release_uid(self) -> None:
        fd = getattr(self, "_uid_lock", None)
        if fd is not None:
            os.close(fd)  # closing the file releases the lock
            self._uid_lock = None
            self._own_uid = None

    def _policy(self, parent_pid: int | None = None) -> dict:
        """What the launcher needs; it dies with process `parent_pid` (default: this one)."""
        gpu = self._gpu()
        cuda = gpu is not None
        hide = [p for p in (os.path.abspath(h) for h in self.hide_paths)
                if os.path.exists(p) and not str(self.sandbox_dir).startswith(p.rstrip("/") + "/")]
        needed = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, *_package_paths())})
        return {
            "workdir": str(self.workdir),
            "staging": str(self.sandbox_dir / "expose"),
            "connection_file": self.connection_file,
            "cgroup_procs": self._cgroup.procs_files() if self._cgroup is not None else [],
            "hide_devices": hidden_gpu_devices(gpu, _device_names()),
            "inodes": self.inode_limit,
            # The interpreter and the installed packages must stay reachable for the kernel's user.
            "expose": needed,
            "private_roots": private_roots(self.private_roots, needed + [str(self.sandbox_dir)]),
            "report": str(self.conndir / "sandbox-report.json"),
            "hide": hide,
            "uid": self._uid(),
            "gid": self._uid(),
            "real_uid": os.getuid(),
            "grader_pid": parent_pid or os.getpid(),
            "real_gid": os.getgid(),
            "no_network": self.no_network,
            "disk_bytes": self.disk_limit,
            "file_bytes": self.file_size_limit,
            "max_processes": self.max_processes,
            "cpu_seconds": self.cpu_time_limit or None,
            # An address-space limit breaks CUDA's large virtual mappings: never with a GPU.
            "memory_bytes": (self.memory_limit or None) if not cuda else None,
        }

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        try:
            await self._launch_in_sandbox(kernel_cmd, **kw)
        except BaseException:
            self._tear_down()  # a start that failed leaves no mount, cgroup or process behind
            raise

    async def _launch_in_sandbox(self, kernel_cmd, **kw):
        self._stage_workdir(kw.get("cwd"))
        kw["cwd"] = str(self.workdir)
        kw["env"] = kernel_environment(str(self.workdir), self._threads())
        gpu = self._gpu()
        # One GPU per kernel, and none at all on a CPU machine (an empty list hides every device).
        kw["env"]["CUDA_VISIBLE_DEVICES"] = "" if gpu is None else str(gpu)
        if gpu is not None and self.gpu_memory_fraction:
            kw["env"]["LLMCOURSE_GPU_MEMORY_FRACTION"] = str(self.gpu_memory_fraction)
        kw["env"]["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # GPU indices in the order of /dev/nvidia<N>
        uid = self._uid()
        if uid is not None:
            # Both folders were made by root a moment ago (in a folder only root writes): no link to follow.
            for path in (self.workdir, self.ipcdir):
                os.chown(path, uid, uid, follow_symlinks=False)
                os.chmod(path, 0o700, follow_symlinks=False)  # no other kernel may read the submission or the sockets
        forker, self._forker = self._forker, None
        if forker is not None:
            from .kernel_fork import ForkerUnavailable

            try:
                await self._launch_forked(forker, kernel_cmd, **kw)
            except ForkerUnavailable as exc:
                self._note_exec(exc)
                self._write_policy(os.getpid())  # the exec'd launcher's parent is this process
                forker = None
        if forker is None:
            await super()._async_launch_kernel(kernel_cmd, **kw)
        pid = self.provisioner.pid if self.provisioner is not None else None
        self._pgid = pid  # the launcher is a session leader: its pid is the group id

    async def _launch_forked(self, forker, kernel_cmd: list[str], **kw) -> None:
        """What jupyter_client's provisioner does with a Popen, with a launcher forked by `forker` instead:
        the same command (`python -m grader.sandbox_launch` and its arguments), environment and folder."""
        env = {**kw["env"], "JPY_PARENT_PID": str(os.getpid())}
        process = forker.launch(kernel_cmd[3:], env, str(kw["cwd"]), kw.get("stdout"), kw.get("stderr"))
        provisioner = self.provisioner
        provisioner.process = process
        provisioner.pid = provisioner.pgid = process.pid  # the launcher leads a session of its own
        provisioner.cwd = kw["cwd"]
        self._reconcile_connection_info(provisioner.connection_info)

    async def _async_pre_start_kernel(self, **kw):
        # Every start (restarts too) gets a user id no process holds, new folders and a new cgroup.
        self._refusals = []
        uid = self._uid()
        if uid is not None and not self.sandbox_uid and not clear_user(uid):
            self._release_uid()
            self._uid()
        self._fresh_folders()
        self._cgroup = self._make_cgroup()
        return await super()._async_pre_start_kernel(**kw)

    async def _async_post_start_kernel(self, **kw):
        await super()._async_post_start_kernel(**kw)
        await self._take_back_sockets()
        self._log_refusals()

    def _fresh_folders(self) -> None:
        """Empty work, ipc, conn and staging folders, made by root; whatever a kernel left goes."""
        self._unmount_ipc()
        for path in (self.workdir, self.ipcdir, self.conndir, self.sandbox_dir / "expose"):
            shutil.rmtree(path, ignore_errors=True)  # never follows links (it works on file descriptors)
            path.mkdir(mode=0o700, exist_ok=True)  # (a socket folder still mounted keeps its mount point)
        uid = self._uid()
        if uid is not None:
            # A few sockets, in a tmpfs of their own: the kernel cannot fill the host's /run through it.
            try:
                from .sandbox_launch import MS_NODEV, MS_NOEXEC, MS_NOSUID, _mount

                _mount("tmpfs", str(self.ipcdir), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                       f"size=64k,nr_inodes=32,mode=700,uid={uid},gid={uid}")
            except OSError as exc:
                self._refusals.append(f"a size-capped socket folder: {exc}")

    def _unmount_ipc(self) -> None:
        if os.path.ismount(self.ipcdir):
            from .sandbox_launch import MNT_DETACH, _libc

            _libc.umount2(str(self.ipcdir).encode(), MNT_DETACH)

    def _make_cgroup(self) -> KernelCgroup | None:
        if os.geteuid() != 0:
            return None
        try:
            device = os.stat(os.path.realpath(sys.prefix)).st_dev
        except OSError:
            device = None
        # No block device behind the packages (an overlay, a tmpfs): no disk to throttle.
        if device is not None and not os.major(device):
            device = None
        group = KernelCgroup(self.sandbox_dir.name, memory_bytes=self.memory_limit or None,
                             max_pids=self.max_processes + 8 if self.max_processes else None,  # + launcher and init
                             io_bytes_per_second=self.io_limit or None, io_device=device)
        group.create()
        self._refusals += group.refused
        return group if group.dirs else None

    async def _take_back_sockets(self) -> None:
        """Once the kernel has bound its sockets, its socket folder becomes root's, so the kernel cannot swap
        a socket for a link (to another kernel's socket, say); then each is checked with lstat."""
        uid = self._uid()
        if uid is None or not os.path.ismount(self.ipcdir):
            return
        paths = [f"{self.ip}-{port}" for port in self.ports]
        deadline = time.monotonic() + 120  # a backstop only: a kernel that never binds is never waited for
        while not all(os.path.lexists(p) for p in paths) and time.monotonic() < deadline:
            if self.provisioner is None or await self.provisioner.poll() is not None:
                break  # the kernel died while starting: the client will find out
            await asyncio.sleep(0.02)
        os.chown(self.ipcdir, 0, 0, follow_symlinks=False)
        os.chmod(self.ipcdir, 0o755, follow_symlinks=False)
        foreign = foreign_sockets(paths, uid)
        if foreign:
            self._tear_down()
            raise RuntimeError(f"the kernel's socket {os.path.basename(foreign[0])} is not a socket of the kernel's "
                               "own user: the kernel was stopped and will not be connected to")

    def _stage_workdir(self, source: str | None) -> None:
        """Fill the (fresh, empty) scratch directory with a copy of the submission's files, and nothing else."""
        if not source or not os.path.isdir(source):
            return
        for entry in os.scandir(source):
            if entry.is_symlink():
                continue  # a link could point anywhere on the grader's disk
            dest = self.workdir / entry.name
            if entry.is_dir():
                shutil.copytree(entry.path, dest, symlinks=True, ignore_dangling_symlinks=True)
            elif entry.is_file():
                shutil.copy2(entry.path, dest)

    def _log_refusals(self) -> None:
        report = self.conndir / "sandbox-report.json"
        for _ in range(50):
            if report.exists():
                break
            time.sleep(0.02)
        try:
            refused = json.loads(report.read_text())
        except (OSError, ValueError):
            refused = ["the sandbox did not report (the kernel may not be sandboxed)"]
        for item in self._refusals + refused:
            if item not in _REPORTED:
                _REPORTED.add(item)
                self.log.warning("Sandbox: the OS refused %s; the other protections still apply.", item)

    def refused(self) -> list[str]:
        try:
            return self._refusals + json.loads((self.conndir / "sandbox-report.json").read_text())
        except (OSError, ValueError):
            return list(self._refusals)

    def kill_process_group(self) -> None:
        """Kill every process of the kernel: its cgroup at once (a child cannot leave it), else its process
        group and its user's processes."""
        if self._cgroup is not None:
            self._cgroup.kill()
        if self._pgid:
            try:
                os.killpg(self._pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._own_uid is not None and self._cgroup is None:
            _kill_user(self._own_uid)  # a child that left the group (setsid, double fork) goes too

    async def _async_kill_kernel(self, restart: bool = False) -> None:
        self.kill_process_group()
        await super()._async_kill_kernel(restart=restart)

    async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        try:
            await super()._async_shutdown_kernel(now=now, restart=restart)
        finally:
            self._tear_down()  # stray children of the kernel go with it
            if not restart:
                shutil.rmtree(self.sandbox_dir, ignore_errors=True)
                self._release_uid()

    def _tear_down(self) -> None:
        """Kill every process of the kernel, then remove its cgroup and its socket folder's mount."""
        self.kill_process_group()
        if self._cgroup is not None:
            self._cgroup.remove()  # waits until its last process is gone
            self._cgroup = None
        self._unmount_ipc()

    shutdown_kernel = _async_shutdown_kernel
    _kill_kernel = _async_kill_kernel


def _kill_user(uid: int) -> None:
    """SIGKILL every process of `uid` (a kernel's own user: nothing else runs as it)."""
    for pid in user_processes(uid):
        try:
            os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def user_processes(uid: int) -> list[int]:
    """The live processes of `uid` (zombies hold nothing but their pid, and are not counted)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid != uid:
                    continue
                with open(f"/proc/{entry.name}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                        continue
            except (OSError, IndexError):
                continue
            found.append(int(entry.name))
    return found


def clear_user(uid: int, timeout: float = 10.0) -> bool:
    """Kill what still runs as `uid` and wait for it to go; True once nothing does (the uid may be handed out)."""
    deadline = time.monotonic() + timeout
    while user_processes(uid):
        if time.monotonic() > deadline:
            return False
        _kill_user(uid)
        time.sleep(0.02)
    return True


def foreign_sockets(paths: list[str], uid: int) -> list[str]:
    """The paths among `paths` that are not sockets owned by `uid` (links are never followed). A path that
    does not exist is fine: the grader's connection to it fails, and no one but root can create it."""
    foreign = []
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != uid:
            foreign.append(path)
    return foreign


def hidden_gpu_devices(gpu: int | None, devices: list[str]) -> list[str]:
    """The device nodes (names in /dev) of the GPUs a kernel was not given, to be replaced by /dev/null."""
    hidden = []
    for name in devices:
        m = re.fullmatch(r"nvidia(\d+)", name)
        if m and int(m.group(1)) != gpu:
            hidden.append(os.path.join("/dev", name))
    return sorted(hidden)


def _device_names() -> list[str]:
    try:
        return os.listdir("/dev")
    except OSError:
        return []


def _package_paths() -> list[str]:
    """The course's package and its assets (in a source checkout both sit in the repository's root, among
    things kernels must not see)."""
    import llmcourse

    package = os.path.dirname(os.path.abspath(llmcourse.__file__))
    paths = [package]
    assets = os.path.join(os.path.dirname(package), "assets")
    if os.path.isdir(assets):
        paths.append(assets)
    return paths


def private_roots(roots: list[str], needed: list[str]) -> list[dict]:
    """For each root: what of it a kernel keeps (the paths of `needed` inside it, outermost only). A root
    that is itself needed, or inside something needed, is left as it is."""
    walled = []
    for root in dict.fromkeys(os.path.realpath(r) for r in roots):
        if not os.path.isdir(root) or any(root == n or root.startswith(n.rstrip("/") + "/") for n in needed):
            continue
        inside = sorted(n for n in needed if n.startswith(root.rstrip("/") + "/"))
        keep = [n for n in inside if not any(n.startswith(k + "/") for k in inside if k != n)]
        walled.append({"root": root, "keep": keep})
    return walled


def _cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0
