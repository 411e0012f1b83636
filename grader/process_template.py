"""Grading processes forked from a warm template, not spawned.

A spawned grading process is a new Python that imports nbgrader, torch and the grading machinery: about 2.3 CPU
seconds before it grades anything, paid by every grading process of every `grader grade`. The template is one
such Python, started once per grading program (the `grader` command, a queue worker, a test session): it
imports all that, then forks a grading process on each request of that program's pools.

    pool = ProcessPoolExecutor(max_workers=n, mp_context=grading_context())

Each grading process is what a spawned one is: multiprocessing's own start-up runs in it (the caller's sys.path,
working folder and main module, the pickled process object), it takes the caller's environment as it is when
the process starts (not as it was when the template started), and it imports anything else (a course's check
modules) itself. The template is a fresh Python (never a fork of its caller), holds no thread, and talks to its
caller only over a socket pair that nothing else holds; it ends when its caller does. Where it cannot start or
serve, pools spawn as before.

Each grading process also gets its kernel forker ready-made: with the request, the caller passes one end of a
socket pair whose other end a forker forked by the program's forker parent serves (grader.kernel_fork).

The wire is multiprocessing's forkserver's (the template is a private fork server): a request passes the
child's two pipe ends and the descriptors it inherits; the template answers on the status pipe with the child's
pid, then its exit code.
"""
from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import multiprocessing.context
import os
import select
import signal
import socket
import sys
import threading

PRELOAD = ("torch", "nbgrader.converters", "nbgrader.preprocessors", "nbclient", "jupyter_client",
           "grader.preprocessors", "grader.sandbox", "grader.kernel_fork", "grader.grading", "llmcourse.checking")
GRADING_PROCESS_TITLE = "--grading-process"  # ps shows a grading process as `python -m grader.process_template --grading-process`
_TITLE_ROOM = " " * 32  # argv space reserved in the template for its children's title
MAX_MESSAGE = 1 << 20
MAX_FDS = 64
READY_BACKSTOP = 300.0  # seconds: only a template that hangs while importing ever reaches it

log = logging.getLogger("grader")


# -- the template's side ------------------------------------------------------------------------------------
def serve(fd: int) -> None:
    """Import the grading machinery, say ready, then fork a grading process on each request until the caller
    goes; report each one's pid, then its exit code, on its status pipe."""
    import importlib

    from multiprocessing import forkserver

    from .kernel_fork import fork_server

    sock = socket.socket(fileno=fd)
    for name in PRELOAD:
        importlib.import_module(name)
    status_of: dict[int, int] = {}  # child pid -> the write end of its status pipe

    def child(request: dict, fds: list[int]) -> None:
        child_r, child_w, tracker_fd, *inherited = fds
        code = 1
        try:
            for f in (sock.detach(), child_w, *status_of.values()):
                os.close(f)
            os.environ.clear()
            os.environ.update(request["env"])
            if request.get("kernel_forker") is not None:  # its kernel forker's socket comes first
                from .kernel_fork import KernelForker

                forker_fd, *inherited = inherited
                KernelForker.adopt(forker_fd, request["kernel_forker"])
            code = _grading_process(child_r, tracker_fd, inherited)
        except BaseException:
            sys.excepthook(*sys.exc_info())
            sys.stderr.flush()
        finally:
            os._exit(code)

    def forked(pid: int, request: dict, fds: list[int]) -> None:
        child_w = fds[1]
        forkserver.write_signed(child_w, pid)
        status_of[pid] = child_w
        for f in fds:
            if f != child_w:
                os.close(f)

    # SIGINT ignored, as multiprocessing's fork server does: a ^C reaches the grading program, not its template.
    fork_server(sock, MAX_FDS, child=child, forked=forked, reap=lambda: _reap(status_of),
                handlers={signal.SIGINT: signal.SIG_IGN})


def _grading_process(child_r: int, tracker_fd: int, inherited: list[int]) -> int:
    """In the fork: what multiprocessing's fork server runs in each of its children."""
    from multiprocessing import forkserver, resource_tracker, spawn

    from .kernel_fork import _retitle

    _retitle([sys.executable, "-m", "grader.process_template", GRADING_PROCESS_TITLE])
    resource_tracker._resource_tracker._fd = tracker_fd
    forkserver._forkserver._inherited_fds = inherited
    return spawn._main(child_r, os.dup(child_r))


def _reap(status_of: dict[int, int]) -> None:
    from multiprocessing import forkserver

    from .kernel_fork import reaped

    for pid, code in reaped():
        child_w = status_of.pop(pid, None)
        if child_w is not None:
            try:
                forkserver.write_signed(child_w, code)
            except OSError:  # the caller stopped listening for it
                pass
            os.close(child_w)


# -- the caller's side ------------------------------------------------------------------------------------
class TemplateUnavailable(RuntimeError):
    """The template cannot start or serve: grading processes are spawned instead."""


