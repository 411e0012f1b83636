"""A kernel manager that starts every grading kernel in its own sandbox.

nbgrader's Execute preprocessor (and ours, `RunChecks`) takes a `kernel_manager_class`; this is it.
Each kernel gets:
- a fresh scratch directory holding only the submission's files (copied in), size-capped;
- no network (its own network namespace) and Unix-socket (ipc) transport to the grader;
- the course's secrets hidden: grader/, source/, solutions/, the gradebook, other submissions;
- an unprivileged user when the grader runs as root, and limits on memory, processes, file size;
- the same Python and packages as the grader, whatever kernel the notebook names;
- a whole-process-group kill when it is stopped.
What the OS refuses is logged once per grading process; everything else still applies.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool, Float, Integer, List, Unicode, default

_REPORTED: set[str] = set()

# What a kernel must never see in a course directory: the secrets, the gradebook, other students' work.
COURSE_SECRETS = ("grader", "source", "solutions", "autograded", "submitted", "feedback", "tests", "demo",
                  "exchange", "reports", "gradebook.db", ".git", ".grader")


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
    """A small, clean environment: nothing of the grader's leaks in, nothing reaches a hub."""
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
            if k in os.environ}
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


class SandboxedKernelManager(AsyncKernelManager):
    memory_limit = Integer(6 * 2**30, help="Address-space limit of the kernel in bytes (CPU only; 0: none).").tag(config=True)
    disk_limit = Integer(512 * 2**20, help="Size of the kernel's scratch space and private /tmp, in bytes.").tag(config=True)
    file_size_limit = Integer(256 * 2**20, help="Largest file the kernel may write, in bytes.").tag(config=True)
    max_processes = Integer(512, help="Processes and threads the sandbox user may run at once.").tag(config=True)
    cpu_time_limit = Integer(3600, help="CPU seconds for the kernel's whole life (a backstop; wall-clock limits come first).").tag(config=True)
    threads = Integer(0, help="Threads for torch/BLAS in the kernel (0: all cores / jobs).").tag(config=True)
    sandbox_uid = Integer(0, help="User the kernel runs as when the grader is root; 0: a user of its own from "
                                  "uid_range, so that process limits and files are per kernel.").tag(config=True)
    uid_range = Integer(200000, help="First of 10,000 user ids handed out to kernels (they need no account).").tag(config=True)
    no_network = Bool(True, help="Start the kernel in its own network namespace (no network at all).").tag(config=True)
    hide_paths = List(Unicode(), help="Paths the kernel must not see: the course's secrets, other submissions.").tag(config=True)
    gpus = List(Integer(), help="GPUs kernels may use (default: all the grader sees); each kernel sees exactly one, "
                                "handed out in turn.").tag(config=True)
    gpu_memory_fraction = Float(0.0, help="Share of its GPU's memory one kernel's torch may allocate (0: no cap). "
                                          "Size it as 1 / (kernels per GPU).").tag(config=True)

    _started = 0

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
        self.ipcdir = self.sandbox_dir / "ipc"
        self.workdir.mkdir()
        (self.sandbox_dir / "expose").mkdir()
        self.ipcdir.mkdir()
        self.ip = str(self.ipcdir / "k")
        self.connection_file = str(self.ipcdir / "kernel.json")
        self._pgid: int | None = None
        self._own_uid: int | None = None
        # Kernels take GPUs in turn: by user id across grading processes, by count within one.
        SandboxedKernelManager._started += 1
        uid = self._uid()
        self._slot = uid if uid is not None else SandboxedKernelManager._started

    # The notebook's kernelspec is ignored on purpose: a submission cannot choose what runs it.
    def format_kernel_cmd(self, extra_arguments=None):
        policy = self._policy()
        return [sys.executable, "-m", "grader.sandbox_launch", json.dumps(policy), "--",
                sys.executable, "-m", "ipykernel_launcher", "-f", self.connection_file,
                "--HistoryManager.hist_file=:memory:"]

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
        start = (os.getpid() * 7919) % 10_000
        for i in range(10_000):
            n = (start + i) % 10_000
            fd = os.open(folder / str(n), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._uid_lock = fd
            # The last holder may have died without cleaning up (a grading machine's worker killed): its
            # kernel's processes must not live on next to ours under the same user id.
            _kill_user(self.uid_range + n)
            return self.uid_range + n
        raise RuntimeError("no free user id for a sandboxed kernel")

    def _release_uid(self) -> None:
        fd = getattr(self, "_uid_lock", None)
        if fd is not None:
            os.close(fd)  # closing the file releases the lock
            self._uid_lock = None
            self._own_uid = None

    def _policy(self) -> dict:
        cuda = self._gpu() is not None
        hide = [p for p in (os.path.abspath(h) for h in self.hide_paths)
                if os.path.exists(p) and not str(self.sandbox_dir).startswith(p.rstrip("/") + "/")]
        return {
            "workdir": str(self.workdir),
            "staging": str(self.sandbox_dir / "expose"),
            # The interpreter and the installed packages must stay reachable for the kernel's user.
            "expose": sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, _package_root())}),
            "report": str(self.ipcdir / "sandbox-report.json"),
            "hide": hide,
            "uid": self._uid(),
            "gid": self._uid(),
            "real_uid": os.getuid(),
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
        self._stage_workdir(kw.get("cwd"))
        kw["cwd"] = str(self.workdir)
        threads = self.threads or max(1, (os.cpu_count() or 1))
        kw["env"] = kernel_environment(str(self.workdir), threads)
        gpu = self._gpu()
        # One GPU per kernel, and none at all on a CPU machine (an empty list hides every device).
        kw["env"]["CUDA_VISIBLE_DEVICES"] = "" if gpu is None else str(gpu)
        if gpu is not None and self.gpu_memory_fraction:
            kw["env"]["LLMCOURSE_GPU_MEMORY_FRACTION"] = str(self.gpu_memory_fraction)
        uid = self._uid()
        if uid is not None:
            for path in (self.workdir, self.ipcdir, Path(self.connection_file)):
                os.chown(path, uid, uid)
            # Private to this kernel's user: no other kernel may read the submission or the sockets.
            self.workdir.chmod(0o700)
            self.ipcdir.chmod(0o700)
        await super()._async_launch_kernel(kernel_cmd, **kw)
        pid = self.provisioner.pid if self.provisioner is not None else None
        self._pgid = pid  # the launcher is a session leader: its pid is the group id

    async def _async_post_start_kernel(self, **kw):
        await super()._async_post_start_kernel(**kw)
        self._log_refusals()

    def _stage_workdir(self, source: str | None) -> None:
        """Fill the scratch directory with a copy of the submission's files (and nothing else)."""
        for child in self.workdir.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
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
        report = self.ipcdir / "sandbox-report.json"
        for _ in range(50):
            if report.exists():
                break
            import time

            time.sleep(0.02)
        try:
            refused = json.loads(report.read_text())
        except (OSError, ValueError):
            refused = ["the sandbox did not report (the kernel may not be sandboxed)"]
        for item in refused:
            if item not in _REPORTED:
                _REPORTED.add(item)
                self.log.warning("Sandbox: the OS refused %s; the other protections still apply.", item)

    def refused(self) -> list[str]:
        try:
            return json.loads((self.ipcdir / "sandbox-report.json").read_text())
        except (OSError, ValueError):
            return []

    def kill_process_group(self) -> None:
        if self._pgid:
            try:
                os.killpg(self._pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._own_uid is not None:
            _kill_user(self._own_uid)  # a child that left the group (setsid, double fork) goes too

    async def _async_kill_kernel(self, restart: bool = False) -> None:
        self.kill_process_group()
        await super()._async_kill_kernel(restart=restart)

    async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        try:
            await super()._async_shutdown_kernel(now=now, restart=restart)
        finally:
            self.kill_process_group()  # stray children of the kernel go with it
            if not restart:
                shutil.rmtree(self.sandbox_dir, ignore_errors=True)
                self._release_uid()

    shutdown_kernel = _async_shutdown_kernel
    _kill_kernel = _async_kill_kernel


def _kill_user(uid: int) -> None:
    """SIGKILL every process of `uid` (a kernel's own user: nothing else runs as it)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


def _package_root() -> str:
    import llmcourse

    return os.path.dirname(os.path.dirname(os.path.abspath(llmcourse.__file__)))


def _cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0
