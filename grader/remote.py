"""The grading-time link to a sandboxed kernel: a `KernelSession`, and the `student` handle it gives the checks.

Each request is a `wire` message, sent over a Jupyter comm (a message channel that the kernel's agent
opens; see `llmcourse.agent.BOOTSTRAP`) as one binary buffer; the agent's answer comes back the same way.
Only those bytes are read, and only through `wire.loads`, which builds plain data and never runs code.
Code itself (the bootstrap, replays after a restart) runs through ordinary execute requests: `run_code`.

A `KernelSession` holds what grading keeps about one notebook's kernel: the kernel client, the comm channel
to the agent, the cells to replay after a restart, and the notebook's deadline. It restarts the kernel itself,
through jupyter_client's public `restart_kernel`, so that a check whose request overruns (or kills the
kernel) is dealt with here, without reaching back into the preprocessor that runs the notebook.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from queue import Empty
from typing import Any, Callable

from jupyter_core.utils import run_sync

from llmcourse import wire
from llmcourse.agent import BOOTSTRAP, COMM_TARGET
from llmcourse.checking.handle import Student, StudentCodeError, StudentTimeout


class KernelRestartFailed(RuntimeError):
    """The grading kernel could not be replaced after it died or overran: a failure of the machinery, never of
    the student's code. It ends the notebook's grading, and the submission is reported as not graded."""


class KernelLost(StudentCodeError):
    """The kernel died (a crash, a kill for memory) while running the student's code."""


async def run_code(kc, code: str, timeout: float, mime: str | None = None) -> tuple[str, list[str]]:
    """Run `code` in the kernel; return (status, payloads of display data with `mime`).

    Raises TimeoutError when the kernel is not idle again within `timeout` seconds.
    """
    msg_id = kc.execute(code, silent=False, store_history=False, allow_stdin=False)
    deadline = time.monotonic() + timeout
    payloads: list[str] = []
    status = None
    idle = False
    while not (idle and status is not None):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        if not idle:
            try:
                msg = await kc.get_iopub_msg(timeout=min(remaining, 1.0))
            except (Empty, asyncio.TimeoutError):
                if not await kc.is_alive():
                    raise KernelLost("the kernel stopped while running your code (a crash, or too much memory)")
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind in ("display_data", "execute_result") and mime and mime in msg["content"].get("data", {}):
                payloads.append(msg["content"]["data"][mime])
            elif kind == "status" and msg["content"].get("execution_state") == "idle":
                idle = True
        else:
            try:
                reply = await kc.get_shell_msg(timeout=min(remaining, 1.0))
            except (Empty, asyncio.TimeoutError):
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                status = reply["content"].get("status", "error")
    return status, payloads


class Channel:
    """A comm to the check agent of one kernel. `open` it after each bootstrap (it binds the fresh agent)."""

    def __init__(self, kc, comm_id: str):
        self.kc, self.comm_id = kc, comm_id

    @classmethod
    async def open(cls, kc, timeout: float = 10) -> "Channel":
        comm_id = uuid.uuid4().hex
        msg = kc.session.msg("comm_open", {"comm_id": comm_id, "target_name": COMM_TARGET, "data": {}})
        kc.shell_channel.send(msg)
        await _reply(kc, msg["header"]["msg_id"], timeout, lambda m: m["content"].get("data", {}).get("ready"))
        return cls(kc, comm_id)

    async def request(self, payload: bytes, timeout: float) -> bytes:
        msg = self.kc.session.msg("comm_msg", {"comm_id": self.comm_id, "data": {}})
        msg["buffers"] = [payload]
        self.kc.shell_channel.send(msg)
        reply = await _reply(self.kc, msg["header"]["msg_id"], timeout, lambda m: m["content"].get("data", {}).get("reply"))
        buffers = reply.get("buffers") or []
        if len(buffers) != 1:
            raise StudentCodeError("the answer could not be read: it did not come as one message")
        return bytes(buffers[0])

    def close(self) -> None:
        try:
            self.kc.shell_channel.send(self.kc.session.msg("comm_close", {"comm_id": self.comm_id, "data": {}}))
        except Exception:  # the kernel is gone: nothing to close
            pass


