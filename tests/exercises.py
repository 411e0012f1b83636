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
                 used_by_checks: dict[str, set[str]] | None = None, course: Path = ROOT, trained: tuple = ()):
        """`depends_on`: the exercises each exercise's solution calls; `solution_names`: the name each exercise
        defines, where it is not the exercise's id; `used_by_checks`: exercises a check reaches besides its own
        (e.g. a model class it builds to test a loader); `trained`: exercises whose cell trains a model, run
        once with the notebook and not again for each variant."""
        self.name = name
        self.trained = set(trained)
        self.notebook = next((course / "source" / name).glob("*.ipynb"))
        self.visible, self.hidden = check_modules(name)
        self.depends_on = depends_on
        self.exercises = list(depends_on)
        self.solution_names = {e: e for e in self.exercises} | (solution_names or {})
        self.used_by_checks = used_by_checks or {}
        self._base: dict | None = None
        self._solutions: dict[str, str] | None = None
        self._mutant_results: dict[tuple[str, str], object] = {}

    @classmethod
    def of(cls, spec) -> "Assignment":
        """The harness for one spec of tests/specs/."""
        return cls(spec.assignment, spec.depends_on, solution_names=spec.solution_names,
                   used_by_checks=spec.used_by_checks, trained=spec.trained)

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
            calls_of = [n.func for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)]
            called = {f.id for f in calls_of if isinstance(f, ast.Name)}
            called |= {f.value.id for f in calls_of if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)}
            calls = {e for e, name in self.solution_names.items() if e != exercise and name in called}
            assert calls | self.used_by_checks.get(exercise, set()) == self.depends_on[exercise], exercise
        assert set(cells) == set(self.exercises)

    # -- running checks -------------------------------------------------------------------------------
    def namespace_with(self, source: str = "") -> dict:
        if self._base is None:
            self._base = notebook_namespace(self.notebook)
        ns = dict(self._base)
        for exercise, cell in self.solution_cells().items():
            if exercise not in self.trained:
                exec(compile(cell, f"<solution {exercise}>", "exec"), ns)
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

    # -- mutants and alternatives ---------------------------------------------------------------------
    def defined_name(self, exercise: str) -> str | None:
        """The function or class the exercise's cell defines; None where it defines values or runs a script."""
        tree = ast.parse(self.solution_cells()[exercise])
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        return self.solution_names[exercise] if self.solution_names[exercise] in defined else None

    def assigned_names(self, exercise: str) -> list[str]:
        """The top-level names the exercise's cell assigns."""
        tree = ast.parse(self.solution_cells()[exercise])
        return list(dict.fromkeys(t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                                  if isinstance(t, ast.Name)))

    def not_implemented(self, exercise: str) -> str:
        """The exercise as a student receives it: defined, but raising NotImplementedError (a values or script
        cell: its names not defined)."""
        name = self.defined_name(exercise)
        if name is None:
            return "".join(f"globals().pop({n!r}, None)\n" for n in self.assigned_names(exercise))
        if name[0].isupper():
            return f"class {name}(nn.Module):\n    def __init__(self, *args, **kwargs):\n        raise NotImplementedError()\n"
        return f"def {name}(*args, **kwargs):\n    raise NotImplementedError()\n"

    def mutant_result(self, exercise: str, name: str, source: str):
        """The mutant's result in its exercise, scored once per session (the visible-catch test reuses it)."""
        if (exercise, name) not in self._mutant_results:
            self._mutant_results[exercise, name] = self.score(self.namespace_with(source), exercise)
        return self._mutant_results[exercise, name]

    def assert_mutant_loses_points(self, exercise: str, name: str, source: str, hint_words: str | None = None) -> None:
        """A wrong implementation loses points in its exercise, every failing check explains itself, and where
        the hidden checks know this mistake, some hint names it (`hint_words`)."""
        result = self.mutant_result(exercise, name, source)
        assert not result.error, result.error
        assert result.score < result.max_score, f"the mutant '{name}' kept all {result.max_score} points of {exercise}"
        failed = [c for c in result.checks if not c.passed]
        assert all(c.message and c.hint for c in failed), "every failing check explains itself"
        if hint_words is not None:
            assert any(hint_words in c.hint for c in failed), [c.hint for c in failed]

    def quizzes(self) -> set[str]:
        """The exercises whose cell holds a quiz's answers (values, not a trained model): a visible check of
        them would give the answers away."""
        return {e for e in self.exercises if self.defined_name(e) is None and e not in self.trained}

    def visible_misses(self, mutants: dict[str, dict[str, str]]) -> list[str]:
        """"exercise: mutant" for each mutant that no visible check fails by itself (not merely because a main
        check of the exercise failed first): a student sees nothing wrong before grading."""
        return [f"{e}: {n}" for e, by_name in mutants.items() for n, source in by_name.items()
                if not any(c.visible and not c.passed and not c.message.startswith("This check counts once")
                           for c in self.mutant_result(e, n, source).checks)]

    def assert_visible_checks_catch_nine_in_ten(self, mutants: dict[str, dict[str, str]]) -> None:
        """What a student sees before grading already points at most mistakes: a visible check fails by itself
        for at least 9 in 10 mutants."""
        missed = self.visible_misses(mutants)
        total = sum(len(m) for m in mutants.values())
        assert len(missed) <= total // 10, f"the visible checks miss {len(missed)} of {total} mutants: {missed}"

    def assert_spared_by_what_it_does_not_use(self, exercise: str, broken: dict[str, list[tuple[str, str]]]) -> None:
        """`exercise` keeps every point while every exercise it does not use is broken, all of them at once: each
        way of breaking them in `broken` (exercise -> [(what, source), ...]) in turn. An unimplemented exercise
        (what == "not implemented") scores 0 itself.

        Breaking them all at once asks the same question as breaking them one by one (can a check of `exercise`
        notice anything wrong outside what it uses?) with one scoring per way instead of one per exercise."""
        unrelated = [e for e in self.exercises if e != exercise and e not in self.uses(exercise)]
        for i in range(max((len(broken[e]) for e in unrelated), default=0)):
            chosen = [(e, *broken[e][min(i, len(broken[e]) - 1)]) for e in unrelated]
            result = self.score(self.namespace_with("\n".join(source for _, _, source in chosen)), exercise)
            assert result.score == result.max_score, (
                f"{exercise} lost points while exercises it does not use were broken "
                f"({'; '.join(f'{e}: {what}' for e, what, _ in chosen)}): {describe(result)}")
        for what, source in broken[exercise]:
            if what == "not implemented":
                assert self.score(self.namespace_with(source), exercise).score == 0, f"{exercise} unimplemented scored"

    def junk_cases(self) -> list[tuple[str, str, str]]:
        """(exercise, what, source) for every junk form of every exercise."""
        return [(exercise, what, source) for exercise in self.exercises
                for what, source in junk_implementations(self.solution_cells()[exercise]).items()]

    def assert_junk_scores_nothing(self, exercise: str, what: str, source: str) -> None:
        assert_junk_scores_nothing(self.score(self.namespace_with(source), exercise), exercise, what)

    def assert_alternative_gets_full_marks(self, exercise: str, name: str, source: str) -> None:
        """Another correct implementation earns every point, in its exercise and in those that call it."""
        ns = self.namespace_with(source)
        for affected in [exercise, *sorted(self.dependents(exercise))]:
            result = self.score(ns, affected)
            assert result.score == result.max_score, f"'{name}' ({exercise}) lost points in {affected}: {describe(result)}"


