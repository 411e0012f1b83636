"""The checks of 05_rlhf, visible and hidden, written here once (05b_dpo's checks use its judge).

A check marked `@visible` ships to students: `grader build` copies it, with the helpers and imports it
uses, into `llmcourse/checks/rlhf.py` (docstring: STUDENT_DOC below), where a student runs it before
grading. Visible checks use small worked examples and properties every right answer has, never the
reference. The other checks stay here and run only when a notebook is graded: they test the student's
code against `grader.reference.rlhf`.

Seeded random tensors with padding on either side, the edge cases the contract names (lam=0 and lam=1,
both sides of the clip, beta variations), a bandit whose best policy is known (for ppo_step and ppo_train;
llmcourse.in_kernel.Bandit, built in the student's kernel and here from the same seed) and, for the trained
policy, a judge that runs here: the student's weights come back as data, and the grader generates, scores and
compares with its own models. Where a wrong answer matches a known mistake, the hint names it.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from grader.reference import rlhf as ref
from llmcourse.checking import expect, expect_close, expect_tensor, generator, graded, randn, visible
from llmcourse.checking.shared.rlhf import (course_lm_with, expected_sequence_logprob, padded_batch, policy_weights,
                                            random_segments, student_tiny_llama, tiny_llama, tiny_llama_weights,
                                            tuple_of)

STUDENT_DOC = """Visible checks for 05_rlhf: what `check("05_rlhf/<exercise>")` runs in your notebook.

Small cases worked out by hand, comparisons with PyTorch's own functions, and properties every correct
answer has. More checks run when your notebook is graded.

