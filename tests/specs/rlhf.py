"""05_rlhf: the cases its checks are tried against (see tests/specs/__init__.py for the form).

ppo_step and ppo_train are checked on a bandit (llmcourse.in_kernel.Bandit), so their cases take about a
second each. The notebook's PPO run on course-lm (section 8, which leaves `ppo_policy` for the grader's judge)
runs once with the notebook; no case trains course-lm again.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from grader.reference.rlhf import gae as _gae_right, gather_logprobs, ppo_clip_loss, shaped_rewards
from grader.reference.rlhf import gae, ppo_step
from llmcourse import rlhf_tools
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
        "ppo_step": {"gather_logprobs", "ppo_clip_loss"},
        "ppo_train": {"gather_logprobs", "shaped_rewards", "gae", "ppo_step"},
    },
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


# -- ppo_step ---------------------------------------------------------------------------------------------

def _ppo_step_with(batch, policy, value_head, optimizer, clip_eps, vf_coef, ent_coef, epochs, minibatch_size,
                   whiten=True, clip_values=True, value_max=True, entropy_sign=1.0, detach=True, own_ratio=False):
    """The notebook's update with one thing changed (the mutants below)."""
    mask = batch["mask"].bool()
    valid = batch["advantages"][mask]
    advantages = torch.where(mask, (batch["advantages"] - valid.mean()) / (valid.std() + 1e-8), 0.0) if whiten \
        else batch["advantages"]
    totals = {"loss": 0.0, "policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0}
    updates = 0
    for _ in range(epochs):
        order = torch.randperm(len(mask))
        for start in range(0, len(mask), minibatch_size):
            rows = order[start:start + minibatch_size]
            m = mask[rows].float()
            out = policy(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows].long(),
                         output_hidden_states=True)
            logits = out.logits[:, :-1]
            logprobs = gather_logprobs(logits, batch["input_ids"][rows, 1:])
            hidden = out.hidden_states[-1][:, :-1]
            values = value_head(hidden.detach() if detach else hidden)
            old = logprobs.detach() if own_ratio else batch["old_logprobs"][rows]
            policy_loss = ppo_clip_loss(logprobs, old, advantages[rows], clip_eps, mask[rows])
            old_values, returns = batch["old_values"][rows], batch["returns"][rows]
            clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
            pick = torch.maximum if value_max else torch.minimum
            per_token = pick((values - returns) ** 2, (clipped - returns) ** 2) if clip_values else (values - returns) ** 2
            value_loss = (per_token * m).sum() / m.sum()
            log_p = torch.log_softmax(logits, -1)
            entropy = ((-(log_p.exp() * log_p).sum(-1)) * m).sum() / m.sum()
            loss = policy_loss + vf_coef * value_loss - entropy_sign * ent_coef * entropy
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for name, value in (("loss", loss), ("policy_loss", policy_loss), ("value_loss", value_loss),
                                ("entropy", entropy)):
                totals[name] += value.item()
            updates += 1
    return {name: total / updates for name, total in totals.items()}


@SPEC.mutant("ppo_step", hint="Whiten the advantages", uses=(_ppo_step_with,))
def advantages_not_whitened(policy, value_head, optimizer, batch, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01, epochs=4,
                            minibatch_size=8):
    return _ppo_step_with(batch, policy, value_head, optimizer, clip_eps, vf_coef, ent_coef, epochs, minibatch_size,
                          whiten=False)


@SPEC.mutant("ppo_step", hint="V_clip = old_values + clamp", uses=(_ppo_step_with,))
def value_loss_not_clipped(policy, value_head, optimizer, batch, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01, epochs=4,
                           minibatch_size=8):
    return _ppo_step_with(batch, policy, value_head, optimizer, clip_eps, vf_coef, ent_coef, epochs, minibatch_size,
                          clip_values=False)


@SPEC.mutant("ppo_step", hint="take the LARGER of the two squared", uses=(_ppo_step_with,))
def smaller_of_the_two_value_losses(policy, value_head, optimizer, batch, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01,
                                    epochs=4, minibatch_size=8):
    return _ppo_step_with(batch, policy, value_head, optimizer, clip_eps, vf_coef, ent_coef, epochs, minibatch_size,
                          value_max=False)


@SPEC.mutant("ppo_step", hint="ent_coef * entropy", uses=(_ppo_step_with,))
def entropy_bonus_with_the_wrong_sign(policy, value_head, optimizer, batch, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01,
                                      epochs=4, minibatch_size=8):
    return _ppo_step_with(batch, policy, value_head, optimizer, clip_eps, vf_coef, ent_coef, epochs, minibatch_size,
                          entropy_sign=-1.0)


