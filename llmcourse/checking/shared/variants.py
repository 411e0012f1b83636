"""What the 02_variants checks, visible and hidden, both use: the quizzes' keys, the structure every correct
span corruption and masking has, tiny transformers models trained one step in the kernel and here, and
GPT-2's own loss as the answer for next_token_loss.

The checks (grader.checks.variants) import these helpers from here, and so does the students' copy of the visible
checks (llmcourse.checks.variants), with which this module ships.
"""
from __future__ import annotations

import torch

from llmcourse.checking import expect, expect_close, expect_tensor, fail, generator


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


# -- quizzes ---------------------------------------------------------------------------------------

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


# -- span corruption: what every correct pair looks like -------------------------------------------

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


# -- mask_tokens: what every correct draw looks like -----------------------------------------------

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


# -- the next-token loss ---------------------------------------------------------------------------

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
