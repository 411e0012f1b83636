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
from typing import Any, Callable

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import run_sync
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Float, Integer, List, Type, Unicode

from llmcourse.checks import check_modules

from .cells import MixedCellError, test_cell_parts
from .cells import (CHECK_DETAILS_MIME, HIDDEN_MESSAGE, RESULT_MIME, cell_results, check_calls,  # noqa: F401
                    is_check_cell, redacted_exercise, redacted_result)
from .sandbox import SandboxedKernelManager
from .warmup import Warmup

# Whoever waits for one notebook's grade (`grader check` at a terminal) may hear how far it got: called with
# (cells run, cells to run, exercises checked, exercises to check) before each cell and after each check cell.
PROGRESS: Callable[[int, int, int, int], None] | None = None

# The kernel transport (grader.remote) and the check runner import torch and pytest: they are imported where
# they are used, so that a grading process can start its kernel first and import them meanwhile (see Warmup).


def error_output(name: str, message: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=name, evalue=message,
                        traceback=[f"{name}: {message}"])


class RunChecks(Execute):
    """Execute a submission in a sandboxed kernel and grade its check cells from the outside.

    nbconvert's ExecutePreprocessor runs the notebook; this class fills in nbclient's hooks: which cells run
    in the kernel (`preprocess_cell`), what happens once the kernel is up (`on_notebook_start`: a
    `grader.remote.KernelSession` takes it over) and after each cell (`on_cell_executed`), and how much of the
    kernel's output is kept (`process_message`). Restarts, the cells they replay and the notebook's deadline
    belong to the session.
    """

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
        self.session = None  # the grader.remote.KernelSession of the notebook being graded
        self._warmup = Warmup([])

    # -- the notebook ---------------------------------------------------------------------------------
    def preprocess(self, nb: NotebookNode, resources: Any = None, km=None):
        """Grade `nb`. Its time limit starts now (the kernel's start counts), and so do the imports its checks
        need, in a thread, while the kernel starts."""
        self.results = []
        self.session = None
        self._syntax_errors: dict[str, str] = {}  # answer cell's grade id -> what its syntax error was
        self._deadline = time.monotonic() + self.notebook_timeout
        assignments = dict.fromkeys(ex.split("/", 1)[0] for c in nb.cells if is_check_cell(c)
                                    for ex, _ in check_calls(c.source))
        self._warmup = Warmup([m for a in assignments for m in check_modules(a)]).start()
        self._progress = [0, sum(c.cell_type == "code" for c in nb.cells), 0,
                          sum(len(dict.fromkeys(ex for ex, _ in check_calls(c.source))) for c in nb.cells
                              if is_check_cell(c))]
        nb, resources = super().preprocess(nb, resources, km)
        self._warmup.wait()
        nb.metadata.setdefault("llmcourse", {})["grading"] = {
            "events": self.session.events,
            "sandbox_refused": self.session.sandbox_refused,
        }
        return nb, resources

    async def on_notebook_start(self, notebook: NotebookNode) -> None:
        """nbclient's hook once the kernel answers: a KernelSession takes it over and loads the check agent,
        before any student cell runs (so that later monkeypatching cannot reach it)."""
        self._warmup.grading_modules_ready()
        try:
            self.session = self.kernel_session()
            await self.session.start()
        except BaseException:  # a task's time limit, say
            # nbclient cleans up only once it runs the cells: a kernel that failed here must not live on.
            self.kc.stop_channels()
            await self.km.shutdown_kernel(now=True)
            raise

    def kernel_session(self):
        """The KernelSession for the kernel that nbclient has just started (a profiler returns its own)."""
        from .remote import KernelSession

        return KernelSession(self.km, self.kc, deadline=self._deadline, startup_timeout=self.startup_timeout)

    def preprocess_cell(self, cell, resources, index):
        """Check cells are graded from here, demo cells are not run, the rest run in the kernel in the time left."""
        if cell.cell_type != "code":
            return cell, self.resources
        self._report_progress()
        self._progress[0] += 1
        try:
            if is_check_cell(cell):
                self.grade_test_cell(cell, index)
            elif set(cell.metadata.get("tags", [])) & set(self.skip_tags):
                cell.outputs = []
            else:
                self._run_cell(cell, index)
        finally:
            # A restart (after a cell, or inside a check) brings a new kernel client: nbclient runs the next
            # cell with it, and stops it at the end, even after a restart that failed.
            self.kc = self.session.kc
        return cell, self.resources

    def _run_cell(self, cell: NotebookNode, index: int) -> None:
        remaining = self.session.remaining()
        if remaining <= 1:
            cell.outputs = [error_output("NotebookTimeLimit", "not run: the notebook used up its time limit "
                                         f"of {self.notebook_timeout} s")]
            return
        saved = self.timeout
        self.timeout = int(min(self.timeout or remaining, remaining))
        try:
            self.execute_cell(cell, index, store_history=True)
        except CellTimeoutError:
            cell.outputs.append(error_output("CellTimeoutError", f"this cell ran longer than {self.timeout} s and "
                                             "was stopped; the cells after it still ran"))
            self.session.events.append(f"cell {index}: timed out after {self.timeout} s")
            run_sync(self.session.restart)()
        except DeadKernelError:
            cell.outputs.append(error_output("KernelDied", "the kernel stopped while running this cell (a crash, "
                                             "or more memory than allowed); the cells after it still ran"))
            self.session.events.append(f"cell {index}: the kernel died")
            run_sync(self.session.restart)()
        finally:
            self.timeout = saved

    def on_cell_executed(self, **kwargs) -> None:
        """nbclient's hook after a cell ran: nbgrader records its error, if any; a cell without one is replayed
        after any later restart."""
        super().on_cell_executed(**kwargs)
        cell = kwargs["cell"]
        if not any(o.output_type == "error" for o in cell.outputs):
            self.session.remember(cell.source)
        syntax = next((o for o in cell.outputs if o.output_type == "error" and o.get("ename") in SYNTAX_ERRORS), None)
        if syntax is not None:
            where = f"cell {kwargs.get('cell_index', '?')}"
            what = f"{syntax.get('ename')}: {syntax.get('evalue')}"
            self.session.events.append(f"{where}: a syntax error ({what}), so nothing in that cell ran")
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if isinstance(grade_id, str):
                self._syntax_errors[grade_id] = f"{where} ({what})"

    def _report_progress(self) -> None:
        if PROGRESS is not None:
            PROGRESS(*self._progress)

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
            if self.session is not None:  # the instructor's notes say it too: a flood of output needs a look
                self.session.events.append(f"cell {cell_index}: output cut ({what})")

    def handle_comm_msg(self, outs, msg, cell_index):
        """Widget messages are dropped: a graded notebook shows no widgets, so their state is not kept."""
        return None

    # -- test cells -----------------------------------------------------------------------------------
    def grade_test_cell(self, cell: NotebookNode, index: int) -> None:
        """A test cell (nbgrader's autograder tests): a cell of check(...) calls is graded here; a cell without them
        runs in the student's kernel, as stock nbgrader runs a test cell (full points unless it raises or writes to
        stderr; partial credit from a number it returns), with the sandbox and the limits of every cell.

        A cell that mixes both runs in order: its other statements in the kernel, its check(...) calls here. The
        checks decide its points; if a statement run in the kernel raises or writes to stderr, the cell scores 0,
        as that stock test cell would, and its checks say why. A check(...) call that is not a statement of its
        own (inside a loop or a function) cannot be split off: the cell scores 0 with a message naming its line."""
        try:
            parts = test_cell_parts(cell.source)
        except MixedCellError as error:
            cell.outputs = [error_output("MixedTestCell", str(error))]
            return
        if all(kind == "checks" for kind, _ in parts):
            self.grade_cell(cell)
            return
        if all(kind == "kernel" for kind, _ in parts):
            self._run_cell(cell, index)
            return
        outputs, results, failed = [], [], ""
        for kind, text in parts:
            if kind == "checks":
                results += self.check_results(text)
                continue
            part = NotebookNode(cell_type="code", source=text, metadata={}, outputs=[], execution_count=None)
            self._run_cell(part, index)
            self.nb.cells[index] = cell  # nbclient puts the cell it ran in the notebook: the test cell stays
            outputs += part.outputs
            error = next((o for o in part.outputs if o.output_type == "error"), None)
            if error is not None and not failed:
                failed = f"the cell's own statements raised {error.get('ename')}: {error.get('evalue', '')}"[:300]
            elif not failed and any(o.output_type == "stream" and o.get("name") == "stderr" for o in part.outputs):
                failed = "the cell's own statements wrote to stderr"
        if failed:
            from dataclasses import replace

            why = f"{failed}, so its checks count for nothing (a test cell scores 0 when its statements fail)"
            results = [replace(r, error=why, checks=[replace(c, passed=False, points=0.0, message=why, hint="")
                                                     for c in r.checks]) for r in results]
        points = float(cell.metadata.get("nbgrader", {}).get("points", 0) or 0)
        # The kernel's own outputs stay for the reader; a value it returned is shown, not read as partial credit
        # (the checks decide the points), and its error is said once, by the checks.
        shown = [NotebookNode(output_type="display_data", metadata=o.get("metadata", {}), data=o.get("data", {}))
                 if o.output_type == "execute_result" else o for o in outputs if o.output_type != "error"]
        cell.outputs = shown + render_results(results, points)

    def grade_cell(self, cell: NotebookNode) -> None:
        """A check cell never runs in the kernel: its checks run here, against the kernel's agent, and their
        verdict becomes the cell's output."""
        points = float(cell.metadata.get("nbgrader", {}).get("points", 0) or 0)
        if not check_calls(cell.source):
            cell.outputs = [error_output("NoChecks", "this check cell has no check(...) call")]
            return
        cell.outputs = render_results(self.check_results(cell.source), points)

    def check_results(self, source: str) -> list:
        """The results of the check(...) calls in `source`, one per exercise."""
        self._warmup.wait()  # the checks import what they need in this thread, not in two at once
        from llmcourse.checking.runner import ExerciseResult

        calls = check_calls(source)
        exercise_ids = list(dict.fromkeys(ex for ex, _ in calls))
        results = []
        for exercise_id in exercise_ids:
            hidden = any(h for ex, h in calls if ex == exercise_id)
            visible = any(not h for ex, h in calls if ex == exercise_id)
            visible_module, hidden_module = check_modules(exercise_id.split("/", 1)[0])
            if self.session.remaining() < 0:
                result = ExerciseResult(id=exercise_id, error="not checked: the notebook used up its time limit")
            else:
                run_sync(self.session.connect)()
                result = self.check_exercise(exercise_id, self.session.student(self.check_timeout),
                                             visible=[visible_module] if visible else [],
                                             hidden=[hidden_module] if hidden else [])
            if self.session.failure is not None:
                # A check whose kernel could not be replaced failed for the machinery, not for the student's
                # code: no score for this notebook at all (grading reports it as not graded, to be graded again).
                raise self.session.failure
            name_syntax_error(result, self._syntax_errors.get(exercise_id.split("/", 1)[-1]))
            results.append(result)
            self.results.append(result)
            self._progress[2] += 1
        self._report_progress()
        return results

    def check_exercise(self, exercise_id: str, student, visible: list[str], hidden: list[str]):
        """One exercise's checks against `student`: a pytest session in this process (a profiler times it)."""
        from llmcourse.checking.runner import run_checks

        return run_checks(exercise_id, student, visible=visible, hidden=hidden)


SYNTAX_ERRORS = ("SyntaxError", "IndentationError", "TabError")


def name_syntax_error(result, where: str | None) -> None:
    """When an exercise's answer cell did not even parse, its failed checks say so, instead of only that its
    function is not defined (which sends a student looking for a cell they did run)."""
    if not where:
        return
    for check in result.checks:
        if not check.passed:
            check.message = (f"Your answer cell, {where}, has a syntax error, so Python ran none of it: fix the line "
                             f"it names and run the cell again. ({check.message})" if check.message else
                             f"Your answer cell, {where}, has a syntax error, so Python ran none of it.")


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

