"""Visible checks for 03_prompting: what `check("03_prompting/<exercise>")` runs in your notebook.

They compare your code with transformers' own pieces (the logits processors TemperatureLogitsWarper,
TopKLogitsWarper and TopPLogitsWarper, and `model.generate`), count your model's forward passes with
`llmcourse.in_kernel.ForwardCounter`, or test a property every correct answer has. More checks run
when your notebook is graded.

What they share with the graders' checks lives in llmcourse.checking.shared.prompting, so that both talk about
your code the same way.
"""
from __future__ import annotations

import functools
import math

import torch

from llmcourse.checking import expect, expect_close, expect_tensor, generator, graded
from llmcourse.checking.shared.prompting import (RISKS, TECHNIQUES, answers_dict, config_settings, course_lm, draw_counts,
                                                 encode, expect_distribution, expect_filter, expect_token_ids,
                                                 fewshot_rows, hf_greedy, student_course_lm, warped)
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


@graded("format_prompt", points=1, hint="An instruction, when there is one, comes first and is followed by a blank "
                                        "line ('\\n\\n'), just like each example block.")
def test_format_prompt_with_an_instruction(student):
    cases = [("Sort the digits.", [("4 7 2", "2 4 7")], "8 2 6",
              "Sort the digits.\n\nInput: 4 7 2\nOutput: 2 4 7\n\nInput: 8 2 6\nOutput:"),
             ("Give the colour of each word.", [], "bird", "Give the colour of each word.\n\nInput: bird\nOutput:")]
    for instruction, examples, query, expected in cases:
        got = student.format_prompt(instruction, examples, query)
        expect(got == expected, f"format_prompt({instruction!r}, {examples!r}, {query!r}) returned\n{got!r}\n"
                                f"but the template gives\n{expected!r}")


# -- apply_temperature -----------------------------------------------------------------------------

@graded("apply_temperature", points=2, hint="Divide the logits by the temperature (do not multiply, and no softmax).")
def test_apply_temperature_matches_transformers(student):
    logits = torch.randn(3, 10, generator=generator(1)) * 2
    for t in (0.5, 2.0):
        expect_close(student.apply_temperature(logits, t), warped("temperature", logits, t),
                     f"apply_temperature(logits, {t})", hint="Divide the logits by the temperature.")


@graded("apply_temperature", points=1, requires_main=True,
        hint="Return a new tensor, logits / temperature: an in-place division (/=, div_) also changes the caller's "
             "logits.")
def test_apply_temperature_leaves_its_input_unchanged(student):
    logits = torch.randn(2, 6, generator=generator(3))
    remote = student.put(logits)
    student.apply_temperature(remote, 0.5)
    expect(torch.equal(remote.fetch(), logits), "apply_temperature(logits, 0.5) changed the logits it was given.")


# -- top_k_filter ----------------------------------------------------------------------------------

@graded("top_k_filter", points=3, hint="Keep the tokens whose logit is >= the k-th largest of their row, set the "
                                       "others to float('-inf'); ties with the k-th value are all kept.")
def test_top_k_filter_matches_transformers(student):
    logits = torch.randn(4, 12, generator=generator(2)) * 3
    cases = [(logits, 3), (torch.tensor([[3.0, 1.0, 3.0, 3.0, 0.0]]), 2)]
    for x, k in cases:
        expect_filter(student.top_k_filter(x, k), x, warped("top_k", x, k), f"top_k_filter(logits, {k})",
                      hint="Keep every token whose logit is >= the k-th largest value of its row.")


@graded("top_k_filter", points=1, hint="k = 0 means 'no top-k filter', and a k of at least the number of tokens keeps "
                                       "them all too: then return the logits unchanged (a copy is fine).")
def test_top_k_filter_k_0_means_no_filter(student):
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.0, 3.0, -2.0, 1.0]])
    for k in (1, 0, 10):  # k = 1 for contrast: only each row's largest logit stays
        expected = warped("top_k", logits, k) if k == 1 else logits.clone()
        expect_filter(student.top_k_filter(logits, k), logits, expected, f"top_k_filter(logits of 4 tokens, k={k})",
                      hint="k = 0 (or k >= the number of tokens) keeps every token unchanged; k = 1 keeps the largest.")


@graded("top_k_filter", points=1, requires_main=True,
        hint="Build a new tensor (masked_fill, torch.where) instead of writing -inf into the input (masked_fill_, "
             "logits[...] = ...): the caller's logits must not change.")
def test_top_k_filter_leaves_its_input_unchanged(student):
    logits = torch.randn(3, 8, generator=generator(4))
    remote = student.put(logits)
    student.top_k_filter(remote, 2)
    expect(torch.equal(remote.fetch(), logits), "top_k_filter(logits, 2) changed the logits it was given.")


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


