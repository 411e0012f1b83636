"""The 05_rlhf checks, run in-process against the notebook's own code, wrong code and other right code.

- The reference solution (the source notebook's cells) earns every point, and each exercise's checks are
  worth exactly the points of its check cell.
- Every exercise has plausible wrong implementations (mutants); each must lose points in its exercise, and
  every exercise that does not use the mutated one keeps full marks.
- Every exercise has alternative correct implementations; they earn full marks, in their exercise and in
  every exercise that builds on it.

The notebook's defining cells run once (the DPO training cell included, about a minute on 2 cores). A variant
runs in a copy of that namespace where the solution cells are executed again, then the variant's source, so
the notebook's other functions pick it up exactly as they would in a student's kernel. Variants of the
trained policy retrain it and are marked slow.
"""
from __future__ import annotations

import gc
import re
from pathlib import Path

import nbformat
import pytest
import torch

from llmcourse.checking import local_student, run_checks
from tests.exercises import assert_junk_scores_nothing, junk_implementations
from tests.notebooks import code_cells, is_check_cell

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "source" / "05_rlhf" / "rlhf.ipynb"
VISIBLE, HIDDEN = "llmcourse.checks.rlhf", "grader.checks.rlhf"
DEPENDS_ON = {
    "preference_loss": set(),
    "gather_logprobs": set(),
    "sequence_logprob": {"gather_logprobs"},
    "shaped_rewards": set(),
    "gae": set(),
    "ppo_clip_loss": set(),
    "dpo_loss": set(),
    "dpo_training": set(),
}
EXERCISES = list(DEPENDS_ON)
TRAINED = "dpo_training"
_MARKERS = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$", re.MULTILINE)


def dependents(exercise: str) -> set[str]:
    return {e for e in EXERCISES if exercise in DEPENDS_ON[e]}


def solution_sources() -> dict[str, str]:
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: _MARKERS.sub("", c.source) for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}


@pytest.fixture(scope="module")
def base_namespace():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ns: dict = {"__name__": "__notebook__"}
    for index, cell in code_cells(NOTEBOOK):
        exec(compile(_MARKERS.sub("", cell.source), f"<rlhf.ipynb cell {index}>", "exec"), ns)
    gc.collect()
    gc.freeze()
    yield ns
    gc.unfreeze()
    torch.set_num_threads(threads)


def namespace_with(base: dict, source: str = "") -> dict:
    """A copy of the notebook's namespace with the (cheap) solution cells re-run in it, then `source`."""
    ns = dict(base)
    for exercise, cell in solution_sources().items():
        if exercise != TRAINED:
            exec(compile(cell, f"<solution {exercise}>", "exec"), ns)
    exec(compile(source, "<variant>", "exec"), ns)
    return ns


def score(ns: dict, exercise: str):
    return run_checks(f"05_rlhf/{exercise}", local_student(ns), visible=[VISIBLE], hidden=[HIDDEN])


def describe(result) -> str:
    return "; ".join(f"{c.name}: {c.message} (hint: {c.hint})" for c in result.checks if not c.passed) or result.error


@pytest.fixture(scope="module")
def reference_results(base_namespace):
    return {exercise: score(base_namespace, exercise) for exercise in EXERCISES}


@pytest.mark.parametrize("exercise", EXERCISES)
def test_reference_solution_gets_full_marks(reference_results, exercise):
    result = reference_results[exercise]
    assert not result.error, result.error
    assert result.score == result.max_score, describe(result)
    assert any(c.visible for c in result.checks) and any(not c.visible for c in result.checks)


def test_check_points_match_the_notebook(reference_results):
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    points = {c.metadata["nbgrader"]["grade_id"].removeprefix("check_"): float(c.metadata["nbgrader"]["points"])
              for c in nb.cells if is_check_cell(c)}
    assert set(points) == set(EXERCISES) and sum(points.values()) == 100
    for exercise in EXERCISES:
        assert reference_results[exercise].max_score == points[exercise], exercise


# -- wrong implementations --------------------------------------------------------------------------

