"""01_attention's own tests. The standard check tests run for every assignment in tests/test_checks.py, from the
cases in tests/specs/attention.py."""
from __future__ import annotations

import pytest
import torch

from grader.reference.attention import sinusoidal_positional_encoding as reference
from tests.specs.attention import SPEC
from tests.test_checks import assignment_of


@pytest.mark.parametrize("n_positions, d_model", [(1, 1), (7, 5), (50, 33)])
def test_solution_and_reference_agree_on_an_odd_d_model(n_positions, d_model):
    """The contract asks for an even d_model only, so no check tries an odd one; the notebook's solution and the
    reference still give the same answer there (they once did not): the standard formula, ending on a sine."""
    ns = {"torch": torch}
    exec(compile(assignment_of(SPEC).solution_cells()["sinusoidal_positional_encoding"], "<solution>", "exec"), ns)
    pe = ns["sinusoidal_positional_encoding"](n_positions, d_model)
    assert pe.shape == (n_positions, d_model) and torch.equal(pe, reference(n_positions, d_model))
    assert torch.equal(pe[:, -1], torch.sin(torch.arange(n_positions, dtype=torch.float64)
                                            * 10000.0 ** (-(d_model - 1) / d_model)).float())
