"""07_deployment's own tests of its checks' reference; tests/test_checks.py runs the cases of
tests/specs/deployment.py (mutants, alternatives, junk) and the tests every assignment shares."""
from __future__ import annotations

import pytest
import torch

import grader.reference.deployment as ref
from tests.specs.deployment import SPEC
from tests.test_checks import assignment_of


def test_reference_module_agrees_with_the_notebook():
    """grader.reference.deployment (used by the hidden checks) and the notebook's solution give the same answers."""
    ns = assignment_of(SPEC).namespace_with()
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
