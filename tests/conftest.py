"""Shared fixtures: a built copy of the fixture course, and notebook variants made from its source."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixture_course"
FIXTURE_CHECKS = "00_basics=fixture_checks.visible:fixture_checks.hidden"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# The groups of tests that take longest (a module, or a class of tests/test_checks.py), longest first, measured
# with --durations. They are handed to the workers first: scheduled by their number of tests (xdist's default),
# a slow module of few tests (the hub, the task queue) came last, and one worker ran on alone for minutes.
LONGEST_FIRST = [
    "tests/test_checks.py::Test_05_rlhf", "tests/test_distributed.py", "tests/test_checks.py::Test_05b_dpo",
    "tests/test_checks.py::Test_03_prompting", "tests/test_catalogue.py", "tests/test_attention_grading.py",
    "tests/test_queue_faults.py", "tests/test_checks.py::Test_01b_llama", "tests/test_gradebook_postgres.py",
    "tests/test_checks.py::Test_07_deployment", "tests/test_grading_end_to_end.py", "tests/test_hub_roundtrip.py",
    "tests/test_stock_nbgrader.py", "tests/test_grading_machinery.py", "tests/test_rlhf_grading.py",
    "tests/test_submissions_untouched.py", "tests/test_worker_death.py", "tests/test_dpo_grading.py",
    "tests/test_report_browser.py",
]


def pytest_collection_modifyitems(session, config, items):
    """Run the longest groups first (see LONGEST_FIRST); within a group, and for the others, the order is kept."""
    rank = {group: i for i, group in enumerate(LONGEST_FIRST)}

    def group(item) -> int:
        parts = item.nodeid.split("::")
        return rank.get("::".join(parts[:2]), rank.get(parts[0], len(rank)))

    items.sort(key=group)


def use_fixture_checks(root: Path) -> None:
    """Make the fixture's check modules importable here and in every process the grader starts."""
    os.environ["LLMCOURSE_EXTRA_CHECKS"] = FIXTURE_CHECKS
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(root) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(root), *paths])
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    _forget_imported_checks()


def forget_fixture_checks(root: Path) -> None:
    """Undo use_fixture_checks(root), before its folder goes: later checks must not look for modules there."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(root)]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    sys.path[:] = [p for p in sys.path if p != str(root)]
    _forget_imported_checks()


def _forget_imported_checks() -> None:
    import importlib

    for name in [m for m in sys.modules if m == "fixture_checks" or m.startswith("fixture_checks.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def copy_fixture_course(root: Path) -> Path:
    """A fresh copy of tests/fixture_course at `root` (no build products), its checks importable."""
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("__pycache__", "release", "solutions",
                                                                 "gradebook.db", "autograded", "submitted"))
    use_fixture_checks(root)
    return root


@pytest.fixture(scope="session")
def fixture_course(tmp_path_factory) -> Path:
    """A copy of tests/fixture_course with release/ and solutions/ built by `grader build`."""
    from grader.cli import main

    root = copy_fixture_course(tmp_path_factory.mktemp("course") / "fixture")
    assert main(["--course", str(root), "build"]) == 0
    return root


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def cell_by_id(nb: nbformat.NotebookNode, grade_id: str):
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
            return cell
    raise KeyError(grade_id)


def write_submission(root: Path, student: str, nb: nbformat.NotebookNode | str, assignment: str = "00_basics",
                     name: str = "basics") -> Path:
    path = root / student / assignment / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(nb, str):
        path.write_text(nb)
    else:
        nbformat.write(nb, str(path))
    return path


def grade_solution_and_blank(assignment: str, tmp_path: Path, capsys) -> None:
    """An assignment through the real grading path, in a copy of the course: a class of two (the source notebook
    and the blank release) through `grader grade`. The solution gets every point of every exercise; the blank
    release none, on every exercise. (`grader check` runs the same kernel path; tests/test_attention_grading.py
    and tests/test_grading_end_to_end.py run it, so it is not repeated here for every assignment.)"""
    import json

    from grader.cli import main

    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(REPO / "nbgrader_config.py", course)
    for folder in ("source", "release"):
        shutil.copytree(REPO / folder / assignment, course / folder / assignment)
    notebook = next((course / "source" / assignment).glob("*.ipynb")).name
    master = read(course / "source" / assignment / notebook)
    from grader.preprocessors import check_calls, is_check_cell

    n_exercises = len({ex for c in master.cells if is_check_cell(c) for ex, _ in check_calls(c.source)})
    submissions = tmp_path / "submissions"
    for student, folder in (("solver", "source"), ("blank", "release")):
        (submissions / student / assignment).mkdir(parents=True)
        shutil.copy(course / folder / assignment / notebook, submissions / student / assignment / notebook)
    capsys.readouterr()
    assert main(["--course", str(course), "grade", assignment, "--submissions", str(submissions), "--jobs", "2",
                 "--json"]) == 0
    results = {r["student"]: r for r in json.loads(capsys.readouterr().out)}
    solver, blank = results["solver"], results["blank"]
    assert solver["score"] == solver["max_score"] > 0, solver
    assert len(solver["exercises"]) == n_exercises and all(ex["score"] == ex["max_score"] for ex in solver["exercises"])
    assert blank["score"] == 0 and len(blank["exercises"]) == n_exercises and not blank["error"]
    assert all(ex["score"] == 0 and ex["max_score"] > 0 for ex in blank["exercises"]), blank
