"""The 04_lora checks, run in-process against the notebook's own code, wrong code and other right code.

- The reference solution (the source notebook's cells) earns every point, and each exercise's checks are
  worth exactly the points of its check cell.
- Every exercise has plausible wrong implementations (mutants); each must lose points in its exercise, and
  every exercise that does not use the mutated one must keep full marks.
- Every exercise has alternative correct implementations; they earn full marks, in their exercise and in
  every exercise that builds on it.
- The reference ROUGE agrees with Google's `rouge-score` where its tokenizer agrees with ours (skipped when
  that package is not installed).

A mutant or alternative is source code executed after the notebook's cells, in a fresh namespace, so that the
notebook's other functions pick it up exactly as they would in a student's kernel.
"""
from __future__ import annotations

import ast
import random
from pathlib import Path

import nbformat
import pytest

from tests.exercises import Assignment
from tests.notebooks import is_check_cell, notebook_namespace

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "source" / "04_lora" / "lora.ipynb"

# What each exercise's checks reach besides the exercise itself: the merge_lora checks wrap their models
# with the student's inject_lora first.
USED_BY_CHECKS = {"merge_lora": {"inject_lora", "lora_linear"}}
DEPENDS_ON = {
    "count_trainable_parameters": set(),
    "lora_parameter_count": set(),
    "lora_linear": set(),
    "inject_lora": {"lora_linear"},
    "merge_lora": {"lora_linear", "inject_lora"},
    "rouge_n": set(),
    "rouge_l": set(),
    "finetune": set(),
}
SOLUTION_NAMES = {"count_trainable_parameters": "count_trainable_parameters",
                  "lora_parameter_count": "lora_parameter_count", "lora_linear": "LoRALinear",
                  "inject_lora": "inject_lora", "merge_lora": "merge_lora", "rouge_n": "rouge_n",
                  "rouge_l": "rouge_l", "finetune": "finetune"}

A = Assignment("04_lora", DEPENDS_ON, solution_names=SOLUTION_NAMES, used_by_checks=USED_BY_CHECKS)
EXERCISES = A.exercises
uses, dependents, namespace_with, score = A.uses, A.dependents, A.namespace_with, A.score


def test_dependencies_are_what_the_notebook_calls():
    A.assert_dependencies_match_the_notebook()


@pytest.fixture(scope="module", autouse=True)
def reference_results():
    yield from A.reference_results()


@pytest.mark.parametrize("exercise", EXERCISES)
def test_reference_solution_gets_full_marks(reference_results, exercise):
    A.assert_full_marks(reference_results[exercise])


def test_check_points_match_the_notebook(reference_results):
    A.assert_points_match_the_notebook(reference_results)



# -- wrong implementations --------------------------------------------------------------------------

_LORA_INIT = '''
        self.base = base
        self.base.requires_grad_(False)
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout)
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Linear(base.in_features, r, bias=False, **factory)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, **factory)
        nn.init.zeros_(self.lora_B.weight)
'''


def lora_variant(init: str = _LORA_INIT, forward: str | None = None, merged: str | None = None) -> str:
    """A LoRALinear subclass of the notebook's with some methods replaced."""
    source = "class LoRALinear(LoRALinear):\n    def __init__(self, base, r, alpha, dropout=0.0):\n" \
             "        nn.Module.__init__(self)\n" + init
    if forward:
        source += "\n    def forward(self, x):\n" + forward
    if merged:
        source += "\n    def merged(self):\n" + merged
    return source


