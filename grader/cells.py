"""Reading a notebook's check cells and their graded results: what every part of the grader needs, without
the grading machinery (no kernel, no torch), so that reading results and the command line stay light.
"""
from __future__ import annotations

import ast
from typing import Any

from nbformat import NotebookNode
from nbgrader.utils import is_grade, is_solution

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
