"""Reference solutions for 04_lora (the same code as the source notebook's solution cells).

The hidden checks run these in the grader, next to the student's code in the kernel, on the same inputs.
"""
from __future__ import annotations

from collections import Counter

import torch
import torch.nn as nn


def count_trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_parameter_count(d_in: int, d_out: int, r: int) -> int:
    # A is (r, d_in), B is (d_out, r); no biases.
    return r * (d_in + d_out)


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update: base(x) + (alpha / r) * B(A(dropout(x)))."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout)
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Linear(base.in_features, r, bias=False, **factory)  # nn.Linear's own random init
        self.lora_B = nn.Linear(r, base.out_features, bias=False, **factory)
        nn.init.zeros_(self.lora_B.weight)  # B = 0: the wrapped layer starts out exactly as the base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * self.lora_B(self.lora_A(self.dropout(x)))

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        base = self.base
        linear = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                           device=base.weight.device, dtype=base.weight.dtype)
        linear.weight.copy_(base.weight + self.scaling * self.lora_B.weight @ self.lora_A.weight)
        if base.bias is not None:
            linear.bias.copy_(base.bias)
        return linear


def _matches(name: str, targets) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def inject_lora(model: nn.Module, target_modules, r: int, alpha: float, dropout: float = 0.0) -> nn.Module:
    model.requires_grad_(False)
    chosen = [name for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and _matches(name, target_modules)]
    for name in chosen:  # replace after the walk: changing the tree while walking it is asking for trouble
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    chosen = [name for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, getattr(parent, child).merged())
    return model


def _tokens(text: str) -> list[str]:
    return text.lower().split()


def _scores(overlap: int, n_candidate: int, n_reference: int) -> dict[str, float]:
    precision = overlap / n_candidate if n_candidate else 0.0
    recall = overlap / n_reference if n_reference else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(candidate: str, reference: str, n: int = 1) -> dict[str, float]:
    c, r = _ngrams(_tokens(candidate), n), _ngrams(_tokens(reference), n)
    overlap = sum((c & r).values())  # clipped: an n-gram counts at most as often as it occurs in each
    return _scores(overlap, sum(c.values()), sum(r.values()))


def _lcs(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str) -> dict[str, float]:
    c, r = _tokens(candidate), _tokens(reference)
    return _scores(_lcs(c, r), len(c), len(r))


def pad_batch(examples: list[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad a list of {"input_ids", "labels"} examples: pads get attention 0 and label -100."""
    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        input_ids[i, :n] = torch.as_tensor(e["input_ids"])
        labels[i, :n] = torch.as_tensor(e["labels"])
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def finetune(model: nn.Module, dataset: list[dict], steps: int, lr: float, batch_size: int = 8,
             seed: int = 0) -> list[float]:
    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses = []
    model.train()
    for _ in range(steps):
        while len(order) < batch_size:  # a fresh shuffled pass over the data when this one runs out
            order += torch.randperm(len(dataset), generator=generator).tolist()
        chosen, order = order[:batch_size], order[batch_size:]
        batch = {k: v.to(device) for k, v in pad_batch([dataset[i] for i in chosen]).items()}
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses
