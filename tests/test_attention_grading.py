"""01_attention through the real grading path: `grader check` and `grader grade` in sandboxed kernels."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from grader.cli import main
from tests.specs.attention import SPEC

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A copy of the course (its notebooks and demo class), so grading writes nothing in the repo."""
    root = tmp_path_factory.mktemp("course") / "llmcourse"
    root.mkdir()
    shutil.copy(REPO / "nbgrader_config.py", root)
    for name in ("source", "release", "demo"):
        shutil.copytree(REPO / name, root / name)
    return root


def check_json(course: Path, notebook: Path, capsys) -> tuple[int, dict]:
    code = main(["--course", str(course), "check", str(notebook), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_solution_gets_full_marks_through_grader_check(course, capsys):
    code, data = check_json(course, course / "source" / "01_attention" / "attention.ipynb", capsys)
    assert code == 0, data
    assert data["score"] == data["max_score"] == 100
    assert len(data["exercises"]) == len(SPEC.exercises) and all(ex["score"] == ex["max_score"] for ex in data["exercises"])


def grade_demo(course: Path, capsys, submissions: Path | None = None) -> dict[str, dict]:
    code = main(["--course", str(course), "grade", "01_attention", "--submissions",
                 str(submissions or course / "demo" / "submissions"), "--jobs", "2", "--json"])
    assert code == 0
    return {r["student"]: r for r in json.loads(capsys.readouterr().out)}


def test_demo_class_through_grader_grade(course, capsys, tmp_path):
    results = grade_demo(course, capsys)
    lost = {s: sorted(ex["id"].split("/")[1] for ex in r["exercises"] if ex["score"] < ex["max_score"])
            for s, r in results.items()}
    assert results["ada"]["score"] == 100 and lost["ada"] == []
    # blaise handed in the blank release: nothing on any exercise, and nothing went wrong while grading it.
    # (`grader check` of a notebook that fails checks, and its exit code, is tested on the fixture course.)
    assert results["blaise"]["score"] == 0 and not results["blaise"]["error"]
    assert len(results["blaise"]["exercises"]) == len(SPEC.exercises)
    assert all(ex["score"] == 0 and ex["max_score"] > 0 for ex in results["blaise"]["exercises"])
    assert lost["carla"] == ["sinusoidal_positional_encoding"]
    assert lost["dmitri"] == ["padding_mask"]  # tampering earned nothing
    assert lost["eve"] == ["count_parameters"]  # the kernel died in that cell; everything else was graded
    assert any("kernel died" in e for e in results["eve"]["events"])

    # Two of them graded again, one with full marks and one who lost an exercise: the same grades, check by check
    # (kernels are reseeded; nothing depends on timing). The catalogue regrades its determinism cases too.
    subset = tmp_path / "again"
    for student in ("ada", "carla"):
        shutil.copytree(course / "demo" / "submissions" / student, subset / student)
    again = grade_demo(course, capsys, subset)
    assert set(again) == {"ada", "carla"}
    for student, result in again.items():
        assert result["score"] == results[student]["score"]
        assert [c["passed"] for ex in result["exercises"] for c in ex["checks"]] == \
               [c["passed"] for ex in results[student]["exercises"] for c in ex["checks"]]
