"""Course scaffolding for 05_rlhf: batching, rollouts, the PPO optimisation loop and its plots.

Nothing here is an exercise. The PPO loop takes your functions as arguments (`gather_logprobs`,
`shaped_rewards`, `gae`, `ppo_clip_loss`) and does the bookkeeping around them: sampling responses,
scoring them, keeping a frozen reference, normalising advantages and stepping the optimiser.

Shapes: a batch of B token sequences of length L is `input_ids` (B, L). Per-token quantities about
*predicting* a token live on the (B, L - 1) grid: position t holds what concerns token t + 1, predicted
from tokens 0..t. So `logprobs[:, t]` is log pi(token t + 1 | tokens <= t), and `values[:, t]` is the
critic's estimate in the state "tokens 0..t written".
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
import torch.nn as nn

__all__ = ["Rollout", "encode_pairs", "rollout", "score_responses", "ValueHead", "PPOConfig", "ppo_train",
           "distinct_n", "evaluate_policy", "plot_reward_vs_kl", "plot_training", "pad_batch"]


def pad_batch(sequences: list[list[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists into (ids, attention_mask), both (B, L); the mask is True at real tokens."""
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for i, s in enumerate(sequences):
        part = slice(length - len(s), length) if side == "left" else slice(0, len(s))
        ids[i, part] = torch.tensor(s, dtype=torch.long)
        mask[i, part] = True
    return ids, mask


def encode_pairs(tokenizer, rows, device="cpu") -> dict[str, torch.Tensor]:
    """Preference rows {prompt, chosen, rejected} as one right-padded batch: the B chosen sequences, then the B rejected.

    Each sequence is prompt + response + end-of-sequence token. Returns input_ids, attention_mask and
    response_mask (True at the response's tokens, the end token included), each (2B, L).
    """
    rows = list(rows)
    eos = tokenizer.eos_token_id
    sequences, responses = [], []
    for key in ("chosen", "rejected"):
        for row in rows:
            prompt = tokenizer(row["prompt"], add_special_tokens=False).input_ids
            response = tokenizer(row[key], add_special_tokens=False).input_ids + [eos]
            sequences.append(prompt + response)
            responses.append([0] * len(prompt) + [1] * len(response))
    ids, attention = pad_batch(sequences, tokenizer.pad_token_id)
    response_mask, _ = pad_batch(responses, 0)
    return {"input_ids": ids.to(device), "attention_mask": attention.to(device),
            "response_mask": response_mask.bool().to(device)}


@dataclass
class Rollout:
    """Prompts (left-padded) followed by sampled responses (right-padded), all (B, L)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor  # True at real tokens (prompt and response)
    response_mask: torch.Tensor  # True at response tokens, up to and including the end token
    texts: list[str] = field(default_factory=list)


@torch.no_grad()
def rollout(policy, tokenizer, prompts: list[str], max_new_tokens: int = 32, do_sample: bool = True,
            temperature: float = 1.0) -> Rollout:
    """Let the policy answer each prompt (sampled, or greedy with do_sample=False)."""
    device = next(policy.parameters()).device
    encoded = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    ids, mask = pad_batch(encoded, tokenizer.pad_token_id, side="left")
    ids, mask = ids.to(device), mask.to(device)
    was_training = policy.training
    policy.eval()
    kwargs = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if do_sample else dict(do_sample=False)
    out = policy.generate(input_ids=ids, attention_mask=mask.long(), max_new_tokens=max_new_tokens,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **kwargs)
    policy.train(was_training)
    response = out[:, ids.shape[1]:]
    # Everything up to and including the first end token is the response; generate pads after it.
    ended = (response == tokenizer.eos_token_id).long().cumsum(-1)
    response_mask = (ended == 0) | ((ended == 1) & (response == tokenizer.eos_token_id))
    full_mask = torch.cat([torch.zeros_like(mask), response_mask], dim=1)
    attention = torch.cat([mask, response_mask], dim=1)
    texts = tokenizer.batch_decode(torch.where(response_mask, response, tokenizer.pad_token_id), skip_special_tokens=True)
    return Rollout(out, attention, full_mask, texts)


@torch.no_grad()
def score_responses(reward_model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The reward model's score of each sequence (B,): its output at the last real token."""
    was_training = reward_model.training
    reward_model.eval()
    # A sequence classifier reads the last non-pad token; give it right-padded rows (move left padding to the end).
    order = torch.argsort((~attention_mask.bool()).long() * 2 - 1, dim=1, stable=True)  # real tokens first
    ids = input_ids.gather(1, order)
    mask = attention_mask.bool().gather(1, order)
    ids = torch.where(mask, ids, torch.zeros_like(ids))
    scores = reward_model(input_ids=ids, attention_mask=mask.long()).logits.squeeze(-1)
    reward_model.train(was_training)
    return scores.float()


