"""04_lora: the cases its checks are tried against (see tests/specs/__init__.py for the form).

A wrong LoRALinear subclasses the notebook's and replaces only the method that holds its mistake (a wrong
`__init__` skips the notebook's by calling nn.Module's). `pad_batch` is given in the notebook, not an
exercise: the finetune cases call the notebook's, except one that replaces it with a wrong one.
"""
from __future__ import annotations

import copy
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
    student_modules=("llmcourse.lora_tools", "llmcourse.in_kernel"),
)


# -- count_trainable_parameters ---------------------------------------------------------------------------

@SPEC.mutant("count_trainable_parameters", hint="Frozen parameters (requires_grad=False) are not trainable")
def counts_frozen_parameters_too(model):
    return sum(p.numel() for p in model.parameters())


@SPEC.mutant("count_trainable_parameters", hint="number of trainable parameter TENSORS",
             name="counts tensors, not elements")
def counts_tensors_not_elements(model):
    return sum(1 for p in model.parameters() if p.requires_grad)


@SPEC.mutant("count_trainable_parameters", hint="a state_dict lists it under both names",
             name="counts the state dict (shared tensors twice, buffers)")
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


@SPEC.mutant("lora_parameter_count", hint="B is (d_out, r), not (r, d_in) like A")
def two_copies_of_A(d_in, d_out, r):
    return 2 * r * d_in


@SPEC.mutant("lora_parameter_count", hint="A bias was counted")
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

@SPEC.mutant("lora_linear", hint="Initialise lora_B's weight to zero")
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


@SPEC.mutant("lora_linear", hint="Only B starts at zero")
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


@SPEC.mutant("lora_linear", hint="requires_grad_(False)")
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


@SPEC.mutant("lora_linear", hint="not on the base's input or the output")
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


@SPEC.mutant("lora_linear", hint="with the base's dtype and device")
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


@SPEC.mutant("inject_lora", hint="Freeze the whole model first with model.requires_grad_(False)")
def the_rest_of_the_model_not_frozen(model, target_modules, r, alpha, dropout=0.0):
    chosen = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
              and any(n == t or n.endswith("." + t) for t in target_modules)]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    return model


@SPEC.mutant("inject_lora", hint="Freeze first, wrap after")
def frozen_after_wrapping(model, target_modules, r, alpha, dropout=0.0):
    chosen = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
              and any(n == t or n.endswith("." + t) for t in target_modules)]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    model.requires_grad_(False)
    return model


@SPEC.mutant("inject_lora", hint="Only the model's direct children were wrapped", name="only the top-level children")
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


@SPEC.mutant("merge_lora", hint="leaves the model as it was")
def the_LoRA_layers_are_not_replaced(model):
    for module in model.modules():
        if isinstance(module, LoRALinear):
            module.merged()
    return model


@SPEC.mutant("merge_lora", hint="keeps the base layer's bias")
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


@SPEC.mutant("merge_lora", hint="Only the model's direct children were merged", name="only the top-level children")
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


@SPEC.mutant("rouge_n", hint="The tokens are not lower-cased", name="not lower-cased")
def rouge_n_not_lower_cased(candidate, reference, n=1):
    def grams(t):
        t = t.split()
        return Counter(tuple(t[i:i + n]) for i in range(len(t) - n + 1))
    c, r = grams(candidate), grams(reference)
    o = sum((c & r).values())
    p = o / sum(c.values()) if c else 0.0
    rec = o / sum(r.values()) if r else 0.0
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}


@SPEC.mutant("rouge_n", hint="n is ignored", name="n ignored (always unigrams)")
def n_ignored(candidate, reference, n=1):
    c, r = Counter(candidate.lower().split()), Counter(reference.lower().split())
    o = sum((c & r).values())
    p = o / sum(c.values()) if c else 0.0
    rec = o / sum(r.values()) if r else 0.0
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}


