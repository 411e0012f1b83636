"""04_lora: the cases its checks are tried against (see tests/specs/__init__.py for the form).

A wrong LoRALinear subclasses the notebook's and replaces only the method that holds its mistake (a wrong
`__init__` skips the notebook's by calling nn.Module's). `pad_batch` is given in the notebook, not an
exercise: the finetune cases call the notebook's, except one that replaces it with a wrong one.
"""
from __future__ import annotations

import math
from collections import Counter

import torch
import torch.nn as nn

from grader.reference.lora import LoRALinear, finetune as _finetune, pad_batch, rouge_l as _rouge_l
from tests.specs import Spec

SPEC = Spec(
    "04_lora",
    depends_on={
        "count_trainable_parameters": set(),
        "lora_parameter_count": set(),
        "lora_linear": set(),
        "inject_lora": {"lora_linear"},
        "merge_lora": {"lora_linear", "inject_lora"},
        "rouge_n": set(),
        "rouge_l": set(),
        "finetune": set(),
    },
    solution_names={"lora_linear": "LoRALinear"},
    # The merge_lora checks wrap their models with the student's inject_lora first.
    used_by_checks={"merge_lora": {"inject_lora", "lora_linear"}},
    student_modules=("llmcourse.lora_tools",),
)


# -- count_trainable_parameters ---------------------------------------------------------------------------

@SPEC.mutant("count_trainable_parameters")
def counts_frozen_parameters_too(model):
    return sum(p.numel() for p in model.parameters())


@SPEC.mutant("count_trainable_parameters", name="counts tensors, not elements")
def counts_tensors_not_elements(model):
    return sum(1 for p in model.parameters() if p.requires_grad)


@SPEC.mutant("count_trainable_parameters", name="counts the state dict (shared tensors twice, buffers)")
def counts_the_state_dict(model):
    return sum(v.numel() for v in model.state_dict().values())


@SPEC.mutant("count_trainable_parameters", hint="without wrapping it in a tensor")
def returns_a_tensor(model):
    return torch.tensor(sum(p.numel() for p in model.parameters() if p.requires_grad))


@SPEC.alternative("count_trainable_parameters", name="named_parameters with a filter")
def named_parameters_with_a_filter(model):
    return int(sum(p.numel() for _, p in model.named_parameters() if p.requires_grad))


@SPEC.alternative("count_trainable_parameters")
def deduplicated_by_id(model):
    seen = {id(p): p for m in model.modules() for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in seen.values() if p.requires_grad)


# -- lora_parameter_count ---------------------------------------------------------------------------------

@SPEC.mutant("lora_parameter_count", hint="two separate matrices")
def the_full_matrix_times_r(d_in, d_out, r):
    return r * d_in * d_out


@SPEC.mutant("lora_parameter_count")
def two_copies_of_A(d_in, d_out, r):
    return 2 * r * d_in


@SPEC.mutant("lora_parameter_count")
def a_bias_counted_in_B(d_in, d_out, r):
    return r * (d_in + d_out) + d_out


@SPEC.alternative("lora_parameter_count")
def sum_of_the_two_shapes(d_in, d_out, r):
    return sum(math.prod(s) for s in [(r, d_in), (d_out, r)])


@SPEC.alternative("lora_parameter_count")
def counted_on_real_layers(d_in, d_out, r):
    return sum(p.numel() for p in [*nn.Linear(d_in, r, bias=False, device="meta").parameters(),
                                   *nn.Linear(r, d_out, bias=False, device="meta").parameters()])


# -- lora_linear ------------------------------------------------------------------------------------------

@SPEC.mutant("lora_linear")
class B_initialised_randomly(LoRALinear):
    def __init__(self, base, r, alpha, dropout=0.0):
        nn.Module.__init__(self)
        self.base = base
        self.base.requires_grad_(False)
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout)
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Linear(base.in_features, r, bias=False, **factory)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, **factory)


@SPEC.mutant("lora_linear")
class A_and_B_both_zero(LoRALinear):
    def __init__(self, base, r, alpha, dropout=0.0):
        nn.Module.__init__(self)
        self.base = base
        self.base.requires_grad_(False)
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout)
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Linear(base.in_features, r, bias=False, **factory)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, **factory)
        nn.init.zeros_(self.lora_B.weight)
        nn.init.zeros_(self.lora_A.weight)