class ValueHead(nn.Module):
    """The critic: a linear layer on the policy's last hidden state, one value per position."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden).squeeze(-1)


@dataclass
class PPOConfig:
    beta: float = 0.05  # weight of the KL penalty
    iterations: int = 20  # rollout + update rounds
    batch_size: int = 16  # prompts per rollout
    epochs: int = 2  # passes over each rollout
    lr: float = 3e-5  # policy learning rate
    value_lr: float = 1e-3  # critic learning rate
    clip_eps: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    max_new_tokens: int = 32
    seed: int = 0


def _forward(policy, value_head, rollout_: Rollout, gather_logprobs):
    """Log-probs and values on the (B, L - 1) prediction grid."""
    out = policy(input_ids=rollout_.input_ids, attention_mask=rollout_.attention_mask.long(), output_hidden_states=True)
    logprobs = gather_logprobs(out.logits[:, :-1].float(), rollout_.input_ids[:, 1:])
    # The critic learns on the policy's features but does not push them around (detach).
    values = value_head(out.hidden_states[-1][:, :-1].detach().float())
    return logprobs, values


def ppo_train(policy, reference, reward_model, tokenizer, prompts: list[str], *, gather_logprobs, shaped_rewards,
              gae, ppo_clip_loss, config: PPOConfig | None = None, progress: bool = True) -> dict:
    """Train `policy` in place with PPO against `reward_model`, penalised by the KL to `reference`.

    Returns a history: per iteration the mean score of the sampled responses, the mean KL to the
    reference (summed over each response's tokens), and a few sample texts.
    """
    from tqdm.auto import tqdm

    cfg = config or PPOConfig()
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = next(policy.parameters()).device
    value_head = ValueHead(policy.config.hidden_size).to(device)
    optimizer = torch.optim.AdamW([{"params": policy.parameters(), "lr": cfg.lr},
                                   {"params": value_head.parameters(), "lr": cfg.value_lr}])
    reference.eval()
    history = {"score": [], "kl": [], "fluency": [], "distinct2": [], "length": [], "samples": []}
    for _ in tqdm(range(cfg.iterations), desc=f"PPO (beta={cfg.beta})", disable=not progress or None, mininterval=1):
        # 1. Rollout: the current policy answers a batch of prompts; the reward model judges each answer.
        batch = rollout(policy, tokenizer, rng.sample(prompts, cfg.batch_size), max_new_tokens=cfg.max_new_tokens)
        score = score_responses(reward_model, batch.input_ids, batch.attention_mask)
        mask = batch.response_mask[:, 1:]  # on the prediction grid
        with torch.no_grad():
            old_logprobs, values = _forward(policy, value_head, batch, gather_logprobs)
            ref_out = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long())
            ref_logprobs = gather_logprobs(ref_out.logits[:, :-1].float(), batch.input_ids[:, 1:])
            # 2. Rewards per token (score at the end, KL penalty everywhere) and advantages.
            rewards = shaped_rewards(score, old_logprobs, ref_logprobs, mask, cfg.beta)
            advantages, returns = gae(rewards, values, gamma=cfg.gamma, lam=cfg.lam, mask=mask)
            # Normalise the advantages over the batch's response tokens: a common trick that steadies the step size.
            valid = advantages[mask]
            advantages = torch.where(mask, (advantages - valid.mean()) / (valid.std() + 1e-8), torch.zeros_like(advantages))
        kl = ((old_logprobs - ref_logprobs) * mask).sum(-1).mean().item()
        history["score"].append(score.mean().item())
        history["kl"].append(kl)
        history["fluency"].append(((ref_logprobs * mask).sum() / mask.sum()).item())
        history["distinct2"].append(distinct_n(batch.texts, 2))
        history["length"].append(mask.sum(-1).float().mean().item())
        history["samples"].append(batch.texts[:3])
        # 3. Optimise: a few passes of the clipped objective on this rollout, plus the critic's regression.
        policy.train()
        for _ in range(cfg.epochs):
            logprobs, new_values = _forward(policy, value_head, batch, gather_logprobs)
            policy_loss = ppo_clip_loss(logprobs, old_logprobs, advantages, clip_eps=cfg.clip_eps, mask=mask)
            value_loss = (((new_values - returns) ** 2) * mask).sum() / mask.sum()
            optimizer.zero_grad()
            (policy_loss + 0.5 * value_loss).backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
    policy.eval()
    return history


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct-n: the share of different word n-grams among all word n-grams of the texts (1.0: no repeats)."""
    grams = []
    for text in texts:
        words = text.split()
        grams.extend(zip(*(words[i:] for i in range(n))))
    return len(set(grams)) / max(1, len(grams))


@torch.no_grad()
def evaluate_policy(policy, reference, reward_model, tokenizer, prompts: list[str], max_new_tokens: int = 32,
                    seed: int = 0) -> dict:
    """Sample one answer per prompt and measure it.

    Returns the mean reward-model score; the KL to the reference (log pi - log pi_ref summed over each
    response's tokens, averaged over responses); the fluency, the reference model's mean log-probability
    per response token (closer to 0: text the reference finds more natural); distinct-2; and the texts.
    """
    torch.manual_seed(seed)
    batch = rollout(policy, tokenizer, prompts, max_new_tokens=max_new_tokens)
    score = score_responses(reward_model, batch.input_ids, batch.attention_mask)
    mask = batch.response_mask[:, 1:]
    labels = batch.input_ids[:, 1:]

    def logprobs(model):
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long()).logits[:, :-1].float()
        return torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)

    policy_lp, ref_lp = logprobs(policy), logprobs(reference)
    return {"score": score.mean().item(), "kl": ((policy_lp - ref_lp) * mask).sum(-1).mean().item(),
            "fluency": ((ref_lp * mask).sum() / mask.sum()).item(), "distinct2": distinct_n(batch.texts, 2),
            "texts": batch.texts}


