"""nbgrader preprocessors: how our grading plugs into nbgrader's autograde and feedback.

`RunChecks` replaces nbgrader's `Execute` in `Autograde.autograde_preprocessors`. It runs the
student's cells in a sandboxed kernel, exactly like `Execute`, except for check cells: those are
never run in the kernel. Their checks run here, in the grader's process, through a `student` handle
that can only exchange data with the kernel. The verdict becomes the check cell's output, in the
form nbgrader scores: no error for full marks, a number for partial credit, an error for zero.

What students see of a hidden check is whether it passed and its hint: never its message, which may
name the inputs it tried, the values it expected or the text of the student's own exception. The
check cell's output carries that redacted form; the instructor's full results ride along under a
mime type of their own (`CHECK_DETAILS_MIME`), which no notebook view renders and which
`StripHiddenChecks` removes from feedback, together with the hidden part of check cells.

Making a graded notebook safe to open (no script a student planted runs) is `grader.sanitize`'s job.
"""
from __future__ import annotations

import json
import time
from typing import Any

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import run_sync
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Float, Integer, List, Type, Unicode

from llmcourse.checks import check_modules

from .cells import (CHECK_DETAILS_MIME, HIDDEN_MESSAGE, RESULT_MIME, cell_results, check_calls,  # noqa: F401
                    is_check_cell, redacted_exercise, redacted_result)
from .sandbox import SandboxedKernelManager
from .warmup import Warmup

# The kernel transport (grader.remote) and the check runner import torch and pytest: they are imported where
# they are used, so that a grading process can start its kernel first and import them meanwhile (see Warmup).


def error_output(name: str, message: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=name, evalue=message,
                        traceback=[f"{name}: {message}"])


