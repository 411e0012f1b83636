"""02_variants: the cases its checks are tried against (see tests/specs/__init__.py for the form).

The random procedures (mask_tokens, span_corrupt) have alternatives that draw in another order or by another
procedure: the checks must judge the distribution, not one seeded draw. `architectures` and `parameters` are
quiz cells: a case's body is the cell, run after the solution's, and its parameters are the answers it edits.
"""
from __future__ import annotations

import re
from collections import Counter

import torch
import torch.nn.functional as F
import transformers

from grader.reference.variants import BYTE_SYMBOL, _split as random_split, next_token_loss, pre_split, to_symbols
from tests.specs import Spec

SPEC = Spec(
    "02_variants",
    depends_on={
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
        "train_bpe": set(),
        "bpe_encode": set(),
    },
    solution_names={"architectures": "ARCHITECTURE_FOR_TASK", "parameters": "PARAMETER_OR_HYPERPARAMETER"},
    student_modules=("llmcourse.in_kernel",),
)


# -- attention_visibility ---------------------------------------------------------------------------------

@SPEC.mutant("attention_visibility", hint="tril, not triu")
def causal_is_the_upper_triangle(kind, n_query, n_key=None):
    n_key = n_query if n_key is None else n_key
    if kind in ("bidirectional", "cross"):
        return torch.ones(n_query, n_key, dtype=torch.bool)
    if kind == "causal":
        return torch.ones(n_query, n_query, dtype=torch.bool).triu()
    raise ValueError(kind)


@SPEC.mutant("attention_visibility", hint="keep the diagonal")
def causal_without_the_diagonal(kind, n_query, n_key=None):
    n_key = n_query if n_key is None else n_key
    if kind in ("bidirectional", "cross"):
        return torch.ones(n_query, n_key, dtype=torch.bool)
    if kind == "causal":
        return torch.ones(n_query, n_query, dtype=torch.bool).tril(-1)
    raise ValueError(kind)


@SPEC.mutant("attention_visibility", hint="one column per encoder position")
def cross_is_square(kind, n_query, n_key=None):
    if kind in ("bidirectional", "cross"):
        return torch.ones(n_query, n_query, dtype=torch.bool)
    if kind == "causal":
        return torch.ones(n_query, n_query, dtype=torch.bool).tril()
    raise ValueError(kind)


@SPEC.mutant("attention_visibility", hint="Build it with dtype=torch.bool")
def float_mask(kind, n_query, n_key=None):
    n_key = n_query if n_key is None else n_key
    if kind in ("bidirectional", "cross"):
        return torch.ones(n_query, n_key)
    if kind == "causal":
        return torch.ones(n_query, n_query).tril()
    raise ValueError(kind)


@SPEC.mutant("attention_visibility", hint="instead of silently giving a mask that lets every position see every other")
def unknown_kinds_get_a_full_mask(kind, n_query, n_key=None):
    n_key = n_query if n_key is None else n_key
    if kind == "causal":
        return torch.ones(n_query, n_query, dtype=torch.bool).tril()
    return torch.ones(n_query, n_key, dtype=torch.bool)


@SPEC.alternative("attention_visibility")
def comparing_positions(kind, n_query, n_key=None):
    n_key = n_query if n_key is None else n_key
    rows, cols = torch.arange(n_query)[:, None], torch.arange(n_key)[None, :]
    if kind == "causal" and n_key == n_query:
        return cols <= rows
    if kind in ("bidirectional", "cross"):
        return (rows >= 0) & (cols >= 0)
    raise ValueError(f"bad kind {kind}")


@SPEC.alternative("attention_visibility")
def triu_complement_and_full(kind, n_query, n_key=None):
    if n_key is None:
        n_key = n_query
    masks = {"bidirectional": lambda: torch.full((n_query, n_key), True),
             "cross": lambda: torch.full((n_query, n_key), True),
             "causal": lambda: ~torch.ones(n_query, n_key, dtype=torch.bool).triu(1)}
    if kind not in masks or (kind == "causal" and n_key != n_query):
        raise ValueError(kind)
    return masks[kind]()


# -- mask_tokens ------------------------------------------------------------------------------------------

