"""The checks of 07_deployment (evaluation, distillation and scaling laws), visible and hidden.

A check marked `@visible` ships to students: `grader build` copies it, with the helpers and imports it
uses, into `llmcourse/checks/deployment_eval.py` (docstring: STUDENT_DOC below), where a student runs it before
grading. Visible checks use small worked examples and properties every right answer has, never the
reference. The other checks stay here and run only when a notebook is graded: they test the student's
code against `grader.reference.deployment`, sacrebleu, and torch's own autograd.

Models are built twice from the same weights: in the student's kernel (through the handle) and here, where the
reference computes the expected answer. Only weights, texts, inputs and outputs cross. Where a wrong answer
matches a known mistake, the check says which one.
"""
from __future__ import annotations

import functools
import math
import random

import torch
import torch.nn.functional as F

from grader.reference import deployment as ref
from llmcourse.checking import (StudentRaised, expect, expect_close, expect_tensor, fail, graded, mistake_hint,
                                naming_mistakes, visible)
from llmcourse.checking.shared.deployment_eval import (bleu_expect, choice_values, distill_inputs, distill_values,
                                                       eval_close, eval_expect_value, eval_model,
                                                       eval_student_tokenizer, eval_token_logprobs, eval_tokenizer,
                                                       expect_budget, expect_law, expect_pair, law_fit_hint, law_loss,
                                                       law_rows, law_worst_error, ppl_mistakes)
from llmcourse.checking.shared.lora import student_llama

STUDENT_DOC = """Visible checks for 07_deployment (evaluation, distillation and scaling laws): what
`check("07_deployment/<exercise>")` runs in your notebook for perplexity, bleu, choice_logprob,
multiple_choice_accuracy, distillation_loss, fit_scaling_law and compute_optimal.

Small cases worked out by hand, and properties every correct answer has. The language-model checks build a
tiny Llama (random weights, the course tokenizer's 1659-token vocabulary) in your kernel, and the same model
here, and compare what your function says with what that model's own `labels=` loss gives. More checks run
when your notebook is graded.

What they share with the graders' checks lives in llmcourse.checking.shared.deployment_eval, so that both talk
about your code in the same words.
"""

ASSIGNMENT = "07_deployment"


# -- perplexity ----------------------------------------------------------------------------------------

PPL_ONE_TEXT = "Once upon a time, a little cat sat on a warm mat and looked at the sun."
PPL_TEXTS = ["The dog ran.", "", "Tom and Lily went to the park to play with their big red ball, and they laughed "
             "all day long.", "yes", "Once upon a time, a little cat sat on a warm mat."]


def ppl_expected(model, texts, max_length: int = 256) -> float:
    """exp of the mean NLL over every predicted token, from the model's own `labels=` loss."""
    tok = eval_tokenizer()
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tok(text, truncation=True, max_length=max_length)["input_ids"]
            if len(ids) >= 2:
                t = torch.tensor([ids])
                total += model(input_ids=t, labels=t).loss.double().item() * (len(ids) - 1)
                count += len(ids) - 1
    return math.exp(total / count)


@visible
@graded("perplexity", points=2,
        hint="Tokenize the text, run the model once, and score each token from the logits of the position before "
             "it (logits[:-1] against ids[1:]); the perplexity is exp(mean negative log-likelihood). A single "
             "string is one text.")
def test_perplexity_of_one_text(student):
    config, weights, local = eval_model(0)
    model, tok = student_llama(student, config, weights), eval_student_tokenizer(student)
    expected = ppl_expected(local, [PPL_ONE_TEXT])
    mistakes = ppl_mistakes(local, [PPL_ONE_TEXT])
    eval_expect_value(student.perplexity(model, tok, [PPL_ONE_TEXT]), expected,
                      f"perplexity(model, tokenizer, [{PPL_ONE_TEXT!r}]) on a tiny random Llama", mistakes=mistakes)
    eval_expect_value(student.perplexity(model, tok, PPL_ONE_TEXT), expected,
                      "perplexity(model, tokenizer, text) with one string instead of a list",
                      hint="A single string counts as one text (not as a list of characters): "
                           "`if isinstance(texts, str): texts = [texts]`.", mistakes=mistakes)


@visible
@graded("perplexity", points=2,
        hint="Pool the texts: add up the negative log-likelihood of every predicted token of every text and the "
             "number of those tokens, and take exp(total NLL / total tokens) once at the end. A text of fewer than "
             "two tokens has nothing to predict: skip it. (If you batch the texts, padding must not count: leave "
             "out the positions whose attention_mask is 0.)")
def test_perplexity_weights_every_token_the_same(student):
    config, weights, local = eval_model(1)
    model, tok = student_llama(student, config, weights), eval_student_tokenizer(student)
    expected = ppl_expected(local, PPL_TEXTS)
    eval_expect_value(student.perplexity(model, tok, PPL_TEXTS), expected,
                      f"perplexity of {len(PPL_TEXTS)} texts of different lengths (one of them empty, one a single "
                      f"token)", mistakes=ppl_mistakes(local, PPL_TEXTS))


@visible
@graded("perplexity", points=1,
        hint="Tokenize each text with tokenizer(text, truncation=True, max_length=max_length): only its first "
             "max_length tokens count (max_length - 1 predicted tokens).")
def test_perplexity_truncates_to_max_length(student):
    config, weights, local = eval_model(2)
    model, tok = student_llama(student, config, weights), eval_student_tokenizer(student)
    for max_length in (6, 2):
        texts = [PPL_TEXTS[2], PPL_ONE_TEXT]
        eval_expect_value(student.perplexity(model, tok, texts, max_length=max_length),
                          ppl_expected(local, texts, max_length),
                          f"perplexity(model, tokenizer, two long texts, max_length={max_length})",
                          mistakes=ppl_mistakes(local, texts, max_length))


_SENTENCES = ["Once upon a time, there was a little girl named Lily.", "She loved to play in the park with her dog.",
              "One day, the sun was hot and the sky was blue.", "Tom saw a big red ball under the tree.",
              "They laughed and ran home to eat a warm cake.", "The cat was sad, so the bird sang a song."]


