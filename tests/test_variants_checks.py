"""The 02_variants checks, run in-process against the notebook's own code, wrong code and other right code.

- The reference solution (the source notebook's cells) earns every point, and each exercise's checks are
  worth exactly the points of its check cell.
- Every exercise has plausible wrong implementations (mutants); each must lose points in its exercise, and
  every exercise that does not use the mutated one must keep full marks.
- Every exercise has alternative correct implementations (other draw orders and procedures for the random
  ones); they earn full marks, in their exercise and in every exercise that builds on it.

A mutant or alternative is source code executed after the notebook's cells, in a fresh namespace, so that the
notebook's other functions pick it up exactly as they would in a student's kernel.
"""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
import torch

from tests.exercises import Assignment
from tests.notebooks import is_check_cell

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "source" / "02_variants" / "variants.ipynb"

DEPENDS_ON = {
    "attention_visibility": set(),
    "mask_tokens": set(),
    "span_corrupt": set(),
    "merge_spans": set(),
    "causal_lm_labels": set(),
    "next_token_loss": set(),
    "architectures": set(),
    "build_model": set(),
    "parameters": set(),
    "training_step": {"next_token_loss"},
}
SOLUTION_NAMES = {"attention_visibility": "attention_visibility", "mask_tokens": "mask_tokens",
                  "span_corrupt": "span_corrupt", "merge_spans": "merge_spans", "causal_lm_labels": "causal_lm_labels",
                  "next_token_loss": "next_token_loss", "architectures": "ARCHITECTURE_FOR_TASK",
                  "build_model": "build_model", "parameters": "PARAMETER_OR_HYPERPARAMETER",
                  "training_step": "training_step"}

A = Assignment("02_variants", DEPENDS_ON, solution_names=SOLUTION_NAMES)
EXERCISES = A.exercises
uses, dependents, namespace_with, score = A.uses, A.dependents, A.namespace_with, A.score


def test_dependencies_are_what_the_notebook_calls():
    A.assert_dependencies_match_the_notebook()


@pytest.fixture(scope="module", autouse=True)
def reference_results():
    yield from A.reference_results()


@pytest.mark.parametrize("exercise", EXERCISES)
def test_reference_solution_gets_full_marks(reference_results, exercise):
    A.assert_full_marks(reference_results[exercise])


def test_check_points_match_the_notebook(reference_results):
    A.assert_points_match_the_notebook(reference_results)



# -- wrong implementations --------------------------------------------------------------------------

_MASK_HEAD = '''
def mask_tokens(input_ids, mask_token_id, vocab_size, special_tokens_mask=None, mlm_probability=0.15, generator=None):
    shape = input_ids.shape
'''
_SPAN_HEAD = '''
def span_corrupt(token_ids, sentinel_ids, noise_density=0.15, mean_span_length=3.0, generator=None):
    ids = list(token_ids)
    n = len(ids)
    if n < 2:
        raise ValueError("too short")
    n_noise = min(max(round(n * noise_density), 1), n - 1)
    n_spans = max(1, min(round(n_noise / mean_span_length), n_noise, n - n_noise, len(sentinel_ids) - 1))
'''
_SPAN_ASSEMBLE = '''
    inputs, targets, pos = [], [], 0
    for k in range(n_spans):
        inputs += ids[pos:pos + gaps[k]]
        pos += gaps[k]
        inputs.append(sentinel_ids[k])
        targets += [sentinel_ids[k]] + ids[pos:pos + lengths[k]]
        pos += lengths[k]
    inputs += ids[pos:]
    targets.append(sentinel_ids[n_spans])
    return inputs, targets
'''
_STEP_TAIL = '''
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()
'''
_BUILD = '''
from transformers import BertConfig, BertForMaskedLM, BertModel, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration
def build_model(kind, vocab_size, d_model=64, n_layers=2, n_heads=4):
    if kind == "encoder-only":
        return {bert}(BertConfig(vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=n_layers,
                                 num_attention_heads=n_heads, intermediate_size=4 * d_model))
    if kind == "encoder-decoder":
        return T5ForConditionalGeneration(T5Config(vocab_size=vocab_size, d_model=d_model, {t5}, d_ff=4 * d_model,
                                                   num_layers=n_layers, num_heads=n_heads, decoder_start_token_id=0))
    if kind == "decoder-only":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=d_model, n_layer=n_layers, n_head={gpt_heads}))
    {unknown}
'''
_OK_BUILD = dict(bert="BertForMaskedLM", t5="d_kv=d_model // n_heads, num_decoder_layers=n_layers", gpt_heads="n_heads",
                 unknown='raise ValueError(kind)')


def _build(**change) -> str:
    return _BUILD.format(**{**_OK_BUILD, **change})


