"""Reading a notebook's check cells and their graded results: what every part of the grader needs, without
the grading machinery (no kernel, no torch), so that reading results and the command line stay light.
"""
from __future__ import annotations

import ast
from typing import Any

from nbformat import NotebookNode
from nbgrader.utils import is_grade, is_solution

# What a check says of an exercise that still raises NotImplementedError, as released (the words of
# llmcourse.checking.handle): the grade table and the report tell "not written yet" apart from "wrong" by it.
NOT_WRITTEN = "is not implemented yet (it still raises NotImplementedError)"

RESULT_MIME = "application/vnd.llmcourse.checks+json"  # what students may see
CHECK_DETAILS_MIME = "application/vnd.llmcourse.check-details+json"  # the instructor's full results
HIDDEN_MESSAGE = "this hidden check failed; its inputs and expected values are not shown (see the hint)"


def is_check_cell(cell: NotebookNode) -> bool:
    return cell.cell_type == "code" and is_grade(cell) and not is_solution(cell)


def check_calls(source: str) -> list[tuple[str, bool]]:
    """The `check("assignment/exercise"[, hidden=True])` calls in a check cell, in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    calls = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "check"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            hidden = any(k.arg == "hidden" and isinstance(k.value, ast.Constant) and k.value.value is True
                         for k in node.keywords)
            calls.append((node.args[0].value, hidden))
    return calls


class MixedCellError(ValueError):
    """A test cell whose check(...) calls cannot be told apart from the code around them."""


def test_cell_parts(source: str) -> list[tuple[str, str]]:
    """A test cell's source as parts, in order: ("checks", text) for each run of top-level statements that are
    `check(...)` calls, which the grader runs itself, and ("kernel", text) for each run of other statements, which
    run in the student's kernel as stock nbgrader runs a test cell. A cell without check(...) calls is one kernel
    part; a cell that does not parse is too (the kernel then reports the SyntaxError, as stock nbgrader does).

    A check(...) call must be a statement of its own at the top level of the cell: one inside a loop, a function
    or an expression would mix the two processes, and raises MixedCellError naming its line."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return [("kernel", source)]
    lines = source.splitlines(keepends=True)
    parts: list[tuple[str, str]] = []
    for statement in tree.body:
        top = (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)
               and isinstance(statement.value.func, ast.Name) and statement.value.func.id == "check")
        if not top and any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "check"
                           for n in ast.walk(statement)):
            raise MixedCellError(f"line {statement.lineno}: check(...) must be a statement of its own, not part of "
                                 f"other code: the grader runs check(...) calls itself and the rest of the cell in "
                                 f"the student's kernel")
        kind = "checks" if top else "kernel"
        text = "".join(lines[statement.lineno - 1:statement.end_lineno])
        if parts and parts[-1][0] == kind:
            parts[-1] = (kind, parts[-1][1] + text)
        else:
            parts.append((kind, text))
    return parts or [("kernel", source)]


def redacted_exercise(exercise: dict[str, Any]) -> dict[str, Any]:
    """An exercise's results as a student may see them: a hidden check says whether it passed and its hint.

    Its message goes: it can name the inputs the check tried, the values it expected, or repeat the text of
    the student's own exception (which a notebook could fill with whatever its functions were given).
    """
    checks = [{**c, "message": HIDDEN_MESSAGE if c.get("message") else ""} if not c.get("visible", True) else dict(c)
              for c in exercise.get("checks", [])]
    return {**exercise, "checks": checks}


def redacted_result(result: dict[str, Any]) -> dict[str, Any]:
    """A submission's results (`SubmissionResult.to_json()`) as a student may see them."""
    return {**result, "exercises": [redacted_exercise(ex) for ex in result.get("exercises", [])]}


def cell_results(cell: NotebookNode, redacted: bool = False) -> list[dict[str, Any]]:
    """The structured results a graded check cell carries (empty if it was never graded).

    In full (the instructor's form) unless `redacted`, or unless the cell has only the student's form.
    """
    for output in cell.get("outputs", []):
        data = output.get("data", {}) if output.get("output_type") == "display_data" else {}
        if RESULT_MIME in data:
            if not redacted and CHECK_DETAILS_MIME in data:
                return list(data[CHECK_DETAILS_MIME].get("exercises", []))
            return [redacted_exercise(ex) for ex in data[RESULT_MIME].get("exercises", [])]
    return []