What they share with the graders' checks (random batches with padding on either side, a tiny Llama, the
trained policy's weights) lives in llmcourse.checking.shared.rlhf, so that both talk about your code in the same words.
"""

ASSIGNMENT = "05_rlhf"


# -- preference_loss -------------------------------------------------------------------------------

@visible
@graded("preference_loss", points=2, hint="Bradley-Terry: the loss of one pair is -log(sigmoid(r_chosen - r_rejected)); "
                                          "return the mean over the pairs.")
def test_preference_loss_small_example(student):
    chosen, rejected = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0])
    loss = expect_tensor(student.preference_loss(chosen, rejected), "preference_loss(...)", shape=())
    expected = torch.tensor((math.log1p(math.exp(-2.0)) + math.log(2.0) + math.log1p(math.exp(2.0))) / 3)
    expect_close(loss, expected, "preference_loss([2, 0, -1], [0, 0, 1])")


@visible
@graded("preference_loss", points=1, requires_main=True,
        hint="The loss must fall as the chosen reward rises above the rejected one: "
             "is the difference the right way round (chosen minus rejected)?")
def test_preference_loss_prefers_the_chosen(student):
    low = student.preference_loss(torch.tensor([3.0]), torch.tensor([-3.0]))
    high = student.preference_loss(torch.tensor([-3.0]), torch.tensor([3.0]))
    expect(float(low) < float(high), "preference_loss(3, -3) should be smaller than preference_loss(-3, 3): the model "
                                     "is rewarded for scoring the chosen response higher.")


@visible
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


@graded("preference_loss", points=3, hint="-logsigmoid(chosen - rejected), averaged over the pairs (not summed).")
def test_preference_loss_random(student):
    gen = generator(100)
    for n, dtype in ((1, torch.float32), (7, torch.float32), (64, torch.float64)):
        c, r = randn(gen, n, dtype=dtype, scale=2.0), randn(gen, n, dtype=dtype, scale=2.0)
        expect_close(student.preference_loss(c, r), ref.preference_loss(c, r),
                     f"preference_loss on {n} random {dtype} pairs",
                     hint="-logsigmoid(chosen - rejected), averaged over the pairs.",
                     mistakes=[(lambda: ref.preference_loss(r, c),
                                "chosen and rejected are swapped: the loss of a pair is -log sigmoid(r_chosen - "
                                "r_rejected)."),
                               (lambda: -F.logsigmoid(c - r).sum(), "The losses are summed; take their mean."),
                               (lambda: F.logsigmoid(c - r).mean(),
                                "The sign is flipped: the loss is MINUS log sigmoid."),
                               (lambda: -torch.sigmoid(c - r).mean(),
                                "Take the log of the sigmoid (logsigmoid), not the sigmoid itself.")])


@graded("preference_loss", points=1, hint="Use F.logsigmoid (or softplus): log(sigmoid(x)) underflows to log(0) = -inf "
                                          "for very negative x.")
def test_preference_loss_is_stable_both_ways(student):
    c = torch.tensor([200.0, -200.0, 0.0])
    r = torch.tensor([-200.0, 200.0, 0.0])
    out = student.preference_loss(c, r)
    expect(isinstance(out, torch.Tensor) and bool(torch.isfinite(out)),
           "preference_loss of pairs with reward gaps of +-400 is not finite.",
           hint="Use F.logsigmoid(x) rather than torch.log(torch.sigmoid(x)).")
    expect_close(out, ref.preference_loss(c, r), "preference_loss with gaps of +400, -400 and 0",
                 hint="Use F.logsigmoid(x) rather than torch.log(torch.sigmoid(x)).")


# -- gather_logprobs -------------------------------------------------------------------------------

@visible
@graded("gather_logprobs", points=2, hint="log_softmax over the vocabulary (the last dim), then pick each label's "
                                          "entry with .gather(-1, labels.unsqueeze(-1)).")
def test_gather_logprobs_matches_cross_entropy(student):
    gen = generator(1)
    logits = randn(gen, 2, 5, 7, scale=2.0)
    labels = torch.randint(0, 7, (2, 5), generator=gen)
    out = student.gather_logprobs(logits, labels)
    expected = -F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), reduction="none").reshape(2, 5)
    expect_close(out, expected, "gather_logprobs(logits (2, 5, 7), labels (2, 5)) (vs -F.cross_entropy)")


@visible
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


@graded("gather_logprobs", points=5, hint="log_softmax over the last dim of the logits, then .gather(-1, ...) at each "
                                          "label; work for any number of leading dims and keep the dtype.")
def test_gather_logprobs_random(student):
    gen = generator(101)
    for shape, dtype, scale in (((3, 8, 11), torch.float32, 1.0), ((2, 2, 5, 9), torch.float64, 3.0),
                                ((4, 13), torch.float32, 1.0), ((2, 6, 17), torch.float32, 40.0)):
        logits = randn(gen, *shape, dtype=dtype, scale=scale)
        labels = torch.randint(0, shape[-1], shape[:-1], generator=gen)
        expect_close(student.gather_logprobs(logits, labels), ref.gather_logprobs(logits, labels),
                     f"gather_logprobs for {dtype} logits of shape {shape} (scale {scale})",
                     hint="log_softmax over the vocabulary, then gather at the labels.", check_dtype=True,
                     mistakes=[(lambda: logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1),
                                "These are raw logits: normalise them with log_softmax first."),
                               (lambda: torch.softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1),
                                "These are probabilities: take log_softmax, not softmax."),
                               (lambda: torch.log_softmax(logits, -2).gather(-1, labels.unsqueeze(-1)).squeeze(-1),
                                "log_softmax is taken over the wrong dim (dim=-2, the positions): each position's "
                                "log-probabilities must be normalised over the vocabulary, the last dim (dim=-1)."),
                               (lambda: ref.gather_logprobs(logits[..., :-1, :], labels[..., 1:]),
                                "gather_logprobs should not shift anything: score each label with the logits at the "
                                "same position (sequence_logprob does the shift).")])


# -- sequence_logprob ------------------------------------------------------------------------------

@visible
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


@visible
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


def _sequence_mistakes(model, ids, attention, response):
    def logprobs(mask_shift=1, attend=True):
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=attention.long() if attend else None).logits
        lp = torch.log_softmax(out[:, :-1].double(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        mask = response[:, 1:] if mask_shift == 1 else response[:, :-1]
        return lp, mask

    def not_shifted():
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=attention.long()).logits
        lp = torch.log_softmax(out.double(), -1).gather(-1, ids[..., None]).squeeze(-1)
        return (lp * response).sum(-1)

    def with_mask(**kw):
        lp, mask = logprobs(**kw)
        return (lp * mask).sum(-1)

    def all_tokens():
        lp, _ = logprobs()
        return (lp * attention[:, 1:]).sum(-1)

    def mean():
        lp, mask = logprobs()
        return (lp * mask).sum(-1) / mask.sum(-1)

    return [(not_shifted, "The log-probs are not shifted by one: the logits at position t predict token t + 1, so "
                          "score input_ids[:, 1:] with logits[:, :-1]."),
            (lambda: with_mask(mask_shift=0), "The response mask is not shifted with the labels: token t + 1 is a "
                                              "response token when response_mask[:, t + 1] is True (use response_mask[:, 1:])."),
            (lambda: with_mask(attend=False), "Pass attention_mask to the model: with left padding, the padding tokens "
                                              "must not be attended to."),
            (all_tokens, "Only the response tokens count: the prompt (and the padding) must be left out of the sum."),
            (mean, "Sum the log-probabilities of the response tokens; do not average them.")]


@graded("sequence_logprob", points=7, hint="Run the model with the attention mask, score input_ids[:, 1:] with "
                                           "logits[:, :-1], and sum over the response tokens only (response_mask[:, 1:]).")
def test_sequence_logprob_padding_on_either_side(student):
    gen = generator(102)
    weights = tiny_llama_weights(103)
    theirs, ours = student_tiny_llama(student, weights), tiny_llama(weights)
    for side in ("left", "right"):
        ids, attention, response = padded_batch(gen, [12, 7, 10, 5], [3, 4, 1, 2], side=side)
        if side == "left":
            ids = torch.where(attention, ids, torch.randint(3, 40, ids.shape, generator=gen))  # padding that would matter
        expected = expected_sequence_logprob(ours, ids, attention, response).float()
        out = student.sequence_logprob(theirs, ids, attention, response)
        expect_close(out, expected, f"sequence_logprob of a batch padded on the {side}",
                     hint="Shift by one, sum over response tokens only, and pass the attention mask.",
                     mistakes=_sequence_mistakes(ours, ids, attention, response), rtol=1e-4, atol=1e-4)


# -- shaped_rewards --------------------------------------------------------------------------------

@visible
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


def _shaped_mistakes(score, lp, rlp, mask, beta):
    m = mask.to(lp.dtype)
    last = ref.last_true_index(mask)
    rows = torch.arange(len(lp))

    def at(index, base):
        out = base.clone()
        out[rows, index] += score.to(lp.dtype)
        return out

    first = torch.where(mask, torch.arange(mask.shape[1]).expand_as(mask), mask.shape[1]).amin(-1)
    kl = -beta * (lp - rlp) * m
    return [(lambda: ref.shaped_rewards(score, lp, rlp, mask, -beta), "The KL penalty has the wrong sign: the reward "
                                                                      "is MINUS beta * (logprobs - ref_logprobs)."),
            (lambda: kl + score[:, None].to(lp.dtype) * m, "The score is added to every response token; it belongs on "
                                                           "each row's LAST response token only."),
            (lambda: at(first, kl), "The score is on the first response token; it belongs on the last one."),
            (lambda: at(torch.full_like(last, mask.shape[1] - 1), kl),
             "The score is on the last position of the row, which may be padding: put it on the last TRUE position of "
             "the response mask."),
            (lambda: at(last, -beta * (lp - rlp)), "The KL penalty is applied outside the response too: zero it where "
                                                   "the response mask is False.")]


@graded("shaped_rewards", points=7, hint="-beta * (logprobs - ref_logprobs) where the mask is True, 0 elsewhere; add "
                                         "`score` at each row's last True position.")
def test_shaped_rewards_random(student):
    gen = generator(104)
    for side, beta, dtype in (("right", 0.1, torch.float32), ("left", 0.05, torch.float32), ("right", 1.0, torch.float64)):
        mask = random_segments(gen, 5, 9, side)
        score = randn(gen, 5, dtype=dtype, scale=2.0)
        lp, rlp = -randn(gen, 5, 9, dtype=dtype).abs(), -randn(gen, 5, 9, dtype=dtype).abs()
        expect_close(student.shaped_rewards(score, lp, rlp, mask, beta), ref.shaped_rewards(score, lp, rlp, mask, beta),
                     f"shaped_rewards with {side} padding, beta={beta}, {dtype}",
                     hint="KL penalty on response tokens, score on the last response token.",
                     mistakes=_shaped_mistakes(score, lp, rlp, mask, beta))


# -- gae -------------------------------------------------------------------------------------------

@visible
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


@visible
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


@visible
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


def _gae_contiguous(rewards, values, gamma, lam, mask, bootstrap=True, zero=True):
    """The textbook loop for contiguous masks; with bootstrap=False, V_{t+1} is dropped (a mistake)."""
    m = mask.to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    carry = torch.zeros_like(rewards[:, 0])
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] * m[:, t + 1] if t + 1 < length else torch.zeros_like(carry)
        delta = rewards[:, t] + (gamma * next_value if bootstrap else 0) - values[:, t]
        carry = delta + gamma * lam * carry
        advantages[:, t] = carry
    if zero:
        advantages = advantages * m
    return advantages, (advantages + values) * m


def _gae_mistakes(rewards, values, gamma, lam, mask):
    return [(lambda: _gae_contiguous(rewards, values, gamma, lam, mask, bootstrap=False)[0],
             "The bootstrap is missing: the TD error is r_t + gamma * V_{t+1} - V_t (with V = 0 after the last step)."),
            (lambda: ref.gae(rewards, values, gamma, lam, None)[0] * mask,
             "Padding leaks into the advantages: positions where the mask is False are not steps; the last response "
             "token must bootstrap from 0, not from the value or reward of the padding after it."),
            (lambda: ref.gae(rewards, values, gamma, 1.0, mask)[0], "lam is ignored (this is lam=1)."),
            (lambda: ref.gae(rewards, values, 1.0, lam, mask)[0], "gamma is ignored (this is gamma=1)."),
            (lambda: ref.gae(rewards, values, gamma * lam, 1.0, mask)[0] if lam != 1 else None,
             "gamma * lam discounts the TD errors, but only gamma discounts V_{t+1} inside each TD error.")]


@graded("gae", points=6, hint="Go backwards: delta_t = r_t + gamma * V_{t+1} - V_t; A_t = delta_t + gamma * lam * "
                              "A_{t+1}; after a row's last step V and A are 0; outside the mask both outputs are 0.")
def test_gae_random_with_padding(student):
    gen = generator(105)
    for side, gamma, lam, dtype in (("right", 1.0, 0.95, torch.float32), ("left", 0.9, 0.8, torch.float32),
                                    ("right", 0.99, 0.0, torch.float64), ("left", 1.0, 1.0, torch.float64),
                                    ("right", 0.5, 0.5, torch.float32)):
        mask = random_segments(gen, 6, 10, side)
        # Rewards and values at masked positions are junk on purpose: they must not leak into the answer.
        rewards, values = randn(gen, 6, 10, dtype=dtype), randn(gen, 6, 10, dtype=dtype)
        expected_adv, expected_ret = ref.gae(rewards, values, gamma, lam, mask)
        result = tuple_of(student.gae(rewards, values, gamma=gamma, lam=lam, mask=mask), 2, "gae(...)",
                          hint="Return (advantages, returns).")
        what = f"with {side} padding, gamma={gamma}, lam={lam}, {dtype}"
        expect_close(result[0], expected_adv, f"advantages {what}",
                     hint="Go backwards over each row's steps: delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t "
                          "+ gamma * lam * A_{t+1}, with V_{t+1} = 0 and A_{t+1} = 0 after the row's last step.",
                     mistakes=[m for m in _gae_mistakes(rewards, values, gamma, lam, mask)], check_dtype=True)
        expect_close(result[1], expected_ret, f"returns {what}",
                     hint="returns = advantages + values on the steps, 0 elsewhere.",
                     mistakes=[(expected_adv, "These returns are the advantages alone: add the values back, "
                                              "returns = advantages + values on the steps (0 elsewhere).")])


@graded("gae", points=4, hint="Without a mask every position is a step; V after the last position is 0. Check the "
                              "defaults gamma=1.0, lam=0.95.")
def test_gae_defaults_and_no_mask(student):
    gen = generator(106)
    rewards, values = randn(gen, 4, 7), randn(gen, 4, 7)
    advantages, returns = tuple_of(student.gae(rewards, values), 2, "gae(rewards, values)", hint="Return (advantages, returns).")
    expected_adv, expected_ret = ref.gae(rewards, values)
    expect_close(advantages, expected_adv, "advantages of gae(rewards, values) with the defaults",
                 hint="Defaults: gamma=1.0, lam=0.95, every position a step.",
                 mistakes=_gae_mistakes(rewards, values, 1.0, 0.95, torch.ones(4, 7, dtype=torch.bool)))
    expect_close(returns, expected_ret, "returns of gae(rewards, values)", hint="returns = advantages + values.",
                 mistakes=[(expected_adv, "These returns are the advantages alone: add the values back, "
                                          "returns = advantages + values.")])
    one_step = tuple_of(student.gae(rewards[:, :1], values[:, :1], gamma=0.5, lam=0.5), 2, "gae on one step",
                        hint="Return (advantages, returns).")
    expect_close(one_step[0], rewards[:, :1] - values[:, :1], "advantages of a single step (r - V: nothing follows)",
                 hint="After the last step the value is 0.")


# -- ppo_clip_loss ---------------------------------------------------------------------------------

@visible
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


def _ppo_mistakes(lp, old, adv, eps, mask):
    ratio = torch.exp(lp - old)
    m = mask.to(lp.dtype)

    def mean(x):
        return (x * m).sum() / m.sum()

    return [(lambda: mean(-torch.maximum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)),
             "max instead of min: PPO keeps the smaller (pessimistic) of the clipped and unclipped objectives."),
            (lambda: mean(-torch.minimum(ratio * adv, ratio * adv.clamp(-eps, eps))),
             "The advantage is clipped; clip the probability RATIO to [1 - eps, 1 + eps]."),
            (lambda: mean(torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)),
             "The sign is flipped: the loss is MINUS the clipped objective (we minimise it)."),
            (lambda: (-torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)).mean(),
             "Padding is counted: average over the tokens where the mask is True only."),
            (lambda: mean(-ratio.clamp(1 - eps, 1 + eps) * adv),
             "Only the clipped term is used: take the min of the clipped and the unclipped objective."),
            (lambda: mean(-torch.minimum(torch.exp(old - lp) * adv, torch.exp(old - lp).clamp(1 - eps, 1 + eps) * adv)),
             "The ratio is upside down: ratio = pi_new / pi_old = exp(logprobs - old_logprobs).")]


@graded("ppo_clip_loss", points=8, hint="ratio = exp(logprobs - old_logprobs); loss per token -min(ratio * A, "
                                        "clamp(ratio, 1 - eps, 1 + eps) * A); mean over the tokens where mask is True.")
def test_ppo_clip_loss_random(student):
    gen = generator(107)
    for side, eps, dtype in (("right", 0.2, torch.float32), ("left", 0.1, torch.float64), ("right", 0.3, torch.float32)):
        mask = random_segments(gen, 4, 12, side)
        old = -randn(gen, 4, 12, dtype=dtype).abs()
        lp = old + randn(gen, 4, 12, dtype=dtype, scale=0.4)  # ratios on both sides of the clip range
        adv = randn(gen, 4, 12, dtype=dtype)
        expect_close(student.ppo_clip_loss(lp, old, adv, clip_eps=eps, mask=mask),
                     ref.ppo_clip_loss(lp, old, adv, eps, mask),
                     f"ppo_clip_loss with {side} padding, clip_eps={eps}, {dtype}",
                     hint="Per token: -min(ratio * A, clamp(ratio, 1 - eps, 1 + eps) * A) with ratio = exp(logprobs - "
                          "old_logprobs); then the mean over the tokens where the mask is True.",
                     mistakes=_ppo_mistakes(lp, old, adv, eps, mask))
    lp, old, adv = randn(gen, 3, 5, scale=0.3), randn(gen, 3, 5, scale=0.3), randn(gen, 3, 5)
    expect_close(student.ppo_clip_loss(lp, old, adv), ref.ppo_clip_loss(lp, old, adv),
                 "ppo_clip_loss(logprobs, old_logprobs, advantages) with the defaults (clip_eps=0.2, no mask)",
                 hint="Without a mask, average over every token; the default clip_eps is 0.2.")


# -- ppo_step: on a bandit, where the right answer is known -------------------------------------------------------
# Bandit (llmcourse.in_kernel) is built twice: in your kernel, where your ppo_step trains it, and here, where the
# same start (same seed) gives the log-probabilities and values that a fresh batch holds.

BANDIT_ACTIONS = torch.arange(16) % 4  # each of the 4 actions 4 times


def bandit_batch(actions: torch.Tensor, advantages: torch.Tensor, *, returns=None, old_values=None,
                 logprob_shift=None, seed: int = 0) -> dict:
    """A rollout batch of the bandit (prompt token 0, then the action), as ppo_step's contract describes it, for a
    policy still at its start (Bandit(seed=seed)): old_logprobs are the start's log-probabilities plus
    `logprob_shift` (0: the batch was sampled by this very policy)."""
    from llmcourse.in_kernel import Bandit

    start = Bandit(seed=seed)
    n = len(actions)
    ids = torch.stack([torch.zeros_like(actions), actions], 1)
    with torch.no_grad():
        out = start.policy(input_ids=ids, output_hidden_states=True)
        logprobs = torch.log_softmax(out.logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        values = start.value_head(out.hidden_states[-1][:, :-1])
    shift = torch.zeros(n, 1) if logprob_shift is None else logprob_shift.reshape(n, 1)
    return {"input_ids": ids, "attention_mask": torch.ones(n, 2, dtype=torch.bool),
            "mask": torch.ones(n, 1, dtype=torch.bool), "old_logprobs": logprobs + shift,
            "old_values": values if old_values is None else old_values.reshape(n, 1),
            "advantages": advantages.reshape(n, 1).float(),
            "returns": (values if returns is None else returns.reshape(n, 1)).float()}


def losses_of(result, what: str) -> dict:
    keys = ("loss", "policy_loss", "value_loss", "entropy")
    expect(isinstance(result, dict), f"{what} should return a dict of mean losses, not {type(result).__name__}.",
           hint='Return {"loss": ..., "policy_loss": ..., "value_loss": ..., "entropy": ...} with Python floats.')
    missing = [k for k in keys if k not in result]
    expect(not missing, f"{what} returned a dict without {', '.join(repr(k) for k in missing)}.",
           hint='The dict has the keys "loss", "policy_loss", "value_loss" and "entropy".')
    for k in keys:
        expect(isinstance(result[k], (int, float)) and math.isfinite(result[k]),
               f"{what}[{k!r}] should be a finite Python float, not {result[k]!r}.",
               hint="Convert each loss with .item() before you add it up.")
    return {k: float(result[k]) for k in keys}


def changed(before: dict, after: dict, prefix: str) -> float:
    return max(float((after[k] - before[k]).abs().max()) for k in before if k.startswith(prefix))


@visible
@graded("ppo_step", points=3, hint="One update: whiten the advantages, then for each epoch and minibatch compute "
                                   "the PPO loss with your ppo_clip_loss and take an optimiser step.")
def test_ppo_step_moves_probability_to_the_best_action(student):
    bandit = student.construct("llmcourse.in_kernel.Bandit", seed=0)
    from llmcourse.in_kernel import Bandit

    rewards = Bandit(seed=0).rewards
    before = bandit.probabilities()
    for _ in range(10):
        # A fresh batch each time: old_logprobs are the current policy's (ratio 1 at the start of the update).
        now = torch.log(bandit.probabilities())
        batch = bandit_batch(BANDIT_ACTIONS, rewards[BANDIT_ACTIONS] - rewards.mean(), returns=rewards[BANDIT_ACTIONS])
        batch["old_logprobs"] = now[BANDIT_ACTIONS].reshape(-1, 1)
        result = losses_of(student.ppo_step(bandit.policy, bandit.value_head, bandit.optimizer, batch),
                           "ppo_step(policy, value_head, optimizer, batch)")
    after = bandit.probabilities()
    expect(float(after[1]) > 0.6 and float(after[1]) > float(before[1]) and float(after[3]) < float(before[3]),
           f"On a bandit whose best action is 1 (reward 1) and worst is 3 (reward -0.5), ten calls of ppo_step with "
           f"advantage = reward - mean reward moved the action probabilities from "
           f"{[round(p, 3) for p in before.tolist()]} to {[round(p, 3) for p in after.tolist()]}: action 1 should "
           f"rise above 0.6 and action 3 fall.",
           hint="Minimise the loss (optimizer.zero_grad(), loss.backward(), optimizer.step() for each minibatch), "
                "with policy_loss = ppo_clip_loss(logprobs, old_logprobs, whitened advantages, clip_eps, mask).")
    del result


@visible
@graded("ppo_step", points=3, hint="The critic reads hidden_states[-1][:, :-1].detach(): without .detach() the "
                                   "value loss trains the policy too. And the policy's part is your ppo_clip_loss, "
                                   "which has no gradient once a token's ratio is past the clip in the direction of "
                                   "its advantage.")
def test_ppo_step_stops_at_the_clip_boundary(student):
    from llmcourse.in_kernel import Bandit

    rewards = Bandit(seed=0).rewards
    advantages = rewards[BANDIT_ACTIONS] - rewards.mean()
    # ratio e^0.5 = 1.65 where the (whitened) advantage is positive, e^-0.5 = 0.61 where it is negative: every token
    # is past 1 +- clip_eps on the side its advantage pushes towards, so the clipped objective is flat there.
    shift = torch.where(advantages > 0, -0.5, 0.5)
    batch = bandit_batch(BANDIT_ACTIONS, advantages, returns=torch.randn(16, generator=generator(21)), logprob_shift=shift)
    bandit = student.construct("llmcourse.in_kernel.Bandit", seed=0)
    before = bandit.state()
    losses_of(student.ppo_step(bandit.policy, bandit.value_head, bandit.optimizer, batch, ent_coef=0.0, epochs=2,
                               minibatch_size=4), "ppo_step(..., ent_coef=0.0)")
    after = bandit.state()
    moved = changed(before, after, "policy.")
    expect(moved < 1e-6,
           f"Every token's probability ratio was already past the clip range on the side of its advantage, and "
           f"ent_coef was 0, so nothing should move the policy; but its parameters changed by up to {moved:.2g}.",
           hint="Two places to look: the critic must read hidden_states[-1][:, :-1].detach() (otherwise the value "
                "loss trains the policy), and the policy loss must be your ppo_clip_loss with the batch's "
                "old_logprobs and clip_eps.")
    expect(changed(before, after, "value_head.") > 1e-6, "The critic did not move: its value loss was not minimised.",
           hint="loss = policy_loss + vf_coef * value_loss - ent_coef * entropy, then backward and step.")
    fresh = student.construct("llmcourse.in_kernel.Bandit", seed=0)
    start = fresh.state()
    student.ppo_step(fresh.policy, fresh.value_head, fresh.optimizer, bandit_batch(BANDIT_ACTIONS, advantages),
                     ent_coef=0.0)
    expect(changed(start, fresh.state(), "policy.") > 1e-6,
           "With old_logprobs equal to the policy's own (ratio 1, inside the clip range), ppo_step did not move the "
           "policy at all.", hint="Take an optimiser step after loss.backward() for every minibatch.")


@visible
@graded("ppo_step", points=2, hint="Whiten the advantages once over the whole batch: (A - mean) / (std + 1e-8) over "
                                   "the positions where mask is True. Then the update does not depend on the "
                                   "advantages' scale or offset.")
def test_ppo_step_whitens_the_advantages(student):
    advantages = torch.randn(16, generator=generator(22))
    states = []
    for scale, offset in ((1.0, 0.0), (3.0, 2.0)):
        bandit = student.construct("llmcourse.in_kernel.Bandit", seed=0)
        start = bandit.state()
        student.ppo_step(bandit.policy, bandit.value_head, bandit.optimizer,
                         bandit_batch(BANDIT_ACTIONS, scale * advantages + offset), epochs=1, minibatch_size=16)
        states.append(bandit.state())
    expect(changed(start, states[0], "policy.") > 1e-6, "ppo_step did not move the policy.",
           hint="Take an optimiser step after loss.backward() for every minibatch.")
    difference = changed(states[0], states[1], "policy.")
    expect(difference < 1e-5,
           f"One update with advantages A and one with 3 * A + 2 (same bandit, same start, one minibatch) left "
           f"policies that differ by up to {difference:.2g}: after whitening they should be the same update.",
           hint="Whiten the advantages before the epochs: subtract their mean and divide by their standard deviation "
                "(+ 1e-8), both taken over the positions where mask is True.")


@visible
@graded("ppo_step", points=2, hint="value_loss is the masked mean of max((V - R)^2, (V_clip - R)^2) with V_clip = "
                                   "old_values + clamp(V - old_values, -clip_eps, clip_eps); entropy is the masked "
                                   "mean of -sum(p * log p) over the vocabulary.")
def test_ppo_step_clips_the_value_loss(student):
    from llmcourse.in_kernel import Bandit

    start = Bandit(seed=0)
    now = bandit_batch(BANDIT_ACTIONS, torch.zeros(16))["old_values"].reshape(-1)  # the critic's values at the start
    # old_values 1 below the current values, returns 1 above: (V - R)^2 = 1, and V_clip = V - 0.8, (V_clip - R)^2 = 3.24.
    batch = bandit_batch(BANDIT_ACTIONS, torch.randn(16, generator=generator(23)), old_values=now - 1.0,
                         returns=now + 1.0)
    bandit = student.construct("llmcourse.in_kernel.Bandit", seed=0)
    before = bandit.state()
    result = losses_of(student.ppo_step(bandit.policy, bandit.value_head, bandit.optimizer, batch, epochs=1,
                                        minibatch_size=16), "ppo_step(...)")
    p = start.probabilities()
    entropy = float(-(p * p.log()).sum())
    expect(abs(result["value_loss"] - 3.24) < 1e-4,
           f"value_loss is {result['value_loss']:.4f}; with values 1 above old_values and returns 1 above the values, "
           f"it should be max((V - R)^2, (V_clip - R)^2) = max(1, 1.8^2) = 3.24 (clip_eps = 0.2).",
           hint="V_clip = old_values + clamp(V - old_values, -clip_eps, clip_eps); take the LARGER of the two squared "
                "errors per token, then the masked mean.")
    expect(changed(before, bandit.state(), "value_head.") < 1e-6,
           "The critic moved, but here the larger squared error is the clipped one, which does not depend on the "
           "critic: its gradient is 0.",
           hint="Take the max of (V - R)^2 and (V_clip - R)^2, with V_clip built from clamp (whose gradient is 0 past "
                "the clip range).")
    expect(abs(result["entropy"] - entropy) < 1e-4,
           f"entropy is {result['entropy']:.4f}, but the policy's distribution over the 4 actions has entropy "
           f"{entropy:.4f} nats.", hint="entropy: -sum over the vocabulary of p * log p at each position, then the "
                                        "masked mean over positions.")
    # ratio 1 everywhere and whitened advantages of mean 0: the policy loss is 0.
    expected = result["policy_loss"] + 0.5 * 3.24 - 0.01 * entropy
    expect(abs(result["policy_loss"]) < 1e-5 and abs(result["loss"] - expected) < 1e-4,
           f"With ratio 1 and whitened advantages (mean 0), policy_loss should be 0 and loss = policy_loss + 0.5 * "
           f"value_loss - 0.01 * entropy = {expected:.4f}; got policy_loss {result['policy_loss']:.4g}, loss "
           f"{result['loss']:.4f}.", hint="loss = policy_loss + vf_coef * value_loss - ent_coef * entropy, with the "
                                          "whitened advantages in policy_loss.")


def _ppo_step_variant(policy, value_head, optimizer, batch, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01, epochs=4,
                      minibatch_size=8, whiten=True, clip_values=True, value_max=True, entropy_sign=1.0,
                      detach=True, average=True):
    """The reference update, or one of the known mistakes; one minibatch per epoch (no shuffling to match)."""
    mask = batch["mask"].bool()
    advantages = ref.whiten(batch["advantages"], mask) if whiten else batch["advantages"]
    sums = {"loss": 0.0, "policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0}
    steps = 0
    for _ in range(epochs):
        for start in range(0, len(mask), minibatch_size):
            rows = torch.arange(len(mask))[start:start + minibatch_size]
            m = mask[rows]
            out = policy(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows].long(),
                         output_hidden_states=True)
            logits = out.logits[:, :-1]
            logprobs = ref.gather_logprobs(logits, batch["input_ids"][rows, 1:])
            hidden = out.hidden_states[-1][:, :-1]
            values = value_head(hidden.detach() if detach else hidden)
            policy_loss = ref.ppo_clip_loss(logprobs, batch["old_logprobs"][rows], advantages[rows], clip_eps, m)
            old_values, returns = batch["old_values"][rows], batch["returns"][rows]
            clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
            pick = torch.maximum if value_max else torch.minimum
            per_token = pick((values - returns) ** 2, (clipped - returns) ** 2) if clip_values else (values - returns) ** 2
            value_loss = ref.masked_mean(per_token, m)
            logp = torch.log_softmax(logits, -1)
            entropy = ref.masked_mean(-(logp.exp() * logp).sum(-1), m)
            loss = policy_loss + vf_coef * value_loss - entropy_sign * ent_coef * entropy
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for key, value in (("loss", loss), ("policy_loss", policy_loss), ("value_loss", value_loss),
                               ("entropy", entropy)):
                sums[key] += float(value.detach())
            steps += 1
    return {k: v / (steps if average else 1) for k, v in sums.items()}


PPO_STEP_MISTAKES = (
    (dict(whiten=False), "The advantages are not whitened: before the epochs, subtract their mean and divide by their "
                         "standard deviation (+ 1e-8) over the mask's positions."),
    (dict(clip_values=False), "The value loss is not clipped: use max((V - R)^2, (V_clip - R)^2) with V_clip = "
                              "old_values + clamp(V - old_values, -clip_eps, clip_eps)."),
    (dict(value_max=False), "The value loss takes the smaller of the two squared errors: PPO takes the larger "
                            "(max), the pessimistic one."),
    (dict(entropy_sign=-1.0), "The entropy bonus has the wrong sign: SUBTRACT ent_coef * entropy from the loss (higher "
                              "entropy must lower the loss)."),
    (dict(entropy_sign=0.0), "The entropy bonus is missing: loss = policy_loss + vf_coef * value_loss - ent_coef * "
                             "entropy."),
    (dict(detach=False), "The critic's input is not detached: use hidden_states[-1][:, :-1].detach(), so that the "
                         "value loss trains the critic only."),
    (dict(average=False), "The returned losses are summed over the updates: return their mean over all minibatch "
                          "updates."),
)


def _flat(state: dict) -> torch.Tensor:
    return torch.cat([state[k].reshape(-1).double() for k in sorted(state)])


@graded("ppo_step", points=5, hint="Whiten once over the batch; per minibatch: ppo_clip_loss with the whitened "
                                   "advantages, the clipped value loss (max of the two squared errors), the masked "
                                   "mean entropy; loss = policy_loss + vf_coef * value_loss - ent_coef * entropy.")
def test_ppo_step_matches_the_reference(student):
    from llmcourse.in_kernel import Bandit

    gen = generator(110)
    for settings in (dict(epochs=2, minibatch_size=12),
                     dict(clip_eps=0.1, vf_coef=1.0, ent_coef=0.1, epochs=3, minibatch_size=16)):
        actions = torch.randint(0, 4, (12,), generator=gen)
        batch = bandit_batch(actions, randn(gen, 12) * 2 + 1, returns=randn(gen, 12),
                             old_values=randn(gen, 12, scale=0.3), logprob_shift=randn(gen, 12, scale=0.3))
        bandit = student.construct("llmcourse.in_kernel.Bandit", seed=3, lr=0.2)
        result = losses_of(student.ppo_step(bandit.policy, bandit.value_head, bandit.optimizer, batch, **settings),
                           "ppo_step(...)")
        theirs = _flat(bandit.state())

        def replay(**mistake):
            local = Bandit(seed=3, lr=0.2)
            losses = _ppo_step_variant(local.policy, local.value_head, local.optimizer, batch, **settings, **mistake)
            return _flat(local.state()), torch.tensor([losses[k] for k in ("loss", "policy_loss", "value_loss",
                                                                            "entropy")], dtype=torch.float64)

        expected_state, expected_losses = replay()
        what = ", ".join(f"{k}={v}" for k, v in settings.items())
        expect_close(theirs, expected_state, f"the policy's and critic's parameters after ppo_step({what}) on a "
                                             f"batch of 12 (one minibatch per epoch)", rtol=1e-4, atol=1e-5,
                     mistakes=[(lambda m=m: replay(**m)[0], hint) for m, hint in PPO_STEP_MISTAKES])
        got = torch.tensor([result[k] for k in ("loss", "policy_loss", "value_loss", "entropy")], dtype=torch.float64)
        expect_close(got, expected_losses, f"the returned loss, policy_loss, value_loss and entropy ({what})",
                     rtol=1e-4, atol=1e-5, hint="Each is the mean of its value over all the minibatch updates.",
                     mistakes=[(lambda m=m: replay(**m)[1], hint) for m, hint in PPO_STEP_MISTAKES])


@graded("ppo_step", points=1, hint="For each of the epochs, shuffle the B rows and take one optimiser step per "
                                   "minibatch of minibatch_size rows (the last one may be smaller).")
def test_ppo_step_takes_one_step_per_minibatch(student):
    for n, epochs, size in ((10, 3, 4), (16, 1, 8), (6, 2, 8)):
        bandit = student.construct("llmcourse.in_kernel.Bandit", seed=0, optimizer="adam", lr=0.01)
        actions = torch.arange(n) % 4
        student.ppo_step(bandit.policy, bandit.value_head, bandit.optimizer,
                         bandit_batch(actions, torch.randn(n, generator=generator(n))), epochs=epochs,
                         minibatch_size=size)
        steps = bandit.optimizer_steps()
        expected = epochs * math.ceil(n / size)
        expect(steps == expected, f"ppo_step on {n} rows with epochs={epochs}, minibatch_size={size} took {steps} "
                                  f"optimiser steps; {epochs} x ceil({n} / {size}) = {expected} expected.",
               hint="Loop over the epochs; in each, cut the shuffled rows into minibatches of minibatch_size (the last "
                    "may be smaller) and step once per minibatch.")


# -- ppo_train: the loop, on the bandit and on course-lm --------------------------------------------------------

def bandit_run(student, beta: float, seed: int = 0, **kwargs):
    bandit = student.construct("llmcourse.in_kernel.Bandit", batch_size=32, seed=seed)
    history = student.ppo_train(bandit.policy, bandit.reference, bandit.sample, bandit.score, 30, beta=beta, lr=0.02,
                                value_lr=0.05, minibatch_size=16, **kwargs)
    return bandit, history


HISTORY_KEYS = ("score", "kl", "loss", "policy_loss", "value_loss", "entropy", "eval_iterations", "eval")


def history_of(history, iterations: int) -> dict:
    expect(isinstance(history, dict), f"ppo_train should return the history, a dict, not {type(history).__name__}.",
           hint=f"Return a dict with the lists {', '.join(HISTORY_KEYS)}.")
    missing = [k for k in HISTORY_KEYS if k not in history]
    expect(not missing, f"The history has no {', '.join(repr(k) for k in missing)}.",
           hint=f"Return a dict with the lists {', '.join(HISTORY_KEYS)}.")
    for key in HISTORY_KEYS[:6]:
        expect(len(history[key]) == iterations, f"history[{key!r}] has {len(history[key])} entries after "
                                                 f"{iterations} iterations; one per iteration expected.",
               hint="Append one value per iteration to score, kl and each of ppo_step's losses.")
    return history


@visible
@graded("ppo_train", points=3, hint="Each iteration: sample_fn, score_fn, the old log-probs and values without "
                                    "gradients, shaped_rewards, gae, then ppo_step; with beta=0 the bandit's policy "
                                    "should end on its best action.")
def test_ppo_train_finds_the_best_action(student):
    bandit, history = bandit_run(student, beta=0.0, eval_fn=None)
    history_of(history, 30)
    p = bandit.probabilities()
    expect(float(p[1]) > 0.95, f"After 30 iterations of ppo_train with beta=0 on a bandit whose best action is 1, the "
                               f"policy's probabilities are {[round(x, 3) for x in p.tolist()]}: above 0.95 on action 1 "
                               f"expected.",
           hint="Check the order of each iteration: sample, score, old log-probs and values (no gradient), "
                "shaped_rewards(score, ...), gae(rewards, old_values, ...), ppo_step.")


@visible
@graded("ppo_train", points=2, hint="The KL penalty: shaped_rewards(score, old_logprobs, ref_logprobs, mask, beta) with "
                                    "the REFERENCE's log-probabilities, which pulls the policy towards "
                                    "pi_ref * exp(r / beta) / Z instead of the best action alone.")
def test_ppo_train_with_a_kl_penalty_approaches_the_known_optimum(student):
    from llmcourse.in_kernel import Bandit

    local = Bandit(batch_size=32)
    start = local.probabilities(local.reference)
    target = start * torch.exp(local.rewards / 0.5)
    target = target / target.sum()
    bandit, history = bandit_run(student, beta=0.5)
    history_of(history, 30)
    p = bandit.probabilities()
    distance = 0.5 * float((p - target).abs().sum())
    expect(distance < 0.15, f"With beta=0.5 the best policy of this bandit is pi_ref * exp(r / beta) / Z = "
                            f"{[round(x, 3) for x in target.tolist()]}; after 30 iterations yours is "
                            f"{[round(x, 3) for x in p.tolist()]} (total variation distance {distance:.2f}, at most "
                            f"0.15 expected).",
           hint="Pass beta to shaped_rewards, with the reference model's log-probabilities as ref_logprobs (the "
                "policy's own would make the penalty 0).")


@visible
@graded("ppo_train", points=2, hint="Call eval_fn(policy) before the first iteration (recorded as iteration 0) and "
                                    "after every iteration whose number, counted from 1, is a multiple of eval_every.")
def test_ppo_train_evaluates_every_few_iterations(student):
    bandit = student.construct("llmcourse.in_kernel.Bandit", batch_size=8, seed=1)
    history = history_of(student.ppo_train(bandit.policy, bandit.reference, bandit.sample, bandit.score, 10, beta=0.1,
                                           lr=0.02, eval_fn=bandit.evaluate, eval_every=4, minibatch_size=8), 10)
    expect(list(history["eval_iterations"]) == [0, 4, 8],
           f"With 10 iterations and eval_every=4, history['eval_iterations'] should be [0, 4, 8], not "
           f"{list(history['eval_iterations'])}.")
    expect(bandit.evaluations == 3 and len(history["eval"]) == 3,
           f"eval_fn was called {bandit.evaluations} times and history['eval'] has {len(history['eval'])} entries; 3 "
           f"each expected (iterations 0, 4 and 8).", hint="Store exactly what eval_fn returned, once per call.")
    expect(all(isinstance(x, float) and 0 <= x <= 1 for x in history["eval"]),
           "history['eval'] should hold what eval_fn returned (here the probability of the best action).")


@graded("ppo_train", points=2, hint="history['kl'] is, per iteration, the mean over the responses of the summed "
                                    "log pi_old - log pi_ref over each response's tokens; at the first iteration "
                                    "the policy is the reference, so it is 0.")
def test_ppo_train_history(student):
    bandit, history = bandit_run(student, beta=0.0, eval_fn=None)
    history = history_of(history, 30)
    expect(abs(history["kl"][0]) < 1e-6, f"history['kl'][0] is {history['kl'][0]:.4g}, but at the first iteration the "
                                         f"policy still equals the reference: every log-ratio is 0.",
           hint="Compute the KL from the old log-probabilities (before the update) and the reference's.")
    expect(history["kl"][-1] > 0.5, f"With beta=0 the policy moved far from the reference, but history['kl'][-1] is "
                                    f"{history['kl'][-1]:.3f}.",
           hint="history['kl']: the mean over responses of the SUM over each response's tokens of log pi_old - log "
                "pi_ref (mask the prompt and padding).")
    expect(list(history["eval"]) == [] and list(history["eval_iterations"]) == [],
           "Without eval_fn, history['eval'] and history['eval_iterations'] should stay empty.")
    expect(0.8 < history["score"][-1] <= 1.0, f"history['score'][-1] is {history['score'][-1]:.3f}; with the policy on "
                                               f"action 1 (reward 1) the mean score of the batch should be close to 1.",
           hint="history['score']: the mean of score_fn(rollout) over the batch, per iteration.")


# -- the PPO-trained policy, judged by the grader's own models --------------------------------------------------

N_JUDGE_PROMPTS = 80
MAX_NEW_TOKENS = 40


JUDGE_FILE = Path(__file__).with_name("rlhf_judge.pt")


@lru_cache(maxsize=1)
def judge():
    """The grader's judge: course-lm as the reference, and its own reward model.

    The reward model is a linear probe on the reference's mean hidden state over the response, fitted to
    the training pairs (100% on held-out pairs); the baseline is course-lm's own greedy answers, judged. Both are
    deterministic functions of course-lm, the preference data and the code below, so they are fitted once and
    stored in JUDGE_FILE with a digest of those inputs (`python -m grader.checks.rlhf` stores them again). Where
    the stored judge is missing or was made from other inputs (retrained models, a hub model in place of
    course-lm), it is fitted here: about 10 CPU seconds per grading process. Students never see it.
    """
    from llmcourse.assets import load_model, load_tokenizer

    tok = load_tokenizer("course-lm")
    reference = load_model("course-lm").eval()
    stored = stored_judge()
    if stored is not None:
        return tok, reference, stored["probe"], stored["prompts"], stored["baseline"]
    probe, prompts, baseline = fit_judge(tok, reference)
    return tok, reference, probe, prompts, baseline


def fit_judge(tok, reference) -> tuple[torch.Tensor, list[str], dict]:
    """The judge's probe, its prompts and course-lm's own judged answers (the baseline), fitted now."""
    from llmcourse.assets import load_task

    data = load_task("preferences")
    train = data["train"].select(range(400))
    chosen = _features(reference, tok, train["prompt"], train["chosen"])
    rejected = _features(reference, tok, train["prompt"], train["rejected"])
    gen = torch.Generator().manual_seed(0)
    w = (torch.randn(chosen.shape[1], generator=gen) * 0.01).requires_grad_()
    optimizer = torch.optim.Adam([w], lr=0.05)
    for _ in range(200):
        loss = -F.logsigmoid((chosen - rejected) @ w).mean() + 1e-3 * (w ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    prompts = list(dict.fromkeys(data["test"]["prompt"]))[:N_JUDGE_PROMPTS]
    probe = w.detach()
    return probe, prompts, _judge_samples(reference, reference, tok, probe, prompts)


def judge_inputs() -> str | None:
    """A digest of what the judge is fitted from: course-lm's files and the preference data (by their hashes in
    assets/manifest.json, which loading them verifies), the code that fits and samples it, and torch's version.
    None when a hub model stands in for course-lm (LLMCOURSE_HUB): its judge is always fitted afresh."""
    import hashlib
    import inspect
    import json

    from llmcourse import rlhf_tools
    from llmcourse.assets import assets_dir, hub_model_for

    if hub_model_for("course-lm"):
        return None
    manifest = json.loads((assets_dir() / "manifest.json").read_text())["sha256"]
    digest = hashlib.sha256(f"torch {torch.__version__}; prompts {N_JUDGE_PROMPTS}; tokens {MAX_NEW_TOKENS};".encode())
    for name in sorted(n for n in manifest if n.startswith(("models/course-lm/", "data/preferences/"))):
        digest.update(f"{name} {manifest[name]};".encode())
    for function in (fit_judge, _features, _judge_samples, rlhf_tools.rollout, rlhf_tools.pad_batch):
        digest.update(inspect.getsource(function).encode())
    return digest.hexdigest()


def stored_judge() -> dict | None:
    """The judge in JUDGE_FILE ({"probe", "prompts", "baseline"}) when it was fitted from today's inputs; else None."""
    inputs = judge_inputs()
    if inputs is None or not JUDGE_FILE.is_file():
        return None
    try:
        stored = torch.load(JUDGE_FILE, weights_only=True)
    except Exception:  # damaged: fitted afresh
        return None
    return stored if isinstance(stored, dict) and stored.get("inputs") == inputs else None


