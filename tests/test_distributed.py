"""Grading on a real task queue: Redis and PostgreSQL on loopback, two worker processes for two machines.

One module-scoped class of 28 submissions goes through the queue once while a worker is killed mid-grade,
then again (idempotent), and its grades are compared with local grading of the same class.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from grader.cli import main

from .catalogue.cases import FORK_BOMB
from .conftest import cell_by_id, copy_fixture_course, read, write_submission
from .services.postgres import pg_bin, postgres_server
from .services.redis import redis_bin, redis_server

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(pg_bin() is None or redis_bin() is None,
                                 reason="PostgreSQL or Redis is not installed here (.ci/run installs both)")]

ANSWERS = {"add": "def add(a, b):\n    return a + b", "scale": "def scale(x, factor):\n    return x * factor",
           "mean_rows": "def mean_rows(x):\n    return x.mean(dim=-1)"}
WRONG = {"add": "def add(a, b):\n    return a - b", "scale": "def scale(x, factor):\n    return x + factor",
         "mean_rows": "def mean_rows(x):\n    return x.sum(dim=-1)"}
N_CLASS = 9  # every pair of exercises in every mix of right, wrong and blank (an orthogonal array), once
VISIBILITY_TIMEOUT = 20  # seconds before the queue hands a dead worker's task to another


def make_class(release: Path, submissions: Path) -> None:
    """9 submissions of right, wrong and missing answers, in which any two exercises meet in each of their 9
    mixes (so every answer of every exercise is graded beside every answer of every other), plus a fork bomb."""
    for i in range(N_CLASS):
        nb = read(release)
        first, second = i % 3, i // 3
        for grade_id, choice in zip(ANSWERS, (first, second, (first + second) % 3)):  # 0 right, 1 wrong, 2 blank
            if choice < 2:
                cell_by_id(nb, grade_id).source = (ANSWERS if choice == 0 else WRONG)[grade_id]
        write_submission(submissions, f"s{i:02d}", nb)
    nb = read(release)
    for grade_id, source in {**ANSWERS, "add": FORK_BOMB}.items():
        cell_by_id(nb, grade_id).source = source
    write_submission(submissions, "zz_poison", nb)


class Workers:
    """`grader worker` processes, each standing in for a grading machine."""

    def __init__(self, course: Path, broker: str, log_dir: Path):
        self.course, self.broker, self.log_dir = course, broker, log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *extra: str) -> None:
        env = {**os.environ, "LLMCOURSE_QUEUE_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT)}
        log = open(self.log_dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "grader.cli", "--course", str(self.course), "worker", "--broker", self.broker,
             "--name", f"{name}@test", *extra], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_ready(self, names: list[str], timeout: float = 60) -> None:
        from grader.distributed import make_app

        app = make_app(self.broker)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = app.control.inspect(timeout=1.0).ping() or {}
            if all(f"{n}@test" in replies for n in names):
                return
        raise AssertionError(f"workers {names} did not come up: see {self.log_dir}")

    def kill(self, name: str) -> None:
        """SIGKILL the worker and everything it started, as a machine that loses power would."""
        proc = self.procs.pop(name)
        tree = psutil.Process(proc.pid).children(recursive=True)  # its kernels run in sessions of their own
        os.killpg(proc.pid, signal.SIGKILL)
        for child in tree:
            with contextlib.suppress(psutil.Error):
                child.kill()
        proc.wait(10)

    def grading(self, name: str) -> bool:
        """Whether this worker is running a student's kernel right now."""
        try:
            return any("ipykernel_launcher" in " ".join(p.cmdline())
                       for p in psutil.Process(self.procs[name].pid).children(recursive=True))
        except psutil.Error:
            return False

    def alive(self) -> list[str]:
        return sorted(n for n, p in self.procs.items() if p.poll() is None)

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def grade(course: Path, submissions: Path, *extra: str) -> tuple[int, list[dict], str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--course", str(course), "grade", "00_basics", "--submissions", str(submissions), "--json", *extra])
    return code, (json.loads(out.getvalue()) if code == 0 else []), err.getvalue()


@pytest.fixture(scope="module")
def queue_course(tmp_path_factory):
    """A fixture course whose gradebook is on PostgreSQL, a Redis queue, and two workers."""
    base = tmp_path_factory.mktemp("distributed")
    course = copy_fixture_course(base / "course")
    with postgres_server() as db_url, redis_server() as broker:
        with open(course / "nbgrader_config.py", "a") as f:
            f.write(f"\nc.CourseDirectory.db_url = {db_url!r}\n")
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--course", str(course), "build"]) == 0
        submissions = base / "submissions"
        make_class(course / "release" / "00_basics" / "basics.ipynb", submissions)
        workers = Workers(course, broker, base)
        try:
            yield {"course": course, "submissions": submissions, "broker": broker, "db_url": db_url,
                   "workers": workers, "base": base}
        finally:
            workers.stop()


@pytest.fixture(scope="module")
def first_run(queue_course):
    """The class graded through the queue by two workers, one of which is killed while it grades."""
    import threading

    workers = queue_course["workers"]
    workers.start("alpha")
    workers.start("beta")
    workers.wait_ready(["alpha", "beta"])
    killed: list[str] = []

    def kill_alpha_mid_grade():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if workers.grading("alpha"):
                time.sleep(0.3)  # well inside the notebook: the kernel is up and cells are running
                workers.kill("alpha")
                killed.append("alpha")
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_alpha_mid_grade, daemon=True)
    killer.start()
    started = time.monotonic()
    code, results, err = grade(queue_course["course"], queue_course["submissions"], "--broker", queue_course["broker"])
    killer.join()
    return {"code": code, "results": results, "err": err, "killed": killed, "seconds": time.monotonic() - started}


