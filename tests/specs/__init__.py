"""Specs: what each assignment's checks are tried against, one module per assignment.

A spec holds, for one assignment:
- what each exercise's solution calls (`depends_on`), so that a broken exercise may cost points only in the
  exercises that use it;
- wrong implementations (`@SPEC.mutant`): each must lose points in its exercise, with a hint that explains;
- other correct implementations (`@SPEC.alternative`): each must get full marks, in its exercise and in every
  exercise that builds on it.

Cases are real functions and classes, so that they are linted and read like the notebook's code. A case named
`summed_instead_of_averaged` for the exercise `preference_loss` runs in a copy of the notebook's namespace as
`def preference_loss(...)`: its name becomes the exercise's name, its decorator goes. For an exercise whose
solution cell defines values or runs a script (a quiz's answers, a training run) the case's body is the cell,
and its parameters name what it reads from the notebook.

Names a case reads from the notebook's namespace are imported at the top of its spec from where they really
live (torch, the reference solution, the assignment's tools), for the linter only: when a case runs, they are
the notebook's own. tests/test_checks.py runs every spec in this folder.

    SPEC = Spec("05_rlhf", depends_on={"preference_loss": set(), ...})

    @SPEC.mutant("preference_loss", hint="log-sigmoid")
    def summed_instead_of_averaged(chosen, rejected):
        return -F.logsigmoid(chosen - rejected).sum()
"""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


@dataclass
class Case:
    """One implementation of one exercise: `kind` is "mutant", "alternative" or "junk"."""
    kind: str
    exercise: str
    name: str
    definition: Any  # the function or class
    hint: str | None = None  # for a mutant: words that the hint of some failing check must contain
    slow: bool = False  # it trains a model: marked slow
    # Helpers the case calls, defined before it: a function or class of the spec under its own name, or a pair
    # (name, function or class) that defines it under `name` (e.g. a wrong version of another function the
    # exercise's cell defines).
    uses: tuple = ()
    original: str | None = None  # a name under which the notebook's own definition stays reachable

    def source(self, solution_name: str | None) -> str:
        """The code that replaces the exercise's solution cell: `solution_name` is the name the cell defines,
        or None where the cell defines values or runs a script (then the case's body is the cell)."""
        parts = [definition_source(helper[1], helper[0]) if isinstance(helper, tuple) else definition_source(helper)
                 for helper in self.uses]
        if self.original and solution_name:
            parts.append(f"{self.original} = {solution_name}\n")
        parts.append(definition_source(self.definition, solution_name) if solution_name
                     else body_source(self.definition))
        return "".join(parts)


