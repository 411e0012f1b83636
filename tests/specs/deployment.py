"""07_deployment: the cases its checks are tried against (see tests/specs/__init__.py for the form).

Helpers do, the notebook's way, the steps that most mutants of an exercise get right (a text's losses, BLEU's
counts and its formula, a choice's token log-probabilities, the two distillation terms, model_memory's given
argument checks), so that a mutant shows only its mistake; a mutant whose mistake lies inside such a step writes
the step out. A wrong QuantizedLinear subclasses the notebook's and replaces only the methods that hold its mistake.
"""
from __future__ import annotations

import copy
import math
from collections import Counter

import torch
import torch.nn as nn
import torch.nn.functional as F

from grader.reference.deployment import BYTES_PER_PARAM, QuantizedLinear, bleu as _corpus_bleu, choice_logprob
from grader.reference.deployment import dequantize, fit_scaling_law as _fit_right, quantize_absmax
from tests.specs import Spec

SPEC = Spec(
    "07_deployment",
    depends_on={
        "perplexity": set(),
        "bleu": set(),
        "choice_logprob": set(),
        "multiple_choice_accuracy": {"choice_logprob"},
        "model_memory": set(),
        "quantize_absmax": set(),
        "quantize_zeropoint": set(),
        "dequantize": set(),
        "quantized_linear": {"quantize_absmax", "dequantize"},
        "quantize_model": {"quantized_linear"},
        "distillation_loss": set(),
        "magnitude_prune": set(),
        "fit_scaling_law": set(),
        "compute_optimal": set(),
    },
    solution_names={"quantized_linear": "QuantizedLinear"},
    student_modules=("llmcourse.deployment_tools",),
)


# -- perplexity -------------------------------------------------------------------------------------------

def text_losses(model, tokenizer, texts, max_length):
    """(summed negative log-likelihood, predicted tokens) of each text that has a token to predict."""
    if isinstance(texts, str):
        texts = [texts]
    losses = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
            if len(ids) < 2:
                continue
            ids = torch.tensor([ids])
            logits = model(input_ids=ids).logits[0, :-1].float()
            losses.append((F.cross_entropy(logits, ids[0, 1:], reduction="sum").item(), ids.shape[1] - 1))
    return losses


@SPEC.mutant("perplexity", name="mean of per-text perplexities", hint="mean of the texts' perplexities",
             uses=(text_losses,))
def mean_of_per_text_perplexities(model, tokenizer, texts, max_length=256):
    losses = text_losses(model, tokenizer, texts, max_length)
    return sum(math.exp(nll / count) for nll, count in losses) / len(losses)


@SPEC.mutant("perplexity", name="mean of per-text losses", hint="averages the texts' mean losses",
             uses=(text_losses,))
def mean_of_per_text_losses(model, tokenizer, texts, max_length=256):
    losses = text_losses(model, tokenizer, texts, max_length)
    return math.exp(sum(nll / count for nll, count in losses) / len(losses))


@SPEC.mutant("perplexity", hint="not shifted")
def logits_not_shifted(model, tokenizer, texts, max_length=256):
    if isinstance(texts, str):
        texts = [texts]
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
            if len(ids) < 2:
                continue
            ids = torch.tensor([ids])
            logits = model(input_ids=ids).logits[0, :].float()
            total_nll += F.cross_entropy(logits, ids[0, :], reduction="sum").item()
            total_tokens += ids.shape[1]
    return math.exp(total_nll / total_tokens)


@SPEC.mutant("perplexity", name="no exp (returns the loss)", hint="math.exp(mean NLL)", uses=(text_losses,))
def no_exp(model, tokenizer, texts, max_length=256):
    losses = text_losses(model, tokenizer, texts, max_length)
    return sum(nll for nll, _ in losses) / sum(count for _, count in losses)


@SPEC.mutant("perplexity", hint="not a power of 2", uses=(text_losses,))
def log_base_2(model, tokenizer, texts, max_length=256):
    losses = text_losses(model, tokenizer, texts, max_length)
    return 2 ** (sum(nll for nll, _ in losses) / sum(count for _, count in losses))


@SPEC.mutant("perplexity", name="max_length ignored", hint="truncation=True")
def max_length_ignored(model, tokenizer, texts, max_length=256):
    if isinstance(texts, str):
        texts = [texts]
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, truncation=False)["input_ids"]
            if len(ids) < 2:
                continue
            ids = torch.tensor([ids])
            logits = model(input_ids=ids).logits[0, :-1].float()
            total_nll += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            total_tokens += ids.shape[1] - 1
    return math.exp(total_nll / total_tokens)


@SPEC.mutant("perplexity", hint="n - 1 predicted tokens")
def the_first_token_counted_too(model, tokenizer, texts, max_length=256):
    if isinstance(texts, str):
        texts = [texts]
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
            if len(ids) < 2:
                continue
            ids = torch.tensor([ids])
            logits = model(input_ids=ids).logits[0, :-1].float()
            total_nll += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            total_tokens += ids.shape[1]
    return math.exp(total_nll / total_tokens)


@SPEC.mutant("perplexity", hint="attention_mask is 0")
def padding_counted_in_a_batched_version(model, tokenizer, texts, max_length=256):
    if isinstance(texts, str):
        texts = [texts]
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        loss = model(**batch, labels=batch["input_ids"]).loss
    return math.exp(loss.item())


@SPEC.alternative("perplexity", name="batched, right padding and an attention mask")
def batched_with_an_attention_mask(model, tokenizer, texts, max_length=256):
    if isinstance(texts, str):
        texts = [texts]
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    scored = mask[:, 1:] & mask[:, :-1]  # right padding: a real token after a real token
    if not scored.any():
        raise ValueError("nothing to predict")
    nll = F.cross_entropy(logits[scored], ids[:, 1:][scored], reduction="sum")
    return math.exp(nll.item() / scored.sum().item())


@SPEC.alternative("perplexity", name="the model's labels= loss weighted by token counts")
def labels_loss_weighted_by_token_counts(model, tokenizer, texts, max_length=256):
    texts = [texts] if isinstance(texts, str) else list(texts)
    losses, counts = [], []
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
        n = enc["input_ids"].shape[1] - 1
        if n > 0:
            with torch.no_grad():
                losses.append(model(input_ids=enc["input_ids"], labels=enc["input_ids"]).loss.double() * n)
            counts.append(n)
    return torch.exp(torch.stack(losses).sum() / sum(counts)).item()


# -- bleu -------------------------------------------------------------------------------------------------

def ngram_counts(words, n):
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def bleu_statistics(candidate, references, max_n):
    """Corpus BLEU's sums, counted the notebook's way: clipped matches and candidate n-grams for n = 1..max_n,
    the candidates' length and the closest references' length."""
    matches, totals = [0] * max_n, [0] * max_n
    cand_len = ref_len = 0
    for cand, refs in zip(candidate, references):
        words = cand.split()
        ref_words = [r.split() for r in refs]
        cand_len += len(words)
        ref_len += min((len(r) for r in ref_words), key=lambda n: (abs(n - len(words)), n))
        for i, n in enumerate(range(1, max_n + 1)):
            most = Counter()
            for r in ref_words:
                most |= ngram_counts(r, n)
            matches[i] += sum(min(count, most[g]) for g, count in ngram_counts(words, n).items())
            totals[i] += max(len(words) - n + 1, 0)
    return matches, totals, cand_len, ref_len


def bleu_from(matches, totals, cand_len, ref_len):
    """BLEU from its sums: the precisions' geometric mean times the brevity penalty."""
    if min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / len(matches)
    penalty = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / cand_len)
    return 100 * penalty * math.exp(log_precision)


@SPEC.mutant("bleu", hint="clip each n-gram's count", uses=(ngram_counts, bleu_from))
def no_clipping(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]
    matches, totals = [0] * max_n, [0] * max_n
    cand_len = ref_len = 0
    for cand, refs in zip(candidate, references):
        words = cand.split()
        ref_words = [r.split() for r in refs]
        cand_len += len(words)
        ref_len += min((len(r) for r in ref_words), key=lambda n: (abs(n - len(words)), n))
        for i, n in enumerate(range(1, max_n + 1)):
            most = Counter()
            for r in ref_words:
                most |= ngram_counts(r, n)
            matches[i] += sum(count if g in most else 0 for g, count in ngram_counts(words, n).items())
            totals[i] += max(len(words) - n + 1, 0)
    return bleu_from(matches, totals, cand_len, ref_len)


@SPEC.mutant("bleu", hint="There is no brevity penalty", uses=(ngram_counts, bleu_statistics))
def no_brevity_penalty(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]
    matches, totals, _, _ = bleu_statistics(candidate, references, max_n)
    if min(matches) == 0:
        return 0.0
    return 100 * math.exp(sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n)


@SPEC.mutant("bleu", hint="not the longest one", uses=(ngram_counts, bleu_from))
def brevity_penalty_from_the_longest_reference(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]
    matches, totals = [0] * max_n, [0] * max_n
    cand_len = ref_len = 0
    for cand, refs in zip(candidate, references):
        words = cand.split()
        ref_words = [r.split() for r in refs]
        cand_len += len(words)
        ref_len += max(len(r) for r in ref_words)
        for i, n in enumerate(range(1, max_n + 1)):
            most = Counter()
            for r in ref_words:
                most |= ngram_counts(r, n)
            matches[i] += sum(min(count, most[g]) for g, count in ngram_counts(words, n).items())
            totals[i] += max(len(words) - n + 1, 0)
    return bleu_from(matches, totals, cand_len, ref_len)


@SPEC.mutant("bleu", hint="not the shortest one", uses=(ngram_counts, bleu_from))
def brevity_penalty_from_the_shortest_reference(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]
    matches, totals = [0] * max_n, [0] * max_n
    cand_len = ref_len = 0
    for cand, refs in zip(candidate, references):
        words = cand.split()
        ref_words = [r.split() for r in refs]
        cand_len += len(words)
        ref_len += min(len(r) for r in ref_words)
        for i, n in enumerate(range(1, max_n + 1)):
            most = Counter()
            for r in ref_words:
                most |= ngram_counts(r, n)
            matches[i] += sum(min(count, most[g]) for g, count in ngram_counts(words, n).items())
            totals[i] += max(len(words) - n + 1, 0)
    return bleu_from(matches, totals, cand_len, ref_len)


@SPEC.mutant("bleu", hint="not their average", uses=(ngram_counts, bleu_statistics))
def arithmetic_mean_of_the_precisions(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]
    matches, totals, cand_len, ref_len = bleu_statistics(candidate, references, max_n)
    if min(matches) == 0:
        return 0.0
    log_precision = math.log(sum(m / t for m, t in zip(matches, totals)) / max_n)
    penalty = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / cand_len)
    return 100 * penalty * math.exp(log_precision)


