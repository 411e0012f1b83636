"""Every assignment's checks, run in-process against the notebook's own code, wrong code and other right code.

One class per spec in tests/specs/ (a new spec is tested by being there). For each assignment:
- the reference solution (the source notebook's cells) earns every point, and each exercise's checks are
  worth exactly the points of its check cell (which `grader build` writes);
- every exercise has at least three plausible wrong implementations (mutants); each loses points in its
  exercise, every failing check explains itself, and the visible checks alone (what a student sees before
  grading) catch at least 9 in 10 of them;
- no check notices anything wrong in an exercise that its exercise does not use;
- every exercise has at least two other correct implementations; they earn full marks, in their exercise and
  in every exercise that builds on it;
- junk (code that returns no right answer) earns nothing;
- what ships to students holds no reference solution, and the notebook follows the course's conventions.

The notebook's defining cells run once per class (a trained exercise's training included); each case runs in
a copy of that namespace, so the notebook's other functions pick it up as they would in a student's kernel.
"""
from __future__ import annotations

import ast
import copy
import functools
import importlib
from pathlib import Path

import nbformat
import pytest
import torch
from pyflakes import api as pyflakes_api
from pyflakes import messages as pyflakes_messages
from pyflakes import reporter as pyflakes_reporter

from tests.exercises import Assignment
from tests.notebooks import is_check_cell
from tests.specs import Spec, all_specs

ROOT = Path(__file__).resolve().parents[1]
SPECS = list(all_specs())


def pytest_generate_tests(metafunc):
    """Each class's cases: its spec's exercises, mutants, alternatives and junk."""
    spec: Spec | None = getattr(metafunc.cls, "spec", None)
    if spec is None:
        return
    A = metafunc.cls.A

    def marked(case):
        return [pytest.mark.slow] if case.slow else []

    if "exercise" in metafunc.fixturenames:
        metafunc.parametrize("exercise", spec.exercises)
    if "mutant" in metafunc.fixturenames:
        metafunc.parametrize("mutant", [pytest.param(c, id=f"{c.exercise}: {c.name}", marks=marked(c))
                                        for c in spec.cases if c.kind == "mutant"])
    if "alternative" in metafunc.fixturenames:
        metafunc.parametrize("alternative", [pytest.param(c, id=f"{c.exercise}: {c.name}", marks=marked(c))
                                             for c in spec.cases if c.kind == "alternative"])
    if "compared" in metafunc.fixturenames:  # a trained cell has no reference to compare with
        metafunc.parametrize("compared", [e for e in spec.exercises if e not in spec.trained])
    if "junk" in metafunc.fixturenames:
        cases = [(exercise, what, source) for exercise, what, source in A.junk_cases()]
        cases += [(c.exercise, c.name, c.source(A.defined_name(c.exercise))) for c in spec.cases if c.kind == "junk"]
        metafunc.parametrize("junk", [pytest.param(case, id=f"{case[0]}: {case[1]}") for case in cases])


