"""Visible checks for 03_prompting: what `check("03_prompting/<exercise>")` runs in your notebook.

They compare your code with transformers' own pieces (the logits processors TemperatureLogitsWarper,
TopKLogitsWarper and TopPLogitsWarper, and `model.generate`), count your model's forward passes with
`llmcourse.prompting_tools.ForwardCounter`, or test a property every correct answer has. More checks run
when your notebook is graded.

What they share with the graders' checks lives in llmcourse.checking.shared.prompting, so that both talk about
your code the same way.
"""
from __future__ import annotations

import math

import torch

from llmcourse.checking import expect, expect_close, generator, graded
from llmcourse.checking.shared.prompting import (RISKS, TECHNIQUES, answers_dict, config_settings, draw_counts, encode,
                                                 expect_distribution, expect_filter, expect_token_ids, fewshot_rows,
                                                 hf_greedy, student_course_lm, warped)
from llmcourse.wire import Seeded

ASSIGNMENT = "03_prompting"
INF = float("inf")


# -- format_prompt ---------------------------------------------------------------------------------

@graded("format_prompt", points=3, hint="Each example is 'Input: x\\nOutput: y' followed by a blank line; the prompt "
                                        "ends with 'Input: query\\nOutput:' and no space after the colon.")
def test_format_prompt_few_shot(student):
    got = student.format_prompt("", [("cat", "red"), ("bread", "blue")], "lamp")
    expected = "Input: cat\nOutput: red\n\nInput: bread\nOutput: blue\n\nInput: lamp\nOutput:"
    expect(isinstance(got, str), f"format_prompt returned {type(got).__name__}, not a string.")
    expect(got == expected, f"format_prompt('', [('cat', 'red'), ('bread', 'blue')], 'lamp') returned\n{got!r}\n"
                            f"but the template gives\n{expected!r}")


# -- apply_temperature -----------------------------------------------------------------------------

@graded("apply_temperature", points=2, hint="Divide the logits by the temperature (do not multiply, and no softmax).")
def test_apply_temperature_matches_transformers(student):
    logits = torch.randn(3, 10, generator=generator(1)) * 2
    for t in (0.5, 2.0):
        expect_close(student.apply_temperature(logits, t), warped("temperature", logits, t),
                     f"apply_temperature(logits, {t})", hint="Divide the logits by the temperature.")


# -- top_k_filter ----------------------------------------------------------------------------------

@graded("top_k_filter", points=3, hint="Keep the tokens whose logit is >= the k-th largest of their row, set the "
                                       "others to float('-inf'); ties with the k-th value are all kept.")
def test_top_k_filter_matches_transformers(student):
    logits = torch.randn(4, 12, generator=generator(2)) * 3
    cases = [(logits, 3), (torch.tensor([[3.0, 1.0, 3.0, 3.0, 0.0]]), 2)]
    for x, k in cases:
        expect_filter(student.top_k_filter(x, k), x, warped("top_k", x, k), f"top_k_filter(logits, {k})",
                      hint="Keep every token whose logit is >= the k-th largest value of its row.")


# -- top_p_filter ----------------------------------------------------------------------------------

@graded("top_p_filter", points=3, hint="Keep the most likely tokens until their probabilities add up to at least p, "
                                       "including the token that reaches p; -inf for the rest.")
def test_top_p_filter_matches_transformers(student):
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0], [0.0, 4.0, 1.0, 1.5, -2.0]])
    for p in (0.5, 0.8):
        expect_filter(student.top_p_filter(logits, p), logits, warped("top_p", logits, p), f"top_p_filter(logits, {p})",
                      hint="Keep the most likely tokens until their probabilities add up to at least p.")


# -- sample_next_token -----------------------------------------------------------------------------

@graded("sample_next_token", points=3, hint="Apply the temperature, then top-k, then top-p, softmax, and draw with "
                                            "torch.multinomial(probs, 1, generator=generator).")
def test_sample_next_token_draws_from_the_filtered_distribution(student):
    logits = torch.tensor([2.0, 1.5, 1.0, 0.0, -1.0, -3.0])
    n = 4000
    draws = student.sample_next_token(logits.expand(n, -1).contiguous(), temperature=0.7, top_k=4,
                                      generator=Seeded(0))
    counts = draw_counts(draws, n, 6, "sample_next_token(..., temperature=0.7, top_k=4)", "")
    probs = torch.softmax(warped("top_k", warped("temperature", logits.double()[None], 0.7), 4)[0], -1)
    expect_distribution(counts, probs, "sample_next_token(..., temperature=0.7, top_k=4)",
                        hint="Divide by the temperature, keep the top 4, softmax, then draw.")


# -- greedy_generate -------------------------------------------------------------------------------

GREEDY_HINT = ("Each step: run the model on the whole sequence, take the logits of the LAST position, argmax, "
               "append with torch.cat along dim 1.")


