"""The checks of 05b_dpo, visible and hidden, written here once.

A check marked `@visible` ships to students: `grader build` copies it, with the helpers and imports it
uses, into `llmcourse/checks/dpo.py` (docstring: STUDENT_DOC below), where a student runs it before
grading. Visible checks use small worked examples and properties every right answer has, never the
reference. The other checks stay here and run only when a notebook is graded: they test the student's
code against `grader.reference.dpo`.

For the trained policy, the judge of 05_rlhf runs here (grader.checks.rlhf: course-lm as the reference and
the grader's own reward model): the student's weights come back as data, and the grader generates, scores and
compares with its own models. critique_and_revise is run with a scripted `generate_fn` that records its prompts.
Where a wrong answer matches a known mistake, the hint names it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from grader.checks.rlhf import expect_kind_and_fluent
from grader.reference import dpo as ref
from llmcourse.checking import expect, expect_close, expect_tensor, generator, graded, randn, visible
from llmcourse.checking.shared.rlhf import course_lm_with, expected_sequence_logprob, policy_weights, tuple_of

STUDENT_DOC = """Visible checks for 05b_dpo: what `check("05b_dpo/<exercise>")` runs in your notebook.

Small cases worked out by hand, the DPO-trained policy measured on held-out pairs, and constitutional AI's
critique and revision with a scripted model that records what it was asked. More checks run when your
notebook is graded.
"""

ASSIGNMENT = "05b_dpo"


# -- held-out preference pairs ----------------------------------------------------------------------

def held_out_pairs(n: int, offset: int = 0) -> list[dict]:
    from llmcourse.assets import load_task

    test = load_task("preferences", "test")
    return [test[i] for i in range(offset, offset + n)]


def encoded_pairs(rows: list[dict]) -> dict[str, torch.Tensor]:
    from llmcourse.assets import load_tokenizer
    from llmcourse.rlhf_tools import encode_pairs

    return encode_pairs(load_tokenizer("course-lm"), rows)


def implicit_reward_accuracy(policy, reference, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Fraction of pairs whose chosen response gains more log-probability than the rejected one, and the
    mean log-ratio log pi(y) - log pi_ref(y) of the chosen responses."""
    with torch.no_grad():
        pol = expected_sequence_logprob(policy, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
        ref = expected_sequence_logprob(reference, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    ratio_c, ratio_r = (pol - ref).chunk(2)
    return float((ratio_c > ratio_r).double().mean()), float(ratio_c.mean())


# -- dpo_loss --------------------------------------------------------------------------------------

@visible
@graded("dpo_loss", points=12, hint="rewards are beta * (policy logp - reference logp) for each response; the loss is "
                                   "-logsigmoid(chosen_rewards - rejected_rewards), averaged.")
def test_dpo_loss_small_example(student):
    pc, pr = torch.tensor([-10.0, -12.0]), torch.tensor([-14.0, -11.0])
    rc, rr = torch.tensor([-11.0, -12.0]), torch.tensor([-12.0, -12.0])
    loss, chosen, rejected = tuple_of(student.dpo_loss(pc, pr, rc, rr, beta=0.5), 3, "dpo_loss(...)",
                                      hint="Return (loss, chosen_rewards, rejected_rewards).")
    expect_close(chosen, torch.tensor([0.5, 0.0]), "chosen_rewards with beta=0.5")
    expect_close(rejected, torch.tensor([-1.0, 0.5]), "rejected_rewards with beta=0.5")
    expected = (math.log1p(math.exp(-1.5)) + math.log1p(math.exp(0.5))) / 2
    expect_close(expect_tensor(loss, "the loss", shape=()), torch.tensor(expected), "the DPO loss with beta=0.5")


@graded("dpo_loss", points=18, hint="chosen_rewards = beta * (policy_chosen - ref_chosen), the same for rejected; "
                                   "loss = -logsigmoid(chosen_rewards - rejected_rewards).mean().")
def test_dpo_loss_random(student):
    gen = generator(108)
    for n, beta, dtype in ((8, 0.1, torch.float32), (5, 0.5, torch.float64), (16, 2.0, torch.float32), (1, 0.01, torch.float32)):
        pc, pr, rc, rr = (-randn(gen, n, dtype=dtype, scale=10.0).abs() for _ in range(4))
        expected = ref.dpo_loss(pc, pr, rc, rr, beta)
        result = tuple_of(student.dpo_loss(pc, pr, rc, rr, beta=beta), 3, "dpo_loss(...)",
                          hint="Return (loss, chosen_rewards, rejected_rewards).")
        what = f"for {n} random pairs, beta={beta}, {dtype}"
        expect_close(result[0], expected[0], f"the DPO loss {what}", hint="-logsigmoid of the reward margin, averaged.",
                     mistakes=[(lambda: -F.logsigmoid(beta * (pc - pr)).mean(),
                                "The reference terms are missing: the implicit reward is beta * (log pi - log "
                                "pi_ref)."),
                               (lambda: -F.logsigmoid((pc - rc) - (pr - rr)).mean(),
                                "beta is missing: multiply the log-ratios by beta."),
                               # Swapping chosen and rejected, or policy and reference, gives the same loss.
                               (lambda: ref.dpo_loss(pr, pc, rr, rc, beta)[0],
                                "The margin has the wrong sign: either chosen and rejected are swapped, or policy and "
                                "reference are. The reward is beta * (log pi_policy - log pi_reference), and the loss "
                                "is -logsigmoid(chosen_reward - rejected_reward)."),
                               (lambda: -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).sum(),
                                "Take the mean over the pairs, not the sum.")])
        expect_close(result[1], expected[1], f"chosen_rewards {what}",
                     hint="beta * (policy_chosen_logps - ref_chosen_logps).")
        expect_close(result[2], expected[2], f"rejected_rewards {what}",
                     hint="beta * (policy_rejected_logps - ref_rejected_logps).")
    default = tuple_of(student.dpo_loss(pc, pr, rc, rr), 3, "dpo_loss without beta", hint="The default beta is 0.1.")
    expect_close(default[0], ref.dpo_loss(pc, pr, rc, rr)[0], "the DPO loss with the default beta",
                 hint="The default beta is 0.1.")


# -- the DPO-trained policy, judged by the grader's own models -------------------------------------

@visible
@graded("dpo_training", points=14, hint="Train a copy of course-lm with DPOTrainer on the preference pairs (a few dozen "
                                       "steps) and keep it in `dpo_policy`; the reference model must stay untouched.")
def test_dpo_policy_prefers_the_chosen_responses(student):
    from llmcourse.assets import load_model

    weights = policy_weights(student)
    base = load_model("course-lm").state_dict()
    change = max(float((weights[k] - base[k]).abs().max()) for k in weights)
    expect(change > 1e-4, "`dpo_policy` has exactly course-lm's weights: it has not been trained.",
           hint="Call trainer.train(), and keep the model you gave the trainer.")
    accuracy, _ = implicit_reward_accuracy(course_lm_with(weights), load_model("course-lm").eval(),
                                           encoded_pairs(held_out_pairs(24)))
    # Well under half the pairs: the policy learned the opposite preference, the mark of swapped columns.
    opposite = ("Your policy learned the opposite preference: in most pairs it raised the log-probability of the "
                "rejected response more than that of the chosen one. Check that the trainer's `chosen` column holds "
                "the preferred responses and `rejected` the others: they look swapped.")
    expect(accuracy >= 0.75, f"On 24 held-out pairs, your policy raised the log-probability of the chosen response "
                             f"more than that of the rejected one in only {accuracy:.0%} of the pairs (at least 75% "
                             f"expected).",
           hint=opposite if accuracy <= 0.25 else
           "Check that `chosen` holds the preferred responses, and train for longer or with a larger learning rate.")


@graded("dpo_training", points=26, hint="The grader generates greedy answers with your trained weights and judges them "
                                        "with its own reward model: more kind endings than course-lm, and still fluent "
                                        "text (not too far from the reference).")
def test_dpo_policy_greedy_answers_are_preferred_and_fluent(student):
    expect_kind_and_fluent(
        policy_weights(student),
        drift_hint="Use a smaller learning rate, fewer steps, or a larger beta, which keeps the policy close to the "
                   "reference.",
        opposite_hint="Your policy ends kindly far less often than course-lm did before training: it learned the "
                      "opposite preference. Check that the trainer's `chosen` column holds the preferred responses and "
                      "`rejected` the others: they look swapped.",
        weak_hint="Check that the trainer sees `chosen` as the preferred response, and train a little longer or with a "
                  "larger learning rate (or a larger beta if the policy drifted).")


# -- critique_and_revise: a scripted model that records its prompts -------------------------------------------

STORY = ("### Instruction:\nContinue the story.\n\n### Input:\nTom lost his red ball in the park. Mia saw him "
         "looking for it.\n\n### Response:\n")
PRINCIPLES = ["Be kind: nobody is hurt or left out at the end.", "Help: someone helps the one who has a problem.",
              "Be honest: nobody lies or tricks anyone."]


def scripted_critique_and_revise(student, outputs: list[str], principles: list[str], prompt: str = STORY):
    """Run the student's critique_and_revise with a model that answers `outputs` in order; the result as a pair
    and the prompts the model was given."""
    model = student.construct("llmcourse.in_kernel.ScriptedModel", outputs)
    result = student.critique_and_revise(model, prompt, list(principles))
    expect(isinstance(result, (tuple, list)) and len(result) == 2,
           f"critique_and_revise should return a pair (original, revised), not {result!r:.200}.",
           hint="Return (original, revised): the first answer, and the last revision.")
    return tuple(result), list(model.prompts)


def expected_prompts(prompt: str, outputs: list[str], principles: list[str]) -> list[str]:
    """The prompts the contract asks for: the prompt, then per principle its critique and revision requests."""
    from llmcourse.rlhf_tools import critique_request, revision_request

    prompts, response, i = [prompt], outputs[0], 1
    for principle in principles:
        critique = outputs[i]
        prompts += [critique_request(prompt, response, principle),
                    revision_request(prompt, response, principle, critique)]
        response, i = outputs[i + 1], i + 2
    return prompts


@visible
@graded("critique_and_revise", points=10,
        hint="One call for the original answer, then for each principle in order: one call with "
             "rlhf_tools.critique_request(prompt, current answer, principle), one with rlhf_tools.revision_request("
             "prompt, current answer, principle, critique); the revision becomes the current answer. Return "
             "(original, last revision).")
def test_critique_and_revise_two_principles(student):
    outputs = ["They fought over the ball.", "badly", "Mia helped Tom find the ball.", "well",
               "Mia and Tom found the ball together."]
    result, prompts = scripted_critique_and_revise(student, outputs, PRINCIPLES[:2])
    wanted = expected_prompts(STORY, outputs, PRINCIPLES[:2])
    expect(len(prompts) == 5, f"With 2 principles, generate_fn should be called 5 times (1 answer + 2 x (critique, "
                              f"revision)); it was called {len(prompts)} times.",
           hint="Call generate_fn once for the original answer, then twice per principle: a critique, then a revision.")
    for i, (got, want) in enumerate(zip(prompts, wanted)):
        what = ["the original answer's prompt", "the first critique request", "the first revision request",
                "the second critique request", "the second revision request"][i]
        expect(got == want, f"Call {i + 1} of generate_fn ({what}) got {got!r}, but it should get {want!r}.",
               hint="Critique and revise the CURRENT answer (the latest revision, the original at first), one principle "
                    "at a time in the given order; give the revision request the critique that was just written."
               if i else "The first call is generate_fn(prompt), the prompt itself.")
    expect(result == (outputs[0], outputs[4]),
           f"critique_and_revise returned {result!r}; it should return ({outputs[0]!r}, {outputs[4]!r}): the original "
           f"answer and the last revision.", hint="Return (original, revised), in that order; a critique is not an answer.")


@visible
@graded("critique_and_revise", points=5, hint="With no principles there is nothing to critique: one call, and the "
                                              "original is also the revised answer.")
def test_critique_and_revise_without_principles(student):
    result, prompts = scripted_critique_and_revise(student, ["Tom went home."], [])
    expect(prompts == [STORY], f"With no principles generate_fn should be called once, with the prompt; its prompts "
                               f"were {prompts!r:.300}.")
    expect(result == ("Tom went home.", "Tom went home."),
           f"With no principles, critique_and_revise should return (original, original), not {result!r}.")


@graded("critique_and_revise", points=15,
        hint="For each principle in order: critique = generate_fn(critique_request(prompt, answer, principle)); answer "
             "= generate_fn(revision_request(prompt, answer, principle, critique)); return (original, answer).")
def test_critique_and_revise_three_principles_and_other_prompts(student):
    from llmcourse.assets import load_task

    prompt = load_task("preferences", "test")[5]["prompt"]
    outputs = ["A first ending.", "well", "A second ending.", "badly", "A third ending.", "badly", "A last ending."]
    result, prompts = scripted_critique_and_revise(student, outputs, PRINCIPLES, prompt=prompt)
    wanted = expected_prompts(prompt, outputs, PRINCIPLES)
    from llmcourse.rlhf_tools import critique_request, revision_request

    mistakes = [
        ("every critique and revision is of the original answer",
         [prompt] + [x for p in PRINCIPLES for x in (critique_request(prompt, outputs[0], p),
                                                     revision_request(prompt, outputs[0], p, "?"))]),
        ("the principles were taken in reverse order", expected_prompts(prompt, outputs, PRINCIPLES[::-1])),
    ]
    if prompts != wanted:
        for name, wrong in mistakes:
            if len(prompts) == len(wrong) and all(a == b for i, (a, b) in enumerate(zip(prompts, wrong)) if i % 2 == 1):
                expect(False, f"With 3 principles the prompts were not the ones the contract asks for: {name}.",
                       hint="Critique and revise the latest answer, principle by principle in the given order.")
        expect(len(prompts) == 7, f"With 3 principles generate_fn should be called 7 times, not {len(prompts)}.",
               hint="One call for the original answer, then a critique and a revision per principle.")
        first = next(i for i, (a, b) in enumerate(zip(prompts, wanted)) if a != b)
        expect(False, f"Call {first + 1} of generate_fn got {prompts[first]!r:.300}; expected {wanted[first]!r:.300}.",
               hint="Use rlhf_tools.critique_request(prompt, answer, principle) and rlhf_tools.revision_request(prompt, "
                    "answer, principle, critique) exactly, with the critique just written.")
    expect(result == (outputs[0], outputs[-1]), f"critique_and_revise returned {result!r}; expected "
                                               f"{(outputs[0], outputs[-1])!r}.",
           hint="Return (original, revised): the first answer and the last revision.")
