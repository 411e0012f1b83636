"""What the 03_prompting checks, visible and hidden, both use: transformers' own logits processors and greedy
generation on the checker's course-lm as the answers, how filtered logits, token ids, draws and a
GenerationConfig are read, and the few-shot task and quiz answers.

The checks (grader.checks.prompting) import these helpers from here, and so does the students' copy of the visible
checks (llmcourse.checks.prompting), with which this module ships.
"""
from __future__ import annotations

import functools

import torch

from llmcourse.checking import expect_close, expect_tensor, fail


# -- filters and sampling --------------------------------------------------------------------------

def warped(kind: str, logits: torch.Tensor, value) -> torch.Tensor:
    """transformers' own logits processor applied to logits of any shape (..., V)."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    flat = logits.reshape(-1, logits.shape[-1])
    if kind == "temperature":
        out = TemperatureLogitsWarper(value)(None, flat)
    elif kind == "top_k":
        out = flat.clone() if value == 0 else TopKLogitsWarper(value)(None, flat)
    else:
        out = TopPLogitsWarper(value)(None, flat)
    return out.reshape(logits.shape)


def expect_filter(student_out, logits, expected, what, hint):
    """Same kept tokens (finite entries) and the same values there."""
    out = expect_tensor(student_out, what, shape=tuple(logits.shape), hint=hint)
    if out.dtype != logits.dtype:
        fail(f"{what} has dtype {out.dtype}, but it should keep the logits' dtype {logits.dtype}.", hint)
    kept, want = torch.isfinite(out), torch.isfinite(expected)
    if torch.isnan(out).any():
        fail(f"{what} contains NaN.", hint)
    if not torch.equal(kept, want):
        row = int((kept != want).reshape(-1, logits.shape[-1]).any(-1).nonzero()[0])
        got_n = kept.reshape(-1, logits.shape[-1])[row].sum().item()
        want_n = want.reshape(-1, logits.shape[-1])[row].sum().item()
        fail(f"{what} keeps {got_n} tokens in row {row}, but transformers keeps {want_n} "
             f"(or a different set of tokens).", hint)
    if (out[~kept] > 0).any():
        fail(f"{what}: removed tokens must be -inf, not +inf.", hint)
    expect_close(out, expected, what, hint=hint)


def draw_counts(draws, n_rows: int, vocab: int, what: str, hint: str) -> torch.Tensor:
    draws = expect_tensor(draws, what, shape=(n_rows,), hint="Return one token id per row: shape (B,).")
    if draws.dtype != torch.long:
        fail(f"{what} has dtype {draws.dtype}; token ids are torch.long (torch.multinomial gives that).", hint)
    if (draws < 0).any() or (draws >= vocab).any():
        fail(f"{what} contains ids outside [0, {vocab}).", hint)
    return torch.bincount(draws, minlength=vocab).double()


def expect_distribution(counts: torch.Tensor, probs: torch.Tensor, what: str, hint: str, n_se: float = 5.0) -> None:
    """Counts of many independent draws agree with `probs`: within n_se binomial standard errors per token,
    and never a token of probability 0."""
    n = counts.sum()
    freq = counts / n
    if (counts[probs == 0] > 0).any():
        token = int(((counts > 0) & (probs == 0)).nonzero()[0])
        fail(f"{what} drew token {token}, which the settings filter out (its probability is 0).", hint)
    se = (probs * (1 - probs) / n).sqrt()
    bad = (freq - probs).abs() > n_se * se + 1e-12
    if bad.any():
        token = int(bad.nonzero()[0])
        fail(f"{what}: token {token} was drawn {freq[token]:.3f} of the time over {int(n)} draws, but its "
             f"probability is {probs[token]:.3f} (allowed: {n_se:g} standard errors, ±{n_se * se[token]:.3f}).", hint)


def config_settings(config, what: str) -> dict:
    """The decoding settings of a student's GenerationConfig, as data."""
    if not (hasattr(config, "type_name") and config.type_name.endswith("GenerationConfig")):
        fail(f"{what} should return a transformers.GenerationConfig.",
             hint="Build it with transformers.GenerationConfig(...).")
    settings = config.to_dict()
    return {k: settings.get(k) for k in ("do_sample", "temperature", "top_k", "top_p", "max_new_tokens", "max_length")}