MUTANTS = {
    "count_trainable_parameters": {
        "counts frozen parameters too": '''
def count_trainable_parameters(model):
    return sum(p.numel() for p in model.parameters())
''',
        "counts tensors, not elements": '''
def count_trainable_parameters(model):
    return sum(1 for p in model.parameters() if p.requires_grad)
''',
        "counts the state dict (shared tensors twice, buffers)": '''
def count_trainable_parameters(model):
    return sum(v.numel() for v in model.state_dict().values())
''',
        "returns a tensor": '''
def count_trainable_parameters(model):
    return torch.tensor(sum(p.numel() for p in model.parameters() if p.requires_grad))
''',
    },
    "lora_parameter_count": {
        "the full matrix times r": '''
def lora_parameter_count(d_in, d_out, r):
    return r * d_in * d_out
''',
        "two copies of A": '''
def lora_parameter_count(d_in, d_out, r):
    return 2 * r * d_in
''',
        "a bias counted in B": '''
def lora_parameter_count(d_in, d_out, r):
    return r * (d_in + d_out) + d_out
''',
    },
    "lora_linear": {
        "B initialised randomly": lora_variant(_LORA_INIT.replace("        nn.init.zeros_(self.lora_B.weight)\n", "")),
        "A and B both zero": lora_variant(_LORA_INIT + "        nn.init.zeros_(self.lora_A.weight)\n"),
        "scaling r / alpha": lora_variant(_LORA_INIT.replace("alpha / r", "r / alpha")),
        "no scaling in forward": lora_variant(forward="        return self.base(x) + self.lora_B(self.lora_A(x))\n"),
        "base not frozen": lora_variant(_LORA_INIT.replace("        self.base.requires_grad_(False)\n", "")),
        "bias left trainable": lora_variant(_LORA_INIT.replace("self.base.requires_grad_(False)",
                                                               "self.base.weight.requires_grad_(False)")),
        "dropout on the output": lora_variant(
            forward="        return self.dropout(self.base(x) + self.scaling * self.lora_B(self.lora_A(x)))\n"),
        "merged without the scaling": lora_variant(merged='''
        linear = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(self.base.weight + self.lora_B.weight @ self.lora_A.weight)
            if self.base.bias is not None:
                linear.bias.copy_(self.base.bias)
        return linear
'''),
        "merged in place into the base": lora_variant(merged='''
        with torch.no_grad():
            self.base.weight += self.scaling * self.lora_B.weight @ self.lora_A.weight
        return self.base
'''),
        "LoRA factors always float32": lora_variant(_LORA_INIT.replace("**factory)", ")")),
    },
    "inject_lora": {
        "targets matched by substring": '''
def inject_lora(model, target_modules, r, alpha, dropout=0.0):
    model.requires_grad_(False)
    chosen = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and any(t in n for t in target_modules)]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    return model
''',
        "str.endswith without the dot": '''
def inject_lora(model, target_modules, r, alpha, dropout=0.0):
    model.requires_grad_(False)
    chosen = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.endswith(tuple(target_modules))]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    return model
''',
        "biases left trainable": '''
def inject_lora(model, target_modules, r, alpha, dropout=0.0):
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            p.requires_grad_(False)
    chosen = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
              and any(n == t or n.endswith("." + t) for t in target_modules)]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    return model
''',
        "the rest of the model not frozen": '''
def inject_lora(model, target_modules, r, alpha, dropout=0.0):
    chosen = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
              and any(n == t or n.endswith("." + t) for t in target_modules)]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    return model
''',
        "frozen after wrapping": '''
def inject_lora(model, target_modules, r, alpha, dropout=0.0):
    chosen = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
              and any(n == t or n.endswith("." + t) for t in target_modules)]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    model.requires_grad_(False)
    return model
''',
        "only the top-level children": '''
def inject_lora(model, target_modules, r, alpha, dropout=0.0):
    model.requires_grad_(False)
    for name, module in list(model.named_children()):
        if isinstance(module, nn.Linear) and name in target_modules:
            setattr(model, name, LoRALinear(module, r, alpha, dropout))
    return model
''',
    },
    "merge_lora": {
        "merged without the scaling": '''
def merge_lora(model):
    for name in [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = getattr(parent, child)
        with torch.no_grad():
            layer.base.weight += layer.lora_B.weight @ layer.lora_A.weight
        setattr(parent, child, layer.base)
    return model
''',
        "the LoRA layers are not replaced": '''
def merge_lora(model):
    for module in model.modules():
        if isinstance(module, LoRALinear):
            module.merged()
    return model
''',
        "the bias is dropped": '''
def merge_lora(model):
    for name in [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = getattr(parent, child)
        linear = nn.Linear(layer.base.in_features, layer.base.out_features, bias=False)
        with torch.no_grad():
            linear.weight.copy_(layer.base.weight + layer.scaling * layer.lora_B.weight @ layer.lora_A.weight)
        setattr(parent, child, linear)
    return model
''',
        "only the top-level children": '''
def merge_lora(model):
    for name, module in list(model.named_children()):
        if isinstance(module, LoRALinear):
            setattr(model, name, module.merged())
    return model
''',
    },
    "rouge_n": {
        "counts not clipped": '''
def rouge_n(candidate, reference, n=1):
    c, r = candidate.lower().split(), reference.lower().split()
    cg = [tuple(c[i:i + n]) for i in range(len(c) - n + 1)]
    rg = [tuple(r[i:i + n]) for i in range(len(r) - n + 1)]
    overlap = sum(1 for g in cg if g in rg)
    p = overlap / len(cg) if cg else 0.0
    rec = min(overlap, len(rg)) / len(rg) if rg else 0.0
    f = 2 * p * rec / (p + rec) if p + rec else 0.0
    return {"precision": p, "recall": rec, "f1": f}
''',
        "not lower-cased": '''
from collections import Counter
def rouge_n(candidate, reference, n=1):
    def grams(t):
        t = t.split()
        return Counter(tuple(t[i:i + n]) for i in range(len(t) - n + 1))
    c, r = grams(candidate), grams(reference)
    o = sum((c & r).values())
    p = o / sum(c.values()) if c else 0.0
    rec = o / sum(r.values()) if r else 0.0
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}
''',
        "n ignored (always unigrams)": '''
from collections import Counter
def rouge_n(candidate, reference, n=1):
    c, r = Counter(candidate.lower().split()), Counter(reference.lower().split())
    o = sum((c & r).values())
    p = o / sum(c.values()) if c else 0.0
    rec = o / sum(r.values()) if r else 0.0
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}
''',
        "divides by zero on empty texts": '''
from collections import Counter
def rouge_n(candidate, reference, n=1):
    def grams(t):
        t = t.lower().split()
        return Counter(tuple(t[i:i + n]) for i in range(len(t) - n + 1))
    c, r = grams(candidate), grams(reference)
    o = sum((c & r).values())
    p, rec = o / sum(c.values()), o / sum(r.values())
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}
''',
        "precision and recall swapped": '''
from collections import Counter
def rouge_n(candidate, reference, n=1):
    def grams(t):
        t = t.lower().split()
        return Counter(tuple(t[i:i + n]) for i in range(len(t) - n + 1))
    c, r = grams(candidate), grams(reference)
    o = sum((c & r).values())
    rec = o / sum(c.values()) if c else 0.0
    p = o / sum(r.values()) if r else 0.0
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}
''',
    },
    "rouge_l": {
        "unigram overlap instead of the LCS": '''
from collections import Counter
def rouge_l(candidate, reference):
    c, r = candidate.lower().split(), reference.lower().split()
    o = sum((Counter(c) & Counter(r)).values())
    p = o / len(c) if c else 0.0
    rec = o / len(r) if r else 0.0
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}
''',
        "longest common substring (no gaps)": '''
def rouge_l(candidate, reference):
    c, r = candidate.lower().split(), reference.lower().split()
    best = 0
    run = [[0] * (len(r) + 1) for _ in range(len(c) + 1)]
    for i in range(1, len(c) + 1):
        for j in range(1, len(r) + 1):
            if c[i - 1] == r[j - 1]:
                run[i][j] = run[i - 1][j - 1] + 1
                best = max(best, run[i][j])
    p = best / len(c) if c else 0.0
    rec = best / len(r) if r else 0.0
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}
''',
        "not lower-cased": '''
def rouge_l(candidate, reference):
    c, r = candidate.split(), reference.split()
    prev = [0] * (len(r) + 1)
    for x in c:
        cur = [0]
        for j, y in enumerate(r):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    p = prev[-1] / len(c) if c else 0.0
    rec = prev[-1] / len(r) if r else 0.0
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}
''',
        "f1 as the mean of precision and recall": '''
_rouge_l = rouge_l
def rouge_l(candidate, reference):
    s = _rouge_l(candidate, reference)
    return {"precision": s["precision"], "recall": s["recall"], "f1": (s["precision"] + s["recall"]) / 2}
''',
    },
    "finetune": {
        "no zero_grad (gradients pile up)": '''
def finetune(model, dataset, steps, lr, batch_size=8, seed=0):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    order, losses = [], []
    model.train()
    for _ in range(steps):
        while len(order) < batch_size:
            order += torch.randperm(len(dataset), generator=g).tolist()
        chosen, order = order[:batch_size], order[batch_size:]
        loss = model(**pad_batch([dataset[i] for i in chosen])).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
''',
        "a new optimizer every step": '''
def finetune(model, dataset, steps, lr, batch_size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    order, losses = [], []
    model.train()
    for _ in range(steps):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        while len(order) < batch_size:
            order += torch.randperm(len(dataset), generator=g).tolist()
        chosen, order = order[:batch_size], order[batch_size:]
        loss = model(**pad_batch([dataset[i] for i in chosen])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
''',
        "unfreezes every parameter": '''
_finetune = finetune
def finetune(model, dataset, steps, lr, batch_size=8, seed=0):
    model.requires_grad_(True)
    return _finetune(model, dataset, steps, lr, batch_size, seed)
''',
        "the global random state instead of the seed": '''
def finetune(model, dataset, steps, lr, batch_size=8, seed=0):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    order, losses = [], []
    model.train()
    for _ in range(steps):
        while len(order) < batch_size:
            order += torch.randperm(len(dataset)).tolist()
        chosen, order = order[:batch_size], order[batch_size:]
        loss = model(**pad_batch([dataset[i] for i in chosen])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
''',
        "padding labelled with the pad id": '''
_pad_batch = pad_batch
def pad_batch(examples, pad_id=0):
    batch = _pad_batch(examples, pad_id)
    batch["labels"] = torch.where(batch["attention_mask"].bool(), batch["labels"], pad_id)
    return batch
''',
        "batches drawn with replacement": '''
import random as _random
def finetune(model, dataset, steps, lr, batch_size=8, seed=0):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng = _random.Random(seed)
    losses = []
    model.train()
    for _ in range(steps):
        loss = model(**pad_batch([rng.choice(dataset) for _ in range(batch_size)])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
''',
    },
}

