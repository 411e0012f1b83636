"""A failure of the grading machinery is never a grade: it is retried, then reported as "not graded", with no
score in the gradebook, and the next run grades the submission."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbgrader.api import Gradebook, MissingEntry

import grader.grading as grading
from grader.cli import main
from grader.course import Course

from .conftest import cell_by_id, read, write_submission

pytestmark = pytest.mark.slow

ANSWERS = {"add": "def add(a, b):\n    return a + b", "scale": "def scale(x, factor):\n    return x * factor",
           "mean_rows": "def mean_rows(x):\n    return x.mean(dim=-1)"}

# Holds an exclusive lock on the gradebook (as another program writing to it would) until told to let go.
LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


def course_copy(fixture_course, tmp_path, config: str = "") -> Course:
    root = tmp_path / "course"
    shutil.copytree(fixture_course, root, ignore=shutil.ignore_patterns("gradebook.db", "autograded", "submitted",
                                                                       "feedback", "reports"))
    with open(root / "nbgrader_config.py", "a") as f:
        f.write("\n" + config + "\n")
    return Course(root)


def class_of(course: Course, tmp_path, students: list[str]):
    submissions = tmp_path / "submissions"
    for student in students:
        nb = read(course.root / "release" / "00_basics" / "basics.ipynb")
        for grade_id, source in ANSWERS.items():
            cell_by_id(nb, grade_id).source = source
        write_submission(submissions, student, nb)
    return submissions


def recorded_score(course: Course, student: str) -> float | None:
    with Gradebook(course.config().CourseDirectory.db_url) as gb:
        try:
            return gb.find_submission("00_basics", student).score
        except MissingEntry:
            return None


def test_a_gradebook_locked_past_its_timeout_grades_nothing_wrong(fixture_course, tmp_path, monkeypatch):
    # The gradebook gives up on its lock after 1 s instead of the course's 120 s.
    course = course_copy(fixture_course, tmp_path,
                         f"c.CourseDirectory.db_url = 'sqlite:///{tmp_path / 'course' / 'gradebook.db'}?timeout=1'")
    submissions = class_of(course, tmp_path, ["ada", "bob"])
    monkeypatch.setattr(grading, "RETRY_BACKOFF", 0.1)
    lockers = []
    register = grading.register_students

    def register_then_lock(course, students, db_url=None):
        register(course, students, db_url)
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(course.root / "gradebook.db")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        lockers.append(locker)
        assert locker.stdout.readline().strip() == "locked"  # held from here on, until we let go

    monkeypatch.setattr(grading, "register_students", register_then_lock)
    try:
        results = grading.grade_class(course, "00_basics", submissions, jobs=2)
    finally:
        for locker in lockers:
            locker.communicate("\n")
    monkeypatch.setattr(grading, "register_students", register)

    assert [r.student for r in results] == ["ada", "bob"]
    for r in results:
        assert r.not_graded.startswith("the gradebook could not be written"), (r.student, r.score, r.error)
        assert r.to_json()["score"] is None
        assert recorded_score(course, r.student) is None
        assert not (course.root / "autograded" / r.student / "00_basics").exists()

    again = grading.grade_class(course, "00_basics", submissions, jobs=2)
    assert [(r.student, r.score, r.not_graded) for r in again] == [("ada", 10, ""), ("bob", 10, "")]
    assert recorded_score(course, "ada") == recorded_score(course, "bob") == 10


def test_a_kernel_that_cannot_start_is_not_a_zero(fixture_course, tmp_path, capsys, monkeypatch):
    # An address-space limit of one byte: every kernel dies before it answers its first message.
    course = course_copy(fixture_course, tmp_path, "c.SandboxedKernelManager.memory_limit = 1")
    submissions = class_of(course, tmp_path, ["ada"])
    monkeypatch.setattr(grading, "RETRY_BACKOFF", 0.1)
    capsys.readouterr()
    code = main(["--course", str(course.root), "grade", "00_basics", "--submissions", str(submissions)])
    out = capsys.readouterr().out
    assert code == 3
    assert "not graded" in out and "the grading kernel could not start" in out and "run the same command again" in out
    assert recorded_score(course, "ada") is None
    grades = (course.root / "reports" / "00_basics" / "grades.json").read_text()
    assert json.loads(grades)[0]["score"] is None

    config = course.root / "nbgrader_config.py"
    config.write_text(config.read_text().replace("c.SandboxedKernelManager.memory_limit = 1", ""))
    code = main(["--course", str(course.root), "grade", "00_basics", "--submissions", str(submissions)])
    assert code == 0 and recorded_score(course, "ada") == 10


def test_a_kernel_that_cannot_be_restarted_is_not_a_grade():
    """A check whose kernel dies or overruns gets a new kernel; when none starts, the notebook is not graded at
    all (the machinery failed, not the student's code), so no check still to run counts as failed."""
    import time

    from llmcourse.checking.runner import ExerciseResult

    from grader.preprocessors import RunChecks
    from grader.remote import KernelRestartFailed, KernelSession

    class NoNewKernel:  # a kernel manager whose restarts never bring a kernel up
        async def restart_kernel(self, now=False):
            raise RuntimeError("Kernel didn't respond in 60 seconds")

    class OldClient:
        def stop_channels(self):
            pass

    class SilentChannel:  # the agent never answers: the check's request overruns
        async def request(self, payload, timeout):
            raise TimeoutError

        def close(self):
            pass

    session = KernelSession(NoNewKernel(), OldClient(), deadline=time.monotonic() + 60)
    session.channel = SilentChannel()
    with pytest.raises(KernelRestartFailed, match="could not be restarted"):
        session.student(timeout=1.0).add(1, 2)
    assert isinstance(session.failure, KernelRestartFailed)

    # The check that saw it fails inside pytest; the cell's grading then stops the whole notebook.
    class Connected:
        failure = session.failure

        def remaining(self):
            return 60.0

        async def connect(self):
            pass

        def student(self, timeout):
            return None

    checks = RunChecks()
    checks.session = Connected()
    checks.check_exercise = lambda exercise_id, student, visible, hidden: ExerciseResult(id=exercise_id)
    cell = nbformat.v4.new_code_cell('check("00_basics/add")', metadata={"nbgrader": {"grade": True, "points": 4}})
    with pytest.raises(KernelRestartFailed):
        checks.grade_cell(cell)

    # Reported as not graded, with the reason, locally and on the queue.
    log = f"Traceback (most recent call last):\n...\ngrader.remote.{session.failure}"
    assert grading.machinery_failure({"success": False, "log": log}).startswith(
        "the grading kernel could not be restarted")
