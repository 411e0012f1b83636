"""The grading-time `student` handle: a transport into the sandboxed kernel.

Each request is a `wire` message, sent over a Jupyter comm (a message channel that the kernel's agent
opens; see `llmcourse.agent.BOOTSTRAP`) as one binary buffer; the agent's answer comes back the same way.
Only those bytes are read, and only through `wire.loads`, which builds plain data and never runs code.
Code itself (the bootstrap, replays after a restart) runs through ordinary execute requests: `run_code`.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from queue import Empty
from typing import Any, Callable

from llmcourse import wire
from llmcourse.agent import BOOTSTRAP, COMM_TARGET
from llmcourse.checking.handle import Student, StudentCodeError, StudentTimeout


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


def kernel_student(call_sync: Callable[..., Any], channel_getter: Callable[[], Channel | None], timeout: float,
                   on_timeout: Callable[[], None]) -> Student:
    """A `student` handle whose requests go to the kernel agent behind `channel_getter()`.

    `call_sync(coroutine_function, *args)` runs it to completion (the preprocessor's event loop); `on_timeout` is
    called when the student's code overruns, to stop the kernel and bring a fresh one up.
    """

    def transport(request: dict) -> Any:
        channel = channel_getter()
        if channel is None:
            raise StudentCodeError("the notebook's kernel did not answer the check (did a cell delete or replace "
                                   "the course's helpers?)")
        try:
            reply = call_sync(channel.request, wire.dumps(request), timeout)
        except TimeoutError:
            on_timeout()
            raise StudentTimeout(f"your code took longer than {timeout:g} s to answer one check, and was stopped "
                                 f"(an endless loop, or far more work than needed?)") from None
        except KernelLost:
            on_timeout()
            raise
        try:
            return wire.loads(reply)
        except (wire.WireError, ValueError) as exc:
            raise StudentCodeError(f"the answer could not be read: {exc}") from None

    return Student(transport)


__all__ = ["BOOTSTRAP", "Channel", "KernelLost", "kernel_student", "run_code"]