MUTANT_CASES = [pytest.param(exercise, name, source, id=f"{exercise}: {name}")
                for exercise, mutants in MUTANTS.items() for name, source in mutants.items()]


def test_every_exercise_has_three_mutants():
    assert set(MUTANTS) == set(EXERCISES)
    assert all(len(m) >= 3 for m in MUTANTS.values())


SPECIFIC_HINTS = [  # (exercise, mutant, words that the hint of some failing check must contain)
    ("count_trainable_parameters", "returns a tensor", "without wrapping it in a tensor"),
    ("lora_parameter_count", "the full matrix times r", "two separate matrices"),
    ("lora_linear", "scaling r / alpha", "scaling = alpha / r"),
    ("lora_linear", "no scaling in forward", "self.scaling"),
    ("lora_linear", "merged without the scaling", "Multiply B @ A by self.scaling"),
    ("lora_linear", "merged in place into the base", "not add B @ A into the base's weight in place"),
    ("lora_linear", "bias left trainable", "weight AND bias"),
    ("inject_lora", "targets matched by substring", "substring"),
    ("inject_lora", "str.endswith without the dot", "out_proj"),
    ("inject_lora", "biases left trainable", "Biases are parameters too"),
    ("merge_lora", "merged without the scaling", "alpha / r"),
    ("rouge_n", "counts not clipped", "Clip"),
    ("rouge_l", "unigram overlap instead of the LCS", "Order matters"),
    ("rouge_l", "longest common substring (no gaps)", "not the longest common substring"),
]
EXPECTED_HINT = {(exercise, mutant): words for exercise, mutant, words in SPECIFIC_HINTS}