MUTANTS = {
    "attention_visibility": {
        "causal is the upper triangle": '''
def attention_visibility(kind, n_query, n_key=None):
    n_key = n_query if n_key is None else n_key
    if kind in ("bidirectional", "cross"):
        return torch.ones(n_query, n_key, dtype=torch.bool)
    if kind == "causal":
        return torch.ones(n_query, n_query, dtype=torch.bool).triu()
    raise ValueError(kind)
''',
        "causal without the diagonal": '''
def attention_visibility(kind, n_query, n_key=None):
    n_key = n_query if n_key is None else n_key
    if kind in ("bidirectional", "cross"):
        return torch.ones(n_query, n_key, dtype=torch.bool)
    if kind == "causal":
        return torch.ones(n_query, n_query, dtype=torch.bool).tril(-1)
    raise ValueError(kind)
''',
        "cross is square": '''
def attention_visibility(kind, n_query, n_key=None):
    if kind in ("bidirectional", "cross"):
        return torch.ones(n_query, n_query, dtype=torch.bool)
    if kind == "causal":
        return torch.ones(n_query, n_query, dtype=torch.bool).tril()
    raise ValueError(kind)
''',
        "float mask": '''
def attention_visibility(kind, n_query, n_key=None):
    n_key = n_query if n_key is None else n_key
    if kind in ("bidirectional", "cross"):
        return torch.ones(n_query, n_key)
    if kind == "causal":
        return torch.ones(n_query, n_query).tril()
    raise ValueError(kind)
''',
        "unknown kinds get a full mask": '''
def attention_visibility(kind, n_query, n_key=None):
    n_key = n_query if n_key is None else n_key
    if kind == "causal":
        return torch.ones(n_query, n_query, dtype=torch.bool).tril()
    return torch.ones(n_query, n_key, dtype=torch.bool)
''',
    },
    "mask_tokens": {
        "80/10/10 applied to all positions": _MASK_HEAD + '''
    picked = torch.rand(shape, generator=generator) < mlm_probability
    if special_tokens_mask is not None:
        picked &= ~special_tokens_mask.bool()
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(shape, generator=generator)
    random_ids = torch.randint(0, vocab_size, shape, generator=generator)
    inputs = torch.where(picked & (roll < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where((roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels
''',
        "labels left at the original ids": _MASK_HEAD + '''
    picked = torch.rand(shape, generator=generator) < mlm_probability
    if special_tokens_mask is not None:
        picked &= ~special_tokens_mask.bool()
    roll = torch.rand(shape, generator=generator)
    random_ids = torch.randint(0, vocab_size, shape, generator=generator)
    inputs = torch.where(picked & (roll < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(picked & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, input_ids.clone()
''',
        "special tokens can be picked": _MASK_HEAD + '''
    picked = torch.rand(shape, generator=generator) < mlm_probability
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(shape, generator=generator)
    random_ids = torch.randint(0, vocab_size, shape, generator=generator)
    inputs = torch.where(picked & (roll < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(picked & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels
''',
        "every picked position masked": _MASK_HEAD + '''
    picked = torch.rand(shape, generator=generator) < mlm_probability
    if special_tokens_mask is not None:
        picked &= ~special_tokens_mask.bool()
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    return input_ids.masked_fill(picked, mask_token_id), labels
''',
        "random share drawn with 0.1 from the rest (2%)": _MASK_HEAD + '''
    picked = torch.bernoulli(torch.full(shape, mlm_probability), generator=generator).bool()
    if special_tokens_mask is not None:
        picked &= ~special_tokens_mask.bool()
    labels = input_ids.clone()
    labels[~picked] = -100
    inputs = input_ids.clone()
    masked = torch.bernoulli(torch.full(shape, 0.8), generator=generator).bool() & picked
    inputs[masked] = mask_token_id
    rand = torch.bernoulli(torch.full(shape, 0.1), generator=generator).bool() & picked & ~masked
    inputs[rand] = torch.randint(vocab_size, shape, generator=generator)[rand]
    return inputs, labels
''',
        "random ids up to vocab_size inclusive": _MASK_HEAD + '''
    picked = torch.rand(shape, generator=generator) < mlm_probability
    if special_tokens_mask is not None:
        picked &= ~special_tokens_mask.bool()
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(shape, generator=generator)
    random_ids = torch.randint(0, vocab_size + 1, shape, generator=generator)
    inputs = torch.where(picked & (roll < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(picked & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels
''',
        "ignores the generator": _MASK_HEAD + '''
    picked = torch.rand(shape) < mlm_probability
    if special_tokens_mask is not None:
        picked &= ~special_tokens_mask.bool()
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(shape)
    random_ids = torch.randint(0, vocab_size, shape)
    inputs = torch.where(picked & (roll < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(picked & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels
''',
        "masks input_ids in place": _MASK_HEAD + '''
    picked = torch.rand(shape, generator=generator) < mlm_probability
    if special_tokens_mask is not None:
        picked &= ~special_tokens_mask.bool()
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(shape, generator=generator)
    random_ids = torch.randint(0, vocab_size, shape, generator=generator)
    input_ids[picked & (roll < 0.8)] = mask_token_id
    rand = picked & (roll >= 0.8) & (roll < 0.9)
    input_ids[rand] = random_ids[rand]
    return input_ids, labels
''',
    },
    "span_corrupt": {
        "spans may touch": _SPAN_HEAD + '''
    lengths = random_split(n_noise, n_spans, generator)
    gaps = random_split(n - n_noise + n_spans + 1, n_spans + 1, generator)
    gaps = [g - 1 for g in gaps]
''' + _SPAN_ASSEMBLE,
        "no closing sentinel": _SPAN_HEAD + '''
    lengths = random_split(n_noise, n_spans, generator)
    gaps = random_split(n - n_noise + 2, n_spans + 1, generator)
    gaps[0] -= 1
    gaps[-1] -= 1
''' + _SPAN_ASSEMBLE.replace("    targets.append(sentinel_ids[n_spans])\n", ""),
        "every span exactly mean_span_length long": _SPAN_HEAD + '''
    lengths = [n_noise // n_spans] * n_spans
    lengths[-1] += n_noise - sum(lengths)
    gaps = random_split(n - n_noise + 2, n_spans + 1, generator)
    gaps[0] -= 1
    gaps[-1] -= 1
''' + _SPAN_ASSEMBLE,
        "each token corrupted with probability noise_density": '''
def span_corrupt(token_ids, sentinel_ids, noise_density=0.15, mean_span_length=3.0, generator=None):
    ids = list(token_ids)
    if len(ids) < 2:
        raise ValueError("too short")
    noise = (torch.rand(len(ids), generator=generator) < noise_density).tolist()
    if not any(noise):
        noise[0] = True
    if all(noise):
        noise[-1] = False
    inputs, targets, k = [], [], 0
    for i, t in enumerate(ids):
        if noise[i]:
            if i == 0 or not noise[i - 1]:
                inputs.append(sentinel_ids[k])
                targets.append(sentinel_ids[k])
                k += 1
            targets.append(t)
        else:
            inputs.append(t)
    targets.append(sentinel_ids[k])
    return inputs, targets
''',
        "spans always at the start": _SPAN_HEAD + '''
    lengths = random_split(n_noise, n_spans, generator)
    gaps = [0] + [1] * (n_spans - 1) + [n - n_noise - (n_spans - 1)]
''' + _SPAN_ASSEMBLE,
        "returns tensors": _SPAN_HEAD + '''
    lengths = random_split(n_noise, n_spans, generator)
    gaps = random_split(n - n_noise + 2, n_spans + 1, generator)
    gaps[0] -= 1
    gaps[-1] -= 1
''' + _SPAN_ASSEMBLE.replace("    return inputs, targets", "    return torch.tensor(inputs), torch.tensor(targets)"),
    },
    "merge_spans": {
        "keeps the sentinels": '''
def merge_spans(inputs, targets, sentinel_ids):
    spans, current = {}, None
    for t in targets:
        if t in sentinel_ids:
            current, spans[t] = t, []
        elif current is not None:
            spans[current].append(t)
    out = []
    for t in inputs:
        out += [t] + spans[t] if t in sentinel_ids else [t]
    return out
''',
        "assumes consecutive sentinel ids": '''
def merge_spans(inputs, targets, sentinel_ids):
    first = sentinel_ids[0]
    is_sentinel = lambda t: first <= t < first + len(sentinel_ids)
    spans, current = {}, None
    for t in targets:
        if is_sentinel(t):
            current, spans[t] = t, []
        elif current is not None:
            spans[current].append(t)
    out = []
    for t in inputs:
        out += spans.get(t, []) if is_sentinel(t) else [t]
    return out
''',
        "drops the last span": '''
def merge_spans(inputs, targets, sentinel_ids):
    positions = [i for i, t in enumerate(targets) if t in sentinel_ids]
    spans = {targets[a]: targets[a + 1:b] for a, b in zip(positions, positions[1:-1])}
    out = []
    for t in inputs:
        out += spans.get(t, []) if t in sentinel_ids else [t]
    return out
''',
    },
    "causal_lm_labels": {
        "shifted labels": '''
def causal_lm_labels(input_ids, attention_mask):
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)
''',
        "padding not replaced": '''
def causal_lm_labels(input_ids, attention_mask):
    return input_ids.clone()
''',
        "-100 at the real tokens": '''
def causal_lm_labels(input_ids, attention_mask):
    return input_ids.masked_fill(attention_mask == 1, -100)
''',
        "changes input_ids in place": '''
def causal_lm_labels(input_ids, attention_mask):
    return input_ids.masked_fill_(attention_mask == 0, -100)
''',
    },
    "next_token_loss": {
        "not shifted": '''
def next_token_loss(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
''',
        "shifted the wrong way": '''
def next_token_loss(logits, labels):
    return F.cross_entropy(logits[:, 1:].reshape(-1, logits.shape[-1]), labels[:, :-1].reshape(-1), ignore_index=-100)
''',
        "mean of per-sequence means": '''
def next_token_loss(logits, labels):
    rows = [F.cross_entropy(logits[b, :-1], labels[b, 1:], ignore_index=-100) for b in range(len(labels))]
    return torch.stack(rows).mean()
''',
        "padding not ignored": '''
def next_token_loss(logits, labels):
    logp = logits[:, :-1].log_softmax(-1)
    targets = labels[:, 1:].clamp(min=0)
    return -logp.gather(-1, targets[..., None]).mean()
''',
        "sum instead of mean": '''
def next_token_loss(logits, labels):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100, reduction="sum")
''',
    },
    "architectures": {
        "generative QA as decoder-only": '''
ARCHITECTURE_FOR_TASK = {**ARCHITECTURE_FOR_TASK, "generative question answering": "decoder-only"}
''',
        "T5 as encoder-only": '''
ARCHITECTURE_OF_MODEL = {**ARCHITECTURE_OF_MODEL, "T5": "encoder-only", "course-t5": "encoder-only"}
''',
        "everything decoder-only": '''
ARCHITECTURE_FOR_TASK = {k: "decoder-only" for k in ARCHITECTURE_FOR_TASK}
ARCHITECTURE_OF_MODEL = {k: "decoder-only" for k in ARCHITECTURE_OF_MODEL}
''',
        "a misspelt value": '''
ARCHITECTURE_OF_MODEL = {**ARCHITECTURE_OF_MODEL, "BERT": "encoder"}
''',
    },
    "parameters": {
        "hidden size as a parameter": '''
PARAMETER_OR_HYPERPARAMETER = {**PARAMETER_OR_HYPERPARAMETER, "hidden size": "parameter"}
''',
        "embeddings as a hyperparameter": '''
PARAMETER_OR_HYPERPARAMETER = {**PARAMETER_OR_HYPERPARAMETER, "token embeddings": "hyperparameter"}
''',
        "a key renamed": '''
PARAMETER_OR_HYPERPARAMETER = {("learning_rate" if k == "learning rate" else k): v
                               for k, v in PARAMETER_OR_HYPERPARAMETER.items()}
''',
    },
    "build_model": {
        "BertModel without the masked-LM head": _build(bert="BertModel"),
        "T5 with the default d_kv": _build(t5="num_decoder_layers=n_layers"),
        "T5 with one decoder layer": _build(t5="d_kv=d_model // n_heads, num_decoder_layers=1"),
        "GPT-2 always with 4 heads": _build(gpt_heads="4"),
        "unknown kinds give None": _build(unknown="return None"),
    },
    "training_step": {
        "no zero_grad": '''
def training_step(model, batch, optimizer):
    model.train()
    if model.config.model_type in ("bert", "t5"):
        loss = model(**batch).loss
    else:
        loss = next_token_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                               batch["labels"])
    loss.backward()
    optimizer.step()
    return loss.item()
''',
        "returns the loss tensor": '''
def training_step(model, batch, optimizer):
    if model.config.model_type in ("bert", "t5"):
        loss = model(**batch).loss
    else:
        loss = next_token_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                               batch["labels"])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()
''',
        "step before backward": '''
def training_step(model, batch, optimizer):
    if model.config.model_type in ("bert", "t5"):
        loss = model(**batch).loss
    else:
        loss = next_token_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                               batch["labels"])
    optimizer.zero_grad()
    optimizer.step()
    loss.backward()
    return loss.item()
''',
        "decoder-only loss not shifted": '''
def training_step(model, batch, optimizer):
    if model.config.model_type in ("bert", "t5"):
        loss = model(**batch).loss
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
''' + _STEP_TAIL,
        "T5 fed its labels as decoder inputs": '''
def training_step(model, batch, optimizer):
    if model.config.model_type == "bert":
        loss = model(**batch).loss
    elif model.config.model_type == "t5":
        labels = batch["labels"]
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=labels.clamp(min=0)).logits
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    else:
        loss = next_token_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                               batch["labels"])
''' + _STEP_TAIL,
    },
}

