"""05_rlhf through the real grading path: `grader check` in a sandboxed kernel, solution and blank release."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from grader.cli import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A copy of the course's notebooks, so grading writes nothing in the repo."""
    root = tmp_path_factory.mktemp("course") / "llmcourse"
    root.mkdir()
    shutil.copy(REPO / "nbgrader_config.py", root)
    for name in ("source", "release"):
        (root / name).mkdir()
        shutil.copytree(REPO / name / "05_rlhf", root / name / "05_rlhf")
    return root


def check_json(course: Path, notebook: Path, capsys) -> tuple[int, dict]:
    code = main(["--course", str(course), "check", str(notebook), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_solution_gets_full_marks_through_grader_check(course, capsys):
    code, data = check_json(course, course / "source" / "05_rlhf" / "rlhf.ipynb", capsys)
    assert code == 0, data
    assert data["score"] == data["max_score"] == 100
    assert len(data["exercises"]) == 8 and all(ex["score"] == ex["max_score"] for ex in data["exercises"])


def test_blank_release_gets_zero_on_every_exercise(course, capsys):
    code, data = check_json(course, course / "release" / "05_rlhf" / "rlhf.ipynb", capsys)
    assert code == 1
    assert data["score"] == 0 and all(ex["score"] == 0 for ex in data["exercises"])