@SPEC.mutant("lora_linear", name="scaling r / alpha", hint="scaling = alpha / r")
class scaling_r_over_alpha(LoRALinear):
    def __init__(self, base, r, alpha, dropout=0.0):
        nn.Module.__init__(self)
        self.base = base
        self.base.requires_grad_(False)
        self.scaling = r / alpha
        self.dropout = nn.Dropout(dropout)
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Linear(base.in_features, r, bias=False, **factory)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, **factory)
        nn.init.zeros_(self.lora_B.weight)


@SPEC.mutant("lora_linear", hint="self.scaling")
class no_scaling_in_forward(LoRALinear):
    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x))


@SPEC.mutant("lora_linear")
class base_not_frozen(LoRALinear):
    def __init__(self, base, r, alpha, dropout=0.0):
        nn.Module.__init__(self)
        self.base = base
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout)
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Linear(base.in_features, r, bias=False, **factory)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, **factory)
        nn.init.zeros_(self.lora_B.weight)


@SPEC.mutant("lora_linear", hint="weight AND bias")
class bias_left_trainable(LoRALinear):
    def __init__(self, base, r, alpha, dropout=0.0):
        nn.Module.__init__(self)
        self.base = base
        self.base.weight.requires_grad_(False)
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout)
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Linear(base.in_features, r, bias=False, **factory)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, **factory)
        nn.init.zeros_(self.lora_B.weight)


@SPEC.mutant("lora_linear")
class dropout_on_the_output(LoRALinear):
    def forward(self, x):
        return self.dropout(self.base(x) + self.scaling * self.lora_B(self.lora_A(x)))


@SPEC.mutant("lora_linear", name="merged without the scaling", hint="Multiply B @ A by self.scaling")
class merged_weight_without_the_scaling(LoRALinear):
    def merged(self):
        linear = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(self.base.weight + self.lora_B.weight @ self.lora_A.weight)
            if self.base.bias is not None:
                linear.bias.copy_(self.base.bias)
        return linear


@SPEC.mutant("lora_linear", hint="not add B @ A into the base's weight in place")
class merged_in_place_into_the_base(LoRALinear):
    def merged(self):
        with torch.no_grad():
            self.base.weight += self.scaling * self.lora_B.weight @ self.lora_A.weight
        return self.base


@SPEC.mutant("lora_linear")
class LoRA_factors_always_float32(LoRALinear):
    def __init__(self, base, r, alpha, dropout=0.0):
        nn.Module.__init__(self)
        self.base = base
        self.base.requires_grad_(False)
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout)
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)


@SPEC.alternative("lora_linear", name="functional forward, deepcopy merge, no dropout module when 0")
class functional_forward(nn.Module):
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
        linear = nn.functional.linear
        update = linear(linear(self.dropout(x), self.lora_A.weight), self.lora_B.weight)
        return linear(x, self.base.weight, self.base.bias) + update * self.scaling

    def merged(self):
        import copy

        merged = copy.deepcopy(self.base)
        merged.weight.data += self.scaling * (self.lora_B.weight.data @ self.lora_A.weight.data)
        return merged


@SPEC.alternative("lora_linear", name="explicit kaiming init, matrix products")
class explicit_kaiming_init(nn.Module):
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


# -- inject_lora ------------------------------------------------------------------------------------------

@SPEC.mutant("inject_lora", hint="substring")
def targets_matched_by_substring(model, target_modules, r, alpha, dropout=0.0):
    model.requires_grad_(False)
    chosen = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and any(t in n for t in target_modules)]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    return model


@SPEC.mutant("inject_lora", name="str.endswith without the dot", hint="out_proj")
def endswith_without_the_dot(model, target_modules, r, alpha, dropout=0.0):
    model.requires_grad_(False)
    chosen = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.endswith(tuple(target_modules))]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    return model


@SPEC.mutant("inject_lora", hint="Biases are parameters too")
def biases_left_trainable(model, target_modules, r, alpha, dropout=0.0):
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


@SPEC.mutant("inject_lora")
def the_rest_of_the_model_not_frozen(model, target_modules, r, alpha, dropout=0.0):
    chosen = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
              and any(n == t or n.endswith("." + t) for t in target_modules)]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    return model


@SPEC.mutant("inject_lora")
def frozen_after_wrapping(model, target_modules, r, alpha, dropout=0.0):
    chosen = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
              and any(n == t or n.endswith("." + t) for t in target_modules)]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    model.requires_grad_(False)
    return model