@SPEC.mutant("bleu", hint="not by the sum over the references", uses=(ngram_counts, bleu_from))
def clipping_summed_over_the_references(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]
    matches, totals = [0] * max_n, [0] * max_n
    cand_len = ref_len = 0
    for cand, refs in zip(candidate, references):
        words = cand.split()
        ref_words = [r.split() for r in refs]
        cand_len += len(words)
        ref_len += min((len(r) for r in ref_words), key=lambda n: (abs(n - len(words)), n))
        for i, n in enumerate(range(1, max_n + 1)):
            most = Counter()
            for r in ref_words:
                most += ngram_counts(r, n)
            matches[i] += sum(min(count, most[g]) for g, count in ngram_counts(words, n).items())
            totals[i] += max(len(words) - n + 1, 0)
    return bleu_from(matches, totals, cand_len, ref_len)


@SPEC.mutant("bleu", hint="The n-grams stop at 3",
             name="n-grams only up to 3", uses=(ngram_counts, bleu_statistics, bleu_from))
def ngrams_only_up_to_3(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]
    return bleu_from(*bleu_statistics(candidate, references, min(max_n, 3)))


@SPEC.mutant("bleu", name="lower-cased words", hint="Do not lower-case",
             uses=(ngram_counts, bleu_statistics, bleu_from))
def lower_cased_words(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]
    candidate = [c.lower() for c in candidate]
    references = [[r.lower() for r in refs] for refs in references]
    return bleu_from(*bleu_statistics(candidate, references, max_n))


@SPEC.mutant("bleu", hint="instead of averaging sentence BLEUs", original="_corpus_bleu")
def the_average_of_sentence_BLEUs(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]
    return sum(_corpus_bleu([c], [r], max_n) for c, r in zip(candidate, references)) / len(candidate)


@SPEC.alternative("bleu", name="Counter & and a loop over n outside the sentences")
def counter_intersection_and_a_loop_over_n_outside(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]
    pairs = [(c.split(), [r.split() for r in refs]) for c, refs in zip(candidate, references)]
    c_len = sum(len(c) for c, _ in pairs)
    r_len = 0
    for c, refs in pairs:
        lengths = sorted(len(r) for r in refs)  # sorted: the first closest one is the shorter on a tie
        r_len += min(lengths, key=lambda n: abs(n - len(c)))
    log_sum = 0.0
    for n in range(1, max_n + 1):
        hit = total = 0
        for c, refs in pairs:
            grams = Counter(zip(*[c[i:] for i in range(n)]))
            best = Counter()
            for r in refs:
                best = best | Counter(zip(*[r[i:] for i in range(n)]))
            hit += sum((grams & best).values())
            total += sum(grams.values())
        if hit == 0:
            return 0.0
        log_sum += math.log(hit) - math.log(total)
    bp = math.exp(min(0.0, 1 - r_len / c_len))
    return 100 * bp * math.exp(log_sum / max_n)


@SPEC.alternative("bleu", name="math.prod of the precisions")
def product_of_the_precisions(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]
    hits, totals = [0] * max_n, [0] * max_n
    c_total = r_total = 0
    for cand, refs in zip(candidate, references):
        words, ref_words = cand.split(), [r.split() for r in refs]
        c_total += len(words)
        r_total += sorted((abs(len(r) - len(words)), len(r)) for r in ref_words)[0][1]
        for n in range(1, max_n + 1):
            grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
            for g, k in grams.items():
                hits[n - 1] += min(k, max(sum(1 for i in range(len(r) - n + 1) if tuple(r[i:i + n]) == g)
                                          for r in ref_words))
            totals[n - 1] += sum(grams.values())
    if 0 in hits:
        return 0.0
    precision = math.prod(h / t for h, t in zip(hits, totals)) ** (1 / max_n)
    bp = 1.0 if c_total > r_total else math.exp(1 - r_total / c_total)
    return 100 * bp * precision


# -- choice_logprob ---------------------------------------------------------------------------------------

def choice_token_logprobs(model, tokenizer, prompt, choice):
    """log P of each of the choice's tokens after the prompt, as a column."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    choice_ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + choice_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    log_probs = F.log_softmax(logits, dim=-1)
    start = len(prompt_ids) - 1
    return log_probs[start:].gather(1, ids[0, start + 1:][:, None])


@SPEC.mutant("choice_logprob", hint="prompt's tokens too")
def summed_over_the_prompt_and_the_choice(model, tokenizer, prompt, choice):
    prompt_ids = tokenizer(prompt)["input_ids"]
    choice_ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + choice_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    log_probs = F.log_softmax(logits, dim=-1)
    return log_probs.gather(1, ids[0, 1:][:, None]).sum().item()


@SPEC.mutant("choice_logprob", hint="mean over the choice's tokens", uses=(choice_token_logprobs,))
def the_mean_instead_of_the_sum(model, tokenizer, prompt, choice):
    return choice_token_logprobs(model, tokenizer, prompt, choice).mean().item()


@SPEC.mutant("choice_logprob", hint="Off by one")
def off_by_one_position(model, tokenizer, prompt, choice):
    prompt_ids = tokenizer(prompt)["input_ids"]
    choice_ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + choice_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    log_probs = F.log_softmax(logits, dim=-1)
    start = len(prompt_ids) - 1
    return log_probs[start + 1:].gather(1, ids[0, start + 2:][:, None]).sum().item()


@SPEC.mutant("choice_logprob", name="a probability instead of a log-probability", hint="That is a probability",
             uses=(choice_token_logprobs,))
def a_probability(model, tokenizer, prompt, choice):
    return choice_token_logprobs(model, tokenizer, prompt, choice).sum().exp().item()


@SPEC.mutant("choice_logprob", name="the logits without log_softmax", hint="raw logits")
def the_logits_without_log_softmax(model, tokenizer, prompt, choice):
    prompt_ids = tokenizer(prompt)["input_ids"]
    choice_ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + choice_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    start = len(prompt_ids) - 1
    return logits[start:].gather(1, ids[0, start + 1:][:, None]).sum().item()


@SPEC.mutant("choice_logprob", hint="add_special_tokens=False")
def the_choice_tokenized_with_special_tokens(model, tokenizer, prompt, choice):
    prompt_ids = tokenizer(prompt)["input_ids"]
    choice_ids = tokenizer(choice, add_special_tokens=True)["input_ids"]
    ids = torch.tensor([prompt_ids + choice_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    log_probs = F.log_softmax(logits, dim=-1)
    start = len(prompt_ids) - 1
    return log_probs[start:].gather(1, ids[0, start + 1:][:, None]).sum().item()


@SPEC.alternative("choice_logprob", name="the model's labels= loss times the number of choice tokens")
def labels_loss_times_the_number_of_choice_tokens(model, tokenizer, prompt, choice):
    p = tokenizer(prompt)["input_ids"]
    c = tokenizer(choice, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    labels = torch.tensor([[-100] * len(p) + c])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=labels).loss
    return -loss.item() * len(c)


@SPEC.alternative("choice_logprob", name="a loop over the choice's tokens in float64")
def a_loop_over_the_choice_tokens_in_float64(model, tokenizer, prompt, choice):
    p = list(tokenizer(prompt)["input_ids"])
    c = list(tokenizer(choice, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p + c])).logits[0].double()
    total = 0.0
    for i, token in enumerate(c):
        row = logits[len(p) - 1 + i]
        total += (row[token] - torch.logsumexp(row, dim=0)).item()
    return total


# -- multiple_choice_accuracy -----------------------------------------------------------------------------

@SPEC.mutant("multiple_choice_accuracy", hint="LEAST likely")
def argmin(model, tokenizer, items):
    correct = 0
    for item in items:
        scores = [choice_logprob(model, tokenizer, item["prompt"], c) for c in item["choices"]]
        correct += int(torch.tensor(scores).argmin()) == item["answer"]
    return correct / len(items)


@SPEC.mutant("multiple_choice_accuracy", name="compares the choice's text with the answer",
             hint="not with the choice's text")
def compares_the_text_with_the_answer(model, tokenizer, items):
    correct = 0
    for item in items:
        scores = [choice_logprob(model, tokenizer, item["prompt"], c) for c in item["choices"]]
        correct += item["choices"][int(torch.tensor(scores).argmax())] == item["answer"]
    return correct / len(items)


@SPEC.mutant("multiple_choice_accuracy", hint="divide by the number of items")
def a_count_instead_of_a_share(model, tokenizer, items):
    correct = 0
    for item in items:
        scores = [choice_logprob(model, tokenizer, item["prompt"], c) for c in item["choices"]]
        correct += int(torch.tensor(scores).argmax()) == item["answer"]
    return correct


@SPEC.mutant("multiple_choice_accuracy", name="length-normalised scores", hint="by its number of tokens")
def length_normalised_scores(model, tokenizer, items):
    correct = 0
    for item in items:
        scores = [choice_logprob(model, tokenizer, item["prompt"], c)
                  / len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in item["choices"]]
        correct += int(torch.tensor(scores).argmax()) == item["answer"]
    return correct / len(items)


@SPEC.alternative("multiple_choice_accuracy", name="max with a key, and a mean of booleans")
def max_with_a_key_and_a_mean_of_booleans(model, tokenizer, items):
    hits = []
    for item in items:
        choices = item["choices"]
        best = max(range(len(choices)), key=lambda i: choice_logprob(model, tokenizer, item["prompt"], choices[i]))
        hits.append(best == item["answer"])
    return sum(hits) / len(hits)


@SPEC.alternative("multiple_choice_accuracy", name="sorted scores, best first")
def sorted_scores_best_first(model, tokenizer, items):
    right = 0.0
    for item in items:
        ranked = sorted(((choice_logprob(model, tokenizer, item["prompt"], c), -i) for i, c in enumerate(item["choices"])),
                        reverse=True)
        right += float(-ranked[0][1] == item["answer"])
    return right / len(items)


# -- model_memory -----------------------------------------------------------------------------------------

def check_dtype_and_mode(dtype, training, mixed_precision):
    """The notebook's given checks: a known dtype, and a way of training that exists."""
    if dtype not in BYTES_PER_PARAM:
        raise ValueError(f"unknown dtype {dtype!r}")
    if training and dtype in ("int8", "int4"):
        raise ValueError("integer weights cannot be trained")
    if training and mixed_precision and dtype == "fp32":
        raise ValueError("mixed precision needs 16-bit weights")