# -- junk: code that gives no right answer must earn nothing -------------------------------------------
# What a junk function or method returns (each is one variant), besides raising. `object()` crosses the
# handle as a reference, a wrong-shaped tensor as data, and the first argument is "the input, unchanged".
JUNK_RETURNS = {
    "returns None": "None",
    "returns a string": "'junk'",
    "returns an object": "object()",
    "returns 0": "0",
    "returns an empty list": "[]",
    "returns zeros of a wrong shape": "torch.zeros(3, 1, 7)",
    "returns its first input unchanged": "args[0] if args else next(iter(kwargs.values()), None)",
}
JUNK_RAISES = {"raises ValueError": "ValueError('junk')", "raises RuntimeError": "RuntimeError('junk')"}
# Junk with the right shape and dtype: the exercise's own answer (computed on copies of the arguments, so that
# nothing the caller holds changes), with its tensors zeroed or made random and everything else emptied.
JUNK_LIKE = {"returns zeros shaped like the answer": "zeros", "returns random values shaped like the answer": "random"}
_JUNK_LIKE_SOURCE = """
import copy as _junk_copy

def _junk_like(value, fill):
    if isinstance(value, torch.Tensor):
        gen = torch.Generator().manual_seed(0)
        if fill == "zeros":
            return torch.zeros_like(value)
        if value.dtype == torch.bool:
            return torch.rand(value.shape, generator=gen) < 0.5
        if value.is_floating_point():
            return torch.rand(value.shape, generator=gen, dtype=value.dtype)
        return torch.randint(0, 2, value.shape, generator=gen, dtype=value.dtype)
    if isinstance(value, (tuple, list)):
        return type(value)(_junk_like(v, fill) for v in value)
    if isinstance(value, dict):
        return {k: _junk_like(v, fill) for k, v in value.items()}
    if isinstance(value, (bool, int, float, str)):
        return type(value)()
    return None
"""
JUNK_DATA = {"None": "None", "a string": "'junk'", "an object": "object()", "an empty dict": "{}"}


