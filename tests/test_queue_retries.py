"""How a grading task tells the machinery's failures from the student's, without servers."""
from __future__ import annotations

import errno
from types import SimpleNamespace

import pytest

from grader import distributed

# What nbgrader's autograde returns when the gradebook's server went away under it (its own words).
DATABASE_GONE = {"success": False, "error": "nbgrader.converters.base.NbGraderException: There was an error "
                 "accessing the nbgrader database. This may occur if you recently upgraded nbgrader.",
                 "log": "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection failed: Connection "
                        "refused"}
COLLIDED = {"success": False, "error": "nbgrader.api.InvalidEntry: (psycopg.errors.UniqueViolation) duplicate key "
            "value violates unique constraint \"student_pkey\"", "log": ""}
KERNEL_DID_NOT_START = {"success": False, "error": "RuntimeError: Kernel died before replying to kernel_info",
                        "log": ""}
STUDENTS_FAULT = {"success": False, "error": "nbgrader.converters.base.NbGraderException: No notebooks found, did "
                  "you forget to run 'nbgrader generate_assignment'?", "log": ""}


@pytest.mark.parametrize("outcome, reason", [(DATABASE_GONE, "the gradebook's database could not be reached"),
                                             (COLLIDED, "refused a write made at the same moment"),
                                             (KERNEL_DID_NOT_START, "the notebook's kernel could not start")])
def test_a_machinery_failure_under_autograde_is_raised_for_a_retry(outcome, reason, tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "autograde", lambda *args: dict(outcome))
    with pytest.raises(distributed.MachineryError, match=reason):
        distributed._grade_files(SimpleNamespace(root=tmp_path), "00_basics", "s0", {})


def test_a_failure_about_the_submission_is_graded_as_before(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "autograde", lambda *args: dict(STUDENTS_FAULT))
    outcome = distributed._grade_files(SimpleNamespace(root=tmp_path), "00_basics", "s0", {})
    assert outcome["success"] is False and "No notebooks found" in outcome["error"]
    assert "not_graded" not in outcome


class FakeTask:
    """What `_grade_task` uses of a bound Celery task: the try it is on, and retry()."""

    def __init__(self, retries: int):
        self.request = SimpleNamespace(retries=retries, hostname="one@test")
        self.retried: dict | None = None

    def retry(self, **kwargs):
        self.retried = kwargs
        return RuntimeError("retry")  # Celery's Retry, raised by the caller


@pytest.fixture
def failing_disk(monkeypatch, tmp_path):
    monkeypatch.setenv(distributed._COURSE_ENV, str(tmp_path))
    monkeypatch.setenv("LLMCOURSE_QUEUE_RETRIES", "3")
    monkeypatch.setenv("LLMCOURSE_QUEUE_RETRY_DELAY", "2")
    config = SimpleNamespace(CourseDirectory=SimpleNamespace(db_url="postgresql+psycopg://grader@db/gradebook"))
    monkeypatch.setattr(distributed, "Course", lambda root: SimpleNamespace(config=lambda: config))
    monkeypatch.setattr(distributed, "gradebook_identity", lambda url: "gradebook")
    monkeypatch.setattr(distributed, "course_fingerprint", lambda course, assignment: "course")

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(distributed, "_grade_once", full)
    return {"assignment": "00_basics", "student": "s0", "files": {}, "course": "course", "gradebook": "gradebook"}


def test_a_failing_task_goes_back_to_the_queue_with_doubling_delays(failing_disk):
    delays = []
    for retries in range(3):
        task = FakeTask(retries)
        with pytest.raises(RuntimeError, match="retry"):
            distributed._grade_task(task, failing_disk)
        delays.append(task.retried["countdown"])
        assert isinstance(task.retried["exc"], OSError)
    assert delays == [2, 4, 8]


def test_after_the_last_try_the_submission_is_not_graded(failing_disk):
    task = FakeTask(retries=3)
    outcome = distributed._grade_task(task, failing_disk)
    assert task.retried is None
    assert outcome == {"not_graded": "the worker's disk is full (tried 4 times, last on worker one@test)"}


def test_a_task_that_failed_on_its_worker_is_not_a_grade():
    meta = {"status": "FAILURE", "result": {"exc_type": "OperationalError", "exc_message": "Connection refused"}}
    outcome = distributed._outcome(meta)
    assert outcome == {"not_graded": "the grading task failed on its worker (OperationalError: Connection refused)"}
