"""`check`, as notebooks import it (`from llmcourse import check`), without the check machinery.

The machinery (`llmcourse.checking`: the check runner, with pytest) is imported on the first call. A graded
notebook never calls `check` in its kernel (the grader runs the checks in its own process), so a kernel that is
being graded never pays for importing it (about 0.3 s each).
"""
from __future__ import annotations


def check(exercise_id: str, hidden: bool = False):
    """Run the checks of one exercise on the definitions in this notebook and print what they say."""
    from .checking.notebook import check as run

    return run(exercise_id, hidden)
