"""The 07_deployment checks, run in-process against the notebook's own code, wrong code and other right code.

- The reference solution (the source notebook's cells) earns every point, and each exercise's checks are
  worth exactly the points of its check cell.
- Every exercise has plausible wrong implementations (mutants); each must lose points in its exercise, and the
  visible checks alone (what a student sees before grading) must catch at least 9 in 10 of them.
- No check of an exercise notices anything wrong in an exercise it does not use (each mutant, and the exercise
  unimplemented, in turn).
- Every exercise has alternative correct implementations; they earn full marks, in their exercise and in
  every exercise that builds on it.
- Junk (code that returns no right answer) earns nothing.

The mutants and alternatives live in two files by topic: tests/deployment_cases_eval.py (evaluation,
distillation, scaling laws) and tests/deployment_cases_compress.py (memory, quantisation, pruning).
"""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from tests.deployment_cases_compress import ALTERNATIVES as COMPRESS_ALTERNATIVES
from tests.deployment_cases_compress import MUTANTS as COMPRESS_MUTANTS
from tests.deployment_cases_compress import SPECIFIC_HINTS as COMPRESS_HINTS
from tests.deployment_cases_eval import ALTERNATIVES as EVAL_ALTERNATIVES
from tests.deployment_cases_eval import MUTANTS as EVAL_MUTANTS
from tests.deployment_cases_eval import SPECIFIC_HINTS as EVAL_HINTS
from tests.exercises import Assignment
from tests.notebooks import is_check_cell

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "source" / "07_deployment" / "deployment.ipynb"

DEPENDS_ON = {
    "perplexity": set(),
    "bleu": set(),
    "choice_logprob": set(),
    "multiple_choice_accuracy": {"choice_logprob"},
    "model_memory": set(),
    "quantize_absmax": set(),
    "quantize_zeropoint": set(),
    "dequantize": set(),
    "quantized_linear": {"quantize_absmax", "dequantize"},
    "quantize_model": {"quantized_linear"},
    "distillation_loss": set(),
    "magnitude_prune": set(),
    "fit_scaling_law": set(),
    "compute_optimal": set(),
}
SOLUTION_NAMES = {"quantized_linear": "QuantizedLinear"}

A = Assignment("07_deployment", DEPENDS_ON, solution_names=SOLUTION_NAMES)
EXERCISES = A.exercises
namespace_with, score = A.namespace_with, A.score

MUTANTS = {**EVAL_MUTANTS, **COMPRESS_MUTANTS}
ALTERNATIVES = {**EVAL_ALTERNATIVES, **COMPRESS_ALTERNATIVES}
SPECIFIC_HINTS = [*EVAL_HINTS, *COMPRESS_HINTS]  # (exercise, mutant, words the hint of some failing check contains)
EXPECTED_HINT = {(exercise, mutant): words for exercise, mutant, words in SPECIFIC_HINTS}


def test_dependencies_are_what_the_notebook_calls():
    A.assert_dependencies_match_the_notebook()


@pytest.fixture(scope="module", autouse=True)
def reference_results():
    yield from A.reference_results()


@pytest.mark.parametrize("exercise", EXERCISES)
def test_reference_solution_gets_full_marks(reference_results, exercise):
    A.assert_full_marks(reference_results[exercise])


def test_check_points_match_the_notebook(reference_results):
    A.assert_points_match_the_notebook(reference_results)


# -- wrong implementations --------------------------------------------------------------------------

MUTANT_CASES = [pytest.param(exercise, name, source, id=f"{exercise}: {name}")
                for exercise, mutants in MUTANTS.items() for name, source in mutants.items()]


def test_every_exercise_has_three_mutants():
    assert set(MUTANTS) == set(EXERCISES)
    assert all(len(m) >= 3 for m in MUTANTS.values())


@pytest.mark.parametrize("exercise, name, source", MUTANT_CASES)
def test_mutant_loses_points(exercise, name, source):
    A.assert_mutant_loses_points(exercise, name, source, EXPECTED_HINT.get((exercise, name)))


def test_specific_hints_refer_to_real_mutants():
    assert all(mutant in MUTANTS[exercise] for exercise, mutant, _ in SPECIFIC_HINTS)