def _story(seed: int, sentences: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(_SENTENCES) for _ in range(sentences))


@graded("perplexity", points=3,
        hint="exp(total NLL / total predicted tokens) over all texts, each tokenized on its own with "
             "truncation=True, max_length=max_length (256 by default); the first token of each text (an <s> if the "
             "tokenizer adds one) is not predicted.")
def test_perplexity_matches_the_reference(student):
    config, weights, local = eval_model(30, 2.0)
    model = student_llama(student, config, weights)
    stories = [_story(1, 40), _story(2, 3), _story(3, 1), "", _story(4, 12)]  # the first is over 256 tokens long
    cases = [(stories, {}, False, "five stories (one longer than 256 tokens), default max_length"),
             (_story(5, 20), {"max_length": 64}, False, "one long story as a string, max_length=64"),
             (tuple(stories[1:]), {"max_length": 40}, True,
              "a tuple of stories, max_length=40, with a tokenizer that adds <s> at the start")]
    for texts, kwargs, bos, what in cases:
        expected = ref.perplexity(local, eval_tokenizer(bos), texts, **kwargs)
        mistakes = [] if bos else ppl_mistakes(local, [texts] if isinstance(texts, str) else texts, **kwargs)
        eval_expect_value(student.perplexity(model, eval_student_tokenizer(student, bos), texts, **kwargs), expected,
                          f"perplexity of {what}", mistakes=mistakes)


# -- BLEU ----------------------------------------------------------------------------------------------

def bleu_call(cands, refs, max_n: int | None = None) -> tuple[tuple, dict, str]:
    kwargs = {} if max_n is None else {"max_n": max_n}
    shown = f"bleu({cands!r}, {refs!r}" + ("" if max_n is None else f", max_n={max_n}") + ")"
    return (cands, refs), kwargs, shown


@visible
@graded("bleu", points=2,
        hint="For each n = 1..max_n, precision_n = (matched n-grams) / (n-grams of the candidate); BLEU = 100 * "
             "brevity penalty * exp(mean of log precision_n), a geometric mean. If some precision is 0, BLEU is 0.")
def test_bleu_worked_examples(student):
    cases = [  # candidates, references, max_n, expected, hint
        (["the cat sat on the mat"], [["the cat is on the mat"]], 2, 100 * math.sqrt(5 / 6 * 3 / 5),
         "Unigrams: 5 of 6 match; bigrams: 3 of 5 ('the cat', 'on the', 'the mat'); the lengths are equal, so "
         "the brevity penalty is 1 and BLEU = 100 * sqrt(5/6 * 3/5). Use the geometric mean of the precisions, "
         "not their average."),
        (["the cat sat on the mat"], [["the cat is on the mat"]], 3, 50.0,
         "With max_n=3 the trigram precision is 1/4 ('on the mat'): 100 * (5/6 * 3/5 * 1/4) ** (1/3) = 50."),
        (["the cat sat on the mat"], [["the cat is on the mat"]], None, 0.0,
         "No 4-gram of the candidate is in the reference: the 4-gram precision is 0, and so is BLEU (no "
         "smoothing)."),
        (["the quick brown fox jumps over the lazy dog"], [["the quick brown fox jumped over the lazy dog"]], None,
         100 * (8 / 9 * 6 / 8 * 4 / 7 * 2 / 6) ** 0.25,
         "By default max_n=4: the geometric mean of the precisions for n = 1, 2, 3 AND 4 (here 8/9, 6/8, 4/7, "
         "2/6)."),
    ]
    for cands, refs, max_n, expected, hint in cases:
        args, kwargs, shown = bleu_call(cands, refs, max_n)
        bleu_expect(student, args, kwargs, expected, shown, hint)
    bleu_expect(student, ("the cat sat on the mat", ["the cat is on the mat"]), {"max_n": 3}, 50.0,
                "bleu('the cat sat on the mat', ['the cat is on the mat'], max_n=3)",
                "One sentence (a string) with its list of references is a corpus of one sentence.")


@visible
@graded("bleu", points=2,
        hint="Clip: a candidate n-gram counts as matched at most as many times as it appears in ONE reference (the "
             "reference where it appears most often), not in all the references together.")
def test_bleu_clips_repeated_ngrams(student):
    cases = [
        (["the the the the"], [["the cat"]], 1, 25.0,
         "'the' appears once in the reference, so only 1 of the 4 candidate 'the's matches: clip each n-gram's "
         "count by its count in the reference."),
        (["the the the the"], [["the cat the", "the dog the"]], 1, 50.0,
         "'the' appears at most twice in any one reference: 2 of 4 match. Clip by the largest count in one "
         "reference (a max over references), not by the sum over the references."),
        (["a b a b a b"], [["a b a b"]], 2, 100 * math.sqrt(4 / 6 * 3 / 5),
         "Clip bigrams too: 'a b' appears 3 times in the candidate but twice in the reference, 'b a' twice "
         "against once."),
    ]
    for cands, refs, max_n, expected, hint in cases:
        args, kwargs, shown = bleu_call(cands, refs, max_n)
        bleu_expect(student, args, kwargs, expected, shown, hint)


@visible
@graded("bleu", points=2,
        hint="Brevity penalty: c = candidate length, r = the length of the reference closest to c (the shorter "
             "one on a tie); BP = 1 if c > r, else exp(1 - r / c).")
