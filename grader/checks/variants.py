"""The checks of 02_variants, visible and hidden, written here once.

A check marked `@visible` ships to students: `grader build` copies it, with the helpers and imports it
uses, into `llmcourse/checks/variants.py` (docstring: STUDENT_DOC below), where a student runs it before
grading. Visible checks use small worked examples and properties every right answer has, never the
reference. The other checks stay here and run only when a notebook is graded: they test the student's
code against `grader.reference.variants`.

Random procedures are checked three ways: deterministic under a seeded generator, statistical over many
draws (tolerances of K binomial standard errors, derived below, never guessed), and structural invariants
that hold for every draw. Everything else is compared with the reference on seeded random inputs, and a
wrong answer that matches a known mistake gets a hint naming it.
"""
from __future__ import annotations

import json
import math
import random
import re

import torch
import torch.nn.functional as F

from grader.reference import variants as ref
from llmcourse.checking import (CheckFailed, StudentRaised, expect, expect_close, expect_tensor, fail, generator,
                                graded, visible)
from llmcourse.checking.shared.variants import (KINDS, MODEL_CLASSES, MODEL_KEYS, PARAMETER_KEYS, TASK_KEYS,
                                                check_mask_structure, check_training, expect_quiz, gpt2_loss_case,
                                                mlm_example, read_span_pair, span_counts, student_tiny_model,
                                                tiny_batch, tiny_weights)
from llmcourse.wire import Seeded

STUDENT_DOC = """Visible checks for 02_variants: what `check("02_variants/<exercise>")` runs in your notebook.

They compare your code with transformers' own models (a causal LM's `.loss`, one optimiser step of a real
model) and with the tokenizers library (its BPE trainer and its BPE model), work through small examples by hand
(the notebook's BPE corpus), or test properties that every correct answer has: labels exactly at the picked
positions, spans that put the text back together, the same output for the same seed. More checks run when your
notebook is graded.

What they share with the graders' checks lives in llmcourse.checking.shared.variants, so that both speak about
your code the same way.
"""

ASSIGNMENT = "02_variants"
# Statistical checks accept a rate within K standard errors of its expected value. For a correct
# implementation a deviation of 5 standard errors has probability below 6e-7 (normal approximation,
# counts in the thousands), so a correct answer essentially never fails, while the mistakes we target
# (a rate of 0.1 instead of 0.15, a 2% instead of a 10% share) sit at 20 standard errors or more.
K = 5.0


def within(count: int, total: int, p: float) -> tuple[bool, float]:
    """Is count/total within K binomial standard errors of p? Returns (ok, standard error of the rate)."""
    se = math.sqrt(p * (1 - p) / total)
    return abs(count / total - p) <= K * se, se


# -- quizzes: a hint per wrong key, never the answer ------------------------------------------------

@visible
@graded("architectures", points=2, requires_main=True,
        hint="Fill in both dictionaries: keep every key and use one of "
             "'encoder-only', 'encoder-decoder', 'decoder-only' as each value.")
def test_architecture_quizzes_are_filled_in(student):
    expect_quiz(student.ARCHITECTURE_FOR_TASK, "ARCHITECTURE_FOR_TASK", TASK_KEYS, KINDS)
    expect_quiz(student.ARCHITECTURE_OF_MODEL, "ARCHITECTURE_OF_MODEL", MODEL_KEYS, KINDS)


@visible
@graded("parameters", points=1, requires_main=True,
        hint="Keep every key and use 'parameter' or 'hyperparameter' as each value.")
def test_parameter_quiz_is_filled_in(student):
    expect_quiz(student.PARAMETER_OR_HYPERPARAMETER, "PARAMETER_OR_HYPERPARAMETER", PARAMETER_KEYS,
                ("parameter", "hyperparameter"))


TASK_HINTS = {
    "sentiment analysis": "a label for a whole text you already have: does the model need to write anything?",
    "named entity recognition": "a label for every token, using the words on both of its sides.",
    "word classification": "a label per word, read in its full context.",
    "extractive question answering": "the answer is a stretch copied from the given text: the model only marks where "
                                     "it starts and ends.",
    "translation": "a whole input sentence is read, then a new sequence in another language is written.",
    "summarization": "read a long input completely, then write a shorter new text.",
    "generative question answering": "read the question (and a text) completely, then write an answer in new words.",
    "open text generation": "continue a text one token at a time, with no separate input to encode.",
}
MODEL_HINTS = {
    "BERT": "trained with masked language modelling; its attention sees both sides.",
    "DistilBERT": "a smaller model trained to imitate BERT's outputs: same family.",
    "RoBERTa": "BERT's recipe, trained longer on more text: same family.",
    "course-mlm": "this course's masked language model: what does its attention see?",
    "BART": "trained to repair damaged text: one stack reads the whole damaged text, a second stack writes the "
            "repaired text token by token.",
    "T5": "trained with span corruption: sentinels in the input, the spans written out by a separate stack.",
    "course-t5": "this course's span-infilling model: what reads the corrupted text, and what writes the spans?",
    "GPT-2": "trained to predict the next token with a causal mask.",
    "BLOOM": "a large open model trained to predict the next token.",
    "LLaMA": "a family of open models trained to predict the next token.",
    "PaLM": "Google's large next-token predictor.",
    "course-lm": "this course's main model (the one 03 and 04 use): how does it write its answers?",
}
PARAMETER_HINTS = {
    "attention weights": "are they learned from the data by gradient descent, or chosen before training?",
    "feed-forward weights": "does the optimiser change them at every step?",
    "token embeddings": "are the vectors in the embedding table learned, or fixed by you?",
    "biases": "does loss.backward() give them a gradient?",
    "LayerNorm gains": "does the optimiser update them?",
    "learning rate": "does the optimiser update it, or do you give it to the optimiser?",
    "batch size": "is it learned, or set by you before training?",
    "number of layers": "can gradient descent change how many layers there are?",
    "number of heads": "is it a number you choose in the config?",
    "hidden size": "is it a setting in the config, or a learned value?",
    "dropout rate": "is it learned, or a setting that controls training?",
    "warmup steps": "does it belong to the model or to the training schedule?",
}


def grade_quiz(answers: dict, name: str, key: dict, hints: dict) -> None:
    wrong = [k for k, v in key.items() if answers.get(k) != v]
    if wrong:
        lines = "; ".join(f"{k!r}: {hints[k]}" for k in wrong)
        fail(f"{len(wrong)} of the {len(key)} answers in {name} are not right yet: {', '.join(map(repr, wrong))}.",
             hint=f"Think again about {lines}")


@graded("architectures", points=2, hint="Which family does each task typically use (section 3 of the notebook)?")
def test_architecture_for_each_task(student):
    answers = expect_quiz(student.ARCHITECTURE_FOR_TASK, "ARCHITECTURE_FOR_TASK", TASK_KEYS, KINDS)
    grade_quiz(answers, "ARCHITECTURE_FOR_TASK", ref.ARCHITECTURE_FOR_TASK, TASK_HINTS)


@graded("architectures", points=2, hint="Which family does each model belong to (section 3 of the notebook)?")
def test_architecture_of_each_model(student):
    answers = expect_quiz(student.ARCHITECTURE_OF_MODEL, "ARCHITECTURE_OF_MODEL", MODEL_KEYS, KINDS)
    grade_quiz(answers, "ARCHITECTURE_OF_MODEL", ref.ARCHITECTURE_OF_MODEL, MODEL_HINTS)


@graded("parameters", points=3, hint="Parameters are learned from data; hyperparameters are chosen before training.")
def test_parameter_or_hyperparameter(student):
    answers = expect_quiz(student.PARAMETER_OR_HYPERPARAMETER, "PARAMETER_OR_HYPERPARAMETER", PARAMETER_KEYS,
                          ("parameter", "hyperparameter"))
    grade_quiz(answers, "PARAMETER_OR_HYPERPARAMETER", ref.PARAMETER_OR_HYPERPARAMETER, PARAMETER_HINTS)


# -- attention_visibility ---------------------------------------------------------------------------

@visible
@graded("attention_visibility", points=3,
        hint="bidirectional: every query sees every key; causal: query i sees keys 0..i; cross: every decoder "
             "position sees every encoder position. Return a bool tensor of shape (n_query, n_key).")
def test_visibility_of_the_three_kinds(student):
    expect_close(student.attention_visibility("bidirectional", 4), torch.ones(4, 4, dtype=torch.bool),
                 "attention_visibility('bidirectional', 4)")
    expect_close(student.attention_visibility("causal", 5), torch.ones(5, 5, dtype=torch.bool).tril(),
                 "attention_visibility('causal', 5)", hint="Causal: True on and below the diagonal.")
    expect_close(student.attention_visibility("cross", 3, 6), torch.ones(3, 6, dtype=torch.bool),
                 "attention_visibility('cross', 3, 6) (3 decoder positions, 6 encoder positions)",
                 hint="Cross-attention has one row per decoder position (query) and one column per encoder position.")


@visible
@graded("attention_visibility", points=1, requires_main=True,
        hint="Raise ValueError for a kind other than 'bidirectional', 'causal' or 'cross', so that a typo such as "
             "'casual' fails loudly instead of silently giving a mask that lets every position see every other.")
