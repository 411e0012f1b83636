"""Grading kernels forked from a warm process, so that no kernel imports torch again.

An exec'd kernel spends about two CPU seconds before it runs a line of the notebook: its Python starts, then
imports torch, numpy, ipykernel, matplotlib and the course's wire format (the notebook's first cell and the
grader's bootstrap need them all). A class of 40 submissions spends 80 CPU seconds on that alone.

A grading process now starts one *kernel forker*: a fresh Python (never a fork of the grader: it holds no
hidden check, no reference solution, no gradebook credential, and its environment is the kernel's clean
one) that imports those packages once and then forks. Each fork becomes a kernel's launcher and goes
through exactly the steps of `grader.sandbox_launch` (cgroup, session, namespaces, the namespace's init,
private mounts, an unprivileged user, resource limits); where the exec'd launcher would exec
`python -m ipykernel_launcher`, the kernel's process starts ipykernel in-process instead, with the packages
already imported (benchmarks/kernel_start.py measures both ways side by side).

    grading process --socketpair--> kernel forker (root, warm) -> launcher -> init of the namespace -> kernel

The forker serves one grading process, over a socket pair: a request carries the launcher's arguments,
environment and working folder, and its standard input, output and error as file descriptors; the reply is
the launcher's pid, and a notice follows when it exits. The forker exits when the socket closes, that is when
the grading process exits or dies; each launcher dies with the forker (as it died with the grading process
before), and with it its namespace and kernel. A grading process forked from its program's template
(grader.process_template) gets its forker ready-made: the program's *forker parent* (ForkerParent), itself
started as a forker is, forks one for each such process, so that the imports are paid once per program, not
once per grading process. Any other grading process, or one whose kernels get other settings (a thread
count of their own), starts its own forker. `ps` shows whom a forker serves: `grader.kernel_fork N --for PID`.

What a forked kernel inherits that an exec'd one would not, and what is done about it:
- memory: the packages above, imported by root from the installed files the kernel reads anyway, and the
  launcher's policy (paths and limits, no secret); nothing of the grading process;
- the environment: os.environ is the kernel's own; /proc/self/environ still shows the forker's, a clean one
  built the same way (grader.sandbox.kernel_environment: no variable of the grading process reaches it);
- a change of user leaves a process undumpable (its /proc files root's): the kernel is made dumpable again,
  as an exec'd one is;
- random state: Python's `random` reseeds itself in every fork, and numpy's legacy global generator, where
  it is loaded, is reseeded here, as a new process seeds them; torch's default seed is the same fixed one
  either way; the hash seed is 0 in both (PYTHONHASHSEED, so set orders agree);
- file descriptors: none but standard input, output and error; signal handlers: as a new Python sets them;
- /proc/self/cmdline reads as the exec'd command would (`python -m ipykernel_launcher -f ...`).

Only CPU kernels are forked: a kernel that gets a GPU is exec'd as before (CUDA must start in the kernel's
own process, with its own CUDA_VISIBLE_DEVICES). `SandboxedKernelManager.fork_kernels = False` turns the
forker off; where it cannot start, kernels are exec'd and the reason is logged once.
"""
from __future__ import annotations

import ctypes
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading

# What every kernel imports before it runs the notebook's second line (the setup cell and the grader's
# bootstrap): imported once here. Nothing that reads a per-kernel setting at import time (transformers reads
# HF_HOME): those stay for each kernel to import. matplotlib reads its config folder when imported, for its font
# cache: the forker's is the grader's own (forker_environment), and its backend is the kernel's, inline.
PRELOAD = ("numpy", "torch", "safetensors.torch", "zmq", "IPython", "ipykernel.kernelapp", "ipykernel.ipkernel",
           "ipykernel.zmqshell", "matplotlib.pyplot", "llmcourse.wire", "llmcourse.agent")
MAX_MESSAGE = 1 << 20
READY_BACKSTOP = 300.0  # seconds: only a forker that hangs ever reaches it (its imports take about 2 s)
PR_SET_DUMPABLE = 4
_TITLE_ROOM = " " * 600  # argv space reserved in the forker, so that its forks can show their own command line


# -- the forker's side ------------------------------------------------------------------------------------
def serve(fd: int) -> None:
    """The forker's loop: preload, say ready, then fork a launcher for each request until the socket closes."""
    _preload()
    _serve_launches(socket.socket(fileno=fd))


