"""Reference solutions for 05b_dpo: DPO's loss, and constitutional AI's critique and revision.

Conventions (the notebook states them the same way): sequence log-probabilities are (N,) sums over each
response's tokens; `generate_fn` maps one prompt (a string) to the model's new text.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from llmcourse.rlhf_tools import critique_request, revision_request


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)  # implicit rewards
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()


def critique_and_revise(generate_fn, prompt: str, principles: list[str]) -> tuple[str, str]:
    original = generate_fn(prompt)
    response = original
    for principle in principles:  # one critique, then one revision, per principle, in order
        critique = generate_fn(critique_request(prompt, response, principle))
        response = generate_fn(revision_request(prompt, response, principle, critique))
    return original, response