@SPEC.mutant("model_memory", name="Adam states forgotten", hint="Adam keeps two numbers",
             uses=(check_dtype_and_mode,))
def adam_states_forgotten(n_params, dtype, training=False, mixed_precision=False):
    check_dtype_and_mode(dtype, training, mixed_precision)
    weights = math.ceil(n_params * BYTES_PER_PARAM[dtype])
    if not training:
        return weights
    return 2 * weights + (4 * n_params if mixed_precision else 0)


@SPEC.mutant("model_memory", name="only one Adam state", hint="TWO states", uses=(check_dtype_and_mode,))
def only_one_adam_state(n_params, dtype, training=False, mixed_precision=False):
    check_dtype_and_mode(dtype, training, mixed_precision)
    weights = math.ceil(n_params * BYTES_PER_PARAM[dtype])
    if not training:
        return weights
    return 2 * weights + 4 * n_params + (4 * n_params if mixed_precision else 0)


@SPEC.mutant("model_memory", hint="only with mixed precision", uses=(check_dtype_and_mode,))
def master_copy_always_added(n_params, dtype, training=False, mixed_precision=False):
    check_dtype_and_mode(dtype, training, mixed_precision)
    weights = math.ceil(n_params * BYTES_PER_PARAM[dtype])
    if not training:
        return weights
    return 2 * weights + 8 * n_params + 4 * n_params


@SPEC.mutant("model_memory", hint="half a byte", uses=(check_dtype_and_mode,))
def int4_as_one_byte(n_params, dtype, training=False, mixed_precision=False):
    check_dtype_and_mode(dtype, training, mixed_precision)
    size = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "int4": 1}[dtype]
    weights = n_params * size
    if not training:
        return weights
    return 2 * weights + 8 * n_params + (4 * n_params if mixed_precision else 0)


@SPEC.mutant("model_memory", hint="gradients have the weights' dtype", uses=(check_dtype_and_mode,))
def gradients_in_fp32_under_mixed_precision(n_params, dtype, training=False, mixed_precision=False):
    check_dtype_and_mode(dtype, training, mixed_precision)
    weights = math.ceil(n_params * BYTES_PER_PARAM[dtype])
    if not training:
        return weights
    if mixed_precision:
        return weights + 4 * n_params + 8 * n_params + 4 * n_params
    return 2 * weights + 8 * n_params


@SPEC.mutant("model_memory", hint="converts to GB", uses=(check_dtype_and_mode,))
def returns_gigabytes(n_params, dtype, training=False, mixed_precision=False):
    check_dtype_and_mode(dtype, training, mixed_precision)
    weights = math.ceil(n_params * BYTES_PER_PARAM[dtype])
    if training:
        weights = 2 * weights + 8 * n_params + (4 * n_params if mixed_precision else 0)
    return weights / 1e9


@SPEC.mutant("model_memory", hint="round up", uses=(check_dtype_and_mode,))
def int4_rounded_down(n_params, dtype, training=False, mixed_precision=False):
    check_dtype_and_mode(dtype, training, mixed_precision)
    weights = int(n_params * BYTES_PER_PARAM[dtype])
    if not training:
        return weights
    return 2 * weights + 8 * n_params + (4 * n_params if mixed_precision else 0)


@SPEC.alternative("model_memory", name="bits per parameter, integer arithmetic")
def bits_per_parameter(n_params, dtype, training=False, mixed_precision=False):
    bits = {"fp32": 32, "fp16": 16, "bf16": 16, "int8": 8, "int4": 4}
    if dtype not in bits:
        raise ValueError(dtype)
    if training and (bits[dtype] < 16 or (mixed_precision and dtype == "fp32")):
        raise ValueError("cannot train like this")
    weights = (n_params * bits[dtype] + 7) // 8
    if not training:
        return weights
    return weights + weights + n_params * 2 * 32 // 8 + (n_params * 32 // 8 if mixed_precision else 0)


@SPEC.alternative("model_memory", uses=(check_dtype_and_mode,))
def a_dict_of_components(n_params, dtype, training=False, mixed_precision=False):
    check_dtype_and_mode(dtype, training, mixed_precision)
    parts = {"weights": math.ceil(n_params * BYTES_PER_PARAM[dtype])}
    if training:
        parts["gradients"] = parts["weights"]
        parts["adam_m"] = parts["adam_v"] = 4 * n_params
        if mixed_precision:
            parts["master"] = 4 * n_params
    return sum(parts.values())


# -- quantize_absmax --------------------------------------------------------------------------------------

@SPEC.mutant("quantize_absmax", hint="largest |w|")
def scale_from_the_mean(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        amax = w.abs().mean()
    else:
        others = [d for d in range(w.dim()) if d != dim % w.dim()]
        amax = w.abs().mean(dim=others, keepdim=True) if others else w.abs()
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8), scale


@SPEC.mutant("quantize_absmax", name="qmax = 2^(bits-1), clamped to [-128, 128]", hint="qmax = 2**(bits - 1) - 1 =")
def qmax_one_too_large(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1)
    if dim is None:
        amax = w.abs().max()
    else:
        others = [d for d in range(w.dim()) if d != dim % w.dim()]
        amax = w.abs().amax(dim=others, keepdim=True) if others else w.abs()
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8), scale


@SPEC.mutant("quantize_absmax", name="per slice along the wrong axis", hint="every OTHER dimension")
def absmax_per_slice_along_the_wrong_axis(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    amax = w.abs().max() if dim is None else w.abs().amax(dim=dim, keepdim=True)
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8), scale