@SPEC.mutant("ppo_step", hint="ent_coef * entropy", uses=(_ppo_step_with,))
def no_entropy_bonus(policy, value_head, optimizer, batch, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01, epochs=4,
                     minibatch_size=8):
    return _ppo_step_with(batch, policy, value_head, optimizer, clip_eps, vf_coef, ent_coef, epochs, minibatch_size,
                          entropy_sign=0.0)


@SPEC.mutant("ppo_step", hint="detach", uses=(_ppo_step_with,))
def critic_trains_the_policy(policy, value_head, optimizer, batch, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01, epochs=4,
                             minibatch_size=8):
    return _ppo_step_with(batch, policy, value_head, optimizer, clip_eps, vf_coef, ent_coef, epochs, minibatch_size,
                          detach=False)


@SPEC.mutant("ppo_step", hint="old_logprobs", uses=(_ppo_step_with,))
def ratio_against_the_current_policy(policy, value_head, optimizer, batch, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01,
                                     epochs=4, minibatch_size=8):
    return _ppo_step_with(batch, policy, value_head, optimizer, clip_eps, vf_coef, ent_coef, epochs, minibatch_size,
                          own_ratio=True)


@SPEC.alternative("ppo_step")
def split_minibatches_and_categorical_entropy(policy, value_head, optimizer, batch, clip_eps=0.2, vf_coef=0.5,
                                              ent_coef=0.01, epochs=4, minibatch_size=8):
    mask = batch["mask"].bool()
    a = batch["advantages"]
    n = mask.sum()
    mean = (a * mask).sum() / n
    std = ((((a - mean) * mask) ** 2).sum() / (n - 1)).sqrt()
    advantages = (a - mean) / (std + 1e-8) * mask
    history = []
    for _ in range(epochs):
        for rows in torch.randperm(len(mask)).split(minibatch_size):
            m = mask[rows]
            out = policy(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows].long(),
                         output_hidden_states=True)
            logits = out.logits[:, :-1][m]  # (tokens, V): only the tokens that count
            labels = batch["input_ids"][rows, 1:][m]
            dist = torch.distributions.Categorical(logits=logits)
            ratio = torch.exp(dist.log_prob(labels) - batch["old_logprobs"][rows][m])
            adv = advantages[rows][m]
            policy_loss = -torch.min(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv).mean()
            values = value_head(out.hidden_states[-1][:, :-1].detach())[m]
            old_values, returns = batch["old_values"][rows][m], batch["returns"][rows][m]
            clipped = old_values + (values - old_values).clamp(-clip_eps, clip_eps)
            value_loss = torch.stack([(values - returns) ** 2, (clipped - returns) ** 2]).amax(0).mean()
            entropy = dist.entropy().mean()
            loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append([t.item() for t in (loss, policy_loss, value_loss, entropy)])
    means = torch.tensor(history, dtype=torch.float64).mean(0).tolist()
    return dict(zip(("loss", "policy_loss", "value_loss", "entropy"), means))


@SPEC.alternative("ppo_step")
def index_loops_in_float64(policy, value_head, optimizer, batch, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01, epochs=4,
                           minibatch_size=8):
    mask = batch["mask"].bool()
    flat = batch["advantages"][mask].double()
    whitened = ((batch["advantages"].double() - flat.mean()) / (flat.std() + 1e-8)).float() * mask
    sums = dict.fromkeys(("loss", "policy_loss", "value_loss", "entropy"), 0.0)
    count = 0
    size = len(mask)
    for epoch in range(epochs):
        perm = torch.randperm(size)
        i = 0
        while i < size:
            rows = perm[i:i + minibatch_size]
            i += minibatch_size
            m = mask[rows].to(torch.float32)
            out = policy(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows].long(),
                         output_hidden_states=True)
            logits = out.logits[:, :-1]
            logprobs = gather_logprobs(logits, batch["input_ids"][rows][:, 1:])
            policy_loss = ppo_clip_loss(logprobs, batch["old_logprobs"][rows], whitened[rows], clip_eps=clip_eps,
                                        mask=mask[rows])
            values = value_head(out.hidden_states[-1][:, :-1].detach())
            delta = values - batch["old_values"][rows]
            clipped = batch["old_values"][rows] + torch.where(delta.abs() > clip_eps, delta.sign() * clip_eps, delta)
            errors = torch.maximum((values - batch["returns"][rows]) ** 2, (clipped - batch["returns"][rows]) ** 2)
            value_loss = (errors * m).sum() / m.sum()
            p = torch.softmax(logits, -1)
            entropy = (-(p * torch.log_softmax(logits, -1)).sum(-1) * m).sum() / m.sum()
            loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for k, v in zip(sums, (loss, policy_loss, value_loss, entropy)):
                sums[k] += float(v.detach().double())
            count += 1
    return {k: v / count for k, v in sums.items()}


