"""Visible checks for 02_variants: what `check("02_variants/<exercise>")` runs in your notebook.

They compare your code with transformers' own models (a causal LM's `.loss`, one optimiser step of a real
model), or test properties that every correct answer has: labels exactly at the picked positions, spans that
put the text back together, the same output for the same seed. More checks run when your notebook is graded.

What they share with the graders' checks lives in llmcourse.checking.shared.variants, so that both speak about
your code the same way.
"""
from __future__ import annotations

import torch

from llmcourse.checking import expect, expect_close, graded
from llmcourse.checking.shared.variants import (KINDS, MODEL_CLASSES, MODEL_KEYS, PARAMETER_KEYS, TASK_KEYS,
                                                check_mask_structure, check_training, expect_quiz, gpt2_loss_case,
                                                mlm_example, read_span_pair, span_counts)
from llmcourse.wire import Seeded

ASSIGNMENT = "02_variants"


# -- quizzes -------------------------------------------------------------------------------------------

@graded("architectures", points=2, requires_main=True,
        hint="Fill in both dictionaries: keep every key and use one of "
             "'encoder-only', 'encoder-decoder', 'decoder-only' as each value.")
def test_architecture_quizzes_are_filled_in(student):
    expect_quiz(student.ARCHITECTURE_FOR_TASK, "ARCHITECTURE_FOR_TASK", TASK_KEYS, KINDS)
    expect_quiz(student.ARCHITECTURE_OF_MODEL, "ARCHITECTURE_OF_MODEL", MODEL_KEYS, KINDS)


@graded("parameters", points=1, requires_main=True,
        hint="Keep every key and use 'parameter' or 'hyperparameter' as each value.")
def test_parameter_quiz_is_filled_in(student):
    expect_quiz(student.PARAMETER_OR_HYPERPARAMETER, "PARAMETER_OR_HYPERPARAMETER", PARAMETER_KEYS,
                ("parameter", "hyperparameter"))


# -- attention_visibility ---------------------------------------------------------------------------

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


# -- mask_tokens -----------------------------------------------------------------------------------

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


@graded("mask_tokens", points=3, requires_main=True,
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


# -- span_corrupt / merge_spans ---------------------------------------------------------------------

SENTINELS = list(range(5, 37))  # the course tokenizer's <extra_id_0> ... <extra_id_31>


@graded("span_corrupt", points=4,
        hint="inputs: the tokens with each span replaced by the next sentinel; targets: each sentinel followed by "
             "its span, then one closing sentinel; return two lists of ints.")
def test_span_corrupt_structure(student):
    tokens = list(range(100, 140))
    for seed in (0, 1, 2):
        result = student.span_corrupt(tokens, SENTINELS, generator=Seeded(seed))
        spans = read_span_pair(tokens, result, SENTINELS, f"span_corrupt(40 tokens, seed {seed})")
        n_noise, n_spans = span_counts(40, 0.15, 3.0, len(SENTINELS))
        expect(sum(map(len, spans)) == n_noise and len(spans) == n_spans,
               f"For 40 tokens, noise_density 0.15 and mean_span_length 3 there should be {n_noise} corrupted tokens "
               f"in {n_spans} spans, but there are {sum(map(len, spans))} in {len(spans)}.",
               hint="n_noise = round(n * noise_density) (at least 1, at most n - 1); "
                    "n_spans = round(n_noise / mean_span_length) (at least 1).")


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


# -- labels and the next-token loss ----------------------------------------------------------------

@graded("causal_lm_labels", points=3,
        hint="labels = a copy of input_ids with -100 wherever attention_mask is 0; do not shift them (the model does).")
def test_causal_lm_labels_small(student):
    ids = torch.tensor([[7, 8, 9, 10], [11, 12, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    expected = torch.tensor([[7, 8, 9, 10], [11, 12, -100, -100]])
    expect_close(student.causal_lm_labels(ids, mask), expected, "causal_lm_labels for [[7, 8, 9, 10], [11, 12, pad, pad]]")


@graded("next_token_loss", points=4,
        hint="Position t predicts token t + 1: compare logits[:, :-1] with labels[:, 1:] by cross-entropy, "
             "ignoring the labels that are -100, averaged over the remaining tokens.")
def test_next_token_loss_equals_a_causal_lm_loss(student):
    logits, labels, loss = gpt2_loss_case(0)
    expect_close(student.next_token_loss(logits, labels), loss, "next_token_loss(logits, labels) (vs GPT2LMHeadModel's .loss)")


# -- build_model and training_step ---------------------------------------------------------------------

@graded("build_model", points=4,
        hint="encoder-only: BertForMaskedLM(BertConfig(...)); encoder-decoder: T5ForConditionalGeneration(T5Config(...)); "
             "decoder-only: GPT2LMHeadModel(GPT2Config(...)). Build from a config: from_pretrained would download.")
def test_build_model_gives_each_kinds_class(student):
    for kind, cls in MODEL_CLASSES.items():
        model = student.build_model(kind, 50)
        name = getattr(model, "type_name", type(model).__name__)
        expect(name.endswith("." + cls), f"build_model({kind!r}, 50) returned a {name.rsplit('.', 1)[-1]}, not a {cls}.")


@graded("training_step", points=3,
        hint="loss = the model's objective on the batch; optimizer.zero_grad(); loss.backward(); optimizer.step(); "
             "return loss.item().")
def test_training_step_on_a_small_gpt2(student):
    check_training(student, "decoder-only", seed=0, steps=1, what="training_step on a tiny GPT-2")