def test_visibility_rejects_an_unknown_kind(student):
    try:
        student.attention_visibility("casual", 4)
    except StudentRaised as exc:
        expect(getattr(exc, "type_name", "") == "ValueError",
               f"attention_visibility('casual', 4) raised {getattr(exc, 'type_name', type(exc).__name__)}, "
               f"not ValueError.", hint="raise ValueError(f\"unknown kind: {kind}\")")
        return
    fail("attention_visibility('casual', 4) (a typo for 'causal') returned a value instead of raising ValueError.")


@graded("attention_visibility", points=1,
        hint="Return torch.bool tensors of shape (n_query, n_key), with n_key = n_query when it is not given.")
def test_visibility_matches_reference(student):
    for kind, nq, nk in (("bidirectional", 1, None), ("bidirectional", 7, None), ("bidirectional", 3, 5),
                         ("causal", 1, None), ("causal", 9, None), ("causal", 6, 6),
                         ("cross", 4, None), ("cross", 2, 9), ("cross", 8, 3)):
        args = (kind, nq) if nk is None else (kind, nq, nk)
        expected = ref.attention_visibility(*args)
        out = student.attention_visibility(*args)
        what = f"attention_visibility{args}"
        expect_tensor(out, what, shape=tuple(expected.shape),
                      hint="One row per query, one column per key; n_key defaults to n_query.")
        expect(out.dtype == torch.bool, f"{what} has dtype {out.dtype}; masks are torch.bool (True = may attend).",
               hint="Build it with dtype=torch.bool.")
        if kind == "causal" and not torch.equal(out, expected) and torch.equal(out, expected.T):
            fail(f"{what} is the transpose of the causal mask.",
                 hint="Rows are queries: query i sees keys 0..i, True on and below the diagonal (tril, not triu).")
        if kind == "causal" and not torch.equal(out, expected) and torch.equal(out, torch.ones(nq, nq, dtype=torch.bool).tril(-1)):
            fail(f"{what} leaves out the diagonal.", hint="A position may attend to itself: keep the diagonal.")
        expect_close(out, expected, what)


@graded("attention_visibility", points=1, requires_main=True,
        hint="Raise ValueError for a kind other than 'bidirectional', 'causal' "
             "or 'cross'.")
def test_visibility_rejects_unknown_kinds(student):
    try:
        student.attention_visibility("sideways", 3)
    except StudentRaised as exc:
        expect(getattr(exc, "type_name", "") == "ValueError",
               f"attention_visibility('sideways', 3) raised {getattr(exc, 'type_name', type(exc).__name__)}, "
               f"not ValueError.")
        return
    fail("attention_visibility('sideways', 3) returned a mask for a kind that does not exist.")


# -- mask_tokens -----------------------------------------------------------------------------------

@visible
@graded("mask_tokens", points=4,
        hint="Pick each non-special position with probability mlm_probability; labels hold the original id there and "
             "-100 elsewhere; of the picked, about 80% become mask_token_id, 10% a random id, 10% stay.")
def test_mask_tokens_structure(student):
    ids, special = mlm_example(0)
    result = student.mask_tokens(ids, 4, 60, special_tokens_mask=special, mlm_probability=0.3, generator=Seeded(1))
    inputs, labels, picked = check_mask_structure(ids, special, result, 4, 60, "mask_tokens(ids, ...)")
    expect(bool(picked.any()), "mask_tokens picked no position at all (every label is -100) at mlm_probability=0.3.",
           hint="Compare torch.rand(shape, generator=generator) with mlm_probability to pick positions.")
    expect(bool((inputs[picked] == 4).any()), "No picked position became the mask token.",
           hint="Most picked positions (80%) become mask_token_id.")


@visible
@graded("mask_tokens", points=2, requires_main=True,
        hint="Draw every random number from `generator` (torch.rand(..., generator=generator), "
             "torch.randint(..., generator=generator)) and work on a copy of input_ids.")
def test_mask_tokens_is_seeded_and_leaves_its_input(student):
    ids, special = mlm_example(2)
    remote = student.put(ids.clone())
    first = student.mask_tokens(remote, 4, 60, special_tokens_mask=special, generator=Seeded(3))
    expect(torch.equal(remote.fetch(), ids), "mask_tokens changed its input_ids in place.",
           hint="Start from input_ids.clone() (or torch.where) and change the copy.")
    second = student.mask_tokens(ids, 4, 60, special_tokens_mask=special, generator=Seeded(3))
    other = student.mask_tokens(ids, 4, 60, special_tokens_mask=special, generator=Seeded(4))
    expect(torch.equal(first[0], second[0]) and torch.equal(first[1], second[1]),
           "Two calls with generators seeded the same way gave different results.",
           hint="Pass generator=generator to every torch.rand / torch.randint / torch.bernoulli call.")
    expect(not torch.equal(first[1], other[1]), "Generators with different seeds picked exactly the same positions.",
           hint="The picked positions must come from random draws of `generator`.")


def within_standard_errors(count: int, total: int, p: float, k: float = 5.0) -> tuple[bool, float]:
    """Is the rate count/total within k binomial standard errors of p? (ok, the allowed difference). A correct
    procedure is further off than 5 standard errors less than once in a million draws."""
    allowed = k * math.sqrt(p * (1 - p) / total)
    return abs(count / total - p) <= allowed, allowed


@visible
@graded("mask_tokens", points=2,
        hint="Of the picked positions, 80% become mask_token_id, 10% a random id from "
             "torch.randint(0, vocab_size, ...), 10% keep their token: draw one uniform number u per position; "
             "u < 0.8: mask; 0.8 <= u < 0.9: random id; otherwise keep.")
def test_mask_tokens_splits_the_picked_positions_80_10_10(student):
    V = 20
    ids, special = mlm_example(5, batch=64, length=100, vocab=V)
    result = student.mask_tokens(ids, 4, V, special_tokens_mask=special, mlm_probability=0.5, generator=Seeded(6))
    inputs, labels, picked = check_mask_structure(ids, special, result, 4, V, "mask_tokens on 6,400 positions")
    m = int(picked.sum())
    expect(m > 0, "mask_tokens picked no position at all at mlm_probability=0.5.")
    masked = int((inputs[picked] == 4).sum())
    kept = int((inputs[picked] == ids[picked]).sum())
    # The original ids lie in [5, V), never the mask id 4; a random id in [0, V) still happens to be the mask id or
    # the original id with probability 1/V each, which moves a little of the 10% to the other two shares.
    shares = (("became the mask token", masked, 0.8 + 0.1 / V), ("kept their token", kept, 0.1 + 0.1 / V),
              ("became a random other token", m - masked - kept, 0.1 * (1 - 2 / V)))
    for what, count, p in shares:
        ok, allowed = within_standard_errors(count, m, p)
        expect(ok, f"Of {m} picked positions, {count} {what} ({count / m:.3f}); about {p:.3f} should "
                   f"(within {allowed:.3f}).")


def big_mlm_batch(seed: int):
    """400 x 250 = 100,000 positions, about 1% special, ids in [5, 50)."""
    return mlm_example(seed, batch=400, length=250, vocab=50)


@graded("mask_tokens", points=2,
        hint="Pick each non-special position independently with probability mlm_probability "
             "(torch.rand(shape, generator=generator) < mlm_probability).")
def test_mask_tokens_picks_at_the_right_rate(student):
    ids, special = big_mlm_batch(10)
    eligible = int((~special).sum())
    for p, seed in ((0.15, 11), (0.4, 12)):
        result = student.mask_tokens(ids, 4, 50, special_tokens_mask=special, mlm_probability=p, generator=Seeded(seed))
        inputs, labels, picked = check_mask_structure(ids, special, result, 4, 50, f"mask_tokens(mlm_probability={p})")
        count = int(picked.sum())
        ok, se = within(count, eligible, p)
        expect(ok, f"With mlm_probability={p}, {count} of {eligible} non-special positions were picked "
                   f"({count / eligible:.4f}); expected {p} within {K:g} standard errors ({K * se:.4f}).",
               hint="Each non-special position is picked with probability exactly mlm_probability (special positions "
                    "do not count, and are never picked).")


@graded("mask_tokens", points=2,
        hint="Of the picked positions, 80% become mask_token_id, 10% a random id, 10% keep their token: one uniform "
             "draw per position, split at 0.8 and 0.9.")