@pytest.mark.parametrize("exercise, name, source", MUTANT_CASES)
def test_mutant_loses_points(exercise, name, source):
    A.assert_mutant_loses_points(exercise, name, source, EXPECTED_HINT.get((exercise, name)))


def test_specific_hints_refer_to_real_mutants():
    assert all(mutant in MUTANTS[exercise] for exercise, mutant, _ in SPECIFIC_HINTS)


not_implemented = A.not_implemented


@pytest.mark.parametrize("exercise", EXERCISES)
def test_an_exercise_keeps_its_points_when_what_it_does_not_use_is_broken(exercise):
    # Whatever is wrong elsewhere, no check of `exercise` may notice unless `exercise` uses it: every exercise it does
    # not use is made unimplemented, then given its first mutant (each mutant's own exercise: test_mutant_loses_points).
    A.assert_spared_by_what_it_does_not_use(
        exercise, {e: [("not implemented", not_implemented(e)), next(iter(MUTANTS[e].items()))] for e in EXERCISES})


# -- junk: no right answer, no points ----------------------------------------------------------------
@pytest.mark.parametrize("exercise, what, source", [pytest.param(*case, id=f"{case[0]}: {case[1]}")
                                                     for case in A.junk_cases()])
def test_junk_scores_nothing(exercise, what, source):
    """A function that returns junk or raises (a module whose methods do) earns no check's points, side
    properties (inputs unchanged, dtype, shape, structure, errors raised) included."""
    A.assert_junk_scores_nothing(exercise, what, source)


