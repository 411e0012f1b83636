"""The gradebook on a real PostgreSQL server (started here on loopback), under concurrent graders."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from grader.cli import main

from .conftest import FIXTURE, cell_by_id, read, use_fixture_checks, write_submission
from .services.postgres import pg_bin, postgres_server

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL is not installed here (.ci/run installs it)")]

ANSWERS = {"add": "def add(a, b):\n    return a + b", "scale": "def scale(x, factor):\n    return x * factor",
           "mean_rows": "def mean_rows(x):\n    return x.mean(dim=-1)"}


def make_class(course: Path, submissions: Path, n: int = 3) -> None:
    """A blank notebook, a full-marks one, and one with a wrong mean_rows."""
    for i in range(n):
        nb = read(course / "release" / "00_basics" / "basics.ipynb")
        if i % 3:
            for grade_id, source in ANSWERS.items():
                cell_by_id(nb, grade_id).source = source
        if i % 3 == 2:
            cell_by_id(nb, "mean_rows").source = "def mean_rows(x):\n    return x.sum(dim=-1)"
        write_submission(submissions, f"s{i}", nb)


def grade(course: Path, submissions: Path) -> dict[str, float]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--course", str(course), "grade", "00_basics", "--submissions", str(submissions),
                     "--jobs", "2", "--json"]) == 0
    return {r["student"]: r["score"] for r in json.loads(out.getvalue())}


@pytest.fixture(scope="module")
def sqlite_graded(fixture_course, tmp_path_factory) -> dict:
    """The class graded once on a SQLite gradebook, in a copy of the fixture course: both tests start from it."""
    base = tmp_path_factory.mktemp("sqlite_graded")
    submissions = base / "submissions"
    make_class(fixture_course, submissions)
    course = base / "sqlite_course"
    shutil.copytree(fixture_course, course, ignore=shutil.ignore_patterns("__pycache__", "gradebook.db", "autograded",
                                                                          "submitted", "reports"))
    use_fixture_checks(course)
    return {"course": course, "submissions": submissions, "scores": grade(course, submissions)}


def test_postgres_gradebook_matches_sqlite_and_regrading_is_idempotent(sqlite_graded, tmp_path):
    submissions, sqlite_scores = sqlite_graded["submissions"], sqlite_graded["scores"]

    course = tmp_path / "pgcourse"
    shutil.copytree(FIXTURE, course, ignore=shutil.ignore_patterns("__pycache__"))
    use_fixture_checks(course)
    with postgres_server() as url:
        with open(course / "nbgrader_config.py", "a") as f:
            f.write(f"\nc.CourseDirectory.db_url = {url!r}\n")
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--course", str(course), "build"]) == 0
        first = grade(course, submissions)
        second = grade(course, submissions)

        from nbgrader.api import Gradebook

        with Gradebook(url) as gb:
            assignment = gb.find_assignment("00_basics")
            stored = {s.student.id: s.score for s in assignment.submissions}
            assert len(assignment.submissions) == 3  # one row per student, however often graded
    assert first == second == sqlite_scores == stored
    assert sorted(set(first.values())) == [0.0, 7.0, 10.0]


def test_migrating_a_graded_class_from_sqlite_to_postgres(sqlite_graded, tmp_path, capsys):
    submissions, scores = sqlite_graded["submissions"], sqlite_graded["scores"]
    course = tmp_path / "sqlite_course"  # a copy: the migration below points this course at PostgreSQL
    shutil.copytree(sqlite_graded["course"], course, ignore=shutil.ignore_patterns("__pycache__"))
    use_fixture_checks(course)

    from nbgrader.api import Gradebook

    def contents(url: str) -> dict:
        with Gradebook(url) as gb:
            return {(s.student.id, g.name): (g.score, g.max_score)
                    for s in gb.find_assignment("00_basics").submissions for n in s.notebooks for g in n.grades}

    before = contents(f"sqlite:///{course / 'gradebook.db'}")
    with postgres_server() as url:
        capsys.readouterr()
        assert main(["--course", str(course), "migrate-gradebook", url]) == 0
        out = capsys.readouterr().out
        assert f"c.CourseDirectory.db_url = {url!r}" in out and "3 student" in out
        assert contents(url) == before and len(before) == 3 * 3  # every grade of every student, unchanged
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        with engine.connect() as conn:  # the task queue's ledger is there before any worker could race to make it
            assert conn.execute(text("SELECT to_regclass('llmcourse_graded')")).scalar() is not None
        engine.dispose()

        # The course then runs on the new gradebook: a regrade gives the same scores and no new rows.
        with open(course / "nbgrader_config.py", "a") as f:
            f.write(f"\nc.CourseDirectory.db_url = {url!r}\n")
        assert grade(course, submissions) == scores
        assert contents(url) == before

        # Migrating again into the now non-empty database is refused in a sentence.
        with open(course / "nbgrader_config.py", "a") as f:
            f.write(f"\nc.CourseDirectory.db_url = {'sqlite:///' + str(course / 'gradebook.db')!r}\n")
        assert main(["--course", str(course), "migrate-gradebook", url]) == 2
        assert "already holds a gradebook" in capsys.readouterr().err
    assert main(["--course", str(course), "migrate-gradebook", "mysql://nowhere/db"]) == 2
    assert "is not a database URL nbgrader supports here" in capsys.readouterr().err