@graded("greedy_generate", points=3, hint=GREEDY_HINT)
def test_greedy_generate_matches_generate(student):
    ids = encode(["Once upon a time, there was a little"])
    model = student_course_lm(student)
    expect_token_ids(student.greedy_generate(model, ids, 8), hf_greedy(ids, 8),
                     "greedy_generate(course-lm, prompt, 8)", GREEDY_HINT)


# -- generate_with_cache ---------------------------------------------------------------------------

CACHE_HINT = ("First pass: the whole prompt. Then feed only the newest token, shape (B, 1), with "
              "cache=out.cache from the pass before.")


@graded("generate_with_cache", points=4, hint=CACHE_HINT)
def test_generate_with_cache_feeds_one_token_per_step(student):
    ids = encode(["Once upon a time, there was a little"])
    model = student_course_lm(student)
    counter = student.construct("llmcourse.prompting_tools.ForwardCounter", model)
    out = student.generate_with_cache(model, ids, 6)
    lengths = counter.lengths
    counter.remove()
    expect_token_ids(out, hf_greedy(ids, 6), "generate_with_cache(course-lm, prompt, 6)", CACHE_HINT)
    expected = [ids.shape[1]] + [1] * 5
    expect(lengths == expected, f"generate_with_cache(course-lm, a prompt of {ids.shape[1]} tokens, 6) ran forward "
                                f"passes over {lengths} tokens; the KV cache needs {expected}.", CACHE_HINT)


# -- to_generation_config --------------------------------------------------------------------------

@graded("to_generation_config", points=2, hint="Sampling needs do_sample=True; pass temperature, top_k, top_p and "
                                               "max_new_tokens exactly as given.")
def test_to_generation_config_sampling(student):
    got = config_settings(student.to_generation_config(0.7, 20, 0.9, 30), "to_generation_config(0.7, 20, 0.9, 30)")
    want = {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9, "max_new_tokens": 30}
    for key, value in want.items():
        expect(got[key] == value, f"to_generation_config(0.7, 20, 0.9, 30) has {key}={got[key]!r}, expected {value!r}.")


# -- few_shot_accuracy -----------------------------------------------------------------------------

# Measured with the course's reference solution on course-lm (a small fixture: regenerate it if the assets change).
FEW_SHOT_FIXTURE = [("colour_mix", 1, 6, 1, 4 / 6), ("sort", 1, 6, 4, 4 / 6)]


@graded("few_shot_accuracy", points=3, hint="Draw with rng = random.Random(seed) and rng.sample(task, n_shots + 1) "
                                            "per query (examples first, query last), prompt with format_prompt('', ...), "
                                            "6 greedy tokens, answer = text before the first newline, stripped.")
def test_few_shot_accuracy_on_a_fixed_seed(student):
    model = student_course_lm(student)
    tok = student.construct("llmcourse.assets.load_tokenizer", "course-lm")
    for family, n_shots, n_queries, seed, expected in FEW_SHOT_FIXTURE:
        got = student.few_shot_accuracy(model, tok, fewshot_rows(family), n_shots, n_queries=n_queries, seed=seed)
        expect(isinstance(got, (float, int)) and not isinstance(got, bool),
               f"few_shot_accuracy returned {type(got).__name__}; it should return a float.")
        expect(math.isclose(got, expected, abs_tol=1e-9),
               f"few_shot_accuracy(course-lm, {family!r} rows, n_shots={n_shots}, n_queries={n_queries}, seed={seed}) "
               f"= {got:.4f}, expected {expected:.4f}.")


# -- extract_answer --------------------------------------------------------------------------------

@graded("extract_answer", points=2, hint="Find the number after the LAST 'answer is'; return it as a string without "
                                         "the period, or None when there is none.")
def test_extract_answer_examples(student):
    cases = [("Anna starts with 6. 6 - 5 = 1. The answer is 1.", "1"),
             ("So 3 + 4 = 7. The answer is 17.", "17"),
             ("Tom has some apples.", None)]
    for text, expected in cases:
        got = student.extract_answer(text)
        expect(got == expected, f"extract_answer({text!r}) returned {got!r}, expected {expected!r}.")


# -- majority_vote ---------------------------------------------------------------------------------

@graded("majority_vote", points=2, hint="Count the answers that are not None and return the most common one.")
def test_majority_vote_examples(student):
    cases = [(["4", "7", "4", None], "4"), ([None, "3", None, None], "3"), ([None, None], None)]
    for answers, expected in cases:
        got = student.majority_vote(answers)
        expect(got == expected, f"majority_vote({answers!r}) returned {got!r}, expected {expected!r}.")


# -- questions -------------------------------------------------------------------------------------

@graded("questions", points=1, requires_main=True,
        hint="Give every key one of the allowed strings.")
def test_questions_are_answered(student):
    answers_dict(student, "TECHNIQUE_FOR_PROBLEM", 7, TECHNIQUES)
    answers_dict(student, "RISK_OF_ATTACK", 6, RISKS)