MUTANTS = {
    "preference_loss": {
        "logsigmoid of r - c": "def preference_loss(c, r):\n    return -F.logsigmoid(r - c).mean()\n",
        "summed": "def preference_loss(c, r):\n    return -F.logsigmoid(c - r).sum()\n",
        "log of sigmoid (overflows)": "def preference_loss(c, r):\n    return -torch.log(torch.sigmoid(c - r)).mean()\n",
        "sigmoid without the log": "def preference_loss(c, r):\n    return -torch.sigmoid(c - r).mean()\n",
    },
    "gather_logprobs": {
        "raw logits": "def gather_logprobs(logits, labels):\n    return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)\n",
        "probabilities": ("def gather_logprobs(logits, labels):\n"
                          "    return torch.softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)\n"),
        "computed in float32": ("def gather_logprobs(logits, labels):\n"
                                "    return torch.log_softmax(logits.float(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)\n"),
        "log_softmax over the positions": ("def gather_logprobs(logits, labels):\n"
                                           "    return torch.log_softmax(logits, -2).gather(-1, labels.unsqueeze(-1)).squeeze(-1)\n"),
    },
    "sequence_logprob": {
        "not shifted by one": '''
def sequence_logprob(model, input_ids, attention_mask, response_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return (gather_logprobs(logits, input_ids) * response_mask).sum(-1)
''',
        "padding and prompt counted": '''
def sequence_logprob(model, input_ids, attention_mask, response_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return (gather_logprobs(logits[:, :-1], input_ids[:, 1:]) * attention_mask[:, 1:]).sum(-1)
''',
        "mask not shifted": '''
def sequence_logprob(model, input_ids, attention_mask, response_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return (gather_logprobs(logits[:, :-1], input_ids[:, 1:]) * response_mask[:, :-1]).sum(-1)
''',
        "no attention mask": '''
def sequence_logprob(model, input_ids, attention_mask, response_mask):
    logits = model(input_ids=input_ids).logits
    return (gather_logprobs(logits[:, :-1], input_ids[:, 1:]) * response_mask[:, 1:]).sum(-1)
''',
        "mean instead of sum": '''
def sequence_logprob(model, input_ids, attention_mask, response_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    m = response_mask[:, 1:].float()
    return (gather_logprobs(logits[:, :-1], input_ids[:, 1:]) * m).sum(-1) / m.sum(-1)
''',
    },
    "shaped_rewards": {
        "KL sign flipped": '''
def shaped_rewards(score, logprobs, ref_logprobs, response_mask, beta):
    m = response_mask.bool()
    r = torch.where(m, beta * (logprobs - ref_logprobs), torch.zeros_like(logprobs))
    last = torch.where(m, torch.arange(m.shape[1]), -1).amax(1)
    r[torch.arange(len(r)), last] += score.to(r.dtype)
    return r
''',
        "score on every token": '''
def shaped_rewards(score, logprobs, ref_logprobs, response_mask, beta):
    m = response_mask.to(logprobs.dtype)
    return (-beta * (logprobs - ref_logprobs) + score[:, None].to(logprobs.dtype)) * m
''',
        "score at the row's last position": '''
def shaped_rewards(score, logprobs, ref_logprobs, response_mask, beta):
    m = response_mask.to(logprobs.dtype)
    r = -beta * (logprobs - ref_logprobs) * m
    r[:, -1] += score.to(r.dtype)
    return r
''',
        "penalty outside the response": '''
def shaped_rewards(score, logprobs, ref_logprobs, response_mask, beta):
    m = response_mask.bool()
    r = -beta * (logprobs - ref_logprobs)
    last = torch.where(m, torch.arange(m.shape[1]), -1).amax(1)
    r[torch.arange(len(r)), last] += score.to(r.dtype)
    return r
''',
    },
    "gae": {
        "no bootstrap": '''
def gae(rewards, values, gamma=1.0, lam=0.95, mask=None):
    m = torch.ones_like(rewards) if mask is None else mask.to(rewards.dtype)
    adv = torch.zeros_like(rewards)
    carry = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        carry = (rewards[:, t] - values[:, t] + gamma * lam * carry) * m[:, t]
        adv[:, t] = carry
    return adv, (adv + values) * m
''',
        "padding leaks in": '''
def gae(rewards, values, gamma=1.0, lam=0.95, mask=None):
    m = torch.ones_like(rewards) if mask is None else mask.to(rewards.dtype)
    adv = torch.zeros_like(rewards)
    carry = torch.zeros_like(rewards[:, 0])
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(carry)
        carry = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * carry
        adv[:, t] = carry
    return adv * m, (adv + values) * m
''',
        "lam ignored": '''
def gae(rewards, values, gamma=1.0, lam=0.95, mask=None):
    m = torch.ones_like(rewards, dtype=torch.bool) if mask is None else mask.bool()
    adv = torch.zeros_like(rewards)
    nv = torch.zeros_like(rewards[:, 0]); na = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        a = rewards[:, t] + gamma * nv - values[:, t] + gamma * na
        adv[:, t] = torch.where(m[:, t], a, torch.zeros_like(a))
        nv = torch.where(m[:, t], values[:, t], nv); na = torch.where(m[:, t], a, na)
    return adv, torch.where(m, adv + values, torch.zeros_like(adv))
''',
        "returns without the values": '''
_gae_right = gae
def gae(rewards, values, gamma=1.0, lam=0.95, mask=None):
    adv, _ = _gae_right(rewards, values, gamma, lam, mask)
    return adv, adv
''',
    },
    "ppo_clip_loss": {
        "max instead of min": '''
def ppo_clip_loss(logprobs, old_logprobs, advantages, clip_eps=0.2, mask=None):
    ratio = torch.exp(logprobs - old_logprobs)
    obj = torch.maximum(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)
    m = torch.ones_like(obj) if mask is None else mask.to(obj.dtype)
    return -(obj * m).sum() / m.sum()
''',
        "advantage clipped instead of the ratio": '''
def ppo_clip_loss(logprobs, old_logprobs, advantages, clip_eps=0.2, mask=None):
    ratio = torch.exp(logprobs - old_logprobs)
    obj = torch.minimum(ratio * advantages, ratio * advantages.clamp(-clip_eps, clip_eps))
    m = torch.ones_like(obj) if mask is None else mask.to(obj.dtype)
    return -(obj * m).sum() / m.sum()
''',
        "padding counted": '''
def ppo_clip_loss(logprobs, old_logprobs, advantages, clip_eps=0.2, mask=None):
    ratio = torch.exp(logprobs - old_logprobs)
    obj = torch.minimum(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)
    return -obj.mean()
''',
        "ratio upside down": '''
def ppo_clip_loss(logprobs, old_logprobs, advantages, clip_eps=0.2, mask=None):
    ratio = torch.exp(old_logprobs - logprobs)
    obj = torch.minimum(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)
    m = torch.ones_like(obj) if mask is None else mask.to(obj.dtype)
    return -(obj * m).sum() / m.sum()
''',
    },
    "dpo_loss": {
        "no reference terms": '''
def dpo_loss(pc, pr, rc, rr, beta=0.1):
    c, r = beta * pc, beta * pr
    return -F.logsigmoid(c - r).mean(), c, r
''',
        "no beta": '''
def dpo_loss(pc, pr, rc, rr, beta=0.1):
    c, r = pc - rc, pr - rr
    return -F.logsigmoid(c - r).mean(), c, r
''',
        "policy and reference swapped": '''
def dpo_loss(pc, pr, rc, rr, beta=0.1):
    c, r = beta * (rc - pc), beta * (rr - pr)
    return -F.logsigmoid(c - r).mean(), c, r
''',
        "summed over the pairs": '''
def dpo_loss(pc, pr, rc, rr, beta=0.1):
    c, r = beta * (pc - rc), beta * (pr - rr)
    return -F.logsigmoid(c - r).sum(), c, r
''',
    },
    "dpo_training": {
        "not trained": 'dpo_policy = load_model("course-lm").eval()\n',
        "chosen and rejected swapped": '''
torch.manual_seed(0)
dpo_policy = load_model("course-lm")
swapped = preferences["train"].shuffle(seed=0).select(range(160)).rename_columns({"chosen": "c", "rejected": "chosen"}).rename_column("c", "rejected")
DPOTrainer(model=dpo_policy, ref_model=load_model("course-lm").eval(), processing_class=tokenizer,
           args=dpo_config(max_steps=20, per_device_train_batch_size=8, learning_rate=2e-4, beta=0.3),
           train_dataset=swapped).train()
dpo_policy.eval()
''',
        "learning rate far too large": '''
torch.manual_seed(0)
dpo_policy = load_model("course-lm")
DPOTrainer(model=dpo_policy, ref_model=load_model("course-lm").eval(), processing_class=tokenizer,
           args=dpo_config(max_steps=20, per_device_train_batch_size=8, learning_rate=3e-2, beta=0.3),
           train_dataset=preferences["train"].shuffle(seed=0).select(range(160))).train()
dpo_policy.eval()
''',
    },
}

