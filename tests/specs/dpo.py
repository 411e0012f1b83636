"""05b_dpo: the cases its checks are tried against (see tests/specs/__init__.py for the form).

The DPO training cell runs once with the notebook (about a minute on 2 cores); its cases train again and are
marked slow, except "not trained", which only loads the model. critique_and_revise's cases run with a scripted
model and take milliseconds.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from grader.reference.dpo import dpo_loss
from grader.reference.rlhf import sequence_logprob
from llmcourse import rlhf_tools
from tests.specs import Spec

SPEC = Spec(
    "05b_dpo",
    depends_on={
        "dpo_loss": set(),
        "dpo_training": set(),
        "critique_and_revise": set(),
    },
    trained=("dpo_training",),
    student_modules=("llmcourse.rlhf_tools",),
)


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


# -- critique_and_revise ----------------------------------------------------------------------------------

@SPEC.mutant("critique_and_revise", hint="CURRENT answer")
def always_the_original(generate_fn, prompt, principles):
    original = generate_fn(prompt)
    revised = original
    for principle in principles:
        critique = generate_fn(rlhf_tools.critique_request(prompt, original, principle))
        revised = generate_fn(rlhf_tools.revision_request(prompt, original, principle, critique))
    return original, revised


@SPEC.mutant("critique_and_revise", hint="Return (original, revised), in that order")
def pair_the_wrong_way_round(generate_fn, prompt, principles):
    original = answer = generate_fn(prompt)
    for principle in principles:
        critique = generate_fn(rlhf_tools.critique_request(prompt, answer, principle))
        answer = generate_fn(rlhf_tools.revision_request(prompt, answer, principle, critique))
    return answer, original


@SPEC.mutant("critique_and_revise", hint="one principle at a time in the given order")
def principles_in_reverse(generate_fn, prompt, principles):
    original = answer = generate_fn(prompt)
    for principle in reversed(principles):
        critique = generate_fn(rlhf_tools.critique_request(prompt, answer, principle))
        answer = generate_fn(rlhf_tools.revision_request(prompt, answer, principle, critique))
    return original, answer


@SPEC.mutant("critique_and_revise", hint="a critique is not an answer")
def critique_returned_as_the_revision(generate_fn, prompt, principles):
    original = answer = generate_fn(prompt)
    critique = original
    for principle in principles:
        critique = generate_fn(rlhf_tools.critique_request(prompt, answer, principle))
        answer = generate_fn(rlhf_tools.revision_request(prompt, answer, principle, critique))
    return original, critique


@SPEC.mutant("critique_and_revise", hint="twice per principle")
def one_critique_for_all_principles(generate_fn, prompt, principles):
    original = generate_fn(prompt)
    if not principles:
        return original, original
    joined = " ".join(principles)
    critique = generate_fn(rlhf_tools.critique_request(prompt, original, joined))
    return original, generate_fn(rlhf_tools.revision_request(prompt, original, joined, critique))


@SPEC.alternative("critique_and_revise")
def recursive(generate_fn, prompt, principles):
    def revise(answer, rest):
        if not rest:
            return answer
        critique = generate_fn(rlhf_tools.critique_request(prompt, answer, rest[0]))
        return revise(generate_fn(rlhf_tools.revision_request(prompt, answer, rest[0], critique)), rest[1:])

    original = generate_fn(prompt)
    return original, revise(original, list(principles))


@SPEC.alternative("critique_and_revise")
def history_of_answers(generate_fn, prompt, principles):
    answers = [generate_fn(prompt)]
    critiques = []
    for principle in principles:
        critiques.append(generate_fn(rlhf_tools.critique_request(prompt, answers[-1], principle)))
        answers.append(generate_fn(rlhf_tools.revision_request(prompt, answers[-1], principle, critiques[-1])))
    return (answers[0], answers[-1])


# -- the notebook's solution and the reference agree on these inputs ------------------------------------

@SPEC.inputs_of("dpo_loss")
def dpo_inputs(gen):
    pc, pr, rc, rr = (torch.randn(5, generator=gen) * 10 - 20 for _ in range(4))
    yield (pc, pr, rc, rr), {}
    yield (pc.double(), pr.double(), rc.double(), rr.double()), {"beta": 0.5}


@SPEC.inputs_of("critique_and_revise")
def critique_inputs(gen):
    from llmcourse.assets import load_task

    prompt = load_task("preferences", "test")[0]["prompt"]

    def generate_fn(text):  # a deterministic stand-in: its answer depends on the whole prompt
        return f"answer {len(text)} {text[-20:]!r}"

    yield (generate_fn, prompt, ["Be kind.", "Help."]), {}
    yield (generate_fn, prompt, []), {}