@dataclass
class Spec:
    """One assignment's exercises, what they depend on, and the cases its checks are tried against.

    `solution_names`: the name an exercise's cell defines, where it is not the exercise's id.
    `used_by_checks`: exercises that an exercise's checks reach besides its own (a model class a loader fills).
    `trained`: exercises whose cell trains a model; it runs once, and its cases train again (slow).
    `student_modules`: modules shipped to students besides the visible checks, which must not hold a solution.
    """
    assignment: str
    depends_on: dict[str, set[str]]
    solution_names: dict[str, str] = field(default_factory=dict)
    used_by_checks: dict[str, set[str]] = field(default_factory=dict)
    trained: tuple[str, ...] = ()
    student_modules: tuple[str, ...] = ()
    cases: list[Case] = field(default_factory=list)
    # exercise -> a function of a torch.Generator giving (args, kwargs) pairs: the notebook's solution and the
    # reference must give the same answer for each (tests/test_checks.py compares them).
    inputs: dict[str, Callable] = field(default_factory=dict)
    # exercise -> a function of (the notebook's definition, the reference's) that asserts they agree, where
    # calling both on the same inputs is not the comparison (a class, a function of a model).
    agreements: dict[str, Callable] = field(default_factory=dict)

    @property
    def exercises(self) -> list[str]:
        return list(self.depends_on)

    def _register(self, kind: str, exercise: str, **options) -> Callable:
        if exercise not in self.depends_on:
            raise ValueError(f"{self.assignment} has no exercise {exercise!r}")

        def register(definition):
            name = options.pop("name", None) or definition.__name__.strip("_").replace("_", " ")
            if any(c.kind == kind and c.exercise == exercise and c.name == name for c in self.cases):
                raise ValueError(f"two {kind}s of {exercise} are called {name!r}")
            slow = options.pop("slow", exercise in self.trained)
            self.cases.append(Case(kind, exercise, name, definition, slow=slow, **options))
            return definition
        return register

    def mutant(self, exercise: str, *, hint: str | None = None, name: str | None = None, uses: tuple = (),
               original: str | None = None, slow: bool | None = None) -> Callable:
        """A plausible wrong implementation: it must lose points in `exercise`, and where `hint` is given, the
        hint of some failing check must contain those words."""
        return self._register("mutant", exercise, hint=hint, name=name, uses=tuple(uses), original=original,
                              **({} if slow is None else {"slow": slow}))

    def alternative(self, exercise: str, *, name: str | None = None, uses: tuple = (),
                    slow: bool | None = None) -> Callable:
        """Another correct implementation: full marks in `exercise` and in every exercise that uses it."""
        return self._register("alternative", exercise, name=name, uses=tuple(uses),
                              **({} if slow is None else {"slow": slow}))

    def junk(self, exercise: str, *, name: str | None = None) -> Callable:
        """Junk particular to this exercise (besides the generic junk every exercise gets): it earns nothing."""
        return self._register("junk", exercise, name=name)

    def inputs_of(self, exercise: str) -> Callable:
        """Register the inputs on which the notebook's solution of `exercise` and the reference must agree."""
        return self._register_once(self.inputs, exercise)

    def agreement(self, exercise: str) -> Callable:
        """Register a function (notebook's definition, reference's definition) asserting that they agree."""
        return self._register_once(self.agreements, exercise)

    def _register_once(self, table: dict, exercise: str) -> Callable:
        if exercise not in self.depends_on:
            raise ValueError(f"{self.assignment} has no exercise {exercise!r}")
        if exercise in self.inputs or exercise in self.agreements:
            raise ValueError(f"{exercise} already has its comparison with the reference")

        def register(fn):
            table[exercise] = fn
            return fn
        return register

    def of(self, kind: str) -> dict[str, dict[str, Case]]:
        """exercise -> {name: case} for one kind of case."""
        found: dict[str, dict[str, Case]] = {e: {} for e in self.exercises}
        for case in self.cases:
            if case.kind == kind:
                found[case.exercise][case.name] = case
        return found


def _parse(definition) -> ast.FunctionDef | ast.ClassDef:
    node = ast.parse(textwrap.dedent(inspect.getsource(definition))).body[0]
    assert isinstance(node, (ast.FunctionDef, ast.ClassDef)), definition
    # The spec's own decorator goes; others (e.g. @torch.no_grad()) are part of the case.
    node.decorator_list = [d for d in node.decorator_list if not ast.unparse(d).startswith("SPEC.")]
    return node


def definition_source(definition, name: str | None = None) -> str:
    """The source of a function or class, without the spec's decorator, renamed to `name` (every reference to it too)."""
    node = _parse(definition)
    if name and name != node.name:
        old, node.name = node.name, name
        for inner in ast.walk(node):
            if isinstance(inner, ast.Name) and inner.id == old:
                inner.id = name
    return ast.unparse(node) + "\n"


def body_source(definition) -> str:
    """A function's body as top-level code (its docstring dropped): a case of a values or script cell."""
    body = _parse(definition).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return "".join(ast.unparse(statement) + "\n" for statement in body)


def all_specs() -> Iterator[Spec]:
    """Every spec module in this folder, in the order of the assignments."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if isinstance(getattr(module, "SPEC", None), Spec):
            found.append(module.SPEC)
    return iter(sorted(found, key=lambda spec: spec.assignment))