@SPEC.mutant("rouge_n", hint="Test before you divide")
def divides_by_zero_on_empty_texts(candidate, reference, n=1):
    def grams(t):
        t = t.lower().split()
        return Counter(tuple(t[i:i + n]) for i in range(len(t) - n + 1))
    c, r = grams(candidate), grams(reference)
    o = sum((c & r).values())
    p, rec = o / sum(c.values()), o / sum(r.values())
    return {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}


@SPEC.mutant("rouge_n", hint="precision and recall are swapped")
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


@SPEC.mutant("rouge_l", hint="The tokens are not lower-cased", name="not lower-cased")
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


@SPEC.mutant("rouge_l", hint="not the plain mean (p + r) / 2", original="_rouge_l")
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

@SPEC.mutant("finetune", hint="Without zero_grad the gradients of earlier steps add up",
             name="no zero_grad (gradients pile up)")
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


@SPEC.mutant("finetune", hint="before the loop (it keeps running averages of the gradients")
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


@SPEC.mutant("finetune", hint="never unfreeze anything", original="_finetune")
def unfreezes_every_parameter(model, dataset, steps, lr, batch_size=8, seed=0):
    model.requires_grad_(True)
    return _finetune(model, dataset, steps, lr, batch_size, seed)


@SPEC.mutant("finetune", hint="not the global random state")
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


@SPEC.mutant("finetune", hint="padding gets label -100, so the loss ignores it",
             uses=(("pad_batch", pad_batch_labelling_the_padding),), original="_finetune")
def padding_labelled_with_the_pad_id(model, dataset, steps, lr, batch_size=8, seed=0):
    """The notebook's own finetune; the mistake is in the pad_batch it calls."""
    return _finetune(model, dataset, steps, lr, batch_size, seed)


@SPEC.mutant("finetune", hint="(a permutation, not random draws)")
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


# -- the notebook's solution and the reference agree on these inputs ------------------------------------
#
# LoRALinear draws lora_A from the global random state (nn.Linear's own initialisation): every comparison that
# builds LoRA layers builds both sides from one seed, in a forked random state, checks that each lora_A is such a
# random start, gives the reference's the notebook's (`_align_random_starts`), and compares the rest exactly.

def _assert_same(mine, theirs, what):
    from tests.test_checks import assert_same  # imported late: tests.test_checks imports this module

    assert_same(mine, theirs, what)


def _seeded(seed, build):
    """`build()` from the global random state seeded with `seed`, leaving the caller's random state alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _structure(model, flags=True):
    """What two models must share besides their state: the class of each submodule that holds parameters, the
    flag of each parameter (unless `flags` is False), and each LoRA layer's scaling and dropout probability."""
    return {"types": {name: type(m).__name__ for name, m in model.named_modules()
                      if type(m).__name__ == "LoRALinear" or any(True for _ in m.parameters(recurse=False))},
            "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()} if flags else None,
            "lora": {name: (float(m.scaling), float(getattr(m.dropout, "p", 0.0))) for name, m in model.named_modules()
                     if type(m).__name__ == "LoRALinear"}}


def _assert_same_models(mine, theirs, what, inputs=(), flags=True):
    """The same structure, the same state, the same outputs for `inputs`. `flags=False` leaves out which
    parameters are trainable (merged() and merge_lora leave it open)."""
    _assert_same(_structure(mine, flags), _structure(theirs, flags), f"{what} (structure)")
    _assert_same(dict(mine.state_dict()), dict(theirs.state_dict()), f"{what} (state)")
    for i, x in enumerate(inputs):
        with torch.no_grad():
            _assert_same(mine(x), theirs(x), f"{what} (output {i})")