# -- course-lm, here and in the kernel -------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def course_lm():
    """The checker's own course-lm and tokenizer (never the student's objects)."""
    from llmcourse.assets import load_model, load_tokenizer

    return load_model("course-lm").eval(), load_tokenizer("course-lm")


def student_course_lm(student):
    """A fresh course-lm built inside the student's kernel (the same weights as the checker's)."""
    return student.construct("llmcourse.assets.load_model", "course-lm")


def encode(texts: list[str]) -> torch.Tensor:
    """Token ids (B, L) of texts that tokenize to the same length (no padding)."""
    _, tok = course_lm()
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    if len({len(r) for r in rows}) != 1:
        raise ValueError("encode() needs texts of the same token length")
    return torch.tensor(rows)


@torch.no_grad()
def hf_greedy(input_ids: torch.Tensor, max_new_tokens: int, eos_token_id=None) -> torch.Tensor:
    """What `model.generate(do_sample=False)` gives on the checker's own course-lm."""
    model, _ = course_lm()
    kwargs = dict(eos_token_id=eos_token_id, pad_token_id=eos_token_id) if eos_token_id is not None else \
        dict(eos_token_id=None, pad_token_id=0)
    return model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                          max_new_tokens=max_new_tokens, **kwargs)


def expect_token_ids(actual, expected: torch.Tensor, what: str, hint: str) -> torch.Tensor:
    """`actual` must be exactly these token ids (an integer tensor of the same shape)."""
    actual = expect_tensor(actual, what, hint=hint)
    if actual.dtype.is_floating_point or actual.dtype == torch.bool:
        fail(f"{what} has dtype {actual.dtype}; token ids are integers (torch.long).", hint)
    if tuple(actual.shape) != tuple(expected.shape):
        fail(f"{what} has shape {tuple(actual.shape)}, but it should have shape {tuple(expected.shape)} "
             f"(the prompt followed by the new tokens).", hint)
    wrong = (actual.long() != expected).nonzero()
    if len(wrong):
        row, col = (int(i) for i in wrong[0])
        fail(f"{what} differs from model.generate(do_sample=False) at row {row}, position {col}: "
             f"got token {int(actual[row, col])}, expected {int(expected[row, col])}.", hint)
    return actual


# -- few-shot prompting ----------------------------------------------------------------------------

def fewshot_rows(family: str) -> list[dict]:
    return [{"input": r["input"], "output": r["output"]} for r in _fewshot_test() if r["task"] == family]


@functools.lru_cache(maxsize=1)
def _fewshot_test():
    from llmcourse.assets import load_task

    return list(load_task("fewshot", "test"))


# -- questions -------------------------------------------------------------------------------------

TECHNIQUES = ("zero-shot", "few-shot", "chain-of-thought", "self-consistency", "tree-of-thoughts", "react",
              "fine-tuning")
RISKS = ("prompt injection", "prompt leaking", "jailbreak")


def answers_dict(student, name: str, n_keys: int, allowed: tuple[str, ...]) -> dict:
    value = getattr(student, name)
    if not isinstance(value, dict):
        fail(f"`{name}` should be a dictionary, but it is a {type(value).__name__}.")
    if len(value) != n_keys:
        fail(f"`{name}` has {len(value)} keys, but the notebook gives it {n_keys}: keep the keys as they are.",
             hint="Only replace the ... values.")
    for key, answer in value.items():
        if not isinstance(answer, str):
            fail(f"`{name}[{key!r}]` is not answered yet: replace its value (now {_shown(answer)}) with one of "
                 f"{list(allowed)}.", hint="Use exactly one of the allowed strings.")
        if answer.strip().lower() not in allowed:
            fail(f"`{name}[{key!r}]` is {answer!r}; it should be one of {list(allowed)}.",
                 hint="Use exactly one of the allowed strings.")
    return value


def _shown(value) -> str:
    """How a non-string answer reads in a message: `...` for the notebook's placeholder."""
    type_name = getattr(value, "type_name", "")
    return "..." if value is Ellipsis or type_name.endswith("ellipsis") else type(value).__name__