class RunChecks(Execute):
    """Execute a submission in a sandboxed kernel and grade its check cells from the outside."""

    kernel_manager_class = Type(SandboxedKernelManager, config=True,
                                help="The kernel manager: sandboxed by default.")
    timeout = Integer(180, allow_none=True, help="Seconds one cell may run before it is stopped.").tag(config=True)
    notebook_timeout = Integer(1200, help="Seconds the whole notebook may run, checks included.").tag(config=True)
    check_timeout = Float(60.0, help="Seconds the student's code may take to answer one request from a check.").tag(config=True)
    skip_tags = List(Unicode(), ["demo"], help="Cells with these tags only show results and are not run when grading.").tag(config=True)
    kernel_name = Unicode("python3", help="Always the course's own Python; a notebook cannot choose.").tag(config=True)
    max_cell_output = Integer(2 * 2**20, help="Bytes of kernel messages kept per cell (all of them: outputs, "
                              "metadata, display updates, widgets); the rest is dropped.").tag(config=True)
    max_notebook_output = Integer(8 * 2**20, help="Bytes of kernel messages kept for the whole notebook; the "
                                  "cells' output past it is dropped.").tag(config=True)

    def __init__(self, **kw):
        # nbgrader's Execute forces its own kernel manager unless one is passed: pass ours.
        kw.setdefault("kernel_manager_class", SandboxedKernelManager)
        super().__init__(**kw)
        self.interrupt_on_timeout = False  # a timed-out cell gets its kernel replaced, not interrupted
        self.shutdown_kernel = "immediate"  # nothing in a graded kernel is worth a graceful goodbye
        self.results: list = []  # an ExerciseResult for each exercise checked
        self._warmup = Warmup([])

    # -- the notebook ---------------------------------------------------------------------------------
    def preprocess(self, nb: NotebookNode, resources: Any = None, km=None):
        from nbclient import NotebookClient

        NotebookClient.__init__(self, nb, km)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        self.results = []
        self._deadline = time.monotonic() + self.notebook_timeout
        self._replay: list[str] = []
        self._events: list[str] = []
        self._channel = None  # a grader.remote.Channel to the kernel's check agent
        assignments = dict.fromkeys(ex.split("/", 1)[0] for c in nb.cells if is_check_cell(c)
                                    for ex, _ in check_calls(c.source))
        self._warmup = Warmup([m for a in assignments for m in check_modules(a)]).start()
        with self.setup_kernel():
            info = self.wait_for_reply(self.kc.kernel_info())
            self.nb.metadata["language_info"] = info["content"]["language_info"]
            self._bootstrap()
            for index, cell in enumerate(self.nb.cells):
                self.preprocess_cell(cell, resources, index)
        self._warmup.wait()
        self.nb.metadata.setdefault("llmcourse", {})["grading"] = {
            "events": self._events,
            "sandbox_refused": self.km.refused() if hasattr(self.km, "refused") else [],
        }
        return self.nb, self.resources

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, self.resources
        if is_check_cell(cell):
            self._grade_cell(cell)
            return cell, self.resources
        if set(cell.metadata.get("tags", [])) & set(self.skip_tags):
            cell.outputs = []
            return cell, self.resources
        remaining = self._deadline - time.monotonic()
        if remaining <= 1:
            cell.outputs = [error_output("NotebookTimeLimit", "not run: the notebook used up its time limit "
                                         f"of {self.notebook_timeout} s")]
            return cell, self.resources
        saved = self.timeout
        self.timeout = int(min(self.timeout or remaining, remaining))
        try:
            self.execute_cell(cell, index, store_history=True)
            if not any(o.output_type == "error" for o in cell.outputs):
                self._replay.append(cell.source)
        except CellTimeoutError:
            cell.outputs.append(error_output("CellTimeoutError", f"this cell ran longer than {self.timeout} s and "
                                             "was stopped; the cells after it still ran"))
            self._events.append(f"cell {index}: timed out after {self.timeout} s")
            self._restart()
        except DeadKernelError:
            cell.outputs.append(error_output("KernelDied", "the kernel stopped while running this cell (a crash, "
                                             "or more memory than allowed); the cells after it still ran"))
            self._events.append(f"cell {index}: the kernel died")
            self._restart()
        finally:
            self.timeout = saved
        return cell, self.resources

    def _bootstrap(self) -> None:
        """Load the check agent before any student cell runs (so later monkeypatching cannot reach it)."""
        self._warmup.grading_modules_ready()
        from llmcourse.agent import BOOTSTRAP

        from .remote import KernelLost, run_code

        try:
            run_sync(run_code)(self.kc, BOOTSTRAP, 60)
        except (TimeoutError, KernelLost):
            self._events.append("the kernel did not start the check agent")

    async def _open_channel(self, timeout: float = 10) -> None:
        """A comm to the agent that the last bootstrap loaded; None if the kernel does not open one."""
        from .remote import Channel, KernelLost

        if self._channel is not None:
            self._channel.close()
        self._channel = None
        try:
            self._channel = await Channel.open(self.kc, timeout)
        except (TimeoutError, KernelLost):
            self._events.append("the kernel did not open the check channel")

    # -- output flood control ---------------------------------------------------------------------------
    def reset_execution_trackers(self) -> None:
        super().reset_execution_trackers()
        self._output_used: dict[int, int] = {}  # bytes the kernel sent for each cell
        self._notebook_output_used = 0  # bytes the cells kept
        self._notebook_full = False  # once the notebook refuses a message, it keeps no more output
        self._noted: set[int] = set()  # cells whose output says that something was dropped

    # Every message the kernel sends for a cell passes through process_message, whatever it becomes:
    # an output, a rewrite of earlier outputs (display ids), a clear, or widget state. So the budget is
    # kept there, in bytes of whole messages (content, metadata, buffers). A cell is charged for all it
    # sends, and keeps nothing more once past its budget; the notebook, for what its cells kept, so that
    # one flooding cell does not silence the cells after it.
    def process_message(self, msg, cell, cell_index):
        kind = msg.get("msg_type")
        cost = message_size(msg) * (1 + self._display_rewrites(msg))
        cell_used = self._output_used.get(cell_index, 0) + cost
        self._output_used[cell_index] = cell_used
        within_cell = cell_used <= self.max_cell_output
        if within_cell and self._notebook_output_used + cost > self.max_notebook_output:
            self._notebook_full = True
        if within_cell and not self._notebook_full:
            self._notebook_output_used += cost
            try:
                return super().process_message(msg, cell, cell_index)
            except (KeyError, TypeError, ValueError, AttributeError, IndexError):
                # A forged message (the kernel holds the session key) must not stop the notebook's grading.
                self._note_dropped(cell, cell_index, "the grader dropped a message from the kernel that is not a "
                                                     "valid output")
                return None
        if kind not in ("status", "execute_input"):
            self._note_dropped(cell, cell_index,
                               f"the grader kept the first {self.max_cell_output:,} bytes of this cell's output and "
                               f"dropped the rest" if not within_cell else
                               f"the grader dropped this cell's output: the notebook's output had reached the limit "
                               f"of {self.max_notebook_output:,} bytes")
        if kind == "status":
            # Only the end of the cell is still needed from an over-budget message.
            state = msg.get("content", {}).get("execution_state") if isinstance(msg.get("content"), dict) else None
            return super().process_message({"msg_type": "status", "header": {}, "parent_header": msg.get("parent_header", {}),
                                            "metadata": {}, "content": {"execution_state": state}}, cell, cell_index)
        return None

    def _display_rewrites(self, msg: dict) -> int:
        """How many earlier outputs this message rewrites (each output shown with its display id)."""
        content = msg.get("content")
        transient = content.get("transient") if isinstance(content, dict) else None
        display_id = transient.get("display_id") if isinstance(transient, dict) else None
        if not isinstance(display_id, str) or msg.get("msg_type") not in ("execute_result", "display_data",
                                                                          "update_display_data"):
            return 0
        return sum(len(indices) for indices in self._display_id_map.get(display_id, {}).values())

    def _note_dropped(self, cell: NotebookNode, cell_index: int, what: str) -> None:
        """One line in the cell's output, the first time something of this cell is dropped."""
        if cell_index not in self._noted:
            self._noted.add(cell_index)
            cell.outputs.append(NotebookNode(output_type="stream", name="stdout", text=f"\n[{what}]\n"))

    def handle_comm_msg(self, outs, msg, cell_index):
        """Widget messages are dropped: a graded notebook shows no widgets, so their state is not kept."""
        return None

    # -- kernel recovery ------------------------------------------------------------------------------
    def _current_channel(self):
        return self._channel

    def _restart_and_reconnect(self) -> None:
        """After a check overran: a fresh kernel with the working cells replayed, and a channel to its agent."""
        self._restart()
        run_sync(self._open_channel)()

    def _restart(self) -> None:
        """Replace a stuck or dead kernel by a fresh one, replaying the cells that had worked."""
        run_sync(self._async_restart)()

    async def _async_restart(self) -> None:
        self._warmup.grading_modules_ready()
        from llmcourse.agent import BOOTSTRAP

        from .remote import KernelLost, run_code

        try:
            self.kc.stop_channels()
        except Exception:
            pass
        await self.km._async_restart_kernel(now=True)
        await self.async_start_new_kernel_client()
        self._channel = None  # it belonged to the old kernel
        try:
            await run_code(self.kc, BOOTSTRAP, 60)
        except (TimeoutError, KernelLost):
            self._events.append("the restarted kernel did not start the check agent")
        for source in list(self._replay):
            remaining = self._deadline - time.monotonic()
            if remaining <= 1:
                break
            try:
                await run_code(self.kc, source, remaining)
            except (TimeoutError, KernelLost):
                self._events.append("replay after a restart failed; later checks may fail")
                break

    # -- check cells ----------------------------------------------------------------------------------
    def _grade_cell(self, cell: NotebookNode) -> None:
        self._warmup.wait()  # the checks import what they need in this thread, not in two at once
        from llmcourse.agent import BOOTSTRAP
        from llmcourse.checking.runner import ExerciseResult, run_checks

        from .remote import KernelLost, kernel_student, run_code

        points = float(cell.metadata.get("nbgrader", {}).get("points", 0) or 0)
        calls = check_calls(cell.source)
        if not calls:
            cell.outputs = [error_output("NoChecks", "this check cell has no check(...) call")]
            return
        exercise_ids = list(dict.fromkeys(ex for ex, _ in calls))
        results = []
        for exercise_id in exercise_ids:
            hidden = any(h for ex, h in calls if ex == exercise_id)
            visible = any(not h for ex, h in calls if ex == exercise_id)
            visible_module, hidden_module = check_modules(exercise_id.split("/", 1)[0])
            if time.monotonic() > self._deadline:
                result = ExerciseResult(id=exercise_id, error="not checked: the notebook used up its time limit")
            else:
                try:
                    run_sync(run_code)(self.kc, BOOTSTRAP, 30)
                except (TimeoutError, KernelLost):
                    self._restart()
                run_sync(self._open_channel)()
                student = kernel_student(lambda fn, *a: run_sync(fn)(*a), self._current_channel, self.check_timeout,
                                         self._restart_and_reconnect)
                result = run_checks(exercise_id, student, visible=[visible_module] if visible else [],
                                    hidden=[hidden_module] if hidden else [])
            results.append(result)
            self.results.append(result)
        cell.outputs = render_results(results, points)


