"""`check("01_attention/softmax")`: the call in every check cell of a notebook.

In JupyterLab it runs the exercise's visible checks against the notebook's own namespace and prints
a short report with hints. At grading time this cell is never run in the student's kernel: the
grader runs the visible and hidden checks in its own process instead (see `grader.preprocessors`).
"""
from __future__ import annotations

import importlib.util
import os
import sys

from ..checks import check_modules
from .handle import local_student
from .runner import ExerciseResult, run_checks


def check(exercise_id: str, hidden: bool = False) -> ExerciseResult | None:
    """Run the checks of one exercise on the definitions in this notebook and print what they say."""
    if not isinstance(exercise_id, str) or "/" not in exercise_id:
        print(f"check() needs an exercise id like '01_attention/softmax', not {exercise_id!r}.")
        return None
    assignment = exercise_id.split("/", 1)[0]
    visible, hidden_module = check_modules(assignment)
    if hidden:
        if importlib.util.find_spec(hidden_module.split(".")[0]) is None or importlib.util.find_spec(hidden_module) is None:
            # Students do not have the hidden checks; instructors (with `grader` installed) do.
            print("Hidden checks run when your notebook is graded (self-learners: `grader check NOTEBOOK`).")
            return None
        modules = ([], [hidden_module])
    else:
        modules = ([visible], [])
    namespace = _caller_namespace()
    result = run_checks(exercise_id, local_student(namespace), visible=modules[0], hidden=modules[1])
    print(format_report(result, hidden=hidden, colour=_colour_shown()))
    report = format_report(result, hidden=hidden)
    if not result.passed and os.environ.get("NBGRADER_VALIDATING"):
        # nbgrader's Validate counts a check cell as passed unless it raises.
        raise ChecksDidNotPass(report)
    return None


class ChecksDidNotPass(AssertionError):
    """Raised by check() under nbgrader's Validate when a visible check fails (nowhere else)."""

    def _render_traceback_(self) -> list[str]:
        """What IPython records in place of a traceback: the report itself. nbgrader's Validate (its dialog in
        JupyterLab and `nbgrader validate`) shows a failing cell's traceback and not what the cell printed, so
        the student reads there the report JupyterLab shows (a stack of the course's own frames would only bury
        it)."""
        return str(self).splitlines() or ["A check failed."]


def _caller_namespace() -> dict:
    main = sys.modules.get("__main__")
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            return shell.user_ns
    except ImportError:
        pass
    return vars(main) if main is not None else {}


def _colour_shown() -> bool:
    """Whether the report may colour PASS and FAIL: in a Jupyter kernel, whose front end (JupyterLab, Notebook,
    VS Code) renders ANSI colours, but not under nbgrader's Validate, whose dialog shows plain text."""
    if os.environ.get("NBGRADER_VALIDATING"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


_GREEN, _RED, _PLAIN = "\x1b[32m", "\x1b[31m", "\x1b[0m"


def format_report(result: ExerciseResult, hidden: bool = False, colour: bool = False) -> str:
    """A short, friendly report of one exercise's checks, with hints for the ones that failed; with `colour`,
    PASS is green and FAIL red (ANSI colours; the text is the same without them)."""
    title = result.id.split("/", 1)[-1]
    kind = "hidden checks" if hidden else "checks"
    if result.error:
        return f"{title}: the {kind} could not run: {result.error}"
    lines = []
    passed = sum(c.passed for c in result.checks)
    verdict = "all passed" if result.passed else f"{passed} of {len(result.checks)} passed"
    lines.append(f"{title}: {kind} {verdict} ({_pts(result.score)} of {_pts(result.max_score)} points)")
    for c in result.checks:
        mark = "PASS" if c.passed else "FAIL"
        if colour:
            mark = f"{_GREEN if c.passed else _RED}{mark}{_PLAIN}"
        lines.append(f"  [{mark}] {c.name} ({_pts(c.max_points)} pt)")
        if not c.passed:
            # A hidden check's message can name its inputs and expected values: only its hint is shown.
            if c.message and c.visible:
                lines.append(f"         {c.message}")
            if c.hint:
                lines.append(f"         Hint: {c.hint}")
    if not hidden and result.passed:
        lines.append("  More checks run when your notebook is graded.")
    return "\n".join(lines)


def _pts(x: float) -> str:
    return f"{x:g}"
