"""What every assignment's check tests share: its notebook's code in-process, its checks, and what depends on what.

    A = Assignment("04_lora", DEPENDS_ON, solution_names={...}, used_by_checks={...})
    ns = A.namespace_with(MUTANT_SOURCE)      # the notebook's code, with one definition replaced
    result = A.score(ns, "inject_lora")       # that exercise's visible and hidden checks, in-process

The notebook's defining cells run once; each variant gets a copy of that namespace in which the solution cells
are defined again (so that their globals are the copy), then the variant's source. The notebook's other
functions pick the variant up exactly as they would in a student's kernel.
"""
from __future__ import annotations

import ast
import gc
import re
from pathlib import Path
from typing import Iterator

import nbformat
import torch

from llmcourse.checking import local_student, run_checks
from llmcourse.checks import check_modules
from tests.notebooks import is_check_cell, notebook_namespace

ROOT = Path(__file__).resolve().parents[1]
_MARKERS = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$", re.MULTILINE)


def describe(result) -> str:
    """What a failing result said, for an assertion message."""
    return "; ".join(f"{c.name}: {c.message} (hint: {c.hint})" for c in result.checks if not c.passed) or result.error


class Assignment:
    def __init__(self, name: str, depends_on: dict[str, set[str]], solution_names: dict[str, str] | None = None,
                 used_by_checks: dict[str, set[str]] | None = None):
        """`depends_on`: the exercises each exercise's solution calls; `solution_names`: the name each exercise
        defines, where it is not the exercise's id; `used_by_checks`: exercises a check reaches besides its own
        (e.g. a model class it builds to test a loader)."""
        self.name = name
        self.notebook = next((ROOT / "source" / name).glob("*.ipynb"))
        self.visible, self.hidden = check_modules(name)
        self.depends_on = depends_on
        self.exercises = list(depends_on)
        self.solution_names = {e: e for e in self.exercises} | (solution_names or {})
        self.used_by_checks = used_by_checks or {}
        self._base: dict | None = None
        self._solutions: dict[str, str] | None = None

    # -- what depends on what -------------------------------------------------------------------------
    def uses(self, exercise: str) -> set[str]:
        """Every exercise whose code `exercise` calls, directly or through others."""
        found, todo = set(), list(self.depends_on[exercise])
        while todo:
            name = todo.pop()
            if name not in found:
                found.add(name)
                todo.extend(self.depends_on[name])
        return found

    def dependents(self, exercise: str) -> set[str]:
        """The exercises that may lose points when `exercise` is wrong."""
        return {e for e in self.exercises if exercise in self.uses(e)}

    def solution_cells(self) -> dict[str, str]:
        if self._solutions is None:
            nb = nbformat.read(str(self.notebook), as_version=4)
            self._solutions = {c.metadata["nbgrader"]["grade_id"]: _MARKERS.sub("", c.source) for c in nb.cells
                               if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}
        return self._solutions

    def assert_dependencies_match_the_notebook(self) -> None:
        """DEPENDS_ON is what the solution cells really call (plus what the checks reach)."""
        cells = self.solution_cells()
        for exercise, source in cells.items():
            called = {n.func.id for n in ast.walk(ast.parse(source))
                      if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            calls = {e for e, name in self.solution_names.items() if e != exercise and name in called}
            assert calls | self.used_by_checks.get(exercise, set()) == self.depends_on[exercise], exercise
        assert set(cells) == set(self.exercises)

    # -- running checks -------------------------------------------------------------------------------
    def namespace_with(self, source: str = "") -> dict:
        if self._base is None:
            self._base = notebook_namespace(self.notebook)
        ns = dict(self._base)
        for cell in self.solution_cells().values():
            exec(compile(cell, "<solution>", "exec"), ns)
        exec(compile(source, "<variant>", "exec"), ns)
        return ns

    def score(self, namespace: dict, exercise: str):
        return run_checks(f"{self.name}/{exercise}", local_student(namespace), visible=[self.visible],
                          hidden=[self.hidden])

    def check_cell_points(self) -> dict[str, float]:
        nb = nbformat.read(str(self.notebook), as_version=4)
        return {c.metadata["nbgrader"]["grade_id"].removeprefix("check_"): float(c.metadata["nbgrader"]["points"])
                for c in nb.cells if is_check_cell(c)}

    def reference_results(self) -> Iterator[dict]:
        """For a module fixture: every exercise's checks on the reference solution (run first, once)."""
        # The checks' tensors are tiny: one thread avoids thread start-up and contention costs that dwarf the work.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        ns = self.namespace_with()
        results = {exercise: self.score(ns, exercise) for exercise in self.exercises}
        # Each run_checks ends with pytest's full gc.collect() calls, which walk every live object: with torch and
        # transformers loaded that is ~0.1 s a run. Freezing what exists now (the imports are done) cuts it to ms.
        gc.collect()
        gc.freeze()
        yield results
        gc.unfreeze()
        torch.set_num_threads(threads)

    def assert_full_marks(self, result) -> None:
        assert not result.error, result.error
        assert result.score == result.max_score, describe(result)
        assert any(c.visible for c in result.checks) and any(not c.visible for c in result.checks)

    def assert_points_match_the_notebook(self, reference_results: dict) -> None:
        points = self.check_cell_points()
        assert set(points) == set(self.exercises)
        for exercise in self.exercises:
            assert reference_results[exercise].max_score == points[exercise], exercise
        assert sum(points.values()) == 100

    # -- mutants and alternatives ---------------------------------------------------------------------
    def not_implemented(self, exercise: str) -> str:
        """The exercise as a student receives it: defined, but raising NotImplementedError."""
        name = self.solution_names[exercise]
        if name[0].isupper():
            return f"class {name}(nn.Module):\n    def __init__(self, *args, **kwargs):\n        raise NotImplementedError()\n"
        return f"def {name}(*args, **kwargs):\n    raise NotImplementedError()\n"

    def assert_mutant_loses_points(self, exercise: str, name: str, source: str, hint_words: str | None = None) -> None:
        """A wrong implementation loses points in its exercise, every failing check explains itself, and where
        the hidden checks know this mistake, some hint names it (`hint_words`)."""
        result = self.score(self.namespace_with(source), exercise)
        assert not result.error, result.error
        assert result.score < result.max_score, f"the mutant '{name}' kept all {result.max_score} points of {exercise}"
        failed = [c for c in result.checks if not c.passed]
        assert all(c.message and c.hint for c in failed), "every failing check explains itself"
        if hint_words is not None:
            assert any(hint_words in c.hint for c in failed), [c.hint for c in failed]

    def assert_broken_exercise_spares_the_others(self, exercise: str, broken: list[tuple[str, str]]) -> None:
        """Whatever is wrong in `exercise` (each (what, source) in `broken`), no check of an exercise that does not
        use it may notice; an unimplemented exercise (what == "not implemented") scores 0."""
        for what, source in broken:
            ns = self.namespace_with(source)
            for other in self.exercises:
                if other == exercise or other in self.dependents(exercise):
                    continue
                result = self.score(ns, other)
                assert result.score == result.max_score, (
                    f"{exercise} ({what}) cost points in {other}, which does not use it: {describe(result)}")
            if what == "not implemented":
                assert self.score(ns, exercise).score == 0

    def assert_alternative_gets_full_marks(self, exercise: str, name: str, source: str) -> None:
        """Another correct implementation earns every point, in its exercise and in those that call it."""
        ns = self.namespace_with(source)
        for affected in [exercise, *sorted(self.dependents(exercise))]:
            result = self.score(ns, affected)
            assert result.score == result.max_score, f"'{name}' ({exercise}) lost points in {affected}: {describe(result)}"