def message_size(msg: dict) -> int:
    """Bytes of a kernel message, every part of it: its JSON (header, metadata, content) and its buffers."""
    try:
        size = len(json.dumps([msg.get(k) for k in ("header", "parent_header", "metadata", "content")], default=str))
        return size + sum(memoryview(b).nbytes for b in msg.get("buffers") or [])
    except (TypeError, ValueError, RecursionError):
        return 2**62  # a message that cannot even be measured is never kept


def render_results(results: list, cell_points: float) -> list[NotebookNode]:
    """The check cell's outputs: the report for people, the data for tools, the score for nbgrader.

    The report and RESULT_MIME are what a student may see; CHECK_DETAILS_MIME keeps every check's
    message for the instructor (feedback drops it, see StripHiddenChecks).
    """
    from llmcourse.checking.notebook import format_report

    report = "\n".join(format_report(r, hidden=False) for r in results)
    earned = sum(r.score for r in results)
    total = sum(r.max_score for r in results)
    full = [r.to_json() for r in results]
    outputs = [NotebookNode(output_type="display_data", metadata={}, data={
        "text/plain": report,
        RESULT_MIME: {"exercises": [redacted_exercise(ex) for ex in full]},
        CHECK_DETAILS_MIME: {"exercises": full},
    })]
    errors = [r.error for r in results if r.error]
    if errors or total == 0:
        outputs.append(error_output("ChecksNotRun", "; ".join(errors) or "no checks"))
    elif earned == 0:
        outputs.append(error_output("ChecksFailed", f"0 of {total:g} points: see the hints above"))
    elif earned < total:
        score = round(cell_points * earned / total, 4) if cell_points else earned
        outputs.append(NotebookNode(output_type="execute_result", execution_count=None, metadata={},
                                    data={"text/plain": repr(float(score))}))
    return outputs


