"""Visible checks for 02_variants: what `check("02_variants/<exercise>")` runs in your notebook.

They compare your code with transformers' own models (a causal LM's `.loss`, one optimiser step of a real
model), or test properties that every correct answer has: labels exactly at the picked positions, spans that
put the text back together, the same output for the same seed. More checks run when your notebook is graded.

The helpers at the top are shared with the graders' checks, so that both speak about your code the same way.
"""
from __future__ import annotations

import torch

from llmcourse.checking import expect, expect_close, expect_tensor, fail, generator, graded
from llmcourse.wire import Seeded

ASSIGNMENT = "02_variants"
KINDS = ("encoder-only", "encoder-decoder", "decoder-only")
MODEL_CLASSES = {"encoder-only": "BertForMaskedLM", "encoder-decoder": "T5ForConditionalGeneration",
                 "decoder-only": "GPT2LMHeadModel"}

# The keys the notebook fixes for its three quiz dictionaries (the answers are graded when the notebook is).
TASK_KEYS = ("sentiment analysis", "named entity recognition", "word classification", "extractive question answering",
             "translation", "summarization", "generative question answering", "open text generation")
MODEL_KEYS = ("BERT", "DistilBERT", "RoBERTa", "course-mlm", "BART", "T5", "course-t5", "GPT-2", "BLOOM", "LLaMA",
              "PaLM", "course-lm")
PARAMETER_KEYS = ("attention weights", "feed-forward weights", "token embeddings", "biases", "LayerNorm gains",
                  "learning rate", "batch size", "number of layers", "number of heads", "hidden size", "dropout rate",
                  "warmup steps")


def expect_quiz(answers, name: str, keys: tuple[str, ...], allowed: tuple[str, ...]) -> dict:
    """`answers` is a dict with exactly these keys and only allowed values; returns it."""
    if not isinstance(answers, dict):
        fail(f"{name} should be a dictionary, but it is a {type(answers).__name__}.",
             hint=f"Fill in the dictionary {name} = {{...}} in the cell above.")
    missing = [k for k in keys if k not in answers]
    extra = [k for k in answers if k not in keys]
    if missing or extra:
        fail(f"{name} should have exactly the keys the notebook gives; missing: {missing}, unexpected: {extra}.",
             hint="Keep the keys of the template as they are (spelling and capitals included) and only fill in values.")
    wrong = {k: v for k, v in answers.items() if v not in allowed}
    if wrong:
        first = next(iter(wrong))
        fail(f"{name}[{first!r}] is {wrong[first]!r}, which is not one of {list(allowed)} "
             f"({len(wrong)} values like this).", hint=f"Every value is one of the strings {list(allowed)}, spelled exactly.")
    return answers


# -- span corruption: what every correct pair looks like ------------------------------------------

def span_counts(n: int, noise_density: float, mean_span_length: float, n_sentinels: int) -> tuple[int, int]:
    """(corrupted tokens, spans) for n tokens: the rule the notebook states."""
    n_noise = min(max(round(n * noise_density), 1), n - 1)
    n_spans = max(1, min(round(n_noise / mean_span_length), n_noise, n - n_noise, n_sentinels - 1))
    return n_noise, n_spans


