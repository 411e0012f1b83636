"""The check API shared by notebooks, the grader and the repo's tests."""
from .api import (CheckFailed, Mistakes, expect, expect_close, expect_tensor, fail, graded, is_visible,
                  mistake_hint, naming_mistakes, same_answer, visible)
from .handle import MissingDefinition, Student, StudentCodeError, StudentRaised, local_student
from .runner import CheckResult, ExerciseResult, run_checks
from .vocabulary import generator, load_weights, randn, state_dict_of

__all__ = ["CheckFailed", "CheckResult", "ExerciseResult", "MissingDefinition", "Mistakes", "Student",
           "StudentCodeError", "StudentRaised", "expect", "expect_close", "expect_tensor", "fail", "generator",
           "graded", "is_visible", "load_weights", "local_student", "mistake_hint", "naming_mistakes", "randn", "run_checks",
           "same_answer", "state_dict_of", "visible"]
