"""An instructor's term, step by step, on a class of the fixture course: grade everyone, grade one student again,
grade a cell by hand, change a check and regrade (first declined, then accepted), roll the regrade back, export.

After every step, the four places an instructor reads a grade agree: the class report's student table,
reports/<assignment>/grades.csv, `grader export`, and nbgrader's own `nbgrader export`. One student handed in
after the due date, and nbgrader's late penalty takes her points everywhere.

The fixture course (not the demo class) is used because its checks live in the course itself
(tests/fixture_course/fixture_checks), so the test can change one and regrade; the demo class's checks are the
installed course's.
"""
from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from grader.cli import main

from .basics_class import CORRECT, student_notebook
from .conftest import (cell_by_id, copy_fixture_course, forget_fixture_checks, read, use_fixture_checks,
                       write_submission)

pytestmark = pytest.mark.slow

ASSIGNMENT = "00_basics"
RIGHT = CORRECT
DUE = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def hand_in(course: Path, subs: Path, student: str, answers: dict[str, str], when: datetime) -> None:
    path = write_submission(subs, student, student_notebook(course, answers))
    os.utime(path, (when.timestamp(), when.timestamp()))  # no timestamp.txt: the file's time is the hand-in time


def agreed_scores(course: Path, capsys) -> dict[str, float]:
    """Every student's score, read from the report, grades.csv, `grader export` and `nbgrader export`, asserted
    equal in all four."""
    page = (course / "reports" / ASSIGNMENT / "report.html").read_text()
    students = page.split('<h2 id="students">', 1)[1]
    report = {html.unescape(m[0]): float(m[1]) for m in re.findall(r"<tr><td>([^<]+)</td><td>([\d.]+) / ", students)}
    with open(course / "reports" / ASSIGNMENT / "grades.csv") as f:
        grades_csv = {row["student"]: float(row["score"]) for row in csv.DictReader(f)}
    capsys.readouterr()
    assert main(["--course", str(course), "export"]) == 0
    ours = {row["student"]: float(row[ASSIGNMENT]) for row in csv.DictReader(io.StringIO(capsys.readouterr().out))
            if row[ASSIGNMENT]}
    out = course / "nbgrader-export.csv"
    done = subprocess.run([sys.executable, "-m", "nbgrader", "export", "--to", str(out)], cwd=course,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(out) as f:
        theirs = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)
                  if row["assignment"] == ASSIGNMENT and row["timestamp"]}
    assert report == grades_csv == ours == theirs, (report, grades_csv, ours, theirs)
    return report


def grade(course: Path, subs: Path, *extra: str) -> int:
    return main(["--course", str(course), "grade", ASSIGNMENT, "--submissions", str(subs), "--jobs", "2", *extra])