def _align_random_starts(mine, theirs, what):
    """lora_A starts random (nn.Linear's own initialisation), which the contract does not pin down to the draw:
    check that each side's lora_A is such a start (not zero, within nn.Linear's bound 1 / sqrt(in_features)),
    then give the reference's layers the notebook's, so that the comparisons after it are exact. (Both sides
    are built from one seed, so today the draws are the same anyway.)"""
    _assert_same(_structure(mine), _structure(theirs), f"{what} (structure)")
    theirs_layers = dict(theirs.named_modules())
    for name, layer in mine.named_modules():
        if type(layer).__name__ == "LoRALinear":
            a, b = layer.lora_A.weight.detach(), theirs_layers[name].lora_A.weight.detach()
            assert a.shape == b.shape and a.dtype == b.dtype, (what, name, a.shape, b.shape, a.dtype, b.dtype)
            bound = 1 / math.sqrt(a.shape[1])
            for side, w in (("notebook", a), ("reference", b)):
                assert bool((w != 0).any()) and float(w.abs().max()) <= bound, f"{what}: {side}'s {name}.lora_A"
            b.copy_(a)


def _tiny_llama(seed, **changes):
    from llmcourse.checking.shared.lora import llama_weights, local_llama, tiny_llama_config

    config = tiny_llama_config(**changes)
    return config, local_llama(config, llama_weights(config, seed))


def _logits_of(model, ids):
    return model(input_ids=ids, use_cache=False).logits


def _named_tree(gen, dtype=torch.float32):
    """Layers whose names test the whole-name rule: proj, out_proj, proj_head, inner.proj (and inner.norm, a
    LayerNorm); every nn.Linear has a bias but proj_head."""
    def linear(d_in, d_out, bias=True):
        layer = nn.Linear(d_in, d_out, bias=bias, dtype=dtype)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(d_out, d_in, generator=gen, dtype=dtype) * 0.3)
            if bias:
                layer.bias.copy_(torch.randn(d_out, generator=gen, dtype=dtype) * 0.1)
        return layer

    inner = nn.ModuleDict({"proj": linear(6, 6), "norm": nn.LayerNorm(6, dtype=dtype)})
    return nn.ModuleDict({"proj": linear(6, 4), "out_proj": linear(4, 6), "proj_head": linear(6, 3, bias=False),
                          "inner": inner})


@SPEC.inputs_of("count_trainable_parameters")
def count_trainable_inputs(gen):
    import warnings

    from grader.reference.lora import inject_lora

    yield (nn.Linear(4, 8),), {}
    frozen_bias = nn.Linear(5, 3, dtype=torch.float64)
    frozen_bias.bias.requires_grad_(False)
    yield (frozen_bias,), {}
    tied = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    tied[1].weight = tied[0].weight  # one tensor under two names: counted once
    yield (tied,), {}
    yield (nn.BatchNorm1d(5),), {}  # 10 parameters and 3 buffers
    yield (nn.Module(),), {}  # no parameters at all
    with warnings.catch_warnings():  # torch warns that initialising an empty tensor does nothing
        warnings.simplefilter("ignore")
        yield (nn.Linear(0, 3),), {}  # a weight with no elements
    yield (nn.Sequential(nn.Linear(3, 3), nn.ReLU()).requires_grad_(False),), {}  # everything frozen
    _, llama = _tiny_llama(0, tie_word_embeddings=True)
    yield (llama,), {}
    llama = copy.deepcopy(llama).requires_grad_(False)
    llama.lm_head.requires_grad_(True)  # the output matrix, shared with the embedding
    yield (llama,), {}
    yield (_seeded(0, lambda: inject_lora(_named_tree(gen), ["proj"], 2, 4)),), {}


@SPEC.inputs_of("lora_parameter_count")
def lora_parameter_count_inputs(gen):
    for d_in, d_out, r in [(12, 34, 5), (1, 1, 1), (16, 16, 1), (3, 7, 2), (7, 3, 2), (128, 384, 8),
                           (4096, 4096, 16), (768, 3072, 4), (10, 20, 0)]:
        yield (d_in, d_out, r), {}
    for d_in, d_out, r in torch.randint(1, 5000, (10, 3), generator=gen).tolist():
        yield (d_in, d_out, r % 64 + 1), {}
    yield (), {"d_in": 5, "d_out": 9, "r": 3}