def test_visible_checks_catch_nine_in_ten_mutants():
    A.assert_visible_checks_catch_nine_in_ten(MUTANTS)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_an_exercise_keeps_its_points_when_what_it_does_not_use_is_broken(exercise):
    A.assert_spared_by_what_it_does_not_use(
        exercise, {e: [("not implemented", A.not_implemented(e)), *MUTANTS[e].items()] for e in EXERCISES})


# -- junk: no right answer, no points ----------------------------------------------------------------
@pytest.mark.parametrize("exercise, what, source", [pytest.param(*case, id=f"{case[0]}: {case[1]}")
                                                     for case in A.junk_cases()])
def test_junk_scores_nothing(exercise, what, source):
    """A function that returns junk or raises earns no check's points, side properties included."""
    A.assert_junk_scores_nothing(exercise, what, source)


# -- other correct implementations ------------------------------------------------------------------

ALTERNATIVE_CASES = [pytest.param(exercise, name, source, id=f"{exercise}: {name}")
                     for exercise, alternatives in ALTERNATIVES.items() for name, source in alternatives.items()]


def test_every_exercise_has_two_alternatives():
    assert set(ALTERNATIVES) == set(EXERCISES)
    assert all(len(a) >= 2 for a in ALTERNATIVES.values())


@pytest.mark.parametrize("exercise, name, source", ALTERNATIVE_CASES)
def test_alternative_solution_gets_full_marks(exercise, name, source):
    A.assert_alternative_gets_full_marks(exercise, name, source)


# -- the reference the hidden checks use --------------------------------------------------------------

def test_reference_module_agrees_with_the_notebook():
    """grader.reference.deployment (used by the hidden checks) and the notebook's solution give the same answers."""
    import torch

    import grader.reference.deployment as ref

    ns = namespace_with()
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 10, generator=gen)
    w[2, 3] = 9.0  # an outlier
    for bits in (4, 8):
        for dim in (None, 0, 1, -1):
            for name in ("quantize_absmax", "quantize_zeropoint"):
                mine, theirs = ns[name](w, bits, dim), getattr(ref, name)(w, bits, dim)
                assert all(torch.equal(a, b) for a, b in zip(mine, theirs)), (name, bits, dim)
    for args in ((10 ** 9, "fp32"), (7, "int4"), (10 ** 9, "bf16", True), (10 ** 9, "fp16", True, True)):
        assert ns["model_memory"](*args) == ref.model_memory(*args)
    cands = ["the cat sat on the mat", "a dog ran far away"]
    refs = [["the cat sat on a mat", "a cat sat on the mat"], ["the dog ran away"]]
    assert ns["bleu"](cands, refs) == ref.bleu(cands, refs)
    logits, teacher = torch.randn(2, 5, 11, generator=gen), torch.randn(2, 5, 11, generator=gen)
    labels = torch.randint(0, 11, (2, 5), generator=gen)
    labels[0, 2] = -100
    assert torch.allclose(ns["distillation_loss"](logits, teacher, labels), ref.distillation_loss(logits, teacher, labels))
    law = {"E": 1.5, "A": 300.0, "alpha": 0.3, "B": 500.0, "beta": 0.35}
    assert ns["compute_optimal"](1e20, law) == pytest.approx(ref.compute_optimal(1e20, law), rel=1e-12)


# -- what ships to students -------------------------------------------------------------------------

def test_visible_checks_hold_no_reference_solution():
    import grader.reference.deployment as reference

    solution_names = {name for name, obj in vars(reference).items()
                      if not name.startswith("_") and getattr(obj, "__module__", None) == reference.__name__}
    assert {"bleu", "quantize_absmax", "fit_scaling_law", "QuantizedLinear"} <= solution_names
    for path in (ROOT / "llmcourse" / "checks").glob("deployment*.py"):
        tree = ast.parse(path.read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not any(name.split(".")[0] == "grader" for name in imported), (path, imported)
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert not defined & solution_names, (path, defined & solution_names)


def test_check_cells_call_their_exercise():
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    solutions = {c.metadata["nbgrader"]["grade_id"] for c in code if c.metadata.get("nbgrader", {}).get("solution")}
    assert solutions == set(EXERCISES)
    for cell in code:
        if is_check_cell(cell):
            exercise = cell.metadata["nbgrader"]["grade_id"].removeprefix("check_")
            assert cell.source == (f'check("07_deployment/{exercise}")\n### BEGIN HIDDEN TESTS\n'
                                   f'check("07_deployment/{exercise}", hidden=True)\n### END HIDDEN TESTS')