def test_bleu_brevity_penalty(student):
    cases = [
        (["the cat"], [["the cat sat on the mat", "the cat sat"]], 2, 100 * math.exp(1 - 3 / 2),
         "The candidate has 2 words; the closest reference has 3, so BP = exp(1 - 3/2). Use the reference "
         "length closest to the candidate's, not the longest one."),
        (["the cat sat on"], [["the cat", "the cat sat on it"]], 2, 100 * math.exp(1 - 5 / 4),
         "The candidate has 4 words; the closest reference has 5 (2 is further away), so BP = exp(1 - 5/4). "
         "Use the closest reference length, not the shortest one."),
        (["the cat sat on"], [["the cat sat", "the cat sat on it"]], 2, 100.0,
         "The references have 3 and 5 words, both 1 away from the candidate's 4: on a tie take the shorter (3); "
         "then c > r and BP = 1."),
        (["the cat sat on the mat"], [["the cat sat on the mat"]], 2, 100.0,
         "A candidate equal to its reference scores 100 (BP = exp(1 - r/c) = 1 when c == r)."),
    ]
    for cands, refs, max_n, expected, hint in cases:
        args, kwargs, shown = bleu_call(cands, refs, max_n)
        bleu_expect(student, args, kwargs, expected, shown, hint)


@visible
@graded("bleu", points=1,
        hint="Corpus BLEU adds up the matched and total n-gram counts, and the candidate and reference lengths, "
             "over all sentences first, then computes ONE score (not the average of sentence scores). Words are "
             "compared exactly as str.split() gives them (no lower-casing).")
def test_bleu_is_one_corpus_score(student):
    cands = ["the cat sat on the mat", "a dog"]
    refs = [["the cat sat on the mat"], ["a dog ran in the park"]]
    args, kwargs, shown = bleu_call(cands, refs, 2)
    bleu_expect(student, args, kwargs, 100 * math.exp(1 - 12 / 8), shown,
                "Every n-gram matches, but the corpus is short: c = 6 + 2 = 8 words against r = 6 + 6 = 12, so BLEU = "
                "100 * exp(1 - 12/8). Sum the lengths (and the n-gram counts) over the corpus before computing "
                "the score, instead of averaging sentence BLEUs.")
    args, kwargs, shown = bleu_call(["The Cat sat"], [["the cat sat"]], 1)
    bleu_expect(student, args, kwargs, 100 / 3, shown,
                "'The' is not 'the': BLEU compares the words as they are (only 'sat' matches). Do not lower-case.")


_WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "ran"]


def _sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high)))


def _corpus(seed: int, sentences: int, references: int) -> tuple[list[str], list[list[str]]]:
    """A random corpus in which n-grams up to 4 often match: candidates, and `references` references each."""
    rng = random.Random(seed)
    cands, refs = [], []
    for _ in range(sentences):
        base = _sentence(rng, 4, 14).split()
        cand = [w if rng.random() < 0.75 else rng.choice(_WORDS) for w in base]
        if rng.random() < 0.3:
            cand = cand[: rng.randint(1, len(cand))]
        cands.append(" ".join(cand))
        refs.append([" ".join(w if rng.random() < 0.8 else rng.choice(_WORDS) for w in base[: rng.randint(3, len(base))])
                     for _ in range(references)])
    return cands, refs


def _sacrebleu(cands: list[str], refs: list[list[str]], max_n: int) -> float:
    from sacrebleu.metrics import BLEU

    metric = BLEU(tokenize="none", smooth_method="none", max_ngram_order=max_n, force=True)
    return metric.corpus_score(cands, [list(x) for x in zip(*refs)]).score


@graded("bleu", points=2,
        hint="Corpus BLEU as sacrebleu computes it (tokenize='none', no smoothing): clipped n-gram counts summed over "
             "the corpus, the geometric mean of the precisions for n = 1..max_n, and the brevity penalty from the "
             "summed closest reference lengths.")
def test_bleu_matches_sacrebleu(student):
    for seed, (sentences, references, max_n) in enumerate([(8, 1, 4), (12, 2, 4), (6, 3, 4), (10, 2, 2), (15, 4, 3),
                                                           (5, 2, 1)]):
        cands, refs = _corpus(100 + seed, sentences, references)
        expected = _sacrebleu(cands, refs, max_n)
        shown = f"bleu on a random corpus of {sentences} sentences with {references} reference(s) each, max_n={max_n}"
        kwargs = {} if max_n == 4 else {"max_n": max_n}
        value = student.bleu(cands, refs, **kwargs)
        with naming_mistakes(value, expected, _bleu_mistakes(cands, refs, max_n), rtol=1e-6, atol=1e-6):
            bleu_expect(_Answered(value), (cands, refs), kwargs, expected, shown)


class _Answered:
    """A stand-in for the student whose bleu gives the answer the student's already gave (bleu runs once)."""

    def __init__(self, value):
        self.value = value

    def bleu(self, *args, **kwargs):
        return self.value


def _bleu_mistakes(cands: list[str], refs: list[list[str]], max_n: int) -> list:
    from sacrebleu.metrics import BLEU

    score = BLEU(tokenize="none", smooth_method="none", max_ngram_order=max_n, force=True).corpus_score(
        cands, [list(x) for x in zip(*refs)])
    return [(lambda: score.score / score.bp if score.bp > 0 else None,
             "There is no brevity penalty: a corpus shorter than its references must score less. Multiply by "
             "BP = exp(1 - r / c) when the candidates' total length c is below r, the summed closest reference "
             "lengths (BP = 1 otherwise)."),
            (lambda: _sacrebleu(cands, refs, 3) if max_n > 3 else None,
             "The n-grams stop at 3: the precisions run over every n from 1 to max_n (4 by default), and the "
             "geometric mean over max_n of them.")]


@graded("bleu", points=1,
        hint="A candidate shorter than n has no n-grams (it adds nothing to that precision's counts); an empty "
             "candidate adds 0 to the candidate length and its closest reference length to r; if any precision has "
             "no match (or nothing to match), BLEU is 0: never divide by zero.")