async def _reply(kc, msg_id: str, timeout: float, accept: Callable[[dict], Any]) -> dict:
    """The first comm message on iopub that answers `msg_id` and that `accept` takes."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        try:
            msg = await kc.get_iopub_msg(timeout=min(remaining, 1.0))
        except (Empty, asyncio.TimeoutError):
            if not await kc.is_alive():
                raise KernelLost("the kernel stopped while running your code (a crash, or too much memory)")
            continue
        if (msg["msg_type"] == "comm_msg" and msg.get("parent_header", {}).get("msg_id") == msg_id
                and accept(msg)):
            return msg


class KernelSession:
    """One notebook's kernel, as grading drives it once nbclient has started it.

        session = KernelSession(km, kc, deadline=time.monotonic() + 1200)
        await session.start()                 # the check agent, before any student cell
        session.remember(cell.source)         # a cell that ran without error: replayed after a restart
        await session.connect()               # before each exercise: the agent again, and a fresh channel
        student = session.student(timeout=60)
        await session.restart()               # a stuck or dead kernel: a fresh one, the working cells replayed

    A restart replaces `kc`, the kernel client: whoever runs cells on the kernel must take the new one.
    `events` says, for the instructor, what went wrong with the kernel; `sandbox_refused`, what the OS refused
    the sandbox at any of its starts.
    """

    def __init__(self, km, kc, deadline: float, startup_timeout: float = 60):
        self.km, self.kc = km, kc
        self.deadline = deadline  # time.monotonic() by which the whole notebook must be done
        self.startup_timeout = startup_timeout  # seconds a restarted kernel may take to answer
        self.channel: Channel | None = None  # to the agent that the last bootstrap loaded
        self.replay: list[str] = []
        self.events: list[str] = []
        self.sandbox_refused: list[str] = []
        self.failure: KernelRestartFailed | None = None  # set when a kernel could not be replaced

    def remaining(self) -> float:
        """Seconds left before the notebook's deadline (negative once it has passed)."""
        return self.deadline - time.monotonic()

    def remember(self, source: str) -> None:
        """A cell that ran without error: a restarted kernel runs it again, so that later checks find its names."""
        self.replay.append(source)

    async def start(self) -> None:
        """Load the check agent before any student cell runs (so that later monkeypatching cannot reach it)."""
        self._note_refusals()
        try:
            await run_code(self.kc, BOOTSTRAP, 60)
        except (TimeoutError, KernelLost):
            self.events.append("the kernel did not start the check agent")

    async def connect(self) -> None:
        """Before an exercise's checks: the agent loaded again (a cell may have replaced the course's helpers;
        a kernel that does not answer is restarted), and a fresh channel to it."""
        try:
            await run_code(self.kc, BOOTSTRAP, 30)
        except (TimeoutError, KernelLost):
            await self.restart()
        await self._open_channel()

    async def restart(self) -> None:
        """Replace a stuck or dead kernel by a fresh one, replaying the cells that had worked.

        jupyter_client's `restart_kernel` stops the old kernel and starts the new one through the kernel
        manager, so the sandbox gives it fresh folders, a fresh user and a fresh cgroup, as at the first start.
        """
        self.channel = None  # it belongs to the old kernel
        try:
            self.kc.stop_channels()
        except Exception:  # a dead kernel's channels may be gone already
            pass
        try:
            await self.km.restart_kernel(now=True)
            self.kc = self.km.client()
            self.kc.start_channels()
            await self.kc.wait_for_ready(timeout=self.startup_timeout)
        except Exception as exc:  # no kernel to grade with: the checks still to run must not count as failed
            self.failure = KernelRestartFailed(f"KernelRestartFailed: the grading kernel could not be restarted "
                                               f"({type(exc).__name__}: {exc})")
            raise self.failure from exc
        self.kc.allow_stdin = False
        self._note_refusals()
        try:
            await run_code(self.kc, BOOTSTRAP, 60)
        except (TimeoutError, KernelLost):
            self.events.append("the restarted kernel did not start the check agent")
        for source in list(self.replay):
            remaining = self.remaining()
            if remaining <= 1:
                break
            try:
                await run_code(self.kc, source, remaining)
            except (TimeoutError, KernelLost):
                self.events.append("replay after a restart failed; later checks may fail")
                break

    async def request(self, payload: bytes, timeout: float) -> bytes:
        """One round trip to the agent: a wire message out, the agent's answer back."""
        return await self.channel.request(payload, timeout)

    def student(self, timeout: float) -> Student:
        """A `student` handle whose requests go to this kernel's agent, each within `timeout` seconds.

        The checks call it synchronously, from this thread. A request that overruns, or whose kernel dies,
        costs the kernel: it is restarted and reconnected before the check hears of it.
        """

        def transport(request: dict) -> Any:
            if self.channel is None:
                raise StudentCodeError("the notebook's kernel did not answer the check (did a cell delete or replace "
                                       "the course's helpers?)")
            try:
                reply = run_sync(self.request)(wire.dumps(request), timeout)
            except TimeoutError:
                run_sync(self._recover)()
                raise StudentTimeout(f"your code took longer than {timeout:g} s to answer one check, and was stopped "
                                     f"(an endless loop, or far more work than needed?)") from None
            except KernelLost:
                run_sync(self._recover)()
                raise
            try:
                return wire.loads(reply)
            except (wire.WireError, ValueError) as exc:
                raise StudentCodeError(f"the answer could not be read: {exc}") from None

        return Student(transport)

    def _note_refusals(self) -> None:
        """What the OS refused the sandbox of the kernel just started: read now, since the sandboxed kernel
        manager's report goes with the kernel."""
        for item in self.km.refused() if hasattr(self.km, "refused") else []:
            if item not in self.sandbox_refused:
                self.sandbox_refused.append(item)

    async def _recover(self) -> None:
        """After a request overran or lost its kernel: a fresh kernel, and a channel to its agent."""
        await self.restart()
        await self._open_channel()

    async def _open_channel(self, timeout: float = 10) -> None:
        """A comm to the agent that the last bootstrap loaded (`channel` stays None if the kernel opens none)."""
        if self.channel is not None:
            self.channel.close()
        self.channel = None
        try:
            self.channel = await Channel.open(self.kc, timeout)
        except (TimeoutError, KernelLost):
            self.events.append("the kernel did not open the check channel")


__all__ = ["BOOTSTRAP", "Channel", "KernelLost", "KernelRestartFailed", "KernelSession", "run_code"]
