"""03_prompting's own tests, besides those tests/test_checks.py runs for every assignment (its cases are in
tests/specs/prompting.py): the graders' reference module, the decoding checks' prompts, and the quiz answers.
"""
from __future__ import annotations

from pathlib import Path

import torch

from tests.specs.prompting import SPEC
from tests.test_checks import assignment_of

ROOT = Path(__file__).resolve().parents[1]


def test_reference_module_agrees_with_the_notebook():
    """grader.reference.prompting (used by the hidden checks) and the notebook's solution give the same answers."""
    import grader.reference.prompting as ref

    ns = assignment_of(SPEC).namespace_with()
    x = torch.randn(6, 30, generator=torch.Generator().manual_seed(0)) * 3
    for p in (0.2, 0.7, 0.95):
        assert torch.equal(ns["top_p_filter"](x, p), ref.top_p_filter(x, p))
    for k in (0, 1, 4, 40):
        assert torch.equal(ns["top_k_filter"](x, k), ref.top_k_filter(x, k))
    assert ns["format_prompt"]("Do it.", [("a", "b")], "c") == ref.format_prompt("Do it.", [("a", "b")], "c")
    assert ns["TECHNIQUE_FOR_PROBLEM"] == ref.TECHNIQUE_FOR_PROBLEM and ns["RISK_OF_ATTACK"] == ref.RISK_OF_ATTACK
    from llmcourse.checking.shared.prompting import course_lm, fewshot_rows
    from llmcourse.checks.prompting import FEW_SHOT_FIXTURE

    model, tok = course_lm()
    for family, n_shots, n_queries, seed, expected in FEW_SHOT_FIXTURE:
        assert ref.few_shot_accuracy(model, tok, fewshot_rows(family), n_shots, n_queries, seed) == expected


def test_checked_prompts_have_no_near_ties():
    """The decoding checks compare token ids exactly: every greedy step they use wins by a clear margin, so that
    any correct implementation (cache or not, batched or not) picks the same token."""
    from grader.checks.prompting import _PROMPTS, _eos_pair
    from llmcourse.checking.shared.prompting import course_lm, encode, hf_greedy

    model, tok = course_lm()
    prompts = [encode([p]) for p in _PROMPTS] + [torch.tensor([row]) for row in _eos_pair()]
    for ids in prompts:
        for eos in (None, tok.eos_token_id):
            out = hf_greedy(ids, 16, eos_token_id=eos)
            with torch.no_grad():
                logits = model(out).logits[0, ids.shape[1] - 1:-1]
            top2 = logits.topk(2, dim=-1).values
            assert float((top2[:, 0] - top2[:, 1]).min()) > 1e-3, tok.decode(ids[0])


def test_the_answers_to_the_questions_never_ship():
    """The visible checks do not even name the quiz's questions: the answers live on the graders' side only."""
    text = (ROOT / "llmcourse" / "checks" / "prompting.py").read_text()
    assert "translate one sentence" not in text
