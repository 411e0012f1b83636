"""Course scaffolding for 05_rlhf and 05b_dpo: batching, rollouts, the critic's head, measures, plots, and the
prompts of constitutional AI.

Nothing here is an exercise: you write the PPO update and loop yourself (`ppo_step`, `ppo_train` in 05_rlhf);
this module samples responses (`rollout`), scores them, measures a policy on held-out prompts
(`evaluate_policy`) and draws the curves.

Shapes: a batch of B token sequences of length L is `input_ids` (B, L). Per-token quantities about
*predicting* a token live on the (B, L - 1) grid: position t holds what concerns token t + 1, predicted
from tokens 0..t. So `logprobs[:, t]` is log pi(token t + 1 | tokens <= t), and `values[:, t]` is the
critic's estimate in the state "tokens 0..t written".
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

__all__ = ["Rollout", "encode_pairs", "rollout", "score_responses", "ValueHead", "distinct_n", "evaluate_policy",
           "moving_average", "plot_reward_vs_kl", "plot_training", "plot_held_out", "pad_batch", "story_opening",
           "critique_request", "revision_request", "ending_verdicts"]


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

    Returns the mean reward-model score and its standard deviation over the prompts; the KL to the reference
    (log pi - log pi_ref summed over each response's tokens, averaged over responses), its standard deviation,
    and the per-response estimates (`kls`); the fluency, the reference model's mean log-probability
    per response token (closer to 0: text the reference finds more natural); distinct-2; and the texts.
    """
    # Its own random stream: the same samples for the same policy, and the caller's stream left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        batch = rollout(policy, tokenizer, prompts, max_new_tokens=max_new_tokens)
    score = score_responses(reward_model, batch.input_ids, batch.attention_mask)
    mask = batch.response_mask[:, 1:]
    labels = batch.input_ids[:, 1:]

    def logprobs(model):
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long()).logits[:, :-1].float()
        return torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)

    policy_lp, ref_lp = logprobs(policy), logprobs(reference)
    kls = ((policy_lp - ref_lp) * mask).sum(-1)  # one estimate per response
    return {"score": score.mean().item(), "score_sd": score.std().item(), "kl": kls.mean().item(),
            "kl_sd": kls.std().item(), "kls": kls.tolist(),
            "fluency": ((ref_lp * mask).sum() / mask.sum()).item(), "distinct2": distinct_n(batch.texts, 2),
            "texts": batch.texts}


def moving_average(values: list[float], window: int) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of each value and up to window - 1 values before it."""
    means, spreads = [], []
    for i in range(len(values)):
        part = torch.tensor(values[max(0, i - window + 1):i + 1], dtype=torch.float64)
        means.append(part.mean().item())
        spreads.append(part.std().item() if len(part) > 1 else 0.0)
    return means, spreads


def plot_reward_vs_kl(runs: dict[str, dict], ax=None, window: int = 4):
    """Mean reward-model score against the KL to the reference, one curve per run.

    Each iteration's batch is a faint dot; the line is a moving average over `window` iterations, which shows
    the trend through the noise of small batches.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for label, history in runs.items():
        kl, score = moving_average(history["kl"], window)[0], moving_average(history["score"], window)[0]
        line, = ax.plot(kl, score, "-", linewidth=2, label=f"{label} (moving average of {window})")
        ax.scatter(history["kl"], history["score"], s=10, alpha=0.3, color=line.get_color())
        ax.annotate("start", (kl[0], score[0]), fontsize=8, color=line.get_color())
        ax.annotate("end", (kl[-1], score[-1]), fontsize=8, color=line.get_color())
    ax.set_title("PPO: reward against KL to the reference (training batches)")
    ax.set_xlabel("KL(policy || reference) per response (nats)")
    ax.set_ylabel("mean reward-model score")
    ax.legend(fontsize=8)
    return ax