def test_mask_tokens_splits_80_10_10(student):
    ids, special = big_mlm_batch(20)
    V = 50
    result = student.mask_tokens(ids, 4, V, special_tokens_mask=special, mlm_probability=0.3, generator=Seeded(21))
    inputs, labels, picked = check_mask_structure(ids, special, result, 4, V, "mask_tokens on 100,000 positions")
    m = int(picked.sum())
    masked = int((inputs[picked] == 4).sum())
    kept = int((inputs[picked] == ids[picked]).sum())
    replaced = m - masked - kept
    # The original ids are never the mask id (they lie in [5, 50)). A random id in [0, V) equals the mask id
    # with probability 1/V and the original id with probability 1/V, so the observable shares are:
    shares = {"became the mask token": (masked, 0.8 + 0.1 / V), "kept their token": (kept, 0.1 + 0.1 / V),
              "became another token": (replaced, 0.1 * (1 - 2 / V))}
    # A random share drawn with probability 0.1 from the 20% left after masking: 2% random ids, 18% kept.
    tenth_of_the_rest = within(replaced, m, 0.02 * (1 - 2 / V))[0] and not within(replaced, m, 0.1 * (1 - 2 / V))[0]
    for what, (count, p) in shares.items():
        ok, se = within(count, m, p)
        expect(ok, f"Of {m} picked positions, {count} {what} ({count / m:.4f}); expected {p:.4f} within "
                   f"{K:g} standard errors ({K * se:.4f}).",
               hint="Only about 2% of the picked positions became a random id, and 18% kept their token: the random "
                    "10% was drawn with probability 0.1 from the 20% left after masking (0.2 * 0.1 = 2%). Draw one "
                    "uniform u per position instead: u < 0.8: mask; 0.8 <= u < 0.9: random id; else keep."
                    if tenth_of_the_rest else
                    "Every picked position became the mask token: only 80% should. Of the other 20%, half get a "
                    "random id and half keep their token (one uniform u per position; u < 0.8: mask; 0.8 <= u < 0.9: "
                    "random; else keep)." if masked == m else
                    "80% of the picked positions become the mask token, 10% a random id, 10% stay: draw one uniform "
                    "number u per position; u < 0.8: mask; 0.8 <= u < 0.9: random; else keep.")
    random_ids = inputs[picked & (inputs != 4) & (inputs != ids)]
    expect(len(set(random_ids.tolist())) >= 25,
           f"The {len(random_ids)} randomly replaced positions use only {len(set(random_ids.tolist()))} different ids.",
           hint="Draw each random id uniformly from [0, vocab_size) with torch.randint(0, vocab_size, ...).")


@graded("mask_tokens", points=2,
        hint="mlm_probability=0 picks nothing, 1 picks every non-special position; special_tokens_mask=None means no "
             "position is special; any shape of input_ids works.")
def test_mask_tokens_edge_cases(student):
    ids, special = mlm_example(30)
    none = student.mask_tokens(ids, 4, 60, special_tokens_mask=special, mlm_probability=0.0, generator=Seeded(1))
    _, labels, picked = check_mask_structure(ids, special, none, 4, 60, "mask_tokens(mlm_probability=0)")
    expect(not bool(picked.any()), "mlm_probability=0 still picked some positions.")
    every = student.mask_tokens(ids, 4, 60, special_tokens_mask=special, mlm_probability=1.0, generator=Seeded(2))
    _, labels, picked = check_mask_structure(ids, special, every, 4, 60, "mask_tokens(mlm_probability=1)")
    expect(bool((picked == ~special).all()), "mlm_probability=1 should pick every non-special position.",
           hint="Compare torch.rand(...) < mlm_probability (strictly less) and leave out only the special positions.")
    flat = ids[0]
    result = student.mask_tokens(flat, 4, 60, mlm_probability=1.0, generator=Seeded(3))
    _, labels, picked = check_mask_structure(flat, torch.zeros_like(flat, dtype=torch.bool), result, 4, 60,
                                             "mask_tokens of a 1-D sequence without special_tokens_mask")
    expect(bool(picked.all()), "Without special_tokens_mask and with mlm_probability=1 every position should be picked.",
           hint="special_tokens_mask=None means that no position is special.")
    int_special = special.long()
    result = student.mask_tokens(ids, 4, 60, special_tokens_mask=int_special, mlm_probability=0.5, generator=Seeded(4))
    check_mask_structure(ids, special, result, 4, 60, "mask_tokens with a 0/1 integer special_tokens_mask")


@graded("mask_tokens", points=2, requires_main=True,
        hint="Use `generator` for every draw, so that a seed fixes the result; "
             "never change input_ids in place.")
def test_mask_tokens_is_deterministic_on_large_batches(student):
    ids, special = big_mlm_batch(40)
    remote = student.put(ids.clone())
    a = student.mask_tokens(remote, 4, 50, special_tokens_mask=special, generator=Seeded(41))
    expect(torch.equal(remote.fetch(), ids), "mask_tokens changed its input_ids in place.",
           hint="Work on input_ids.clone().")
    b = student.mask_tokens(ids, 4, 50, special_tokens_mask=special, generator=Seeded(41))
    expect(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]),
           "The same seed gave different results.", hint="Pass generator=generator to every random call.")


# -- span_corrupt ----------------------------------------------------------------------------------

SENTINELS = list(range(5, 37))  # the course tokenizer's <extra_id_0> ... <extra_id_31>


@visible
@graded("span_corrupt", points=4,
        hint="inputs: the tokens with each span replaced by the next sentinel; targets: each sentinel followed by "
             "its span, then one closing sentinel; return two lists of ints.")
def test_span_corrupt_structure(student):
    tokens = list(range(100, 140))
    drawn = [read_span_pair(tokens, student.span_corrupt(tokens, SENTINELS, generator=Seeded(seed)), SENTINELS,
                            f"span_corrupt(40 tokens, seed {seed})") for seed in (0, 1, 2)]
    # A count that changes with the seed: each token corrupted on its own, not a fixed number of them.
    varying = len({sum(map(len, spans)) for spans in drawn}) > 1
    for spans in drawn:
        n_noise, n_spans = span_counts(40, 0.15, 3.0, len(SENTINELS))
        expect(sum(map(len, spans)) == n_noise and len(spans) == n_spans,
               f"For 40 tokens, noise_density 0.15 and mean_span_length 3 there should be {n_noise} corrupted tokens "
               f"in {n_spans} spans, but there are {sum(map(len, spans))} in {len(spans)}.",
               hint="The number of corrupted tokens changes from seed to seed, as when each token is corrupted on its "
                    "own with probability noise_density. The counts are fixed: exactly n_noise = round(n * "
                    "noise_density) tokens in n_spans = round(n_noise / mean_span_length) spans; only the spans' "
                    "lengths and places are random." if varying else
                    "n_noise = round(n * noise_density) (at least 1, at most n - 1); "
                    "n_spans = round(n_noise / mean_span_length) (at least 1).")


@visible
@graded("span_corrupt", points=2,
        hint="Draw the span lengths and the places of the spans at random from `generator`: spans may start anywhere, "
             "their lengths vary around mean_span_length, and two spans always have a kept token between them.")
def test_span_corrupt_draws_random_spans(student):
    tokens = list(range(100, 140))
    draws = 300
    results = student.construct("llmcourse.in_kernel.call_repeatedly", student.span_corrupt, draws, tokens,
                                SENTINELS, generator=Seeded(7))
    expect(isinstance(results, list) and len(results) == draws,
           f"{draws} calls of span_corrupt did not give {draws} results.")
    corrupted = [0] * len(tokens)
    patterns = set()
    for i, result in enumerate(results):
        spans = read_span_pair(tokens, result, SENTINELS, f"span_corrupt(40 tokens), draw {i + 1} of {draws}")
        patterns.add(tuple(map(len, spans)))
        for span in spans:
            for t in span:
                corrupted[t - 100] += 1
    # Correct procedures corrupt each token away from the ends in 6% to 16% of the draws (T5's original, which always
    # keeps the first token and corrupts the last, is the lowest), so 300 draws miss one with probability below 1e-7;
    # near the ends a correct procedure may reach a token rarely or never.
    never = [i for i in range(5, len(tokens) - 5) if corrupted[i] == 0]
    expect(not never, f"In {draws} draws, the tokens at positions {never[:6]} of 40 were never corrupted, though "
                      f"every token away from the ends should be, in some of the draws.",
           hint="Place the spans at random among the kept tokens (a random split of the kept tokens into the gaps "
                "before, between and after the spans), not always at the same places.")
    expect(len(patterns) > 1, f"In {draws} draws the spans always had the lengths {next(iter(patterns))}.",
           hint="Draw the span lengths at random (a random split of n_noise into n_spans positive parts): they "
                "average mean_span_length, they are not all equal to it.")


def _no_tie(x: float) -> bool:
    return abs(x - math.floor(x) - 0.5) > 1e-6


def span_cases():
    """(n, noise_density, mean_span_length) whose counts do not depend on how a .5 is rounded."""
    cases = []
    for n, d, m in [(2, 0.15, 3.0), (3, 0.15, 3.0), (5, 0.5, 1.0), (7, 0.15, 3.0), (12, 0.3, 2.0), (23, 0.15, 3.0),
                    (40, 0.15, 3.0), (63, 0.15, 3.0), (100, 0.25, 5.0), (150, 0.5, 1.0), (57, 0.9, 3.0),
                    (80, 0.15, 1.0), (200, 0.15, 3.0)]:
        n_noise, _ = span_counts(n, d, m, 32)
        if _no_tie(n * d) and _no_tie(n_noise / m):
            cases.append((n, d, m))
    return cases


def _span_calls(student, draws: int, sentinels: list[int], seed: int):
    results = {}
    for n, d, m in span_cases():
        tokens = [100 + (7 * i) % 900 for i in range(n)]  # distinct enough, never a sentinel
        out = student.construct("llmcourse.in_kernel.call_repeatedly", student.span_corrupt, draws, tokens,
                                sentinels, noise_density=d, mean_span_length=m, generator=Seeded(seed + n))
        results[(n, d, m)] = (tokens, out)
    return results


@graded("span_corrupt", points=2,
        hint="Every corrupted span becomes the next sentinel in `inputs`; `targets` lists each sentinel with its span, "
             "then a closing sentinel; spans never touch (a kept token between two spans) and never overlap.")