@SPEC.agreement("lora_linear")
def lora_linear_agrees(mine_class, reference_class):
    from llmcourse.checking import generator, randn

    gen = generator(40)
    for case, (d_in, d_out, r, alpha, bias, dtype) in enumerate([
            (6, 3, 2, 4, True, torch.float32), (5, 7, 1, 1.5, False, torch.float64),
            (16, 16, 4, 8, True, torch.float32), (3, 2, 5, 10, True, torch.float64),  # r above both sizes
            (8, 4, 3, 3, False, torch.float32)]):
        what = f"LoRALinear({d_in} -> {d_out}, r={r}, alpha={alpha}, bias={bias}, {dtype})"
        base = nn.Linear(d_in, d_out, bias=bias, dtype=dtype)
        base.load_state_dict({"weight": randn(gen, d_out, d_in, dtype=dtype, scale=0.4),
                              **({"bias": randn(gen, d_out, dtype=dtype, scale=0.1)} if bias else {})})
        # Built from one seed: the same lora_A, B = 0, the base frozen (its state, flags, scaling, dropout).
        mine = _seeded(case, lambda: mine_class(copy.deepcopy(base), r, alpha))
        theirs = _seeded(case, lambda: reference_class(copy.deepcopy(base), r, alpha))
        _align_random_starts(mine, theirs, what)
        inputs = [randn(gen, d_in, dtype=dtype), randn(gen, 3, d_in, dtype=dtype), randn(gen, 2, 4, d_in, dtype=dtype),
                  randn(gen, 0, d_in, dtype=dtype)]  # (..., in_features), an empty batch included
        _assert_same_models(mine, theirs, f"{what}, as built", inputs)
        # Trained factors: load the notebook layer's state into the reference's, compare forward and gradients.
        with torch.no_grad():
            mine.lora_A.weight.copy_(randn(gen, r, d_in, dtype=dtype, scale=0.5))
            mine.lora_B.weight.copy_(randn(gen, d_out, r, dtype=dtype, scale=0.5))
        theirs.load_state_dict(mine.state_dict())
        _assert_same_models(mine, theirs, f"{what}, with A and B set", inputs)
        x = randn(gen, 2, 3, d_in, dtype=dtype)
        grads = []
        for layer in (mine, theirs):
            xg = x.clone().requires_grad_(True)
            (layer(xg) * randn(generator(case), 2, 3, d_out, dtype=dtype)).sum().backward()
            grads.append({"x": xg.grad, **{name: p.grad for name, p in layer.named_parameters()}})
        assert all(g[name] is None for g in grads for name in g if name.startswith("base.")), what
        _assert_same({k: v for k, v in grads[0].items() if v is not None},
                     {k: v for k, v in grads[1].items() if v is not None}, f"{what}: the gradients")
        # merged(): a new nn.Linear with W + scaling * B @ A and the base's bias; the layer stays as it was.
        before = copy.deepcopy(dict(mine.state_dict()))
        merged_mine, merged_theirs = mine.merged(), theirs.merged()
        assert type(merged_mine) is type(merged_theirs) is nn.Linear, (what, type(merged_mine))
        _assert_same_models(merged_mine, merged_theirs, f"{what}.merged()", inputs, flags=False)
        _assert_same(dict(mine.state_dict()), before, f"{what}: the layer after merged()")
        _assert_same(_structure(mine), _structure(theirs), f"{what}: the layer after merged()")
    # Dropout on the LoRA path only: the same draws (one seed) give the same outputs in training mode.
    base = nn.Linear(10, 6)
    mine = _seeded(7, lambda: mine_class(copy.deepcopy(base), 4, 8, dropout=0.5))
    theirs = _seeded(7, lambda: reference_class(copy.deepcopy(base), 4, 8, dropout=0.5))
    _align_random_starts(mine, theirs, "LoRALinear with dropout 0.5")
    with torch.no_grad():
        mine.lora_B.weight.copy_(randn(gen, 6, 4, scale=0.5))
    theirs.load_state_dict(mine.state_dict())
    x = randn(gen, 5, 10)
    for mode in ("train", "eval"):
        getattr(mine, mode)(), getattr(theirs, mode)()
        with torch.no_grad():
            _assert_same(_seeded(8, lambda: mine(x)), _seeded(8, lambda: theirs(x)), f"dropout 0.5, {mode} mode")
    _assert_same_models(mine.merged(), theirs.merged(), "LoRALinear with dropout 0.5: merged()", [x], flags=False)