MUTANT_CASES = [pytest.param(exercise, name, source, id=f"{exercise}: {name}",
                             marks=[pytest.mark.slow] if exercise == TRAINED and "trained" != name.split()[0] else [])
                for exercise, mutants in MUTANTS.items() for name, source in mutants.items()]


def test_every_exercise_has_three_mutants():
    assert set(MUTANTS) == set(EXERCISES)
    assert all(len(m) >= 3 for m in MUTANTS.values())


@pytest.mark.parametrize("exercise, name, source", MUTANT_CASES)
def test_mutant_loses_points(base_namespace, exercise, name, source):
    ns = namespace_with(base_namespace, source)
    result = score(ns, exercise)
    assert result.score < result.max_score, f"'{name}' kept full marks in {exercise}"
    spared = [e for e in EXERCISES if e != exercise and e not in dependents(exercise) and e != TRAINED]
    for other in spared:
        other_result = score(ns, other)
        assert other_result.score == other_result.max_score, f"'{name}' ({exercise}) cost points in {other}: {describe(other_result)}"


def test_blank_exercises_score_zero(base_namespace):
    for exercise in EXERCISES:
        if exercise == TRAINED:
            ns = dict(base_namespace)
            ns.pop("dpo_policy", None)
        else:
            name = re.search(r"^def (\w+)", solution_sources()[exercise], re.MULTILINE).group(1)
            ns = namespace_with(base_namespace, f"def {name}(*args, **kwargs):\n    raise NotImplementedError()\n")
        assert score(ns, exercise).score == 0, exercise