def _is_int_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def read_span_pair(original: list[int], result, sentinels: list[int], what: str) -> list[list[int]]:
    """Check the structure of span_corrupt's (inputs, targets); returns the corrupted spans, in order."""
    if not isinstance(result, tuple) or len(result) != 2:
        fail(f"{what} should return a pair (inputs, targets).", hint="End with `return inputs, targets`.")
    inputs, targets = result
    if not _is_int_list(inputs) or not _is_int_list(targets):
        fail(f"{what} should return two lists of Python ints, but it returned {type(inputs).__name__} and "
             f"{type(targets).__name__}.", hint="Build `inputs` and `targets` as lists (call .tolist() on a tensor).")
    position = {s: i for i, s in enumerate(sentinels)}
    in_inputs = [position[t] for t in inputs if t in position]
    k = len(in_inputs)
    if k == 0:
        fail(f"{what}: `inputs` contains no sentinel, so nothing was corrupted.",
             hint="There is always at least one span: each span becomes a sentinel in `inputs`.")
    if in_inputs != list(range(k)):
        fail(f"{what}: the sentinels in `inputs` should be sentinel_ids[0], sentinel_ids[1], ... in this order, one "
             f"per span, but they are the sentinels number {in_inputs}.",
             hint="Use the next sentinel for each new span: sentinel_ids[0] for the first, sentinel_ids[1] for the next.")
    gaps = [i for i in range(len(inputs) - 1) if inputs[i] in position and inputs[i + 1] in position]
    if gaps:
        fail(f"{what}: two sentinels are next to each other in `inputs` (at {gaps[0]}), so two spans touch.",
             hint="Two spans with nothing kept between them are one span: keep at least one token between spans.")
    starts = [i for i, t in enumerate(targets) if t in position]
    in_targets = [position[targets[i]] for i in starts]
    if not targets or targets[0] not in position:
        fail(f"{what}: `targets` should start with the first sentinel.",
             hint="targets = sentinel 0, its span, sentinel 1, its span, ..., then one closing sentinel.")
    if in_targets != list(range(k + 1)):
        fail(f"{what}: with {k} spans, `targets` should hold the sentinels number 0 to {k} (the last one closing), "
             f"but it holds {in_targets}.",
             hint="After the last span, append one more sentinel (sentinel_ids[number of spans]) to close the targets.")
    if targets[-1] != sentinels[k]:
        fail(f"{what}: `targets` should end with the closing sentinel sentinel_ids[{k}].",
             hint="The closing sentinel comes last, after the last span.")
    spans = [targets[a + 1:b] for a, b in zip(starts, starts[1:])]
    if any(len(s) == 0 for s in spans):
        fail(f"{what}: a sentinel in `targets` is followed directly by the next one: an empty span.",
             hint="Every span holds at least one token.")
    merged, it = [], iter(spans)
    for t in inputs:
        merged += next(it) if t in position else [t]
    if merged != list(original):
        first = next((i for i, (a, b) in enumerate(zip(merged, original)) if a != b), min(len(merged), len(original)))
        fail(f"{what}: putting each span back in place of its sentinel does not give the original tokens "
             f"(first difference at position {first}; {len(merged)} tokens instead of {len(original)}).",
             hint="Every token must end up either in `inputs` (kept) or in exactly one span of `targets` (corrupted), "
                  "in its original order.")
    return spans


# -- models built inside the kernel for the training_step checks -----------------------------------

def tiny_config(kind: str) -> tuple[str, str, dict]:
    """(config class, model class, config arguments) of a tiny model without dropout."""
    if kind == "encoder-only":
        return "transformers.BertConfig", "transformers.BertForMaskedLM", dict(
            vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if kind == "encoder-decoder":
        return "transformers.T5Config", "transformers.T5ForConditionalGeneration", dict(
            vocab_size=40, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2,
            dropout_rate=0.0, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0)
    return "transformers.GPT2Config", "transformers.GPT2LMHeadModel", dict(
        vocab_size=40, n_positions=32, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=1, eos_token_id=2)


def tiny_weights(kind: str, seed: int) -> dict[str, torch.Tensor]:
    import importlib

    config_path, model_path, args = tiny_config(kind)
    load = lambda path: getattr(importlib.import_module(path.rpartition(".")[0]), path.rpartition(".")[2])  # noqa: E731
    torch.manual_seed(seed)
    model = load(model_path)(load(config_path)(**args))
    return {k: v.clone() for k, v in model.state_dict().items()}


def tiny_batch(kind: str, seed: int) -> dict[str, torch.Tensor]:
    """A batch in the format of the notebook's data helpers, for a model of this kind."""
    gen = generator(seed)
    ids = torch.randint(5, 40, (3, 9), generator=gen)
    attention = torch.ones(3, 9, dtype=torch.long)
    attention[1, 6:] = 0
    attention[2, 4:] = 0
    ids = ids.masked_fill(attention == 0, 0)
    if kind == "encoder-only":
        picked = (torch.rand(3, 9, generator=gen) < 0.4) & (attention == 1)
        picked[:, 1] = True
        labels = torch.where(picked, ids, torch.full_like(ids, -100))
        return {"input_ids": ids.masked_fill(picked, 4), "attention_mask": attention, "labels": labels}
    if kind == "encoder-decoder":
        labels = torch.randint(5, 40, (3, 5), generator=gen)
        labels[1, 3:] = -100
        return {"input_ids": ids, "attention_mask": attention, "labels": labels}
    return {"input_ids": ids, "attention_mask": attention, "labels": ids.masked_fill(attention == 0, -100)}


def student_tiny_model(student, kind: str, weights: dict[str, torch.Tensor]):
    config_path, model_path, args = tiny_config(kind)
    model = student.construct(model_path, student.construct(config_path, **args))
    model.load_state_dict(weights)
    return model


def reference_steps(kind: str, weights: dict[str, torch.Tensor], batch: dict, steps: int, lr: float,
                    loss_fn) -> tuple[list[float], dict[str, torch.Tensor]]:
    """`steps` SGD steps of the model's objective, computed here with transformers; (losses, weights after)."""
    import importlib

    config_path, model_path, args = tiny_config(kind)
    load = lambda path: getattr(importlib.import_module(path.rpartition(".")[0]), path.rpartition(".")[2])  # noqa: E731
    model = load(model_path)(load(config_path)(**args))
    model.load_state_dict(weights)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def model_loss(model, batch):
    """The model's own loss (for GPT-2 it shifts the labels itself and ignores -100)."""
    return model(**batch).loss


def check_training(student, kind: str, seed: int, steps: int, what: str) -> None:
    weights = tiny_weights(kind, seed)
    batch = tiny_batch(kind, seed + 1)
    model = student_tiny_model(student, kind, weights)
    optimizer = student.construct("torch.optim.SGD", model.parameters(), lr=0.5)
    losses = [student.training_step(model, batch, optimizer) for _ in range(steps)]
    expected_losses, expected_weights = reference_steps(kind, weights, batch, steps, 0.5, model_loss)
    for i, (got, want) in enumerate(zip(losses, expected_losses)):
        if isinstance(got, torch.Tensor) or not isinstance(got, float):
            fail(f"training_step should return the loss as a Python float, but it returned "
                 f"{'a tensor' if isinstance(got, torch.Tensor) else type(got).__name__}.",
                 hint="Return loss.item(): a number, detached from the graph.")
        expect(abs(got - want) <= 1e-4 * max(1.0, abs(want)),
               f"{what}: step {i + 1} returned the loss {got:.6g}, but the model's objective on this batch is {want:.6g}.",
               hint="Compute the loss of the model on the batch before the update (for BERT and T5 the model's own "
                    ".loss from the labels; for a decoder-only model the shifted next-token loss), and return it.")
    after = model.state_dict()
    for name, value in expected_weights.items():
        expect_close(after[name], value, f"{what}: `{name}` after {steps} training step(s)", rtol=1e-4, atol=1e-5,
                     hint="Each step: optimizer.zero_grad(), loss.backward(), optimizer.step(), in this order "
                          "(without zero_grad the gradients of earlier steps pile up).")


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

def mlm_example(seed: int, batch: int = 8, length: int = 40, vocab: int = 60):
    """Token ids in [5, vocab) framed by special tokens <s> (1) ... </s> (2) and padding (0)."""
    gen = generator(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=gen)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=gen)
    lengths[0] = length
    ids[:, 0] = 1
    for b, n in enumerate(lengths.tolist()):
        ids[b, n - 1] = 2
        ids[b, n:] = 0
    special = (ids == 0) | (ids == 1) | (ids == 2)
    return ids, special