def plot_training(runs: dict[str, dict], window: int = 4):
    """Score and KL of the training batches against the iteration: a moving average over `window` iterations,
    with a band of one standard deviation of the values in the window (the spread from batch to batch)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, history in runs.items():
        for ax, key in zip(axes, ("score", "kl")):
            mean, spread = moving_average(history[key], window)
            steps = range(1, len(mean) + 1)
            _line_with_band(ax, steps, mean, spread, label=f"{label} (moving average of {window})")
    axes[0].set_title("Training batches: mean reward-model score")
    axes[1].set_title("Training batches: KL to the reference")
    for ax, name in zip(axes, ("score (band: ±1 sd in the window)", "KL, nats per response (band: ±1 sd)")):
        ax.set_xlabel("PPO iteration")
        ax.set_ylabel(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _line_with_band(ax, steps, mean, spread, *style, label: str) -> None:
    """A line of `mean` with a shaded band of +-`spread` around it, in the line's colour."""
    line, = ax.plot(steps, mean, *style, label=label)
    ax.fill_between(steps, [m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)],
                    color=line.get_color(), alpha=0.2)


def plot_held_out(runs: dict[str, dict]):
    """The held-out measures that ppo_train recorded every few iterations (`eval_fn` = `evaluate_policy`): the
    mean score and the mean KL, each with a band of one standard error over the held-out prompts."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, history in runs.items():
        steps = history["eval_iterations"]
        for ax, key in zip(axes, ("score", "kl")):
            mean = [e[key] for e in history["eval"]]
            se = [e[f"{key}_sd"] / len(e["kls"]) ** 0.5 for e in history["eval"]]
            _line_with_band(ax, steps, mean, se, "o-", label=label)
    axes[0].set_title("Held-out prompts: mean reward-model score")
    axes[1].set_title("Held-out prompts: KL to the reference")
    for ax, name in zip(axes, ("score (band: ±1 standard error)", "KL, nats per response (band: ±1 s.e.)")):
        ax.set_xlabel("PPO iteration")
        ax.set_ylabel(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# -- constitutional AI (05b_dpo) ---------------------------------------------------------------------------
# course-lm knows a few instructions (assets/MODELS.md). Judging whether a story ends well is one of them, so
# the critique asks exactly that, under the principle; continuing a story is another, so the revision asks for
# a new ending under the principle. A larger model would be shown its answer and its critique and asked to
# rewrite; course-lm never learned to edit text.

def story_opening(prompt: str) -> str:
    """The story opening inside a `preferences` prompt (the text of its Input section)."""
    return prompt.split("### Input:\n", 1)[-1].split("\n\n### Response:", 1)[0].strip()


def critique_request(prompt: str, response: str, principle: str) -> str:
    """The prompt that asks the model to judge `response` (an ending of the story in `prompt`) under `principle`."""
    from llmcourse.assets import format_instruction

    return format_instruction(f"{principle} Does the story end well or badly?",
                              f"{story_opening(prompt)} {response.strip()}")


def revision_request(prompt: str, response: str, principle: str, critique: str) -> str:
    """The prompt that asks the model for a revised ending under `principle`, after `critique` of `response`.

    course-lm cannot edit a text, so the request asks for a new ending under the principle: `response` and
    `critique` are part of the signature because a larger model's template would quote them."""
    from llmcourse.assets import format_instruction

    return format_instruction(f"Continue the story. {principle}", story_opening(prompt))


@torch.no_grad()
def ending_verdicts(model, tokenizer, prompts: list[str], responses: list[str]) -> list[bool]:
    """The model's own judgement of each ending, in one greedy batch: True where it says the story ends well."""
    from llmcourse.assets import format_instruction

    requests = [format_instruction("Does the story end well or badly?", f"{story_opening(p)} {r.strip()}")
                for p, r in zip(prompts, responses)]
    out = rollout(model, tokenizer, requests, max_new_tokens=3, do_sample=False)
    return [text.strip().lower().startswith("well") for text in out.texts]