@SPEC.mutant("quantize_absmax", hint="one byte")
def q_left_as_floats(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        amax = w.abs().max()
    else:
        others = [d for d in range(w.dim()) if d != dim % w.dim()]
        amax = w.abs().amax(dim=others, keepdim=True) if others else w.abs()
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return torch.round(w / scale).clamp(-qmax, qmax), scale


@SPEC.mutant("quantize_absmax", hint="torch.round")
def truncation_instead_of_rounding(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        amax = w.abs().max()
    else:
        others = [d for d in range(w.dim()) if d != dim % w.dim()]
        amax = w.abs().amax(dim=others, keepdim=True) if others else w.abs()
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return (w / scale).clamp(-qmax, qmax).to(torch.int8), scale


@SPEC.mutant("quantize_absmax", hint="not one for the whole tensor")
def one_scale_per_tensor_even_when_dim_is_given(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    amax = w.abs().max()
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8), scale


@SPEC.mutant("quantize_absmax", name="zero slices left with scale 0 (NaN codes)", hint="zero scales by 1")
def zero_slices_left_with_scale_0(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        amax = w.abs().max()
    else:
        others = [d for d in range(w.dim()) if d != dim % w.dim()]
        amax = w.abs().amax(dim=others, keepdim=True) if others else w.abs()
    scale = amax / qmax
    return torch.nan_to_num(torch.round(w / scale)).clamp(-qmax, qmax).to(torch.int8), scale


@SPEC.mutant("quantize_absmax", hint="keepdim=True")
def scale_without_keepdim(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        amax = w.abs().max()
    else:
        others = [d for d in range(w.dim()) if d != dim % w.dim()]
        amax = w.abs().amax(dim=others, keepdim=True) if others else w.abs()
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8), scale.squeeze()


@SPEC.alternative("quantize_absmax", name="permute to the front, reshape, amax")
def permute_to_the_front_reshape_amax(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        amax = w.abs().reshape(-1).max().reshape([1] * w.dim())
    else:
        d = dim % w.dim()
        moved = w.abs().movedim(d, 0).reshape(w.shape[d], -1)
        shape = [1] * w.dim()
        shape[d] = w.shape[d]
        amax = moved.amax(dim=1).reshape(shape)
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return torch.clamp(torch.round(w / scale), -qmax, qmax).to(torch.int8), scale


@SPEC.alternative("quantize_absmax")
def float64_computation_cast_back(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    x = w.double()
    if dim is None:
        amax = x.abs().max()
    else:
        others = tuple(d for d in range(x.dim()) if d != dim % x.dim())
        amax = x.abs().amax(dim=others, keepdim=True) if others else x.abs()
    scale = (amax / qmax).to(w.dtype)
    scale[scale == 0] = 1
    return torch.round(x / scale.double()).clamp(-qmax, qmax).to(torch.int8), scale


@SPEC.alternative("quantize_absmax", name="torch.max over a flattened view, per slice in a loop")
def max_of_each_slice_in_a_loop(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        scale = torch.max(w.abs().flatten()) / qmax
        scale = scale if scale > 0 else torch.ones_like(scale)
    else:
        d = dim % w.dim()
        shape = [1] * w.dim()
        shape[d] = w.shape[d]
        scale = torch.stack([torch.max(s.abs().flatten()) for s in w.unbind(d)]).reshape(shape) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (w / scale).round().clamp(min=-qmax, max=qmax).to(torch.int8), scale


# -- quantize_zeropoint -----------------------------------------------------------------------------------

@SPEC.mutant("quantize_zeropoint", name="zero point truncated, not rounded", hint="Round the zero point")
def zero_point_truncated(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    others = list(range(w.dim())) if dim is None else [d for d in range(w.dim()) if d != dim % w.dim()]
    low = (w.amin(dim=others, keepdim=dim is not None) if others else w).clamp(max=0)
    high = (w.amax(dim=others, keepdim=dim is not None) if others else w).clamp(min=0)
    scale = torch.where(high == low, torch.ones_like(low), (high - low) / qmax)
    zero_point = (-low / scale).to(torch.int32)
    q = (torch.round(w / scale) + zero_point).clamp(0, qmax).to(torch.uint8)
    return q, scale, zero_point


@SPEC.mutant("quantize_zeropoint", hint="integer dtype")
def zero_point_left_as_a_float(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    others = list(range(w.dim())) if dim is None else [d for d in range(w.dim()) if d != dim % w.dim()]
    low = (w.amin(dim=others, keepdim=dim is not None) if others else w).clamp(max=0)
    high = (w.amax(dim=others, keepdim=dim is not None) if others else w).clamp(min=0)
    scale = torch.where(high == low, torch.ones_like(low), (high - low) / qmax)
    zero_point = -low / scale
    q = torch.round(w / scale + zero_point).clamp(0, qmax).to(torch.uint8)
    return q, scale, zero_point


@SPEC.mutant("quantize_zeropoint", name="per slice along the wrong axis", hint="every OTHER dimension")
def zeropoint_per_slice_along_the_wrong_axis(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    if dim is None:
        low, high = w.min(), w.max()
    else:
        low, high = w.amin(dim=dim, keepdim=True), w.amax(dim=dim, keepdim=True)
    low, high = low.clamp(max=0), high.clamp(min=0)
    scale = torch.where(high == low, torch.ones_like(low), (high - low) / qmax)
    zero_point = torch.round(-low / scale).to(torch.int32)
    q = (torch.round(w / scale) + zero_point).clamp(0, qmax).to(torch.uint8)
    return q, scale, zero_point


@SPEC.mutant("quantize_zeropoint", name="range without zero (min and max of w only)", hint="has an exact code")
def range_without_zero(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    others = list(range(w.dim())) if dim is None else [d for d in range(w.dim()) if d != dim % w.dim()]
    low = w.amin(dim=others, keepdim=dim is not None) if others else w
    high = w.amax(dim=others, keepdim=dim is not None) if others else w
    scale = torch.where(high == low, torch.ones_like(low), (high - low) / qmax)
    zero_point = torch.round(-low / scale).to(torch.int32)
    q = (torch.round(w / scale) + zero_point).clamp(0, qmax).to(torch.uint8)
    return q, scale, zero_point


@SPEC.mutant("quantize_zeropoint", hint="unsigned")
def clamped_to_the_signed_range(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    others = list(range(w.dim())) if dim is None else [d for d in range(w.dim()) if d != dim % w.dim()]
    low = (w.amin(dim=others, keepdim=dim is not None) if others else w).clamp(max=0)
    high = (w.amax(dim=others, keepdim=dim is not None) if others else w).clamp(min=0)
    scale = torch.where(high == low, torch.ones_like(low), (high - low) / qmax)
    zero_point = torch.round(-low / scale).to(torch.int32)
    half = 2 ** (bits - 1)
    q = (torch.round(w / scale) + zero_point).clamp(-half, half - 1).to(torch.uint8)
    return q, scale, zero_point


@SPEC.mutant("quantize_zeropoint", hint="is a code >= 0")
def zero_point_with_the_wrong_sign(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    others = list(range(w.dim())) if dim is None else [d for d in range(w.dim()) if d != dim % w.dim()]
    low = (w.amin(dim=others, keepdim=dim is not None) if others else w).clamp(max=0)
    high = (w.amax(dim=others, keepdim=dim is not None) if others else w).clamp(min=0)
    scale = torch.where(high == low, torch.ones_like(low), (high - low) / qmax)
    zero_point = torch.round(low / scale).to(torch.int32)
    q = (torch.round(w / scale) - zero_point).clamp(0, qmax).to(torch.uint8)
    return q, scale, zero_point


@SPEC.mutant("quantize_zeropoint", name="codes from the unrounded low, round((w - low) / scale)",
             hint="Round w / scale first")
def codes_from_the_unrounded_low(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    others = list(range(w.dim())) if dim is None else [d for d in range(w.dim()) if d != dim % w.dim()]
    low = (w.amin(dim=others, keepdim=dim is not None) if others else w).clamp(max=0)
    high = (w.amax(dim=others, keepdim=dim is not None) if others else w).clamp(min=0)
    scale = torch.where(high == low, torch.ones_like(low), (high - low) / qmax)
    zero_point = torch.round(-low / scale).to(torch.int32)
    q = torch.round((w - low) / scale).clamp(0, qmax).to(torch.uint8)
    return q, scale, zero_point


@SPEC.alternative("quantize_zeropoint", name="the grid-aligned shift: round(w / scale + zero_point)")
def the_grid_aligned_shift(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    others = tuple(range(w.dim())) if dim is None else tuple(d for d in range(w.dim()) if d != dim % w.dim())
    keep = dim is not None
    low = torch.minimum(w.amin(dim=others, keepdim=keep) if others else w, torch.zeros(()))
    high = torch.maximum(w.amax(dim=others, keepdim=keep) if others else w, torch.zeros(()))
    scale = (high - low) / qmax
    scale = scale.masked_fill(scale == 0, 1.0)
    zero_point = (-low / scale).round().int()
    q = torch.round(w / scale + zero_point).clamp(0, qmax).byte()
    return q, scale, zero_point


@SPEC.alternative("quantize_zeropoint")
def float64_version(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    x = w.double()
    others = tuple(range(x.dim())) if dim is None else tuple(d for d in range(x.dim()) if d != dim % x.dim())
    keep = dim is not None
    low = (x.amin(dim=others, keepdim=keep) if others else x).clamp(max=0)
    high = (x.amax(dim=others, keepdim=keep) if others else x).clamp(min=0)
    scale = torch.where(high > low, (high - low) / qmax, torch.ones_like(low)).to(w.dtype)
    s = scale.double()
    zero_point = torch.round(-low / s).long()
    q = (torch.round(x / s) + zero_point).clamp(0, qmax).to(torch.uint8)
    return q, scale, zero_point


# -- dequantize -------------------------------------------------------------------------------------------

@SPEC.mutant("dequantize", hint="Subtract the zero point")
def zero_point_added(q, scale, zero_point=None):
    values = q.to(scale.dtype)
    if zero_point is not None:
        values = values + zero_point.to(scale.dtype)
    return values * scale


@SPEC.mutant("dequantize", hint="Multiply by the scale")
def divides_by_the_scale(q, scale, zero_point=None):
    values = q.to(scale.dtype)
    if zero_point is not None:
        values = values - zero_point.to(scale.dtype)
    return values / scale


@SPEC.mutant("dequantize", name="no cast: integer arithmetic wraps", hint="wraps around")
def no_cast(q, scale, zero_point=None):
    if zero_point is not None:
        q = q - zero_point
    return q * scale


@SPEC.mutant("dequantize", hint="Use the zero point")
def zero_point_ignored(q, scale, zero_point=None):
    return q.to(scale.dtype) * scale


@SPEC.mutant("dequantize", hint="The result is always float32")
def always_float32(q, scale, zero_point=None):
    values = q.float()
    if zero_point is not None:
        values = values - zero_point.float()
    return (values * scale).float()


@SPEC.alternative("dequantize", name="torch.sub and torch.mul in float64, cast back")
def sub_and_mul_in_float64(q, scale, zero_point=None):
    values = q.to(torch.float64)
    if zero_point is not None:
        values = torch.sub(values, zero_point.to(torch.float64))
    return torch.mul(values, scale.to(torch.float64)).to(scale.dtype)


@SPEC.alternative("dequantize", name="q.float() route")
def through_float32(q, scale, zero_point=None):
    shift = 0 if zero_point is None else zero_point.float()
    return ((q.float() - shift) * scale).to(scale.dtype)


# -- quantized_linear -------------------------------------------------------------------------------------

@SPEC.mutant("quantized_linear", hint="one scale for the whole weight")
class one_scale_for_the_whole_weight(QuantizedLinear):
    @classmethod
    def from_linear(cls, linear, bits=8, group_size=None):
        layer = cls(linear.in_features, linear.out_features, bits, group_size, bias=linear.bias is not None)
        w = linear.weight.detach()
        q, scale = quantize_absmax(w, bits)
        layer.weight_q = q
        layer.scale = scale.reshape(1, 1).expand_as(layer.scale).clone()
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer


@SPEC.mutant("quantized_linear", hint="run down the columns")
class groups_along_the_columns(QuantizedLinear):
    @classmethod
    def from_linear(cls, linear, bits=8, group_size=None):
        layer = cls(linear.in_features, linear.out_features, bits, group_size, bias=linear.bias is not None)
        w = linear.weight.detach()
        rows = w.t().reshape(-1, group_size) if group_size else w
        q, scale = quantize_absmax(rows, bits, dim=0)
        layer.weight_q = q.reshape(w.t().shape).t().contiguous() if group_size else q
        layer.scale = scale
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer

    def forward(self, x):
        if self.group_size:
            rows = self.weight_q.t().reshape(self.scale.shape[0], -1)
            weight = dequantize(rows, self.scale).reshape(self.in_features, self.out_features).t()
        else:
            weight = dequantize(self.weight_q, self.scale)
        return F.linear(x, weight.to(x.dtype), self.bias)


@SPEC.mutant("quantized_linear", hint="only weight_q, scale and bias")
class float_layer_kept_and_used(QuantizedLinear):
    @classmethod
    def from_linear(cls, linear, bits=8, group_size=None):
        layer = cls(linear.in_features, linear.out_features, bits, group_size, bias=linear.bias is not None)
        w = linear.weight.detach()
        rows = w.reshape(-1, group_size) if group_size else w
        q, scale = quantize_absmax(rows, bits, dim=0)
        layer.weight_q = q.reshape(w.shape)
        layer.scale = scale
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        layer.linear = linear
        return layer

    def forward(self, x):
        return self.linear(x)


@SPEC.mutant("quantized_linear", hint="bias")
class bias_dropped(QuantizedLinear):
    @classmethod
    def from_linear(cls, linear, bits=8, group_size=None):
        layer = cls(linear.in_features, linear.out_features, bits, group_size, bias=linear.bias is not None)
        w = linear.weight.detach()
        rows = w.reshape(-1, group_size) if group_size else w
        q, scale = quantize_absmax(rows, bits, dim=0)
        layer.weight_q = q.reshape(w.shape)
        layer.scale = scale
        return layer


@SPEC.mutant("quantized_linear", hint="Dequantise first")
class forward_uses_the_codes_without_the_scales(QuantizedLinear):
    def forward(self, x):
        return F.linear(x, self.weight_q.to(x.dtype), self.bias)


@SPEC.mutant("quantized_linear", hint="int8")
class codes_stored_as_floats(QuantizedLinear):
    @classmethod
    def from_linear(cls, linear, bits=8, group_size=None):
        layer = cls(linear.in_features, linear.out_features, bits, group_size, bias=linear.bias is not None)
        w = linear.weight.detach()
        rows = w.reshape(-1, group_size) if group_size else w
        q, scale = quantize_absmax(rows, bits, dim=0)
        layer.weight_q = q.reshape(w.shape).float()
        layer.scale = scale
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer


@SPEC.mutant("quantized_linear", hint="pass `bits` on")
class bits_not_passed_on(QuantizedLinear):
    @classmethod
    def from_linear(cls, linear, bits=8, group_size=None):
        layer = cls(linear.in_features, linear.out_features, bits, group_size, bias=linear.bias is not None)
        w = linear.weight.detach()
        rows = w.reshape(-1, group_size) if group_size else w
        q, scale = quantize_absmax(rows, dim=0)
        layer.weight_q = q.reshape(w.shape)
        layer.scale = scale
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer


@SPEC.alternative("quantized_linear", name="forward as x @ weight.T + bias")
class forward_as_a_matrix_product(QuantizedLinear):
    def forward(self, x):
        weight = dequantize(self.weight_q.view(len(self.scale), -1), self.scale).view_as(self.weight_q)
        out = x @ weight.to(x.dtype).T
        return out if self.bias is None else out + self.bias.to(x.dtype)


@SPEC.alternative("quantized_linear", name="groups with unflatten, scales computed directly")
class groups_with_unflatten(QuantizedLinear):
    @classmethod
    def from_linear(cls, linear, bits=8, group_size=None):
        layer = cls(linear.in_features, linear.out_features, bits, group_size, bias=linear.bias is not None)
        w = linear.weight.detach()
        qmax = 2 ** (bits - 1) - 1
        g = group_size or linear.in_features
        groups = w.unflatten(1, (-1, g))
        amax = groups.abs().amax(dim=-1, keepdim=True)
        scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
        layer.weight_q = torch.round(groups / scale).clamp(-qmax, qmax).to(torch.int8).flatten(1)
        layer.scale = scale.reshape(-1, 1)
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer

    def forward(self, x):
        g = self.group_size or self.in_features
        weight = (self.weight_q.unflatten(1, (-1, g)).to(self.scale.dtype)
                  * self.scale.view(self.out_features, -1, 1)).flatten(1)
        return F.linear(x, weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


# -- quantize_model ---------------------------------------------------------------------------------------

@SPEC.mutant("quantize_model", name="lm_head quantised too (skip ignored)", hint="a part in `skip`")
def lm_head_quantised_too(model, bits=8, group_size=None, skip=("lm_head",)):
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantizedLinear.from_linear(module, bits, group_size))
    return model


@SPEC.mutant("quantize_model", name="only the top-level children", hint="named_modules()")
def only_the_top_level_children(model, bits=8, group_size=None, skip=("lm_head",)):
    for name, module in list(model.named_children()):
        if isinstance(module, nn.Linear) and name not in skip:
            setattr(model, name, QuantizedLinear.from_linear(module, bits, group_size))
    return model


@SPEC.mutant("quantize_model", name="a quantised copy returned, the model unchanged", hint="in place")
def a_quantised_copy_returned(model, bits=8, group_size=None, skip=("lm_head",)):
    model = copy.deepcopy(model)
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and not any(part in skip for part in name.split("."))]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantizedLinear.from_linear(module, bits, group_size))
    return model


@SPEC.mutant("quantize_model", name="bits and group_size not passed on", hint="Pass bits and group_size")
def bits_and_group_size_not_passed_on(model, bits=8, group_size=None, skip=("lm_head",)):
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and not any(part in skip for part in name.split("."))]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantizedLinear.from_linear(module))
    return model


@SPEC.mutant("quantize_model", hint="a part in `skip`")
def skip_compared_with_the_whole_name(model, bits=8, group_size=None, skip=("lm_head",)):
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and name not in skip]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantizedLinear.from_linear(module, bits, group_size))
    return model


@SPEC.mutant("quantize_model", hint="return model")
def returns_nothing(model, bits=8, group_size=None, skip=("lm_head",)):
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and not any(part in skip for part in name.split("."))]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantizedLinear.from_linear(module, bits, group_size))


@SPEC.alternative("quantize_model", name="recursive walk over named_children")
def recursive_walk(model, bits=8, group_size=None, skip=("lm_head",)):
    def walk(module, prefix):
        for name, child in list(module.named_children()):
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(child, nn.Linear):
                if not any(part in skip for part in full.split(".")):
                    setattr(module, name, QuantizedLinear.from_linear(child, bits, group_size))
            else:
                walk(child, full)
    walk(model, "")
    return model


@SPEC.alternative("quantize_model")
def substring_test_on_the_name(model, bits=8, group_size=None, skip=("lm_head",)):
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and not any(s in name for s in skip)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantizedLinear.from_linear(module, bits, group_size))
    return model


# -- distillation_loss ------------------------------------------------------------------------------------

def distillation_terms(student_logits, teacher_logits, labels, temperature):
    """(KL(teacher_T || student_T), cross-entropy), shifted and averaged over the kept positions."""
    vocab = student_logits.shape[-1]
    student = student_logits[:, :-1].reshape(-1, vocab)
    teacher = teacher_logits[:, :-1].detach().reshape(-1, vocab)
    targets = labels[:, 1:].reshape(-1)
    keep = targets != -100
    log_q = F.log_softmax(student / temperature, dim=-1)[keep]
    log_p = F.log_softmax(teacher / temperature, dim=-1)[keep]
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
    return kl, F.cross_entropy(student[keep], targets[keep])


@SPEC.mutant("distillation_loss", name="KL without the T² factor", hint="KL without the T² factor?",
             uses=(distillation_terms,))
def kl_without_the_temperature_squared(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    kl, ce = distillation_terms(student_logits, teacher_logits, labels, temperature)
    return alpha * kl + (1 - alpha) * ce


@SPEC.mutant("distillation_loss", name="KL in the wrong direction", hint="KL in the wrong direction?")
def kl_in_the_wrong_direction(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    vocab = student_logits.shape[-1]
    student = student_logits[:, :-1].reshape(-1, vocab)
    teacher = teacher_logits[:, :-1].detach().reshape(-1, vocab)
    targets = labels[:, 1:].reshape(-1)
    keep = targets != -100
    log_q = F.log_softmax(student / temperature, dim=-1)[keep]
    log_p = F.log_softmax(teacher / temperature, dim=-1)[keep]
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=-1).mean()
    ce = F.cross_entropy(student[keep], targets[keep])
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


@SPEC.mutant("distillation_loss", name="the teacher's softmax at temperature 1", hint="temperature 1?")
def the_teacher_at_temperature_1(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    vocab = student_logits.shape[-1]
    student = student_logits[:, :-1].reshape(-1, vocab)
    teacher = teacher_logits[:, :-1].detach().reshape(-1, vocab)
    targets = labels[:, 1:].reshape(-1)
    keep = targets != -100
    log_q = F.log_softmax(student / temperature, dim=-1)[keep]
    log_p = F.log_softmax(teacher / 1.0, dim=-1)[keep]
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
    ce = F.cross_entropy(student[keep], targets[keep])
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


@SPEC.mutant("distillation_loss", hint="No shift?")
def no_shift(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    vocab = student_logits.shape[-1]
    student = student_logits.reshape(-1, vocab)
    teacher = teacher_logits.detach().reshape(-1, vocab)
    targets = labels.reshape(-1)
    keep = targets != -100
    log_q = F.log_softmax(student / temperature, dim=-1)[keep]
    log_p = F.log_softmax(teacher / temperature, dim=-1)[keep]
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
    ce = F.cross_entropy(student[keep], targets[keep])
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


@SPEC.mutant("distillation_loss", hint="alpha on the wrong term?", uses=(distillation_terms,))
def alpha_on_the_wrong_term(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    kl, ce = distillation_terms(student_logits, teacher_logits, labels, temperature)
    return (1 - alpha) * temperature ** 2 * kl + alpha * ce


@SPEC.mutant("distillation_loss", name="KL averaged over the vocabulary too", hint="averaged over the vocabulary too?")
def kl_averaged_over_the_vocabulary_too(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    vocab = student_logits.shape[-1]
    student = student_logits[:, :-1].reshape(-1, vocab)
    teacher = teacher_logits[:, :-1].detach().reshape(-1, vocab)
    targets = labels[:, 1:].reshape(-1)
    keep = targets != -100
    log_q = F.log_softmax(student / temperature, dim=-1)[keep]
    log_p = F.log_softmax(teacher / temperature, dim=-1)[keep]
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="mean")
    ce = F.cross_entropy(student[keep], targets[keep])
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


@SPEC.mutant("distillation_loss", name="-100 positions kept in the KL", hint="-100 positions kept in the KL?")
def ignored_positions_kept_in_the_kl(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    vocab = student_logits.shape[-1]
    student = student_logits[:, :-1].reshape(-1, vocab)
    teacher = teacher_logits[:, :-1].detach().reshape(-1, vocab)
    targets = labels[:, 1:].reshape(-1)
    keep = targets != -100
    log_q = F.log_softmax(student / temperature, dim=-1)
    log_p = F.log_softmax(teacher / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
    ce = F.cross_entropy(student[keep], targets[keep])
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


@SPEC.mutant("distillation_loss", hint="detach()")
def the_teacher_not_detached(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    vocab = student_logits.shape[-1]
    student = student_logits[:, :-1].reshape(-1, vocab)
    teacher = teacher_logits[:, :-1].reshape(-1, vocab)
    targets = labels[:, 1:].reshape(-1)
    keep = targets != -100
    log_q = F.log_softmax(student / temperature, dim=-1)[keep]
    log_p = F.log_softmax(teacher / temperature, dim=-1)[keep]
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
    ce = F.cross_entropy(student[keep], targets[keep])
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


@SPEC.alternative("distillation_loss", name="F.kl_div(log_target=True, reduction='batchmean') on the kept positions")
def kl_div_batchmean_on_the_kept_positions(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    s = student_logits[:, :-1].flatten(0, 1)
    t = teacher_logits.detach()[:, :-1].flatten(0, 1)
    y = labels[:, 1:].flatten()
    s, t, y = s[y != -100], t[y != -100], y[y != -100]
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                  reduction="batchmean")
    return alpha * temperature ** 2 * kl + (1 - alpha) * F.cross_entropy(s, y)


@SPEC.alternative("distillation_loss", name="in float64, cast back")
def in_float64_cast_back(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    dtype = student_logits.dtype
    s, t = student_logits.double()[:, :-1], teacher_logits.detach().double()[:, :-1]
    y = labels[:, 1:]
    keep = (y != -100).double()
    log_q = (s / temperature).log_softmax(-1)
    p = (t / temperature).softmax(-1)
    kl = (p * (p.clamp_min(1e-300).log() - log_q)).sum(-1)
    ce = -s.log_softmax(-1).gather(-1, y.clamp(min=0)[..., None])[..., 0]
    n = keep.sum()
    return (alpha * temperature ** 2 * (kl * keep).sum() / n + (1 - alpha) * (ce * keep).sum() / n).to(dtype)


@SPEC.alternative("distillation_loss", name="cross-entropy with soft targets minus the teacher's entropy")
def soft_cross_entropy_minus_the_teacher_entropy(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    with torch.no_grad():
        p = F.softmax(teacher_logits[:, :-1] / temperature, dim=-1)
        entropy = -(p * F.log_softmax(teacher_logits[:, :-1] / temperature, dim=-1)).sum(-1)
    keep = labels[:, 1:] != -100
    soft_ce = F.cross_entropy((student_logits[:, :-1] / temperature)[keep], p[keep], reduction="none")
    kl = (soft_ce - entropy[keep]).mean()
    ce = F.cross_entropy(student_logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100)
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


# -- magnitude_prune --------------------------------------------------------------------------------------

@SPEC.mutant("magnitude_prune", hint="global")
def each_layer_pruned_on_its_own(model, sparsity, module_types=(nn.Linear,)):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity is a fraction")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, module_types):
                k = round(sparsity * m.weight.numel())
                if k:
                    idx = torch.topk(m.weight.abs().flatten(), k, largest=False).indices
                    m.weight.view(-1)[idx] = 0
    return model


@SPEC.mutant("magnitude_prune", hint="LARGEST")
def the_largest_weights_pruned(model, sparsity, module_types=(nn.Linear,)):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity is a fraction")
    weights = [m.weight for m in model.modules() if isinstance(m, module_types)]
    scores = torch.cat([w.detach().abs().flatten() for w in weights])
    k = round(sparsity * scores.numel())
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        keep[torch.topk(scores, k).indices] = False
    start = 0
    with torch.no_grad():
        for w in weights:
            w.mul_(keep[start:start + w.numel()].view_as(w))
            start += w.numel()
    return model


@SPEC.mutant("magnitude_prune", name="int() instead of round", hint="round(sparsity * total)")
def int_instead_of_round(model, sparsity, module_types=(nn.Linear,)):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity is a fraction")
    weights = [m.weight for m in model.modules() if isinstance(m, module_types)]
    scores = torch.cat([w.detach().abs().flatten() for w in weights])
    k = int(sparsity * scores.numel())
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        keep[torch.topk(scores, k, largest=False).indices] = False
    start = 0
    with torch.no_grad():
        for w in weights:
            w.mul_(keep[start:start + w.numel()].view_as(w))
            start += w.numel()
    return model


@SPEC.mutant("magnitude_prune", hint="not its bias")
def biases_pruned_too(model, sparsity, module_types=(nn.Linear,)):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity is a fraction")
    weights = [p for m in model.modules() if isinstance(m, module_types) for p in m.parameters(recurse=False)]
    scores = torch.cat([w.detach().abs().flatten() for w in weights])
    k = round(sparsity * scores.numel())
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        keep[torch.topk(scores, k, largest=False).indices] = False
    start = 0
    with torch.no_grad():
        for w in weights:
            w.mul_(keep[start:start + w.numel()].view_as(w))
            start += w.numel()
    return model


@SPEC.mutant("magnitude_prune", hint="a threshold guessed from the weights", name="threshold guessed from the mean |w|")
def threshold_guessed_from_the_mean(model, sparsity, module_types=(nn.Linear,)):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity is a fraction")
    weights = [m.weight for m in model.modules() if isinstance(m, module_types)]
    scores = torch.cat([w.detach().abs().flatten() for w in weights])
    keep = scores > 2 * sparsity * scores.mean()
    start = 0
    with torch.no_grad():
        for w in weights:
            w.mul_(keep[start:start + w.numel()].view_as(w))
            start += w.numel()
    return model


@SPEC.mutant("magnitude_prune", name="a pruned copy returned, the model unchanged", hint="in place")
def a_pruned_copy_returned(model, sparsity, module_types=(nn.Linear,)):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity is a fraction")
    model = copy.deepcopy(model)
    weights = [m.weight for m in model.modules() if isinstance(m, module_types)]
    scores = torch.cat([w.detach().abs().flatten() for w in weights])
    k = round(sparsity * scores.numel())
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        keep[torch.topk(scores, k, largest=False).indices] = False
    start = 0
    with torch.no_grad():
        for w in weights:
            w.mul_(keep[start:start + w.numel()].view_as(w))
            start += w.numel()
    return model


@SPEC.alternative("magnitude_prune", name="kthvalue threshold, tie-safe by index")
def kthvalue_threshold(model, sparsity, module_types=(nn.Linear,)):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity is a fraction")
    weights = [m.weight for m in model.modules() if isinstance(m, module_types)]
    scores = torch.cat([w.detach().abs().flatten() for w in weights])
    k = round(sparsity * scores.numel())
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        threshold = torch.kthvalue(scores, k).values
        below = (scores < threshold).nonzero().flatten()
        tied = (scores == threshold).nonzero().flatten()[: k - len(below)]
        keep[torch.cat([below, tied])] = False
    start = 0
    with torch.no_grad():
        for w in weights:
            w.mul_(keep[start:start + w.numel()].view_as(w))
            start += w.numel()
    return model


@SPEC.alternative("magnitude_prune", name="torch.nn.utils.prune, made permanent")
def torch_prune_made_permanent(model, sparsity, module_types=(nn.Linear,)):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity is a fraction")
    import torch.nn.utils.prune as prune
    targets = [(m, "weight") for m in model.modules() if isinstance(m, module_types)]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(sparsity))
    for module, name in targets:
        prune.remove(module, name)
    return model


# -- fit_scaling_law --------------------------------------------------------------------------------------

@SPEC.mutant("fit_scaling_law", name="only the N term (D ignored)", hint="One of the two terms is missing")
def only_the_n_term(rows):
    if len(rows) < 5:
        raise ValueError("five unknowns need at least five runs")
    n, d, y = (torch.tensor([float(r[k]) for r in rows], dtype=torch.float64).log() for k in ("params", "tokens", "loss"))
    p = torch.tensor([0.0, 5.0, 0.3], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([p], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ((torch.logsumexp(torch.stack([p[0].expand_as(n), p[1] - p[2] * n]), dim=0) - y) ** 2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    q = p.detach().tolist()
    return {"E": math.exp(q[0]), "A": math.exp(q[1]), "alpha": q[2], "B": 0.0, "beta": 1.0}


@SPEC.mutant("fit_scaling_law", name="no irreducible term (E fixed at 0)", hint="E is 0")
def no_irreducible_term(rows):
    if len(rows) < 5:
        raise ValueError("five unknowns need at least five runs")
    n, d, y = (torch.tensor([float(r[k]) for r in rows], dtype=torch.float64).log() for k in ("params", "tokens", "loss"))
    p = torch.tensor([5.0, 0.3, 5.0, 0.3], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([p], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ((torch.logsumexp(torch.stack([p[0] - p[1] * n, p[2] - p[3] * d]), dim=0) - y) ** 2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    q = p.detach().tolist()
    return {"E": 0.0, "A": math.exp(q[0]), "alpha": q[1], "B": math.exp(q[2]), "beta": q[3]}


@SPEC.mutant("fit_scaling_law", name="one power law: least squares of log L on log N",
             hint="One of the two terms is missing")
def one_power_law(rows):
    if len(rows) < 5:
        raise ValueError("five unknowns need at least five runs")
    x = torch.tensor([math.log(r["params"]) for r in rows], dtype=torch.float64)
    y = torch.tensor([math.log(r["loss"]) for r in rows], dtype=torch.float64)
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return {"E": 0.0, "A": math.exp(y.mean() - slope * x.mean()), "alpha": -slope.item(), "B": 0.0, "beta": 1.0}


@SPEC.mutant("fit_scaling_law", hint="N and D are swapped", original="_fit_right")
def N_and_D_swapped(rows):
    return _fit_right([{"params": r["tokens"], "tokens": r["params"], "loss": r["loss"]} for r in rows])


@SPEC.mutant("fit_scaling_law", hint="A and B are swapped", original="_fit_right")
def A_and_B_swapped_in_the_result(rows):
    law = _fit_right(rows)
    return {"E": law["E"], "A": law["B"], "alpha": law["alpha"], "B": law["A"], "beta": law["beta"]}


@SPEC.alternative("fit_scaling_law", name="Adam on a log-space Huber loss, centred logs, two starts")
def adam_on_a_huber_loss(rows):
    if len(rows) < 5:
        raise ValueError("five unknowns need at least five runs")
    n, d, y = (torch.tensor([float(r[k]) for r in rows], dtype=torch.float64).log() for k in ("params", "tokens", "loss"))
    n0, d0 = n.mean(), d.mean()  # centred: A / N^alpha = exp(a - alpha (log N - n0)), better conditioned
    best = None
    for start in ([0.0, -1.0, 0.3, -1.0, 0.3], [0.5, -2.0, 0.6, -2.0, 0.6]):
        p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([p], lr=0.05)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 1000)
        for _ in range(1000):
            opt.zero_grad()
            pred = torch.logsumexp(torch.stack([p[0].expand_as(n), p[1] - p[2] * (n - n0), p[3] - p[4] * (d - d0)]), 0)
            loss = F.huber_loss(pred, y, delta=1e-3)
            loss.backward()
            opt.step()
            schedule.step()
        if best is None or loss.item() < best[0]:
            best = (loss.item(), p.detach().tolist())
    e, a, alpha, b, beta = best[1]
    return {"E": math.exp(e), "A": math.exp(a + alpha * n0.item()), "alpha": alpha,
            "B": math.exp(b + beta * d0.item()), "beta": beta}


@SPEC.alternative("fit_scaling_law", name="LBFGS on relative errors in linear space, on E, log A, alpha, log B, beta")
def lbfgs_on_relative_errors(rows):
    if len(rows) < 5:
        raise ValueError("five unknowns need at least five runs")
    n, d, y = (torch.tensor([float(r[k]) for r in rows], dtype=torch.float64) for k in ("params", "tokens", "loss"))
    best = None
    for exponent in (0.2, 0.5):
        p = torch.tensor([1.0, 5.0, exponent, 5.0, exponent], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([p], max_iter=1000, line_search_fn="strong_wolfe", tolerance_grad=1e-14,
                                tolerance_change=1e-16)

        def closure():
            opt.zero_grad()
            pred = p[0] + torch.exp(p[1] - p[2] * n.log()) + torch.exp(p[3] - p[4] * d.log())
            loss = ((pred / y - 1) ** 2).mean()
            loss.backward()
            return loss

        opt.step(closure)
        value = closure().item()
        if math.isfinite(value) and (best is None or value < best[0]):
            best = (value, p.detach().tolist())
    e, a, alpha, b, beta = best[1]
    return {"E": e, "A": math.exp(a), "alpha": alpha, "B": math.exp(b), "beta": beta}


# -- compute_optimal --------------------------------------------------------------------------------------

@SPEC.mutant("compute_optimal", hint="Forgot the 6?")
def forgetting_the_6(C, law):
    a, b = law["alpha"], law["beta"]
    g = (a * law["A"] / (b * law["B"])) ** (1 / (a + b))
    params = g * C ** (b / (a + b))
    tokens = C / params
    return params, tokens


@SPEC.mutant("compute_optimal", hint="The exponents are swapped")
def exponents_swapped(C, law):
    a, b = law["alpha"], law["beta"]
    g = (a * law["A"] / (b * law["B"])) ** (1 / (a + b))
    params = g * (C / 6) ** (a / (a + b))
    tokens = (C / 6) / params
    return params, tokens


@SPEC.mutant("compute_optimal", hint="G is inverted")
def G_inverted(C, law):
    a, b = law["alpha"], law["beta"]
    g = (b * law["B"] / (a * law["A"])) ** (1 / (a + b))
    params = g * (C / 6) ** (b / (a + b))
    tokens = (C / 6) / params
    return params, tokens


@SPEC.mutant("compute_optimal", name="returns (tokens, params)", hint="That looks like (tokens, params)")
def returns_tokens_then_params(C, law):
    a, b = law["alpha"], law["beta"]
    g = (a * law["A"] / (b * law["B"])) ** (1 / (a + b))
    params = g * (C / 6) ** (b / (a + b))
    tokens = (C / 6) / params
    return tokens, params


@SPEC.mutant("compute_optimal", hint="The factor G is missing")
def no_G_factor(C, law):
    a, b = law["alpha"], law["beta"]
    g = 1.0
    params = g * (C / 6) ** (b / (a + b))
    tokens = (C / 6) / params
    return params, tokens


@SPEC.alternative("compute_optimal", name="golden-section search on log N")
def golden_section_search_on_log_n(C, law):
    def loss(log_n):
        n = math.exp(log_n)
        return law["A"] / n ** law["alpha"] + law["B"] / (C / (6 * n)) ** law["beta"]

    lo, hi = 0.0, math.log(C / 6)
    ratio = (math.sqrt(5) - 1) / 2
    while hi - lo > 1e-11:
        x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if loss(x1) < loss(x2):
            hi = x2
        else:
            lo = x1
    params = math.exp((lo + hi) / 2)
    return params, C / (6 * params)


@SPEC.alternative("compute_optimal")
def the_closed_form_with_D_first(C, law):
    a, A, b, B = law["alpha"], law["A"], law["beta"], law["B"]
    tokens = (b * B / (a * A)) ** (1 / (a + b)) * (C / 6) ** (a / (a + b))
    return C / (6 * tokens), tokens


# -- the notebook's solution and the reference agree on these inputs ------------------------------------

@SPEC.inputs_of("perplexity")
def perplexity_inputs(gen):
    from llmcourse.checking.shared.deployment_eval import eval_model, eval_tokenizer
    from llmcourse.checks.deployment_eval import PPL_ONE_TEXT, PPL_TEXTS

    _, _, model = eval_model(int(torch.randint(0, 1000, (), generator=gen)))
    tokenizer, with_bos = eval_tokenizer(), eval_tokenizer(bos=True)
    yield (model, tokenizer, PPL_ONE_TEXT), {}  # one string is one text
    yield (model, tokenizer, PPL_TEXTS), {}  # "" and a one-token text have nothing to predict: left out
    yield (model, tokenizer, PPL_TEXTS), {"max_length": 5}  # truncated
    yield (model, tokenizer, PPL_TEXTS[2:]), {"max_length": 2}  # one predicted token a text
    yield (model, with_bos, ["yes", "", PPL_ONE_TEXT]), {}  # <s> first: "yes" now has a token to predict, "" none
    yield (copy.deepcopy(model).double(), tokenizer, PPL_TEXTS[:3]), {}  # a float64 model
    yield (model, tokenizer, ["", "yes"]), {}  # no token to predict at all: ValueError
    yield (model, tokenizer, []), {}  # no text: ValueError
    yield (model, tokenizer, PPL_TEXTS), {"max_length": 1}  # truncated to one token: ValueError


@SPEC.inputs_of("bleu")
def bleu_inputs(gen):
    words = "the a cat dog sat ran on in mat park".split()
    cands = [" ".join(words[i] for i in torch.randint(0, len(words), (n,), generator=gen)) for n in (9, 4, 12, 1)]
    refs = [[" ".join(words[i] for i in torch.randint(0, len(words), (n,), generator=gen)) for n in lengths]
            for lengths in ((8, 11), (5,), (12, 10, 13), (2, 1))]
    for max_n in (1, 2, 3, 4):
        yield (cands, refs), {"max_n": max_n}  # random sentences of a small vocabulary: n-grams match often
    yield (["the cat sat on the mat", "a dog ran far away"],
           [["the cat sat on a mat", "a cat sat on the mat"], ["the dog ran away"]]), {}
    yield (["the cat sat on the mat", "a dog ran far away"],
           [["the cat sat on a mat", "a cat sat on the mat"], ["the dog ran away"]]), {"max_n": 2}
    yield (["the the the the"], [["the cat the", "the dog the"]]), {"max_n": 1}  # clipped by one reference
    yield (["a b a b a b"], [["a b a b"]]), {"max_n": 2}
    yield (["the cat sat on"], [["the cat sat", "the cat sat on it"]]), {"max_n": 2}  # a tie: the shorter reference
    yield (["the cat"], [["the cat sat on the mat", "the cat sat"]]), {"max_n": 2}  # brevity penalty
    yield (["The Cat sat"], [["the cat sat"]]), {"max_n": 1}  # case kept
    yield ("the cat sat on the mat", ["the cat is on the mat"]), {"max_n": 3}  # one sentence and its references
    yield ("the cat sat on the mat", ["the cat sat on the mat"]), {}
    yield (["a dog"], [["a dog ran"]]), {}  # shorter than max_n: no 4-gram, 0
    yield ([""], [["the cat"]]), {"max_n": 1}  # an empty candidate
    yield ([], []), {}  # an empty corpus
    yield (["the cat", "a dog"], [["the cat"]]), {}  # lengths differ: ValueError


def _model_for_choices(gen):
    from llmcourse.checking.shared.deployment_eval import eval_model, eval_tokenizer

    _, _, model = eval_model(int(torch.randint(0, 1000, (), generator=gen)), head_scale=3.0)
    return model, eval_tokenizer(), eval_tokenizer(bos=True)


@SPEC.inputs_of("choice_logprob")
def choice_logprob_inputs(gen):
    from llmcourse.checks.deployment_eval import CHOICES, CHOICE_PROMPT

    model, tokenizer, with_bos = _model_for_choices(gen)
    for choice in CHOICES:
        yield (model, tokenizer, CHOICE_PROMPT, choice), {}
        yield (model, with_bos, CHOICE_PROMPT, choice), {}  # <s> before the prompt only
    yield (model, tokenizer, "The cat sat on the", " mat"), {}
    yield (copy.deepcopy(model).double(), tokenizer, "The cat sat on the", " big red ball"), {}
    yield (model, with_bos, "", " Once upon a time"), {}  # the prompt is <s> alone
    yield (model, tokenizer, "", " Once upon a time"), {}  # no prompt token: ValueError
    yield (model, tokenizer, CHOICE_PROMPT, ""), {}  # no choice token: ValueError


@SPEC.inputs_of("multiple_choice_accuracy")
def multiple_choice_inputs(gen):
    from llmcourse.checks.deployment_eval import MC_ITEMS

    model, tokenizer, with_bos = _model_for_choices(gen)
    for _ in range(3):
        items = [{"prompt": p, "choices": list(c), "answer": int(torch.randint(0, len(c), (), generator=gen))}
                 for p, c in MC_ITEMS]
        yield (model, tokenizer, items), {}
    yield (model, with_bos, items), {}
    yield (model, tokenizer, items[:1]), {}
    yield (model, tokenizer, [{"prompt": "The dog was very", "choices": [" happy"], "answer": 0}]), {}
    yield (model, tokenizer, [{"prompt": "The dog was very", "choices": [" happy", " happy"], "answer": 1}]), {}  # a tie
    yield (model, tokenizer, []), {}  # no item: ValueError


@SPEC.inputs_of("model_memory")
def model_memory_inputs(gen):
    for n_params in (10 ** 9, 7, 124_439_808, 0):
        for dtype in BYTES_PER_PARAM:
            yield (n_params, dtype), {}
            for mixed_precision in (False, True):  # integer weights, and fp32 under mixed precision: ValueError
                yield (n_params, dtype), {"training": True, "mixed_precision": mixed_precision}
    yield (10 ** 9, "fp32", False, True), {}  # mixed precision is about training only
    yield (10 ** 9, "bf16", True, True), {}
    yield (1e9, "fp16"), {"training": True, "mixed_precision": True}  # a float count
    yield (1e9, "int4"), {}
    yield (10 ** 9, "fp8"), {}  # an unknown dtype: ValueError
    yield (10 ** 9, "FP32"), {"training": True}


def _weights_to_quantize(gen):
    """Tensors of several shapes and dtypes: an outlier, a slice of zeros, all-negative and all-positive slices."""
    w = torch.randn(6, 10, generator=gen)
    w[2, 3] = 9.0
    w[4] = 0.0
    w[:, 7] = 0.0
    cube = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64) * 3
    cube[1] = -cube[1].abs()
    cube[2] = cube[2].abs() + 0.5
    return [w, w.double(), cube, cube.float(), torch.randn(7, generator=gen) * 0.01, w.bfloat16()]


def _quantize_inputs(gen):
    weights = _weights_to_quantize(gen)
    for w in weights[:4]:
        for bits in (2, 3, 4, 8):
            for dim in (None, 0, 1, -1):
                yield (w, bits, dim), {}
    yield (weights[2], 5), {"dim": 2}
    yield (weights[2], 8), {"dim": -2}
    yield (weights[4],), {}  # 1-D: one scale, or one a weight
    yield (weights[4], 6), {"dim": 0}
    yield (weights[5], 8, 0), {}  # bfloat16
    yield (torch.tensor(-0.75),), {}  # a scalar
    yield (torch.zeros(3, 4), 4, 1), {}  # all zeros: scale 1
    yield (torch.zeros(0, 5), 8, 0), {}  # no rows
    yield (weights[0], 1), {}  # bits out of range: ValueError
    yield (weights[0], 9, 0), {}


@SPEC.inputs_of("quantize_absmax")
def quantize_absmax_inputs(gen):
    yield from _quantize_inputs(gen)


@SPEC.inputs_of("quantize_zeropoint")
def quantize_zeropoint_inputs(gen):
    yield from _quantize_inputs(gen)


@SPEC.inputs_of("dequantize")
def dequantize_inputs(gen):
    for dtype in (torch.float32, torch.float64):
        q = torch.randint(-127, 128, (6, 10), generator=gen, dtype=torch.int8)
        yield (q, torch.rand(6, 1, generator=gen, dtype=dtype) + 0.01), {}  # one scale a row
        yield (q, torch.rand(1, 10, generator=gen, dtype=dtype) + 0.01), {}  # one scale a column
        yield (q, torch.tensor(0.02, dtype=dtype)), {}  # one scale
        yield (q, torch.tensor(0.02, dtype=dtype)), {"zero_point": None}
        u = torch.randint(0, 256, (3, 4, 5), generator=gen, dtype=torch.uint8)
        scale = torch.rand(3, 1, 1, generator=gen, dtype=dtype) + 0.01
        zero_point = torch.randint(0, 256, (3, 1, 1), generator=gen, dtype=torch.int32)
        yield (u, scale, zero_point), {}
        yield (u, scale), {"zero_point": zero_point}
        yield (u[0, 0], torch.tensor(0.5, dtype=dtype), torch.tensor(128, dtype=torch.int32)), {}
    q, scale = quantize_absmax(torch.randn(4, 8, generator=gen), 4, dim=0)
    yield (q, scale), {}
    yield (torch.zeros(0, 5, dtype=torch.int8), torch.ones(0, 1)), {}  # nothing to dequantise


@SPEC.agreement("quantized_linear")
def quantized_linears_agree(mine, theirs):
    """Both quantise the same nn.Linear into the same buffers, and each computes the same outputs from the other's
    buffers (float32 and float64 inputs of several shapes); a group_size that does not divide in_features raises."""
    import pytest

    from tests.test_checks import assert_same

    gen = torch.Generator().manual_seed(0)
    for in_features, out_features, bits, group_size, bias, dtype in [
            (12, 5, 8, None, True, torch.float32), (12, 5, 4, 4, False, torch.float32),
            (16, 3, 3, 8, True, torch.float64), (6, 4, 2, 6, True, torch.float32), (6, 4, 8, 1, False, torch.float64),
            (10, 7, 5, None, False, torch.float64)]:
        what = f"QuantizedLinear.from_linear(Linear({in_features}, {out_features}, bias={bias}, dtype={dtype}), " \
               f"bits={bits}, group_size={group_size})"
        linear = nn.Linear(in_features, out_features, bias=bias, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(out_features, in_features, generator=gen, dtype=dtype))
            linear.weight[0, 0] = 8.0  # an outlier
            linear.weight[1] = 0.0  # a row of zeros: scale 1
            if bias:
                linear.bias.copy_(torch.randn(out_features, generator=gen, dtype=dtype))
        a = mine.from_linear(copy.deepcopy(linear), bits, group_size)
        b = theirs.from_linear(copy.deepcopy(linear), bits=bits, group_size=group_size)
        assert type(a) is mine and type(b) is theirs, what
        assert_same(a, b, what)
        attributes = ("in_features", "out_features", "bits", "group_size")
        assert [getattr(a, n) for n in attributes] == [getattr(b, n) for n in attributes], what
        assert_same(mine(in_features, out_features, bits, group_size, bias=bias),
                    theirs(in_features, out_features, bits, group_size, bias=bias), f"{what}: a new layer")
        a_with_b_state = mine(in_features, out_features, bits, group_size, bias=bias)
        a_with_b_state.load_state_dict(b.state_dict(), assign=True)
        b_with_a_state = theirs(in_features, out_features, bits, group_size, bias=bias)
        b_with_a_state.load_state_dict(a.state_dict(), assign=True)
        for shape in ((3, in_features), (2, 4, in_features), (in_features,)):
            for x_dtype in (torch.float32, torch.float64):
                x = torch.randn(*shape, generator=gen, dtype=x_dtype)
                with torch.no_grad():
                    expected = b(x)
                    assert_same(a(x), expected, f"{what} on an input of shape {shape} and dtype {x_dtype}")
                    assert_same(a_with_b_state(x), expected, f"{what}: the reference's buffers in the notebook's layer")
                    assert_same(b_with_a_state(x), expected, f"{what}: the notebook's buffers in the reference's layer")
    linear = nn.Linear(10, 3)
    for cls in (mine, theirs):
        with pytest.raises(ValueError):
            cls(10, 3, 8, 4)
        with pytest.raises(ValueError):
            cls.from_linear(linear, 4, group_size=3)


@SPEC.inputs_of("quantize_model")
def quantize_model_inputs(gen):
    from llmcourse.checking.shared.lora import llama_weights, local_llama, tiny_llama_config

    config = tiny_llama_config()  # hidden 16, intermediate 24: groups of 8 and 4 divide both
    llama = local_llama(config, llama_weights(config, int(torch.randint(0, 1000, (), generator=gen))))
    yield (llama,), {}
    yield (llama, 4, 8), {"skip": ("mlp",)}
    yield (llama,), {"bits": 3, "group_size": 4, "skip": ("lm_head", "self_attn")}
    yield (llama,), {"skip": ()}  # every layer, lm_head too
    yield (llama,), {"skip": ("head", "proj")}  # whole parts of a name only: nothing skipped
    yield (llama,), {"skip": ("q_proj", "down_proj")}
    yield (llama, 8, 5), {}  # 5 divides no in_features: ValueError
    nested = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Sequential(nn.Linear(6, 4, bias=False), nn.Linear(4, 4)))
    nested.lm_head = nn.Linear(4, 3)
    with torch.no_grad():
        for p in nested.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    yield (nested,), {}
    yield (copy.deepcopy(nested).double(), 2, 2), {"skip": ("2",)}  # float64; the inner Sequential "2" skipped
    yield (nested,), {"skip": ("0",)}  # "0" and "2.0" skipped, "2.1" not


@SPEC.inputs_of("distillation_loss")
def distillation_inputs(gen):
    from llmcourse.checking.shared.deployment_eval import distill_inputs

    for i, (batch, length, vocab) in enumerate([(2, 6, 7), (3, 4, 5), (1, 2, 3), (4, 9, 11)]):
        for dtype in (torch.float32, torch.float64):
            s, t, labels = distill_inputs(int(torch.randint(0, 1000, (), generator=gen)), batch, length, vocab, dtype)
            yield (s, t, labels), {}
            yield (s, t, labels), {"temperature": 1.0 + i, "alpha": 0.3}
            masked = labels.clone()
            masked[0, : length // 2] = -100  # a prompt
            if batch > 1:
                masked[-1, -1:] = -100  # padding
            masked[:, 0] = -100  # the first label is never predicted
            yield (s, t, masked), {"temperature": 0.5, "alpha": 0.8}
            yield (s, t, masked), {"alpha": 0.0}
            yield (s, t, masked), {"alpha": 1.0, "temperature": 4.0}
            yield (s, s.clone(), labels), {"alpha": 1.0}  # a student equal to its teacher: 0
    s, t, labels = distill_inputs(5, 2, 5, 6)
    yield (s.requires_grad_(), t, labels), {"temperature": 3}
    yield (s, t, torch.full_like(labels, -100)), {}  # nothing kept: nan, like next_token_loss


def _small_mlp(gen, dtype=torch.float32):
    model = nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 5), nn.Linear(5, 3, bias=False)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype) * 0.3)
    return model


@SPEC.inputs_of("magnitude_prune")
def magnitude_prune_inputs(gen):
    for dtype in (torch.float32, torch.float64):
        model = _small_mlp(gen, dtype)
        for sparsity in (0.0, 0.25, 0.37, 0.5, 0.9, 1.0):
            yield (model, sparsity), {}
    model = _small_mlp(gen)
    yield (model, 1), {}  # an int
    yield (model, 0), {}
    equal_magnitudes = _small_mlp(gen)
    with torch.no_grad():  # |w| is 0.1 or 0.2, with either sign: ties, which topk breaks the same way in both
        for m in equal_magnitudes:
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randint(1, 3, m.weight.shape, generator=gen) * 0.1 *
                               (torch.randint(0, 2, m.weight.shape, generator=gen) * 2 - 1))
    yield (equal_magnitudes, 0.3), {}
    embedded = nn.Sequential(nn.Embedding(12, 6), nn.Linear(6, 6), nn.LayerNorm(6), nn.Linear(6, 12))
    with torch.no_grad():
        for p in embedded.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    yield (embedded, 0.4), {}
    yield (embedded, 0.4), {"module_types": (nn.Linear, nn.Embedding)}
    yield (embedded, 0.6), {"module_types": (nn.Embedding,)}
    # A weight shared by two modules (an output layer tied to the embedding table) is ranked once for each, as
    # torch.nn.utils.prune.global_unstructured (the contract) ranks it.
    shared = nn.Sequential(nn.Embedding(12, 6), nn.Linear(6, 6), nn.Linear(6, 12, bias=False))
    with torch.no_grad():
        shared[0].weight.copy_(torch.randn(12, 6, generator=gen) * 0.1)
        shared[1].weight.copy_(torch.randn(6, 6, generator=gen))
    shared[2].weight = shared[0].weight
    yield (shared, 0.5), {"module_types": (nn.Linear, nn.Embedding)}
    yield (model, -0.1), {}  # not a fraction: ValueError
    yield (model, 1.5), {}


def _law_rows(law, pairs):
    return [{"params": n, "tokens": d, "loss": law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]}
            for n, d in pairs]


@SPEC.inputs_of("fit_scaling_law")
def fit_scaling_law_inputs(gen):
    from llmcourse.checks.deployment_eval import GRID_LAW, GRID_PARAMS, GRID_TOKENS

    grid = [(n, d) for n in GRID_PARAMS for d in GRID_TOKENS]
    yield (_law_rows(GRID_LAW, grid),), {}  # a law the runs follow exactly
    law = {"E": 1.2, "A": 400.0, "alpha": 0.28, "B": 900.0, "beta": 0.33}
    noise = torch.randn(5, generator=gen, dtype=torch.float64) * 0.01
    yield ([{"params": int(row["params"]), "tokens": int(row["tokens"]), "loss": row["loss"] * math.exp(e)}
            for row, e in zip(_law_rows(law, grid[::6]), noise.tolist())],), {}  # five noisy runs, integer counts
    yield (_law_rows(law, grid[:4]),), {}  # four runs: ValueError
    yield ([],), {}


@SPEC.inputs_of("compute_optimal")
def compute_optimal_inputs(gen):
    from llmcourse.checks.deployment_eval import GRID_LAW

    laws = [GRID_LAW, {"E": 1.5, "A": 300.0, "alpha": 0.3, "B": 500.0, "beta": 0.35},
            {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28},  # the Chinchilla fit
            {"E": 0.0, "A": 50.0, "alpha": 0.5, "B": 50.0, "beta": 0.5}]
    for law in laws:
        for C in (6e15, 1e20, 3.14e23, float(torch.rand((), generator=gen)) * 1e18):
            yield (C, law), {}
    yield (10 ** 21, laws[1]), {}  # an int budget