# -- junk: no right answer, no points ----------------------------------------------------------------
# Besides the generic junk forms: a "trained" policy that is the untrained reference model.
JUNK_CASES = [pytest.param(exercise, what, source, id=f"{exercise}: {what}") for exercise in EXERCISES
              for what, source in (junk_implementations(solution_sources()[exercise])
                                   | ({"the policy is the untrained reference": "dpo_policy = dpo_reference\n"}
                                      if exercise == TRAINED else {})).items()]


@pytest.mark.parametrize("exercise, what, source", JUNK_CASES)
def test_junk_scores_nothing(base_namespace, exercise, what, source):
    """A function that returns junk or raises, or a policy that is junk, earns no check's points."""
    assert_junk_scores_nothing(score(namespace_with(base_namespace, source), exercise), exercise, what)


# -- other correct implementations ------------------------------------------------------------------

ALTERNATIVES = {
    "preference_loss": {
        "softplus": "def preference_loss(c, r):\n    return F.softplus(r - c).mean()\n",
        "binary cross-entropy with logits": ("def preference_loss(c, r):\n"
                                             "    return F.binary_cross_entropy_with_logits(c - r, torch.ones_like(c))\n"),
    },
    "gather_logprobs": {
        "logits minus logsumexp": ('def gather_logprobs(logits, labels):\n'
                                   '    picked = logits.gather(-1, labels[..., None]).squeeze(-1)\n'
                                   '    return picked - logits.logsumexp(-1)\n'),
        "cross-entropy": ('def gather_logprobs(logits, labels):\n'
                          '    flat = -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")\n'
                          '    return flat.reshape(labels.shape)\n'),
    },
    "sequence_logprob": {
        "labels with ignore_index": '''
def sequence_logprob(model, input_ids, attention_mask, response_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    labels = input_ids[:, 1:].masked_fill(~response_mask[:, 1:].bool(), -100)
    nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    return -nll.sum(-1)
''',
        "row by row": '''
def sequence_logprob(model, input_ids, attention_mask, response_mask):
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
''',
    },
    "shaped_rewards": {
        "row by row": '''
def shaped_rewards(score, logprobs, ref_logprobs, response_mask, beta):
    out = torch.zeros_like(logprobs)
    for b in range(len(out)):
        idx = response_mask[b].nonzero().flatten()
        out[b, idx] = -beta * (logprobs[b, idx] - ref_logprobs[b, idx])
        out[b, idx[-1]] += score[b]
    return out
''',
        "one-hot of the last token": '''
def shaped_rewards(score, logprobs, ref_logprobs, response_mask, beta):
    m = response_mask.to(logprobs.dtype)
    after = m.flip(1).cumsum(1).flip(1)  # response tokens still to come, this one included
    last = (after == 1) & response_mask.bool()
    return -beta * (logprobs - ref_logprobs) * m + last * score[:, None].to(logprobs.dtype)
''',
    },
    "gae": {
        "row by row on the response block": '''
def gae(rewards, values, gamma=1.0, lam=0.95, mask=None):
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
''',
        "textbook loop with masked next values": '''
def gae(rewards, values, gamma=1.0, lam=0.95, mask=None):
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
''',
    },
    "ppo_clip_loss": {
        "masked_select": '''
def ppo_clip_loss(logprobs, old_logprobs, advantages, clip_eps=0.2, mask=None):
    if mask is None:
        mask = torch.ones_like(logprobs, dtype=torch.bool)
    lp, old, a = (x.masked_select(mask.bool()) for x in (logprobs, old_logprobs, advantages))
    ratio = (lp - old).exp()
    return torch.max(-ratio * a, -ratio.clamp(1 - clip_eps, 1 + clip_eps) * a).mean()
''',
        "case by case": '''
def ppo_clip_loss(logprobs, old_logprobs, advantages, clip_eps=0.2, mask=None):
    ratio = torch.exp(logprobs - old_logprobs)
    capped = torch.where(advantages >= 0, torch.clamp(ratio, max=1 + clip_eps), torch.clamp(ratio, min=1 - clip_eps))
    per_token = -capped * advantages
    if mask is None:
        return per_token.mean()
    return per_token[mask.bool()].sum() / mask.sum()
''',
    },
    "dpo_loss": {
        "softplus of the negative margin": '''
def dpo_loss(pc, pr, rc, rr, beta=0.1):
    logits = (pc - pr) - (rc - rr)
    return F.softplus(-beta * logits).mean(), (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()
''',
        "log of sigmoid in float64": '''
def dpo_loss(pc, pr, rc, rr, beta=0.1):
    c, r = beta * (pc - rc), beta * (pr - rr)
    loss = -F.logsigmoid((c - r).double()).mean().to(c.dtype)
    return loss, c, r
''',
    },
    "dpo_training": {
        "own training loop with dpo_loss": '''
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
''',
        "other DPOTrainer settings": '''
torch.manual_seed(1)
dpo_policy = load_model("course-lm")
DPOTrainer(model=dpo_policy, ref_model=load_model("course-lm").eval(), processing_class=tokenizer,
           args=dpo_config(max_steps=25, per_device_train_batch_size=8, learning_rate=1e-3, beta=0.2),
           train_dataset=preferences["train"].select(range(1000, 1200))).train()
''',
    },
}