# Two settings where the order of the steps changes which tokens can be drawn.
ORDER_CASES = [
    # The temperature first: at temperature 3 the probabilities are flatter, and top-p needs three tokens to
    # reach 0.5 (on the raw logits, two would do).
    ([2.0, 1.6, 1.2, 0.8, 0.4, 0.0], dict(temperature=3.0, top_p=0.5)),
    # top-k before top-p: of the 3 tokens top-k keeps, the first 2 already hold more than 0.6 of the probability
    # (top-p over all 6 tokens would keep 4, then top-k 3 of them).
    ([1.0, 0.9, 0.8, 0.7, 0.6, 0.5], dict(top_k=3, top_p=0.6)),
]


@graded("sample_next_token", points=2, hint="The order matters, as in transformers: divide by the temperature first, "
                                            "then top-k, then top-p (over what top-k kept), then softmax and draw.")
def test_sample_next_token_applies_temperature_then_top_k_then_top_p(student):
    n = 4000
    for logits, settings in ORDER_CASES:
        x = torch.tensor(logits)
        what = f"sample_next_token({logits}, {', '.join(f'{k}={v}' for k, v in settings.items())})"
        draws = student.sample_next_token(x.expand(n, -1).contiguous(), generator=Seeded(1), **settings)
        counts = draw_counts(draws, n, len(logits), what, "")
        z = warped("temperature", x.double()[None], settings.get("temperature", 1.0))
        z = warped("top_p", warped("top_k", z, settings.get("top_k", 0)), settings.get("top_p", 1.0))
        expect_distribution(counts, torch.softmax(z[0], -1), what,
                            hint="Temperature first, then top-k, then top-p, then softmax and draw.")


@graded("sample_next_token", points=1, requires_main=True,
        hint="Pass the generator on, torch.multinomial(probs, 1, generator=generator): then the same seed gives the "
             "same tokens, and an experiment can be repeated.")
def test_sample_next_token_follows_the_generator(student):
    logits = torch.randn(32, 20, generator=generator(5))
    first, again, other = (student.sample_next_token(logits, temperature=1.5, generator=Seeded(s)) for s in (7, 7, 8))
    for draws in (first, again, other):
        expect_tensor(draws, "sample_next_token(...)", shape=(32,), hint="Return one token id per row: shape (B,).")
    expect(torch.equal(first, again), "Two calls with generators seeded alike (seed 7) drew different tokens: "
                                      "the draw does not follow the generator it was given.")
    expect(not torch.equal(first, other), "Generators with different seeds (7 and 8) drew the same 32 tokens: "
                                          "is it drawing at all?",
           hint="Draw with torch.multinomial instead of taking the most likely token.")


# -- greedy_generate -------------------------------------------------------------------------------

GREEDY_HINT = ("Each step: run the model on the whole sequence, take the logits of the LAST position, argmax, "
               "append with torch.cat along dim 1.")


@graded("greedy_generate", points=3, hint=GREEDY_HINT)
def test_greedy_generate_matches_generate(student):
    ids = encode(["Once upon a time, there was a little"])
    model = student_course_lm(student)
    expect_token_ids(student.greedy_generate(model, ids, 8), hf_greedy(ids, 8),
                     "greedy_generate(course-lm, prompt, 8)", GREEDY_HINT)


@functools.lru_cache(maxsize=1)
def eos_prompts() -> torch.Tensor:
    """Two prompts of the same length: one that course-lm answers in a word or two, then </s>, and the start of a
    story, which course-lm goes on writing."""
    from llmcourse.assets import format_instruction

    _, tok = course_lm()
    short = format_instruction("Classify the sentence as happy or sad.", "Tom lost his red ball and cried all day.")
    short = tok(short, add_special_tokens=False)["input_ids"]
    story = tok("Once upon a time there was a little girl called Anna. She loved to read books about the sea and the "
                "stars, and every evening she sat by the window with her cat and read until the sun went down.",
                add_special_tokens=False)["input_ids"][:len(short)]
    return torch.tensor([short, story])


@graded("greedy_generate", points=1, hint="With eos_token_id: a row that has produced it is finished and gets "
                                          "eos_token_id at every later step, and the loop stops as soon as every row "
                                          "is finished.")
def test_greedy_generate_stops_at_eos(student):
    _, tok = course_lm()
    ids = eos_prompts()
    model = student_course_lm(student)
    expect_token_ids(student.greedy_generate(model, ids, 10, eos_token_id=tok.eos_token_id),
                     hf_greedy(ids, 10, eos_token_id=tok.eos_token_id),
                     f"greedy_generate(course-lm, a prompt answered with </s> and one that is not, 10, "
                     f"eos_token_id={tok.eos_token_id})",
                     "A finished row gets eos_token_id again at every later step; stop once every row is finished.")


@graded("greedy_generate", points=1, requires_main=True,
        hint="Write the loop yourself (no model.generate, no cache): each step runs the model on the whole sequence "
             "so far, one token longer than the step before. The cache is the next exercise.")
def test_greedy_generate_runs_its_own_loop(student):
    ids = encode(["Once upon a time, there was a little"])
    model = student_course_lm(student)
    counter = student.construct("llmcourse.in_kernel.ForwardCounter", model)
    student.greedy_generate(model, ids, 3)
    lengths = counter.lengths
    counter.remove()
    expected = [ids.shape[1] + i for i in range(3)]
    expect(lengths == expected, f"greedy_generate(course-lm, a {ids.shape[1]}-token prompt, 3) ran forward passes "
                                f"over {lengths} tokens; the plain loop runs {expected}.")


