"""The check API shared by notebooks, the grader and the repo's tests."""
from .api import CheckFailed, expect, expect_close, expect_tensor, fail, graded
from .handle import MissingDefinition, Student, StudentCodeError, StudentRaised, local_student
from .runner import CheckResult, ExerciseResult, run_checks

__all__ = ["CheckFailed", "CheckResult", "ExerciseResult", "MissingDefinition", "Student", "StudentCodeError",
           "StudentRaised", "expect", "expect_close", "expect_tensor", "fail", "graded", "local_student", "run_checks"]