ALTERNATIVE_CASES = [pytest.param(exercise, name, source, id=f"{exercise}: {name}",
                                  marks=[pytest.mark.slow] if exercise == TRAINED else [])
                     for exercise, alternatives in ALTERNATIVES.items() for name, source in alternatives.items()]


def test_every_exercise_has_two_alternatives():
    assert set(ALTERNATIVES) == set(EXERCISES)
    assert all(len(a) >= 2 for a in ALTERNATIVES.values())


@pytest.mark.parametrize("exercise, name, source", ALTERNATIVE_CASES)
def test_alternative_solution_gets_full_marks(base_namespace, exercise, name, source):
    ns = namespace_with(base_namespace, source)
    for affected in [exercise, *sorted(dependents(exercise))]:
        result = score(ns, affected)
        assert result.score == result.max_score, f"'{name}' ({exercise}) lost points in {affected}: {describe(result)}"


# -- what ships to students, and the notebook's shape -------------------------------------------------

def test_student_files_hold_no_reference_solution():
    import ast

    import grader.reference.rlhf as reference

    solution_names = {name for name, obj in vars(reference).items()
                      if not name.startswith("_") and getattr(obj, "__module__", None) == reference.__name__}
    assert {"gae", "ppo_clip_loss", "dpo_loss"} <= solution_names
    for path in (ROOT / "llmcourse" / "checks" / "rlhf.py", ROOT / "llmcourse" / "rlhf_tools.py"):
        tree = ast.parse(path.read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not any(name.split(".")[0] == "grader" for name in imported), path
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert not defined & solution_names, (path, defined & solution_names)


def test_notebook_follows_the_course_conventions():
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source == ("import torch\nimport torch.nn as nn\nimport matplotlib.pyplot as plt\n"
                              "from llmcourse import notebook_setup, check\n\ndevice = notebook_setup()")
    solutions = {c.metadata["nbgrader"]["grade_id"] for c in code if c.metadata.get("nbgrader", {}).get("solution")}
    assert solutions == set(EXERCISES)
    for cell in code:
        assert not cell.get("outputs") and cell.get("execution_count") is None
        if is_check_cell(cell):
            exercise = cell.metadata["nbgrader"]["grade_id"].removeprefix("check_")
            assert cell.source == (f'check("05_rlhf/{exercise}")\n### BEGIN HIDDEN TESTS\n'
                                   f'check("05_rlhf/{exercise}", hidden=True)\n### END HIDDEN TESTS')
    assert any("```mermaid" in c.source for c in nb.cells if c.cell_type == "markdown")