class Template:
    """This program's template (one per process, started on first use)."""

    _instance: "Template | None" = None
    _instance_lock = threading.Lock()

    def __init__(self):
        from .kernel_fork import start_server

        self.process, self.sock = start_server("grader.process_template", [], _TITLE_ROOM)
        self.lock = threading.Lock()
        self.owner = os.getpid()
        self.pid: int | None = None
        self.failed = ""

    @classmethod
    def get(cls) -> "Template":
        """This process's template, started if it is not yet, or again if it ended after it had served (killed,
        say). One that never became ready is not started again: every pool of this process spawns. A fork of a
        process that has one (a queue worker's pool) starts its own: the socket is its starter's."""
        with cls._instance_lock:
            current = cls._instance
            if (current is None or current.owner != os.getpid()
                    or (current.pid is not None and current.process.poll() is not None)):
                cls._instance = cls()
            return cls._instance

    def ready(self) -> int:
        """Wait until the template has imported what it preloads (its first message); its pid."""
        with self.lock:
            if self.pid is None and not self.failed:
                if select.select([self.sock], [], [], READY_BACKSTOP)[0]:
                    message = self._receive()
                    if "ready" in message:
                        self.pid = message["ready"]
                    else:
                        self._fail(message.get("error") or "the grading-process template ended while importing")
                else:
                    self._fail(f"the grading-process template was not ready after {READY_BACKSTOP:.0f} s")
        if self.failed:
            raise TemplateUnavailable(self.failed)
        return self.pid

    def fork(self, fds: list[int]) -> tuple[int, int]:
        """A new grading process whose start-up data the caller writes to the returned pipe end; (status pipe's
        read end, data pipe's write end), as multiprocessing's forkserver.connect_to_new_process returns."""
        from multiprocessing import resource_tracker

        self.ready()
        parent_r, child_w = os.pipe()
        child_r, parent_w = os.pipe()
        forker = None
        try:
            forker_env, forker = _kernel_forker()
            with self.lock:
                if self.failed:
                    raise TemplateUnavailable(self.failed)
                try:
                    request = {"env": dict(os.environ), "kernel_forker": forker_env if forker else None}
                    socket.send_fds(self.sock, [json.dumps(request).encode()],
                                    [child_r, child_w, resource_tracker.getfd(),
                                     *([forker.fileno()] if forker else []), *fds])
                    answer = self._receive()
                except OSError as exc:
                    answer = {"error": f"{type(exc).__name__}: {exc}"}
                if "pid" not in answer:
                    self._fail(answer.get("error") or "the grading-process template stopped")
                    raise TemplateUnavailable(self.failed)
        except BaseException:
            os.close(parent_r)
            os.close(parent_w)
            raise
        finally:
            os.close(child_r)
            os.close(child_w)
            if forker is not None:
                forker.close()  # the grading process holds its own copy
        return parent_r, parent_w

    def _receive(self) -> dict:
        try:
            data = self.sock.recv(MAX_MESSAGE)
        except OSError:
            data = b""
        return json.loads(data) if data else {"error": "the grading-process template stopped"}

    def _fail(self, reason: str) -> None:
        self.failed = reason
        log.warning("Grading processes are spawned, not forked from a template (%s)", reason)
        try:
            self.process.kill()
        except OSError:
            pass
        self.process.wait()


def _kernel_forker():
    """(environment, socket) of a kernel forker for the next grading process: forked by this program's forker
    parent (grader.kernel_fork.ForkerParent) for the environment its kernels get when the grading settings
    leave the thread count alone; (None, None) where the parent cannot serve (the process starts its own)."""
    from .kernel_fork import ForkerParent, forker_environment
    from .sandbox import kernel_threads

    try:
        env = forker_environment(kernel_threads())
        return env, ForkerParent.connect(env)
    except OSError as exc:
        log.warning("Grading processes start kernel forkers of their own (%s)", exc)
        return None, None


@functools.lru_cache(maxsize=1)
def _popen_class():
    from multiprocessing import forkserver, popen_forkserver, resource_tracker, spawn, util
    from multiprocessing.context import reduction, set_spawning_popen

    # What the template and its children use of multiprocessing's insides (as of Python 3.11): reading them here
    # raises AttributeError on a Python that lacks one, and grading processes are spawned there.
    _ = (spawn._main, spawn.get_preparation_data, forkserver.read_signed, forkserver.write_signed,
         forkserver._forkserver._inherited_fds, resource_tracker._resource_tracker._fd,
         popen_forkserver.Popen.duplicate_for_child, popen_forkserver.Popen.DupFd)

    class TemplatePopen(popen_forkserver.Popen):
        """multiprocessing's fork-server Popen, with the template as the server."""
        method = "template"

        def _launch(self, process_obj):
            import io

            prep_data = spawn.get_preparation_data(process_obj._name)
            buf = io.BytesIO()
            set_spawning_popen(self)
            try:
                reduction.dump(prep_data, buf)
                reduction.dump(process_obj, buf)
            finally:
                set_spawning_popen(None)
            self.sentinel, w = Template.get().fork(self._fds)
            _parent_w = os.dup(w)  # kept open: the child's sign that its parent lives
            self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
            with open(w, "wb", closefd=True) as f:
                f.write(buf.getbuffer())
            self.pid = forkserver.read_signed(self.sentinel)

    return TemplatePopen


class TemplateProcess(multiprocessing.context.SpawnProcess):
    """A process started as a fork of the template; objects reach it pickled, as they reach a spawned one."""

    @staticmethod
    def _Popen(process_obj):
        try:
            return _popen_class()(process_obj)
        except TemplateUnavailable:  # it ended since the pool started: this process is spawned
            from multiprocessing.popen_spawn_posix import Popen as SpawnPopen

            return SpawnPopen(process_obj)


class TemplateContext(multiprocessing.context.SpawnContext):
    Process = TemplateProcess


def grading_context():
    """A multiprocessing context whose processes are forks of this program's template; the spawn context where
    the template cannot serve (or this Python lacks what it relies on)."""
    try:
        _popen_class()
        Template.get().ready()
    except (ImportError, AttributeError, TemplateUnavailable, OSError) as exc:
        if not isinstance(exc, TemplateUnavailable):
            log.warning("Grading processes are spawned, not forked from a template (%s)", exc)
        return multiprocessing.get_context("spawn")
    return TemplateContext()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