# -- ppo_train --------------------------------------------------------------------------------------------

def _ppo_train_with(policy, reference, sample_fn, score_fn, iterations, beta, lr, value_lr, gamma, lam, eval_fn,
                    eval_every, seed, ppo_kwargs, use_beta=True, own_reference=False, use_score=True,
                    first_eval=True, eval_offset=0):
    """The notebook's loop with one thing changed (the mutants below)."""
    torch.manual_seed(seed)
    value_head = rlhf_tools.ValueHead(policy.config.hidden_size)
    optimizer = torch.optim.AdamW([{"params": policy.parameters(), "lr": lr},
                                   {"params": value_head.parameters(), "lr": value_lr}])
    history = {k: [] for k in ("score", "kl", "loss", "policy_loss", "value_loss", "entropy", "eval_iterations", "eval")}
    if eval_fn is not None and first_eval:
        history["eval_iterations"].append(0)
        history["eval"].append(eval_fn(policy))
    for iteration in range(1, iterations + 1):
        rollout = sample_fn(policy)
        score = score_fn(rollout)
        mask = rollout.response_mask[:, 1:].bool()
        with torch.no_grad():
            out = policy(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask.long(),
                         output_hidden_states=True)
            old_logprobs = gather_logprobs(out.logits[:, :-1], rollout.input_ids[:, 1:])
            old_values = value_head(out.hidden_states[-1][:, :-1])
            ref_logits = reference(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask.long()).logits
            ref_logprobs = old_logprobs if own_reference else gather_logprobs(ref_logits[:, :-1], rollout.input_ids[:, 1:])
            rewards = shaped_rewards(score if use_score else torch.zeros_like(score), old_logprobs, ref_logprobs, mask,
                                     beta if use_beta else 0.0)
            advantages, returns = gae(rewards, old_values, gamma=gamma, lam=lam, mask=mask)
        batch = {"input_ids": rollout.input_ids, "attention_mask": rollout.attention_mask, "mask": mask,
                 "old_logprobs": old_logprobs, "old_values": old_values, "advantages": advantages, "returns": returns}
        policy.train()
        losses = ppo_step(policy, value_head, optimizer, batch, **ppo_kwargs)
        policy.eval()
        history["score"].append(score.float().mean().item())
        history["kl"].append(((old_logprobs - ref_logprobs) * mask).sum(-1).mean().item())
        for k, v in losses.items():
            history[k].append(v)
        if eval_fn is not None and (iteration - eval_offset) % eval_every == 0:
            history["eval_iterations"].append(iteration)
            history["eval"].append(eval_fn(policy))
    return history


@SPEC.mutant("ppo_train", hint="Pass beta to shaped_rewards", uses=(_ppo_train_with,))
def beta_never_used(policy, reference, sample_fn, score_fn, iterations, beta=0.1, lr=1e-4, value_lr=1e-3, gamma=1.0,
                    lam=0.95, eval_fn=None, eval_every=4, seed=0, **ppo_kwargs):
    return _ppo_train_with(policy, reference, sample_fn, score_fn, iterations, beta, lr, value_lr, gamma, lam, eval_fn,
                           eval_every, seed, ppo_kwargs, use_beta=False)


@SPEC.mutant("ppo_train", hint="reference model's log-probabilities", uses=(_ppo_train_with,))
def policy_as_its_own_reference(policy, reference, sample_fn, score_fn, iterations, beta=0.1, lr=1e-4, value_lr=1e-3,
                                gamma=1.0, lam=0.95, eval_fn=None, eval_every=4, seed=0, **ppo_kwargs):
    return _ppo_train_with(policy, reference, sample_fn, score_fn, iterations, beta, lr, value_lr, gamma, lam, eval_fn,
                           eval_every, seed, ppo_kwargs, own_reference=True)