def test_bleu_edge_cases(student):
    cases = [
        (["the cat sat on the mat", "", "a dog ran"], [["the cat sat on a mat", "the cat sat"], ["a cat"],
                                                      ["a dog ran on the mat", "the dog ran"]], 2,
         "a corpus with an empty candidate sentence"),
        (["the cat sat on the mat", "a"], [["the cat sat on the mat"], ["a", "a dog", "the dog ran"]], 4,
         "a one-word sentence and a different number of references per sentence"),
        (["the cat", "a dog"], [["the cat sat"], ["a dog ran"]], 4, "candidates shorter than 4 words (no 4-gram at all)"),
        (["cat dog", "mat"], [["the sat on"], ["a ran"]], 1, "nothing matches"),
        (["the cat sat on the mat today", "a dog"], [["the cat sat on the mat today"], ["a dog"]], 4,
         "candidates equal to their references"),
        (["on the mat the cat sat"], [["the cat sat on the mat", "the mat the cat sat on"]], 4,
         "shuffled words: n-grams matched in different references"),
    ]
    for cands, refs, max_n, what in cases:
        bleu_expect(student, (cands, refs), {"max_n": max_n}, ref.bleu(cands, refs, max_n),
                    f"bleu({cands!r}, {refs!r}, max_n={max_n}) ({what})")


# -- choice_logprob -------------------------------------------------------------------------------------

CHOICE_PROMPT = "Question: what colour is the sky?\nAnswer:"
CHOICES = [" blue", " a deep shade of green"]


@visible
@graded("choice_logprob", points=3,
        hint="Tokenize the prompt (tokenizer(prompt)) and the choice (add_special_tokens=False), run the model on "
             "the two joined, take log_softmax of the logits, and add up log P of each choice token, read from "
             "the position just before it.")
def test_choice_logprob_sums_the_choice_tokens(student):
    config, weights, local = eval_model(10)
    model, tok = student_llama(student, config, weights), eval_student_tokenizer(student)
    here = eval_tokenizer()
    prompt_ids = here(CHOICE_PROMPT)["input_ids"]
    for choice in CHOICES:
        expected, mistakes = choice_values(local, prompt_ids, here(choice, add_special_tokens=False)["input_ids"])
        eval_expect_value(student.choice_logprob(model, tok, CHOICE_PROMPT, choice), expected,
                          f"choice_logprob(model, tokenizer, {CHOICE_PROMPT!r}, {choice!r})", mistakes=mistakes)


@visible
@graded("choice_logprob", points=2,
        hint="Tokenize the prompt and the choice separately: prompt_ids = tokenizer(prompt)['input_ids'] (with "
             "whatever the tokenizer adds, such as <s>) and choice_ids = tokenizer(choice, add_special_tokens=False)"
             "['input_ids'], then score prompt_ids + choice_ids.")
def test_choice_logprob_with_a_tokenizer_that_adds_bos(student):
    config, weights, local = eval_model(11)
    model, tok = student_llama(student, config, weights), eval_student_tokenizer(student, bos=True)
    here = eval_tokenizer(bos=True)
    prompt, choice = "The cat sat on the", " mat"
    prompt_ids, choice_ids = here(prompt)["input_ids"], here(choice, add_special_tokens=False)["input_ids"]
    expected, mistakes = choice_values(local, prompt_ids, choice_ids)
    with_bos, _ = choice_values(local, prompt_ids, here(choice)["input_ids"])
    mistakes.append((with_bos, "The choice was tokenized with its special tokens (an <s> in the middle): use "
                               "tokenizer(choice, add_special_tokens=False)."))
    eval_expect_value(student.choice_logprob(model, tok, prompt, choice), expected,
                      f"choice_logprob with a tokenizer that starts every text with <s>, for {prompt!r} and "
                      f"{choice!r}", mistakes=mistakes)


_CHOICE_CASES = [  # prompt, choice, tokenizer adds <s>
    ("The", " cat", False),
    ("Once upon a time, there was a little girl named Lily. She loved to play in the", " park with her big dog", False),
    ("Input: red plus blue\nOutput:", " purple", False),
    ("Q: 2 + 2 =", "4", False),
    ("Lily", " and Tom ran home.", True),
    ("The sky is", " blue", True),
]


@graded("choice_logprob", points=2,
        hint="log P(choice | prompt) = the sum, over the choice's tokens only, of log_softmax(logits) at the "
             "position before each token; prompt_ids = tokenizer(prompt)['input_ids'], choice_ids = "
             "tokenizer(choice, add_special_tokens=False)['input_ids'], scored as prompt_ids + choice_ids.")
def test_choice_logprob_matches_the_reference(student):
    config, weights, local = eval_model(40, 2.0)
    model = student_llama(student, config, weights)
    for prompt, choice, bos in _CHOICE_CASES:
        tok = eval_tokenizer(bos)
        expected = ref.choice_logprob(local, tok, prompt, choice)
        _, mistakes = choice_values(local, tok(prompt)["input_ids"], tok(choice, add_special_tokens=False)["input_ids"])
        eval_expect_value(student.choice_logprob(model, eval_student_tokenizer(student, bos), prompt, choice), expected,
                          f"choice_logprob(model, tokenizer{' (adds <s>)' if bos else ''}, {prompt!r}, {choice!r})",
                          mistakes=mistakes, rtol=1e-4, atol=1e-4)


# -- multiple_choice_accuracy ----------------------------------------------------------------------------

MC_ITEMS = [
    ("Question: what colour is the sky?\nAnswer:", [" blue", " a deep shade of green", " red"]),
    ("The cat sat on the", [" mat", " big red ball", " dog", " tree"]),
    ("Once upon a time there was a", [" girl", " little boy who liked to run"]),
    ("Tom and Lily went to the", [" park", " shop", " big house by the sea"]),
    ("The dog was very", [" happy", " sad", " tired and hungry"]),
]


def mc_scores(model, tokenizer, items) -> list[list[float]]:
    """log P(choice | prompt) of every choice of every item, from the checker's own model."""
    scores = []
    for prompt, choices in items:
        prompt_ids = tokenizer(prompt)["input_ids"]
        scores.append([eval_token_logprobs(model, prompt_ids + tokenizer(c, add_special_tokens=False)["input_ids"])
                       [len(prompt_ids) - 1:].sum().item() for c in choices])
    return scores


def mc_answers(scores: list[list[float]], right: int) -> list[int]:
    """Answer indices such that the most likely choice is right for the first `right` items only (the others'
    answer is their least likely choice)."""
    return [max(range(len(row)), key=row.__getitem__) if i < right else min(range(len(row)), key=row.__getitem__)
            for i, row in enumerate(scores)]