# -- generate_with_cache ---------------------------------------------------------------------------

CACHE_HINT = ("First pass: the whole prompt. Then feed only the newest token, shape (B, 1), with "
              "cache=out.cache from the pass before.")


@graded("generate_with_cache", points=4, hint=CACHE_HINT)
def test_generate_with_cache_feeds_one_token_per_step(student):
    ids = encode(["Once upon a time, there was a little"])
    model = student_course_lm(student)
    counter = student.construct("llmcourse.in_kernel.ForwardCounter", model)
    out = student.generate_with_cache(model, ids, 6)
    lengths = counter.lengths
    counter.remove()
    expect_token_ids(out, hf_greedy(ids, 6), "generate_with_cache(course-lm, prompt, 6)", CACHE_HINT)
    expected = [ids.shape[1]] + [1] * 5
    expect(lengths == expected, f"generate_with_cache(course-lm, a prompt of {ids.shape[1]} tokens, 6) ran forward "
                                f"passes over {lengths} tokens; the KV cache needs {expected}.", CACHE_HINT)


# -- to_generation_config --------------------------------------------------------------------------

@graded("to_generation_config", points=1, hint="Sampling needs do_sample=True; pass temperature, top_k, top_p and "
                                               "max_new_tokens exactly as given.")
def test_to_generation_config_sampling(student):
    got = config_settings(student.to_generation_config(0.7, 20, 0.9, 30), "to_generation_config(0.7, 20, 0.9, 30)")
    want = {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9, "max_new_tokens": 30}
    for key, value in want.items():
        expect(got[key] == value, f"to_generation_config(0.7, 20, 0.9, 30) has {key}={got[key]!r}, expected {value!r}.")


@graded("to_generation_config", points=1, hint="Pass top_k=0 itself: generate fills an unset top_k with 50, which "
                                               "keeps top-k filtering on.")
def test_to_generation_config_top_k_0_switches_top_k_off(student):
    got = config_settings(student.to_generation_config(0.7, 0, 1.0, 40), "to_generation_config(0.7, 0, 1.0, 40)")
    expect(got["do_sample"] is True and got["top_k"] == 0,
           f"to_generation_config(0.7, 0, 1.0, 40) has do_sample={got['do_sample']!r} and top_k={got['top_k']!r}; "
           f"expected do_sample=True and top_k=0 (no top-k filter).")


@graded("to_generation_config", points=1, hint="Temperature 0 means greedy decoding: return "
                                               "GenerationConfig(do_sample=False, max_new_tokens=...).")
def test_to_generation_config_temperature_0_is_greedy(student):
    got = config_settings(student.to_generation_config(0, 0, 1.0, 25), "to_generation_config(0, 0, 1.0, 25)")
    expect(got["do_sample"] in (False, None) and got["max_new_tokens"] == 25,
           f"to_generation_config(0, 0, 1.0, 25) has do_sample={got['do_sample']!r} and "
           f"max_new_tokens={got['max_new_tokens']!r}; expected greedy decoding (do_sample=False) of 25 tokens.")


# -- few_shot_accuracy -----------------------------------------------------------------------------

# Measured with the course's reference solution on course-lm (a small fixture: regenerate it if the assets change).
# On the nonsense_mix case, drawing the query first, or apart from the examples, gives another accuracy (0.5).
FEW_SHOT_FIXTURE = [("nonsense_mix", 1, 4, 2, 3 / 4), ("sort", 1, 6, 4, 4 / 6)]


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


@graded("extract_answer", points=1, hint="A chain of thought may correct itself, so the LAST 'answer is' counts; match "
                                         "it in any capitalisation and keep a minus sign (re.IGNORECASE and -?\\d+ in "
                                         "a regular expression).")
def test_extract_answer_last_answer_any_case_and_negative(student):
    cases = [("The answer is 3. No, wait: 3 + 4 = 7. The answer is 7.", "7"),
             ("It was 3 degrees and it fell by 7, so the answer is -4.", "-4"),
             ("THE ANSWER IS 250", "250")]
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


@graded("majority_vote", points=1, hint="When answers tie, the one seen first wins (collections.Counter.most_common "
                                        "keeps that order): not the first in the alphabet, not the last one seen.")
def test_majority_vote_breaks_ties_by_first_appearance(student):
    for answers, expected in [(["7", "4", "7", "4"], "7"), (["z", "y", "x"], "z")]:
        got = student.majority_vote(answers)
        expect(got == expected, f"majority_vote({answers!r}) returned {got!r}, expected {expected!r}: the answers "
                                f"tie, and {expected!r} comes first.")


# -- questions -------------------------------------------------------------------------------------

@graded("questions", points=1, requires_main=True,
        hint="Give every key one of the allowed strings.")
def test_questions_are_answered(student):
    answers_dict(student, "TECHNIQUE_FOR_PROBLEM", 7, TECHNIQUES)
    answers_dict(student, "RISK_OF_ATTACK", 6, RISKS)