MUTANT_CASES = [pytest.param(exercise, name, source, id=f"{exercise}: {name}")
                for exercise, mutants in MUTANTS.items() for name, source in mutants.items()]


def test_every_exercise_has_three_mutants():
    assert set(MUTANTS) == set(EXERCISES)
    assert all(len(m) >= 3 for m in MUTANTS.values())


SPECIFIC_HINTS = [  # (exercise, mutant, words that the hint of some failing check must contain)
    ("attention_visibility", "causal is the upper triangle", "tril, not triu"),
    ("attention_visibility", "causal without the diagonal", "keep the diagonal"),
    ("mask_tokens", "80/10/10 applied to all positions", "only to the picked positions"),
    ("mask_tokens", "labels left at the original ids", "-100 everywhere else"),
    ("mask_tokens", "special tokens can be picked", "special_tokens_mask is True"),
    ("mask_tokens", "random ids up to vocab_size inclusive", "excludes vocab_size"),
    ("mask_tokens", "masks input_ids in place", "clone"),
    ("span_corrupt", "spans may touch", "one span"),
    ("span_corrupt", "no closing sentinel", "close the targets"),
    ("span_corrupt", "returns tensors", ".tolist()"),
    ("merge_spans", "keeps the sentinels", "still contains sentinels"),
    ("merge_spans", "drops the last span", "missing"),
    ("causal_lm_labels", "shifted labels", "shift them inside the loss"),
    ("next_token_loss", "not shifted", "not shifted"),
    ("next_token_loss", "shifted the wrong way", "wrong way"),
    ("next_token_loss", "mean of per-sequence means", "per-sequence means"),
    ("next_token_loss", "padding not ignored", "not ignored"),
    ("training_step", "returns the loss tensor", "loss.item()"),
    ("training_step", "no zero_grad", "pile up"),
]
EXPECTED_HINT = {(exercise, mutant): words for exercise, mutant, words in SPECIFIC_HINTS}