class SpecChecks:
    """The tests every assignment's checks pass; a subclass per spec sets `spec`."""
    spec: Spec
    A: Assignment

    def source(self, case) -> str:
        return case.source(self.A.defined_name(case.exercise))

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def reference_results(cls):
        yield from cls.A.reference_results()

    # -- the spec itself --------------------------------------------------------------------------------
    def test_dependencies_are_what_the_notebook_calls(self):
        self.A.assert_dependencies_match_the_notebook()

    def test_every_exercise_has_three_mutants_and_two_alternatives(self):
        mutants, alternatives = self.spec.of("mutant"), self.spec.of("alternative")
        assert {e: len(m) for e, m in mutants.items() if len(m) < 3} == {}, "fewer than three mutants"
        assert {e: len(a) for e, a in alternatives.items() if len(a) < 2} == {}, "fewer than two alternatives"

    # -- the reference solution ---------------------------------------------------------------------------
    def test_reference_solution_gets_full_marks(self, reference_results, exercise):
        self.A.assert_full_marks(reference_results[exercise])

    def test_check_points_match_the_notebook(self, reference_results):
        self.A.assert_points_match_the_notebook(reference_results)

    # -- wrong implementations ----------------------------------------------------------------------------
    def test_mutant_loses_points(self, mutant):
        self.A.assert_mutant_loses_points(mutant.exercise, mutant.name, self.source(mutant), mutant.hint)

    def test_visible_checks_catch_nine_in_ten_mutants(self):
        """Quizzes aside: a visible check of a quiz's answers would give them away."""
        fast = {e: {n: self.source(c) for n, c in by_name.items() if not c.slow}
                for e, by_name in self.spec.of("mutant").items() if e not in self.A.quizzes()}
        self.A.assert_visible_checks_catch_nine_in_ten(fast)

    def test_an_exercise_keeps_its_points_when_what_it_does_not_use_is_broken(self, exercise):
        # Every other exercise is broken at once, in turn: unimplemented (it raises), then in its first two
        # mistakes (wrong values, wrong shapes). Those are the ways a check could notice anything outside what it
        # uses; trying every mistake of every exercise (up to 11 scorings of each exercise) found nothing more and
        # cost a tenth of the suite. A trained exercise's checks judge a trained model (seconds a scoring): one
        # mistake each.
        ways = 1 if exercise in self.spec.trained else 2
        broken = {e: [("not implemented", self.A.not_implemented(e)),
                      *[(n, self.source(c)) for n, c in by_name.items() if not c.slow][:ways]]
                  for e, by_name in self.spec.of("mutant").items()}
        self.A.assert_spared_by_what_it_does_not_use(exercise, broken)

    # -- junk: no right answer, no points ---------------------------------------------------------------
    def test_junk_scores_nothing(self, junk):
        """A function that returns junk or raises earns no check's points, side properties included."""
        self.A.assert_junk_scores_nothing(*junk)

    # -- other correct implementations ------------------------------------------------------------------
    def test_alternative_gets_full_marks(self, alternative):
        self.A.assert_alternative_gets_full_marks(alternative.exercise, alternative.name, self.source(alternative))

    # -- the reference the hidden checks compare with ----------------------------------------------------
    def test_solution_agrees_with_the_reference(self, compared):
        """The notebook's solution and grader/reference (what the hidden checks compare with) give the same
        answers: on the spec's inputs for a function, by the spec's own comparison for anything else, and value
        by value for a cell of values."""
        reference = importlib.import_module(f"grader.reference.{self.A.hidden.rsplit('.', 1)[-1]}")
        ns = self.A.namespace_with()
        name = self.A.defined_name(compared)
        if name is None:
            names = [n for n in self.A.assigned_names(compared) if hasattr(reference, n)]
            assert names, f"the reference defines none of {self.A.assigned_names(compared)}"
            for n in names:
                assert_same(ns[n], getattr(reference, n), n)
        elif compared in self.spec.agreements:
            self.spec.agreements[compared](ns[name], getattr(reference, name))
        else:
            assert compared in self.spec.inputs, f"the spec compares {compared} with the reference on no inputs"
            calls = list(self.spec.inputs[compared](torch.Generator().manual_seed(0)))
            assert calls
            for i, (args, kwargs) in enumerate(calls):
                mine = _outcome(ns[name], args, kwargs)
                theirs = _outcome(getattr(reference, name), args, kwargs)
                assert_same(mine, theirs, f"{name}, inputs {i}")

    # -- what ships to students, and the notebook's shape -------------------------------------------------
    def test_student_files_hold_no_reference_solution(self):
        """The visible checks, the helpers they share with the hidden ones, and the assignment's other student
        modules neither import the grader nor define anything the reference solution defines."""
        reference = importlib.import_module(f"grader.reference.{self.A.hidden.rsplit('.', 1)[-1]}")
        solution_names = {name for name, obj in vars(reference).items()
                          if not name.startswith("_") and getattr(obj, "__module__", None) == reference.__name__}
        defined_by_cells = {self.A.defined_name(e) for e in self.spec.exercises} - {None}
        assert defined_by_cells <= solution_names, "the reference defines every function and class of the exercises"
        paths = [Path(importlib.import_module(m).__file__) for m in (self.A.visible, *self.spec.student_modules)]
        paths += [p for p in Path(paths[0]).parent.glob(f"{Path(paths[0]).stem}_*.py")]  # a topic split
        shared = ROOT / "llmcourse" / "checking" / "shared"  # the helpers both kinds of check use: shipped too
        paths += sorted(shared.glob(f"{Path(paths[0]).stem}.py")) + sorted(shared.glob(f"{Path(paths[0]).stem}_*.py"))
        for path in paths:
            tree = ast.parse(path.read_text())
            imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
            imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            assert not any(name.split(".")[0] == "grader" for name in imported), (path, imported)
            defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            assert not defined & solution_names, (path, defined & solution_names)

    def test_notebook_follows_the_course_conventions(self):
        nb = nbformat.read(str(self.A.notebook), as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code[0].metadata["nbgrader"] == {"grade": False, "solution": False, "locked": True, "grade_id": "setup",
                                                "schema_version": 3}
        assert code[0].source.startswith("import torch\n")
        assert code[0].source.endswith("from llmcourse import notebook_setup, check\n\ndevice = notebook_setup()")
        solutions = {c.metadata["nbgrader"]["grade_id"]: c for c in code if c.metadata.get("nbgrader", {}).get("solution")}
        assert set(solutions) == set(self.spec.exercises)
        for exercise, cell in solutions.items():
            assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source, exercise
        checked = []
        for cell in code:
            assert not cell.get("outputs") and cell.get("execution_count") is None
            assert not any(line.lstrip().startswith(("%", "!")) for line in cell.source.splitlines())
            if is_check_cell(cell):
                exercise = cell.metadata["nbgrader"]["grade_id"].removeprefix("check_")
                checked.append(exercise)
                assert cell.source == (f'check("{self.spec.assignment}/{exercise}")\n### BEGIN HIDDEN TESTS\n'
                                       f'check("{self.spec.assignment}/{exercise}", hidden=True)\n'
                                       f'### END HIDDEN TESTS')
        assert sorted(checked) == sorted(self.spec.exercises)
        for cell in code:  # a figure is a demo (not graded), with a title and labelled axes
            if not cell.metadata.get("nbgrader") and "plt.subplots(" in cell.source:
                assert "demo" in cell.metadata.get("tags", []), cell.source[:80]
                assert any(w in cell.source for w in ("set_title", "suptitle", "title=")), cell.source[:80]
                assert all(f"set_{a}" in cell.source or f"{a}=" in cell.source for a in ("xlabel", "ylabel")), \
                    cell.source[:80]


def _outcome(fn, args, kwargs):
    """What `fn` gives for copies of the inputs (so that neither call sees the other's changes), or the type of
    the exception it raises."""
    try:
        return fn(*copy.deepcopy(args), **copy.deepcopy(kwargs))
    except Exception as error:  # both must refuse the same inputs the same way
        return type(error)


def assert_same(mine, theirs, what: str) -> None:
    """Equal answers: tensors of one shape and dtype within float tolerance, containers element by element,
    modules by their state, anything else by ==."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(mine, torch.Tensor), f"{what}: {type(mine).__name__}, not a tensor"
        assert mine.shape == theirs.shape and mine.dtype == theirs.dtype, (what, mine.shape, theirs.shape, mine.dtype,
                                                                            theirs.dtype)
        if mine.is_floating_point():
            assert torch.allclose(mine, theirs, rtol=1e-5, atol=1e-6, equal_nan=True), what
        else:
            assert torch.equal(mine, theirs), what
    elif isinstance(theirs, torch.nn.Module):
        assert_same(dict(mine.state_dict()), dict(theirs.state_dict()), f"{what} (its state)")
    elif isinstance(theirs, dict):
        assert isinstance(mine, dict) and list(mine) == list(theirs), (what, mine, theirs)
        for key in theirs:
            assert_same(mine[key], theirs[key], f"{what}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert type(mine) is type(theirs) and len(mine) == len(theirs), (what, mine, theirs)
        for i, (a, b) in enumerate(zip(mine, theirs)):
            assert_same(a, b, f"{what}[{i}]")
    elif isinstance(theirs, float):
        assert mine == pytest.approx(theirs, rel=1e-9, abs=1e-12, nan_ok=True), (what, mine, theirs)
    else:
        assert type(mine) is type(theirs) and mine == theirs, (what, mine, theirs)


for _spec in SPECS:
    _name = "Test_" + _spec.assignment
    globals()[_name] = type(_name, (SpecChecks,), {"spec": _spec, "A": Assignment.of(_spec), "__module__": __name__})


# -- the specs themselves ------------------------------------------------------------------------------

def test_every_assignment_has_a_spec():
    assert [s.assignment for s in SPECS] == sorted(p.name for p in (ROOT / "source").iterdir() if p.is_dir())


def test_specs_are_clean_code():
    """The cases are linted like any code: no undefined name, no unused import, no redefinition. (An unused
    variable is allowed: a case of a values cell assigns names that only the notebook reads.)"""
    class Collect(pyflakes_reporter.Reporter):
        def __init__(self):
            self.found: list[str] = []

        def flake(self, message):
            if not isinstance(message, pyflakes_messages.UnusedVariable):
                self.found.append(str(message))

        def syntaxError(self, filename, msg, lineno, offset, text):
            self.found.append(f"{filename}:{lineno}: {msg}")

        def unexpectedError(self, filename, msg):
            self.found.append(f"{filename}: {msg}")

    report = Collect()
    for path in sorted((ROOT / "tests" / "specs").glob("*.py")):
        pyflakes_api.checkPath(str(path), report)
    assert report.found == []


def test_case_sources_are_renamed_and_undecorated():
    """A case becomes the exercise's own definition: renamed (references to itself too), without the spec's
    decorator but with its others."""
    SPEC = Spec("00_example", {"f": set(), "values": set()})

    @SPEC.mutant("f")
    def recursive_by_its_own_name(n):
        return 0 if n == 0 else recursive_by_its_own_name(n - 1)

    @SPEC.mutant("values")
    def all_the_same(notebook_answers):
        """The answers, all one."""
        ANSWERS = {k: "a" for k in notebook_answers}  # noqa: F841

    @SPEC.alternative("f")
    @functools.lru_cache
    def cached(n):
        return 0

    function, values, decorated = SPEC.cases
    assert decorated.source("f") == "@functools.lru_cache\ndef f(n):\n    return 0\n"
    assert function.source("f") == "def f(n):\n    return 0 if n == 0 else f(n - 1)\n"
    assert values.source(None) == "ANSWERS = {k: 'a' for k in notebook_answers}\n"
    assert function.name == "recursive by its own name"
    with pytest.raises(ValueError, match="no exercise"):
        SPEC.mutant("g")
