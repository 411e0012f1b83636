"""A side property (input unchanged, dtype kept, the right layers, an error raised) earns points only once the
exercise's main result is right: the rule in the runner, on the fixture course, and for every assignment."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmcourse.checking import local_student, run_checks
from tests.conftest import FIXTURE, forget_fixture_checks, use_fixture_checks
from tests.exercises import Assignment, junk_implementations

ROOT = Path(__file__).resolve().parents[1]
BASICS = {"add": set(), "scale": set(), "mean_rows": set()}


@pytest.fixture(scope="module")
def basics():
    use_fixture_checks(FIXTURE)
    yield Assignment("00_basics", BASICS, course=FIXTURE)
    forget_fixture_checks(FIXTURE)


def basics_cases():
    cells = Assignment("00_basics", BASICS, course=FIXTURE).solution_cells()
    return [pytest.param(exercise, what, source, id=f"{exercise}: {what}") for exercise in BASICS
            for what, source in junk_implementations(cells[exercise]).items()]


@pytest.mark.parametrize("exercise", BASICS)
def test_fixture_reference_gets_full_marks(basics, exercise):
    result = basics.score(basics.namespace_with(), exercise)
    assert not result.error and result.score == result.max_score > 0


@pytest.mark.parametrize("exercise, what, source", basics_cases())
def test_fixture_junk_scores_nothing(basics, exercise, what, source):
    basics.assert_junk_scores_nothing(exercise, what, source)


def test_a_side_property_counts_once_the_main_result_is_right(basics):
    # `add` returns a + b but changes its first input: the main checks pass, the side property fails on its own.
    in_place = basics.score({"add": lambda a, b: a.add_(b) if a.shape == torch.broadcast_shapes(a.shape, b.shape)
                             else a + b}, "add")
    assert [c.passed for c in in_place.checks] == [True, True, False]
    assert in_place.checks[2].message == "add changed its first input in place"
    # A junk `add` leaves its inputs alone, yet earns nothing for it, and is told why.
    junk = run_checks("00_basics/add", local_student({"add": lambda a, b: "junk"}), visible=[basics.visible],
                      hidden=[basics.hidden])
    side = next(c for c in junk.checks if c.name == "add leaves inputs alone")
    assert (side.passed, side.points, side.max_points) == (False, 0.0, 1.0)
    assert side.message == "This check counts once the main result is right, and 2 main checks of this exercise still fail."
    assert side.hint == "Fix the exercise's other failing checks first; this one then counts by itself."
    # A right `add` keeps every point.
    right = basics.score({"add": lambda a, b: a + b}, "add")
    assert right.score == right.max_score == 4


def test_every_assignment_has_a_junk_test():
    """A new assignment gets its junk test with its spec: test_checks.py runs one for every spec, and every
    assignment has one."""
    from tests.specs import all_specs
    from tests.test_checks import SpecChecks

    assert callable(getattr(SpecChecks, "test_junk_scores_nothing", None))
    assert {s.assignment for s in all_specs()} == {p.parent.name for p in (ROOT / "source").glob("*/*.ipynb")}
