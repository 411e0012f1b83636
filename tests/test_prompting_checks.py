"""03_prompting's own tests, besides those tests/test_checks.py runs for every assignment (its cases are in
tests/specs/prompting.py): the decoding checks' prompts, and the quiz answers.
"""
from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


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