class StripHiddenChecks(NbGraderPreprocessor):
    """Feedback shows what the checks said, never the hidden part of a check cell nor a hidden check's message.

    The check cells' report is written again from the student's form of the results, so that a notebook
    graded before hidden messages were redacted gets redacted feedback too.

    nbgrader's ClearHiddenTests leaves the same `check("a/x")` of a check cell, but does not serve: it keeps the
    outputs, where the instructor's results ride, and it raises on a student's own text. "BEGIN HIDDEN TESTS"
    in a comment of a solution cell is a "hidden test region in a non-grade cell", one without its END is "no
    end hidden tests statement", and either exception costs that student the feedback. Here only exact
    delimiter lines count, and nothing a student writes can make it raise.
    """

    begin = Unicode("### BEGIN HIDDEN TESTS").tag(config=True)
    end = Unicode("### END HIDDEN TESTS").tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        from llmcourse.checking.notebook import format_report
        from llmcourse.checking.runner import ExerciseResult

        if cell.cell_type != "code":
            return cell, resources
        if self.begin in cell.source:
            kept, hiding = [], False
            for line in cell.source.splitlines():
                if line.strip() == self.begin:
                    hiding = True
                elif line.strip() == self.end:
                    hiding = False
                elif not hiding:
                    kept.append(line)
            cell.source = "\n".join(kept)
        for output in cell.get("outputs", []):
            data = output.get("data")
            if not isinstance(data, dict):
                continue
            data.pop(CHECK_DETAILS_MIME, None)
            if RESULT_MIME in data:
                exercises = [redacted_exercise(ex) for ex in data[RESULT_MIME].get("exercises", [])]
                data[RESULT_MIME] = {"exercises": exercises}
                data["text/plain"] = "\n".join(format_report(ExerciseResult.from_json(ex)) for ex in exercises)
        return cell, resources