def test_span_corrupt_structure_on_many_draws(student):
    for sentinels in (list(range(5, 37)), [99 - i for i in range(32)]):
        for (n, d, m), (tokens, outs) in _span_calls(student, 20, sentinels, seed=50).items():
            for i, result in enumerate(outs):
                read_span_pair(tokens, result, sentinels,
                               f"span_corrupt({n} tokens, noise_density={d}, mean_span_length={m}), draw {i}")


@graded("span_corrupt", points=2,
        hint="n_noise = round(n * noise_density), kept between 1 and n - 1; n_spans = round(n_noise / mean_span_length), "
             "at least 1 and at most min(n_noise, n - n_noise, len(sentinel_ids) - 1).")
def test_span_corrupt_respects_the_noise_density(student):
    for (n, d, m), (tokens, outs) in _span_calls(student, 10, list(range(5, 37)), seed=60).items():
        n_noise, n_spans = span_counts(n, d, m, 32)
        for i, result in enumerate(outs):
            spans = read_span_pair(tokens, result, list(range(5, 37)), f"span_corrupt({n} tokens), draw {i}")
            got = sum(map(len, spans))
            expect(got == n_noise, f"span_corrupt of {n} tokens with noise_density={d} corrupted {got} tokens; "
                                   f"the rule gives round({n} * {d}) = {n_noise}.",
                   hint="Corrupt exactly n_noise = round(n * noise_density) tokens (at least 1, at most n - 1).")
            expect(len(spans) == n_spans, f"span_corrupt of {n} tokens ({n_noise} corrupted, mean_span_length={m}) "
                                          f"made {len(spans)} spans; the rule gives {n_spans}.",
                   hint="n_spans = round(n_noise / mean_span_length), at least 1, and no more than there are "
                        "sentinels to close them (len(sentinel_ids) - 1) or kept tokens to separate them.")


@graded("span_corrupt", points=2, requires_main=True,
        hint="Draw span lengths and places at random from `generator`: the same seed gives the same result, different "
             "draws put spans of different lengths in different places.")
def test_span_corrupt_is_random_and_seeded(student):
    tokens = list(range(200, 240))
    sentinels = list(range(5, 37))
    draw = lambda seed: student.construct("llmcourse.in_kernel.call_repeatedly", student.span_corrupt, 200,  # noqa: E731
                                          tokens, sentinels, generator=Seeded(seed))
    first, again = draw(70), draw(70)
    expect(first == again, "The same seed gave different corruptions.",
           hint="Draw every random number from `generator`.")
    covered = [0] * len(tokens)
    lengths = set()
    for result in first:
        spans = read_span_pair(tokens, result, sentinels, "span_corrupt(40 tokens)")
        lengths.add(tuple(len(s) for s in spans))
        for span in spans:
            for t in span:
                covered[t - 200] += 1
    never = [i for i in range(1, len(tokens) - 1) if covered[i] == 0]
    expect(not never, f"In 200 draws, the tokens at positions {never[:5]} of 40 were never corrupted.",
           hint="Spans may start anywhere: place them at random among the kept tokens.")
    expect(len(lengths) > 1, "In 200 draws every span had the same length pattern.",
           hint="Draw the span lengths at random (they average mean_span_length, they are not all equal to it).")
    expect(len({tuple(r[0]) for r in first}) > 100, "200 draws gave fewer than 100 different corruptions.",
           hint="Draw the places of the spans at random from `generator`.")


@graded("span_corrupt", points=2, requires_main=True,
        hint="Accept a list of ints, leave it unchanged, and raise ValueError for fewer than "
             "two tokens (a span and a kept token need two).")
def test_span_corrupt_leaves_its_input_and_rejects_short_lists(student):
    tokens = list(range(300, 330))
    remote = student.put(list(tokens))
    read_span_pair(tokens, student.span_corrupt(remote, list(range(5, 37)), generator=Seeded(80)), list(range(5, 37)),
                   "span_corrupt(30 tokens)")
    expect(remote.fetch() == tokens, "span_corrupt changed the list of token ids it was given.",
           hint="Build new lists for inputs and targets; do not pop from or assign into token_ids.")
    try:
        student.span_corrupt([300], list(range(5, 37)), generator=Seeded(81))
    except StudentRaised as exc:
        expect(getattr(exc, "type_name", "") == "ValueError",
               f"span_corrupt([300], ...) raised {getattr(exc, 'type_name', type(exc).__name__)}, not ValueError.")
        return
    fail("span_corrupt of a single token should raise ValueError (there is no way to keep one and corrupt one).")


# -- merge_spans -----------------------------------------------------------------------------------

@visible
@graded("merge_spans", points=3,
        hint="Walk through `inputs`; copy ordinary tokens, and replace each sentinel by the span that follows the "
             "same sentinel in `targets`.")
def test_merge_spans_small(student):
    original = [100, 101, 102, 103, 104, 105, 106, 107, 108, 109]
    cases = [([5, 102, 103, 6, 106, 107, 7], [5, 100, 101, 6, 104, 105, 7, 108, 109, 8],
              "spans at the start and at the end"),
             ([100, 101, 5, 105, 106, 107, 108, 109], [5, 102, 103, 104, 6], "one span in the middle")]
    for inputs, targets, what in cases:
        out = student.merge_spans(inputs, targets, SENTINELS)
        expect(isinstance(out, list) and out == original,
               f"merge_spans({inputs}, {targets}, ...) ({what}) returned {out}, but it should give {original}.")


@visible
@graded("merge_spans", points=2,
        hint="Recognise a sentinel by looking its id up in sentinel_ids (e.g. a dict from id to its number), not by "
             "its value: real T5 counts its sentinels downwards from 32099, and any list of ids may be given.")
def test_merge_spans_with_t5s_sentinel_ids(student):
    original = [100, 101, 102, 103, 104, 105, 106, 107, 108, 109]
    t5_sentinels = [32099 - i for i in range(32)]  # <extra_id_0> = 32099, <extra_id_1> = 32098, ...
    shuffled = [7, 3, 50, 11, 2, 40, 9, 60]
    cases = [([32099, 102, 103, 32098, 106, 107, 32097], [32099, 100, 101, 32098, 104, 105, 32097, 108, 109, 32096],
              t5_sentinels, "T5's sentinels 32099, 32098, ..."),
             ([100, 7, 103, 104, 3, 109], [7, 101, 102, 3, 105, 106, 107, 108, 50], shuffled,
              f"sentinel_ids = {shuffled}")]
    for inputs, targets, sentinels, what in cases:
        out = student.merge_spans(inputs, targets, sentinels)
        expect(isinstance(out, list) and out == original,
               f"merge_spans({inputs}, {targets}, ...) with {what} returned {out}, but it should give {original}.")


@graded("merge_spans", points=2,
        hint="Find each sentinel's span in `targets` by the sentinel's id (sentinel_ids may be in any order, and "
             "need not be consecutive numbers); then replace each sentinel in `inputs` with its span.")
def test_merge_spans_inverts_span_corruption(student):
    gen = generator(90)
    calls, originals = [], []
    for sentinels in (list(range(5, 37)), [32099 - i for i in range(32)], [7, 3, 50, 11, 2, 40, 9, 60]):
        others = [t for t in range(1, 400) if t not in sentinels]
        for _ in range(15):
            n = int(torch.randint(2, 60, (1,), generator=gen))
            tokens = [others[int(i)] for i in torch.randint(0, len(others), (n,), generator=gen)]
            d = float(torch.empty(1).uniform_(0.1, 0.6, generator=gen))
            inputs, targets = ref.span_corrupt(tokens, sentinels, noise_density=d, generator=gen)
            calls.append([[inputs, targets, sentinels], {}])
            originals.append(tokens)
    outs = student.construct("llmcourse.in_kernel.call_each", student.merge_spans, calls)
    for (args, _), out, original in zip(calls, outs, originals):
        if out != original:
            inputs, targets, sentinels = args
            hint = None
            if isinstance(out, list) and any(t in sentinels for t in out):
                hint = "The result still contains sentinels: replace each one with its span."
            elif isinstance(out, list) and len(out) < len(original):
                hint = ("Tokens are missing: is the last span (before the closing sentinel) or a span at the very start "
                        "or end left out?")
            fail(f"merge_spans({inputs}, {targets}, sentinel_ids={sentinels[:4]}...) returned {out}, "
                 f"but the original was {original}.", hint)


# -- causal_lm_labels ------------------------------------------------------------------------------

@visible
@graded("causal_lm_labels", points=3,
        hint="labels = a copy of input_ids with -100 wherever attention_mask is 0; do not shift them (the model does).")
