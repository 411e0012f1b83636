"""Runs one exercise's checks with pytest and collects a verdict per check.

pytest is the engine: the checks are collected from their modules, selected by their `graded`
marker, given the `student` fixture by a small plugin, and their outcomes are read from pytest's
`pytest_runtest_logreport` hook. The same runner serves the notebook (visible checks, in the
student's kernel) and the grader (visible and hidden checks, in the grader's process).
"""
from __future__ import annotations

import importlib
import importlib.util
import io
import os
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import pytest
import torch

from .api import CheckFailed
from .handle import StudentCodeError


@dataclass
class CheckResult:
    name: str
    passed: bool
    points: float  # earned
    max_points: float
    message: str = ""
    hint: str = ""
    visible: bool = True


@dataclass
class ExerciseResult:
    id: str  # "assignment/exercise"
    checks: list[CheckResult] = field(default_factory=list)
    error: str = ""  # set when the checks could not run at all

    @property
    def score(self) -> float:
        return sum(c.points for c in self.checks)

    @property
    def max_score(self) -> float:
        return sum(c.max_points for c in self.checks)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "max_score": self.max_score,
                "checks": [asdict(c) for c in self.checks], **({"error": self.error} if self.error else {})}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ExerciseResult":
        return cls(id=data["id"], checks=[CheckResult(**c) for c in data["checks"]], error=data.get("error", ""))


class _Collector:
    """The pytest plugin: provides `student`, keeps this exercise's checks, records the outcomes."""

    def __init__(self, exercise_id: str, student: Any, visible_modules: set[str]):
        self.assignment, _, self.exercise = exercise_id.partition("/")
        self.student_handle = student
        self.visible_modules = visible_modules
        self.results: list[CheckResult] = []
        self.meta: dict[str, tuple[float, str, bool, str]] = {}
        self.requires_main: set[str] = set()  # node ids of the checks of side properties
        self.side: list[bool] = []  # for each result, whether it is a side property

    @pytest.fixture
    def student(self):
        return self.student_handle

    def pytest_configure(self, config):
        config.addinivalue_line("markers", "graded(exercise, points, hint): a course check")
        config.addinivalue_line("markers", "visible: a check that ships to students (see llmcourse.checking.visible)")

    @pytest.hookimpl(tryfirst=True)
    def pytest_pycollect_makeitem(self, collector, name, obj):
        """A check of another exercise, or of another assignment's module, becomes no item at all: an assignment
        has up to 150 checks, and making each an item costs more than running this exercise's few. What is
        kept is sorted exactly in pytest_collection_modifyitems."""
        marks = getattr(obj, "pytestmark", None) if callable(obj) else None
        graded = next((m for m in marks if getattr(m, "name", None) == "graded"), None) if isinstance(marks, list) else None
        if graded is None:
            return None  # not a course check: pytest decides, as always
        if (graded.kwargs.get("exercise") != self.exercise
                or getattr(getattr(collector, "module", None), "ASSIGNMENT", None) != self.assignment):
            return []
        return None

    def pytest_collection_modifyitems(self, session, config, items):
        keep = []
        for item in items:
            marker = item.get_closest_marker("graded")
            module = getattr(item.module, "ASSIGNMENT", None)
            if marker is None or module != self.assignment or marker.kwargs.get("exercise") != self.exercise:
                continue
            visible = item.module.__name__ in self.visible_modules
            if not visible and item.get_closest_marker("visible"):
                continue  # a visible check in the assignment's check file: it runs from the student package's copy
            name = item.name.removeprefix("test_").replace("_", " ")
            self.meta[item.nodeid] = (marker.kwargs["points"], marker.kwargs.get("hint", ""), visible, name)
            if marker.kwargs.get("requires_main"):
                self.requires_main.add(item.nodeid)
            # The result's message comes from the exception itself (_failure_message), never from pytest's
            # formatted traceback, which re-reads the source of every frame: skip formatting it.
            item.repr_failure = lambda excinfo: str(excinfo.value)
            keep.append(item)
        items[:] = keep

    def pytest_runtest_logreport(self, report):
        if report.nodeid not in self.meta:
            return
        points, hint, visible, name = self.meta[report.nodeid]
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            passed = report.outcome == "passed"
            message = "" if passed else _failure_message(report)
            specific = getattr(report, "_llmcourse_hint", None)
            self.results.append(CheckResult(name=name, passed=passed, points=points if passed else 0.0,
                                            max_points=points, message=message,
                                            hint=(specific or hint) if not passed else "", visible=visible))
            self.side.append(report.nodeid in self.requires_main)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if call.excinfo is not None and isinstance(call.excinfo.value, CheckFailed) and call.excinfo.value.hint:
            report._llmcourse_hint = call.excinfo.value.hint
        if call.excinfo is not None:
            report._llmcourse_exc = call.excinfo.value


