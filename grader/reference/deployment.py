"""Reference solutions of 07_deployment, used by the hidden checks (never shipped to students).

Conventions (the notebook states them the same way):
- bytes per parameter: fp32 4, fp16 and bf16 2, int8 1, int4 half a byte (an odd count rounds up); training adds
  gradients in the weights' dtype, Adam's two states in fp32 and, under mixed precision, an fp32 master copy;
- absmax: scale = max|w| / (2^(bits-1) - 1), q = round(w / scale) clamped to +-(2^(bits-1) - 1), int8 storage;
- zero-point: the range [min(w, 0), max(w, 0)] (zero is always exact), scale = range / (2^bits - 1),
  zero_point = round(-min / scale), q = clamp(round(w / scale) + zero_point, 0, 2^bits - 1), uint8 storage;
- `dim=None` is one scale for the tensor; `dim=d` is one scale per index along d (scale keeps every dimension,
  with size 1 except d); a slice of zeros gets scale 1;
- QuantizedLinear keeps int8 weights of shape (out, in) and one absmax scale per output row, or per group of
  `group_size` consecutive inputs of a row;
- perplexity is exp of the mean negative log-likelihood over every predicted token of every text (each text is
  tokenized on its own, truncated to max_length; its first token is not predicted);
- a choice is tokenized on its own (add_special_tokens=False) and appended to the prompt's tokens.
"""
from __future__ import annotations

import math
from collections import Counter

import torch
import torch.nn as nn
import torch.nn.functional as F

BYTES_PER_PARAM = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "int4": 0.5}


def model_memory(n_params, dtype, training=False, mixed_precision=False):
    if dtype not in BYTES_PER_PARAM:
        raise ValueError(f"dtype must be one of {sorted(BYTES_PER_PARAM)}, not {dtype!r}")
    weights = math.ceil(n_params * BYTES_PER_PARAM[dtype])
    if not training:
        return weights
    if dtype in ("int8", "int4"):
        raise ValueError("integer weights cannot be trained directly (their gradient steps round away)")
    if mixed_precision and dtype == "fp32":
        raise ValueError("mixed precision keeps 16-bit weights and an fp32 master copy: use fp16 or bf16")
    gradients = weights
    adam = 8 * n_params
    master = 4 * n_params if mixed_precision else 0
    return weights + gradients + adam + master


def _reduce_dims(w, dim):
    """Every dimension except `dim` (all of them when dim is None)."""
    if dim is None:
        return tuple(range(w.dim()))
    dim = dim % w.dim()
    return tuple(d for d in range(w.dim()) if d != dim)


def _check_bits(bits):
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be between 2 and 8, not {bits}")


def quantize_absmax(w, bits=8, dim=None):
    _check_bits(bits)
    qmax = 2 ** (bits - 1) - 1
    dims = _reduce_dims(w, dim)
    amax = w.abs().amax(dim=dims, keepdim=dim is not None) if dims else w.abs()
    scale = amax / qmax
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8)
    return q, scale


def quantize_zeropoint(w, bits=8, dim=None):
    _check_bits(bits)
    qmax = 2 ** bits - 1
    dims = _reduce_dims(w, dim)
    keep = dim is not None
    low = w.amin(dim=dims, keepdim=keep).clamp(max=0) if dims else w.clamp(max=0)
    high = w.amax(dim=dims, keepdim=keep).clamp(min=0) if dims else w.clamp(min=0)
    scale = (high - low) / qmax
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero_point = torch.round(-low / scale).to(torch.int32)
    q = (torch.round(w / scale) + zero_point).clamp(0, qmax).to(torch.uint8)
    return q, scale, zero_point


def dequantize(q, scale, zero_point=None):
    values = q.to(scale.dtype)
    if zero_point is not None:
        values = values - zero_point.to(scale.dtype)
    return values * scale


class QuantizedLinear(nn.Module):
    def __init__(self, in_features, out_features, bits=8, group_size=None, bias=True):
        super().__init__()
        if group_size is not None and in_features % group_size:
            raise ValueError(f"group_size {group_size} does not divide in_features {in_features}")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size = bits, group_size
        groups = out_features * (in_features // group_size) if group_size else out_features
        self.register_buffer("weight_q", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(groups, 1))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear, bits=8, group_size=None):
        layer = cls(linear.in_features, linear.out_features, bits, group_size, bias=linear.bias is not None)
        w = linear.weight.detach()
        rows = w.reshape(-1, group_size) if group_size else w
        q, scale = quantize_absmax(rows, bits, dim=0)
        layer.weight_q = q.reshape(w.shape)
        layer.scale = scale
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer.to(w.device)

    def dequantized_weight(self):
        rows = self.weight_q.reshape(self.scale.shape[0], -1)
        return dequantize(rows, self.scale).reshape(self.out_features, self.in_features)

    def forward(self, x):
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight().to(x.dtype), bias)


def quantize_model(model, bits=8, group_size=None, skip=("lm_head",)):
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and not any(s in name.split(".") for s in skip)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantizedLinear.from_linear(module, bits, group_size))
    return model


@torch.no_grad()
def perplexity(model, tokenizer, texts, max_length=256):
    if isinstance(texts, str):
        texts = [texts]
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        if len(ids) < 2:
            continue
        ids = torch.tensor([ids], device=device)
        logits = model(input_ids=ids).logits[0, :-1].float()
        total_nll += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        total_tokens += ids.shape[1] - 1
    if total_tokens == 0:
        raise ValueError("the texts have no token to predict (each needs at least two tokens)")
    return math.exp(total_nll / total_tokens)


