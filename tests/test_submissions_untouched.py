"""The README's own workflow: `nbgrader collect` into submitted/, then `grader grade --submissions submitted`.

Grading reads the submissions and nothing else: every file under --submissions is byte for byte what it
was, whether that folder is the course's submitted/ or any other.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from nbgrader.api import Gradebook

from grader.cli import main
from grader.course import Course

from .conftest import cell_by_id, read

pytestmark = pytest.mark.slow

ANSWERS = {"add": "def add(a, b):\n    return a + b", "scale": "def scale(x, factor):\n    return x * factor",
           "mean_rows": "def mean_rows(x):\n    return x.mean(dim=-1)"}
CLASS = {"ada": ANSWERS, "bob": {**ANSWERS, "scale": "def scale(x, factor):\n    return x + factor"}, "cy": {}}
EXPECTED = {"ada": 10, "bob": 7, "cy": 0}


def fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file and folder under `folder`: its content's hash (files) and its mode."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            info = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
            found[str(path.relative_to(folder))] = (digest, info.st_mode)
    return found


def nbgrader(course: Path, *args: str, cwd: Path) -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "nbgrader"), *args,
                           f"--Exchange.root={course / 'exchange'}", f"--Exchange.cache={course / 'exchange-cache'}"],
                          cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def collected(fixture_course, tmp_path_factory):
    """A copy of the course whose submitted/ holds three submissions, released, submitted and collected
    through nbgrader's exchange."""
    course = tmp_path_factory.mktemp("readme") / "course"
    shutil.copytree(fixture_course, course, ignore=shutil.ignore_patterns("gradebook.db", "autograded", "submitted",
                                                                         "feedback", "reports", "exchange"))
    (course / "exchange").mkdir(mode=0o777)
    (course / "exchange").chmod(0o777)  # nbgrader's exchange is shared by every user
    nbgrader(course, "release_assignment", "00_basics", cwd=course)
    for student, answers in CLASS.items():
        home = course.parent / "homes" / student
        (home / "00_basics").mkdir(parents=True)
        nb = read(course / "release" / "00_basics" / "basics.ipynb")
        for grade_id, source in answers.items():
            cell_by_id(nb, grade_id).source = source
        (home / "00_basics" / "basics.ipynb").write_text(json.dumps(nb, indent=1))
        (home / "00_basics" / "notes.txt").write_text(f"{student}'s notes\n")
        nbgrader(course, "submit", "00_basics", "--course", "llmcourse", f"--student={student}", cwd=home)
    nbgrader(course, "collect", "00_basics", cwd=course)
    return course


def grade(course: Path, submissions: str, capsys) -> dict[str, dict]:
    capsys.readouterr()
    code = main(["--course", str(course), "grade", "00_basics", "--submissions", submissions, "--jobs", "2", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return {r["student"]: r for r in json.loads(out)}


def test_grading_the_collected_folder_leaves_every_submission_as_it_was(collected, capsys, monkeypatch, tmp_path):
    submitted = collected / "submitted"
    assert sorted(p.name for p in submitted.iterdir()) == sorted(CLASS)
    assert (submitted / "ada" / "00_basics" / "timestamp.txt").is_file()
    before = fingerprint(submitted)
    # This run's private copies go here, apart from those of gradings running next to it.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(collected)
    results = grade(collected, "submitted", capsys)  # the README's command, literally
    assert fingerprint(submitted) == before
    assert {s: r["score"] for s, r in results.items()} == EXPECTED
    assert not list(scratch.glob("grader-staging-*"))  # the private copies are gone
    with Gradebook(Course(collected).config().CourseDirectory.db_url) as gb:
        assert {s: gb.find_submission("00_basics", s).score for s in CLASS} == EXPECTED
    assert (collected / "autograded" / "ada" / "00_basics" / "basics.ipynb").is_file()


def test_grading_any_other_folder_leaves_it_as_it_was(collected, capsys, tmp_path):
    elsewhere = tmp_path / "class"
    shutil.copytree(collected / "submitted", elsewhere)
    before = fingerprint(elsewhere)
    results = grade(collected, str(elsewhere), capsys)
    assert fingerprint(elsewhere) == before
    assert {s: r["score"] for s, r in results.items()} == EXPECTED
