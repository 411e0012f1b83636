"""What 07_deployment's evaluation checks (perplexity, BLEU, multiple choice, distillation, scaling laws),
visible and hidden, both use: a tiny Llama over the course tokenizer's vocabulary, built from the same
weights in the student's kernel and here, the values known mistakes give, and how each answer is read.

The checks (grader.checks.deployment_eval) import these helpers from here, and so does the students' copy of the visible
checks (llmcourse.checks.deployment_eval), with which this module ships.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from llmcourse.checking import expect, fail, mistake_hint
from llmcourse.checking.shared.lora import llama_weights, local_llama, tiny_llama_config


# -- a tiny Llama over the course tokenizer, here and in the kernel --------------------------------

def eval_llama_config(**changes) -> dict:
    """LlamaConfig arguments for a tiny model over the course tokenizer's vocabulary (no dropout anywhere)."""
    return tiny_llama_config(**{"vocab_size": 1659, "intermediate_size": 32, "max_position_embeddings": 1024,
                                **changes})


def eval_llama_weights(config: dict, seed: int, head_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Random weights for every parameter of a LlamaForCausalLM with this config, from a fixed seed (the output
    layer `head_scale` times larger than usual: a more confident model)."""
    weights = llama_weights(config, seed)
    weights["lm_head.weight"] = weights["lm_head.weight"] * head_scale
    return weights


@functools.lru_cache(maxsize=None)
def eval_tokenizer(bos: bool = False):
    """The checker's own course tokenizer (with add_bos_token=True: one that starts every text with <s>)."""
    from llmcourse.assets import load_tokenizer

    return load_tokenizer("course-lm", **({"add_bos_token": True} if bos else {}))


def eval_student_tokenizer(student, bos: bool = False):
    """The course tokenizer, built in the student's kernel from the same files."""
    return student.construct("llmcourse.assets.load_tokenizer", "course-lm", **({"add_bos_token": True} if bos else {}))


@functools.lru_cache(maxsize=None)
def eval_model(seed: int, head_scale: float = 1.0):
    """(config, weights, local model) of a tiny Llama, made once per seed."""
    config = eval_llama_config()
    weights = eval_llama_weights(config, seed, head_scale)
    return config, weights, local_llama(config, weights)


@torch.no_grad()
def eval_token_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log P(ids[t + 1] | ids[:t + 1]) for t = 0 .. len(ids) - 2, in float64, from the checker's model."""
    logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
    return logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


# -- numbers ---------------------------------------------------------------------------------------

def eval_number(value, what: str, hint: str | None = None) -> float:
    """A Python number (or a one-element tensor) as a float; anything else fails the check."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        shown = "None (did the function forget to `return`?)" if value is None else \
            f"a {getattr(value, 'type_name', type(value).__name__)}"
        fail(f"{what} should return a number, but it returned {shown}.", hint)
    if not math.isfinite(value):
        fail(f"{what} returned {value}, not a finite number.", hint)
    return float(value)


def eval_close(got: float, expected: float, rtol: float = 1e-4, atol: float = 1e-9) -> bool:
    return abs(got - expected) <= atol + rtol * abs(expected)


def eval_expect_value(got, expected: float, what: str, hint: str | None = None,
                      mistakes: list[tuple[float, str]] = (), rtol: float = 1e-4, atol: float = 1e-9) -> None:
    """`got` is a number within tolerance of `expected`; a wrong one that a known mistake gives gets its hint."""
    value = eval_number(got, what, hint)
    if not eval_close(value, expected, rtol, atol):
        fail(f"{what} gave {value:.6g}, but it should be {expected:.6g}.",
             mistake_hint(value, expected, mistakes, rtol=rtol, atol=atol) or hint)


# -- perplexity ------------------------------------------------------------------------------------

def ppl_pieces(model, texts, max_length: int = 256) -> list[torch.Tensor]:
    """Per text with at least two tokens (truncated like the exercise): the log-probability of each predicted token."""
    tok = eval_tokenizer()
    pieces = []
    for text in texts:
        ids = tok(text, truncation=True, max_length=max_length)["input_ids"]
        if len(ids) >= 2:
            pieces.append(eval_token_logprobs(model, ids))
    return pieces


def ppl_mistakes(model, texts, max_length: int = 256) -> list[tuple[float, str]]:
    """What the common mistakes give for these texts, each with the hint that names it."""
    tok = eval_tokenizer()
    pieces = ppl_pieces(model, texts, max_length)
    nll = -torch.cat(pieces).mean().item()
    mistakes = [(nll, "That is the mean negative log-likelihood itself: the perplexity is its exponential, "
                      "math.exp(mean NLL)."),
                (2 ** nll, "That is 2 ** (mean NLL): the cross-entropy uses natural logarithms, so take math.exp, "
                           "not a power of 2."),
                (sum(math.exp(-p.mean().item()) for p in pieces) / len(pieces),
                 "That is the mean of the texts' perplexities: add up the negative log-likelihoods and the token "
                 "counts of all texts first, then divide once and take the exponential (every token weighs the "
                 "same)."),
                (math.exp(sum(-p.mean().item() for p in pieces) / len(pieces)),
                 "That averages the texts' mean losses: a short text then counts as much as a long one. Sum the "
                 "negative log-likelihoods of every token of every text and divide by the total number of "
                 "predicted tokens.")]
    unshifted, full = [], []
    with torch.no_grad():
        for text in texts:
            ids = tok(text, truncation=True, max_length=max_length)["input_ids"]
            if len(ids) >= 2:
                logits = model(input_ids=torch.tensor([ids])).logits[0].double()
                unshifted.append(F.cross_entropy(logits, torch.tensor(ids), reduction="none"))
            untruncated = tok(text)["input_ids"]
            if len(untruncated) >= 2:
                full.append(eval_token_logprobs(model, untruncated))
    mistakes.append((math.exp(torch.cat(unshifted).mean().item()),
                     "The logits are not shifted: the logits at position t predict token t + 1, so compare "
                     "logits[:-1] with ids[1:]."))
    mistakes.append((math.exp(-torch.cat(full).mean().item()),
                     "The texts were not truncated: tokenize each with truncation=True, max_length=max_length."))
    mistakes.append((math.exp(nll * sum(len(p) for p in pieces) / sum(len(p) + 1 for p in pieces)),
                     "That divides by every token of the texts: the first token of a text is not predicted, so a "
                     "text of n tokens has n - 1 predicted tokens."))
    return mistakes


# -- BLEU ------------------------------------------------------------------------------------------

def bleu_expect(student, args: tuple, kwargs: dict, expected: float, what: str, hint: str | None = None) -> None:
    value = eval_number(student.bleu(*args, **kwargs), what, hint)
    if not 0 <= value <= 100:
        fail(f"{what} gave {value:.6g}: BLEU is a score between 0 and 100.",
             hint or "Multiply the brevity penalty times the geometric mean of the precisions by 100.")
    if abs(value - expected) > 1e-6 * max(1.0, expected):
        fail(f"{what} gave {value:.6g}, but it should be {expected:.6g}.", hint)


# -- choice_logprob --------------------------------------------------------------------------------

def choice_values(model, prompt_ids: list[int], choice_ids: list[int]) -> tuple[float, list[tuple[float, str]]]:
    """The right log P(choice | prompt) (from the model's own `labels=` loss) and what common mistakes give."""
    ids = prompt_ids + choice_ids
    with torch.no_grad():
        labels = torch.tensor([[-100] * len(prompt_ids) + choice_ids])
        expected = -model(input_ids=torch.tensor([ids]), labels=labels).loss.double().item() * len(choice_ids)
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
    lp = eval_token_logprobs(model, ids)
    start = len(prompt_ids) - 1
    picked = logits.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    mistakes = [
        (lp.sum().item(), "That sums the log-probabilities of the prompt's tokens too: count only the choice's."),
        (lp[start:].mean().item(), "That is the mean over the choice's tokens: sum them (log P of the whole choice "
                                   "is the sum of its tokens' log-probabilities)."),
        (math.exp(expected), "That is a probability: return the sum of the log-probabilities (log_softmax), not "
                             "their exponential."),
        (picked[start:].sum().item(), "Those are raw logits: apply log_softmax over the vocabulary first."),
        (lp[start + 1:].sum().item(), "Off by one: the first token of the choice is predicted by the logits of the "
                                      "prompt's LAST position (index len(prompt_ids) - 1)."),
        (lp[start - 1:-1].sum().item(), "Off by one: the logits at position t predict token t + 1, so the choice's "
                                        "tokens are scored by positions len(prompt_ids) - 1 to the second-to-last."),
    ]
    return expected, mistakes


# -- distillation_loss -----------------------------------------------------------------------------

def distill_terms(student_logits, teacher_logits, labels, temperature: float, *, shift: bool = True,
                  teacher_temperature: float | None = None, reverse: bool = False):
    """(KL per position, cross-entropy per position, kept) in float64: KL(teacher_T || student_T) summed over the
    vocabulary (or the reverse KL), and whether the position's label is kept (not -100)."""
    s, t = student_logits.double(), teacher_logits.double()
    y = labels
    if shift:
        s, t, y = s[:, :-1], t[:, :-1], y[:, 1:]
    vocab = s.shape[-1]
    s, t, y = s.reshape(-1, vocab), t.reshape(-1, vocab), y.reshape(-1)
    log_q = F.log_softmax(s / temperature, dim=-1)
    log_p = F.log_softmax(t / (teacher_temperature or temperature), dim=-1)
    kl = (log_q.exp() * (log_q - log_p)).sum(-1) if reverse else (log_p.exp() * (log_p - log_q)).sum(-1)
    keep = y != -100
    ce = F.cross_entropy(s, y.clamp(min=0), reduction="none")
    return kl, ce, keep


def distill_values(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    """The right loss and what the common mistakes give (with their hints)."""
    t2 = temperature ** 2

    def combine(kl, ce, keep, kl_weight=alpha * t2, ce_weight=1 - alpha, kl_all=False):
        return kl_weight * (kl.mean() if kl_all else kl[keep].mean()) + ce_weight * ce[keep].mean()

    kl, ce, keep = distill_terms(student_logits, teacher_logits, labels, temperature)
    expected = combine(kl, ce, keep).item()
    vocab = student_logits.shape[-1]
    mistakes = [
        (combine(kl, ce, keep, kl_weight=alpha).item(),
         "KL without the T² factor? Multiply the KL term by temperature ** 2 (it keeps the soft targets' gradients "
         "as large as the hard ones')."),
        (combine(*distill_terms(student_logits, teacher_logits, labels, temperature, reverse=True)).item(),
         "KL in the wrong direction? The loss is KL(teacher || student) = sum p_teacher * (log p_teacher - "
         "log p_student). (F.kl_div(input, target) takes the student's LOG-probabilities as input and the "
         "teacher's as target.)"),
        (combine(*distill_terms(student_logits, teacher_logits, labels, temperature, teacher_temperature=1.0)).item(),
         "The teacher's softmax at temperature 1? Divide BOTH the teacher's and the student's logits by the "
         "temperature."),
        (combine(*distill_terms(student_logits, teacher_logits, labels, temperature, shift=False)).item(),
         "No shift? As in next_token_loss, the logits at position t predict label t + 1: use logits[:, :-1] "
         "and labels[:, 1:] (for the KL too)."),
        (combine(kl, ce, keep, kl_weight=(1 - alpha) * t2, ce_weight=alpha).item(),
         "alpha on the wrong term? alpha weighs the distillation (KL) term and 1 - alpha the cross-entropy."),
        (combine(kl / vocab, ce, keep).item(),
         "KL averaged over the vocabulary too? Sum the KL over the vocabulary and average over positions only "
         "(F.kl_div(..., reduction='batchmean') on 2-D inputs, not reduction='mean')."),
        (combine(kl, ce, keep, kl_all=True).item(),
         "-100 positions kept in the KL? Leave the positions whose (shifted) label is -100 out of BOTH terms."),
    ]
    return expected, mistakes


def distill_inputs(seed: int, batch: int, length: int, vocab: int, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    s = (2 * torch.randn(batch, length, vocab, generator=gen, dtype=torch.float64)).to(dtype)
    t = (2 * torch.randn(batch, length, vocab, generator=gen, dtype=torch.float64)).to(dtype)
    labels = torch.randint(0, vocab, (batch, length), generator=gen)
    return s, t, labels


# -- scaling laws ----------------------------------------------------------------------------------

LAW_KEYS = ("E", "A", "alpha", "B", "beta")


def law_loss(law: dict, n: float, d: float) -> float:
    """L(N, D) = E + A / N^alpha + B / D^beta."""
    return law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]


def law_rows(law: dict, pairs) -> list[dict]:
    return [{"params": n, "tokens": d, "loss": law_loss(law, n, d)} for n, d in pairs]


def expect_law(got, what: str) -> dict:
    """`got` is a dict with the five parameters as finite numbers."""
    if not isinstance(got, dict) or not set(LAW_KEYS) <= set(got):
        fail(f"{what} should return a dict with keys {list(LAW_KEYS)}, but it returned "
             f"{sorted(got) if isinstance(got, dict) else getattr(got, 'type_name', type(got).__name__)}.",
             "Return {'E': ..., 'A': ..., 'alpha': ..., 'B': ..., 'beta': ...} with Python floats.")
    return {k: eval_number(got[k], f"{what}[{k!r}]", "Return Python floats, e.g. float(x) or tensor.item().")
            for k in LAW_KEYS}


def law_worst_error(law: dict, rows: list[dict]) -> float:
    """The largest relative error of the law's predictions on the rows."""
    worst = 0.0
    for r in rows:
        try:
            predicted = law_loss(law, r["params"], r["tokens"])
        except (ArithmeticError, ValueError):
            return math.inf
        worst = max(worst, abs(predicted / r["loss"] - 1)) if math.isfinite(predicted) else math.inf
    return worst


def law_fit_hint(law: dict, rows: list[dict], tolerance: float = 1e-3) -> str | None:
    """The likely mistake behind a law that does not fit rows from a known law (within `tolerance`)."""
    if law["B"] == 0 or law["A"] == 0:
        return "One of the two terms is missing: fit BOTH A / N^alpha and B / D^beta (the loss depends on both)."
    swapped_ab = dict(law, A=law["B"], B=law["A"])
    if law_worst_error(swapped_ab, rows) < tolerance:
        return "A and B are swapped: A goes with the parameters N (A / N^alpha), B with the tokens D (B / D^beta)."
    swapped_nd = dict(law, A=law["B"], alpha=law["beta"], B=law["A"], beta=law["alpha"])
    if law_worst_error(swapped_nd, rows) < tolerance:
        return "N and D are swapped: 'params' is N (with A and alpha), 'tokens' is D (with B and beta)."
    if law["E"] == 0:
        return ("E is 0: the irreducible loss E is a parameter to fit (the loss does not go to 0 with infinite "
                "data and parameters).")
    return None


def expect_pair(got, what: str) -> tuple[float, float]:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        shown = repr(got) if got is None or isinstance(got, (int, float, str)) else \
            getattr(got, "type_name", type(got).__name__)
        fail(f"{what} should return a tuple (params, tokens), but it returned {shown}.",
             "Return two numbers: (params, tokens).")
    n, d = (eval_number(v, what, "Return two positive numbers: (params, tokens).") for v in got)
    if not (n > 0 and d > 0):
        fail(f"{what} gave params={n:.4g}, tokens={d:.4g}: both should be positive.")
    return n, d


def expect_budget(n: float, d: float, C: float, what: str) -> None:
    expect(abs(6 * n * d / C - 1) < 1e-9,
           f"{what} gave params={n:.6g} and tokens={d:.6g}, but 6 * params * tokens = {6 * n * d:.6g}, not the "
           f"budget C = {C:.6g}.",
           "Training costs about 6 FLOPs per parameter per token: choose N, then D = C / (6 N). Forgot the 6?")