@SPEC.mutant("inject_lora", name="only the top-level children")
def inject_into_the_top_level_children_only(model, target_modules, r, alpha, dropout=0.0):
    model.requires_grad_(False)
    for name, module in list(model.named_children()):
        if isinstance(module, nn.Linear) and name in target_modules:
            setattr(model, name, LoRALinear(module, r, alpha, dropout))
    return model


@SPEC.alternative("inject_lora", name="recursive over named_children")
def inject_recursively_over_named_children(model, target_modules, r, alpha, dropout=0.0):
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


@SPEC.alternative("inject_lora")
def compares_dotted_parts(model, target_modules, r, alpha, dropout=0.0):
    model.requires_grad_(False)

    def matches(name):
        parts = name.split(".")
        return any(parts[-len(t.split(".")):] == t.split(".") for t in target_modules)
    modules = dict(model.named_modules())
    for name in [n for n, m in modules.items() if n and isinstance(m, nn.Linear) and matches(n)]:
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else model, child, LoRALinear(modules[name], r, alpha, dropout))
    return model


# -- merge_lora -------------------------------------------------------------------------------------------

@SPEC.mutant("merge_lora", name="merged without the scaling", hint="alpha / r")
def merge_without_the_scaling(model):
    for name in [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = getattr(parent, child)
        with torch.no_grad():
            layer.base.weight += layer.lora_B.weight @ layer.lora_A.weight
        setattr(parent, child, layer.base)
    return model


@SPEC.mutant("merge_lora")
def the_LoRA_layers_are_not_replaced(model):
    for module in model.modules():
        if isinstance(module, LoRALinear):
            module.merged()
    return model


@SPEC.mutant("merge_lora")
def the_bias_is_dropped(model):
    for name in [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = getattr(parent, child)
        linear = nn.Linear(layer.base.in_features, layer.base.out_features, bias=False)
        with torch.no_grad():
            linear.weight.copy_(layer.base.weight + layer.scaling * layer.lora_B.weight @ layer.lora_A.weight)
        setattr(parent, child, linear)
    return model


@SPEC.mutant("merge_lora", name="only the top-level children")
def merge_the_top_level_children_only(model):
    for name, module in list(model.named_children()):
        if isinstance(module, LoRALinear):
            setattr(model, name, module.merged())
    return model


@SPEC.alternative("merge_lora", name="recursive over named_children")
def merge_recursively_over_named_children(model):
    for name, child in list(model.named_children()):
        if isinstance(child, LoRALinear):
            setattr(model, name, child.merged())
        else:
            merge_recursively_over_named_children(child)
    return model


@SPEC.alternative("merge_lora")
def merges_by_hand(model):
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


# -- rouge_n ----------------------------------------------------------------------------------------------

@SPEC.mutant("rouge_n", hint="Clip")
def counts_not_clipped(candidate, reference, n=1):
    c, r = candidate.lower().split(), reference.lower().split()
    cg = [tuple(c[i:i + n]) for i in range(len(c) - n + 1)]
    rg = [tuple(r[i:i + n]) for i in range(len(r) - n + 1)]
    overlap = sum(1 for g in cg if g in rg)
    p = overlap / len(cg) if cg else 0.0
    rec = min(overlap, len(rg)) / len(rg) if rg else 0.0
    f = 2 * p * rec / (p + rec) if p + rec else 0.0
    return {"precision": p, "recall": rec, "f1": f}


@SPEC.mutant("rouge_n", name="not lower-cased")
def rouge_n_not_lower_cased(candidate, reference, n=1):
    def grams(t):
        t = t.split()
        return Counter(tuple(t[i:i + n]) for i in range(len(t) - n + 1))
    c, r = grams(candidate), grams(reference)
    o = sum((c & r).values())
    p = o / sum(c.values()) if c else 0.0
    rec = o / sum(r.values()) if r else 0.0
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}


@SPEC.mutant("rouge_n", name="n ignored (always unigrams)")
def n_ignored(candidate, reference, n=1):
    c, r = Counter(candidate.lower().split()), Counter(reference.lower().split())
    o = sum((c & r).values())
    p = o / sum(c.values()) if c else 0.0
    rec = o / sum(r.values()) if r else 0.0
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}


@SPEC.mutant("rouge_n")
def divides_by_zero_on_empty_texts(candidate, reference, n=1):
    def grams(t):
        t = t.lower().split()
        return Counter(tuple(t[i:i + n]) for i in range(len(t) - n + 1))
    c, r = grams(candidate), grams(reference)
    o = sum((c & r).values())
    p, rec = o / sum(c.values()), o / sum(r.values())
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}


