"""The grading-time `student` handle: a transport into the sandboxed kernel.

Each request is a `wire` message, sent as a short line of code that hands it to the kernel's agent;
the agent's answer comes back as display data of its own MIME type. Only those bytes are read, and
only through `wire.loads`, which builds plain data and never runs code.
"""
from __future__ import annotations

import asyncio
import base64
import time
from queue import Empty
from typing import Any, Callable

from llmcourse import wire
from llmcourse.agent import BOOTSTRAP, MIME
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


def kernel_student(call_sync: Callable[..., Any], kc_getter: Callable[[], Any], timeout: float,
                   on_timeout: Callable[[], None]) -> Student:
    """A `student` handle whose requests run in the kernel that `kc_getter()` returns.

    `call_sync(coroutine_function, *args)` runs it to completion (the preprocessor's event loop); `on_timeout` is
    called when the student's code overruns, to stop the kernel and bring a fresh one up.
    """

    def transport(request: dict) -> Any:
        blob = base64.b64encode(wire.dumps(request)).decode("ascii")
        code = f"__llmcourse_agent__.serve({blob!r})"
        try:
            status, payloads = call_sync(run_code, kc_getter(), code, timeout, MIME)
        except TimeoutError:
            on_timeout()
            raise StudentTimeout(f"your code took longer than {timeout:g} s to answer one check, and was stopped "
                                 f"(an endless loop, or far more work than needed?)") from None
        except KernelLost:
            on_timeout()
            raise
        if not payloads:
            raise StudentCodeError("the notebook's kernel did not answer the check (did a cell delete or replace "
                                   "the course's helpers?)")
        try:
            return wire.loads(base64.b64decode(payloads[-1], validate=True))
        except (wire.WireError, ValueError) as exc:
            raise StudentCodeError(f"the answer could not be read: {exc}") from None

    return Student(transport)


__all__ = ["BOOTSTRAP", "KernelLost", "kernel_student", "run_code"]
