"""Visible checks for 03_prompting: what `check("03_prompting/<exercise>")` runs in your notebook.

They compare your code with transformers' own pieces (the logits processors TemperatureLogitsWarper,
TopKLogitsWarper and TopPLogitsWarper, and `model.generate`), count your model's forward passes with
`llmcourse.prompting_tools.ForwardCounter`, or test a property every correct answer has. More checks run
when your notebook is graded.

The helpers at the top are shared with the graders' checks, so that both talk about your code the same way.
"""
from __future__ import annotations

import functools
import math

import torch

from llmcourse.checking import expect, expect_close, expect_tensor, fail, generator, graded
from llmcourse.wire import Seeded

ASSIGNMENT = "03_prompting"
INF = float("inf")


# -- shared helpers --------------------------------------------------------------------------------

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


def fewshot_rows(family: str) -> list[dict]:
    return [{"input": r["input"], "output": r["output"]} for r in _fewshot_test() if r["task"] == family]


@functools.lru_cache(maxsize=1)
def _fewshot_test():
    from llmcourse.assets import load_task

    return list(load_task("fewshot", "test"))


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


# -- format_prompt ---------------------------------------------------------------------------------

@graded("format_prompt", points=3, hint="Each example is 'Input: x\\nOutput: y' followed by a blank line; the prompt "
                                        "ends with 'Input: query\\nOutput:' and no space after the colon.")
def test_format_prompt_few_shot(student):
    got = student.format_prompt("", [("cat", "red"), ("bread", "blue")], "lamp")
    expected = "Input: cat\nOutput: red\n\nInput: bread\nOutput: blue\n\nInput: lamp\nOutput:"
    expect(isinstance(got, str), f"format_prompt returned {type(got).__name__}, not a string.")
    expect(got == expected, f"format_prompt('', [('cat', 'red'), ('bread', 'blue')], 'lamp') returned\n{got!r}\n"
                            f"but the template gives\n{expected!r}")


# -- apply_temperature -----------------------------------------------------------------------------

@graded("apply_temperature", points=2, hint="Divide the logits by the temperature (do not multiply, and no softmax).")
def test_apply_temperature_matches_transformers(student):
    logits = torch.randn(3, 10, generator=generator(1)) * 2
    for t in (0.5, 2.0):
        expect_close(student.apply_temperature(logits, t), warped("temperature", logits, t),
                     f"apply_temperature(logits, {t})", hint="Divide the logits by the temperature.")


# -- top_k_filter ----------------------------------------------------------------------------------

@graded("top_k_filter", points=3, hint="Keep the tokens whose logit is >= the k-th largest of their row, set the "
                                       "others to float('-inf'); ties with the k-th value are all kept.")
def test_top_k_filter_matches_transformers(student):
    logits = torch.randn(4, 12, generator=generator(2)) * 3
    cases = [(logits, 3), (torch.tensor([[3.0, 1.0, 3.0, 3.0, 0.0]]), 2)]
    for x, k in cases:
        expect_filter(student.top_k_filter(x, k), x, warped("top_k", x, k), f"top_k_filter(logits, {k})",
                      hint="Keep every token whose logit is >= the k-th largest value of its row.")


# -- top_p_filter ----------------------------------------------------------------------------------

@graded("top_p_filter", points=3, hint="Keep the most likely tokens until their probabilities add up to at least p, "
                                       "including the token that reaches p; -inf for the rest.")
def test_top_p_filter_matches_transformers(student):
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0], [0.0, 4.0, 1.0, 1.5, -2.0]])
    for p in (0.5, 0.8):
        expect_filter(student.top_p_filter(logits, p), logits, warped("top_p", logits, p), f"top_p_filter(logits, {p})",
                      hint="Keep the most likely tokens until their probabilities add up to at least p.")


# -- sample_next_token -----------------------------------------------------------------------------

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


@graded("sample_next_token", points=3, hint="Apply the temperature, then top-k, then top-p, softmax, and draw with "
                                            "torch.multinomial(probs, 1, generator=generator).")
def test_sample_next_token_draws_from_the_filtered_distribution(student):
    logits = torch.tensor([2.0, 1.5, 1.0, 0.0, -1.0, -3.0])
    n = 4000
    draws = student.sample_next_token(logits.expand(n, -1).contiguous(), temperature=0.7, top_k=4,
                                      generator=Seeded(0))
    counts = draw_counts(draws, n, 6, "sample_next_token(..., temperature=0.7, top_k=4)", "")
    probs = torch.softmax(warped("top_k", warped("temperature", logits.double()[None], 0.7), 4)[0], -1)
    expect_distribution(counts, probs, "sample_next_token(..., temperature=0.7, top_k=4)",
                        hint="Divide by the temperature, keep the top 4, softmax, then draw.")


# -- greedy_generate -------------------------------------------------------------------------------

GREEDY_HINT = ("Each step: run the model on the whole sequence, take the logits of the LAST position, argmax, "
               "append with torch.cat along dim 1.")


@graded("greedy_generate", points=3, hint=GREEDY_HINT)
def test_greedy_generate_matches_generate(student):
    ids = encode(["Once upon a time, there was a little"])
    model = student_course_lm(student)
    expect_token_ids(student.greedy_generate(model, ids, 8), hf_greedy(ids, 8),
                     "greedy_generate(course-lm, prompt, 8)", GREEDY_HINT)