@pytest.mark.parametrize("exercise, name, source", MUTANT_CASES)
def test_mutant_loses_points(exercise, name, source):
    A.assert_mutant_loses_points(exercise, name, source, EXPECTED_HINT.get((exercise, name)))


def test_specific_hints_refer_to_real_mutants():
    assert all(mutant in MUTANTS[exercise] for exercise, mutant, _ in SPECIFIC_HINTS)


def not_implemented(exercise: str) -> str:
    """The exercise as a student receives it: the template, or a function raising NotImplementedError."""
    if exercise == "architectures":
        return ("ARCHITECTURE_FOR_TASK = dict.fromkeys(ARCHITECTURE_FOR_TASK)\n"
                "ARCHITECTURE_OF_MODEL = dict.fromkeys(ARCHITECTURE_OF_MODEL)\n")
    if exercise == "parameters":
        return "PARAMETER_OR_HYPERPARAMETER = dict.fromkeys(PARAMETER_OR_HYPERPARAMETER)\n"
    return A.not_implemented(exercise)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_an_exercise_keeps_its_points_when_what_it_does_not_use_is_broken(exercise):
    # Whatever is wrong elsewhere, no check of `exercise` may notice unless `exercise` uses it: every exercise it does
    # not use is made unimplemented, then given its first mutant (each mutant's own exercise: test_mutant_loses_points).
    A.assert_spared_by_what_it_does_not_use(
        exercise, {e: [("not implemented", not_implemented(e)), next(iter(MUTANTS[e].items()))] for e in EXERCISES})


