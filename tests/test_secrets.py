"""Nothing secret reaches students: release/, the student package and its wheel hold no solutions,
hidden checks or grader code."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "hidden=True")


def test_release_has_no_solutions_or_hidden_checks():
    notebooks = list((REPO / "release").rglob("*.ipynb"))
    for path in notebooks:
        text = path.read_text()
        for marker in MARKERS:
            assert marker not in text, f"{path} contains {marker!r}"


def test_student_package_has_no_grader_or_reference_code():
    for path in (REPO / "llmcourse").rglob("*.py"):
        text = path.read_text()
        assert "from grader" not in text and "import grader" not in text.replace("import grader.", ""), path
        assert "grader.reference" not in text, path
        for marker in MARKERS[:3]:
            assert marker not in text, f"{path} contains {marker!r}"


@pytest.mark.slow
def test_student_wheel_contains_only_the_student_package(tmp_path):
    env = {**os.environ, "LLMCOURSE_WHEEL": "student"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                   check=True, env=env, capture_output=True)
    wheel = next(tmp_path.glob("llmcourse-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("llmcourse/checks/") for n in names)
    assert not any(n.startswith(("grader/", "source/", "solutions/", "tests/")) for n in names), names
    for name in names:
        if name.endswith(".py"):
            text = zipfile.ZipFile(wheel).read(name).decode()
            assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, name