def check_mask_structure(ids, special, result, mask_id: int, vocab: int, what: str):
    """The parts of BERT's rule that hold for every draw; returns (inputs, labels, picked)."""
    if not isinstance(result, tuple) or len(result) != 2:
        fail(f"{what} should return a pair (inputs, labels).", hint="End with `return inputs, labels`.")
    inputs = expect_tensor(result[0], f"inputs of {what}", shape=tuple(ids.shape))
    labels = expect_tensor(result[1], f"labels of {what}", shape=tuple(ids.shape))
    expect(inputs.dtype == ids.dtype and labels.dtype == ids.dtype,
           f"inputs and labels should be integer tensors like input_ids ({ids.dtype}), not {inputs.dtype} and {labels.dtype}.",
           hint="Build them from input_ids (clone, torch.where, full_like) so that they keep its dtype.")
    picked = labels != -100
    expect(bool((labels[picked] == ids[picked]).all()),
           f"{what}: where labels are not -100 they should hold the original token id.",
           hint="labels = the original id at every picked position, -100 everywhere else.")
    expect(not (bool(special.any()) and torch.equal(labels, ids)),
           f"{what}: labels equal input_ids everywhere, special tokens included.",
           hint="labels = the original id at every picked position, -100 everywhere else (the loss ignores -100).")
    expect(not bool((picked & special).any()), f"{what}: a special token (True in special_tokens_mask) was picked.",
           hint="Never pick a position where special_tokens_mask is True.")
    expect(bool((inputs[~picked] == ids[~picked]).all()),
           f"{what}: a position that was not picked (label -100) was changed in the inputs.",
           hint="The 80/10/10 rule applies only to the picked positions; every other position keeps its token, and "
                "every picked position (changed or not) gets its original id as label.")
    expect(int(inputs.min()) >= 0 and int(inputs.max()) < vocab,
           f"{what}: the inputs contain an id outside [0, vocab_size) = [0, {vocab}).",
           hint="Random replacement ids come from torch.randint(0, vocab_size, ...), which excludes vocab_size.")
    return inputs, labels, picked


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


def gpt2_loss_case(seed: int):
    """A tiny random GPT-2, a padded batch and labels: (logits, labels, the model's own .loss)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=30, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                       bos_token_id=1, eos_token_id=2)).eval()
    gen = generator(seed)
    ids = torch.randint(3, 30, (3, 8), generator=gen)
    attention = torch.ones_like(ids)
    attention[1, 5:] = 0
    attention[2, 3:] = 0
    labels = ids.masked_fill(attention == 0, -100)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=attention, labels=labels)
    return out.logits, labels, out.loss


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