@SPEC.mutant("mask_tokens", name="80/10/10 applied to all positions", hint="only to the picked positions")
def eighty_ten_ten_applied_to_all_positions(input_ids, mask_token_id, vocab_size, special_tokens_mask=None,
                                            mlm_probability=0.15, generator=None):
    shape = input_ids.shape
    picked = torch.rand(shape, generator=generator) < mlm_probability
    if special_tokens_mask is not None:
        picked &= ~special_tokens_mask.bool()
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(shape, generator=generator)
    random_ids = torch.randint(0, vocab_size, shape, generator=generator)
    inputs = torch.where(picked & (roll < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where((roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels


@SPEC.mutant("mask_tokens", hint="-100 everywhere else")
def labels_left_at_the_original_ids(input_ids, mask_token_id, vocab_size, special_tokens_mask=None,
                                    mlm_probability=0.15, generator=None):
    shape = input_ids.shape
    picked = torch.rand(shape, generator=generator) < mlm_probability
    if special_tokens_mask is not None:
        picked &= ~special_tokens_mask.bool()
    roll = torch.rand(shape, generator=generator)
    random_ids = torch.randint(0, vocab_size, shape, generator=generator)
    inputs = torch.where(picked & (roll < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(picked & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, input_ids.clone()


@SPEC.mutant("mask_tokens", hint="special_tokens_mask is True")
def special_tokens_can_be_picked(input_ids, mask_token_id, vocab_size, special_tokens_mask=None,
                                 mlm_probability=0.15, generator=None):
    shape = input_ids.shape
    picked = torch.rand(shape, generator=generator) < mlm_probability
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(shape, generator=generator)
    random_ids = torch.randint(0, vocab_size, shape, generator=generator)
    inputs = torch.where(picked & (roll < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(picked & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels


@SPEC.mutant("mask_tokens", hint="Every picked position became the mask token")
def every_picked_position_masked(input_ids, mask_token_id, vocab_size, special_tokens_mask=None,
                                 mlm_probability=0.15, generator=None):
    shape = input_ids.shape
    picked = torch.rand(shape, generator=generator) < mlm_probability
    if special_tokens_mask is not None:
        picked &= ~special_tokens_mask.bool()
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    return input_ids.masked_fill(picked, mask_token_id), labels


@SPEC.mutant("mask_tokens", hint="Only about 2% of the picked positions became a random id",
             name="random share drawn with 0.1 from the rest (2%)")
def random_share_drawn_with_a_tenth_of_the_rest(input_ids, mask_token_id, vocab_size, special_tokens_mask=None,
                                                mlm_probability=0.15, generator=None):
    shape = input_ids.shape
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


@SPEC.mutant("mask_tokens", name="random ids up to vocab_size inclusive", hint="excludes vocab_size")
def random_ids_up_to_vocab_size_inclusive(input_ids, mask_token_id, vocab_size, special_tokens_mask=None,
                                          mlm_probability=0.15, generator=None):
    shape = input_ids.shape
    picked = torch.rand(shape, generator=generator) < mlm_probability
    if special_tokens_mask is not None:
        picked &= ~special_tokens_mask.bool()
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(shape, generator=generator)
    random_ids = torch.randint(0, vocab_size + 1, shape, generator=generator)
    inputs = torch.where(picked & (roll < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(picked & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels


@SPEC.mutant("mask_tokens", hint="Pass generator=generator to every")
def ignores_the_generator(input_ids, mask_token_id, vocab_size, special_tokens_mask=None,
                          mlm_probability=0.15, generator=None):
    shape = input_ids.shape
    picked = torch.rand(shape) < mlm_probability
    if special_tokens_mask is not None:
        picked &= ~special_tokens_mask.bool()
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(shape)
    random_ids = torch.randint(0, vocab_size, shape)
    inputs = torch.where(picked & (roll < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(picked & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels


@SPEC.mutant("mask_tokens", name="masks input_ids in place", hint="clone")
def masks_input_ids_in_place(input_ids, mask_token_id, vocab_size, special_tokens_mask=None,
                             mlm_probability=0.15, generator=None):
    shape = input_ids.shape
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


@SPEC.alternative("mask_tokens", name="Bernoulli draws as in transformers' data collator")
def bernoulli_draws_as_in_the_data_collator(input_ids, mask_token_id, vocab_size, special_tokens_mask=None,
                                            mlm_probability=0.15, generator=None):
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


@SPEC.alternative("mask_tokens", name="random ids first, flat indexing")
def random_ids_first_flat_indexing(input_ids, mask_token_id, vocab_size, special_tokens_mask=None,
                                   mlm_probability=0.15, generator=None):
    flat = input_ids.reshape(-1)
    random_ids = torch.randint(0, vocab_size, flat.shape, generator=generator)
    u = torch.rand(flat.shape, generator=generator)
    v = torch.rand(flat.shape, generator=generator)
    allowed = (torch.ones_like(flat, dtype=torch.bool) if special_tokens_mask is None
               else special_tokens_mask.reshape(-1) == 0)
    picked = (v < mlm_probability) & allowed
    inputs, labels = flat.clone(), torch.full_like(flat, -100)
    labels[picked] = flat[picked]
    inputs[picked & (u >= 0.2)] = mask_token_id  # 80%
    choose = picked & (u < 0.1)  # 10% random
    inputs[choose] = random_ids[choose].to(flat.dtype)
    return inputs.reshape(input_ids.shape), labels.reshape(input_ids.shape)


# -- span_corrupt: most mutants count and lay out spans as the solution does, and err in one step ---------

def noise_counts(ids, sentinel_ids, noise_density, mean_span_length):
    """(n_noise, n_spans) by the notebook's rule; fewer than two tokens is an error."""
    n = len(ids)
    if n < 2:
        raise ValueError("too short")
    n_noise = min(max(round(n * noise_density), 1), n - 1)
    n_spans = max(1, min(round(n_noise / mean_span_length), n_noise, n - n_noise, len(sentinel_ids) - 1))
    return n_noise, n_spans


def corrupted_pair(ids, sentinel_ids, gaps, lengths):
    """(inputs, targets): gaps[k] kept tokens, then span k (lengths[k] tokens) behind sentinel k; the rest kept,
    and the targets closed by the next sentinel."""
    inputs, targets, pos = [], [], 0
    for k in range(len(lengths)):
        inputs += ids[pos:pos + gaps[k]]
        pos += gaps[k]
        inputs.append(sentinel_ids[k])
        targets += [sentinel_ids[k]] + ids[pos:pos + lengths[k]]
        pos += lengths[k]
    inputs += ids[pos:]
    targets.append(sentinel_ids[len(lengths)])
    return inputs, targets


@SPEC.mutant("span_corrupt", hint="one span", uses=(noise_counts, corrupted_pair))
def spans_may_touch(token_ids, sentinel_ids, noise_density=0.15, mean_span_length=3.0, generator=None):
    ids = list(token_ids)
    n_noise, n_spans = noise_counts(ids, sentinel_ids, noise_density, mean_span_length)
    lengths = random_split(n_noise, n_spans, generator)
    gaps = random_split(len(ids) - n_noise + n_spans + 1, n_spans + 1, generator)
    gaps = [g - 1 for g in gaps]  # every stretch may be empty, the inner ones too
    return corrupted_pair(ids, sentinel_ids, gaps, lengths)


@SPEC.mutant("span_corrupt", hint="close the targets", uses=(noise_counts, corrupted_pair))
def no_closing_sentinel(token_ids, sentinel_ids, noise_density=0.15, mean_span_length=3.0, generator=None):
    ids = list(token_ids)
    n_noise, n_spans = noise_counts(ids, sentinel_ids, noise_density, mean_span_length)
    lengths = random_split(n_noise, n_spans, generator)
    gaps = random_split(len(ids) - n_noise + 2, n_spans + 1, generator)
    gaps[0] -= 1
    gaps[-1] -= 1
    inputs, targets = corrupted_pair(ids, sentinel_ids, gaps, lengths)
    return inputs, targets[:-1]


@SPEC.mutant("span_corrupt", hint="they are not all equal to it",
             name="every span exactly mean_span_length long", uses=(noise_counts, corrupted_pair))
def every_span_equally_long(token_ids, sentinel_ids, noise_density=0.15, mean_span_length=3.0, generator=None):
    ids = list(token_ids)
    n_noise, n_spans = noise_counts(ids, sentinel_ids, noise_density, mean_span_length)
    lengths = [n_noise // n_spans] * n_spans
    lengths[-1] += n_noise - sum(lengths)
    gaps = random_split(len(ids) - n_noise + 2, n_spans + 1, generator)
    gaps[0] -= 1
    gaps[-1] -= 1
    return corrupted_pair(ids, sentinel_ids, gaps, lengths)


@SPEC.mutant("span_corrupt", hint="The number of corrupted tokens changes from seed to seed",
             name="each token corrupted with probability noise_density")
def each_token_corrupted_independently(token_ids, sentinel_ids, noise_density=0.15, mean_span_length=3.0,
                                       generator=None):
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


@SPEC.mutant("span_corrupt", hint="not always at the same places", uses=(noise_counts, corrupted_pair))
def spans_always_at_the_start(token_ids, sentinel_ids, noise_density=0.15, mean_span_length=3.0, generator=None):
    ids = list(token_ids)
    n_noise, n_spans = noise_counts(ids, sentinel_ids, noise_density, mean_span_length)
    lengths = random_split(n_noise, n_spans, generator)
    gaps = [0] + [1] * (n_spans - 1) + [len(ids) - n_noise - (n_spans - 1)]
    return corrupted_pair(ids, sentinel_ids, gaps, lengths)


@SPEC.mutant("span_corrupt", hint=".tolist()", uses=(noise_counts, corrupted_pair))
def returns_tensors(token_ids, sentinel_ids, noise_density=0.15, mean_span_length=3.0, generator=None):
    ids = list(token_ids)
    n_noise, n_spans = noise_counts(ids, sentinel_ids, noise_density, mean_span_length)
    lengths = random_split(n_noise, n_spans, generator)
    gaps = random_split(len(ids) - n_noise + 2, n_spans + 1, generator)
    gaps[0] -= 1
    gaps[-1] -= 1
    inputs, targets = corrupted_pair(ids, sentinel_ids, gaps, lengths)
    return torch.tensor(inputs), torch.tensor(targets)


@SPEC.alternative("span_corrupt", name="T5's original: every span after a kept stretch")
def every_span_after_a_kept_stretch(token_ids, sentinel_ids, noise_density=0.15, mean_span_length=3.0,
                                    generator=None):
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


@SPEC.alternative("span_corrupt", name="slots among the kept tokens, lengths grown one token at a time")
def slots_among_the_kept_tokens(token_ids, sentinel_ids, noise_density=0.15, mean_span_length=3.0, generator=None):
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


# -- merge_spans ------------------------------------------------------------------------------------------

@SPEC.mutant("merge_spans", hint="still contains sentinels")
def keeps_the_sentinels(inputs, targets, sentinel_ids):
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


@SPEC.mutant("merge_spans", hint="not by its value")
def assumes_consecutive_sentinel_ids(inputs, targets, sentinel_ids):
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


@SPEC.mutant("merge_spans", hint="missing")
def drops_the_last_span(inputs, targets, sentinel_ids):
    positions = [i for i, t in enumerate(targets) if t in sentinel_ids]
    spans = {targets[a]: targets[a + 1:b] for a, b in zip(positions, positions[1:-1])}
    out = []
    for t in inputs:
        out += spans.get(t, []) if t in sentinel_ids else [t]
    return out


@SPEC.alternative("merge_spans")
def index_lookups(inputs, targets, sentinel_ids):
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


@SPEC.alternative("merge_spans")
def one_iterator_over_the_spans(inputs, targets, sentinel_ids):
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


# -- causal_lm_labels -------------------------------------------------------------------------------------

@SPEC.mutant("causal_lm_labels", hint="shift them inside the loss")
def shifted_labels(input_ids, attention_mask):
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)


@SPEC.mutant("causal_lm_labels", hint="The padding is not replaced")
def padding_not_replaced(input_ids, attention_mask):
    return input_ids.clone()


@SPEC.mutant("causal_lm_labels", hint="The -100s are at the real tokens", name="-100 at the real tokens")
def minus_100_at_the_real_tokens(input_ids, attention_mask):
    return input_ids.masked_fill(attention_mask == 1, -100)


@SPEC.mutant("causal_lm_labels", hint="not masked_fill_", name="changes input_ids in place")
def changes_input_ids_in_place(input_ids, attention_mask):
    return input_ids.masked_fill_(attention_mask == 0, -100)


@SPEC.alternative("causal_lm_labels", name="torch.where")
def torch_where(input_ids, attention_mask):
    return torch.where(attention_mask.bool(), input_ids, torch.tensor(-100))


@SPEC.alternative("causal_lm_labels")
def clone_and_assign(input_ids, attention_mask):
    labels = input_ids.clone()
    labels[attention_mask == 0] = -100
    return labels


# -- next_token_loss --------------------------------------------------------------------------------------

@SPEC.mutant("next_token_loss", hint="not shifted")
def not_shifted(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


@SPEC.mutant("next_token_loss", hint="wrong way")
def shifted_the_wrong_way(logits, labels):
    return F.cross_entropy(logits[:, 1:].reshape(-1, logits.shape[-1]), labels[:, :-1].reshape(-1), ignore_index=-100)


@SPEC.mutant("next_token_loss", name="mean of per-sequence means", hint="per-sequence means")
def mean_of_per_sequence_means(logits, labels):
    rows = [F.cross_entropy(logits[b, :-1], labels[b, 1:], ignore_index=-100) for b in range(len(labels))]
    return torch.stack(rows).mean()


@SPEC.mutant("next_token_loss", hint="not ignored")
def padding_not_ignored(logits, labels):
    logp = logits[:, :-1].log_softmax(-1)
    targets = labels[:, 1:].clamp(min=0)
    return -logp.gather(-1, targets[..., None]).mean()


@SPEC.mutant("next_token_loss", hint="This is the sum over tokens")
def sum_instead_of_mean(logits, labels):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100, reduction="sum")


@SPEC.alternative("next_token_loss", name="log-softmax and gather")
def log_softmax_and_gather(logits, labels):
    logp = logits[:, :-1].log_softmax(dim=-1)
    targets = labels[:, 1:]
    keep = targets != -100
    picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return -(picked * keep).sum() / keep.sum()


@SPEC.alternative("next_token_loss", name="labels shifted left with -100 padding")
def labels_shifted_left_with_padding(logits, labels):
    shifted = F.pad(labels, (0, 1), value=-100)[:, 1:]
    return F.cross_entropy(logits.transpose(1, 2), shifted, ignore_index=-100)


# -- architectures: the body is the quiz cell, run after the solution's ----------------------------------

@SPEC.mutant("architectures", hint="Think again about 'generative question answering'",
             name="generative QA as decoder-only")
def generative_qa_as_decoder_only(ARCHITECTURE_FOR_TASK):
    ARCHITECTURE_FOR_TASK = {**ARCHITECTURE_FOR_TASK, "generative question answering": "decoder-only"}


@SPEC.mutant("architectures", hint="Think again about 'T5'", name="T5 as encoder-only")
def t5_as_encoder_only(ARCHITECTURE_OF_MODEL):
    ARCHITECTURE_OF_MODEL = {**ARCHITECTURE_OF_MODEL, "T5": "encoder-only", "course-t5": "encoder-only"}


@SPEC.mutant("architectures", hint="Think again about 'BERT'", name="everything decoder-only")
def everything_decoder_only(ARCHITECTURE_FOR_TASK, ARCHITECTURE_OF_MODEL):
    ARCHITECTURE_FOR_TASK = {k: "decoder-only" for k in ARCHITECTURE_FOR_TASK}
    ARCHITECTURE_OF_MODEL = {k: "decoder-only" for k in ARCHITECTURE_OF_MODEL}


@SPEC.mutant("architectures", hint="spelled exactly")
def a_misspelt_value(ARCHITECTURE_OF_MODEL):
    ARCHITECTURE_OF_MODEL = {**ARCHITECTURE_OF_MODEL, "BERT": "encoder"}


@SPEC.alternative("architectures", name="written out")
def architectures_written_out():
    ARCHITECTURE_FOR_TASK = {
        "sentiment analysis": "encoder-only", "named entity recognition": "encoder-only",
        "word classification": "encoder-only", "extractive question answering": "encoder-only",
        "translation": "encoder-decoder", "summarization": "encoder-decoder",
        "generative question answering": "encoder-decoder", "open text generation": "decoder-only"}


@SPEC.alternative("architectures")
def built_from_lists():
    families = {"encoder-only": ["BERT", "DistilBERT", "RoBERTa", "course-mlm"],
                "encoder-decoder": ["BART", "T5", "course-t5"],
                "decoder-only": ["GPT-2", "BLOOM", "LLaMA", "PaLM", "course-lm"]}
    ARCHITECTURE_OF_MODEL = {m: f for f, models in families.items() for m in models}


# -- build_model: most mutants build like the solution, but for one family ------------------------------

def small_transformers_model(kind, vocab_size, d_model, n_layers, n_heads):
    """The solution's three models (without its special-token ids and position limits)."""
    from transformers import (BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, T5Config,
                              T5ForConditionalGeneration)

    if kind == "encoder-only":
        return BertForMaskedLM(BertConfig(vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=n_layers,
                                          num_attention_heads=n_heads, intermediate_size=4 * d_model))
    if kind == "encoder-decoder":
        return T5ForConditionalGeneration(T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=d_model // n_heads,
                                                   num_decoder_layers=n_layers, d_ff=4 * d_model,
                                                   num_layers=n_layers, num_heads=n_heads, decoder_start_token_id=0))
    if kind == "decoder-only":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=d_model, n_layer=n_layers, n_head=n_heads))
    raise ValueError(kind)


@SPEC.mutant("build_model", hint="BertModel is BERT's encoder alone",
             name="BertModel without the masked-LM head", uses=(small_transformers_model,))
def bert_model_without_the_head(kind, vocab_size, d_model=64, n_layers=2, n_heads=4):
    from transformers import BertConfig, BertModel

    if kind == "encoder-only":
        return BertModel(BertConfig(vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=n_layers,
                                    num_attention_heads=n_heads, intermediate_size=4 * d_model))
    return small_transformers_model(kind, vocab_size, d_model, n_layers, n_heads)


@SPEC.mutant("build_model", hint="its default, 64, ignores d_model",
             name="T5 with the default d_kv", uses=(small_transformers_model,))
def t5_with_the_default_head_size(kind, vocab_size, d_model=64, n_layers=2, n_heads=4):
    from transformers import T5Config, T5ForConditionalGeneration

    if kind == "encoder-decoder":
        return T5ForConditionalGeneration(T5Config(vocab_size=vocab_size, d_model=d_model, num_decoder_layers=n_layers,
                                                   d_ff=4 * d_model, num_layers=n_layers, num_heads=n_heads,
                                                   decoder_start_token_id=0))
    return small_transformers_model(kind, vocab_size, d_model, n_layers, n_heads)


@SPEC.mutant("build_model", hint="num_decoder_layers=n_layers (it has a decoder stack of its own)",
             name="T5 with one decoder layer", uses=(small_transformers_model,))
def t5_with_one_decoder_layer(kind, vocab_size, d_model=64, n_layers=2, n_heads=4):
    from transformers import T5Config, T5ForConditionalGeneration

    if kind == "encoder-decoder":
        return T5ForConditionalGeneration(T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=d_model // n_heads,
                                                   num_decoder_layers=1, d_ff=4 * d_model, num_layers=n_layers,
                                                   num_heads=n_heads, decoder_start_token_id=0))
    return small_transformers_model(kind, vocab_size, d_model, n_layers, n_heads)


@SPEC.mutant("build_model", hint="The number of heads is fixed",
             name="GPT-2 always with 4 heads", uses=(small_transformers_model,))
def gpt2_always_with_four_heads(kind, vocab_size, d_model=64, n_layers=2, n_heads=4):
    from transformers import GPT2Config, GPT2LMHeadModel

    if kind == "decoder-only":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=d_model, n_layer=n_layers, n_head=4))
    return small_transformers_model(kind, vocab_size, d_model, n_layers, n_heads)


@SPEC.mutant("build_model", hint="instead of returning None",
             name="unknown kinds give None", uses=(small_transformers_model,))
def unknown_kinds_give_none(kind, vocab_size, d_model=64, n_layers=2, n_heads=4):
    if kind not in ("encoder-only", "encoder-decoder", "decoder-only"):
        return None
    return small_transformers_model(kind, vocab_size, d_model, n_layers, n_heads)


@SPEC.alternative("build_model", name="Auto classes from configs")
def auto_classes_from_configs(kind, vocab_size, d_model=64, n_layers=2, n_heads=4):
    from transformers import (AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, BertConfig,
                              GPT2Config, T5Config)

    configs = {
        "encoder-only": (AutoModelForMaskedLM, lambda: BertConfig(
            vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=n_heads,
            intermediate_size=2 * d_model)),
        "encoder-decoder": (AutoModelForSeq2SeqLM, lambda: T5Config(
            vocab_size=vocab_size, d_model=d_model, d_kv=d_model // n_heads, d_ff=2 * d_model, num_layers=n_layers,
            num_heads=n_heads, feed_forward_proj="gated-gelu", decoder_start_token_id=0)),
        "decoder-only": (AutoModelForCausalLM, lambda: GPT2Config(
            vocab_size=vocab_size, n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_positions=512, bos_token_id=1,
            eos_token_id=2)),
    }
    if kind not in configs:
        raise ValueError(f"no such kind: {kind}")
    auto, config = configs[kind]
    return auto.from_config(config())


@SPEC.alternative("build_model", name="no dropout, explicit decoder layers")
def no_dropout_explicit_decoder_layers(kind, vocab_size, d_model=64, n_layers=2, n_heads=4):
    if kind == "decoder-only":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=vocab_size, n_embd=d_model, n_layer=n_layers, n_head=n_heads, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0))
    if kind == "encoder-only":
        return transformers.BertForMaskedLM(transformers.BertConfig(
            vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=n_heads,
            intermediate_size=4 * d_model, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    if kind == "encoder-decoder":
        return transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=vocab_size, d_model=d_model, d_kv=d_model // n_heads, d_ff=4 * d_model, num_layers=n_layers,
            num_decoder_layers=n_layers, num_heads=n_heads, dropout_rate=0.0, pad_token_id=0,
            decoder_start_token_id=0))
    raise ValueError(kind)


# -- parameters: the body is the quiz cell, run after the solution's -------------------------------------

@SPEC.mutant("parameters", hint="Think again about 'hidden size'")
def hidden_size_as_a_parameter(PARAMETER_OR_HYPERPARAMETER):
    PARAMETER_OR_HYPERPARAMETER = {**PARAMETER_OR_HYPERPARAMETER, "hidden size": "parameter"}


@SPEC.mutant("parameters", hint="Think again about 'token embeddings'")
def embeddings_as_a_hyperparameter(PARAMETER_OR_HYPERPARAMETER):
    PARAMETER_OR_HYPERPARAMETER = {**PARAMETER_OR_HYPERPARAMETER, "token embeddings": "hyperparameter"}


@SPEC.mutant("parameters", hint="Keep the keys of the template as they are")
def a_key_renamed(PARAMETER_OR_HYPERPARAMETER):
    PARAMETER_OR_HYPERPARAMETER = {("learning_rate" if k == "learning rate" else k): v
                                   for k, v in PARAMETER_OR_HYPERPARAMETER.items()}


@SPEC.alternative("parameters", name="written out")
def parameters_written_out():
    PARAMETER_OR_HYPERPARAMETER = {
        "attention weights": "parameter", "feed-forward weights": "parameter", "token embeddings": "parameter",
        "biases": "parameter", "LayerNorm gains": "parameter", "learning rate": "hyperparameter",
        "batch size": "hyperparameter", "number of layers": "hyperparameter", "number of heads": "hyperparameter",
        "hidden size": "hyperparameter", "dropout rate": "hyperparameter", "warmup steps": "hyperparameter"}


@SPEC.alternative("parameters")
def the_hyperparameters_listed(PARAMETER_OR_HYPERPARAMETER):
    chosen = {"learning rate", "batch size", "number of layers", "number of heads", "hidden size", "dropout rate",
              "warmup steps"}
    PARAMETER_OR_HYPERPARAMETER = {k: "hyperparameter" if k in chosen else "parameter"
                                   for k in PARAMETER_OR_HYPERPARAMETER}


# -- training_step ----------------------------------------------------------------------------------------

@SPEC.mutant("training_step", name="no zero_grad", hint="pile up")
def no_zero_grad(model, batch, optimizer):
    model.train()
    if model.config.model_type in ("bert", "t5"):
        loss = model(**batch).loss
    else:
        loss = next_token_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                               batch["labels"])
    loss.backward()
    optimizer.step()
    return loss.item()


@SPEC.mutant("training_step", name="never calls model.train()", hint="model.train()")
def never_calls_model_train(model, batch, optimizer):
    if model.config.model_type in ("bert", "t5"):
        loss = model(**batch).loss
    else:
        loss = next_token_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                               batch["labels"])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


@SPEC.mutant("training_step", hint="loss.item()")
def returns_the_loss_tensor(model, batch, optimizer):
    if model.config.model_type in ("bert", "t5"):
        loss = model(**batch).loss
    else:
        loss = next_token_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                               batch["labels"])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


@SPEC.mutant("training_step", hint="in this order")
def step_before_backward(model, batch, optimizer):
    if model.config.model_type in ("bert", "t5"):
        loss = model(**batch).loss
    else:
        loss = next_token_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                               batch["labels"])
    optimizer.zero_grad()
    optimizer.step()
    loss.backward()
    return loss.item()


@SPEC.mutant("training_step", hint="The decoder-only loss is not shifted", name="decoder-only loss not shifted")
def decoder_only_loss_not_shifted(model, batch, optimizer):
    if model.config.model_type in ("bert", "t5"):
        loss = model(**batch).loss
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


@SPEC.mutant("training_step", hint="T5 was fed its labels as decoder inputs",
             name="T5 fed its labels as decoder inputs")
def t5_fed_its_labels_as_decoder_inputs(model, batch, optimizer):
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
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


@SPEC.alternative("training_step", name="the model's own loss for every kind")
def the_models_own_loss_for_every_kind(model, batch, optimizer):
    optimizer.zero_grad()
    model.train()
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    return float(loss)


@SPEC.alternative("training_step", name="decoder by model class, zero_grad after the step")
def decoder_by_model_class(model, batch, optimizer):
    from transformers import GPT2LMHeadModel

    model.train()
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


# -- train_bpe --------------------------------------------------------------------------------------------

def merge_every(symbols, a, b):
    """Every occurrence of (a, b), left to right, as one token."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def count_pairs(words):
    pairs = Counter()
    for symbols, n in words:
        for pair in zip(symbols, symbols[1:]):
            pairs[pair] += n
    return pairs


def start_vocab(special_tokens):
    vocab = {}
    for token in [*special_tokens, *sorted(BYTE_SYMBOL.values())]:
        vocab.setdefault(token, len(vocab))
    return vocab


def piece_counts(texts):
    return Counter(tuple(to_symbols(piece)) for text in texts for piece in pre_split(text))


@SPEC.mutant("train_bpe", name="ties to the pair seen first", hint="not the pair seen first",
             uses=(merge_every, count_pairs, start_vocab, piece_counts))
def ties_to_the_pair_seen_first(texts, vocab_size, special_tokens=()):
    vocab = start_vocab(special_tokens)
    words = [(list(w), n) for w, n in piece_counts(texts).items()]
    merges = []
    while len(vocab) < vocab_size:
        pairs = count_pairs(words)
        if not pairs:
            break
        a, b = max(pairs, key=pairs.get)  # the first of the most frequent, in the order the pairs were counted
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        words = [(merge_every(w, a, b), n) for w, n in words]
    return vocab, merges


@SPEC.mutant("train_bpe", name="ties in alphabetical order", hint="Not alphabetical order",
             uses=(merge_every, count_pairs, start_vocab, piece_counts))
def ties_in_alphabetical_order(texts, vocab_size, special_tokens=()):
    vocab = start_vocab(special_tokens)
    words = [(list(w), n) for w, n in piece_counts(texts).items()]
    merges = []
    while len(vocab) < vocab_size:
        pairs = count_pairs(words)
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        words = [(merge_every(w, a, b), n) for w, n in words]
    return vocab, merges


@SPEC.mutant("train_bpe", name="ties to the largest ids", hint="not the largest id",
             uses=(merge_every, count_pairs, start_vocab, piece_counts))
def ties_to_the_largest_ids(texts, vocab_size, special_tokens=()):
    vocab = start_vocab(special_tokens)
    words = [(list(w), n) for w, n in piece_counts(texts).items()]
    merges = []
    while len(vocab) < vocab_size:
        pairs = count_pairs(words)
        if not pairs:
            break
        a, b = max(pairs, key=lambda p: (pairs[p], vocab[p[0]], vocab[p[1]]))
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        words = [(merge_every(w, a, b), n) for w, n in words]
    return vocab, merges


@SPEC.mutant("train_bpe", name="pairs counted across pieces", hint="only inside a piece",
             uses=(merge_every, count_pairs, start_vocab))
def pairs_counted_across_pieces(texts, vocab_size, special_tokens=()):
    vocab = start_vocab(special_tokens)
    words = [(to_symbols(text), 1) for text in texts]  # each whole text is one sequence
    merges = []
    while len(vocab) < vocab_size:
        pairs = count_pairs(words)
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], vocab[p[0]], vocab[p[1]]))
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        words = [(merge_every(w, a, b), n) for w, n in words]
    return vocab, merges


@SPEC.mutant("train_bpe", name="only the first occurrence merged", hint="every occurrence",
             uses=(count_pairs, start_vocab, piece_counts))
def only_the_first_occurrence_merged(texts, vocab_size, special_tokens=()):
    vocab = start_vocab(special_tokens)
    words = [(list(w), n) for w, n in piece_counts(texts).items()]
    merges = []
    while len(vocab) < vocab_size:
        pairs = count_pairs(words)
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], vocab[p[0]], vocab[p[1]]))
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        for symbols, _ in words:
            for i in range(len(symbols) - 1):
                if symbols[i] == a and symbols[i + 1] == b:
                    symbols[i:i + 2] = [a + b]
                    break
    return vocab, merges


@SPEC.mutant("train_bpe", name="spaces dropped by str.split", hint="Keep the spaces",
             uses=(merge_every, count_pairs, start_vocab))
def spaces_dropped(texts, vocab_size, special_tokens=()):
    vocab = start_vocab(special_tokens)
    counts = Counter(tuple(to_symbols(word)) for text in texts for word in text.split())
    words = [(list(w), n) for w, n in counts.items()]
    merges = []
    while len(vocab) < vocab_size:
        pairs = count_pairs(words)
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], vocab[p[0]], vocab[p[1]]))
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        words = [(merge_every(w, a, b), n) for w, n in words]
    return vocab, merges


@SPEC.mutant("train_bpe", name="special tokens after the bytes", hint="special tokens in the vocabulary first",
             uses=(merge_every, count_pairs, piece_counts))
def special_tokens_after_the_bytes(texts, vocab_size, special_tokens=()):
    vocab = {}
    for token in [*sorted(BYTE_SYMBOL.values()), *special_tokens]:
        vocab.setdefault(token, len(vocab))
    words = [(list(w), n) for w, n in piece_counts(texts).items()]
    merges = []
    while len(vocab) < vocab_size:
        pairs = count_pairs(words)
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], vocab[p[0]], vocab[p[1]]))
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        words = [(merge_every(w, a, b), n) for w, n in words]
    return vocab, merges


@SPEC.mutant("train_bpe", name="each distinct piece counted once", hint="every time its piece occurs",
             uses=(merge_every, count_pairs, start_vocab, piece_counts))
def each_distinct_piece_counted_once(texts, vocab_size, special_tokens=()):
    vocab = start_vocab(special_tokens)
    words = [(list(w), 1) for w in piece_counts(texts)]
    merges = []
    while len(vocab) < vocab_size:
        pairs = count_pairs(words)
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], vocab[p[0]], vocab[p[1]]))
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        words = [(merge_every(w, a, b), n) for w, n in words]
    return vocab, merges


@SPEC.mutant("train_bpe", name="only the bytes the corpus uses", hint="all 256 byte symbols",
             uses=(merge_every, count_pairs, piece_counts))
def only_the_bytes_the_corpus_uses(texts, vocab_size, special_tokens=()):
    counts = piece_counts(texts)
    vocab = {}
    for token in [*special_tokens, *sorted({s for w in counts for s in w})]:
        vocab.setdefault(token, len(vocab))
    words = [(list(w), n) for w, n in counts.items()]
    merges = []
    while len(vocab) < vocab_size:
        pairs = count_pairs(words)
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], vocab[p[0]], vocab[p[1]]))
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        words = [(merge_every(w, a, b), n) for w, n in words]
    return vocab, merges


@SPEC.mutant("train_bpe", hint="the special tokens count too", name="vocab_size merges, special tokens not counted",
             uses=(merge_every, count_pairs, start_vocab, piece_counts))
def vocab_size_without_the_special_tokens(texts, vocab_size, special_tokens=()):
    vocab = start_vocab(special_tokens)
    words = [(list(w), n) for w, n in piece_counts(texts).items()]
    merges = []
    while 256 + len(merges) < vocab_size:
        pairs = count_pairs(words)
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], vocab[p[0]], vocab[p[1]]))
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        words = [(merge_every(w, a, b), n) for w, n in words]
    return vocab, merges


@SPEC.alternative("train_bpe", name="incremental pair counts in a heap, as tokenizers does")
def incremental_pair_counts_in_a_heap(texts, vocab_size, special_tokens=()):
    import heapq

    vocab = {}
    for token in [*special_tokens, *sorted(BYTE_SYMBOL.values())]:
        vocab.setdefault(token, len(vocab))
    counts = {}
    for text in texts:
        for piece in re.findall(r" ?[^ ]+| ", text):  # the same pieces as pre_split
            word = tuple(BYTE_SYMBOL[b] for b in piece.encode("utf-8"))
            counts[word] = counts.get(word, 0) + 1
    words = [list(w) for w in counts]
    freq = list(counts.values())
    pairs, where = {}, {}
    for i, w in enumerate(words):
        for pair in zip(w, w[1:]):
            pairs[pair] = pairs.get(pair, 0) + freq[i]
            where.setdefault(pair, set()).add(i)
    heap = [(-n, vocab[a], vocab[b], a, b) for (a, b), n in pairs.items()]
    heapq.heapify(heap)
    merges = []
    while len(vocab) < vocab_size and heap:
        n, _, _, a, b = heapq.heappop(heap)
        if -n != pairs.get((a, b), 0):  # a stale count: push the current one back
            if pairs.get((a, b), 0) > 0:
                heapq.heappush(heap, (-pairs[(a, b)], vocab[a], vocab[b], a, b))
            continue
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        new = a + b
        touched = set()
        for i in sorted(where.pop((a, b), ())):
            w, f = words[i], freq[i]
            for pair in zip(w, w[1:]):
                pairs[pair] -= f
            j, merged = 0, []
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    merged.append(new)
                    j += 2
                else:
                    merged.append(w[j])
                    j += 1
            words[i] = merged
            for pair in zip(merged, merged[1:]):
                pairs[pair] = pairs.get(pair, 0) + f
                where.setdefault(pair, set()).add(i)
                touched.add(pair)
        pairs.pop((a, b), None)
        for pair in touched:
            if pairs.get(pair, 0) > 0 and new in pair:
                heapq.heappush(heap, (-pairs[pair], vocab[pair[0]], vocab[pair[1]], pair[0], pair[1]))
    return vocab, merges


@SPEC.alternative("train_bpe", name="words as strings joined by spaces, sorted candidates")
def words_as_strings_with_sorted_candidates(texts, vocab_size, special_tokens=()):
    vocab = {t: i for i, t in enumerate(dict.fromkeys([*special_tokens, *sorted(BYTE_SYMBOL.values())]))}
    counts = Counter()
    for text in texts:
        for piece in pre_split(text):
            counts[" ".join(to_symbols(piece))] += 1  # a byte symbol is never a space, so " " separates tokens
    merges = []
    while len(vocab) < vocab_size:
        pairs = Counter()
        for word, n in counts.items():
            tokens = word.split(" ")
            for pair in zip(tokens, tokens[1:]):
                pairs[pair] += n
        if not pairs:
            break
        top = max(pairs.values())
        a, b = sorted((vocab[x], vocab[y], x, y) for (x, y), n in pairs.items() if n == top)[0][2:]
        merges.append((a, b))
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
        merged = Counter()
        for word, n in counts.items():
            tokens, out, i = word.split(" "), [], 0
            while i < len(tokens):
                if tokens[i:i + 2] == [a, b]:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(tokens[i])
                    i += 1
            merged[" ".join(out)] += n
        counts = merged
    return vocab, merges


# -- bpe_encode -------------------------------------------------------------------------------------------

@SPEC.mutant("bpe_encode", name="the leftmost known pair first", hint="earliest in `merges`")
def the_leftmost_known_pair_first(text, merges, vocab):
    known = {tuple(p) for p in merges}
    ids = []
    for piece in pre_split(text):
        symbols = to_symbols(piece)
        while True:
            i = next((i for i in range(len(symbols) - 1) if (symbols[i], symbols[i + 1]) in known), None)
            if i is None:
                break
            symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
        ids += [vocab[s] for s in symbols]
    return ids


@SPEC.mutant("bpe_encode", name="each merge applied once per piece", hint="every occurrence")
def each_merge_applied_once_per_piece(text, merges, vocab):
    ids = []
    for piece in pre_split(text):
        symbols = to_symbols(piece)
        for a, b in merges:
            for i in range(len(symbols) - 1):
                if symbols[i] == a and symbols[i + 1] == b:
                    symbols[i:i + 2] = [a + b]
                    break
        ids += [vocab[s] for s in symbols]
    return ids


@SPEC.mutant("bpe_encode", name="spaces dropped by str.split", hint="Keep the spaces")
def encode_drops_the_spaces(text, merges, vocab):
    ids = []
    for word in text.split():
        symbols = to_symbols(word)
        for a, b in merges:
            i, out = 0, []
            while i < len(symbols):
                if symbols[i:i + 2] == [a, b]:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            symbols = out
        ids += [vocab[s] for s in symbols]
    return ids


@SPEC.mutant("bpe_encode", name="characters instead of bytes", hint="UTF-8 bytes")
def characters_instead_of_bytes(text, merges, vocab):
    ids = []
    for piece in pre_split(text):
        symbols = [BYTE_SYMBOL[ord(c)] if ord(c) < 256 else c for c in piece]
        for a, b in merges:
            i, out = 0, []
            while i < len(symbols):
                if symbols[i:i + 2] == [a, b]:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            symbols = out
        ids += [vocab.get(s, 0) for s in symbols]
    return ids


@SPEC.mutant("bpe_encode", name="the longest token from the left", hint="earliest in `merges`")
def the_longest_token_from_the_left(text, merges, vocab):
    ids = []
    for piece in pre_split(text):
        symbols = to_symbols(piece)
        i = 0
        while i < len(symbols):
            j = len(symbols)
            while j > i + 1 and "".join(symbols[i:j]) not in vocab:
                j -= 1
            ids.append(vocab["".join(symbols[i:j])])
            i = j
    return ids


@SPEC.alternative("bpe_encode", name="every merge in order over the piece, with a cache")
def every_merge_in_order_with_a_cache(text, merges, vocab):
    cache = {}
    ids = []
    for piece in re.findall(r" ?[^ ]+| ", text):
        if piece not in cache:
            symbols = [BYTE_SYMBOL[b] for b in piece.encode("utf-8")]
            for a, b in merges:
                if len(symbols) < 2:
                    break
                out, i = [], 0
                while i < len(symbols):
                    if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
                        out.append(a + b)
                        i += 2
                    else:
                        out.append(symbols[i])
                        i += 1
                symbols = out
            cache[piece] = [vocab[s] for s in symbols]
        ids.extend(cache[piece])
    return ids


@SPEC.alternative("bpe_encode", name="ranked merges one position at a time")
def ranked_merges_one_position_at_a_time(text, merges, vocab):
    rank = {(a, b): r for r, (a, b) in enumerate(merges)}
    ids = []
    for piece in pre_split(text):
        symbols = to_symbols(piece)
        while True:
            found = [(rank[(x, y)], i) for i, (x, y) in enumerate(zip(symbols, symbols[1:])) if (x, y) in rank]
            if not found:
                break
            _, i = min(found)  # the earliest merge, at its leftmost place
            symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
        ids.extend(vocab[s] for s in symbols)
    return ids


# -- the notebook's solution and the reference agree on these inputs ------------------------------------

def _seed(gen: torch.Generator) -> int:
    return int(torch.randint(0, 2 ** 31, (1,), generator=gen))


@SPEC.inputs_of("attention_visibility")
def visibility_inputs(gen):
    for n in (1, 3, 6):
        for kind in ("bidirectional", "causal", "cross"):
            yield (kind, n), {}  # n_key not given: n_query
            yield (kind, n, n), {}
            yield (kind, n), {"n_key": 4}  # causal with another length: ValueError
    yield ("cross", 2, 7), {}
    yield ("bidirectional", 5, 2), {}
    yield ("causal", 0), {}  # an empty sequence: a (0, 0) mask
    yield ("cross", 0, 3), {}
    yield ("causal", 3, 0), {}  # ValueError
    for kind in ("encoder", "Causal", "decoder", "", None):  # unknown kinds: ValueError
        yield (kind, 3), {}
        yield (kind, 3, 3), {}


@SPEC.inputs_of("mask_tokens")
def mask_tokens_inputs(gen):
    for shape in ((4, 30), (2, 3, 17), (50,)):
        for dtype in (torch.long, torch.int32):  # the outputs keep input_ids' dtype
            ids = torch.randint(5, 60, shape, generator=gen, dtype=dtype)
            special = torch.rand(shape, generator=gen) < 0.2
            yield (ids, 4, 60), {"generator": torch.Generator().manual_seed(_seed(gen))}
            yield (ids, 4, 60, special), {"generator": torch.Generator().manual_seed(_seed(gen))}
            yield (ids, 4, 60), {"special_tokens_mask": special.long(), "mlm_probability": 0.5,  # 1 = special
                                 "generator": torch.Generator().manual_seed(_seed(gen))}
    ids = torch.randint(5, 1000, (8, 64), generator=gen)
    special = torch.zeros(8, 64, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    special[3, 40:] = True  # padding
    for p in (0.0, 0.15, 0.9, 1.0):
        yield (ids, 3, 1000, special, p), {"generator": torch.Generator().manual_seed(_seed(gen))}
    yield (ids, 3, 1000), {"special_tokens_mask": torch.ones(8, 64, dtype=torch.bool), "mlm_probability": 1.0,
                           "generator": torch.Generator().manual_seed(_seed(gen))}  # nothing may be picked
    for empty in ((0,), (2, 0), (0, 5)):
        yield (torch.zeros(empty, dtype=torch.long), 4, 60), {"generator": torch.Generator().manual_seed(_seed(gen))}


_T5_SENTINELS = [32099 - i for i in range(32)]  # real T5 counts its sentinels downwards


@SPEC.inputs_of("span_corrupt")
def span_corrupt_inputs(gen):
    yield ([], _T5_SENTINELS), {}  # fewer than two tokens: ValueError
    yield ([7], _T5_SENTINELS), {}
    for n in (2, 3, 4, 5, 10, 17, 30, 64, 120):
        tokens = torch.randint(0, 30000, (n,), generator=gen).tolist()
        yield (tokens, _T5_SENTINELS), {"generator": torch.Generator().manual_seed(_seed(gen))}
        yield (tokens, list(range(5, 37))), {"noise_density": 0.3, "mean_span_length": 2.0,
                                             "generator": torch.Generator().manual_seed(_seed(gen))}
    tokens = list(range(100, 160))
    scattered = torch.randperm(500, generator=gen)[:8].add(1000).tolist()  # sentinel ids in no order
    for density, mean in ((0.0, 3.0), (1.0, 3.0), (0.5, 1.0), (0.15, 10.0), (0.9, 0.5), (0.5, 2.5)):
        yield (tokens, scattered, density, mean), {"generator": torch.Generator().manual_seed(_seed(gen))}
    yield (tokens, [900, 901], 0.5, 1.0), {"generator": torch.Generator().manual_seed(_seed(gen))}  # one span only
    yield (tokens, list(range(5, 7))), {"generator": torch.Generator().manual_seed(_seed(gen))}


@SPEC.inputs_of("merge_spans")
def merge_spans_inputs(gen):
    from grader.reference.variants import span_corrupt

    scattered = torch.randperm(500, generator=gen)[:12].add(1000).tolist()
    for sentinels in (_T5_SENTINELS, list(range(5, 37)), scattered):
        for n, density, mean in ((2, 0.15, 3.0), (9, 0.3, 2.0), (40, 0.15, 3.0), (80, 0.5, 1.5), (25, 0.9, 1.0)):
            tokens = torch.randint(40, 900, (n,), generator=gen).tolist()
            pair = span_corrupt(tokens, sentinels, density, mean, generator=torch.Generator().manual_seed(_seed(gen)))
            yield (*pair, sentinels), {}
    s = _T5_SENTINELS
    yield ([s[0], 5, 6], [s[0], 1, 2, 3, s[1]], s), {}  # a span at the very start
    yield ([5, 6, s[0]], [s[0], 7, s[1]], s), {}  # ... and at the very end
    yield ([5, s[0], 6, s[1], 7], [s[0], 8, 9, s[1], 10, s[2]], s), {}
    yield ([5, 6], [s[0]], s), {}  # nothing corrupted
    yield ([], [], s), {}


@SPEC.inputs_of("causal_lm_labels")
def causal_lm_labels_inputs(gen):
    for b, length in ((3, 7), (1, 1), (5, 12)):
        ids = torch.randint(3, 100, (b, length), generator=gen)
        lengths = torch.randint(1, length + 1, (b,), generator=gen)
        right = (torch.arange(length)[None, :] < lengths[:, None]).long()
        left = right.flip(-1)
        for mask in (right, left, right.bool(), left.int(), torch.ones(b, length, dtype=torch.long)):
            yield (ids.masked_fill(mask == 0, 0), mask), {}
    ids = torch.randint(3, 100, (3, 6), generator=gen)
    yield (ids, torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1]])), {}  # a row of padding
    yield (torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 4, dtype=torch.long)), {}


@SPEC.inputs_of("next_token_loss")
def next_token_loss_inputs(gen):
    for b, length, vocab in ((2, 5, 11), (3, 9, 40), (1, 2, 4), (4, 16, 7)):
        for dtype in (torch.float32, torch.float64):
            logits = torch.randn(b, length, vocab, generator=gen, dtype=dtype) * 3
            labels = torch.randint(0, vocab, (b, length), generator=gen)
            yield (logits, labels), {}
            lengths = torch.randint(1, length + 1, (b,), generator=gen)
            padding = torch.arange(length)[None, :] >= lengths[:, None]
            yield (logits, labels.masked_fill(padding, -100)), {}  # right padding
            yield (logits, labels.masked_fill(padding.flip(-1), -100)), {}  # left padding
    logits = torch.randn(2, 6, 9, generator=gen)
    yield (logits * 50, torch.randint(0, 9, (2, 6), generator=gen)), {}  # large logits
    yield (logits.bfloat16(), torch.randint(0, 9, (2, 6), generator=gen)), {}  # the loss keeps the logits' dtype
    yield (logits, torch.full((2, 6), -100)), {}  # nothing to predict: nan, as a transformers model's .loss
    yield (logits[:, :1], torch.randint(0, 9, (2, 1), generator=gen)), {}  # one position: no next token (nan)
    labels = torch.randint(0, 9, (2, 6), generator=gen)
    labels[:, 1:] = -100
    yield (logits, labels), {}  # only the first label is real: it is never a target (nan)


def _config_differences(mine, theirs) -> dict:
    a, b = mine.config.to_dict(), theirs.config.to_dict()
    return {k: (a.get(k, "(absent)"), b.get(k, "(absent)")) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


@SPEC.agreement("build_model")
def build_model_agrees(notebook_build_model, reference_build_model):
    """Built from one seed, the same class, the same weights and the same config: its sizes, its positions and the
    course tokenizer's special ids (pad 0, bos 1, eos 2, T5's decoder start 0) the contract asks for."""
    import pytest

    from tests.test_checks import assert_same

    differences = {}
    for i, args in enumerate([(), (70, 32, 3, 2), (45, 24, 1, 6), (30, 16, 1, 1)]):
        for kind in ("encoder-only", "encoder-decoder", "decoder-only"):
            what = f"build_model({kind!r}, {', '.join(map(str, args or (50,)))})"
            models = []
            for build in (notebook_build_model, reference_build_model):
                torch.manual_seed(i)
                models.append(build(kind, *(args or (50,))))
            mine, theirs = models
            assert type(mine) is type(theirs), (what, type(mine), type(theirs))
            assert_same(mine, theirs, what)
            # The reference sets no special ids (BERT: bos/eos None; T5: eos 1; GPT-2: pad None, bos/eos 50256,
            # outside the vocabulary): the notebook follows the contract, the reference does not (reported).
            if differing := _config_differences(mine, theirs):
                differences[what] = differing
    for kind in ("decoder-encoder", "encoder", "Decoder-only", "", None):
        for build in (notebook_build_model, reference_build_model):
            with pytest.raises(ValueError):
                build(kind, 30)
    assert not differences, f"the configs differ (notebook, reference): {differences}"


@SPEC.agreement("training_step")
def training_steps_agree(notebook_training_step, reference_training_step):
    """Two steps of each kind from the same weights, batch and dropout draws, with SGD and with AdamW: the same
    losses and the same weights after each step. The models start in eval mode with dropout on (training_step puts
    them in training mode); on a GPU machine, on the GPU with the batch on the CPU (training_step moves it)."""
    import copy
    import importlib

    from llmcourse.checking.shared.variants import KINDS, tiny_batch, tiny_config, tiny_weights
    from tests.test_checks import assert_same

    dropout = {"encoder-only": dict(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1),
               "encoder-decoder": dict(dropout_rate=0.1),
               "decoder-only": dict(resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)}
    load = lambda path: getattr(importlib.import_module(path.rpartition(".")[0]), path.rpartition(".")[2])  # noqa: E731

    def outcome(step, *args):
        try:
            return step(*args)
        except Exception as error:
            return type(error)

    # On CUDA the reference, which does not move the batch to model.device, raises (reported).
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for i, kind in enumerate(KINDS):
            config_path, model_path, args = tiny_config(kind)
            weights = tiny_weights(kind, 300 + i)
            batch = tiny_batch(kind, 310 + i)
            for optimizer_class, lr in ((torch.optim.SGD, 0.5), (torch.optim.AdamW, 0.01)):
                what = f"training_step of a tiny {kind} model with {optimizer_class.__name__} on {device}"
                models, optimizers = [], []
                for _ in range(2):
                    model = load(model_path)(load(config_path)(**{**args, **dropout[kind]}))
                    model.load_state_dict(weights)
                    models.append(model.to(device).eval())
                    optimizers.append(optimizer_class(model.parameters(), lr=lr))
                for step in range(2 if device == "cpu" else 1):
                    losses = []
                    for fn, model, optimizer in zip((notebook_training_step, reference_training_step), models,
                                                    optimizers):
                        torch.manual_seed(step)  # the same dropout draws
                        losses.append(outcome(fn, model, copy.deepcopy(batch), optimizer))
                    assert_same(losses[0], losses[1], f"{what}, step {step + 1}: the loss")
                    assert_same(models[0], models[1], f"{what}, after step {step + 1}")


def _bpe_corpus(gen: torch.Generator) -> list[str]:
    letters = "abcdé ✓"
    texts = []
    for _ in range(int(torch.randint(3, 12, (1,), generator=gen))):
        picks = torch.randint(0, len(letters), (int(torch.randint(4, 30, (1,), generator=gen)),), generator=gen)
        texts.append("".join(letters[i] for i in picks.tolist()))
    return texts


@SPEC.inputs_of("train_bpe")
def train_bpe_inputs(gen):
    yield (["to be or not to be", "banana"], 261), {}
    for specials in ((), ("<pad>", "<s>")):
        yield (_bpe_corpus(gen), 256 + len(specials) + int(torch.randint(0, 40, (1,), generator=gen))), \
            {"special_tokens": specials}
    yield ([], 300), {}


@SPEC.inputs_of("bpe_encode")
def bpe_encode_inputs(gen):
    from grader.reference.variants import train_bpe

    vocab, merges = train_bpe(_bpe_corpus(gen), 300, ("<pad>",))
    for text in _bpe_corpus(gen) + ["", " ", "  x  ", "😀 new"]:
        yield (text, merges, vocab), {}