def test_a_whole_term(tmp_path, capsys, monkeypatch):
    from nbgrader.api import Gradebook

    course = copy_fixture_course(tmp_path / "course")
    try:
        with open(course / "nbgrader_config.py", "a") as f:
            f.write("\nc.LateSubmissionPlugin.penalty_method = 'zero'  # a late submission scores 0\n")
        assert main(["--course", str(course), "build"]) == 0
        db = f"sqlite:///{course / 'gradebook.db'}"
        with Gradebook(db) as gb:  # the due date, as `nbgrader db assignment add 00_basics --duedate=...` sets it
            gb.update_or_create_assignment(ASSIGNMENT, duedate=DUE.strftime("%Y-%m-%d %H:%M:%S UTC"))
        subs = tmp_path / "submissions"
        on_time, late = datetime(2026, 2, 28, 9, 0, tzinfo=timezone.utc), datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
        hand_in(course, subs, "ada", RIGHT, on_time)
        hand_in(course, subs, "bo", {"add": RIGHT["add"]}, on_time)
        hand_in(course, subs, "cy", RIGHT, late)
        hand_in(course, subs, "dee", {**RIGHT, "scale": "def scale(x, factor):\n    return x + factor"}, on_time)

        # 1. Grade everyone.
        assert grade(course, subs) == 0
        assert agreed_scores(course, capsys) == {"ada": 10, "bo": 4, "cy": 0, "dee": 7}
        with Gradebook(db) as gb:
            cy = gb.find_submission(ASSIGNMENT, "cy")
            assert cy.timestamp == late.replace(tzinfo=None) and cy.score == 10 and cy.late_submission_penalty == 10
            assert gb.find_submission(ASSIGNMENT, "ada").late_submission_penalty == 0

        # 2. bo hands in a corrected notebook (before the due date), and only bo is graded again.
        hand_in(course, subs, "bo", {**RIGHT, "mean_rows": "def mean_rows(x):\n    return x.sum(-1)"}, on_time)
        capsys.readouterr()
        assert grade(course, subs, "--student", "bo") == 0
        said = capsys.readouterr().out
        assert "Changes since the last grading" in said and re.search(r"bo\s+4\s+7\s+\+3\s+scale: ", said)
        assert agreed_scores(course, capsys) == {"ada": 10, "bo": 7, "cy": 0, "dee": 7}

        # 3. A cell graded by hand in the formgrader: dee gets 1 of scale's 3 points.
        with Gradebook(db) as gb:
            gb.find_grade("check_scale", "basics", ASSIGNMENT, "dee").manual_score = 1
            gb.db.commit()
        assert main(["--course", str(course), "report", ASSIGNMENT]) == 0
        assert agreed_scores(course, capsys) == {"ada": 10, "bo": 7, "cy": 0, "dee": 8}
        before_regrade = (course / "reports" / ASSIGNMENT / "grades.json").read_text()

        # 4. A check changes: mean_rows's hidden check is worth 3 points instead of 2; the build sets the cell's
        # points, and a regrade shows who gains before anything is written.
        checks = course / "fixture_checks" / "hidden.py"
        text = checks.read_text()
        assert text.count('@graded("mean_rows", points=2,') == 1
        checks.write_text(text.replace('@graded("mean_rows", points=2,', '@graded("mean_rows", points=3,'))
        shutil.rmtree(checks.parent / "__pycache__", ignore_errors=True)  # same size, maybe the same second
        use_fixture_checks(course)  # forgets the modules this process imported, as a new `grader` process would
        assert main(["--course", str(course), "build", ASSIGNMENT]) == 0
        monkeypatch.setattr("grader.cli._interactive", lambda: True)
        monkeypatch.setattr("builtins.input", lambda prompt: "n")
        capsys.readouterr()
        assert grade(course, subs, "--regrade", "--student", "ada", "--student", "bo") == 0  # declined
        said = capsys.readouterr().out
        assert "1 student gains, 0 lose, 0 graded for the first time, 1 unchanged" in said, said
        assert re.search(r"ada\s+10\s+11\s+\+1\s+mean_rows: mean rows random \+1", said), said
        assert "Nothing was written" in said
        assert (course / "reports" / ASSIGNMENT / "grades.json").read_text() == before_regrade
        assert agreed_scores(course, capsys) == {"ada": 10, "bo": 7, "cy": 0, "dee": 8}

        monkeypatch.setattr("grader.cli._interactive", lambda: False)
        assert grade(course, subs, "--regrade") == 2  # no terminal to ask at, and no --yes
        assert "add --yes" in capsys.readouterr().err
        assert grade(course, subs, "--regrade", "--yes") == 0
        assert agreed_scores(course, capsys) == {"ada": 11, "bo": 7, "cy": 0, "dee": 9}  # dee's hand grade stays
        with Gradebook(db) as gb:
            assert gb.find_grade("check_scale", "basics", ASSIGNMENT, "dee").manual_score == 1

        # 5. The regrade was a mistake: roll it back. The history keeps every run and which one was rolled back.
        capsys.readouterr()
        assert main(["--course", str(course), "rollback", ASSIGNMENT, "--yes"]) == 0
        said = capsys.readouterr().out
        assert "0 students gain, 3 lose" in said and "checks have changed since those grades" in said, said
        assert agreed_scores(course, capsys) == {"ada": 10, "bo": 7, "cy": 0, "dee": 8}
        restored = {r["student"]: r["score"] for r in json.loads((course / "reports" / ASSIGNMENT / "grades.json")
                                                                   .read_text())}
        assert restored == {"ada": 10, "bo": 7, "cy": 10, "dee": 7}  # the automatic scores, before penalty and hand
        assert main(["--course", str(course), "history", ASSIGNMENT]) == 0
        listing = capsys.readouterr().out
        assert "3 grading runs" in listing and listing.count("rolled back") == 1 and "latest" in listing
        assert re.search(r"regrade .* rolled back", listing) and re.search(r"grade .* 1 .* latest", listing), listing
        graded = read(course / "autograded" / "ada" / ASSIGNMENT / "basics.ipynb")
        assert cell_by_id(graded, "check_mean_rows").metadata["nbgrader"]["points"] == 3  # the graded notebook too (1 + 2)

        # 6. Export for a platform: the same grades.
        roster = tmp_path / "moodle.csv"
        roster.write_text("Username,Email address\nada,ada@example.org\ncy,cy@example.org\n")
        assert main(["--course", str(course), "export", "--format", "moodle", "--roster", str(roster)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == f"Username,Email address,{ASSIGNMENT}" and set(lines[1:]) == {
            "ada,ada@example.org,10", "cy,cy@example.org,0", "bo,,7", "dee,,8"}
    finally:
        forget_fixture_checks(course)


def test_history_keeps_only_the_graded_notebooks_and_follows_no_link(tmp_path):
    """A kernel may leave links, pipes and other files in its folder: the history copies the graded notebooks
    only, reads no pipe (it would block, or fail the whole copy) and follows no link."""
    from grader.history import _copy_notebooks

    graded = tmp_path / "autograded" / "mallory" / ASSIGNMENT
    graded.mkdir(parents=True)
    (graded / "basics.ipynb").write_text('{"cells": []}')
    (graded / "data.csv").write_text("1,2")
    secret = tmp_path / "secret.ipynb"
    secret.write_text("root's own notebook")
    (graded / "linked.ipynb").symlink_to(secret)
    os.mkfifo(graded / "pipe.ipynb")
    (graded / "folder.ipynb").mkdir()
    kept = tmp_path / "kept"
    assert _copy_notebooks(graded, kept) == 1
    assert sorted(p.name for p in kept.iterdir()) == ["basics.ipynb"]
    assert _copy_notebooks(tmp_path / "nowhere", kept) == 0
    os.symlink(graded, tmp_path / "linked-folder")
    assert _copy_notebooks(tmp_path / "linked-folder", tmp_path / "other") == 0