def store_judge() -> Path:
    """Fit the judge and store it in JUDGE_FILE with the digest of its inputs."""
    from llmcourse.assets import load_model, load_tokenizer

    inputs = judge_inputs()
    if inputs is None:
        raise SystemExit("LLMCOURSE_HUB names a hub model for course-lm: the judge of a hub model is not stored.")
    probe, prompts, baseline = fit_judge(load_tokenizer("course-lm"), load_model("course-lm").eval())
    torch.save({"inputs": inputs, "probe": probe, "prompts": prompts, "baseline": baseline}, JUDGE_FILE)
    return JUDGE_FILE


def _features(model, tok, prompts, responses) -> torch.Tensor:
    """Mean last hidden state over each response's tokens (end token included)."""
    from llmcourse.rlhf_tools import pad_batch

    feats = []
    for i in range(0, len(prompts), 64):
        seqs, masks = [], []
        for p, r in zip(prompts[i:i + 64], responses[i:i + 64]):
            p_ids = tok(p, add_special_tokens=False).input_ids
            r_ids = r if isinstance(r, list) else tok(r, add_special_tokens=False).input_ids + [tok.eos_token_id]
            seqs.append(p_ids + r_ids)
            masks.append([0] * len(p_ids) + [1] * len(r_ids))
        ids, attention = pad_batch(seqs, tok.pad_token_id)
        response, _ = pad_batch(masks, 0)
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=attention.long(), output_hidden_states=True).hidden_states[-1]
        m = response.bool().unsqueeze(-1)
        feats.append((hidden * m).sum(1) / m.sum(1).clamp(min=1))
    return torch.cat(feats)