@SPEC.mutant("ppo_train", hint="shaped_rewards(score", uses=(_ppo_train_with,))
def score_left_out_of_the_rewards(policy, reference, sample_fn, score_fn, iterations, beta=0.1, lr=1e-4, value_lr=1e-3,
                                  gamma=1.0, lam=0.95, eval_fn=None, eval_every=4, seed=0, **ppo_kwargs):
    return _ppo_train_with(policy, reference, sample_fn, score_fn, iterations, beta, lr, value_lr, gamma, lam, eval_fn,
                           eval_every, seed, ppo_kwargs, use_score=False)


@SPEC.mutant("ppo_train", hint="before the first iteration", uses=(_ppo_train_with,))
def no_evaluation_before_training(policy, reference, sample_fn, score_fn, iterations, beta=0.1, lr=1e-4,
                                  value_lr=1e-3, gamma=1.0, lam=0.95, eval_fn=None, eval_every=4, seed=0, **ppo_kwargs):
    return _ppo_train_with(policy, reference, sample_fn, score_fn, iterations, beta, lr, value_lr, gamma, lam, eval_fn,
                           eval_every, seed, ppo_kwargs, first_eval=False)


@SPEC.mutant("ppo_train", hint="multiple of eval_every", uses=(_ppo_train_with,))
def evaluations_one_iteration_late(policy, reference, sample_fn, score_fn, iterations, beta=0.1, lr=1e-4,
                                   value_lr=1e-3, gamma=1.0, lam=0.95, eval_fn=None, eval_every=4, seed=0, **ppo_kwargs):
    return _ppo_train_with(policy, reference, sample_fn, score_fn, iterations, beta, lr, value_lr, gamma, lam, eval_fn,
                           eval_every, seed, ppo_kwargs, eval_offset=1)


@SPEC.alternative("ppo_train")
def zero_based_loop_with_log_softmax(policy, reference, sample_fn, score_fn, iterations, beta=0.1, lr=1e-4,
                                     value_lr=1e-3, gamma=1.0, lam=0.95, eval_fn=None, eval_every=4, seed=0,
                                     **ppo_kwargs):
    torch.manual_seed(seed)
    device = next(policy.parameters()).device
    critic = rlhf_tools.ValueHead(policy.config.hidden_size).to(device)
    optimizer = torch.optim.AdamW([dict(params=list(policy.parameters()), lr=lr),
                                   dict(params=list(critic.parameters()), lr=value_lr)])
    reference.eval()
    history = {}
    for key in ("score", "kl", "loss", "policy_loss", "value_loss", "entropy", "eval_iterations", "eval"):
        history[key] = []
    for i in range(iterations + 1):
        if eval_fn is not None and i % eval_every == 0:
            history["eval_iterations"].append(i)
            history["eval"].append(eval_fn(policy))
        if i == iterations:
            break
        batch = sample_fn(policy)
        score = score_fn(batch)
        labels = batch.input_ids[:, 1:]
        mask = batch.response_mask[:, 1:]
        with torch.no_grad():
            out = policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long(), output_hidden_states=True)
            logprobs = torch.log_softmax(out.logits[:, :-1], -1).gather(-1, labels[..., None])[..., 0]
            values = critic(out.hidden_states[-1][:, :-1])
            ref = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long()).logits[:, :-1]
            ref_logprobs = torch.log_softmax(ref, -1).gather(-1, labels[..., None])[..., 0]
            advantages, returns = gae(shaped_rewards(score, logprobs, ref_logprobs, mask, beta), values, gamma, lam,
                                      mask)
        policy.train()
        losses = ppo_step(policy, critic, optimizer, dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                                          mask=mask, old_logprobs=logprobs, old_values=values,
                                                          advantages=advantages, returns=returns), **ppo_kwargs)
        policy.eval()
        history["score"].append(float(score.mean()))
        history["kl"].append(float(torch.where(mask, logprobs - ref_logprobs, 0.0).sum(1).mean()))
        for key in ("loss", "policy_loss", "value_loss", "entropy"):
            history[key].append(losses[key])
    return history


