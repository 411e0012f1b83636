"""05_rlhf: the cases its checks are tried against (see tests/specs/__init__.py for the form).

The DPO training cell runs once with the notebook (about a minute on 2 cores); its cases train again and are
marked slow, except "not trained", which only loads the model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from grader.reference.rlhf import dpo_loss, gae as _gae_right, gather_logprobs, sequence_logprob
from tests.specs import Spec

SPEC = Spec(
    "05_rlhf",
    depends_on={
        "preference_loss": set(),
        "gather_logprobs": set(),
        "sequence_logprob": {"gather_logprobs"},
        "shaped_rewards": set(),
        "gae": set(),
        "ppo_clip_loss": set(),
        "dpo_loss": set(),
        "dpo_training": set(),
    },
    trained=("dpo_training",),
    student_modules=("llmcourse.rlhf_tools",),
)


# -- preference_loss --------------------------------------------------------------------------------------

@SPEC.mutant("preference_loss", hint="chosen and rejected are swapped", name="logsigmoid of r - c")
def logsigmoid_of_r_minus_c(c, r):
    return -F.logsigmoid(r - c).mean()


@SPEC.mutant("preference_loss", hint="The losses are summed")
def summed(c, r):
    return -F.logsigmoid(c - r).sum()


@SPEC.mutant("preference_loss", hint="rather than torch.log(torch.sigmoid(x))", name="log of sigmoid (overflows)")
def log_of_sigmoid(c, r):
    return -torch.log(torch.sigmoid(c - r)).mean()


@SPEC.mutant("preference_loss", hint="not the sigmoid itself")
def sigmoid_without_the_log(c, r):
    return -torch.sigmoid(c - r).mean()


@SPEC.alternative("preference_loss")
def softplus(c, r):
    return F.softplus(r - c).mean()


@SPEC.alternative("preference_loss")
def binary_cross_entropy_with_logits(c, r):
    return F.binary_cross_entropy_with_logits(c - r, torch.ones_like(c))


# -- gather_logprobs --------------------------------------------------------------------------------------

@SPEC.mutant("gather_logprobs", hint="These are raw logits")
def raw_logits(logits, labels):
    return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


@SPEC.mutant("gather_logprobs", hint="These are probabilities")
def probabilities(logits, labels):
    return torch.softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


@SPEC.mutant("gather_logprobs", hint="a .float() (float32) anywhere")
def computed_in_float32(logits, labels):
    return torch.log_softmax(logits.float(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


@SPEC.mutant("gather_logprobs", hint="wrong dim (dim=-2, the positions)")
def log_softmax_over_the_positions(logits, labels):
    return torch.log_softmax(logits, -2).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


@SPEC.alternative("gather_logprobs")
def logits_minus_logsumexp(logits, labels):
    picked = logits.gather(-1, labels[..., None]).squeeze(-1)
    return picked - logits.logsumexp(-1)


@SPEC.alternative("gather_logprobs")
def cross_entropy(logits, labels):
    flat = -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    return flat.reshape(labels.shape)


# -- sequence_logprob -------------------------------------------------------------------------------------

@SPEC.mutant("sequence_logprob", hint="not shifted by one")
def not_shifted_by_one(model, input_ids, attention_mask, response_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return (gather_logprobs(logits, input_ids) * response_mask).sum(-1)


@SPEC.mutant("sequence_logprob", hint="Only the response tokens count")
def padding_and_prompt_counted(model, input_ids, attention_mask, response_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return (gather_logprobs(logits[:, :-1], input_ids[:, 1:]) * attention_mask[:, 1:]).sum(-1)


@SPEC.mutant("sequence_logprob", hint="response mask is not shifted")
def mask_not_shifted(model, input_ids, attention_mask, response_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return (gather_logprobs(logits[:, :-1], input_ids[:, 1:]) * response_mask[:, :-1]).sum(-1)


@SPEC.mutant("sequence_logprob", hint="Pass attention_mask to the model: with left padding")
def no_attention_mask(model, input_ids, attention_mask, response_mask):
    logits = model(input_ids=input_ids).logits
    return (gather_logprobs(logits[:, :-1], input_ids[:, 1:]) * response_mask[:, 1:]).sum(-1)


@SPEC.mutant("sequence_logprob", hint="do not average them")
def mean_instead_of_sum(model, input_ids, attention_mask, response_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    m = response_mask[:, 1:].float()
    return (gather_logprobs(logits[:, :-1], input_ids[:, 1:]) * m).sum(-1) / m.sum(-1)


@SPEC.alternative("sequence_logprob")
def labels_with_ignore_index(model, input_ids, attention_mask, response_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    labels = input_ids[:, 1:].masked_fill(~response_mask[:, 1:].bool(), -100)
    nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    return -nll.sum(-1)


@SPEC.alternative("sequence_logprob", name="row by row")
def sequence_logprob_row_by_row(model, input_ids, attention_mask, response_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    out = []
    for b in range(len(input_ids)):
        lp = torch.log_softmax(logits[b], -1)
        total = logits.new_zeros(())
        for t in range(1, input_ids.shape[1]):
            if response_mask[b, t]:
                total = total + lp[t - 1, input_ids[b, t]]
        out.append(total)
    return torch.stack(out)


# -- shaped_rewards ---------------------------------------------------------------------------------------

@SPEC.mutant("shaped_rewards", hint="KL penalty has the wrong sign", name="KL sign flipped")
def kl_sign_flipped(score, logprobs, ref_logprobs, response_mask, beta):
    m = response_mask.bool()
    r = torch.where(m, beta * (logprobs - ref_logprobs), torch.zeros_like(logprobs))
    last = torch.where(m, torch.arange(m.shape[1]), -1).amax(1)
    r[torch.arange(len(r)), last] += score.to(r.dtype)
    return r


@SPEC.mutant("shaped_rewards", hint="score is added to every response token")
def score_on_every_token(score, logprobs, ref_logprobs, response_mask, beta):
    m = response_mask.to(logprobs.dtype)
    return (-beta * (logprobs - ref_logprobs) + score[:, None].to(logprobs.dtype)) * m


@SPEC.mutant("shaped_rewards", hint="last TRUE position of the response mask", name="score at the row's last position")
def score_at_the_rows_last_position(score, logprobs, ref_logprobs, response_mask, beta):
    m = response_mask.to(logprobs.dtype)
    r = -beta * (logprobs - ref_logprobs) * m
    r[:, -1] += score.to(r.dtype)
    return r


@SPEC.mutant("shaped_rewards", hint="KL penalty is applied outside the response")
def penalty_outside_the_response(score, logprobs, ref_logprobs, response_mask, beta):
    m = response_mask.bool()
    r = -beta * (logprobs - ref_logprobs)
    last = torch.where(m, torch.arange(m.shape[1]), -1).amax(1)
    r[torch.arange(len(r)), last] += score.to(r.dtype)
    return r


@SPEC.alternative("shaped_rewards", name="row by row")
def shaped_rewards_row_by_row(score, logprobs, ref_logprobs, response_mask, beta):
    out = torch.zeros_like(logprobs)
    for b in range(len(out)):
        idx = response_mask[b].nonzero().flatten()
        out[b, idx] = -beta * (logprobs[b, idx] - ref_logprobs[b, idx])
        out[b, idx[-1]] += score[b]
    return out


@SPEC.alternative("shaped_rewards")
def one_hot_of_the_last_token(score, logprobs, ref_logprobs, response_mask, beta):
    m = response_mask.to(logprobs.dtype)
    after = m.flip(1).cumsum(1).flip(1)  # response tokens still to come, this one included
    last = (after == 1) & response_mask.bool()
    return -beta * (logprobs - ref_logprobs) * m + last * score[:, None].to(logprobs.dtype)


# -- gae --------------------------------------------------------------------------------------------------

@SPEC.mutant("gae", hint="The bootstrap is missing")
def no_bootstrap(rewards, values, gamma=1.0, lam=0.95, mask=None):
    m = torch.ones_like(rewards) if mask is None else mask.to(rewards.dtype)
    adv = torch.zeros_like(rewards)
    carry = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        carry = (rewards[:, t] - values[:, t] + gamma * lam * carry) * m[:, t]
        adv[:, t] = carry
    return adv, (adv + values) * m


@SPEC.mutant("gae", hint="Padding leaks into the advantages")
def padding_leaks_in(rewards, values, gamma=1.0, lam=0.95, mask=None):
    m = torch.ones_like(rewards) if mask is None else mask.to(rewards.dtype)
    adv = torch.zeros_like(rewards)
    carry = torch.zeros_like(rewards[:, 0])
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(carry)
        carry = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * carry
        adv[:, t] = carry
    return adv * m, (adv + values) * m


@SPEC.mutant("gae", hint="lam is ignored")
def lam_ignored(rewards, values, gamma=1.0, lam=0.95, mask=None):
    m = torch.ones_like(rewards, dtype=torch.bool) if mask is None else mask.bool()
    adv = torch.zeros_like(rewards)
    nv = torch.zeros_like(rewards[:, 0])
    na = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        a = rewards[:, t] + gamma * nv - values[:, t] + gamma * na
        adv[:, t] = torch.where(m[:, t], a, torch.zeros_like(a))
        nv = torch.where(m[:, t], values[:, t], nv)
        na = torch.where(m[:, t], a, na)
    return adv, torch.where(m, adv + values, torch.zeros_like(adv))


@SPEC.mutant("gae", hint="returns are the advantages alone", original="_gae_right")
def returns_without_the_values(rewards, values, gamma=1.0, lam=0.95, mask=None):
    adv, _ = _gae_right(rewards, values, gamma, lam, mask)
    return adv, adv


@SPEC.alternative("gae")
def row_by_row_on_the_response_block(rewards, values, gamma=1.0, lam=0.95, mask=None):
    m = torch.ones_like(rewards, dtype=torch.bool) if mask is None else mask.bool()
    adv = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        steps = m[b].nonzero().flatten().tolist()
        carry, next_v = 0.0, 0.0
        for t in reversed(steps):
            delta = rewards[b, t] + gamma * next_v - values[b, t]
            carry = delta + gamma * lam * carry
            adv[b, t] = carry
            next_v = values[b, t]
    return adv, torch.where(m, adv + values, torch.zeros_like(adv))


@SPEC.alternative("gae")
def textbook_loop_with_masked_next_values(rewards, values, gamma=1.0, lam=0.95, mask=None):
    m = torch.ones_like(rewards) if mask is None else mask.to(rewards.dtype)
    r, v = rewards * m, values * m
    adv = torch.zeros_like(rewards)
    carry = torch.zeros_like(rewards[:, 0])
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_v = v[:, t + 1] if t + 1 < length else torch.zeros_like(carry)
        nonterminal = m[:, t + 1] if t + 1 < length else torch.zeros_like(carry)
        delta = r[:, t] + gamma * next_v - v[:, t]
        carry = (delta + gamma * lam * carry * nonterminal) * m[:, t]
        adv[:, t] = carry
    return adv, (adv + v) * m


# -- ppo_clip_loss ----------------------------------------------------------------------------------------

@SPEC.mutant("ppo_clip_loss", hint="max instead of min")
def max_instead_of_min(logprobs, old_logprobs, advantages, clip_eps=0.2, mask=None):
    ratio = torch.exp(logprobs - old_logprobs)
    obj = torch.maximum(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)
    m = torch.ones_like(obj) if mask is None else mask.to(obj.dtype)
    return -(obj * m).sum() / m.sum()


@SPEC.mutant("ppo_clip_loss", hint="The advantage is clipped")
def advantage_clipped_instead_of_the_ratio(logprobs, old_logprobs, advantages, clip_eps=0.2, mask=None):
    ratio = torch.exp(logprobs - old_logprobs)
    obj = torch.minimum(ratio * advantages, ratio * advantages.clamp(-clip_eps, clip_eps))
    m = torch.ones_like(obj) if mask is None else mask.to(obj.dtype)
    return -(obj * m).sum() / m.sum()


@SPEC.mutant("ppo_clip_loss", hint="Padding is counted")
def padding_counted(logprobs, old_logprobs, advantages, clip_eps=0.2, mask=None):
    ratio = torch.exp(logprobs - old_logprobs)
    obj = torch.minimum(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)
    return -obj.mean()


@SPEC.mutant("ppo_clip_loss", hint="The ratio is upside down")
def ratio_upside_down(logprobs, old_logprobs, advantages, clip_eps=0.2, mask=None):
    ratio = torch.exp(old_logprobs - logprobs)
    obj = torch.minimum(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)
    m = torch.ones_like(obj) if mask is None else mask.to(obj.dtype)
    return -(obj * m).sum() / m.sum()


@SPEC.alternative("ppo_clip_loss")
def masked_select(logprobs, old_logprobs, advantages, clip_eps=0.2, mask=None):
    if mask is None:
        mask = torch.ones_like(logprobs, dtype=torch.bool)
    lp, old, a = (x.masked_select(mask.bool()) for x in (logprobs, old_logprobs, advantages))
    ratio = (lp - old).exp()
    return torch.max(-ratio * a, -ratio.clamp(1 - clip_eps, 1 + clip_eps) * a).mean()


@SPEC.alternative("ppo_clip_loss")
def case_by_case(logprobs, old_logprobs, advantages, clip_eps=0.2, mask=None):
    ratio = torch.exp(logprobs - old_logprobs)
    capped = torch.where(advantages >= 0, torch.clamp(ratio, max=1 + clip_eps), torch.clamp(ratio, min=1 - clip_eps))
    per_token = -capped * advantages
    if mask is None:
        return per_token.mean()
    return per_token[mask.bool()].sum() / mask.sum()


# -- dpo_loss ---------------------------------------------------------------------------------------------

@SPEC.mutant("dpo_loss", hint="The reference terms are missing")
def no_reference_terms(pc, pr, rc, rr, beta=0.1):
    c, r = beta * pc, beta * pr
    return -F.logsigmoid(c - r).mean(), c, r


@SPEC.mutant("dpo_loss", hint="beta is missing")
def no_beta(pc, pr, rc, rr, beta=0.1):
    c, r = pc - rc, pr - rr
    return -F.logsigmoid(c - r).mean(), c, r


@SPEC.mutant("dpo_loss", hint="or policy and reference are")
def policy_and_reference_swapped(pc, pr, rc, rr, beta=0.1):
    c, r = beta * (rc - pc), beta * (rr - pr)
    return -F.logsigmoid(c - r).mean(), c, r


@SPEC.mutant("dpo_loss", hint="mean over the pairs, not the sum")
def summed_over_the_pairs(pc, pr, rc, rr, beta=0.1):
    c, r = beta * (pc - rc), beta * (pr - rr)
    return -F.logsigmoid(c - r).sum(), c, r


@SPEC.alternative("dpo_loss")
def softplus_of_the_negative_margin(pc, pr, rc, rr, beta=0.1):
    logits = (pc - pr) - (rc - rr)
    return F.softplus(-beta * logits).mean(), (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()


@SPEC.alternative("dpo_loss")
def log_of_sigmoid_in_float64(pc, pr, rc, rr, beta=0.1):
    c, r = beta * (pc - rc), beta * (pr - rr)
    loss = -F.logsigmoid((c - r).double()).mean().to(c.dtype)
    return loss, c, r


# -- dpo_training: the cell's body; the parameters are what it reads from the notebook -------------------

@SPEC.mutant("dpo_training", hint="Call trainer.train()", slow=False)
def not_trained(load_model):
    dpo_policy = load_model("course-lm").eval()


@SPEC.mutant("dpo_training", hint="they look swapped")
def chosen_and_rejected_swapped(load_model, preferences, tokenizer, DPOTrainer, dpo_config):
    torch.manual_seed(0)
    dpo_policy = load_model("course-lm")
    swapped = preferences["train"].shuffle(seed=0).select(range(160)).rename_columns(
        {"chosen": "c", "rejected": "chosen"}).rename_column("c", "rejected")
    DPOTrainer(model=dpo_policy, ref_model=load_model("course-lm").eval(), processing_class=tokenizer,
               args=dpo_config(max_steps=20, per_device_train_batch_size=8, learning_rate=2e-4, beta=0.3),
               train_dataset=swapped).train()
    dpo_policy.eval()


@SPEC.mutant("dpo_training", hint="Use a smaller learning rate")
def learning_rate_far_too_large(load_model, preferences, tokenizer, DPOTrainer, dpo_config):
    torch.manual_seed(0)
    dpo_policy = load_model("course-lm")
    DPOTrainer(model=dpo_policy, ref_model=load_model("course-lm").eval(), processing_class=tokenizer,
               args=dpo_config(max_steps=20, per_device_train_batch_size=8, learning_rate=3e-2, beta=0.3),
               train_dataset=preferences["train"].shuffle(seed=0).select(range(160))).train()
    dpo_policy.eval()


@SPEC.alternative("dpo_training")
def own_training_loop_with_dpo_loss(load_model, device, preferences, rlhf_tools, tokenizer):
    torch.manual_seed(0)
    dpo_policy = load_model("course-lm").to(device)
    frozen = load_model("course-lm").to(device).eval()
    optimizer = torch.optim.AdamW(dpo_policy.parameters(), lr=5e-4)
    rows = preferences["train"].shuffle(seed=1)
    dpo_policy.train()
    for step in range(20):
        batch = rlhf_tools.encode_pairs(tokenizer, rows.select(range(8 * step, 8 * step + 8)), device=device)
        args = (batch["input_ids"], batch["attention_mask"], batch["response_mask"])
        pc, pr = sequence_logprob(dpo_policy, *args).chunk(2)
        with torch.no_grad():
            rc, rr = sequence_logprob(frozen, *args).chunk(2)
        loss, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    dpo_policy.eval()


@SPEC.alternative("dpo_training", name="other DPOTrainer settings")
def other_dpo_trainer_settings(load_model, preferences, tokenizer, DPOTrainer, dpo_config):
    torch.manual_seed(1)
    dpo_policy = load_model("course-lm")
    DPOTrainer(model=dpo_policy, ref_model=load_model("course-lm").eval(), processing_class=tokenizer,
               args=dpo_config(max_steps=25, per_device_train_batch_size=8, learning_rate=1e-3, beta=0.2),
               train_dataset=preferences["train"].select(range(1000, 1200))).train()


@SPEC.junk("dpo_training", name="the policy is the untrained reference")
def the_policy_is_the_untrained_reference(dpo_reference):
    dpo_policy = dpo_reference


# -- the notebook's solution and the reference agree on these inputs ------------------------------------

@SPEC.inputs_of("preference_loss")
def preference_inputs(gen):
    yield (torch.randn(7, generator=gen) * 3, torch.randn(7, generator=gen) * 3), {}
    yield (torch.tensor([-120.0, 50.0], dtype=torch.float64), torch.tensor([80.0, -50.0], dtype=torch.float64)), {}


@SPEC.inputs_of("gather_logprobs")
def gather_inputs(gen):
    for dtype in (torch.float32, torch.float64):
        yield (torch.randn(2, 5, 11, generator=gen, dtype=dtype) * 4, torch.randint(0, 11, (2, 5), generator=gen)), {}


@SPEC.inputs_of("sequence_logprob")
def sequence_inputs(gen):
    from llmcourse.checking.shared.rlhf import padded_batch, tiny_llama, tiny_llama_weights

    model = tiny_llama(tiny_llama_weights(7))
    for side in ("left", "right"):
        ids, attention, response = padded_batch(gen, [9, 5, 7], [4, 2, 3], side=side)
        yield (model, ids, attention, response), {}


def _rewards_batch(gen, dtype=torch.float32):
    from llmcourse.checking.shared.rlhf import random_segments

    mask = random_segments(gen, 4, 9, "right")
    return torch.randn(4, 9, generator=gen, dtype=dtype), torch.randn(4, 9, generator=gen, dtype=dtype), mask


@SPEC.inputs_of("shaped_rewards")
def shaped_rewards_inputs(gen):
    for dtype in (torch.float32, torch.float64):
        logprobs, ref_logprobs, mask = _rewards_batch(gen, dtype)
        yield (torch.randn(4, generator=gen, dtype=dtype), logprobs, ref_logprobs, mask, 0.2), {}


@SPEC.inputs_of("gae")
def gae_inputs(gen):
    rewards, values, mask = _rewards_batch(gen)
    yield (rewards, values), {}
    yield (rewards, values), {"gamma": 0.9, "lam": 0.8, "mask": mask}
    yield (rewards.double(), values.double()), {"gamma": 1.0, "lam": 1.0, "mask": mask}


@SPEC.inputs_of("ppo_clip_loss")
def ppo_inputs(gen):
    logprobs, old, mask = _rewards_batch(gen)
    advantages = torch.randn(4, 9, generator=gen)
    yield (logprobs * 0.3, old * 0.3, advantages), {}
    yield (logprobs * 0.3, old * 0.3, advantages), {"clip_eps": 0.1, "mask": mask}


@SPEC.inputs_of("dpo_loss")
def dpo_inputs(gen):
    pc, pr, rc, rr = (torch.randn(5, generator=gen) * 10 - 20 for _ in range(4))
    yield (pc, pr, rc, rr), {}
    yield (pc.double(), pr.double(), rc.double(), rr.double()), {"beta": 0.5}
