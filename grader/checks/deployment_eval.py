"""Hidden checks for 07_deployment (evaluation, distillation and scaling laws): the student's code against
`grader.reference.deployment`, sacrebleu, and torch's own autograd.

Models are built twice from the same weights: in the student's kernel (through the handle) and here, where the
reference computes the expected answer. Only weights, texts, inputs and outputs cross. Where a wrong answer
matches a known mistake, the check says which one.
"""
from __future__ import annotations

import functools
import random

import torch

from grader.reference import deployment as ref
from llmcourse.checking import expect, expect_close, expect_tensor, fail, graded, mistake_hint
from llmcourse.checking.shared.deployment_eval import (bleu_expect, choice_values, distill_inputs, distill_values,
                                                       eval_close, eval_expect_value, eval_model,
                                                       eval_student_tokenizer, eval_tokenizer, expect_budget,
                                                       expect_law, expect_pair, law_fit_hint, law_rows, law_worst_error,
                                                       ppl_mistakes)
from llmcourse.checking.shared.lora import student_llama

ASSIGNMENT = "07_deployment"


# -- perplexity ----------------------------------------------------------------------------------------

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
        bleu_expect(student, (cands, refs), {} if max_n == 4 else {"max_n": max_n}, expected, shown)


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
            ((inverted, C / 6 / inverted), "G is inverted: G = (alpha A / (beta B))^(1 / (alpha + beta)).")]


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
