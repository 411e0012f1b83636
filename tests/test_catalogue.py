"""The catalogue of hostile and broken submissions (tests/catalogue/cases.py), graded as one class.

All cases are graded in one batch (`grader grade 00_basics --submissions DIR --jobs 4 --json`), and the
cases about determinism a second time; then each case's result is held to its expectation, and the
machine is searched for anything the batch left behind. docs/catalogue.md is the table of one such run
(tests/catalogue/write_table.py). A case the engine gets wrong today is marked xfail(strict=True) with
the reason; it passes, and must be unmarked, once the engine is fixed.
"""
from __future__ import annotations

import pytest

from tests.catalogue.batch import CatalogueRun, evaluate, run_catalogue
from tests.catalogue.cases import CASES, Case

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def catalogue() -> CatalogueRun:
    run = run_catalogue(CASES)
    yield run
    run.cleanup()


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.name, marks=marks)


def test_the_batch_grades_every_case(catalogue):
    assert catalogue.exit_codes == [0, 0], catalogue.exit_codes
    missing = [o.case.name for o in catalogue.observations if o.result is None]
    assert not missing, f"the batch lost these submissions: {missing}"
    assert len(catalogue.observations) == len(CASES)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_case(catalogue, case):
    obs = catalogue.observation(case.name)
    problems = evaluate(obs)
    assert not problems, f"{case.name}: " + "\n".join(problems)


def test_no_process_of_the_batch_outlives_it(catalogue):
    # The watcher saw this run's kernels (and the fork bomb's children) while grading: the search works.
    assert catalogue.peak_processes >= 100, f"at most {catalogue.peak_processes} processes seen during grading"
    assert catalogue.stray_processes == []


def test_no_sandbox_folder_and_no_connection_is_left_behind(catalogue):
    assert catalogue.leftover_sandboxes == []
    assert catalogue.loopback_connections == 0