def serve_parent(fd: int) -> None:
    """The forker parent's loop: preload, then fork a kernel forker for each request, which serves the socket the
    request carries (its grading process's end is that process's). The parent ends when its program does."""
    control = socket.socket(fileno=fd)
    _preload()

    def child(request: dict, fds: list[int]) -> None:
        # Never returns: the forker exits when its socket closes. A kernel forked from it ends by SystemExit
        # through these frames, as through an exec'd forker's (nothing here to clean up).
        os.close(control.detach())
        theirs, *others = fds
        for f in others:
            os.close(f)
        _retitle([sys.executable, "-m", "grader.kernel_fork", str(theirs)])
        _serve_launches(socket.socket(fileno=theirs))

    def forked(pid: int, request: dict, fds: list[int]) -> None:
        for f in fds:
            os.close(f)

    def reap() -> None:
        for _ in reaped():  # a forker ends when its grading process does; nobody waits for its exit code
            pass

    fork_server(control, 1, child=child, forked=forked, reap=reap)


def _preload() -> None:
    for name in PRELOAD:
        importlib.import_module(name)


def _serve_launches(sock: socket.socket) -> None:
    titled = []

    def forked(pid: int, request: dict, fds: list[int]) -> None:
        for f in fds:
            os.close(f)
        if not titled and isinstance(request.get("client"), int):  # ps shows whom a forker serves
            titled.append(_retitle([sys.executable, "-m", "grader.kernel_fork", str(sock.fileno()),
                                    "--for", str(request["client"])]))

    fork_server(sock, 3, child=lambda request, fds: _launcher(sock, request, fds), forked=forked,
                reap=lambda: _reap(sock))


def fork_server(sock: socket.socket, max_fds: int, child, forked, reap, handlers: dict | None = None) -> None:
    """The loop of a process that forks on request (this forker, and grader.process_template's template): say
    ready, then for each request on `sock` (JSON, and up to `max_fds` descriptors) fork; the child runs
    child(request, fds) and never returns, the server runs forked(pid, request, fds) (which closes the
    descriptors it does not keep) and answers the pid. reap() runs on every SIGCHLD. `handlers` are signal
    handlers of the server's, undone in each child. The process ends when the socket closes: its caller is gone."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    handlers = {signal.SIGCHLD: lambda *_: None, **(handlers or {})}
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    signal.set_wakeup_fd(wake_w)
    _send(sock, {"ready": os.getpid()})
    while True:
        try:
            readable, _, _ = select.select([sock, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
            reap()
        if sock not in readable:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, max_fds)
        except OSError:
            data, fds = b"", []
        if not data:  # the caller is gone (a grading process's launchers die with its forker)
            os._exit(0)
        try:
            request = json.loads(data)
            pid = os.fork()
        except Exception as exc:
            for f in fds:
                os.close(f)
            _send(sock, {"error": f"{type(exc).__name__}: {exc}"})
            continue
        if pid == 0:
            signal.set_wakeup_fd(-1)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(wake_r)
            os.close(wake_w)
            child(request, fds)  # never returns
        forked(pid, request, fds)
        _send(sock, {"pid": pid})
        reap()


def reaped():
    """(pid, exit code) of each child that has ended, reaped now; none when none has."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(status)


def _reap(sock: socket.socket) -> None:
    for pid, code in reaped():
        _send(sock, {"exited": pid, "code": code})


def _send(sock: socket.socket, message: dict) -> None:
    try:
        sock.send(json.dumps(message).encode())
    except OSError:
        os._exit(0)  # nobody listens any more


def _launcher(sock: socket.socket, request: dict, fds: list[int]) -> None:
    """In the fork: become the kernel's launcher (grader.sandbox_launch's first process), then its init and
    its kernel. The launcher and init end with os._exit; the kernel's SystemExit goes up through the forker's
    loop (which holds nothing to clean up) and ends its interpreter as any Python program ends."""
    try:
        os.setsid()  # first: the grading process signals the launcher's group, whose id is this pid
        os.close(sock.detach())
        stdin, stdout, stderr = fds
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
        os.closerange(3, 1 << 20)  # the forker's pipe and socket, and the descriptors passed in
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _reseed()
        argv = request["argv"]
        _retitle([sys.executable, "-m", "grader.sandbox_launch", *argv])
        from .sandbox_launch import main

        main(argv, run=_run_kernel)
    except SystemExit as exc:
        if _in_kernel:
            raise  # the kernel ends as a Python program does: exit handlers, buffers flushed, ZeroMQ closed
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        if _in_kernel:
            raise SystemExit(1) from None
    os._exit(1)


_in_kernel = False