@SPEC.alternative("ppo_train")
def helper_functions_and_setdefault(policy, reference, sample_fn, score_fn, iterations, beta=0.1, lr=1e-4,
                                    value_lr=1e-3, gamma=1.0, lam=0.95, eval_fn=None, eval_every=4, seed=0,
                                    **ppo_kwargs):
    def token_logprobs(model, rollout, head=None):
        out = model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask.long(),
                    output_hidden_states=head is not None)
        lp = gather_logprobs(out.logits[:, :-1], rollout.input_ids[:, 1:])
        return (lp, head(out.hidden_states[-1][:, :-1])) if head is not None else lp

    torch.manual_seed(seed)
    head = rlhf_tools.ValueHead(policy.config.hidden_size).to(next(policy.parameters()).device)
    optimizer = torch.optim.AdamW([{"params": policy.parameters(), "lr": lr}, {"params": head.parameters(), "lr": value_lr}])
    history = {"eval_iterations": [], "eval": []}
    if eval_fn:
        history["eval_iterations"].append(0)
        history["eval"].append(eval_fn(policy))
    for it in range(1, iterations + 1):
        rollout = sample_fn(policy)
        score = score_fn(rollout)
        mask = rollout.response_mask[:, 1:].bool()
        with torch.no_grad():
            old, values = token_logprobs(policy, rollout, head)
            ref = token_logprobs(reference, rollout)
            adv, ret = gae(shaped_rewards(score, old, ref, mask, beta), values, gamma=gamma, lam=lam, mask=mask)
        policy.train()
        stats = ppo_step(policy, head, optimizer, {"input_ids": rollout.input_ids, "attention_mask": rollout.attention_mask,
                                                   "mask": mask, "old_logprobs": old, "old_values": values,
                                                   "advantages": adv, "returns": ret}, **ppo_kwargs)
        policy.eval()
        stats.update(score=score.mean().item(), kl=((old - ref) * mask).sum(-1).mean().item())
        for key, value in stats.items():
            history.setdefault(key, []).append(value)
        if eval_fn and it % eval_every == 0:
            history["eval_iterations"].append(it)
            history["eval"].append(eval_fn(policy))
    for key in ("score", "kl", "loss", "policy_loss", "value_loss", "entropy"):
        history.setdefault(key, [])
    return history


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

@SPEC.agreement("ppo_step")
def ppo_step_agrees(notebook_ppo_step, reference_ppo_step):
    """The same update of two bandits that start alike, with one minibatch per epoch (the order of the rows within
    it does not change a mean): the same parameters afterwards, and the same losses."""
    from grader.checks.rlhf import bandit_batch
    from llmcourse.in_kernel import Bandit
    from tests.test_checks import assert_same

    gen = torch.Generator().manual_seed(0)
    for settings in ({"epochs": 2, "minibatch_size": 12}, {"clip_eps": 0.1, "ent_coef": 0.1, "epochs": 1,
                                                           "minibatch_size": 16}):
        actions = torch.randint(0, 4, (12,), generator=gen)
        batch = bandit_batch(actions, torch.randn(12, generator=gen), returns=torch.randn(12, generator=gen),
                             old_values=torch.randn(12, generator=gen) * 0.3,
                             logprob_shift=torch.randn(12, generator=gen) * 0.3)
        results = []
        for fn in (notebook_ppo_step, reference_ppo_step):
            bandit = Bandit(seed=2, lr=0.2)
            losses = fn(bandit.policy, bandit.value_head, bandit.optimizer, batch, **settings)
            results.append((torch.tensor([losses[k] for k in sorted(losses)]), bandit.state()))
        assert_same(results[0][0], results[1][0], f"the losses of ppo_step({settings})")
        assert_same(results[0][1], results[1][1], f"the bandit's parameters after ppo_step({settings})")


@SPEC.agreement("ppo_train")
def ppo_train_agrees(notebook_ppo_train, reference_ppo_train):
    """The same bandit run (same seeds): the same history and the same trained policy."""
    from llmcourse.in_kernel import Bandit
    from tests.test_checks import assert_same

    runs = []
    for fn in (notebook_ppo_train, reference_ppo_train):
        bandit = Bandit(batch_size=16, seed=1)
        history = fn(bandit.policy, bandit.reference, bandit.sample, bandit.score, 6, beta=0.2, lr=0.02,
                     eval_fn=bandit.evaluate, eval_every=2, minibatch_size=8)
        runs.append((history, bandit.probabilities()))
    (h0, p0), (h1, p1) = runs
    assert set(h0) == set(h1) and h0["eval_iterations"] == h1["eval_iterations"] == [0, 2, 4, 6]
    for key in ("score", "kl", "loss", "policy_loss", "value_loss", "entropy", "eval"):
        assert_same(torch.tensor(h0[key]), torch.tensor(h1[key]), f"history[{key!r}]")
    assert_same(p0, p1, "the trained policy's probabilities")