# -- generate_with_cache ---------------------------------------------------------------------------

CACHE_HINT = ("First pass: the whole prompt. Then feed only the newest token, shape (B, 1), with "
              "cache=out.cache from the pass before.")


@graded("generate_with_cache", points=4, hint=CACHE_HINT)
def test_generate_with_cache_feeds_one_token_per_step(student):
    ids = encode(["Once upon a time, there was a little"])
    model = student_course_lm(student)
    counter = student.construct("llmcourse.prompting_tools.ForwardCounter", model)
    out = student.generate_with_cache(model, ids, 6)
    lengths = counter.lengths
    counter.remove()
    expect_token_ids(out, hf_greedy(ids, 6), "generate_with_cache(course-lm, prompt, 6)", CACHE_HINT)
    expected = [ids.shape[1]] + [1] * 5
    expect(lengths == expected, f"generate_with_cache(course-lm, a prompt of {ids.shape[1]} tokens, 6) ran forward "
                                f"passes over {lengths} tokens; the KV cache needs {expected}.", CACHE_HINT)


# -- to_generation_config --------------------------------------------------------------------------

def config_settings(config, what: str) -> dict:
    """The decoding settings of a student's GenerationConfig, as data."""
    if not (hasattr(config, "type_name") and config.type_name.endswith("GenerationConfig")):
        fail(f"{what} should return a transformers.GenerationConfig.",
             hint="Build it with transformers.GenerationConfig(...).")
    settings = config.to_dict()
    return {k: settings.get(k) for k in ("do_sample", "temperature", "top_k", "top_p", "max_new_tokens", "max_length")}


@graded("to_generation_config", points=2, hint="Sampling needs do_sample=True; pass temperature, top_k, top_p and "
                                               "max_new_tokens exactly as given.")
def test_to_generation_config_sampling(student):
    got = config_settings(student.to_generation_config(0.7, 20, 0.9, 30), "to_generation_config(0.7, 20, 0.9, 30)")
    want = {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9, "max_new_tokens": 30}
    for key, value in want.items():
        expect(got[key] == value, f"to_generation_config(0.7, 20, 0.9, 30) has {key}={got[key]!r}, expected {value!r}.")


# -- few_shot_accuracy -----------------------------------------------------------------------------

# Measured with the course's reference solution on course-lm (a small fixture: regenerate it if the assets change).
FEW_SHOT_FIXTURE = [("colour_mix", 1, 6, 1, 4 / 6), ("sort", 1, 6, 4, 4 / 6)]


@graded("few_shot_accuracy", points=3, hint="Draw with rng = random.Random(seed) and rng.sample(task, n_shots + 1) "
                                            "per query (examples first, query last), prompt with format_prompt('', ...), "
                                            "6 greedy tokens, answer = text before the first newline, stripped.")
def test_few_shot_accuracy_on_a_fixed_seed(student):
    model = student_course_lm(student)
    tok = student.construct("llmcourse.assets.load_tokenizer", "course-lm")
    for family, n_shots, n_queries, seed, expected in FEW_SHOT_FIXTURE:
        got = student.few_shot_accuracy(model, tok, fewshot_rows(family), n_shots, n_queries=n_queries, seed=seed)
        expect(isinstance(got, (float, int)) and not isinstance(got, bool),
               f"few_shot_accuracy returned {type(got).__name__}; it should return a float.")
        expect(math.isclose(got, expected, abs_tol=1e-9),
               f"few_shot_accuracy(course-lm, {family!r} rows, n_shots={n_shots}, n_queries={n_queries}, seed={seed}) "
               f"= {got:.4f}, expected {expected:.4f}.")


# -- extract_answer --------------------------------------------------------------------------------

@graded("extract_answer", points=2, hint="Find the number after the LAST 'answer is'; return it as a string without "
                                         "the period, or None when there is none.")
def test_extract_answer_examples(student):
    cases = [("Anna starts with 6. 6 - 5 = 1. The answer is 1.", "1"),
             ("So 3 + 4 = 7. The answer is 17.", "17"),
             ("Tom has some apples.", None)]
    for text, expected in cases:
        got = student.extract_answer(text)
        expect(got == expected, f"extract_answer({text!r}) returned {got!r}, expected {expected!r}.")


# -- majority_vote ---------------------------------------------------------------------------------

@graded("majority_vote", points=2, hint="Count the answers that are not None and return the most common one.")
def test_majority_vote_examples(student):
    cases = [(["4", "7", "4", None], "4"), ([None, "3", None, None], "3"), ([None, None], None)]
    for answers, expected in cases:
        got = student.majority_vote(answers)
        expect(got == expected, f"majority_vote({answers!r}) returned {got!r}, expected {expected!r}.")


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


@graded("questions", points=1, requires_main=True,
        hint="Give every key one of the allowed strings.")
def test_questions_are_answered(student):
    answers_dict(student, "TECHNIQUE_FOR_PROBLEM", 7, TECHNIQUES)
    answers_dict(student, "RISK_OF_ATTACK", 6, RISKS)