@SPEC.agreement("inject_lora")
def inject_lora_agrees(mine, reference):
    from llmcourse.checking import generator
    from llmcourse.checking.shared.lora import ATTENTION, MLP

    gen = generator(41)
    ids = torch.randint(0, 40, (2, 7), generator=gen)
    llamas = [(_tiny_llama(42)[1], ["q_proj", "v_proj"], 4, 8, 0.0),
              (_tiny_llama(43)[1], ATTENTION + MLP, 2, 6, 0.1),
              (_tiny_llama(44, attention_bias=True, mlp_bias=True)[1], ("v_proj", "down_proj"), 3, 3.0, 0.0),
              (_tiny_llama(45)[1], ["model.layers.1.self_attn.o_proj", "lm_head"], 1, 2, 0.0),  # qualified names
              (_tiny_llama(46)[1].double(), ["up_proj"], 2, 4, 0.0)]
    tree = _named_tree(gen)
    trees = [(tree, ["proj"], 2, 4, 0.0), (tree, ["inner.proj"], 2, 4, 0.0), (tree, ("proj", "out_proj"), 3, 1, 0.0),
             (tree, ["norm"], 2, 4, 0.0),  # a LayerNorm: nothing to wrap
             (tree, ["xproj", "proj_"], 2, 4, 0.0),  # no layer of that whole name
             (tree, [], 2, 4, 0.0),  # no target: frozen, nothing wrapped
             (_named_tree(gen, torch.float64), ["proj", "proj_head"], 2, 4, 0.2),
             (nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)), ["2"], 2, 4, 0.0)]  # numbered children
    for i, (model, targets, r, alpha, dropout) in enumerate(llamas + trees):
        what = f"inject_lora(model {i}, {targets!r}, r={r}, alpha={alpha}, dropout={dropout})"
        models = [copy.deepcopy(model), copy.deepcopy(model)]
        results = [_seeded(i, lambda: fn(m, targets, r, alpha, dropout)) for fn, m in zip((mine, reference), models)]
        assert results[0] is models[0] and results[1] is models[1], f"{what}: not the model it was given"
        _align_random_starts(*results, what)
        _assert_same_models(*results, what)
        if i < len(llamas):
            with torch.no_grad():
                _assert_same(_logits_of(results[0], ids), _logits_of(results[1], ids), f"{what}: the logits")
    # Called without dropout (its default) on a model that already has LoRA layers elsewhere.
    models = [copy.deepcopy(tree), copy.deepcopy(tree)]
    results = [_seeded(9, lambda: fn(fn(m, ["out_proj"], 2, 4), ["inner.proj"], 1, 1))
               for fn, m in zip((mine, reference), models)]
    _align_random_starts(*results, "inject_lora twice, on other targets")
    _assert_same_models(*results, "inject_lora twice, on other targets")


def _wrapped(model, lora_class, names, r, alpha, gen_seed):
    """`model` with the layers `names` wrapped by `lora_class` and given random factors (the same for a seed)."""
    from llmcourse.checking import generator, randn

    gen = generator(gen_seed)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base = getattr(parent, child)
        layer = lora_class(base, r, alpha)
        with torch.no_grad():
            layer.lora_A.weight.copy_(randn(gen, r, base.in_features, dtype=base.weight.dtype, scale=0.3))
            layer.lora_B.weight.copy_(randn(gen, base.out_features, r, dtype=base.weight.dtype, scale=0.3))
        setattr(parent, child, layer)
    return model