def junk_implementations(solution_cell: str) -> dict[str, str]:
    """Every junk form of one exercise, as source to run after the notebook's cells: each function the cell
    defines returns junk or raises; each class keeps its __init__ (its layers) but every other method returns
    junk or raises; where the cell defines only values (a quiz, a trained model), each is junk (a dict keeps its
    keys, with junk answers)."""
    tree = ast.parse(solution_cell)
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    classes = {n.name: [m.name for m in n.body if isinstance(m, ast.FunctionDef) and m.name != "__init__"]
               for n in tree.body if isinstance(n, ast.ClassDef)}
    values = list(dict.fromkeys(t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                                if isinstance(t, ast.Name)))
    bodies = {what: f"return {expr}" for what, expr in JUNK_RETURNS.items()}
    bodies |= {what: f"raise {expr}" for what, expr in JUNK_RAISES.items()}
    forms = {}
    if functions or classes:
        for what, body in bodies.items():
            source = "".join(f"def {name}(*args, **kwargs):\n    {body}\n" for name in functions)
            for name, methods in classes.items():
                source += f"class {name}({name}):\n" + "".join(
                    f"    def {m}(self, *args, **kwargs):\n        {body}\n" for m in methods or ["forward"])
            forms[what] = source
        for what, fill in JUNK_LIKE.items():
            source = _JUNK_LIKE_SOURCE + "".join(
                f"_answer_of_{name} = {name}\n"
                f"def {name}(*args, **kwargs):\n"
                f"    return _junk_like(_answer_of_{name}(*_junk_copy.deepcopy(args), **_junk_copy.deepcopy(kwargs)), "
                f"{fill!r})\n" for name in functions)
            for name, methods in classes.items():
                source += f"class {name}({name}):\n" + "".join(
                    f"    def {m}(self, *args, **kwargs):\n"
                    f"        return _junk_like(super().{m}(*args, **kwargs), {fill!r})\n"
                    for m in methods or ["forward"])
            forms[what] = source
    if values and not forms:
        for what, expr in JUNK_DATA.items():
            forms[f"values are {what}"] = "".join(f"{name} = {expr}\n" for name in values)
        forms["dict answers are junk"] = "".join(
            f"{name} = {{k: 'junk' for k in {name}}} if isinstance({name}, dict) else 'junk'\n" for name in values)
        # Filled in, in the right format, without thought: every answer is the same allowed one.
        forms["dict answers are all the same"] = "".join(
            f"{name} = {{k: list({name}.values())[0] for k in {name}}} if isinstance({name}, dict) else None\n"
            for name in values)
    return forms


def assert_junk_scores_nothing(result, exercise: str, what: str) -> None:
    """Every check of `exercise` gives 0 points to a junk implementation (`what`)."""
    assert not result.error, result.error
    earned = [f"{c.name} ({c.points:g} pt)" for c in result.checks if c.points > 0]
    assert not earned, (f"junk ({what}) earned points in {exercise}: {', '.join(earned)}. A check of a side "
                        f"property must count only once the main result is right: mark it requires_main=True.")
