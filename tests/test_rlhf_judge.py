"""The judge of 05_rlhf's trained policy (grader.checks.rlhf) is stored once, and the stored one is today's.

Grading processes read the probe and the baseline from grader/checks/rlhf_judge.pt instead of fitting them
(about 10 CPU seconds each). That is only right while the file is what a fit gives now: these tests fit it
afresh and compare, and show that a file made from other inputs, or damaged, is not used.
"""
from __future__ import annotations

import shutil

import torch

from grader.checks import rlhf
from llmcourse.assets import load_model, load_tokenizer

STALE = "the stored judge is missing or was fitted from other models, data or code: run `python -m grader.checks.rlhf`"


def test_the_stored_judge_is_what_a_fit_gives_now():
    """Equal up to what another CPU's arithmetic may change (the file is fitted on one machine and read on all):
    the last bits of the probe, and a greedy answer where two tokens are within rounding of each other. A judge
    fitted from other data or code differs far more (a probe of another fit points elsewhere)."""
    stored = rlhf.stored_judge()
    assert stored is not None, STALE
    probe, prompts, baseline = rlhf.fit_judge(load_tokenizer("course-lm"), load_model("course-lm").eval())
    assert stored["prompts"] == prompts and len(prompts) == rlhf.N_JUDGE_PROMPTS
    torch.testing.assert_close(stored["probe"], probe, rtol=1e-3, atol=1e-4)
    same = [a == b for a, b in zip(stored["baseline"]["texts"], baseline["texts"])]
    assert sum(same) >= 0.95 * len(prompts), f"{len(prompts) - sum(same)} of the baseline's answers differ"
    kept = torch.tensor(same)
    torch.testing.assert_close(stored["baseline"]["scores"][kept], baseline["scores"][kept], rtol=1e-3, atol=1e-3)
    assert abs(stored["baseline"]["kind"] - baseline["kind"]) <= 0.05
    assert abs(stored["baseline"]["ref_logprob_per_token"] - baseline["ref_logprob_per_token"]) < 0.01


def test_a_judge_from_other_inputs_or_damaged_is_not_used(tmp_path, monkeypatch):
    copy = tmp_path / "rlhf_judge.pt"
    shutil.copy(rlhf.JUDGE_FILE, copy)
    monkeypatch.setattr(rlhf, "JUDGE_FILE", copy)
    assert rlhf.stored_judge() is not None, STALE

    stale = torch.load(copy, weights_only=True)
    stale["inputs"] = "0" * 64  # as if course-lm had been retrained since
    torch.save(stale, copy)
    assert rlhf.stored_judge() is None

    copy.write_bytes(b"not a tensor file")
    assert rlhf.stored_judge() is None

    copy.unlink()
    assert rlhf.stored_judge() is None


def test_the_inputs_digest_follows_the_code_and_the_hub_setting(monkeypatch):
    digest = rlhf.judge_inputs()
    assert digest is not None and len(digest) == 64
    monkeypatch.setattr(rlhf, "MAX_NEW_TOKENS", rlhf.MAX_NEW_TOKENS + 1)
    assert rlhf.judge_inputs() not in (None, digest)
    monkeypatch.undo()
    monkeypatch.setenv("LLMCOURSE_HUB", "course-lm=gpt2")
    assert rlhf.judge_inputs() is None  # a hub model's judge is always fitted afresh
