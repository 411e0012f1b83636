"""02_variants' own check tests; the standard ones (mutants, alternatives, junk, ...) run from tests/specs/variants.py
in tests/test_checks.py."""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

import grader.reference.variants as reference
from tests.exercises import Assignment
from tests.specs.variants import SPEC

A = Assignment.of(SPEC)


def test_span_corrupt_alternatives_round_trip_through_merge_spans():
    """The contract's identity, merge_spans(*span_corrupt(x, s), s) == x, for every procedure and the solution."""
    sources = [""] + [case.source(A.defined_name("span_corrupt"))
                      for case in SPEC.of("alternative")["span_corrupt"].values()]
    sentinels = list(range(5, 37))
    for source in sources:
        ns = A.namespace_with(source)
        generator = torch.Generator().manual_seed(0)
        for n in range(2, 80):
            tokens = list(range(100, 100 + n))
            assert ns["merge_spans"](*ns["span_corrupt"](tokens, sentinels, generator=generator), sentinels) == tokens


def test_quiz_answers_stay_hidden():
    """What ships to students names the quiz keys, never a key with its answer."""
    answers = {**reference.ARCHITECTURE_FOR_TASK, **reference.ARCHITECTURE_OF_MODEL,
               **reference.PARAMETER_OR_HYPERPARAMETER}
    for module in (A.visible, *SPEC.student_modules):
        text = Path(importlib.import_module(module).__file__).read_text()
        leaked = [key for key, answer in answers.items() if f'"{key}": "{answer}"' in text]
        assert not leaked, (module, leaked)