def mc_share(scores: list[list[float]], answers: list[int], pick) -> float:
    """The share of items where `pick(row of scores)` is the answer."""
    return sum(pick(row) == a for row, a in zip(scores, answers)) / len(answers)


@visible
@graded("multiple_choice_accuracy", points=3,
        hint="For each item, score every choice with choice_logprob(model, tokenizer, item['prompt'], choice), "
             "take the index of the highest score (argmax, not argmin), compare it with item['answer'] (an index), "
             "and return the share of items that match (a fraction between 0 and 1).")
def test_multiple_choice_accuracy_share_of_items(student):
    config, weights, local = eval_model(20)
    model, tok = student_llama(student, config, weights), eval_student_tokenizer(student)
    here = eval_tokenizer()
    scores = mc_scores(local, here, MC_ITEMS)
    answers = mc_answers(scores, 3)
    items = [{"prompt": p, "choices": list(c), "answer": a} for (p, c), a in zip(MC_ITEMS, answers)]
    lengths = [[len(here(c, add_special_tokens=False)["input_ids"]) for c in choices] for _, choices in MC_ITEMS]
    per_token = [[s / n for s, n in zip(row, ns)] for row, ns in zip(scores, lengths)]
    mistakes = [(3.0, "That is the number of right items: divide by the number of items."),
                (mc_share(scores, answers, lambda row: min(range(len(row)), key=row.__getitem__)),
                 "That counts the LEAST likely choice: pick the choice with the highest log-probability (argmax)."),
                (0.0, "No item was counted right: item['answer'] is the index of the right choice, so compare it with "
                      "the index of the best choice (not with the choice's text)."),
                (mc_share(per_token, answers, lambda row: max(range(len(row)), key=row.__getitem__)),
                 "That divides each choice's score by its number of tokens: compare the sums, choice_logprob as it "
                 "is.")]
    eval_expect_value(student.multiple_choice_accuracy(model, tok, items), 0.6,
                      f"multiple_choice_accuracy on {len(items)} items whose most likely choice is the answer for 3",
                      mistakes=mistakes, rtol=1e-9)


_MC_ITEMS = [
    ("Input: red plus blue\nOutput:", [" purple", " green", " orange", " brown"]),
    ("The cat sat on the", [" mat", " tree"]),
    ("Lily went to the", [" park", " shop", " sea", " big old house", " school"]),
    ("Tom was", [" happy", " sad and tired after the long day"]),
    ("Q: what is the colour of grass?\nA:", [" green", " red", " blue"]),
    ("Once upon a time there was a", [" dog", " cat", " bird"]),
    ("The sun was", [" hot", " cold", " big and bright in the sky"]),
]


@functools.lru_cache(maxsize=None)
def _mc_items(seed: int, bos: bool) -> tuple[tuple, ...]:
    """Items whose answer is the most likely choice for 4 of 7 (as the reference scores them)."""
    _, _, local = eval_model(seed, 2.0)
    tok = eval_tokenizer(bos)
    items = []
    for i, (prompt, choices) in enumerate(_MC_ITEMS):
        scores = [ref.choice_logprob(local, tok, prompt, c) for c in choices]
        best = max(range(len(choices)), key=scores.__getitem__)
        items.append((prompt, tuple(choices), best if i % 2 == 0 else (best + 1) % len(choices)))
    return tuple(items)


@graded("multiple_choice_accuracy", points=1,
        hint="The share (between 0 and 1) of items whose highest-scoring choice (by choice_logprob, summed, not "
             "averaged over tokens) has the index item['answer'].")
def test_multiple_choice_accuracy_matches_the_reference(student):
    for seed, bos in ((41, False), (42, True)):
        config, weights, local = eval_model(seed, 2.0)
        items = [{"prompt": p, "choices": list(c), "answer": a} for p, c, a in _mc_items(seed, bos)]
        expected = ref.multiple_choice_accuracy(local, eval_tokenizer(bos), items)
        got = student.multiple_choice_accuracy(student_llama(student, config, weights),
                                               eval_student_tokenizer(student, bos), items)
        eval_expect_value(got, expected, f"multiple_choice_accuracy on {len(items)} items with 2 to 5 choices"
                                         f"{' (a tokenizer that adds <s>)' if bos else ''}",
                          mistakes=[(4.0, "That is the number of right items: divide by the number of items.")],
                          rtol=1e-9)
    config, weights, local = eval_model(41, 2.0)
    prompt, choices, answer = _mc_items(41, False)[0]
    got = student.multiple_choice_accuracy(student_llama(student, config, weights), eval_student_tokenizer(student),
                                           [{"prompt": prompt, "choices": list(choices), "answer": answer}])
    eval_expect_value(got, 1.0, "multiple_choice_accuracy on one item answered right")


# -- distillation_loss -----------------------------------------------------------------------------------

def distill_expect(student, s, t, labels, temperature: float, alpha: float, what: str, hint: str | None = None,
                   kwargs: dict | None = None) -> None:
    got = student.distillation_loss(s, t, labels, **({"temperature": temperature, "alpha": alpha}
                                                     if kwargs is None else kwargs))
    got = expect_tensor(got, what, hint="Return the loss as a 0-dimensional tensor (it must be differentiable, "
                                        "so don't call .item()).")
    if got.numel() != 1:
        fail(f"{what} has shape {tuple(got.shape)}: the loss should be one number (a 0-dimensional tensor).",
             "Average each term over the kept positions so that the loss is a scalar.")
    expected, mistakes = distill_values(s, t, labels, temperature, alpha)
    value = got.double().item()
    if not math.isfinite(value) or not eval_close(value, expected, 1e-4, 1e-6):
        fail(f"{what} is {value:.6g}, but it should be {expected:.6g}.",
             mistake_hint(value, expected, mistakes, rtol=1e-4, atol=1e-6) or hint)