# -- junk: no right answer, no points ----------------------------------------------------------------
@pytest.mark.parametrize("exercise, what, source", [pytest.param(*case, id=f"{case[0]}: {case[1]}")
                                                     for case in A.junk_cases()])
def test_junk_scores_nothing(exercise, what, source):
    """A function that returns junk or raises (a module whose methods do) earns no check's points, side
    properties (inputs unchanged, dtype, shape, structure, errors raised) included."""
    A.assert_junk_scores_nothing(exercise, what, source)


# -- other correct implementations ------------------------------------------------------------------

ALTERNATIVES = {
    "attention_visibility": {
        "comparing positions": '''
def attention_visibility(kind, n_query, n_key=None):
    n_key = n_query if n_key is None else n_key
    rows, cols = torch.arange(n_query)[:, None], torch.arange(n_key)[None, :]
    if kind == "causal" and n_key == n_query:
        return cols <= rows
    if kind in ("bidirectional", "cross"):
        return (rows >= 0) & (cols >= 0)
    raise ValueError(f"bad kind {kind}")
''',
        "triu complement and full": '''
def attention_visibility(kind, n_query, n_key=None):
    if n_key is None:
        n_key = n_query
    masks = {"bidirectional": lambda: torch.full((n_query, n_key), True),
             "cross": lambda: torch.full((n_query, n_key), True),
             "causal": lambda: ~torch.ones(n_query, n_key, dtype=torch.bool).triu(1)}
    if kind not in masks or (kind == "causal" and n_key != n_query):
        raise ValueError(kind)
    return masks[kind]()
''',
    },
    "mask_tokens": {
        "Bernoulli draws as in transformers' data collator": '''
def mask_tokens(input_ids, mask_token_id, vocab_size, special_tokens_mask=None, mlm_probability=0.15, generator=None):
    labels = input_ids.clone()
    probability = torch.full(labels.shape, mlm_probability)
    if special_tokens_mask is not None:
        probability.masked_fill_(special_tokens_mask.bool(), 0.0)
    picked = torch.bernoulli(probability, generator=generator).bool()
    labels[~picked] = -100
    inputs = input_ids.clone()
    replaced = torch.bernoulli(torch.full(labels.shape, 0.8), generator=generator).bool() & picked
    inputs[replaced] = mask_token_id
    randomised = torch.bernoulli(torch.full(labels.shape, 0.5), generator=generator).bool() & picked & ~replaced
    inputs[randomised] = torch.randint(vocab_size, labels.shape, generator=generator, dtype=input_ids.dtype)[randomised]
    return inputs, labels
''',
        "random ids first, flat indexing": '''
def mask_tokens(input_ids, mask_token_id, vocab_size, special_tokens_mask=None, mlm_probability=0.15, generator=None):
    flat = input_ids.reshape(-1)
    random_ids = torch.randint(0, vocab_size, flat.shape, generator=generator)
    u = torch.rand(flat.shape, generator=generator)
    v = torch.rand(flat.shape, generator=generator)
    allowed = torch.ones_like(flat, dtype=torch.bool) if special_tokens_mask is None else special_tokens_mask.reshape(-1) == 0
    picked = (v < mlm_probability) & allowed
    inputs, labels = flat.clone(), torch.full_like(flat, -100)
    labels[picked] = flat[picked]
    inputs[picked & (u >= 0.2)] = mask_token_id           # 80%
    choose = picked & (u < 0.1)                           # 10% random
    inputs[choose] = random_ids[choose].to(flat.dtype)
    return inputs.reshape(input_ids.shape), labels.reshape(input_ids.shape)
''',
    },
    "span_corrupt": {
        "T5's original: every span after a kept stretch": '''
def span_corrupt(token_ids, sentinel_ids, noise_density=0.15, mean_span_length=3.0, generator=None):
    ids = list(token_ids)
    n = len(ids)
    if n < 2:
        raise ValueError("need two tokens")
    n_noise = min(max(round(n * noise_density), 1), n - 1)
    n_spans = max(1, min(round(n_noise / mean_span_length), n_noise, n - n_noise, len(sentinel_ids) - 1))

    def split(total, parts):
        order = torch.randperm(total - 1, generator=generator)[:parts - 1]
        cuts = sorted((order + 1).tolist())
        return [b - a for a, b in zip([0] + cuts, cuts + [total])]

    noise, kept = split(n_noise, n_spans), split(n - n_noise, n_spans)
    inputs, targets, pos = [], [], 0
    for k in range(n_spans):  # kept stretch, then span
        inputs += ids[pos:pos + kept[k]]
        pos += kept[k]
        inputs.append(sentinel_ids[k])
        targets += [sentinel_ids[k], *ids[pos:pos + noise[k]]]
        pos += noise[k]
    targets.append(sentinel_ids[n_spans])
    return inputs, targets
''',
        "slots among the kept tokens, lengths grown one token at a time": '''
def span_corrupt(token_ids, sentinel_ids, noise_density=0.15, mean_span_length=3.0, generator=None):
    ids = [int(t) for t in token_ids]
    n = len(ids)
    if n < 2:
        raise ValueError("need two tokens")
    n_noise = min(max(round(n * noise_density), 1), n - 1)
    n_spans = max(1, min(round(n_noise / mean_span_length), n_noise, n - n_noise, len(sentinel_ids) - 1))
    n_keep = n - n_noise
    # A span goes in a slot before kept token j (j = 0..n_keep, n_keep = after the last): distinct slots never touch.
    slots = sorted(torch.randperm(n_keep + 1, generator=generator)[:n_spans].tolist())
    lengths = [1] * n_spans
    for k in torch.randint(0, n_spans, (n_noise - n_spans,), generator=generator).tolist():
        lengths[k] += 1
    noise_at = dict(zip(slots, lengths))
    inputs, targets, pos, k = [], [], 0, 0
    for j in range(n_keep + 1):
        if j in noise_at:
            inputs.append(sentinel_ids[k])
            targets += [sentinel_ids[k]] + ids[pos:pos + noise_at[j]]
            pos += noise_at[j]
            k += 1
        if j < n_keep:
            inputs.append(ids[pos])
            pos += 1
    targets.append(sentinel_ids[k])
    return inputs, targets
''',
    },
    "merge_spans": {
        "index lookups": '''
def merge_spans(inputs, targets, sentinel_ids):
    out = []
    for t in inputs:
        if t not in sentinel_ids:
            out.append(t)
            continue
        k = sentinel_ids.index(t)
        start = targets.index(t) + 1
        end = targets.index(sentinel_ids[k + 1])
        out.extend(targets[start:end])
    return out
''',
        "one iterator over the spans": '''
def merge_spans(inputs, targets, sentinel_ids):
    marks = set(sentinel_ids)
    spans, current = [], None
    for t in targets:
        if t in marks:
            current = []
            spans.append(current)
        else:
            current.append(t)
    it = iter(spans)
    result = []
    for t in inputs:
        result.extend(next(it) if t in marks else [t])
    return result
''',
    },
    "causal_lm_labels": {
        "torch.where": '''
def causal_lm_labels(input_ids, attention_mask):
    return torch.where(attention_mask.bool(), input_ids, torch.tensor(-100))
''',
        "clone and assign": '''
def causal_lm_labels(input_ids, attention_mask):
    labels = input_ids.clone()
    labels[attention_mask == 0] = -100
    return labels
''',
    },
    "next_token_loss": {
        "log-softmax and gather": '''
def next_token_loss(logits, labels):
    logp = logits[:, :-1].log_softmax(dim=-1)
    targets = labels[:, 1:]
    keep = targets != -100
    picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return -(picked * keep).sum() / keep.sum()
''',
        "labels shifted left with -100 padding": '''
def next_token_loss(logits, labels):
    shifted = F.pad(labels, (0, 1), value=-100)[:, 1:]
    return F.cross_entropy(logits.transpose(1, 2), shifted, ignore_index=-100)
''',
    },
    "architectures": {
        "written out": '''
ARCHITECTURE_FOR_TASK = {"sentiment analysis": "encoder-only", "named entity recognition": "encoder-only",
    "word classification": "encoder-only", "extractive question answering": "encoder-only",
    "translation": "encoder-decoder", "summarization": "encoder-decoder",
    "generative question answering": "encoder-decoder", "open text generation": "decoder-only"}
''',
        "built from lists": '''
families = {"encoder-only": ["BERT", "DistilBERT", "RoBERTa", "course-mlm"],
            "encoder-decoder": ["BART", "T5", "course-t5"], "decoder-only": ["GPT-2", "BLOOM", "LLaMA", "PaLM", "course-lm"]}
ARCHITECTURE_OF_MODEL = {m: f for f, models in families.items() for m in models}
''',
    },
    "parameters": {
        "written out": '''
PARAMETER_OR_HYPERPARAMETER = {"attention weights": "parameter", "feed-forward weights": "parameter",
    "token embeddings": "parameter", "biases": "parameter", "LayerNorm gains": "parameter",
    "learning rate": "hyperparameter", "batch size": "hyperparameter", "number of layers": "hyperparameter",
    "number of heads": "hyperparameter", "hidden size": "hyperparameter", "dropout rate": "hyperparameter",
    "warmup steps": "hyperparameter"}
''',
        "the hyperparameters listed": '''
chosen = {"learning rate", "batch size", "number of layers", "number of heads", "hidden size", "dropout rate", "warmup steps"}
PARAMETER_OR_HYPERPARAMETER = {k: "hyperparameter" if k in chosen else "parameter" for k in PARAMETER_OR_HYPERPARAMETER}
''',
    },
    "build_model": {
        "Auto classes from configs": '''
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, BertConfig, GPT2Config, T5Config
def build_model(kind, vocab_size, d_model=64, n_layers=2, n_heads=4):
    configs = {
        "encoder-only": (AutoModelForMaskedLM, lambda: BertConfig(vocab_size=vocab_size, hidden_size=d_model,
                         num_hidden_layers=n_layers, num_attention_heads=n_heads, intermediate_size=2 * d_model)),
        "encoder-decoder": (AutoModelForSeq2SeqLM, lambda: T5Config(vocab_size=vocab_size, d_model=d_model,
                            d_kv=d_model // n_heads, d_ff=2 * d_model, num_layers=n_layers, num_heads=n_heads,
                            feed_forward_proj="gated-gelu", decoder_start_token_id=0)),
        "decoder-only": (AutoModelForCausalLM, lambda: GPT2Config(vocab_size=vocab_size, n_embd=d_model, n_layer=n_layers,
                         n_head=n_heads, n_positions=512, bos_token_id=1, eos_token_id=2)),
    }
    if kind not in configs:
        raise ValueError(f"no such kind: {kind}")
    auto, config = configs[kind]
    return auto.from_config(config())
''',
        "no dropout, explicit decoder layers": '''
import transformers
def build_model(kind, vocab_size, d_model=64, n_layers=2, n_heads=4):
    if kind == "decoder-only":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=vocab_size, n_embd=d_model,
            n_layer=n_layers, n_head=n_heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    if kind == "encoder-only":
        return transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=vocab_size, hidden_size=d_model,
            num_hidden_layers=n_layers, num_attention_heads=n_heads, intermediate_size=4 * d_model,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    if kind == "encoder-decoder":
        return transformers.T5ForConditionalGeneration(transformers.T5Config(vocab_size=vocab_size, d_model=d_model,
            d_kv=d_model // n_heads, d_ff=4 * d_model, num_layers=n_layers, num_decoder_layers=n_layers,
            num_heads=n_heads, dropout_rate=0.0, pad_token_id=0, decoder_start_token_id=0))
    raise ValueError(kind)
''',
    },
    "training_step": {
        "the model's own loss for every kind": '''
def training_step(model, batch, optimizer):
    optimizer.zero_grad()
    model.train()
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    return float(loss)
''',
        "decoder by model class, zero_grad after the step": '''
from transformers import GPT2LMHeadModel
def training_step(model, batch, optimizer):
    if isinstance(model, GPT2LMHeadModel):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = next_token_loss(out.logits, batch["labels"])
    else:
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach().item()
''',
    },
}