@SPEC.mutant("rouge_n")
def precision_and_recall_swapped(candidate, reference, n=1):
    def grams(t):
        t = t.lower().split()
        return Counter(tuple(t[i:i + n]) for i in range(len(t) - n + 1))
    c, r = grams(candidate), grams(reference)
    o = sum((c & r).values())
    rec = o / sum(c.values()) if c else 0.0
    p = o / sum(r.values()) if r else 0.0
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}


@SPEC.alternative("rouge_n")
def dictionaries_and_zip(candidate, reference, n=1):
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


@SPEC.alternative("rouge_n")
def list_removal(candidate, reference, n=1):
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


# -- rouge_l ----------------------------------------------------------------------------------------------

@SPEC.mutant("rouge_l", name="unigram overlap instead of the LCS", hint="Order matters")
def unigram_overlap_instead_of_the_lcs(candidate, reference):
    c, r = candidate.lower().split(), reference.lower().split()
    o = sum((Counter(c) & Counter(r)).values())
    p = o / len(c) if c else 0.0
    rec = o / len(r) if r else 0.0
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}


@SPEC.mutant("rouge_l", name="longest common substring (no gaps)", hint="not the longest common substring")
def longest_common_substring(candidate, reference):
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


@SPEC.mutant("rouge_l", name="not lower-cased")
def rouge_l_not_lower_cased(candidate, reference):
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


@SPEC.mutant("rouge_l", original="_rouge_l")
def f1_as_the_mean_of_precision_and_recall(candidate, reference):
    s = _rouge_l(candidate, reference)
    return {"precision": s["precision"], "recall": s["recall"], "f1": (s["precision"] + s["recall"]) / 2}


@SPEC.alternative("rouge_l")
def full_table(candidate, reference):
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


@SPEC.alternative("rouge_l")
def memoised_recursion(candidate, reference):
    from functools import lru_cache

    c, r = tuple(candidate.lower().split()), tuple(reference.lower().split())

    @lru_cache(maxsize=None)
    def lcs(i, j):
        if i == len(c) or j == len(r):
            return 0
        return 1 + lcs(i + 1, j + 1) if c[i] == r[j] else max(lcs(i + 1, j), lcs(i, j + 1))
    n = lcs(0, 0)
    p = n / len(c) if c else 0.0
    rec = n / len(r) if r else 0.0
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec > 0 else 0.0}


# -- finetune ---------------------------------------------------------------------------------------------

@SPEC.mutant("finetune", name="no zero_grad (gradients pile up)")
def no_zero_grad(model, dataset, steps, lr, batch_size=8, seed=0):
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


@SPEC.mutant("finetune")
def a_new_optimizer_every_step(model, dataset, steps, lr, batch_size=8, seed=0):
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


@SPEC.mutant("finetune", original="_finetune")
def unfreezes_every_parameter(model, dataset, steps, lr, batch_size=8, seed=0):
    model.requires_grad_(True)
    return _finetune(model, dataset, steps, lr, batch_size, seed)


@SPEC.mutant("finetune")
def the_global_random_state_instead_of_the_seed(model, dataset, steps, lr, batch_size=8, seed=0):
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


def pad_batch_labelling_the_padding(examples, pad_id=0):
    """The notebook's pad_batch, but padding is labelled `pad_id` instead of -100, so the loss counts it."""
    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        input_ids[i, :n] = torch.as_tensor(e["input_ids"])
        labels[i, :n] = torch.as_tensor(e["labels"])
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


@SPEC.mutant("finetune", uses=(("pad_batch", pad_batch_labelling_the_padding),), original="_finetune")
def padding_labelled_with_the_pad_id(model, dataset, steps, lr, batch_size=8, seed=0):
    """The notebook's own finetune; the mistake is in the pad_batch it calls."""
    return _finetune(model, dataset, steps, lr, batch_size, seed)


@SPEC.mutant("finetune")
def batches_drawn_with_replacement(model, dataset, steps, lr, batch_size=8, seed=0):
    import random

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng = random.Random(seed)
    losses = []
    model.train()
    for _ in range(steps):
        loss = model(**pad_batch([rng.choice(dataset) for _ in range(batch_size)])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@SPEC.alternative("finetune")
def an_index_pointer_and_its_own_loss(model, dataset, steps, lr, batch_size=8, seed=0):
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
        loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        losses.append(float(loss.detach()))
    return losses


@SPEC.alternative("finetune")
def a_DataLoader_over_each_shuffled_pass(model, dataset, steps, lr, batch_size=8, seed=0):
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
