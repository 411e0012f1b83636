"""Reference solutions for 05_rlhf: reward models, PPO from its pieces, and DPO.

Conventions (the notebook states them the same way):
- masks are boolean, True = a response token / a step that counts;
- per-token tensors are (B, L); `sequence_logprob` scores token t with the logits at position t - 1;
- in `gae`, each row's steps are its True positions; the value after a row's last step is 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def preference_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    # Bradley-Terry: P(chosen beats rejected) = sigmoid(r_c - r_r); minimise its negative log.
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def gather_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logprobs = torch.log_softmax(logits, dim=-1)  # (..., L, V)
    return logprobs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (..., L)


def sequence_logprob(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     response_mask: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, L, V)
    # The logits at position t predict token t + 1: drop the last position and the first label.
    token_logprobs = gather_logprobs(logits[:, :-1], input_ids[:, 1:])  # (B, L - 1)
    mask = response_mask[:, 1:].to(token_logprobs.dtype)
    return (token_logprobs * mask).sum(-1)  # (B,)


def last_true_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True entry of each row (0 for a row without any)."""
    positions = torch.arange(mask.shape[-1], device=mask.device)
    return torch.where(mask, positions, torch.zeros_like(positions)).amax(-1)


def shaped_rewards(score: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                   response_mask: torch.Tensor, beta: float) -> torch.Tensor:
    mask = response_mask.bool()
    # A KL penalty on every response token: log pi(y_t) - log pi_ref(y_t) estimates the KL of that token.
    rewards = torch.where(mask, -beta * (logprobs - ref_logprobs), torch.zeros_like(logprobs))  # (B, L)
    # The reward model judges the whole response: its score arrives with the last response token.
    rows = torch.arange(len(rewards), device=rewards.device)
    last = last_true_index(mask)
    has_response = mask.any(-1)
    rewards[rows, last] += torch.where(has_response, score.to(rewards.dtype), torch.zeros_like(score, dtype=rewards.dtype))
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float = 1.0, lam: float = 0.95,
        mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    if mask is None:
        mask = torch.ones_like(rewards, dtype=torch.bool)
    mask = mask.bool()
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])  # V after the last step: 0 (the episode ends)
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        step = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # one-step TD error
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = torch.where(step, advantage, torch.zeros_like(advantage))
        # Positions that are not steps (prompt, padding) are skipped: the carry passes over them.
        next_value = torch.where(step, values[:, t], next_value)
        next_advantage = torch.where(step, advantage, next_advantage)
    returns = torch.where(mask, advantages + values, torch.zeros_like(values))
    return advantages, returns


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.mean()
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum()


def ppo_clip_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                  clip_eps: float = 0.2, mask: torch.Tensor | None = None) -> torch.Tensor:
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    # The pessimistic (smaller) objective of the two; a loss is minimised, hence the minus sign.
    return masked_mean(-torch.minimum(unclipped, clipped), mask)


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)  # implicit rewards
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()