@SPEC.agreement("merge_lora")
def merge_lora_agrees(mine, reference):
    """Each side merges a model wrapped with its own LoRALinear (merge_lora looks for that class), both from the
    same base weights and the same factors."""
    import grader.reference.lora as reference_module
    from llmcourse.checking import generator

    classes = (mine.__globals__["LoRALinear"], reference_module.LoRALinear)
    gen = generator(50)
    ids = torch.randint(0, 40, (2, 7), generator=gen)
    layers = [f"model.layers.{i}.{p}" for i in range(2) for p in ("self_attn.q_proj", "mlp.up_proj")]
    llamas = [(_tiny_llama(51)[1], layers, 2, 6),
              (_tiny_llama(52, attention_bias=True, mlp_bias=True)[1],
               ["model.layers.0.self_attn.v_proj", "model.layers.1.mlp.down_proj", "lm_head"], 3, 3.0),
              (_tiny_llama(53)[1].double(), ["model.layers.1.self_attn.k_proj"], 1, 2),
              (_tiny_llama(54)[1], [], 2, 4)]  # no LoRA layer: the model stays as it is
    trees = [(_named_tree(gen), ["proj", "inner.proj", "proj_head"], 2, 4),  # nested, with and without a bias
             (_named_tree(gen, torch.float64), ["out_proj"], 4, 2),
             (nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)), ["0", "2"], 2, 8)]
    x6 = torch.randn(3, 6, generator=gen)
    for i, (model, names, r, alpha) in enumerate(llamas + trees):
        what = f"merge_lora(model {i} with LoRA on {names}, r={r}, alpha={alpha})"
        wrapped = [_seeded(i, lambda: _wrapped(copy.deepcopy(model), cls, names, r, alpha, 60 + i)) for cls in classes]
        _assert_same_models(*wrapped, f"{what}: before merging")
        if i < len(llamas):
            with torch.no_grad():
                before = _logits_of(wrapped[0], ids)
        results = [fn(m) for fn, m in zip((mine, reference), wrapped)]
        assert results[0] is wrapped[0] and results[1] is wrapped[1], f"{what}: not the model it was given"
        assert not any(isinstance(m, classes) for m in results[0].modules()), f"{what}: LoRA layers left"
        _assert_same_models(*results, what, flags=False)
        if i < len(llamas):
            with torch.no_grad():
                after = [_logits_of(m, ids) for m in results]
            _assert_same(*after, f"{what}: the logits")
            assert torch.allclose(after[0], before, rtol=1e-4, atol=1e-4), f"{what}: the logits changed"
        elif isinstance(results[0], nn.Sequential):
            _assert_same(results[0](x6[:, :5]), results[1](x6[:, :5]), f"{what}: the outputs")
        else:
            for name in ("proj", "inner.proj", "out_proj"):
                layer = [m.get_submodule(name) for m in results]
                x = x6[:, :layer[0].in_features].to(layer[0].weight.dtype)
                _assert_same(layer[0](x), layer[1](x), f"{what}: the outputs of {name}")


_WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "red", "ball", "ran", "The", "CAT", "mat.", "On"]
_TEXT_PAIRS = [  # the notebook's worked examples, then the edge cases its contract names
    ("the cat sat on the mat", "The cat is on the mat"), ("the the the", "the cat"),
    ("mat on sat cat the", "the cat sat on mat"), ("", "the cat"), ("the cat", ""), ("", ""), ("   ", " \t\n "),
    ("The CAT sat", "the cat SAT"), ("cat cat", "cat cat cat"), ("cat cat cat cat", "cat dog"),
    ("the bag.", "the bag"), ("a b a b a", "a b a"), ("  the\tcat \n sat ", "the cat sat"), ("a b c d", "a x b y c"),
    ("cat the", "the cat"), ("a b c b d a b", "b d c a b a"), ("cat", "dog"), ("one", "one"),
]