# -- other correct implementations ------------------------------------------------------------------

ALTERNATIVES = {
    "count_trainable_parameters": {
        "named_parameters with a filter": '''
def count_trainable_parameters(model):
    return int(sum(p.numel() for _, p in model.named_parameters() if p.requires_grad))
''',
        "deduplicated by id": '''
def count_trainable_parameters(model):
    seen = {id(p): p for m in model.modules() for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in seen.values() if p.requires_grad)
''',
    },
    "lora_parameter_count": {
        "sum of the two shapes": '''
import math as _math
def lora_parameter_count(d_in, d_out, r):
    return sum(_math.prod(s) for s in [(r, d_in), (d_out, r)])
''',
        "counted on real layers": '''
def lora_parameter_count(d_in, d_out, r):
    return sum(p.numel() for p in [*nn.Linear(d_in, r, bias=False, device="meta").parameters(),
                                   *nn.Linear(r, d_out, bias=False, device="meta").parameters()])
''',
    },
    "lora_linear": {
        "functional forward, deepcopy merge, no dropout module when 0": '''
import copy as _copy
import torch.nn.functional as _F
class LoRALinear(nn.Module):
    def __init__(self, base, r, alpha, dropout=0.0):
        super().__init__()
        for p in base.parameters():
            p.requires_grad = False
        self.base = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False).to(base.weight)
        self.lora_B = nn.Linear(r, base.out_features, bias=False).to(base.weight)
        with torch.no_grad():
            self.lora_B.weight.zero_()
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        update = _F.linear(_F.linear(self.dropout(x), self.lora_A.weight), self.lora_B.weight)
        return _F.linear(x, self.base.weight, self.base.bias) + update * self.scaling

    def merged(self):
        linear = _copy.deepcopy(self.base)
        linear.weight.data += self.scaling * (self.lora_B.weight.data @ self.lora_A.weight.data)
        return linear
''',
        "explicit kaiming init, matrix products": '''
class LoRALinear(nn.Module):
    def __init__(self, base, r, alpha, dropout=0.0):
        super().__init__()
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        self.base = base
        self.scaling = float(alpha) / r
        self.dropout = nn.Dropout(p=dropout)
        self.lora_A = nn.Linear(base.in_features, r, bias=False, dtype=base.weight.dtype, device=base.weight.device)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, dtype=base.weight.dtype, device=base.weight.device)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.constant_(self.lora_B.weight, 0.0)

    def forward(self, x):
        return self.base(x) + (self.dropout(x) @ self.lora_A.weight.T @ self.lora_B.weight.T) * self.scaling

    @torch.no_grad()
    def merged(self):
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        out = out.to(self.base.weight)
        out.weight.copy_(self.base.weight + (self.lora_B.weight @ self.lora_A.weight) * self.scaling)
        if self.base.bias is not None:
            out.bias.copy_(self.base.bias)
        return out
''',
    },
    "inject_lora": {
        "recursive over named_children": '''
def inject_lora(model, target_modules, r, alpha, dropout=0.0):
    for p in model.parameters():
        p.requires_grad = False
    def visit(module, prefix):
        for name, child in list(module.named_children()):
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(child, nn.Linear) and any(full == t or full.endswith("." + t) for t in target_modules):
                setattr(module, name, LoRALinear(child, r, alpha, dropout))
            else:
                visit(child, full)
    visit(model, "")
    return model
''',
        "compares dotted parts": '''
def inject_lora(model, target_modules, r, alpha, dropout=0.0):
    model.requires_grad_(False)
    def matches(name):
        parts = name.split(".")
        return any(parts[-len(t.split(".")):] == t.split(".") for t in target_modules)
    modules = dict(model.named_modules())
    for name in [n for n, m in modules.items() if n and isinstance(m, nn.Linear) and matches(n)]:
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else model, child, LoRALinear(modules[name], r, alpha, dropout))
    return model
''',
    },
    "merge_lora": {
        "recursive over named_children": '''
def merge_lora(model):
    for name, child in list(model.named_children()):
        if isinstance(child, LoRALinear):
            setattr(model, name, child.merged())
        else:
            merge_lora(child)
    return model
''',
        "merges by hand": '''
def merge_lora(model):
    modules = dict(model.named_modules())
    for name, layer in [(n, m) for n, m in modules.items() if isinstance(m, LoRALinear)]:
        parent, _, child = name.rpartition(".")
        base = layer.base
        delta = layer.scaling * (layer.lora_B.weight @ layer.lora_A.weight)
        linear = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None, dtype=base.weight.dtype)
        linear.weight = nn.Parameter((base.weight + delta).detach().clone())
        if base.bias is not None:
            linear.bias = nn.Parameter(base.bias.detach().clone())
        setattr(modules[parent] if parent else model, child, linear)
    return model
''',
    },
    "rouge_n": {
        "dictionaries and zip": '''
def rouge_n(candidate, reference, n=1):
    def counts(text):
        tokens = text.lower().split()
        out = {}
        for gram in zip(*(tokens[i:] for i in range(n))):
            out[gram] = out.get(gram, 0) + 1
        return out
    c, r = counts(candidate), counts(reference)
    overlap = sum(min(k, r.get(g, 0)) for g, k in c.items())
    nc, nr = sum(c.values()), sum(r.values())
    p = overlap / nc if nc > 0 else 0.0
    rec = overlap / nr if nr > 0 else 0.0
    return {"precision": float(p), "recall": float(rec), "f1": 0.0 if overlap == 0 else 2 * p * rec / (p + rec)}
''',
        "list removal": '''
def rouge_n(candidate, reference, n=1):
    c, r = candidate.lower().split(), reference.lower().split()
    cg = [c[i:i + n] for i in range(len(c) - n + 1)]
    rg = [r[i:i + n] for i in range(len(r) - n + 1)]
    left, overlap = list(rg), 0
    for g in cg:
        if g in left:
            left.remove(g)
            overlap += 1
    p = overlap / len(cg) if cg else 0.0
    rec = overlap / len(rg) if rg else 0.0
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p and rec else 0.0}
''',
    },
    "rouge_l": {
        "full table": '''
def rouge_l(candidate, reference):
    c, r = candidate.lower().split(), reference.lower().split()
    table = [[0] * (len(r) + 1) for _ in range(len(c) + 1)]
    for i in range(len(c)):
        for j in range(len(r)):
            table[i + 1][j + 1] = table[i][j] + 1 if c[i] == r[j] else max(table[i][j + 1], table[i + 1][j])
    lcs = table[-1][-1]
    if lcs == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    p, rec = lcs / len(c), lcs / len(r)
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec)}
''',
        "memoised recursion": '''
from functools import lru_cache as _cache
def rouge_l(candidate, reference):
    c, r = tuple(candidate.lower().split()), tuple(reference.lower().split())
    @_cache(maxsize=None)
    def lcs(i, j):
        if i == len(c) or j == len(r):
            return 0
        return 1 + lcs(i + 1, j + 1) if c[i] == r[j] else max(lcs(i + 1, j), lcs(i, j + 1))
    n = lcs(0, 0)
    p = n / len(c) if c else 0.0
    rec = n / len(r) if r else 0.0
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec > 0 else 0.0}
''',
    },
    "finetune": {
        "an index pointer and its own loss": '''
import torch.nn.functional as _F
def finetune(model, dataset, steps, lr, batch_size=8, seed=0):
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    perm, pos, losses = torch.randperm(len(dataset), generator=g), 0, []
    model.train()
    for step in range(steps):
        picked = []
        while len(picked) < batch_size:
            if pos == len(perm):
                perm, pos = torch.randperm(len(dataset), generator=g), 0
            take = min(batch_size - len(picked), len(perm) - pos)
            picked += perm[pos:pos + take].tolist()
            pos += take
        batch = pad_batch([dataset[i] for i in picked])
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        labels = batch["labels"].to(device)
        loss = _F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        losses.append(float(loss.detach()))
    return losses
''',
        "a DataLoader over each shuffled pass": '''
def finetune(model, dataset, steps, lr, batch_size=8, seed=0):
    optimizer = torch.optim.AdamW(filter(lambda p: p.requires_grad, model.parameters()), lr=lr)
    g = torch.Generator().manual_seed(seed)
    def batches():
        queue = []
        while True:
            while len(queue) < batch_size:
                queue.extend(torch.randperm(len(dataset), generator=g).tolist())
            yield [dataset[i] for i in queue[:batch_size]]
            del queue[:batch_size]
    losses = []
    model.train()
    for _, examples in zip(range(steps), batches()):
        out = model(**pad_batch(examples))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    model.eval()
    return losses
''',
    },
}