def test_class_through_the_queue_matches_local_grading(queue_course, first_run, tmp_path):
    assert first_run["code"] == 0, first_run["err"]
    distributed = {r["student"]: r for r in first_run["results"]}
    assert len(distributed) == N_CLASS + 1

    # The same class graded locally, into a SQLite copy of the course.
    local_course = copy_fixture_course(tmp_path / "local")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--course", str(local_course), "build"]) == 0
    code, local, err = grade(local_course, queue_course["submissions"], "--jobs", "2")
    assert code == 0, err
    local = {r["student"]: r for r in local}
    assert {s: r["score"] for s, r in distributed.items()} == {s: r["score"] for s, r in local.items()}
    for student, result in distributed.items():
        assert [c["passed"] for ex in result["exercises"] for c in ex["checks"]] == \
               [c["passed"] for ex in local[student]["exercises"] for c in ex["checks"]], student
    scores = sorted({r["score"] for r in distributed.values()})
    assert scores[0] == 0 and scores[-1] == 10 and len(scores) >= 4


def test_a_worker_killed_mid_grade_loses_nothing(queue_course, first_run):
    assert first_run["killed"] == ["alpha"], "the test never caught worker alpha grading"
    results = first_run["results"]
    assert all(not r["error"] for r in results if r["student"] != "zz_poison"), \
        [(r["student"], r["error"]) for r in results if r["error"]]
    # The task alpha held was graded again by beta once the queue took it back.
    assert any("earlier worker stopped" in e for r in results for e in r["events"]), [r["events"] for r in results]

    from nbgrader.api import Gradebook

    with Gradebook(queue_course["db_url"]) as gb:
        assignment = gb.find_assignment("00_basics")
        stored = {s.student.id: s.score for s in assignment.submissions}
    assert stored == {r["student"]: r["score"] for r in results}  # one gradebook row each, with the same score


def test_poisoned_submission_takes_down_no_worker(queue_course, first_run):
    results = {r["student"]: r for r in first_run["results"]}
    assert results["zz_poison"]["score"] == 6  # all but the fork bomb's exercise (add, 4 points)
    assert queue_course["workers"].alive() == ["beta"]  # alpha was killed by the test, beta still serves


def test_second_run_is_idempotent(queue_course, first_run):
    started = time.monotonic()
    code, again, err = grade(queue_course["course"], queue_course["submissions"], "--broker", queue_course["broker"])
    seconds = time.monotonic() - started
    assert code == 0, err
    assert [(r["student"], r["score"], r["exercises"]) for r in again] == \
           [(r["student"], r["score"], r["exercises"]) for r in first_run["results"]]
    assert seconds < first_run["seconds"] / 2  # recorded work is returned, not graded again

    from grader.course import Course
    from grader.distributed import graded_students

    assert len(graded_students(Course(queue_course["course"]), "00_basics")) == N_CLASS + 1


def test_gpu_work_waits_for_a_gpu_worker(queue_course, first_run, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(queue_course["submissions"] / "s00", one / "s00")
    code, _, err = grade(queue_course["course"], one, "--broker", queue_course["broker"], "--gpu")
    assert code == 2 and "no GPU grading worker is listening" in err, err

    workers = queue_course["workers"]
    workers.start("gamma", "--gpu")
    workers.wait_ready(["gamma"])
    code, results, err = grade(queue_course["course"], one, "--broker", queue_course["broker"], "--gpu")
    assert code == 0, err
    assert results[0]["score"] == 10
    log = (queue_course["base"] / "gamma.log").read_text()
    assert "taking GPU grading work" in log