def _failure_message(report) -> str:
    exc = getattr(report, "_llmcourse_exc", None)
    if isinstance(exc, CheckFailed):
        return exc.message
    if isinstance(exc, StudentCodeError):
        return exc.message
    if isinstance(exc, AssertionError):
        text = str(exc).split("\n")[0].strip()
        return text or "an expected property does not hold"
    if exc is not None:
        return f"the check could not finish: {type(exc).__name__}: {str(exc)[:300]}"
    return "the check failed"


def _count_side_properties_after_main(collector: _Collector) -> list[CheckResult]:
    """A side property (input unchanged, dtype kept, ...) also holds for code that returns junk: it earns its
    points only when every main check of the exercise in this run passed."""
    results = collector.results
    if all(c.passed for c, side in zip(results, collector.side) if not side):
        return results
    failing = sum(not c.passed for c, side in zip(results, collector.side) if not side)
    still = f"{failing} main check of this exercise still fails" if failing == 1 else \
        f"{failing} main checks of this exercise still fail"
    return [replace(c, passed=False, points=0.0,
                    message=f"This check counts once the main result is right, and {still}.",
                    hint="Fix the exercise's other failing checks first; this one then counts by itself.")
            if c.passed and side else c
            for c, side in zip(results, collector.side)]


def run_checks(exercise_id: str, student: Any, visible: list[str], hidden: list[str] = (),
               plugins: Sequence[object] = ()) -> ExerciseResult:
    """Run the checks of `exercise_id` ("01_attention/softmax") found in the given modules.

    `plugins` join the pytest session beside the one that collects the verdicts: a profiler's timer, say.
    """
    modules = [m for m in [*visible, *hidden] if m]
    paths = []
    for name in modules:
        spec = importlib.util.find_spec(name)  # not imported here, so pytest can rewrite its asserts
        if spec is None or not spec.origin:
            raise ModuleNotFoundError(f"no check module named {name!r}")
        paths.append(spec.origin)
    collector = _Collector(exercise_id, student, set(visible))
    # Only what the checks need: no cache, no terminal, and no unraisable-exception plugin (its
    # gc.collect() after every session costs a tenth of a second with torch loaded). Nor log capture, doctests,
    # reports or debugging: together 8 ms of a 45 ms session, and the checks run thousands of sessions.
    args = ["-p", "no:cacheprovider", "-p", "no:terminal", "-p", "no:randomly", "-p", "no:xdist",
            "-p", "no:unraisableexception", "-p", "no:threadexception", "-p", "no:faulthandler",
            "-p", "no:logging", "-p", "no:doctest", "-p", "no:junitxml", "-p", "no:pastebin", "-p", "no:stepwise",
            "-p", "no:setuponly", "-p", "no:setupplan", "-p", "no:debugging",
            "--disable-plugin-autoload", "-c", os.devnull, "--rootdir", os.path.dirname(paths[0]) if paths else ".",
            "-W", "ignore", *paths]
    sink = io.StringIO()
    # The checks' own computations (references, small models) are tiny. On a busy machine a second torch
    # thread makes them wait on each other: one course-lm generate() took 2.4 s with two threads and 0.04 s
    # with one, while other kernels were grading.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with redirect_stdout(sink), redirect_stderr(sink):
            code = pytest.main(args, plugins=[collector, *plugins])
    finally:
        torch.set_num_threads(threads)
    result = ExerciseResult(id=exercise_id, checks=_count_side_properties_after_main(collector))
    if not collector.results:
        result.error = (f"no checks were found for {exercise_id!r} (pytest exit code {int(code)}); "
                        f"is the exercise name spelled as in the course?")
    return result
