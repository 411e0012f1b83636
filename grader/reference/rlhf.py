"""Reference solutions for 05_rlhf: reward models and PPO, from its pieces up to the loop (DPO is 05b_dpo).

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


def whiten(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(A - mean) / (std + 1e-8) over the True positions of the whole batch; 0 elsewhere."""
    valid = advantages[mask]
    return torch.where(mask, (advantages - valid.mean()) / (valid.std() + 1e-8), torch.zeros_like(advantages))


def policy_outputs(policy, value_head, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Logits, log-probs of the tokens and the critic's values, all on the (B, L - 1) prediction grid."""
    out = policy(input_ids=input_ids, attention_mask=attention_mask.long(), output_hidden_states=True)
    logits = out.logits[:, :-1]  # (B, L - 1, V)
    logprobs = gather_logprobs(logits, input_ids[:, 1:])  # (B, L - 1)
    # The critic reads the policy's features but does not train them (detach).
    values = value_head(out.hidden_states[-1][:, :-1].detach())  # (B, L - 1)
    return logits, logprobs, values


def ppo_step(policy, value_head, optimizer, batch: dict, clip_eps: float = 0.2, vf_coef: float = 0.5,
             ent_coef: float = 0.01, epochs: int = 4, minibatch_size: int = 8) -> dict:
    mask = batch["mask"].bool()
    advantages = whiten(batch["advantages"], mask)  # once, over the whole batch
    n = len(mask)
    sums = {"loss": 0.0, "policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0}
    steps = 0
    for _ in range(epochs):
        order = torch.randperm(n)
        for start in range(0, n, minibatch_size):
            rows = order[start:start + minibatch_size]
            m = mask[rows]
            logits, logprobs, values = policy_outputs(policy, value_head, batch["input_ids"][rows],
                                                      batch["attention_mask"][rows])
            policy_loss = ppo_clip_loss(logprobs, batch["old_logprobs"][rows], advantages[rows], clip_eps, m)
            # The critic may move at most clip_eps from the value it had when the batch was sampled.
            old_values, returns = batch["old_values"][rows], batch["returns"][rows]
            clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
            value_loss = masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), m)
            logp = torch.log_softmax(logits, -1)
            entropy = masked_mean(-(logp.exp() * logp).sum(-1), m)
            loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for key, value in (("loss", loss), ("policy_loss", policy_loss), ("value_loss", value_loss),
                               ("entropy", entropy)):
                sums[key] += float(value.detach())
            steps += 1
    return {key: total / steps for key, total in sums.items()}


def ppo_train(policy, reference, sample_fn, score_fn, iterations: int, beta: float = 0.1, lr: float = 1e-4,
              value_lr: float = 1e-3, gamma: float = 1.0, lam: float = 0.95, eval_fn=None, eval_every: int = 4,
              seed: int = 0, **ppo_kwargs) -> dict:
    from llmcourse.rlhf_tools import ValueHead

    torch.manual_seed(seed)
    value_head = ValueHead(policy.config.hidden_size).to(next(policy.parameters()).device)
    optimizer = torch.optim.AdamW([{"params": policy.parameters(), "lr": lr},
                                   {"params": value_head.parameters(), "lr": value_lr}])
    reference.eval()
    history = {key: [] for key in ("score", "kl", "loss", "policy_loss", "value_loss", "entropy", "eval_iterations",
                                   "eval")}

    def evaluate(iteration):
        history["eval_iterations"].append(iteration)
        history["eval"].append(eval_fn(policy))

    if eval_fn is not None:
        evaluate(0)
    for iteration in range(1, iterations + 1):
        rollout = sample_fn(policy)
        score = score_fn(rollout)
        mask = rollout.response_mask[:, 1:].bool()
        with torch.no_grad():
            _, old_logprobs, old_values = policy_outputs(policy, value_head, rollout.input_ids, rollout.attention_mask)
            ref_logits = reference(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask.long()).logits
            ref_logprobs = gather_logprobs(ref_logits[:, :-1], rollout.input_ids[:, 1:])
            rewards = shaped_rewards(score, old_logprobs, ref_logprobs, mask, beta)
            advantages, returns = gae(rewards, old_values, gamma=gamma, lam=lam, mask=mask)
        batch = {"input_ids": rollout.input_ids, "attention_mask": rollout.attention_mask, "mask": mask,
                 "old_logprobs": old_logprobs, "old_values": old_values, "advantages": advantages, "returns": returns}
        policy.train()
        losses = ppo_step(policy, value_head, optimizer, batch, **ppo_kwargs)
        policy.eval()
        history["score"].append(float(score.float().mean()))
        history["kl"].append(float(((old_logprobs - ref_logprobs) * mask).sum(-1).mean()))
        for key, value in losses.items():
            history[key].append(value)
        if eval_fn is not None and iteration % eval_every == 0:
            evaluate(iteration)
    return history
