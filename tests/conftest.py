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


def use_fixture_checks(root: Path) -> None:
    """Make the fixture's check modules importable here and in every process the grader starts."""
    os.environ["LLMCOURSE_EXTRA_CHECKS"] = FIXTURE_CHECKS
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(root) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(root), *paths])
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


@pytest.fixture(scope="session")
def fixture_course(tmp_path_factory) -> Path:
    """A copy of tests/fixture_course with release/ and solutions/ built by `grader build`."""
    from grader.cli import main

    root = tmp_path_factory.mktemp("course") / "fixture"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("__pycache__", "release", "solutions",
                                                                 "gradebook.db", "autograded", "submitted"))
    use_fixture_checks(root)
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
