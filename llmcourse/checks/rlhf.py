"""Visible checks for 05_rlhf: what `check("05_rlhf/<exercise>")` runs in your notebook.

Small cases worked out by hand, comparisons with PyTorch's own functions, and properties every correct
answer has. More checks run when your notebook is graded.

What they share with the graders' checks (random batches with padding on either side, a tiny Llama, the DPO
judge's data) lives in llmcourse.checking.shared.rlhf, so that both talk about your code in the same words.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llmcourse.checking import expect, expect_close, expect_tensor, generator, graded, randn
from llmcourse.checking.shared.rlhf import (course_lm_with, expected_sequence_logprob, padded_batch, policy_weights,
                                            student_tiny_llama, tiny_llama, tiny_llama_weights, tuple_of)

ASSIGNMENT = "05_rlhf"


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


# -- preference_loss -------------------------------------------------------------------------------

@graded("preference_loss", points=2, hint="Bradley-Terry: the loss of one pair is -log(sigmoid(r_chosen - r_rejected)); "
                                          "return the mean over the pairs.")
def test_preference_loss_small_example(student):
    chosen, rejected = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0])
    loss = expect_tensor(student.preference_loss(chosen, rejected), "preference_loss(...)", shape=())
    expected = torch.tensor((math.log1p(math.exp(-2.0)) + math.log(2.0) + math.log1p(math.exp(2.0))) / 3)
    expect_close(loss, expected, "preference_loss([2, 0, -1], [0, 0, 1])")


@graded("preference_loss", points=1, requires_main=True,
        hint="The loss must fall as the chosen reward rises above the rejected one: "
             "is the difference the right way round (chosen minus rejected)?")
def test_preference_loss_prefers_the_chosen(student):
    low = student.preference_loss(torch.tensor([3.0]), torch.tensor([-3.0]))
    high = student.preference_loss(torch.tensor([-3.0]), torch.tensor([3.0]))
    expect(float(low) < float(high), "preference_loss(3, -3) should be smaller than preference_loss(-3, 3): the model "
                                     "is rewarded for scoring the chosen response higher.")


@graded("preference_loss", points=1,
        hint="-log(sigmoid(x)) computed as torch.log(torch.sigmoid(x)) becomes log(0) = -inf once sigmoid(x) "
             "rounds to 0 (x below about -100 in float32). F.logsigmoid computes the same value without that "
             "rounding.")
def test_preference_loss_is_stable_for_large_margins(student):
    loss = expect_tensor(student.preference_loss(torch.tensor([-120.0]), torch.tensor([80.0])),
                         "preference_loss([-120], [80])", shape=())
    expect(bool(torch.isfinite(loss)), "preference_loss([-120], [80]) is not finite: a reward model can be this "
                                       "wrong early in training, and one such pair would make the loss infinite.")
    expect_close(loss, torch.tensor(200.0), "preference_loss([-120], [80]) (the loss of a pair 200 nats wrong)")


# -- gather_logprobs -------------------------------------------------------------------------------

@graded("gather_logprobs", points=2, hint="log_softmax over the vocabulary (the last dim), then pick each label's "
                                          "entry with .gather(-1, labels.unsqueeze(-1)).")
def test_gather_logprobs_matches_cross_entropy(student):
    gen = generator(1)
    logits = randn(gen, 2, 5, 7, scale=2.0)
    labels = torch.randint(0, 7, (2, 5), generator=gen)
    out = student.gather_logprobs(logits, labels)
    expected = -F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), reduction="none").reshape(2, 5)
    expect_close(out, expected, "gather_logprobs(logits (2, 5, 7), labels (2, 5)) (vs -F.cross_entropy)")


@graded("gather_logprobs", points=1, requires_main=True,
        hint="Compute in the logits' own dtype: a .float() (float32) anywhere loses the precision that float64 "
             "logits carry.")
def test_gather_logprobs_keeps_float64(student):
    gen = generator(11)
    logits = randn(gen, 2, 3, 5, dtype=torch.float64)
    labels = torch.randint(0, 5, (2, 3), generator=gen)
    out = expect_tensor(student.gather_logprobs(logits, labels), "gather_logprobs(float64 logits, labels)",
                        dtype=torch.float64)
    expected = -F.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1), reduction="none").reshape(2, 3)
    expect_close(out, expected, "gather_logprobs of float64 logits, at float64 precision (vs -F.cross_entropy)")


# -- sequence_logprob ------------------------------------------------------------------------------

@graded("sequence_logprob", points=3, hint="logits at position t predict token t + 1: score input_ids[:, 1:] with "
                                           "logits[:, :-1], and add up only the response tokens (response_mask[:, 1:]).")
def test_sequence_logprob_right_padded(student):
    gen = generator(2)
    weights = tiny_llama_weights(3)
    ids, attention, response = padded_batch(gen, [9, 6, 8], [4, 2, 5], side="right")
    out = student.sequence_logprob(student_tiny_llama(student, weights), ids, attention, response)
    out = expect_tensor(out, "sequence_logprob(...) for 3 sequences", shape=(3,))
    expect_close(out, expected_sequence_logprob(tiny_llama(weights), ids, attention, response).float(),
                 "sequence_logprob of a right-padded batch", rtol=1e-4, atol=1e-4)


@graded("sequence_logprob", points=2,
        hint="With padding on the left the model must be told which tokens are padding: pass attention_mask to "
             "the model, or it attends to the padding and its positions shift.")
def test_sequence_logprob_left_padded(student):
    gen = generator(12)
    weights = tiny_llama_weights(13)
    ids, attention, response = padded_batch(gen, [9, 5, 7], [4, 2, 3], side="left")
    out = student.sequence_logprob(student_tiny_llama(student, weights), ids, attention, response)
    out = expect_tensor(out, "sequence_logprob(...) for 3 left-padded sequences", shape=(3,))
    expect_close(out, expected_sequence_logprob(tiny_llama(weights), ids, attention, response).float(),
                 "sequence_logprob of a left-padded batch", rtol=1e-4, atol=1e-4)


# -- shaped_rewards --------------------------------------------------------------------------------

@graded("shaped_rewards", points=5, hint="-beta * (logprobs - ref_logprobs) on response tokens, 0 elsewhere, plus "
                                         "the score on each row's last response token.")
def test_shaped_rewards_small_example(student):
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, -1.0], [-0.1, -0.2, -0.3, -0.4]])
    ref = torch.tensor([[-1.5, -1.0, -1.5, -3.0], [-0.1, -0.4, -0.3, -0.2]])
    mask = torch.tensor([[False, True, True, False], [True, True, True, True]])
    score = torch.tensor([2.0, -1.0])
    out = student.shaped_rewards(score, logprobs, ref, mask, 0.5)
    expected = torch.tensor([[0.0, 0.5, -0.5 + 2.0, 0.0], [0.0, -0.1, 0.0, 0.1 - 1.0]])
    expect_close(out, expected, "shaped_rewards(score=[2, -1], ..., beta=0.5) on a 2 x 4 example")


# -- gae -------------------------------------------------------------------------------------------

@graded("gae", points=3, hint="With lam=0 the advantage is the one-step TD error r_t + gamma * V_{t+1} - V_t, "
                              "with V = 0 after the last step.")
def test_gae_lambda_zero_is_one_step_td(student):
    gen = generator(4)
    rewards, values = randn(gen, 3, 6), randn(gen, 3, 6)
    result = tuple_of(student.gae(rewards, values, gamma=0.9, lam=0.0), 2, "gae(...)",
                      hint="Return (advantages, returns).")
    advantages, returns = result
    next_values = torch.cat([values[:, 1:], torch.zeros(3, 1)], dim=1)
    expect_close(advantages, rewards + 0.9 * next_values - values, "advantages with lam=0 (one-step TD errors)")
    expect_close(returns, advantages + values, "returns (advantages + values)")


@graded("gae", points=3, hint="With lam=1 and gamma=1 the advantage is the sum of the rewards from t to the end, "
                              "minus V_t (Monte Carlo return minus the value).")
def test_gae_lambda_one_is_monte_carlo(student):
    gen = generator(5)
    rewards, values = randn(gen, 2, 5), randn(gen, 2, 5)
    advantages, returns = tuple_of(student.gae(rewards, values, gamma=1.0, lam=1.0), 2, "gae(...)",
                                   hint="Return (advantages, returns).")
    to_go = rewards.flip(1).cumsum(1).flip(1)
    expect_close(returns, to_go, "returns with gamma=1, lam=1 (the rewards still to come)")
    expect_close(advantages, to_go - values, "advantages with gamma=1, lam=1")


@graded("gae", points=2, hint="Only the steps in the mask are part of the episode: after a row's last step the "
                              "next value is 0 (the episode ends there), never the value of a padding position; "
                              "advantages and returns are 0 outside the mask.")
def test_gae_stops_at_the_padding(student):
    rewards = torch.tensor([[1.0, 0.0, 2.0, 5.0], [0.5, 1.0, 1.0, 1.0]])
    values = torch.tensor([[0.5, 1.0, 1.5, 9.0], [1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    advantages, returns = tuple_of(student.gae(rewards, values, gamma=0.5, lam=0.0, mask=mask), 2, "gae(...)",
                                   hint="Return (advantages, returns).")
    # lam=0: one-step TD errors r_t + 0.5 * V_{t+1} - V_t; row 0's last step (t=2) is followed by padding: V = 0.
    expected = torch.tensor([[1.0 + 0.5 - 0.5, 0.0 + 0.75 - 1.0, 2.0 - 1.5, 0.0],
                             [0.5 + 1.0 - 1.0, 1.0 + 1.5 - 2.0, 1.0 + 2.0 - 3.0, 1.0 - 4.0]])
    expect_close(advantages, expected, "advantages with lam=0 and a padded row (mask False at its last position)")
    expect_close(returns, torch.where(mask, expected + values, torch.zeros_like(values)),
                 "returns (advantages + values on the mask's steps, 0 elsewhere)")


# -- ppo_clip_loss ---------------------------------------------------------------------------------

@graded("ppo_clip_loss", points=6, hint="ratio = exp(logprobs - old_logprobs); per token -min(ratio * A, "
                                        "clamp(ratio, 1 - eps, 1 + eps) * A); then the mean over the mask's tokens.")
def test_ppo_clip_loss_small_example(student):
    ratio = torch.tensor([[1.5, 0.5, 1.1, 0.7]])
    advantages = torch.tensor([[1.0, -2.0, 3.0, 1.0]])
    old = torch.tensor([[-1.0, -2.0, -0.5, -1.2]])
    logprobs = old + ratio.log()
    # token by token: min(1.5, 1.2) = 1.2; min(-1.0, -1.6) = -1.6; min(3.3, 3.3) = 3.3; min(0.7, 0.8) = 0.7
    loss = expect_tensor(student.ppo_clip_loss(logprobs, old, advantages, clip_eps=0.2), "ppo_clip_loss(...)", shape=())
    expect_close(loss, torch.tensor(-(1.2 - 1.6 + 3.3 + 0.7) / 4), "ppo_clip_loss on 4 tokens with clip_eps=0.2")
    mask = torch.tensor([[True, True, False, False]])
    loss = student.ppo_clip_loss(logprobs, old, advantages, clip_eps=0.2, mask=mask)
    expect_close(loss, torch.tensor(-(1.2 - 1.6) / 2), "ppo_clip_loss with a mask keeping the first two tokens")


# -- dpo_loss --------------------------------------------------------------------------------------

@graded("dpo_loss", points=5, hint="rewards are beta * (policy logp - reference logp) for each response; the loss is "
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


# -- the DPO-trained policy ------------------------------------------------------------------------

@graded("dpo_training", points=6, hint="Train a copy of course-lm with DPOTrainer on the preference pairs (a few dozen "
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
    expect(accuracy >= 0.75, f"On 24 held-out pairs, your policy raised the log-probability of the chosen response "
                             f"more than that of the rejected one in only {accuracy:.0%} of the pairs (at least 75% "
                             f"expected).",
           hint="Check that `chosen` holds the preferred responses, and train for longer or with a larger learning rate.")