ALTERNATIVE_CASES = [pytest.param(exercise, name, source, id=f"{exercise}: {name}")
                     for exercise, alternatives in ALTERNATIVES.items() for name, source in alternatives.items()]


def test_every_exercise_has_two_alternatives():
    assert set(ALTERNATIVES) == set(EXERCISES)
    assert all(len(a) >= 2 for a in ALTERNATIVES.values())


@pytest.mark.parametrize("exercise, name, source", ALTERNATIVE_CASES)
def test_alternative_solution_gets_full_marks(exercise, name, source):
    A.assert_alternative_gets_full_marks(exercise, name, source)


# -- the reference against other implementations ------------------------------------------------------

def _plain_pairs(seed: int, count: int) -> list[tuple[str, str]]:
    """Lower-case letter words only, where rouge-score's tokenizer and ours split the same way."""
    rng = random.Random(seed)
    words = ["the", "cat", "dog", "sat", "on", "mat", "a", "red", "ball"]
    return [tuple(" ".join(rng.choice(words) for _ in range(rng.randint(1, 10))) for _ in range(2))
            for _ in range(count)]


def test_reference_rouge_agrees_with_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    from grader.reference import lora as ref

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    for cand, refr in _plain_pairs(0, 200):
        expected = scorer.score(refr, cand)  # rouge-score takes (target, prediction)
        for ours, key in ((ref.rouge_n(cand, refr, 1), "rouge1"), (ref.rouge_n(cand, refr, 2), "rouge2"),
                          (ref.rouge_l(cand, refr), "rougeL")):
            theirs = expected[key]
            assert ours["precision"] == pytest.approx(theirs.precision)
            assert ours["recall"] == pytest.approx(theirs.recall)
            assert ours["f1"] == pytest.approx(theirs.fmeasure)