def _random_texts(gen, count):
    """`count` pairs of 0 to 11 words drawn from a few words (some upper-cased, one with a full stop)."""
    pairs = []
    for _ in range(count):
        vocab = int(torch.randint(3, len(_WORDS) + 1, (), generator=gen))
        pairs.append(tuple(" ".join(_WORDS[i] for i in torch.randint(0, vocab, (int(torch.randint(0, 12, (),
                     generator=gen)),), generator=gen).tolist()) for _ in range(2)))
    return pairs


@SPEC.inputs_of("rouge_n")
def rouge_n_inputs(gen):
    for cand, refr in _TEXT_PAIRS:
        yield (cand, refr), {}  # n at its default
        for n in (1, 2, 3, 5):  # 3 and 5: texts with fewer tokens than n have no n-grams
            yield (cand, refr, n), {}
    for i, (cand, refr) in enumerate(_random_texts(gen, 60)):
        yield (cand, refr), {"n": 1 + i % 3}


@SPEC.inputs_of("rouge_l")
def rouge_l_inputs(gen):
    for cand, refr in _TEXT_PAIRS + _random_texts(gen, 60):
        yield (cand, refr), {}


def _examples(gen, count, vocab=40):
    """`count` random sequences of 4 to 12 tokens, each with an unlabelled prompt of random length."""
    examples = []
    for _ in range(count):
        length = int(torch.randint(4, 13, (), generator=gen))
        ids = torch.randint(3, vocab, (length,), generator=gen).tolist()
        prompt = int(torch.randint(1, length - 1, (), generator=gen))
        examples.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return examples


@SPEC.agreement("finetune")
def finetune_agrees(mine, reference):
    """Both train copies of one model with the same arguments (the same seed): the same losses, the same model
    after (its weights, what is trainable, its logits)."""
    from grader.reference.lora import inject_lora
    from llmcourse.checking import generator

    gen = generator(70)
    ids = torch.randint(0, 40, (2, 7), generator=gen)
    partly_frozen = _tiny_llama(73)[1].requires_grad_(False)
    partly_frozen.lm_head.requires_grad_(True)
    runs = [
        (_tiny_llama(71)[1], _examples(gen, 7), (5, 1e-2), {"batch_size": 3, "seed": 4}),  # passes that run out
        (_tiny_llama(72)[1], _examples(gen, 3), (3, 1e-2), {"batch_size": 5, "seed": 1}),  # a batch above the data
        (partly_frozen, _examples(gen, 6), (3, 3e-2), {"batch_size": 2, "seed": 2}),
        (_seeded(0, lambda: inject_lora(_tiny_llama(74)[1], ["q_proj", "v_proj"], 4, 8)), _examples(gen, 10),
         (3, 3e-2), {}),  # LoRA; batch_size and seed at their defaults
        (_tiny_llama(75)[1].double(), _examples(gen, 4), (2, 1e-2), {"batch_size": 4, "seed": 5}),
        (_tiny_llama(76)[1].train(), _examples(gen, 4), (0, 1e-2), {"batch_size": 2}),  # no step at all
    ]
    for i, (model, dataset, args, kwargs) in enumerate(runs):
        what = f"finetune(model {i}, {len(dataset)} examples, steps={args[0]}, lr={args[1]}, {kwargs})"
        models = [copy.deepcopy(model), copy.deepcopy(model)]
        losses = [fn(m, copy.deepcopy(dataset), *args, **kwargs) for fn, m in zip((mine, reference), models)]
        _assert_same(*losses, f"{what}: the losses")
        _assert_same_models(*models, f"{what}: the model after")
        with torch.no_grad():
            _assert_same(_logits_of(models[0], ids), _logits_of(models[1], ids), f"{what}: the logits after")