def _moving_average(values: list[float], window: int) -> list[float]:
    """Mean of each value and up to window - 1 values before it."""
    return [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1]) for i in range(len(values))]


def plot_reward_vs_kl(runs: dict[str, dict], ax=None, window: int = 4):
    """Mean reward-model score against the KL to the reference, one curve per run.

    Each iteration's batch is a faint dot; the line is a moving average over `window` iterations, which shows
    the trend through the noise of small batches.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for label, history in runs.items():
        kl, score = _moving_average(history["kl"], window), _moving_average(history["score"], window)
        line, = ax.plot(kl, score, "-", linewidth=2, label=f"{label} (moving average of {window})")
        ax.scatter(history["kl"], history["score"], s=10, alpha=0.3, color=line.get_color())
        ax.annotate("start", (kl[0], score[0]), fontsize=8, color=line.get_color())
        ax.annotate("end", (kl[-1], score[-1]), fontsize=8, color=line.get_color())
    ax.set_title("PPO: reward against KL to the reference")
    ax.set_xlabel("KL(policy || reference) per response (nats)")
    ax.set_ylabel("mean reward-model score")
    ax.legend(fontsize=8)
    return ax


def plot_training(runs: dict[str, dict]):
    """Score and KL against the iteration, side by side."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, history in runs.items():
        axes[0].plot(history["score"], label=label)
        axes[1].plot(history["kl"], label=label)
    axes[0].set_title("Mean reward-model score")
    axes[1].set_title("KL to the reference")
    for ax, name in zip(axes, ("score", "KL (nats per response)")):
        ax.set_xlabel("PPO iteration")
        ax.set_ylabel(name)
        ax.legend()
    fig.tight_layout()
    return fig