# -- what ships to students -------------------------------------------------------------------------

def test_visible_checks_and_tools_hold_no_reference_solution():
    import grader.reference.lora as reference

    solution_names = {name for name, obj in vars(reference).items()
                      if not name.startswith("_") and getattr(obj, "__module__", None) == reference.__name__}
    assert {"LoRALinear", "inject_lora", "rouge_l", "finetune"} <= solution_names
    for path in (ROOT / "llmcourse" / "checks" / "lora.py", ROOT / "llmcourse" / "lora_tools.py"):
        tree = ast.parse(path.read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not any(name.split(".")[0] == "grader" for name in imported), imported
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert not defined & (solution_names - {"pad_batch"}), defined & solution_names


def test_notebook_follows_the_course_conventions():
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source == ("import torch\nimport torch.nn as nn\nimport matplotlib.pyplot as plt\n"
                              "from llmcourse import notebook_setup, check\n\ndevice = notebook_setup()")
    assert code[0].metadata["nbgrader"] == {"grade": False, "solution": False, "locked": True, "grade_id": "setup",
                                            "schema_version": 3}
    solutions = {c.metadata["nbgrader"]["grade_id"]: c for c in code if c.metadata.get("nbgrader", {}).get("solution")}
    assert set(solutions) == set(EXERCISES)
    for exercise, cell in solutions.items():
        assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source, exercise
    for cell in code:
        assert not cell.get("outputs") and cell.get("execution_count") is None
        assert not any(line.lstrip().startswith(("%", "!")) for line in cell.source.splitlines())
        if is_check_cell(cell):
            exercise = cell.metadata["nbgrader"]["grade_id"].removeprefix("check_")
            assert cell.source == (f'check("04_lora/{exercise}")\n### BEGIN HIDDEN TESTS\n'
                                   f'check("04_lora/{exercise}", hidden=True)\n### END HIDDEN TESTS')
    assert any("```mermaid" in c.source for c in nb.cells if c.cell_type == "markdown")


def test_solution_code_matches_the_reference():
    """The notebook's solution cells and grader/reference/lora.py agree on every exercise (same outputs)."""
    from grader.reference import lora as ref

    ns = notebook_namespace(NOTEBOOK)
    for cand, refr in _plain_pairs(2, 50):
        assert ns["rouge_n"](cand, refr, 2) == ref.rouge_n(cand, refr, 2)
        assert ns["rouge_l"](cand, refr) == ref.rouge_l(cand, refr)
    assert ns["lora_parameter_count"](12, 34, 5) == ref.lora_parameter_count(12, 34, 5)