def distill_shown(value: torch.Tensor) -> str:
    return f"{value.double().item():.6g}" if value.numel() == 1 else f"a tensor of shape {tuple(value.shape)}"


@visible
@graded("distillation_loss", points=3,
        hint="alpha * T² * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(student, labels): the logits at "
             "position t against label t + 1; KL summed over the vocabulary, then averaged over positions; both "
             "softmaxes at temperature T.")
def test_distillation_loss_random_logits(student):
    s, t, labels = distill_inputs(0, 2, 6, 7)
    distill_expect(student, s, t, labels, 2.0, 0.3, "distillation_loss(2 x 6 x 7 logits, temperature=2.0, alpha=0.3)")
    s, t, labels = distill_inputs(1, 3, 4, 5)
    distill_expect(student, s, t, labels, 4.0, 0.8, "distillation_loss(3 x 4 x 5 logits, temperature=4.0, alpha=0.8)")
    distill_expect(student, s, t, labels, 2.0, 0.5, "distillation_loss(3 x 4 x 5 logits) with the defaults",
                   "The defaults are temperature=2.0 and alpha=0.5.", kwargs={})


@visible
@graded("distillation_loss", points=2,
        hint="Leave out every position whose shifted label (labels[:, 1:]) is -100, from the KL AND from the "
             "cross-entropy, and average each term over the positions that are kept.")
def test_distillation_loss_ignores_minus_100(student):
    s, t, labels = distill_inputs(2, 2, 7, 6)
    labels[0, :3] = -100  # a prompt, not scored
    labels[1, 5:] = -100  # padding at the end
    distill_expect(student, s, t, labels, 2.0, 0.5,
                   "distillation_loss with labels of -100 in places (prompt tokens and padding)")
    labels[1, 0] = -100  # the first label is never predicted: this changes nothing
    distill_expect(student, s, t, labels, 3.0, 0.6, "distillation_loss with -100 labels, temperature=3.0, alpha=0.6")


@visible
@graded("distillation_loss", points=1,
        hint="With alpha=0 the loss is next_token_loss's shifted cross-entropy; with alpha=1 it is T² times the KL, "
             "which is 0 when the student's logits equal the teacher's.")
def test_distillation_loss_special_cases(student):
    s, t, labels = distill_inputs(3, 2, 5, 9)
    ce = F.cross_entropy(s[:, :-1].reshape(-1, 9).double(), labels[:, 1:].reshape(-1)).item()
    got = expect_tensor(student.distillation_loss(s, t, labels, temperature=2.0, alpha=0.0),
                        "distillation_loss(..., alpha=0.0)")
    expect(got.numel() == 1 and eval_close(got.double().item(), ce, 1e-4, 1e-6),
           f"With alpha=0 the loss should be the shifted cross-entropy {ce:.6g}, but it is {distill_shown(got)}.",
           "alpha=0 leaves only (1 - alpha) * cross-entropy of logits[:, :-1] against labels[:, 1:].")
    got = expect_tensor(student.distillation_loss(s, s.clone(), labels, temperature=3.0, alpha=1.0),
                        "distillation_loss(logits, the same logits, labels, alpha=1.0)")
    expect(got.numel() == 1 and abs(got.double().item()) < 1e-5,
           f"A student equal to its teacher has KL 0, so with alpha=1 the loss should be 0, but it is "
           f"{distill_shown(got)}.",
           "With alpha=1 only the KL term is left: KL(p || p) = 0.")


def _distill_case(seed: int, batch: int, length: int, vocab: int, dtype, ignored: float):
    s, t, labels = distill_inputs(seed, batch, length, vocab, dtype)
    gen = torch.Generator().manual_seed(seed + 1000)
    labels[torch.rand(labels.shape, generator=gen) < ignored] = -100
    labels[:, 1] = labels[:, 1].clamp(min=0)  # every row keeps at least one position
    return s, t, labels


_DISTILL_CASES = [  # seed, batch, length, vocab, dtype, share of -100 labels, temperature, alpha
    (50, 4, 9, 50, torch.float32, 0.3, 2.0, 0.5),
    (51, 1, 3, 11, torch.float64, 0.0, 1.0, 0.9),
    (52, 2, 12, 30, torch.float64, 0.5, 5.0, 0.25),
    (53, 3, 2, 8, torch.float32, 0.0, 0.5, 0.7),
]


@graded("distillation_loss", points=2,
        hint="Follow the formula for any shape, temperature and alpha: the KL of the temperature-softened "
             "distributions, times T², and the cross-entropy, each averaged over the kept (shifted, not -100) "
             "positions; float64 logits give a float64 loss.")
def test_distillation_loss_matches_the_reference(student):
    for seed, batch, length, vocab, dtype, ignored, temperature, alpha in _DISTILL_CASES:
        s, t, labels = _distill_case(seed, batch, length, vocab, dtype, ignored)
        what = (f"distillation_loss on {batch} x {length} x {vocab} {str(dtype).removeprefix('torch.')} logits, "
                f"temperature={temperature}, alpha={alpha}")
        got = expect_tensor(student.distillation_loss(s, t, labels, temperature=temperature, alpha=alpha), what)
        expected = ref.distillation_loss(s, t, labels, temperature, alpha)
        if got.numel() != 1:
            fail(f"{what} has shape {tuple(got.shape)}: the loss is one number.")
        _, mistakes = distill_values(s, t, labels, temperature, alpha)
        value = got.double().item()
        if not eval_close(value, expected.double().item(), 1e-4, 1e-6):
            fail(f"{what} is {value:.8g}, but it should be {expected.item():.8g}.",
                 mistake_hint(value, expected.double().item(), mistakes, rtol=1e-4, atol=1e-6))
        expect(got.dtype == dtype, f"{what} returned a {got.dtype} loss: it should keep the logits' dtype {dtype}.",
               "Compute in the logits' dtype (do not convert to float32 along the way).")


