"""Visible checks for 02_variants: what `check("02_variants/<exercise>")` runs in your notebook.

They compare your code with transformers' own models (a causal LM's `.loss`, one optimiser step of a real
model), or test properties that every correct answer has: labels exactly at the picked positions, spans that
put the text back together, the same output for the same seed. More checks run when your notebook is graded.

What they share with the graders' checks lives in llmcourse.checking.shared.variants, so that both speak about
your code the same way.
"""
from __future__ import annotations

import math

import torch

from llmcourse.checking import StudentRaised, expect, expect_close, fail, graded
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


def within_standard_errors(count: int, total: int, p: float, k: float = 5.0) -> tuple[bool, float]:
    """Is the rate count/total within k binomial standard errors of p? (ok, the allowed difference). A correct
    procedure is further off than 5 standard errors less than once in a million draws."""
    allowed = k * math.sqrt(p * (1 - p) / total)
    return abs(count / total - p) <= allowed, allowed


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


# -- labels and the next-token loss ----------------------------------------------------------------

@graded("causal_lm_labels", points=3,
        hint="labels = a copy of input_ids with -100 wherever attention_mask is 0; do not shift them (the model does).")
def test_causal_lm_labels_small(student):
    ids = torch.tensor([[7, 8, 9, 10], [11, 12, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    expected = torch.tensor([[7, 8, 9, 10], [11, 12, -100, -100]])
    expect_close(student.causal_lm_labels(ids, mask), expected, "causal_lm_labels for [[7, 8, 9, 10], [11, 12, pad, pad]]")


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


@graded("next_token_loss", points=4,
        hint="Position t predicts token t + 1: compare logits[:, :-1] with labels[:, 1:] by cross-entropy, "
             "ignoring the labels that are -100, averaged over the remaining tokens.")
def test_next_token_loss_equals_a_causal_lm_loss(student):
    logits, labels, loss = gpt2_loss_case(0)
    expect_close(student.next_token_loss(logits, labels), loss, "next_token_loss(logits, labels) (vs GPT2LMHeadModel's .loss)")


# -- build_model and training_step ---------------------------------------------------------------------

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


@graded("training_step", points=3,
        hint="loss = the model's objective on the batch; optimizer.zero_grad(); loss.backward(); optimizer.step(); "
             "return loss.item().")
def test_training_step_on_a_small_gpt2(student):
    check_training(student, "decoder-only", seed=0, steps=1, what="training_step on a tiny GPT-2")


@graded("training_step", points=2,
        hint="T5 computes its own loss from batch['labels'] (it shifts them right to make the decoder's inputs): "
             "model(**batch).loss. Call optimizer.zero_grad() at every step, or the gradients of earlier steps pile "
             "up.")
def test_training_step_on_a_small_t5(student):
    check_training(student, "encoder-decoder", seed=20, steps=2, what="two training_steps of a tiny T5")