def test_causal_lm_labels_small(student):
    ids = torch.tensor([[7, 8, 9, 10], [11, 12, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    expected = torch.tensor([[7, 8, 9, 10], [11, 12, -100, -100]])
    expect_close(student.causal_lm_labels(ids, mask), expected, "causal_lm_labels for [[7, 8, 9, 10], [11, 12, pad, pad]]")


@visible
@graded("causal_lm_labels", points=1, requires_main=True,
        hint="Use masked_fill (which returns a new tensor), not masked_fill_ (which changes input_ids itself), or "
             "work on input_ids.clone(): the batch still needs its padding ids.")
def test_causal_lm_labels_leaves_input_ids_unchanged(student):
    ids = torch.tensor([[7, 8, 9, 10], [11, 12, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    remote = student.put(ids.clone())
    student.causal_lm_labels(remote, mask)
    expect(torch.equal(remote.fetch(), ids), "causal_lm_labels changed input_ids in place (the padding became -100 "
                                             "in input_ids too).")


@graded("causal_lm_labels", points=3,
        hint="Copy input_ids and set -100 where attention_mask is 0 (0/1 integers or booleans, padding on either "
             "side); do not shift, do not change input_ids in place.")
def test_causal_lm_labels_matches_reference(student):
    gen = generator(100)
    ids = torch.randint(3, 500, (4, 12), generator=gen)
    right = torch.ones(4, 12, dtype=torch.long)
    right[1, 7:] = 0
    right[3, 2:] = 0
    left = right.flip(1)
    for mask, what in ((right, "right padding"), (left, "left padding"), (right.bool(), "a boolean attention_mask")):
        remote = student.put(ids.clone())
        out = student.causal_lm_labels(remote, mask)
        expected = ref.causal_lm_labels(ids, mask)
        if isinstance(out, torch.Tensor) and out.shape == ids.shape and torch.equal(out[:, :-1], expected[:, 1:]):
            fail(f"causal_lm_labels ({what}) shifted the labels.",
                 hint="Leave the labels aligned with input_ids: transformers' causal LMs shift them inside the loss.")
        expect_tensor(out, f"causal_lm_labels ({what})", shape=(4, 12))
        expect(out.dtype == torch.long, f"causal_lm_labels ({what}) has dtype {out.dtype}; labels are torch.long.")
        expect_close(out, expected, f"causal_lm_labels ({what})",
                     mistakes=[(ids, "The padding is not replaced: these labels are input_ids as they are. Set -100 "
                                     "where attention_mask is 0, so that the loss ignores the padding."),
                               (lambda: ids.masked_fill(mask.bool(), -100),
                                "The -100s are at the real tokens and the padding keeps its ids: the mask is the "
                                "wrong way round. Set -100 where attention_mask is 0 (the padding), not where it is "
                                "1.")])
        expect(torch.equal(remote.fetch(), ids), "causal_lm_labels changed input_ids in place.",
               hint="Use masked_fill (not masked_fill_) or work on input_ids.clone().")


# -- next_token_loss -------------------------------------------------------------------------------

@visible
@graded("next_token_loss", points=4,
        hint="Position t predicts token t + 1: compare logits[:, :-1] with labels[:, 1:] by cross-entropy, "
             "ignoring the labels that are -100, averaged over the remaining tokens.")
def test_next_token_loss_equals_a_causal_lm_loss(student):
    logits, labels, loss = gpt2_loss_case(0)
    expect_close(student.next_token_loss(logits, labels), loss, "next_token_loss(logits, labels) (vs GPT2LMHeadModel's .loss)")


def _loss_mistakes(logits, labels):
    V = logits.shape[-1]

    def per_row():
        rows = [F.cross_entropy(logits[b, :-1], labels[b, 1:], ignore_index=-100) for b in range(len(labels))]
        return torch.stack(rows).mean()

    return [
        (lambda: F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100),
         "The loss is not shifted: the logits at position t predict the label at position t + 1 "
         "(logits[:, :-1] against labels[:, 1:])."),
        (lambda: F.cross_entropy(logits[:, 1:].reshape(-1, V), labels[:, :-1].reshape(-1), ignore_index=-100),
         "The shift goes the wrong way: drop the last logit and the first label, not the other way round."),
        (per_row, "This is the mean of per-sequence means; average over all non-ignored tokens of the batch at once."),
        (lambda: F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].clamp(min=0).reshape(-1)),
         "The padding (-100) is not ignored."),
        (lambda: F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100,
                                 reduction="sum"), "This is the sum over tokens; take the mean."),
    ]


@graded("next_token_loss", points=3,
        hint="Cross-entropy of logits[:, :-1] against labels[:, 1:], ignoring -100, averaged over all counted tokens "
             "of the batch; keep the logits' dtype.")
def test_next_token_loss_matches_reference(student):
    gen = generator(110)
    for B, L, V, dtype in ((2, 6, 11, torch.float32), (5, 13, 40, torch.float32), (3, 9, 17, torch.float64)):
        logits = (torch.randn(B, L, V, generator=gen, dtype=torch.float64) * 2).to(dtype)
        labels = torch.randint(0, V, (B, L), generator=gen)
        lengths = torch.randint(2, L + 1, (B,), generator=gen)
        lengths[0] = L
        labels = labels.masked_fill(torch.arange(L) >= lengths[:, None], -100)
        labels[-1, 0] = -100  # an ignored label at the start, too
        out = student.next_token_loss(logits, labels)
        expected = ref.next_token_loss(logits, labels)
        what = f"next_token_loss for logits of shape {(B, L, V)} ({dtype})"
        expect_tensor(out, what, shape=(), hint="Return a 0-dimensional tensor (the loss you can call .backward() on).")
        expect_close(out, expected, what, check_dtype=True, mistakes=_loss_mistakes(logits, labels))


@graded("next_token_loss", points=2,
        hint="Only tokens whose label is not -100 count, and the mean is over all of them in the batch.")
def test_next_token_loss_equals_gpt2_loss_with_uneven_padding(student):
    from llmcourse.checking.shared.variants import gpt2_loss_case

    for seed in (1, 2):
        logits, labels, loss = gpt2_loss_case(seed)
        compare_to = student.next_token_loss(logits, labels)
        expect_close(compare_to, loss, f"next_token_loss vs GPT2LMHeadModel's .loss (seed {seed})")


# -- build_model -----------------------------------------------------------------------------------

@visible
@graded("build_model", points=3,
        hint="encoder-only: BertForMaskedLM(BertConfig(...)); encoder-decoder: T5ForConditionalGeneration(T5Config(...)); "
             "decoder-only: GPT2LMHeadModel(GPT2Config(...)). Build from a config: from_pretrained would download.")
def test_build_model_gives_each_kinds_class(student):
    for kind, cls in MODEL_CLASSES.items():
        model = student.build_model(kind, 50)
        name = getattr(model, "type_name", type(model).__name__)
        expect(name.endswith("." + cls), f"build_model({kind!r}, 50) returned a {name.rsplit('.', 1)[-1]}, not a {cls}.")


# Where each kind's config keeps its width, depth and number of heads.
CONFIG_SIZES = {"encoder-only": ("hidden_size", "num_hidden_layers", "num_attention_heads"),
                "encoder-decoder": ("d_model", "num_layers", "num_heads"),
                "decoder-only": ("n_embd", "n_layer", "n_head")}


@visible
@graded("build_model", points=2,
        hint="Pass vocab_size, d_model, n_layers and n_heads on to the config of every kind. T5 also needs "
             "num_decoder_layers=n_layers (it has a decoder stack of its own) and d_kv = d_model // n_heads (the "
             "size of one head; its default, 64, ignores d_model).")
def test_build_model_passes_its_sizes_to_the_config(student):
    vocab, d, layers, heads = 45, 32, 3, 2
    for kind in KINDS:
        what = f"build_model({kind!r}, {vocab}, d_model={d}, n_layers={layers}, n_heads={heads})"
        model = student.build_model(kind, vocab, d_model=d, n_layers=layers, n_heads=heads)
        name = getattr(model, "type_name", type(model).__name__)
        expect(name.endswith("." + MODEL_CLASSES[kind]),
               f"{what} returned a {name.rsplit('.', 1)[-1]}, not a {MODEL_CLASSES[kind]}.")
        config = model.config.to_dict()
        width, depth, n_heads = CONFIG_SIZES[kind]
        got = (config.get("vocab_size"), config.get(width), config.get(depth), config.get(n_heads))
        expect(got == (vocab, d, layers, heads),
               f"{what} has a config with vocab_size={got[0]}, {width}={got[1]}, {depth}={got[2]}, {n_heads}={got[3]}.")
        if kind == "encoder-decoder":
            expect(config.get("num_decoder_layers") == layers,
                   f"{what} has {config.get('num_decoder_layers')} decoder layers, not {layers}.")
            expect(config.get("d_kv") == d // heads,
                   f"{what} has heads of size d_kv={config.get('d_kv')}; {heads} heads sharing d_model={d} have "
                   f"{d // heads} dimensions each.")


@visible
@graded("build_model", points=1, requires_main=True,
        hint="End with `raise ValueError(...)` for a kind that is not one of the three, so that a misspelt kind "
             "fails loudly instead of returning None.")
def test_build_model_rejects_an_unknown_kind(student):
    try:
        model = student.build_model("decoder-encoder", 30)
    except StudentRaised as exc:
        expect(getattr(exc, "type_name", "") == "ValueError",
               f"build_model('decoder-encoder', 30) raised {getattr(exc, 'type_name', type(exc).__name__)}, "
               f"not ValueError.")
        return
    fail(f"build_model('decoder-encoder', 30) returned {'None' if model is None else 'a model'} for a kind that does "
         f"not exist, instead of raising ValueError.")


SIZE_FIELDS = {"encoder-only": ("hidden_size", "num_hidden_layers", "num_attention_heads"),
               "encoder-decoder": ("d_model", "num_layers", "num_heads"),
               "decoder-only": ("n_embd", "n_layer", "n_head")}


@graded("build_model", points=1,
        hint="Pass vocab_size, d_model, n_layers and n_heads on to the config (T5: d_model, d_kv = d_model // n_heads, "
             "num_layers = num_decoder_layers = n_layers, num_heads, decoder_start_token_id=0, without which T5 cannot turn "
             "labels into decoder inputs); the model's logits cover the whole vocabulary.")
def test_build_model_follows_its_arguments(student):
    for kind in KINDS:
        for vocab, d, layers, heads in ((70, 32, 3, 2), (45, 24, 1, 6)):
            what = f"build_model({kind!r}, {vocab}, d_model={d}, n_layers={layers}, n_heads={heads})"
            model = student.build_model(kind, vocab, d_model=d, n_layers=layers, n_heads=heads)
            expect(model.type_name.endswith("." + MODEL_CLASSES[kind]), f"{what} is not a {MODEL_CLASSES[kind]}.",
                   "BertModel is BERT's encoder alone, without the masked-language-model head: it gives hidden "
                   "states, not logits over the vocabulary. Build BertForMaskedLM(BertConfig(...)) instead."
                   if model.type_name.endswith(".BertModel") else None)
            config = model.config.to_dict()
            width, depth, n_heads = SIZE_FIELDS[kind]
            expect(config.get("vocab_size") == vocab, f"{what}: vocab_size is {config.get('vocab_size')}, not {vocab}.")
            expect((config.get(width), config.get(depth), config.get(n_heads)) == (d, layers, heads),
                   f"{what}: the config has {width}={config.get(width)}, {depth}={config.get(depth)}, "
                   f"{n_heads}={config.get(n_heads)}.",
                   f"The number of heads is fixed: {n_heads}={config.get(n_heads)} whatever n_heads is given. Pass "
                   f"n_heads on to the config ({n_heads}=n_heads)."
                   if (config.get(width), config.get(depth)) == (d, layers) and config.get(n_heads) != heads else None)
            if kind == "encoder-decoder":
                expect(config.get("num_decoder_layers") == layers and config.get("d_kv", 0) * heads == d,
                       f"{what}: num_decoder_layers={config.get('num_decoder_layers')}, d_kv={config.get('d_kv')}.",
                       hint="T5 has as many decoder layers as encoder layers here, and d_kv = d_model // n_heads.")
            ids = torch.randint(5, vocab, (2, 7), generator=generator(120))
            extra = {"labels": ids[:, :4]} if kind == "encoder-decoder" else {}
            out = model(input_ids=ids, **extra)
            expect_tensor(out.logits, f"the logits of {what}", shape=(2, 4 if extra else 7, vocab),
                          hint="Build the model with a language-modelling head over the vocabulary.")


@graded("build_model", points=1, requires_main=True,
        hint="Raise ValueError for a kind that is not one of the three.")
def test_build_model_rejects_unknown_kinds(student):
    try:
        student.build_model("decoder-encoder", 30)
    except StudentRaised as exc:
        expect(getattr(exc, "type_name", "") == "ValueError",
               f"build_model('decoder-encoder', 30) raised {getattr(exc, 'type_name', type(exc).__name__)}, "
               f"not ValueError.")
        return
    fail("build_model('decoder-encoder', 30) returned a model for a kind that does not exist.")


# -- training_step ---------------------------------------------------------------------------------

@visible
@graded("training_step", points=3,
        hint="loss = the model's objective on the batch; optimizer.zero_grad(); loss.backward(); optimizer.step(); "
             "return loss.item().")
def test_training_step_on_a_small_gpt2(student):
    check_training(student, "decoder-only", seed=0, steps=1, what="training_step on a tiny GPT-2")


@visible
@graded("training_step", points=2,
        hint="T5 computes its own loss from batch['labels'] (it shifts them right to make the decoder's inputs): "
             "model(**batch).loss. Call optimizer.zero_grad() at every step, or the gradients of earlier steps pile "
             "up.")
def test_training_step_on_a_small_t5(student):
    check_training(student, "encoder-decoder", seed=20, steps=2, what="two training_steps of a tiny T5")


@graded("training_step", points=1,
        hint="For every kind: loss of the model's own objective; optimizer.zero_grad(); loss.backward(); "
             "optimizer.step(); return loss.item().")
def test_training_step_on_all_three_kinds(student):
    for i, kind in enumerate(KINDS):
        seed = 130 + 10 * i
        try:
            check_training(student, kind, seed=seed, steps=2, what=f"two training_steps of a tiny {kind} model")
        except CheckFailed as failure:
            named = _training_mistake(kind, seed, failure.message)
            if named is None:
                raise
            raise CheckFailed(failure.message, named) from None


def _unshifted_loss(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)


def _labels_as_decoder_inputs_loss(model, batch):
    labels = batch["labels"]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   decoder_input_ids=labels.clamp(min=0)).logits
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


_TRAINING_MISTAKES = {
    "decoder-only": (_unshifted_loss,
                     "The decoder-only loss is not shifted: the logits at position t predict token t + 1, so compare "
                     "logits[:, :-1] with labels[:, 1:] (or pass labels= to GPT-2, which shifts them itself)."),
    "encoder-decoder": (_labels_as_decoder_inputs_loss,
                        "T5 was fed its labels as decoder inputs, so each position sees the token it must predict. "
                        "Pass labels= and let T5 shift them right to make the decoder's inputs: model(**batch).loss."),
}


def _training_mistake(kind: str, seed: int, message: str) -> str | None:
    """The hint of a known mistake whose first-step loss is what the student's training_step returned, or None."""
    found = re.search(r"step 1 returned the loss (\S+), but", message)
    if found is None or kind not in _TRAINING_MISTAKES:
        return None
    loss_fn, hint = _TRAINING_MISTAKES[kind]
    from llmcourse.checking.shared.variants import reference_steps

    wrong = reference_steps(kind, tiny_weights(kind, seed), tiny_batch(kind, seed + 1), 1, 0.5, loss_fn)[0][0]
    got = float(found.group(1))
    return hint if abs(got - wrong) <= 1e-4 * max(1.0, abs(wrong)) else None


@graded("training_step", points=1, requires_main=True,
        hint="Start with model.train(): a model left in evaluation mode (after measuring it, say) would train "
             "with its dropout switched off.")
def test_training_step_puts_the_model_in_training_mode(student):
    model = student_tiny_model(student, "decoder-only", tiny_weights("decoder-only", 150))
    model.eval()
    optimizer = student.construct("torch.optim.SGD", model.parameters(), lr=0.1)
    student.training_step(model, tiny_batch("decoder-only", 151), optimizer)
    expect(model.training is True, "After training_step the model is still in evaluation mode (model.training is "
                                   "False): its dropout layers did nothing during the step.")


# -- train_bpe -------------------------------------------------------------------------------------

# The notebook's worked example (section 8.3), worked out by hand: five pairs occur twice; ties go to the pair with
# the smallest id on the left (a < b < n < t < Ġ), then on the right.
WORKED_CORPUS = ["to be or not to be", "banana"]
WORKED_MERGES = [("a", "n"), ("b", "e"), ("t", "o"), ("Ġ", "be"), ("b", "an")]
# The most frequent pairs before each of those merges, all tied: a different choice among them is a tie broken
# another way.
WORKED_TIES = [{("a", "n"), ("n", "a"), ("b", "e"), ("t", "o"), ("Ġ", "b")}, {("b", "e"), ("t", "o"), ("Ġ", "b")},
               {("t", "o"), ("Ġ", "be")}, {("Ġ", "be")},
               {("Ġ", "o"), ("o", "r"), ("Ġ", "n"), ("n", "o"), ("o", "t"), ("Ġ", "to"), ("b", "an"), ("an", "an"),
                ("an", "a")}]
TIE_HINT = ("Among the most frequent pairs, take the one whose left token has the smallest id, then the smallest id on "
            "the right (the id in the vocabulary: a single byte symbol in character order, merged tokens after them, in "
            "the order they were made). Not alphabetical order, not the pair seen first, not the largest id.")
SPACE_HINT = ("Keep the spaces: pre_split(text) cuts the text just before every space, and each space stays at the "
              "front of the piece that follows it (its symbol is 'Ġ').")


def byte_alphabet() -> list[str]:
    """The 256 byte symbols of GPT-2's table, in character order (tokenizers' ByteLevel alphabet)."""
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def library_pre_tokenizer():
    """The notebook's pre-split (cut before every space) and byte table, written as tokenizers pre-tokenizers."""
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.Split(" ", behavior="merged_with_next"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def library_bpe(texts: list[str], vocab_size: int, special_tokens=()) -> tuple[dict, list]:
    """tokenizers' BpeTrainer with the notebook's settings: (vocab, merges)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = library_pre_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    merges = [tuple(pair) for pair in json.loads(tokenizer.to_str())["model"]["merges"]]
    return tokenizer.get_vocab(), merges


def read_bpe(result, what: str) -> tuple[dict, list]:
    """train_bpe's answer as (vocab, merges as a list of pairs of strings), after checking its form."""
    if not isinstance(result, tuple) or len(result) != 2:
        fail(f"{what} should return a pair (vocab, merges), but it returned {type(result).__name__}.",
             hint="End with `return vocab, merges`.")
    vocab, merges = result
    if not isinstance(vocab, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()):
        fail(f"{what}: vocab should be a dict from token strings to int ids.", hint="vocab[token] = id, e.g. vocab['Ġthe'] = 300.")
    if not isinstance(merges, (list, tuple)) or not all(
            isinstance(m, (list, tuple)) and len(m) == 2 and all(isinstance(s, str) for s in m) for m in merges):
        fail(f"{what}: merges should be a list of pairs (a, b) of strings.", hint="merges.append((a, b)) at each merge.")
    return vocab, [tuple(m) for m in merges]


def first_difference(got: list, expected: list) -> int:
    return next((i for i, (g, e) in enumerate(zip(got, expected)) if g != e), min(len(got), len(expected)))


def describe_merges(got: list, expected: list, what: str) -> str:
    k = first_difference(got, expected)
    if k == len(expected):
        return f"{what} made {len(got)} merges; {len(expected)} were expected (the first {k} are right)."
    if k == len(got):
        return f"{what} made only {len(got)} merges; {len(expected)} were expected (those {k} are right)."
    return (f"{what}: merge number {k + 1} is {got[k]}, but it should be {expected[k]} (the {k} before it are "
            f"right).")


def merge_hint(got: list, expected: list, texts: list[str]) -> str | None:
    """A hint for the mistakes that show in the merges themselves, without knowing the counts."""
    k = first_difference(got, expected)
    if k == len(expected) < len(got):
        return ("The merges are right, but there are too many: the vocab_size tokens are the 256 byte tokens, the "
                "special tokens and one token per merge, so make vocab_size - 256 - len(special_tokens) merges (the "
                "special tokens count too).")
    if k < len(got) and any(" " in t for t in texts) and not any("Ġ" in a + b for a, b in got) \
            and any("Ġ" in a + b for a, b in expected[:len(got)]):
        return SPACE_HINT
    if k < len(got) and "Ġ" in (got[k][0] + got[k][1])[1:]:
        return ("The merged token has a space inside it, so its pair spans two pieces: count pairs only inside a "
                "piece of pre_split(text), never from the end of one piece to the start of the next.")
    if k < len(got) and got[k] in got[:k]:
        return ("The same pair was merged twice: replace every occurrence of the pair, in every piece, scanning "
                "from left to right, so that none is left to be counted again.")
    return None


@visible
@graded("train_bpe", points=3,
        hint="Count the pairs of neighbouring tokens inside each piece, weighted by how often the piece occurs; merge "
             "the most frequent (ties: smallest left id, then smallest right id); replace every occurrence; repeat.")
def test_train_bpe_worked_example(student):
    # "ab cd cd": ' cd' occurs twice, so (Ġ, c) and (c, d) occur twice each, (a, b) once; the tie goes to c < Ġ.
    vocab, merges = read_bpe(student.train_bpe(["ab cd cd"], 257), "train_bpe(['ab cd cd'], 257)")
    weighting = ("Count each pair once for every time its piece occurs: ' cd' occurs twice, so its pairs (Ġ, c) and "
                 "(c, d) count 2, and (a, b) only 1.")
    expect(merges == [("c", "d")], f"train_bpe(['ab cd cd'], 257) made the merges {merges}, not [('c', 'd')]: the "
                                   f"piece ' cd' occurs twice.",
           hint="(Ġ, c) and (c, d) were equally frequent. " + TIE_HINT if merges == [("Ġ", "c")] else weighting)
    what = f"train_bpe({WORKED_CORPUS}, 261)"
    vocab, merges = read_bpe(student.train_bpe(WORKED_CORPUS, 261), what)
    if merges != WORKED_MERGES:
        k = first_difference(merges, WORKED_MERGES)
        hint = merge_hint(merges, WORKED_MERGES, WORKED_CORPUS)
        if hint is None and k < min(len(merges), len(WORKED_MERGES)) and merges[k] in WORKED_TIES[k]:
            hint = f"{merges[k]} and {WORKED_MERGES[k]} were equally frequent at that point. " + TIE_HINT
        fail(describe_merges(merges, WORKED_MERGES, what) + " (This is the worked example of section 8.3.)", hint)
    expected = {a + b: 256 + i for i, (a, b) in enumerate(WORKED_MERGES)}
    got = {token: vocab.get(token) for token in expected}
    expect(got == expected, f"{what}: the merged tokens have the ids {got}, not {expected}.",
           hint="Each new token a + b gets the next id, len(vocab), after the 256 byte symbols (ids 0 to 255).")
    expect(len(vocab) == 261, f"{what} returned a vocabulary of {len(vocab)} tokens, not 261.",
           hint="Stop when len(vocab) reaches vocab_size: 256 byte symbols and 5 merged tokens.")


@visible
@graded("train_bpe", points=1,
        hint="The vocabulary starts with the special tokens (ids 0, 1, ... in the order given), then all 256 byte "
             "symbols in character order (sorted(BYTE_SYMBOL.values())), then the merged tokens; vocab_size counts all "
             "of them.")
def test_train_bpe_reserves_the_first_ids_for_special_tokens(student):
    specials = ("<pad>", "<s>", "</s>")
    what = f"train_bpe({WORKED_CORPUS}, 264, special_tokens={specials})"
    vocab, merges = read_bpe(student.train_bpe(WORKED_CORPUS, 264, special_tokens=specials), what)
    got = {t: vocab.get(t) for t in specials}
    expect(got == {"<pad>": 0, "<s>": 1, "</s>": 2}, f"{what}: the special tokens have the ids {got}, not 0, 1, 2.",
           hint="Put the special tokens in the vocabulary first, so that <pad> is id 0 whatever the corpus.")
    alphabet = byte_alphabet()
    missing = [s for s in alphabet if s not in vocab]
    expect(not missing, f"{what}: {len(missing)} of the 256 byte symbols are missing from the vocabulary, e.g. "
                        f"{missing[:5]}.",
           hint="Put all 256 byte symbols in the vocabulary, even those the corpus never uses: then any text at all "
                "can be encoded.")
    wrong = [(s, vocab[s], 3 + i) for i, s in enumerate(alphabet) if vocab[s] != 3 + i]
    expect(not wrong, f"{what}: the byte symbols should have the ids 3 to 258 in character order, but e.g. "
                      f"{wrong[0][0]!r} has id {wrong[0][1]}, not {wrong[0][2]}." if wrong else "",
           hint="Add sorted(BYTE_SYMBOL.values()) after the special tokens: '!' first, 'Ġ' (the space) after 'ÿ'.")
    expect(merges == WORKED_MERGES, describe_merges(merges, WORKED_MERGES, what),
           hint="Special tokens shift every id by the same amount, so the merges stay those of the worked example.")
    expect(len(vocab) == 264 and vocab.get("ban") == 263,
           f"{what}: {len(vocab)} tokens, and 'ban' has the id {vocab.get('ban')} (expected 264 tokens, 'ban' = 263).")


SMALL_CORPUS = ["The cat sat on the mat.", "The dog sat on the log.", "A cat and a dog met  at the café.",
                "the end"]


@visible
@graded("train_bpe", points=2,
        hint="Follow the contract of section 8.3 exactly; it is what tokenizers' BpeTrainer does with the settings "
             "given there.")
def test_train_bpe_equals_the_tokenizers_trainer(student):
    for vocab_size, specials in ((300, ()), (290, ("<unk>", "<mask>"))):
        what = f"train_bpe(SMALL_CORPUS, {vocab_size}, special_tokens={specials})"
        vocab, merges = read_bpe(student.train_bpe(SMALL_CORPUS, vocab_size, special_tokens=specials), what)
        expected_vocab, expected = library_bpe(SMALL_CORPUS, vocab_size, specials)
        if merges != expected:
            fail(describe_merges(merges, expected, what) + " (Compared with tokenizers' BpeTrainer.)",
                 merge_hint(merges, expected, SMALL_CORPUS))
        expect(vocab == expected_vocab, f"{what}: the merges are right, but the vocabulary differs from "
                                        f"BpeTrainer's in {sum(vocab.get(t) != i for t, i in expected_vocab.items())} "
                                        f"tokens.",
               hint="Special tokens first, then the 256 byte symbols in character order, then each merged token with "
                    "the next id.")


def random_corpus(seed: int) -> list[str]:
    """A small random corpus: words over a few letters (sometimes beyond ASCII), single and double spaces."""
    rng = random.Random(seed)
    letters = rng.choice(["ab", "abc", "abcde", "xyzé", "abcdefghij", "ab✓", "helo wrd"])
    texts = []
    for _ in range(rng.randint(2, 25)):
        words = ["".join(rng.choice(letters.replace(" ", "")) for _ in range(rng.randint(1, 6)))
                 for _ in range(rng.randint(1, 8))]
        text = "".join(rng.choice([" ", " ", " ", "  "]) + w for w in words)
        texts.append(text.lstrip(" ") if rng.random() < 0.6 else text)
    return texts


def explain_training(texts: list[str], vocab_size: int, specials, got: list, expected: list) -> str | None:
    """Why the merges differ from the right ones, replayed with the reference up to the first difference."""
    hint = merge_hint(got, expected, texts)
    k = first_difference(got, expected)
    if hint is not None or k >= len(got) or k >= len(expected):
        return hint
    vocab, merges = ref.train_bpe(texts, len(specials) + 256 + k, specials)
    counts: dict[tuple, int] = {}
    for text in texts:
        for piece in ref.pre_split(text):
            symbols = ref.to_symbols(piece)
            for a, b in merges:
                symbols = ref._merge_pair(symbols, a, b)
            for pair in zip(symbols, symbols[1:]):
                counts[pair] = counts.get(pair, 0) + 1
    mine, best = counts.get(got[k], 0), counts.get(expected[k], 0)
    if mine == best:
        return f"{got[k]} and {expected[k]} were equally frequent ({best} times) at that point. " + TIE_HINT
    if mine == 0:
        return (f"{got[k]} is not a pair of neighbouring tokens in any piece at that point: count pairs inside each "
                f"piece, after replacing every occurrence of the earlier merges.")
    return (f"{got[k]} occurs {mine} times at that point, but {expected[k]} occurs {best} times: count each pair once "
            f"for every time its piece occurs in the corpus (a piece seen 3 times counts its pairs 3 times).")


@graded("train_bpe", points=2,
        hint="Follow the contract of section 8.3 exactly: pieces from pre_split, pairs counted inside pieces and "
             "weighted by how often each piece occurs, ties to the smallest ids, every occurrence merged.")
def test_train_bpe_matches_tokenizers_on_random_corpora(student):
    for seed in range(6):
        texts = random_corpus(300 + seed)
        specials = [(), ("<pad>",), ("<s>", "</s>", "<unk>")][seed % 3]
        vocab_size = len(specials) + 256 + 10 + 7 * seed
        what = f"train_bpe on a random corpus of {len(texts)} texts (vocab_size={vocab_size}, special_tokens={specials})"
        vocab, merges = read_bpe(student.train_bpe(texts, vocab_size, special_tokens=specials), what)
        expected_vocab, expected = library_bpe(texts, vocab_size, specials)
        if merges != expected:
            fail(describe_merges(merges, expected, what) + f" The corpus: {texts[:3]}...",
                 explain_training(texts, vocab_size, specials, merges, expected))
        expect(vocab == expected_vocab, f"{what}: the merges are right, but the vocabulary is not BpeTrainer's.",
               hint="Special tokens first, then the 256 byte symbols in character order, then each merged token.")


@graded("train_bpe", points=1,
        hint="Merge while len(vocab) < vocab_size and some piece still has two tokens; if the special tokens and the "
             "256 bytes already fill vocab_size, make no merge.")
def test_train_bpe_stops_at_the_right_time(student):
    cases = [(WORKED_CORPUS, 100, ("<pad>",)), (WORKED_CORPUS, 1000, ()), (["aaaa aaa", "  a"], 300, ("<s>",)),
             ([], 300, ()), (["", " ", "x"], 270, ())]
    for texts, vocab_size, specials in cases:
        what = f"train_bpe({texts}, {vocab_size}, special_tokens={specials})"
        vocab, merges = read_bpe(student.train_bpe(texts, vocab_size, special_tokens=specials), what)
        expected_vocab, expected = library_bpe(texts, vocab_size, specials)
        if merges != expected:
            fail(describe_merges(merges, expected, what), explain_training(texts, vocab_size, specials, merges, expected))
        expect(vocab == expected_vocab, f"{what} returned a vocabulary of {len(vocab)} tokens; BpeTrainer's has "
                                        f"{len(expected_vocab)}.")


@graded("train_bpe", points=1,
        hint="On real text too: many ties between pairs seen equally often, pieces seen many times.")
def test_train_bpe_matches_tokenizers_on_stories(student):
    from llmcourse.assets import load_task

    texts = load_task("stories")["train"]["text"][1000:1060]
    what = "train_bpe(60 training stories, 340, special_tokens=('<pad>',))"
    vocab, merges = read_bpe(student.train_bpe(texts, 340, special_tokens=("<pad>",)), what)
    expected_vocab, expected = library_bpe(texts, 340, ("<pad>",))
    if merges != expected:
        fail(describe_merges(merges, expected, what), explain_training(texts, 340, ("<pad>",), merges, expected))
    expect(vocab == expected_vocab, f"{what}: the merges are right, but the vocabulary is not BpeTrainer's.")


# -- bpe_encode ------------------------------------------------------------------------------------

def library_encode(text: str, merges: list, vocab: dict) -> list[int]:
    """tokenizers' BPE model with this vocabulary and these merges, and the notebook's pre-split."""
    from tokenizers import Tokenizer, models

    tokenizer = Tokenizer(models.BPE(vocab=dict(vocab), merges=[tuple(m) for m in merges]))
    tokenizer.pre_tokenizer = library_pre_tokenizer()
    return tokenizer.encode(text).ids


def decode_ids(ids: list[int], vocab: dict) -> str | None:
    """The text that token ids stand for (GPT-2's byte table read backwards), or None if an id is unknown."""
    from tokenizers import decoders

    token_of = {i: t for t, i in vocab.items()}
    if not all(isinstance(i, int) and i in token_of for i in ids):
        return None
    return decoders.ByteLevel().decode([token_of[i] for i in ids])


def encode_hint(text: str, got, expected: list[int], vocab: dict) -> str | None:
    """A hint from what the wrong ids say: text lost, spaces dropped, a token across two pieces, or merges in the
    wrong order."""
    decoded = decode_ids(got, vocab) if isinstance(got, list) else None
    if decoded is None:
        return "Return a list of ints, each the id in `vocab` of one token."
    if decoded != text:
        if decoded == text.replace(" ", ""):
            return SPACE_HINT
        return ("The ids do not decode back to the text: turn each piece into the symbols of its UTF-8 bytes "
                "(to_symbols), so that every character, even one the corpus never had, is kept.")
    token_of = {i: t for t, i in vocab.items()}
    if any("Ġ" in token_of[i][1:] for i in got):
        return ("A token spans two pieces: pre-split the text first, and merge only inside each piece.")
    return ("Apply the merges in the order of `merges`: in each piece, merge the neighbouring pair that comes "
            "earliest in `merges` (every occurrence of it), and repeat until no pair of the piece is in `merges`.")


def worked_vocab(specials=()) -> dict:
    tokens = [*specials, *byte_alphabet(), *(a + b for a, b in WORKED_MERGES)]
    return {t: i for i, t in enumerate(tokens)}


@visible
@graded("bpe_encode", points=2,
        hint="Pre-split the text, turn each piece into byte symbols, merge in the order of `merges`, look the tokens up "
             "in `vocab`.")
def test_bpe_encode_worked_example(student):
    vocab = worked_vocab()
    # " banana!" -> Ġ b a n a n a ! -> (a, n) twice -> Ġ b an an a ! -> (b, an) -> Ġ ban an a !
    for text, tokens in (("to be, banana!", ["to", "Ġbe", ",", "Ġ", "ban", "an", "a", "!"]),
                         ("bean", ["be", "an"]), (" to  be", ["Ġ", "to", "Ġ", "Ġbe"]), ("", [])):
        expected = [vocab[t] for t in tokens]
        got = student.bpe_encode(text, WORKED_MERGES, vocab)
        expect(got == expected, f"bpe_encode({text!r}) with the worked example's 5 merges gave {got}; expected "
                                f"{expected}, the tokens {tokens}.", hint=encode_hint(text, got, expected, vocab))
    # The order of the merges decides: in "abc", (b, c) comes first in `merges`, so "bc" is built and "ab" never is,
    # although "ab" is leftmost and is the longest token at the start.
    merges = [("b", "c"), ("a", "b")]
    vocab = {t: i for i, t in enumerate([*byte_alphabet(), "bc", "ab"])}
    got = student.bpe_encode("abc", merges, vocab)
    expected = [vocab["a"], vocab["bc"]]
    expect(got == expected, f"bpe_encode('abc', merges={merges}) gave {got}; expected {expected}, the tokens "
                            f"['a', 'bc'].", hint=encode_hint("abc", got, expected, vocab))


ENCODE_TEXTS = ["The cat sat on the mat.", "A dog met the cat at the café.", "  two spaces, then  more ",
                "new words: zebra, 😀, Ωmega", "line one\nline two", " ", "", "the the the"]


@visible
@graded("bpe_encode", points=2,
        hint="Every text can be encoded: each byte has a symbol in the vocabulary. Merge in the order of `merges`, "
             "inside each piece of pre_split(text).")
def test_bpe_encode_equals_tokenizers_and_decodes_back(student):
    vocab, merges = library_bpe(SMALL_CORPUS, 300, ("<pad>",))
    for text in ENCODE_TEXTS:
        expected = library_encode(text, merges, vocab)
        got = student.bpe_encode(text, merges, vocab)
        expect(got == expected, f"bpe_encode({text!r}) gave {got}; tokenizers' BPE gives {expected}.",
               hint=encode_hint(text, got, expected, vocab))
        expect(decode_ids(got, vocab) == text, f"bpe_encode({text!r}) does not decode back to the text.")


@graded("bpe_encode", points=2,
        hint="Pre-split, byte symbols, the merge earliest in `merges` first (every occurrence), then the ids; merges "
             "may come as lists [a, b] instead of tuples.")
def test_bpe_encode_matches_tokenizers_on_random_texts(student):
    for seed in range(5):
        corpus = random_corpus(400 + seed)
        specials = [(), ("<pad>", "<s>")][seed % 2]
        vocab, merges = library_bpe(corpus, len(specials) + 256 + 15 + 8 * seed, specials)
        as_lists = [list(m) for m in merges] if seed % 2 else merges
        probes = random_corpus(500 + seed)[:4] + [" ".join(corpus[:3]), "ünïcödé ✓✓ 😀 ", "\t tab"]
        for text in probes:
            expected = library_encode(text, merges, vocab)
            got = student.bpe_encode(text, as_lists, vocab)
            expect(got == expected, f"bpe_encode({text!r}) with {len(merges)} merges gave {got}; tokenizers' BPE gives "
                                    f"{expected}.", hint=encode_hint(text, got, expected, vocab))
