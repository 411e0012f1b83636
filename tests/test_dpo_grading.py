"""05b_dpo through the real grading path (`grader grade` and `grader check` in sandboxed kernels)."""
import pytest

from .conftest import grade_solution_and_blank

pytestmark = pytest.mark.slow


def test_solution_gets_full_marks_and_the_blank_release_none(tmp_path, capsys):
    grade_solution_and_blank("05b_dpo", tmp_path, capsys)
