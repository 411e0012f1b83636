"""The task queue's machinery failing in the middle of a class, on real servers on loopback.

PostgreSQL restarted, Redis restarted (losing every queued task and stored result), a worker's disk full:
every submission ends with its true grade, or with an explicit "not graded" that the next run turns into
its true grade. Never a wrong number.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from grader.cli import main

from .conftest import cell_by_id, copy_fixture_course, read, write_submission
from .services.postgres import pg_bin, postgres_instance
from .services.redis import redis_bin, redis_instance
from .test_distributed import ANSWERS, WRONG, Workers

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(pg_bin() is None or redis_bin() is None,
                                 reason="PostgreSQL or Redis is not installed here (.ci/run installs both)"),
              pytest.mark.skipif(os.geteuid() != 0, reason="mounting a worker's scratch on a small tmpfs needs root")]

POINTS = {"add": 4, "scale": 3, "mean_rows": 3}
# a - b leaves its inputs alone, but that point counts only with a right sum.
WRONG_POINTS = {"add": 0, "scale": 0, "mean_rows": 0}
# Which answers each student got right; the others are wrong. Their true scores: 10, 0, 4, 7, 6, 3.
RIGHT = [("add", "scale", "mean_rows"), (), ("add",), ("add", "scale"), ("scale", "mean_rows"), ("mean_rows",)]


def make_class(release: Path, submissions: Path, prefix: str, n: int) -> dict[str, float]:
    """n submissions named prefix0, prefix1, ...; their true scores."""
    truth = {}
    for i in range(n):
        right = RIGHT[i % len(RIGHT)]
        nb = read(release)
        for grade_id in ANSWERS:
            cell_by_id(nb, grade_id).source = (ANSWERS if grade_id in right else WRONG)[grade_id]
        write_submission(submissions, f"{prefix}{i}", nb)
        truth[f"{prefix}{i}"] = float(sum((POINTS if g in right else WRONG_POINTS)[g] for g in ANSWERS))
    return truth


@pytest.fixture(scope="module")
def queue(tmp_path_factory):
    """A course on a PostgreSQL gradebook, a Redis queue, and two workers that retry quickly."""
    base = tmp_path_factory.mktemp("queue_faults")
    course = copy_fixture_course(base / "course")
    os.environ["LLMCOURSE_QUEUE_RETRIES"] = "3"  # tries after the first, 1, 2 and 4 s apart
    os.environ["LLMCOURSE_QUEUE_RETRY_DELAY"] = "1"
    with postgres_instance() as pg, redis_instance() as redis:
        db_url = pg.create_database("gradebook")
        with open(course / "nbgrader_config.py", "a") as f:
            f.write(f"\nc.CourseDirectory.db_url = {db_url!r}\n")
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--course", str(course), "build"]) == 0
        workers = Workers(course, redis.url, base)
        workers.start("one")
        workers.start("two")
        try:
            workers.wait_ready(["one", "two"])
            yield {"course": course, "base": base, "pg": pg, "redis": redis, "db_url": db_url, "workers": workers,
                   "release": course / "release" / "00_basics" / "basics.ipynb"}
        finally:
            workers.stop()
            for name in ("LLMCOURSE_QUEUE_RETRIES", "LLMCOURSE_QUEUE_RETRY_DELAY"):
                os.environ.pop(name, None)


def grade(queue, submissions: Path) -> tuple[int, dict[str, dict], str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--course", str(queue["course"]), "grade", "00_basics", "--submissions", str(submissions),
                     "--json", "--broker", queue["redis"].url])
    # Exit status 4 is how an unexpected error ends: then nothing is printed, and err says why.
    results = {r["student"]: r for r in json.loads(out.getvalue())} if out.getvalue().strip() else {}
    return code, results, err.getvalue()


def ledger(queue, prefix: str) -> dict[str, bool]:
    """Student -> whether the ledger holds a finished result, for the students of one test."""
    from sqlalchemy import create_engine, text

    engine = create_engine(queue["db_url"])
    try:
        with engine.connect() as conn:
            if conn.execute(text("SELECT to_regclass('llmcourse_graded')")).scalar() is None:
                return {}
            rows = conn.execute(text("SELECT student, result IS NOT NULL FROM llmcourse_graded WHERE student LIKE :p"),
                                {"p": prefix + "%"}).all()
    except Exception:  # the server is being restarted by the test itself
        return {}
    finally:
        engine.dispose()
    return {student: bool(done) for student, done in rows}


def gradebook_scores(queue, prefix: str) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(queue["db_url"]) as gb:
        return {s.student.id: s.score for s in gb.find_assignment("00_basics").submissions
                if s.student.id.startswith(prefix)}


class Fault(threading.Thread):
    """Injects a fault once `ready()` holds (looked at every 50 ms), unless grading finished first."""

    def __init__(self, ready, inject):
        super().__init__(daemon=True)
        self.ready, self.inject = ready, inject
        self.done, self.injected = threading.Event(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            if self.ready():
                self.inject()
                self.injected.set()
                return

    def __enter__(self) -> "Fault":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()


def true_grade_or_not_graded(results: dict[str, dict], truth: dict[str, float]) -> list[str]:
    """The students left not graded; fails on any wrong number."""
    assert set(results) == set(truth)
    wrong = {s: (r["score"], truth[s], r["error"]) for s, r in results.items()
             if not r["not_graded"] and (r["score"] != truth[s] or r["error"])}
    assert not wrong, wrong
    return sorted(s for s, r in results.items() if r["not_graded"])


def finish_the_class(queue, submissions: Path, truth: dict[str, float], first: tuple[int, dict, str]) -> None:
    """What a run left not graded, the next run grades; the gradebook then holds every true grade."""
    code, results, err = first
    left = true_grade_or_not_graded(results, truth)
    assert code == (3 if left else 0), err
    if left:
        code, results, err = grade(queue, submissions)
        assert code == 0, err
        assert true_grade_or_not_graded(results, truth) == []
    prefix = next(iter(truth)).rstrip("0123456789")
    assert gradebook_scores(queue, prefix) == truth


def class_survives(queue, tmp_path: Path, prefix: str, n: int, when, fault, moment: str) -> None:
    """Grade a class of n, inject `fault` once `when(ledger rows)` holds, then hold every result to the truth."""
    truth = make_class(queue["release"], tmp_path / "subs", prefix, n)
    with Fault(lambda: when(ledger(queue, prefix)), fault) as injected:
        first = grade(queue, tmp_path / "subs")
    assert injected.injected.is_set(), f"the test never {moment}"
    finish_the_class(queue, tmp_path / "subs", truth, first)


def test_postgres_restarted_in_the_middle_of_a_class(queue, tmp_path):
    def grading(rows) -> bool:  # a worker took a submission and is grading it: its ledger row is open
        return any(not done for done in rows.values())

    class_survives(queue, tmp_path, "pg", 4, grading, queue["pg"].restart, "caught a worker grading")


def test_redis_restarted_in_the_middle_of_a_class(queue, tmp_path):
    def half_way(rows) -> bool:  # some results are in, others still queued: the restart loses both kinds
        return any(rows.values()) and sum(rows.values()) <= 6 - 3

    class_survives(queue, tmp_path, "rd", 6, half_way, queue["redis"].restart, "caught the class half graded")


def test_a_full_disk_on_the_worker_is_not_a_grade(queue, tmp_path):
    truth = make_class(queue["release"], tmp_path / "subs", "df", 2)
    scratch = queue["course"] / ".grader"  # where a worker unpacks each submission it takes
    scratch.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(scratch)], check=True)
    try:
        filler = scratch / "filler"
        with open(filler, "wb") as f, contextlib.suppress(OSError):
            f.write(b"\0" * (1 << 20))
        code, results, err = grade(queue, tmp_path / "subs")
        assert code == 3, err
        assert all(r["score"] is None and "the worker's disk is full" in r["not_graded"] for r in results.values()), \
            results
        assert not any(ledger(queue, "df").values())  # nothing recorded: the next run grades them
        assert gradebook_scores(queue, "df") == {}

        filler.unlink()
        code, results, err = grade(queue, tmp_path / "subs")
        assert code == 0, err
        assert {s: r["score"] for s, r in results.items()} == truth
        assert gradebook_scores(queue, "df") == truth
    finally:
        subprocess.run(["umount", "-l", str(scratch)], check=False)