def _reseed() -> None:
    """Fresh random state, as a new process gets. Python's `random` reseeds itself in a fork; numpy's legacy
    global generator does not (it is not preloaded today: this holds if it ever is)."""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


def _retitle(args: list[str]) -> None:
    """Show `args` as this process's command line (/proc/self/cmdline, ps), in the room the forker's own
    command line left."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])
        title = "\0".join(args).encode()[:end - start - 1]
        ctypes.memmove(start, title + b"\0" * (end - start - len(title)), end - start)
    except Exception:  # cosmetic: ps shows the forker's command line instead
        pass


def _run_kernel(command: list[str]) -> None:
    """The kernel's process, in its sandbox: start ipykernel here, with what the forker imported."""
    global _in_kernel
    if command[1:3] != ["-m", "ipykernel_launcher"]:
        os.execvpe(command[0], command, os.environ)
    import ipykernel_launcher

    _in_kernel = True

    # A change of user leaves a process undumpable: its /proc files become root's. An exec'd kernel is
    # dumpable again (its own /proc/self/fd, say, is readable to it): so is this one.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    _retitle(command)
    sys.argv = [ipykernel_launcher.__file__, *command[3:]]
    for name in [m for m in sys.modules if m == "grader" or m.startswith("grader.")]:
        del sys.modules[name]  # the grader's code stays hidden: an import of it fails as in an exec'd kernel
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in ("SIGPIPE", "SIGXFSZ"):  # what a new Python ignores
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()
    raise SystemExit(0)


# -- the grading process's side ---------------------------------------------------------------------------
class ForkedProcess:
    """A launcher forked by the kernel forker, as jupyter_client's provisioner sees a Popen."""

    def __init__(self, forker: "KernelForker", pid: int, stdin):
        self._forker = forker
        self.pid = pid
        self.returncode: int | None = None
        self.stdin, self.stdout, self.stderr = stdin, None, None
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except (OSError, AttributeError):
            self._pidfd = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._forker.exit_code(self.pid, self._pidfd, block=False)
            if self.returncode is not None:
                self._close_pidfd()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self._forker.exit_code(self.pid, self._pidfd, block=True, timeout=timeout)
            if code is None:
                raise subprocess.TimeoutExpired([str(self.pid)], timeout)
            self.returncode = code
            self._close_pidfd()
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is not None:
            return
        if self._pidfd is not None:  # never a process that took the pid over after this one exited
            try:
                signal.pidfd_send_signal(self._pidfd, signum)
            except ProcessLookupError:
                pass
            return
        os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


class ForkerUnavailable(RuntimeError):
    """The kernel forker cannot start or serve: the kernel is exec'd instead."""