ALTERNATIVE_CASES = [pytest.param(exercise, name, source, id=f"{exercise}: {name}")
                     for exercise, alternatives in ALTERNATIVES.items() for name, source in alternatives.items()]


def test_every_exercise_has_two_alternatives():
    assert set(ALTERNATIVES) == set(EXERCISES)
    assert all(len(a) >= 2 for a in ALTERNATIVES.values())


@pytest.mark.parametrize("exercise, name, source", ALTERNATIVE_CASES)
def test_alternative_solution_gets_full_marks(exercise, name, source):
    A.assert_alternative_gets_full_marks(exercise, name, source)


def test_span_corrupt_alternatives_round_trip_through_merge_spans():
    """The contract's identity, merge_spans(*span_corrupt(x, s), s) == x, for every procedure and the solution."""
    for source in [""] + list(ALTERNATIVES["span_corrupt"].values()):
        ns = namespace_with(source)
        generator = torch.Generator().manual_seed(0)
        for n in range(2, 80):
            tokens = list(range(100, 100 + n))
            assert ns["merge_spans"](*ns["span_corrupt"](tokens, list(range(5, 37)), generator=generator),
                                     list(range(5, 37))) == tokens


# -- what ships to students -------------------------------------------------------------------------

def test_visible_checks_hold_no_reference_solution():
    import grader.reference.variants as reference

    for path in (ROOT / "llmcourse" / "checks" / "variants.py", ROOT / "llmcourse" / "variants_tools.py"):
        tree = ast.parse(path.read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not any(name.split(".")[0] == "grader" for name in imported), imported
        solution_names = {name for name, obj in vars(reference).items()
                          if not name.startswith("_") and getattr(obj, "__module__", None) == reference.__name__}
        assert {"mask_tokens", "span_corrupt", "next_token_loss", "training_step"} <= solution_names
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert not defined & solution_names, defined & solution_names
        text = path.read_text()
        assert "generative question answering\": \"encoder" not in text  # the quiz answers stay hidden


def test_notebook_follows_the_course_conventions():
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source == ("import torch\nimport torch.nn as nn\nimport matplotlib.pyplot as plt\n"
                              "from llmcourse import notebook_setup, check\n\ndevice = notebook_setup()")
    assert code[0].metadata["nbgrader"] == {"grade": False, "solution": False, "locked": True, "grade_id": "setup",
                                            "schema_version": 3}
    solutions = {c.metadata["nbgrader"]["grade_id"]: c for c in code if c.metadata.get("nbgrader", {}).get("solution")}
    assert set(solutions) == set(EXERCISES)
    for exercise, cell in solutions.items():
        assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source, exercise
    for cell in code:
        assert not cell.get("outputs") and cell.get("execution_count") is None
        assert not any(line.lstrip().startswith(("%", "!")) for line in cell.source.splitlines())
        if is_check_cell(cell):
            exercise = cell.metadata["nbgrader"]["grade_id"].removeprefix("check_")
            assert cell.source == (f'check("02_variants/{exercise}")\n### BEGIN HIDDEN TESTS\n'
                                   f'check("02_variants/{exercise}", hidden=True)\n### END HIDDEN TESTS')
    assert any("```mermaid" in c.source for c in nb.cells if c.cell_type == "markdown")