def distillation_loss(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    vocab = student_logits.shape[-1]
    student = student_logits[:, :-1].reshape(-1, vocab)
    teacher = teacher_logits[:, :-1].detach().reshape(-1, vocab)
    targets = labels[:, 1:].reshape(-1)
    keep = targets != -100
    student, teacher, targets = student[keep], teacher[keep], targets[keep]
    log_q = F.log_softmax(student / temperature, dim=-1)
    log_p = F.log_softmax(teacher / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
    ce = F.cross_entropy(student, targets)
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


@torch.no_grad()
def magnitude_prune(model, sparsity, module_types=(nn.Linear,)):
    if not 0 <= sparsity <= 1:
        raise ValueError(f"sparsity is a fraction between 0 and 1, not {sparsity}")
    # Every matching module's weight, as torch.nn.utils.prune.global_unstructured ranks them (the contract): a
    # weight two modules share (a tied output layer) is ranked once for each.
    weights = [module.weight for module in model.modules() if isinstance(module, module_types)]
    scores = torch.cat([w.abs().flatten() for w in weights])
    k = round(sparsity * scores.numel())
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        keep[torch.topk(scores, k, largest=False).indices] = False
    start = 0
    for w in weights:
        w.mul_(keep[start:start + w.numel()].view_as(w))
        start += w.numel()
    return model


def _ngrams(tokens, n):
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]
    if len(candidate) != len(references):
        raise ValueError(f"{len(candidate)} candidates but {len(references)} lists of references")
    matches, totals = [0] * max_n, [0] * max_n
    cand_len = ref_len = 0
    for cand, refs in zip(candidate, references):
        if isinstance(refs, str):
            refs = [refs]
        c = cand.split()
        rs = [r.split() for r in refs]
        cand_len += len(c)
        ref_len += min((len(r) for r in rs), key=lambda n: (abs(n - len(c)), n))
        for n in range(1, max_n + 1):
            counts = _ngrams(c, n)
            most = Counter()
            for r in rs:
                most |= _ngrams(r, n)
            matches[n - 1] += sum(min(k, most[g]) for g, k in counts.items())
            totals[n - 1] += max(len(c) - n + 1, 0)
    if min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    penalty = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / cand_len)
    return 100 * penalty * math.exp(log_precision)


@torch.no_grad()
def choice_logprob(model, tokenizer, prompt, choice):
    prompt_ids = tokenizer(prompt)["input_ids"]
    choice_ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
    if not prompt_ids or not choice_ids:
        raise ValueError("the prompt and the choice both need at least one token")
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids + choice_ids], device=device)
    log_probs = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    start = len(prompt_ids) - 1  # the position whose logits predict the choice's first token
    targets = ids[0, start + 1:]
    return log_probs[start:].gather(1, targets[:, None]).sum().item()


def multiple_choice_accuracy(model, tokenizer, items):
    if not items:
        raise ValueError("no items to score")
    correct = 0
    for item in items:
        scores = [choice_logprob(model, tokenizer, item["prompt"], c) for c in item["choices"]]
        correct += max(range(len(scores)), key=scores.__getitem__) == item["answer"]
    return correct / len(items)


def fit_scaling_law(rows, steps=200):
    if len(rows) < 5:
        raise ValueError(f"five parameters need at least five runs, got {len(rows)}")
    n = torch.tensor([float(r["params"]) for r in rows], dtype=torch.float64).log()
    d = torch.tensor([float(r["tokens"]) for r in rows], dtype=torch.float64).log()
    loss = torch.tensor([float(r["loss"]) for r in rows], dtype=torch.float64).log()

    def objective(p):
        # p = (log E, log A, alpha, log B, beta); log L = logsumexp(log E, log A - alpha log N, log B - beta log D)
        predicted = torch.logsumexp(torch.stack([p[0].expand_as(n), p[1] - p[2] * n, p[3] - p[4] * d]), dim=0)
        return ((predicted - loss) ** 2).mean()

    best = None
    for log_e in (-1.0, 0.5):
        for exponent in (0.1, 0.5, 1.0):
            p = torch.tensor([log_e, 8.0, exponent, 8.0, exponent], dtype=torch.float64, requires_grad=True)
            opt = torch.optim.LBFGS([p], lr=1, max_iter=steps, line_search_fn="strong_wolfe",
                                    tolerance_grad=1e-12, tolerance_change=1e-15)

            def closure():
                opt.zero_grad()
                value = objective(p)
                value.backward()
                return value

            opt.step(closure)
            value = objective(p).item()
            if math.isfinite(value) and (best is None or value < best[0]):
                best = (value, p.detach().clone())
    p = best[1]
    return {"E": math.exp(p[0]), "A": math.exp(p[1]), "alpha": p[2].item(), "B": math.exp(p[3]),
            "beta": p[4].item()}


def compute_optimal(C, law):
    a, b = law["alpha"], law["beta"]
    g = (a * law["A"] / (b * law["B"])) ** (1 / (a + b))
    params = g * (C / 6) ** (b / (a + b))
    tokens = (C / 6) / params
    return params, tokens