class KernelForker:
    """The grading process's kernel forker (one per environment it was started with)."""

    _instances: dict[tuple, "KernelForker"] = {}
    _lock = threading.Lock()

    def __init__(self, env: dict[str, str], sock: socket.socket | None = None):
        self.process: subprocess.Popen | None = None  # None: forked by the program's forker parent, not ours
        if sock is None:
            self.process, sock = start_server("grader.kernel_fork", [], _TITLE_ROOM, env)
        self.sock = sock
        self.lock = threading.Lock()
        self.exits: dict[int, int] = {}
        self.pid: int | None = None  # the forker's pid once it said it is ready
        self.failed = ""

    @classmethod
    def for_environment(cls, env: dict[str, str]) -> "KernelForker":
        """This process's forker for kernels of environment `env` (started on first use); raises
        ForkerUnavailable when it cannot serve."""
        key = tuple(sorted(env.items()))
        with cls._lock:
            forker = cls._instances.get(key)
            if forker is not None and forker.failed:
                if forker.process is not None or forker.pid is not None:
                    raise ForkerUnavailable(forker.failed)
                forker = None  # the forker parent could not fork one for us: start our own
            if forker is None:
                forker = cls._instances[key] = cls(env)
        try:
            forker.ready()
        except ForkerUnavailable:
            if forker.process is not None or forker.pid is not None:
                raise
            return cls.for_environment(env)  # as above: now our own
        return forker

    @classmethod
    def adopt(cls, fd: int, env: dict[str, str]) -> None:
        """Take socket `fd` (a grading process's end, from its template) as this process's forker for kernels of
        environment `env`: the program's forker parent forks the forker that serves it (ForkerParent)."""
        with cls._lock:
            cls._instances[tuple(sorted(env.items()))] = cls(env, socket.socket(fileno=fd))

    def ready(self) -> int:
        """Wait until the forker has imported what it preloads (an event: its first message); its pid. A forker
        still importing after READY_BACKSTOP seconds (a package that hangs on import) is given up: kernels are
        exec'd, and meet the kernel start-up timeout of their own."""
        with self.lock:
            while self.pid is None and not self.failed:
                if not select.select([self.sock], [], [], READY_BACKSTOP)[0]:
                    self._fail(f"the kernel forker was not ready after {READY_BACKSTOP:.0f} s")
                    break
                self._read(block=True)
        if self.failed:
            raise ForkerUnavailable(self.failed)
        return self.pid

    def launch(self, argv: list[str], env: dict[str, str], cwd: str, stdout=None, stderr=None) -> ForkedProcess:
        """Fork a launcher running `python -m grader.sandbox_launch ARGV`; its stdin is a new pipe."""
        read_end, write_end = os.pipe()
        out = stdout.fileno() if hasattr(stdout, "fileno") else (stdout if isinstance(stdout, int) else 1)
        err = stderr.fileno() if hasattr(stderr, "fileno") else (stderr if isinstance(stderr, int) else 2)
        try:
            with self.lock:
                if self.failed:
                    raise ForkerUnavailable(self.failed)
                request = json.dumps({"argv": argv, "env": env, "cwd": cwd, "client": os.getpid()}).encode()
                try:
                    socket.send_fds(self.sock, [request], [read_end, out, err])
                except OSError as exc:
                    self._fail(f"the kernel forker stopped answering ({exc})")
                    raise ForkerUnavailable(self.failed) from None
                pid = None
                while pid is None:
                    reply = self._read(block=True)
                    if reply is None:
                        raise ForkerUnavailable(self.failed)
                    if "error" in reply:
                        raise ForkerUnavailable(f"the kernel forker could not fork: {reply['error']}")
                    pid = reply.get("pid")
                # A notice kept for an earlier launcher with this pid (one nobody waited for) is not this one's:
                # that launcher was reaped, and its notice sent, before the pid could be handed out again.
                self.exits.pop(pid, None)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        return ForkedProcess(self, pid, os.fdopen(write_end, "wb", buffering=0))

    def exit_code(self, pid: int, pidfd: int | None, block: bool, timeout: float | None = None) -> int | None:
        """The exit code of launcher `pid` once it has exited (None while it runs). Its notice comes from the
        forker, which reaps it; when the forker is gone, so is the launcher (it dies with it)."""
        with self.lock:
            while pid not in self.exits:
                if self.failed:
                    return -signal.SIGKILL
                if not block:
                    if self._read(block=False) is not None:
                        continue
                    # Nothing pending: still running, unless its pidfd says it has exited (then the notice is
                    # on its way: wait for it).
                    if pidfd is None or not select.select([pidfd], [], [], 0)[0]:
                        return None
                    block = True
                    continue
                if timeout is not None and not select.select([self.sock], [], [], timeout)[0]:
                    return None
                self._read(block=True)
            return self.exits.pop(pid)

    def _read(self, block: bool) -> dict | None:
        """One message from the forker (None when none is pending, or when it is gone: then `failed` says so)."""
        try:
            data = self.sock.recv(MAX_MESSAGE, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError as exc:
            self._fail(f"the kernel forker stopped answering ({exc})")
            return None
        if not data:
            self._fail("the kernel forker exited")
            return None
        message = json.loads(data)
        if "ready" in message:
            self.pid = int(message["ready"])
        elif "exited" in message:
            self.exits[int(message["exited"])] = int(message["code"])
        return message

    def _fail(self, reason: str) -> None:
        self.failed = reason
        if self.process is None:  # the forker parent's child: closing its socket ends it
            self.sock.close()
            return
        try:
            self.process.kill()
        except OSError:
            pass
        self.process.wait()  # reaped: no zombie left for the grading process's life


class ForkerParent:
    """A grading program's forker parent: a clean Python, started as a forker is, that imports what a forker
    preloads once, then forks a kernel forker for each grading process that the program's template forks
    (grader.process_template). A grading process would otherwise start its own forker, about 1.8 CPU seconds
    each, and a program starts many grading processes.

        program --socketpair--> forker parent -> kernel forker (one per grading process) -> launcher -> kernel
        grading process <---- its own socket pair ----> kernel forker

    A forked forker is what a started one is (the same clean Python, environment and imports, and nothing
    else: the parent holds no grading process's socket), serves only the grading process that holds the other
    end of its socket, and exits when that process does; its launchers die with it. The parent ends with its
    program. A request waits in the parent's socket while it imports. Where the parent cannot start or serve,
    each grading process starts its own forker, as it did before.
    """

    _instances: dict[tuple, "ForkerParent"] = {}
    _lock = threading.Lock()
    MAX_PARENTS = 4  # one per environment; a program whose environment keeps changing stops the oldest

    def __init__(self, env: dict[str, str]):
        self.process, self.sock = start_server("grader.kernel_fork", ["--parent"], _TITLE_ROOM, env)
        self.owner = os.getpid()
        self.served = False  # it said it is ready
        self.failed = ""

    @classmethod
    def connect(cls, env: dict[str, str]) -> socket.socket | None:
        """One end of a socket pair whose other end a new kernel forker for environment `env` will serve; None
        where this program's forker parent cannot serve (then the grading process starts its own forker). A
        parent that ends after it had been ready is started again; one that never became ready is not."""
        key = tuple(sorted(env.items()))
        with cls._lock:
            parent = cls._instances.get(key)
            if parent is not None and (parent.owner != os.getpid() or (parent.failed and parent.served)):
                parent.stop()  # a fork of the program that started it (a queue worker's child), or it died
                parent = None
            if parent is None:
                while len(cls._instances) >= cls.MAX_PARENTS:
                    cls._instances.pop(next(iter(cls._instances))).stop()
                try:
                    parent = cls._instances[key] = cls(env)
                except OSError:
                    return None
            return parent._connect()

    def _connect(self) -> socket.socket | None:
        self._drain()
        if self.failed:
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            socket.send_fds(self.sock, [b"{}"], [theirs.fileno()], socket.MSG_DONTWAIT)
        except OSError as exc:  # gone, or so far behind that its socket is full
            self._fail(f"the kernel forker parent did not take a request ({exc})")
            ours.close()
            return None
        finally:
            theirs.close()
        return ours

    def _drain(self) -> None:
        """Read what the parent said (its readiness, the forks' pids: nothing to act on) without waiting."""
        while not self.failed:
            try:
                data = self.sock.recv(MAX_MESSAGE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                data = b""
                reason = f"the kernel forker parent stopped answering ({exc})"
            else:
                reason = "the kernel forker parent exited"
            if not data:
                self._fail(reason)
                return
            self.served = self.served or "ready" in json.loads(data)

    def _fail(self, reason: str) -> None:
        self.failed = reason
        import logging

        logging.getLogger("grader").warning("Grading processes start kernel forkers of their own (%s)", reason)
        self.stop()

    def stop(self) -> None:
        """Close this process's end; the parent exits when its program's end closes (its forkers go on serving
        their processes). A fork of the program only closes its inherited copy: the parent is its starter's."""
        self.sock.close()
        if self.owner != os.getpid():
            return
        try:
            self.process.kill()
        except OSError:
            pass
        self.process.wait()


def start_server(module: str, args: list[str], title_room: str, env: dict[str, str] | None = None):
    """(process, our socket): `python -m MODULE ARGS FD TITLE_ROOM`, a fork server of ours (this forker, its parent,
    grader.process_template's template) that talks to us over a socket pair and nothing else; it starts in "/", reads
    nothing on its standard input, and ends when our socket closes."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        process = subprocess.Popen([sys.executable, "-m", module, *args, str(theirs.fileno()), title_room],
                                   pass_fds=[theirs.fileno()], env=env, cwd="/", stdin=subprocess.DEVNULL)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return process, ours


def forker_environment(threads: int) -> dict[str, str]:
    """The forker's environment: a kernel's (grader.sandbox.kernel_environment) without its folders. What the
    preloaded packages read when they are imported (thread counts, hash seed) is what each kernel would."""
    from .sandbox import kernel_environment

    env = kernel_environment("/nonexistent", threads)
    del env["HF_HOME"]
    env["MPLCONFIGDIR"] = _matplotlib_folder()
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["JPY_PARENT_PID"] = "1"  # ipykernel reads it when imported; every kernel's is 1 (grader.sandbox_launch)
    return env


def _matplotlib_folder() -> str:
    """matplotlib's config and font-cache folder for the forker: the grader's own (no kernel writes it), so that
    the font list is built once, not in every kernel's empty folder. Where it cannot be made, matplotlib uses a
    temporary one of its own."""
    folder = os.path.expanduser("~/.cache/llmcourse-grader/matplotlib")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError:
        pass
    return folder


if __name__ == "__main__":
    if sys.argv[1] == "--parent":
        serve_parent(int(sys.argv[2]))
    else:
        serve(int(sys.argv[1]))
