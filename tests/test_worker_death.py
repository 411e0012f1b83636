"""A grading process that dies mid-grade loses no grade: what it left unfinished is graded again."""
from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

import grader.grading as grading
from grader.course import Course
from grader.grading import grade_class
from grader.process_template import GRADING_PROCESS_TITLE

from .conftest import cell_by_id, read, write_submission

pytestmark = pytest.mark.slow

ANSWERS = {"add": "def add(a, b):\n    return a + b", "scale": "def scale(x, factor):\n    return x * factor",
           "mean_rows": "def mean_rows(x):\n    return x.mean(dim=-1)"}


def is_grading_process(process: psutil.Process) -> bool:
    """A grading process: forked from the template (grader.process_template), or spawned where it cannot serve."""
    command = " ".join(process.cmdline())
    return GRADING_PROCESS_TITLE in command or "spawn_main" in command


def grading_process_of(kernel: psutil.Process) -> int | None:
    """The grading process a kernel belongs to: the one its kernel forker serves (`--for PID` in the forker's
    command line: the program's forker parent forked it), or the forker's parent (it started its own forker),
    or, for an exec'd kernel, the ancestor that is a grading process."""
    for ancestor in kernel.parents():
        command = ancestor.cmdline()
        if command[1:3] == ["-m", "grader.kernel_fork"]:
            return int(command[command.index("--for") + 1]) if "--for" in command else ancestor.ppid()
        if is_grading_process(ancestor):
            return ancestor.pid
    return None


def kill_first_worker_once_it_grades(stop: threading.Event, killed: list[int], every: bool = False) -> None:
    """SIGKILL the first grading worker seen running a kernel (as the OOM killer would); `every`: each one."""
    me = psutil.Process()
    while not stop.is_set():
        for child in me.children(recursive=True):
            try:
                if "ipykernel_launcher" not in " ".join(child.cmdline()):
                    continue
                worker = grading_process_of(child)
                if worker is not None and worker not in killed and is_grading_process(psutil.Process(worker)):
                    os.kill(worker, signal.SIGKILL)
                    killed.append(worker)
                    if not every:
                        return
            except psutil.Error:
                continue
        time.sleep(0.05)


def test_a_killed_worker_loses_no_grade(fixture_course, tmp_path):
    submissions = tmp_path / "submissions"
    for i in range(4):
        nb = read(fixture_course / "release" / "00_basics" / "basics.ipynb")
        for grade_id, source in ANSWERS.items():
            cell_by_id(nb, grade_id).source = source
        write_submission(submissions, f"w{i}", nb)
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=kill_first_worker_once_it_grades, args=(stop, killed), daemon=True)
    watcher.start()
    try:
        results = grade_class(Course(fixture_course), "00_basics", submissions, jobs=2)
    finally:
        stop.set()
        watcher.join()
    assert killed, "the test never caught a worker grading"
    assert sorted(r.student for r in results) == ["w0", "w1", "w2", "w3"]
    assert all(r.score == 10 and not r.error for r in results), [(r.student, r.score, r.error) for r in results]


def test_a_submission_whose_worker_always_dies_is_not_graded(fixture_course, tmp_path, monkeypatch):
    """Dying every time is the machinery's failure (or the machine's), never a score of 0."""
    from nbgrader.api import Gradebook, MissingEntry

    submissions = tmp_path / "submissions"
    nb = read(fixture_course / "release" / "00_basics" / "basics.ipynb")
    write_submission(submissions, "doomed", nb)
    monkeypatch.setattr(grading, "RETRY_BACKOFF", 0.1)
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=kill_first_worker_once_it_grades, args=(stop, killed, True), daemon=True)
    watcher.start()
    try:
        [result] = grade_class(Course(fixture_course), "00_basics", submissions, jobs=1)
    finally:
        stop.set()
        watcher.join()
    assert len(killed) == grading.MAX_ATTEMPTS
    assert result.not_graded == f"the grading process died (tried {grading.MAX_ATTEMPTS} times)"
    assert result.to_json()["score"] is None
    with Gradebook(Course(fixture_course).config().CourseDirectory.db_url) as gb:
        with pytest.raises(MissingEntry):
            gb.find_submission("00_basics", "doomed")