def _gradients(student, s, t, labels, temperature, alpha):
    """(d loss / d student_logits, d loss / d teacher_logits), computed in the student's kernel by torch.func.grad."""
    grad = student.construct("torch.func.grad", student.distillation_loss, argnums=(0, 1))
    got = grad(s, t, labels, temperature=temperature, alpha=alpha)
    if not isinstance(got, tuple) or len(got) != 2:
        fail("torch.func.grad of distillation_loss did not give two gradients.",
             "Return the loss as a 0-dimensional tensor computed with torch operations (no .item(), no numpy).")
    return got


@graded("distillation_loss", points=1, requires_main=True,
        hint="Compute the loss with torch operations from student_logits (no .item(), .numpy() or .detach() on the "
             "student's side), so that training can backpropagate into the student.")
def test_distillation_loss_gradient_reaches_the_student(student):
    s, t, labels = _distill_case(60, 2, 6, 13, torch.float64, 0.3)
    grad_s, _ = _gradients(student, s, t, labels, 2.0, 0.4)
    expected = torch.func.grad(ref.distillation_loss)(s, t, labels, 2.0, 0.4)
    expect_close(grad_s, expected, "the gradient of the loss with respect to the student's logits",
                 rtol=1e-6, atol=1e-9)


@graded("distillation_loss", points=1, requires_main=True,
        hint="The teacher is fixed: use teacher_logits.detach() (or compute its probabilities under torch.no_grad()), "
             "so that no gradient flows into the teacher.")
def test_distillation_loss_gives_the_teacher_no_gradient(student):
    s, t, labels = _distill_case(61, 2, 6, 13, torch.float32, 0.2)
    _, grad_t = _gradients(student, s, t, labels, 2.0, 0.5)
    grad_t = expect_tensor(grad_t, "the gradient with respect to the teacher's logits", shape=t.shape)
    expect(bool((grad_t == 0).all()),
           f"A gradient reaches the teacher's logits (largest {grad_t.abs().max().item():.3g}): the teacher should "
           f"get none.")


# -- fit_scaling_law -------------------------------------------------------------------------------------

GRID_LAW = {"E": 1.8, "A": 250.0, "alpha": 0.32, "B": 1800.0, "beta": 0.38}
GRID_PARAMS = (1e7, 3e7, 1e8, 3e8, 1e9)
GRID_TOKENS = (1e8, 4e8, 1.6e9, 6.4e9, 2.56e10)


@visible
@graded("fit_scaling_law", points=5,
        hint="Fit all five parameters to minimise the error of L(N, D) = E + A / N^alpha + B / D^beta, e.g. in log "
             "space (log L = logsumexp(log E, log A - alpha log N, log B - beta log D)) with torch.optim.LBFGS, "
             "from a few starting points; return {'E', 'A', 'alpha', 'B', 'beta'}.")
def test_fit_scaling_law_recovers_a_known_law(student):
    rows = law_rows(GRID_LAW, [(n, d) for n in GRID_PARAMS for d in GRID_TOKENS])
    what = "fit_scaling_law on 25 runs (a 5 x 5 grid of N and D) of a law without noise"
    law = expect_law(student.fit_scaling_law(rows), what)
    worst = law_worst_error(law, rows)
    if worst > 1e-3:
        fail(f"{what}: the fitted law predicts some runs' loss {100 * worst:.3g}% away from the truth (at most 0.1% "
             f"expected). It gave {law}.", law_fit_hint(law, rows))
    for key in ("alpha", "beta"):
        expect(abs(law[key] / GRID_LAW[key] - 1) < 0.03,
               f"{what}: the data come from {key} = {GRID_LAW[key]}, but the fit says {key} = {law[key]:.4g}.",
               "The fit predicts well but landed elsewhere: fit longer (tighter tolerances) or from more starting "
               "points, and keep the best.")


@visible
@graded("fit_scaling_law", points=1, requires_main=True,
        hint="Five unknowns need at least five runs: raise ValueError when there are fewer.")
def test_fit_scaling_law_needs_five_runs(student):
    rows = law_rows(GRID_LAW, [(1e7, 1e8), (1e8, 1e9), (1e9, 1e10), (3e7, 3e9)])
    try:
        student.fit_scaling_law(rows)
    except StudentRaised as raised:
        expect(raised.type_name == "ValueError", f"fit_scaling_law on 4 runs raised {raised.type_name}, not "
                                                 f"ValueError.")
        return
    fail("fit_scaling_law on 4 runs returned a law: with five unknowns it should raise ValueError.")


_OTHER_LAW = {"E": 2.2, "A": 900.0, "alpha": 0.45, "B": 300.0, "beta": 0.24}


def _design(seed: int, count: int) -> list[tuple[float, float]]:
    """`count` (N, D) pairs spread log-uniformly (not a grid): N in [3e6, 3e9], D in [3e7, 1e11]."""
    rng = random.Random(seed)
    return [(10 ** rng.uniform(6.5, 9.5), 10 ** rng.uniform(7.5, 11)) for _ in range(count)]


def _noisy_rows(law: dict, pairs, seed: int, noise: float) -> tuple[list[dict], list[dict]]:
    """Runs of `law` at these (N, D) with multiplicative noise on the losses, and the same runs without noise."""
    gen = torch.Generator().manual_seed(seed)
    clean = law_rows(law, pairs)
    factors = (1 + noise * torch.randn(len(clean), generator=gen, dtype=torch.float64)).tolist()
    return [dict(r, loss=r["loss"] * f) for r, f in zip(clean, factors)], clean


@graded("fit_scaling_law", points=3,
        hint="Fit E, A, alpha, B and beta together by least squares (in log space, or on relative errors), from "
             "several starting points, keeping the best: with noisy losses from runs that are not on a grid the "
             "fitted law then stays within the noise of the true one.")
def test_fit_scaling_law_another_law_with_noise(student):
    noisy, clean = _noisy_rows(_OTHER_LAW, _design(70, 30), 70, 0.003)
    what = "fit_scaling_law on 30 runs spread at random (not a grid), from another law, with 0.3% noise on the losses"
    law = expect_law(student.fit_scaling_law(noisy), what)
    worst = law_worst_error(law, clean)
    if worst > 0.01:
        fail(f"{what}: the fitted law is {100 * worst:.3g}% away from the true (noise-free) loss at some run; a "
             f"least-squares fit stays within 1%.", law_fit_hint(law, clean, 0.01))