def _judge_samples(policy, reference, tok, probe, prompts) -> dict:
    """Greedy responses of `policy`: the probe's scores, and the reference's per-token log-likelihood of them."""
    from llmcourse.rlhf_tools import rollout

    batch = rollout(policy, tok, prompts, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    responses = []
    for row, mask in zip(batch.input_ids, batch.response_mask):
        responses.append(row[mask].tolist() or [tok.eos_token_id])
    scores = _features(reference, tok, prompts, responses) @ probe
    with torch.no_grad():
        logits = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long()).logits
    lp = torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    mask = batch.response_mask[:, 1:]
    return {"scores": scores, "kind": float((scores > 0).double().mean()),
            "ref_logprob_per_token": float((lp * mask).sum() / mask.sum()),
            "texts": batch.texts}


_JUDGED: dict[str, dict] = {}  # sha256 of a policy's weights -> the judge's samples of it (this process's)


def _judged(weights: dict[str, torch.Tensor]) -> dict:
    """The judge's samples of the policy with these weights. The judge is deterministic (greedy answers, one
    thread), so its verdict on weights it has judged is read back by their digest, not computed again: a
    grading process meets the same trained policy again when a notebook is graded again, and the course's
    own tests score one notebook's policy for every variant of the exercises around it."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].detach().contiguous().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    key = digest.hexdigest()
    if key not in _JUDGED:
        tok, reference, probe, prompts, _ = judge()
        if len(_JUDGED) >= 8:
            _JUDGED.pop(next(iter(_JUDGED)))
        _JUDGED[key] = _judge_samples(course_lm_with(weights), reference, tok, probe, prompts)
    return _JUDGED[key]


def expect_kind_and_fluent(weights: dict[str, torch.Tensor], drift_hint: str, opposite_hint: str, weak_hint: str):
    """The judge's verdict on a trained course-lm: its greedy answers to held-out openings must still be text the
    reference finds plausible, and end kindly (by the grader's reward model) far more often than course-lm's."""
    tok, reference, probe, prompts, base = judge()
    result = _judged(weights)
    n = len(prompts)
    # Fluency first: a policy that drifted into broken text also loses its kind endings, and the drift is then
    # what to fix (a smaller learning rate), not the preference.
    floor = base["ref_logprob_per_token"] - 1.5
    expect(result["ref_logprob_per_token"] >= floor,
           f"Your policy's answers have become unlikely text for the reference model ({result['ref_logprob_per_token']:.2f} "
           f"nats per token; course-lm's own answers: {base['ref_logprob_per_token']:.2f}; at least {floor:.2f} expected): "
           f"the policy drifted too far (reward hacking).",
           hint=drift_hint)
    # Statistical bar: course-lm ends kindly in about 70% of these prompts. Demand a rate that a policy no better
    # than course-lm reaches with probability below 1e-4 (4 standard errors of a proportion of n answers), capped
    # at 90% so that a well-trained policy passes with room to spare.
    p0 = base["kind"]
    spread = 4 * (p0 * (1 - p0) / n) ** 0.5
    bar = min(0.9, p0 + spread)
    # Far fewer kind endings than course-lm's own: the policy was trained towards the rejected responses.
    worse = result["kind"] < p0 - spread
    expect(result["kind"] >= bar,
           f"The grader's reward model prefers only {result['kind']:.0%} of your policy's greedy answers to {n} held-out "
           f"prompts (course-lm itself: {p0:.0%}; at least {bar:.0%} expected).",
           hint=opposite_hint if worse else weak_hint)


@graded("ppo_train", points=3, requires_main=True,
        hint="The grader generates greedy answers with the weights of `ppo_policy` (the beta = 0.3 run) and judges "
             "them with its own reward model: more kind endings than course-lm, and still fluent text.")
def test_ppo_policy_greedy_answers_are_preferred_and_fluent(student):
    expect_kind_and_fluent(
        policy_weights(student, "ppo_policy"),
        drift_hint="Keep the KL penalty (beta = 0.3) and the notebook's learning rate: the policy drifted too far "
                   "from course-lm.",
        opposite_hint="Your policy ends kindly far less often than course-lm did before training: it was pushed "
                      "AWAY from the reward. Check the sign of the policy loss and that the score enters "
                      "shaped_rewards.",
        weak_hint="Run the training cell of section 8 with your ppo_train, and keep its policy in `ppo_policy`.")


if __name__ == "__main__":  # python -m grader.checks.rlhf: store the judge again (after the models or data change)
    print(f"stored the judge in {store_judge()}")
