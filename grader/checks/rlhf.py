"""The checks of 05_rlhf, visible and hidden, written here once.

A check marked `@visible` ships to students: `grader build` copies it, with the helpers and imports it
uses, into `llmcourse/checks/rlhf.py` (docstring: STUDENT_DOC below), where a student runs it before
grading. Visible checks use small worked examples and properties every right answer has, never the
reference. The other checks stay here and run only when a notebook is graded: they test the student's
code against `grader.reference.rlhf`.

Seeded random tensors with padding on either side, the edge cases the contract names (lam=0 and lam=1,
both sides of the clip, beta variations) and, for the trained policy, a judge that runs here: the
student's weights come back as data, and the grader generates, scores and compares with its own
models. Where a wrong answer matches a known mistake, the hint names it.
"""
from __future__ import annotations

import math
from functools import lru_cache

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

What they share with the graders' checks (random batches with padding on either side, a tiny Llama, the DPO
judge's data) lives in llmcourse.checking.shared.rlhf, so that both talk about your code in the same words.
"""

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


# -- dpo_loss --------------------------------------------------------------------------------------

@visible
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


@graded("dpo_loss", points=7, hint="chosen_rewards = beta * (policy_chosen - ref_chosen), the same for rejected; "
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
    # Well under half the pairs: the policy learned the opposite preference, the mark of swapped columns.
    opposite = ("Your policy learned the opposite preference: in most pairs it raised the log-probability of the "
                "rejected response more than that of the chosen one. Check that the trainer's `chosen` column holds "
                "the preferred responses and `rejected` the others: they look swapped.")
    expect(accuracy >= 0.75, f"On 24 held-out pairs, your policy raised the log-probability of the chosen response "
                             f"more than that of the rejected one in only {accuracy:.0%} of the pairs (at least 75% "
                             f"expected).",
           hint=opposite if accuracy <= 0.25 else
           "Check that `chosen` holds the preferred responses, and train for longer or with a larger learning rate.")


N_JUDGE_PROMPTS = 80
MAX_NEW_TOKENS = 40


@lru_cache(maxsize=1)
def judge():
    """The grader's judge: course-lm as the reference, and its own reward model.

    The reward model is a linear probe on the reference's mean hidden state over the response, fitted to
    the training pairs here (a few seconds; 100% on held-out pairs). Students never see it.
    """
    from llmcourse.assets import load_model, load_task, load_tokenizer

    tok = load_tokenizer("course-lm")
    reference = load_model("course-lm").eval()
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
    baseline = _judge_samples(reference, reference, tok, probe, prompts)
    return tok, reference, probe, prompts, baseline


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


@graded("dpo_training", points=10, hint="The grader generates greedy answers with your trained weights and judges them "
                                        "with its own reward model: more kind endings than course-lm, and still fluent "
                                        "text (not too far from the reference).")
def test_dpo_policy_greedy_answers_are_preferred_and_fluent(student):
    weights = policy_weights(student)
    tok, reference, probe, prompts, base = judge()
    result = _judge_samples(course_lm_with(weights), reference, tok, probe, prompts)
    n = len(prompts)
    # Fluency first: a policy that drifted into broken text also loses its kind endings, and the drift is then
    # what to fix (a smaller learning rate), not the preference.
    floor = base["ref_logprob_per_token"] - 1.5
    expect(result["ref_logprob_per_token"] >= floor,
           f"Your policy's answers have become unlikely text for the reference model ({result['ref_logprob_per_token']:.2f} "
           f"nats per token; course-lm's own answers: {base['ref_logprob_per_token']:.2f}; at least {floor:.2f} expected): "
           f"the policy drifted too far (reward hacking).",
           hint="Use a smaller learning rate, fewer steps, or a larger beta, which keeps the policy close to the reference.")
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
           hint="Your policy ends kindly far less often than course-lm did before training: it learned the opposite "
                "preference. Check that the trainer's `chosen` column holds the preferred responses and `rejected` the "
                "others: they look swapped." if worse else
                "Check that the trainer sees `chosen` as the preferred response, and train a little longer or with a "
                "larger learning rate (or a larger beta if the policy drifted).")