# -- compute_optimal -------------------------------------------------------------------------------------

OPTIMAL_LAWS = [
    {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28},
    {"E": 1.8, "A": 250.0, "alpha": 0.32, "B": 1800.0, "beta": 0.38},
    {"E": 2.0, "A": 50.0, "alpha": 0.5, "B": 5000.0, "beta": 0.25},
]


@visible
@graded("compute_optimal", points=2,
        hint="The budget is C = 6 N D. For a law with A = B and alpha = beta, the two terms are the same function "
             "of N and of D, so the best split is N = D = sqrt(C / 6).")
def test_compute_optimal_spends_the_budget(student):
    symmetric = {"E": 1.5, "A": 100.0, "alpha": 0.4, "B": 100.0, "beta": 0.4}
    what = "compute_optimal(6e18, law with A = B = 100 and alpha = beta = 0.4)"
    n, d = expect_pair(student.compute_optimal(6e18, symmetric), what)
    expect_budget(n, d, 6e18, what)
    expect(abs(n / 1e9 - 1) < 1e-6 and abs(d / 1e9 - 1) < 1e-6,
           f"{what} gave params={n:.6g}, tokens={d:.6g}; by symmetry both should be sqrt(6e18 / 6) = 1e9.")
    for law in OPTIMAL_LAWS:
        for C in (1e18, 3.5e21):
            what = f"compute_optimal({C:g}, {law})"
            n, d = expect_pair(student.compute_optimal(C, law), what)
            expect_budget(n, d, C, what)


def optimal_along_budget(law: dict, n: float, C: float) -> bool:
    """Whether moving N by 1% either way along the budget C = 6 N D raises the loss."""
    best = law_loss(law, n, C / (6 * n))
    return all(law_loss(law, n * f, C / (6 * n * f)) > best for f in (0.99, 1.01))


@visible
@graded("compute_optimal", points=2,
        hint="Minimise L(N, C / (6 N)) over N: set its derivative with respect to N to zero (at the optimum "
             "alpha A / N^alpha = beta B / D^beta) and solve for N; then D = C / (6 N). Check the exponent of C "
             "and which way up the constant is, and return (params, tokens) in that order.")
def test_compute_optimal_is_a_minimum(student):
    for law in OPTIMAL_LAWS:
        for C in (1e19, 1e23):
            what = f"compute_optimal({C:g}, {law})"
            n, d = expect_pair(student.compute_optimal(C, law), what)
            expect_budget(n, d, C, what)
            best = law_loss(law, n, d)
            for factor in (0.99, 1.01):
                other = law_loss(law, n * factor, C / (6 * n * factor))
                if other <= best:
                    fail(f"{what} gave params={n:.6g}, tokens={d:.6g} (loss {best:.8g}), but spending the same budget "
                         f"on {factor:g} times as many parameters gives a lower loss ({other:.8g}): that is not the "
                         f"minimum.",
                         "That looks like (tokens, params): return (params, tokens)." if optimal_along_budget(law, d, C)
                         else None)


def _random_laws(seed: int, count: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"E": rng.uniform(1, 3), "A": 10 ** rng.uniform(1, 4), "alpha": rng.uniform(0.1, 0.8),
             "B": 10 ** rng.uniform(1, 4), "beta": rng.uniform(0.1, 0.8)} for _ in range(count)]


def _optimal_mistakes(C: float, law: dict) -> list[tuple[tuple[float, float], str]]:
    n, d = ref.compute_optimal(C, law)
    swapped = dict(law, alpha=law["beta"], beta=law["alpha"])
    a, b = law["alpha"], law["beta"]
    g = (a * law["A"] / (b * law["B"])) ** (1 / (a + b))
    inverted = (1 / g) * (C / 6) ** (b / (a + b))
    return [((d, n), "That is (tokens, params): return (params, tokens)."),
            (ref.compute_optimal(6 * C, law), "The budget is C = 6 N D: divide C by 6 (forgot the 6?)."),
            (ref.compute_optimal(C, swapped), "The exponents are swapped: N grows like (C/6)^(beta / (alpha + beta))."),
            ((inverted, C / 6 / inverted), "G is inverted: G = (alpha A / (beta B))^(1 / (alpha + beta))."),
            ((g * (C / 6) ** (a / (a + b)), C / 6 / (g * (C / 6) ** (a / (a + b)))),
             "The exponents are swapped: N grows like (C/6)^(beta / (alpha + beta)), with beta (the data exponent) "
             "on top, not alpha."),
            (((C / 6) ** (b / (a + b)), C / 6 / (C / 6) ** (b / (a + b))),
             "The factor G is missing: N = G (C/6)^(beta / (alpha + beta)) with G = (alpha A / (beta B))^(1 / "
             "(alpha + beta)); without it N is right only when alpha A = beta B.")]


@graded("compute_optimal", points=2,
        hint="N = G (C/6)^(beta / (alpha + beta)) with G = (alpha A / (beta B))^(1 / (alpha + beta)), and "
             "D = C / (6 N); return (params, tokens).")
def test_compute_optimal_matches_the_closed_form(student):
    for i, law in enumerate(_random_laws(80, 8)):
        C = 10 ** (15 + i)
        what = f"compute_optimal({C:.0e}, {law})"
        n, d = expect_pair(student.compute_optimal(C, law), what)
        expected = ref.compute_optimal(C, law)
        if not (eval_close(n, expected[0], 1e-6) and eval_close(d, expected[1], 1e-6)):
            hint = mistake_hint((n, d), expected, _optimal_mistakes(C, law), rtol=1e-6, atol=1e-9)
            fail(f"{what} gave params={n:.6g}, tokens={d:.6g}; the optimum is params={expected[0]:.6g}, "
                 f"tokens={expected[1]:.6g}.", hint)
        expect_budget(n, d, C, what)
