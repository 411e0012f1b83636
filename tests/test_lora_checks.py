"""04_lora's own tests: its reference solution against another implementation.

The standard check tests (full marks, mutants, alternatives, junk, the notebook's solution agreeing with
grader/reference/lora.py, ...) run for every assignment in tests/test_checks.py, from tests/specs/lora.py.

- The reference ROUGE agrees with Google's `rouge-score` where its tokenizer agrees with ours (skipped when
  that package is not installed). (The model-card evaluation script imports the reference's ROUGE-L.)
"""
from __future__ import annotations

import random

import pytest

from grader.reference import lora as ref


def _plain_pairs(seed: int, count: int) -> list[tuple[str, str]]:
    """Lower-case letter words only, where rouge-score's tokenizer and ours split the same way."""
    rng = random.Random(seed)
    words = ["the", "cat", "dog", "sat", "on", "mat", "a", "red", "ball"]
    return [tuple(" ".join(rng.choice(words) for _ in range(rng.randint(1, 10))) for _ in range(2))
            for _ in range(count)]


def test_reference_rouge_agrees_with_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    for cand, refr in _plain_pairs(0, 200):
        expected = scorer.score(refr, cand)  # rouge-score takes (target, prediction)
        for ours, key in ((ref.rouge_n(cand, refr, 1), "rouge1"), (ref.rouge_n(cand, refr, 2), "rouge2"),
                          (ref.rouge_l(cand, refr), "rougeL")):
            theirs = expected[key]
            assert ours["precision"] == pytest.approx(theirs.precision)
            assert ours["recall"] == pytest.approx(theirs.recall)
            assert ours["f1"] == pytest.approx(theirs.fmeasure)
