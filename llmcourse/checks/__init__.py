"""Visible checks, one module per assignment (`01_attention` -> `llmcourse.checks.attention`).

Each module is copied by `grader build` from the assignment's check file in the grader (`grader.checks.attention`),
where the hidden checks are written beside the visible ones; the hidden ones never ship to students.
"""
from __future__ import annotations

import os


def check_modules(assignment: str) -> tuple[str, str]:
    """The (visible, hidden) check modules of an assignment such as "01_attention".

    LLMCOURSE_EXTRA_CHECKS="00_basics=pkg.visible:pkg.hidden;..." adds assignments outside the
    course (the test suite's fixture course uses it).
    """
    for entry in filter(None, os.environ.get("LLMCOURSE_EXTRA_CHECKS", "").split(";")):
        name, _, modules = entry.partition("=")
        if name.strip() == assignment:
            visible, _, hidden = modules.partition(":")
            return visible.strip(), hidden.strip()
    short = assignment.split("_", 1)[1] if "_" in assignment else assignment
    return f"llmcourse.checks.{short}", f"grader.checks.{short}"
