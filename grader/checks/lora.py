"""Hidden checks for 04_lora: the student's code against `grader.reference.lora` and the `peft` library.

Models are built twice from the same weights: in the student's kernel (through the handle) and here, with
the reference or with peft. Only weights, inputs and outputs cross. Where a wrong answer matches a known
mistake, the check says which one.
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn as nn

from grader.reference import lora as ref
from llmcourse.checking import expect, expect_close, fail, generator, graded, randn, same_answer, state_dict_of
from llmcourse.checking.shared.lora import (ATTENTION, MLP, expect_lora_layer, expect_scores, flags_of, llama_weights,
                                            load_random_lora, local_llama, logits_of, student_linear, student_llama,
                                            tiny_llama_config, types_of)

ASSIGNMENT = "04_lora"


# -- counting --------------------------------------------------------------------------------------

@graded("count_trainable_parameters", points=2,
        hint="Use model.parameters() (each shared tensor once, no buffers) and p.numel() of those with "
             "requires_grad; return a Python int.")
def test_count_trainable_shared_weights_and_buffers(student):
    config = tiny_llama_config(tie_word_embeddings=True)
    model = student.construct("transformers.LlamaForCausalLM", student.construct("transformers.LlamaConfig", **config))
    expected = ref.count_trainable_parameters(local_llama(config, llama_weights(config, 0)))
    n = student.count_trainable_parameters(model)
    if isinstance(n, torch.Tensor):
        fail("count_trainable_parameters returned a tensor.", hint="Return a plain int: sum(...) of p.numel() "
                                                                   "values, without wrapping it in a tensor.")
    expect(n == expected, f"A tiny Llama whose output layer shares the embedding's tensor has {expected} trainable "
                          f"parameters, but count_trainable_parameters says {n!r}.",
           hint="Count model.parameters(): it lists a shared tensor once (a state_dict lists it under both names).")
    norm = student.construct("torch.nn.BatchNorm1d", 5)
    n = student.count_trainable_parameters(norm)
    expect(n == 10, f"BatchNorm1d(5) has 10 parameters (weight, bias) and 3 buffers, but count_trainable_parameters "
                    f"says {n!r}.", hint="Buffers (running statistics) are not parameters: use model.parameters().")
    model.requires_grad_(False)
    model.lm_head.requires_grad_(True)
    n = student.count_trainable_parameters(model)
    expect(n == 40 * 16, f"With everything frozen except the (shared) output matrix, 40 * 16 = 640 parameters are "
                         f"trainable, but count_trainable_parameters says {n!r}.")


@graded("lora_parameter_count", points=3, hint="r * d_in entries for A plus d_out * r for B; nothing else.")
def test_lora_parameter_count_many_shapes(student):
    for d_in, d_out, r in [(16, 16, 1), (3, 7, 2), (4096, 4096, 16), (768, 3072, 4), (384, 128, 8)]:
        n = student.lora_parameter_count(d_in, d_out, r)
        expected = ref.lora_parameter_count(d_in, d_out, r)
        if n == d_in * d_out * r:
            fail(f"lora_parameter_count({d_in}, {d_out}, {r}) = {n}: that is d_in * d_out * r.",
                 hint="A and B are two separate matrices: add their sizes, r * d_in + d_out * r.")
        expect(n == expected, f"lora_parameter_count({d_in}, {d_out}, {r}) should be {expected}, not {n!r}.")


# -- LoRALinear ------------------------------------------------------------------------------------

def _loaded_pair(student, gen, d_in, d_out, r, alpha, bias=True, dtype=torch.float32, dropout=0.0):
    """A student LoRALinear and the reference one, with the same random base, A and B."""
    weight = randn(gen, d_out, d_in, dtype=dtype, scale=1 / math.sqrt(d_in))
    b = randn(gen, d_out, dtype=dtype, scale=0.1) if bias else None
    a_w, b_w = randn(gen, r, d_in, dtype=dtype, scale=0.5), randn(gen, d_out, r, dtype=dtype, scale=0.5)
    layer = student.LoRALinear(student_linear(student, weight, b), r, alpha, dropout=dropout)
    layer.load_state_dict({"lora_A.weight": a_w, "lora_B.weight": b_w}, strict=False)
    base = nn.Linear(d_in, d_out, bias=bias, dtype=dtype)
    with torch.no_grad():
        base.weight.copy_(weight)
        if bias:
            base.bias.copy_(b)
    reference = ref.LoRALinear(base, r, alpha)
    reference.load_state_dict({"lora_A.weight": a_w, "lora_B.weight": b_w}, strict=False)
    return layer, reference


@graded("lora_linear", points=3,
        hint="forward(x) = base(x) + (alpha / r) * lora_B(lora_A(dropout(x))), for inputs with any leading dims.")
def test_lora_linear_forward_matches_reference(student):
    gen = generator(100)
    for d_in, d_out, r, alpha, bias, shape in [(10, 6, 2, 6, True, (3, 10)), (8, 12, 4, 2, False, (2, 3, 8)),
                                              (5, 5, 1, 4, True, (5,)), (16, 4, 8, 32, True, (2, 2, 2, 16))]:
        layer, reference = _loaded_pair(student, gen, d_in, d_out, r, alpha, bias)
        x = randn(gen, *shape)
        out = layer(x)
        with torch.no_grad():
            expected = reference(x)
            delta = x @ reference.lora_A.weight.T @ reference.lora_B.weight.T
            base_out = reference.base(x)
        if not same_answer(out, expected):
            if same_answer(out, base_out + (r / alpha) * delta):
                fail(f"LoRALinear(r={r}, alpha={alpha}) scales the update by r / alpha.", hint="scaling = alpha / r.")
            if same_answer(out, base_out + delta):
                fail(f"LoRALinear(r={r}, alpha={alpha}) does not scale the update.",
                     hint="Multiply lora_B(lora_A(x)) by self.scaling = alpha / r.")
        expect_close(out, expected, f"LoRALinear(Linear({d_in}, {d_out}, bias={bias}), r={r}, alpha={alpha}) "
                                    f"with known A and B, for x of shape {shape}")


@graded("lora_linear", points=3,
        hint="Freeze the base (weight and bias) with self.base.requires_grad_(False); lora_A and lora_B stay "
             "trainable, so gradients reach them and nothing else.")
def test_lora_linear_gradients_reach_only_a_and_b(student):
    gen = generator(101)
    layer, reference = _loaded_pair(student, gen, 7, 5, 3, 6)
    x, weight = randn(gen, 4, 7), randn(gen, 4, 5)
    grads = student.construct("llmcourse.in_kernel.gradients", layer, x, weight)
    leaked = [name for name in ("base.weight", "base.bias") if grads.get(name) is not None]
    expect(not leaked, f"Gradients reached the base layer ({', '.join(leaked)}): it should be frozen.",
           hint="Call self.base.requires_grad_(False): that freezes its weight AND its bias.")
    (reference(x) * weight).sum().backward()
    for name, p in (("lora_A.weight", reference.lora_A.weight), ("lora_B.weight", reference.lora_B.weight)):
        if grads.get(name) is None:
            fail(f"No gradient reached {name}.", hint="lora_A and lora_B must be trainable and used in forward().")
        expect_close(grads[name], p.grad, f"the gradient of {name}")
    trainable = sum(v.numel() for k, v in state_dict_of(layer, "LoRALinear").items() if flags_of(student, layer).get(k))
    expect(trainable == ref.lora_parameter_count(7, 5, 3),
           f"LoRALinear(Linear(7, 5), r=3) should have {ref.lora_parameter_count(7, 5, 3)} trainable parameters, "
           f"not {trainable}.")


@graded("lora_linear", points=1,
        hint="merged() returns a new nn.Linear with weight W + scaling * lora_B.weight @ lora_A.weight (shape "
             "(out, in)) and the base's bias, and leaves the LoRALinear unchanged.")
def test_lora_linear_merged(student):
    gen = generator(102)
    for d_in, d_out, r, alpha, bias in [(6, 6, 2, 8, True), (9, 4, 3, 3, False)]:
        layer, reference = _loaded_pair(student, gen, d_in, d_out, r, alpha, bias)
        x = randn(gen, 3, d_in)
        before = layer(x)
        linear = layer.merged()
        if linear is None or linear.type_name != "torch.nn.modules.linear.Linear":
            fail("merged() should return an nn.Linear.", hint="Build nn.Linear(in, out, bias=...) and copy the "
                                                             "merged weight (and the bias) into it; return it.")
        sd = state_dict_of(linear, "merged()")
        expected = ref.LoRALinear.merged(reference).state_dict()
        w = reference.base.weight.detach()
        ba = reference.lora_B.weight.detach() @ reference.lora_A.weight.detach()
        got = sd.get("weight")
        if same_answer(got, w + ba) and not same_answer(got, expected["weight"]):
            fail("merged()'s weight is W + B @ A, without the scaling.", hint="Multiply B @ A by self.scaling.")
        if got is not None and got.shape == (d_out, d_in) and d_in == d_out and \
                same_answer(got, w + (alpha / r) * ba.T) and not same_answer(got, expected["weight"]):
            fail("merged()'s update is transposed.", hint="The update is lora_B.weight @ lora_A.weight, (out, r) @ "
                                                          "(r, in): the same shape as the base's weight.")
        expect_close(got, expected["weight"], f"merged().weight for r={r}, alpha={alpha}")
        if bias:
            expect_close(sd.get("bias"), expected["bias"], "merged().bias", hint="Copy the base layer's bias.")
        else:
            expect("bias" not in sd, "merged() has a bias, but the base layer has none.")
        expect_close(linear(x), before, "the merged layer's output (vs the LoRALinear's)")
        expect_close(layer(x), before, "the LoRALinear's output after calling merged()",
                     hint="merged() must build a new layer, not add B @ A into the base's weight in place.")


@graded("lora_linear", points=1,
        hint="Create lora_A and lora_B with the base's dtype and device (nn.Linear(..., dtype=base.weight.dtype, "
             "device=base.weight.device)).")
def test_lora_linear_keeps_the_dtype(student):
    gen = generator(103)
    layer, reference = _loaded_pair(student, gen, 6, 3, 2, 4, dtype=torch.float64)
    sd = state_dict_of(layer, "LoRALinear on a float64 layer")
    expect_lora_layer(sd, "", 6, 3, 2, "LoRALinear on a float64 layer")
    expect(sd["lora_A.weight"].dtype == torch.float64 and sd["lora_B.weight"].dtype == torch.float64,
           f"On a float64 base, lora_A and lora_B are {sd['lora_A.weight'].dtype} and {sd['lora_B.weight'].dtype}.")
    x = randn(gen, 2, 6, dtype=torch.float64)
    with torch.no_grad():
        expect_close(layer(x), reference(x), "LoRALinear's output on float64", check_dtype=True)


@graded("lora_linear", points=1,
        hint="Apply dropout to the input of the LoRA path only: base(x) + scaling * lora_B(lora_A(dropout(x))). "
             "With B = 0 the output then equals base(x) even in training mode.")
def test_lora_linear_dropout_only_on_the_lora_path(student):
    gen = generator(104)
    weight, bias = randn(gen, 5, 8, scale=0.3), randn(gen, 5, scale=0.1)
    layer = student.LoRALinear(student_linear(student, weight, bias), 2, 4, dropout=0.5)
    layer.train()
    x = randn(gen, 64, 8)
    expect_close(layer(x), x @ weight.T + bias, "a freshly made LoRALinear(dropout=0.5) in training mode (B = 0)",
                 hint="Dropout belongs on the LoRA path's input only, not on the base's input or the output.")
    a_w, b_w = randn(gen, 2, 8), randn(gen, 5, 2)
    layer.load_state_dict({"lora_A.weight": a_w, "lora_B.weight": b_w}, strict=False)
    trained = layer(x)
    layer.eval()
    expect_close(layer(x), x @ weight.T + bias + 2.0 * (x @ a_w.T @ b_w.T), "LoRALinear(dropout=0.5) in eval mode")
    expect(not torch.allclose(trained, layer(x)),
           "With dropout=0.5, the output in training mode equals the one in eval mode: is `dropout` used?",
           hint="self.dropout = nn.Dropout(dropout), applied to x before lora_A.")


# -- inject_lora -----------------------------------------------------------------------------------

def _peft_llama(config, weights, targets, r, alpha):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(local_llama(config, weights),
                          LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets)))


@graded("inject_lora", points=3,
        hint="Freeze the whole model first, then wrap exactly the nn.Linear layers whose names end with a target: "
             "the trainable count must equal peft's for the same targets and rank.")
def test_inject_lora_trainable_count_matches_peft(student):
    config = tiny_llama_config()
    for seed, (targets, r) in enumerate([(["q_proj", "v_proj"], 2), (ATTENTION + MLP, 4), (["down_proj"], 8),
                                         (["o_proj", "gate_proj"], 1)]):
        weights = llama_weights(config, 200 + seed)
        model = student.inject_lora(student_llama(student, config, weights), targets, r, 2 * r)
        flags = flags_of(student, model)
        n = sum(v.numel() for k, v in state_dict_of(model, "the model").items() if flags.get(k))
        peft_model = _peft_llama(config, weights, targets, r, 2 * r)
        expected = ref.count_trainable_parameters(peft_model)
        expect(n == expected, f"inject_lora(model, {targets}, r={r}) leaves {n} trainable parameters; peft's "
                              f"get_peft_model with the same targets leaves {expected}.")


@graded("inject_lora", points=4,
        hint="Each target becomes LoRALinear(layer, r, alpha, dropout) with scaling alpha / r, exactly like peft's "
             "LoRA layers: with the same A and B, the two models must give the same logits.")
def test_inject_lora_equals_peft_with_the_same_weights(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 210)
    targets, r, alpha = ["q_proj", "k_proj", "o_proj", "up_proj", "down_proj"], 4, 12
    model = student.inject_lora(student_llama(student, config, weights), targets, r, alpha)
    gen = generator(211)
    lora = load_random_lora(student, model, weights, gen, r)
    peft_model = _peft_llama(config, weights, targets, r, alpha)
    copied = {f"base_model.model.{k.replace('.weight', '.default.weight')}": v for k, v in lora.items()}
    missing = peft_model.load_state_dict(copied, strict=False)
    expect(not missing.unexpected_keys, f"peft has no LoRA layer for {missing.unexpected_keys[:2]}: inject_lora "
                                        f"wrapped layers that peft does not.")
    expect(len(copied) == sum(".lora_" in k for k in peft_model.state_dict()),
           "inject_lora wrapped fewer layers than peft does for the same targets.")
    peft_model.eval()
    ids = torch.randint(0, config["vocab_size"], (2, 9), generator=gen)
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    expect_close(logits_of(model, ids, "the model after inject_lora"), expected,
                 "the logits with known A and B (compared with peft's LoRA model holding the same A and B)",
                 rtol=1e-4, atol=1e-4)


def _module_tree(student, gen):
    """A ModuleDict whose names test the suffix rule: proj, inner.proj, out_proj, proj_head, inner.proj_norm."""
    def linear(d_in, d_out):
        return student_linear(student, randn(gen, d_out, d_in, scale=0.3), randn(gen, d_out, scale=0.1))

    inner = student.construct("torch.nn.ModuleDict", {"proj": linear(6, 6), "proj_norm": student.construct(
        "torch.nn.LayerNorm", 6), "up": linear(6, 10)})
    return student.construct("torch.nn.ModuleDict", {"proj": linear(6, 4), "out_proj": linear(4, 6),
                                                     "proj_head": linear(6, 3), "inner": inner})


@graded("inject_lora", points=1,
        hint="A target matches a layer whose qualified name equals it or ends with '.' + target (whole "
             "dot-separated parts): not a substring test, and not a bare str.endswith(target).")
def test_inject_lora_matches_whole_name_parts(student):
    gen = generator(220)
    for targets, expected in [(["proj"], ["inner.proj", "proj"]), (["inner.proj"], ["inner.proj"]),
                              (["proj_head", "up"], ["inner.up", "proj_head"])]:
        model = student.inject_lora(_module_tree(student, gen), targets, 2, 4)
        wrapped = sorted(name for name, kind in types_of(student, model).items() if kind == "LoRALinear")
        if wrapped != expected:
            hint = None
            if targets == ["proj"] and "out_proj" in wrapped and "proj_head" not in wrapped:
                hint = "name.endswith(target) also matches 'out_proj'; require name == t or name.endswith('.' + t)."
            elif targets == ["proj"] and "proj_head" in wrapped:
                hint = "A substring test ('proj' in name) also matches 'proj_head'; match whole name parts at the end."
            fail(f"With target_modules={targets}, the wrapped layers should be {expected}, but they are {wrapped}.",
                 hint)


@graded("inject_lora", points=1, requires_main=True,
        hint="model.requires_grad_(False) before wrapping freezes everything: weights, biases, norms, embeddings. "
             "Only the new lora_A and lora_B are trainable afterwards.")
def test_inject_lora_freezes_everything_else(student):
    gen = generator(230)
    model = student.inject_lora(_module_tree(student, gen), ["proj", "up"], 3, 3)
    flags = flags_of(student, model)
    trainable = sorted(name for name, on in flags.items() if on)
    others = [n for n in trainable if ".lora_A." not in n and ".lora_B." not in n]
    if others:
        biases = all(n.endswith(".bias") for n in others)
        fail(f"After inject_lora these are still trainable: {others[:4]}.",
             "Biases are parameters too: freeze the whole model (model.requires_grad_(False))." if biases else None)
    expected = ref.lora_parameter_count(6, 4, 3) + ref.lora_parameter_count(6, 6, 3) + ref.lora_parameter_count(6, 10, 3)
    n = sum(v.numel() for k, v in state_dict_of(model, "the model").items() if flags.get(k))
    expect(n == expected, f"The wrapped layers' LoRA pairs have {expected} parameters, but {n} are trainable.",
           hint="Freeze first, wrap after: freezing after wrapping also freezes lora_A and lora_B.")


# -- merge_lora ------------------------------------------------------------------------------------

@graded("merge_lora", points=3,
        hint="Each LoRALinear becomes an nn.Linear with weight W + (alpha / r) * B @ A, under the same name, so the "
             "model's state dict has its original keys again.")
def test_merge_lora_weights(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 300)
    r, alpha, targets = 2, 10, ["k_proj", "o_proj", "gate_proj", "down_proj"]
    model = student.inject_lora(student_llama(student, config, weights), targets, r, alpha)
    gen = generator(301)
    lora = {}
    for name, kind in types_of(student, model).items():
        if kind == "LoRALinear":
            d_out, d_in = weights[f"{name}.weight"].shape
            lora[name] = (randn(gen, r, d_in, scale=0.3), randn(gen, d_out, r, scale=0.3))
    model.load_state_dict({f"{n}.lora_{x}.weight": t for n, (a, b) in lora.items() for x, t in (("A", a), ("B", b))},
                          strict=False)
    merged = student.merge_lora(model)
    if merged is None or not getattr(merged, "type_name", "").endswith("LlamaForCausalLM"):
        fail("merge_lora should return the model it was given.", hint="End with `return model`.")
    sd = state_dict_of(merged, "the merged model")
    expect(set(sd) == set(weights), f"After merge_lora the state dict should have the original keys; extra: "
                                    f"{sorted(set(sd) - set(weights))[:3]}, missing: {sorted(set(weights) - set(sd))[:3]}.",
           hint="Put the merged nn.Linear where the LoRALinear was (setattr on the parent, same child name).")
    for name, (a, b) in lora.items():
        key = f"{name}.weight"
        w = weights[key]
        if same_answer(sd[key], w + b @ a) and alpha != r:
            fail(f"{key} is W + B @ A, without the scaling.", hint="Multiply B @ A by alpha / r (layer.scaling).")
        if same_answer(sd[key], w):
            fail(f"{key} still holds the base weight: the LoRA update was not merged in.")
        expect_close(sd[key], w + (alpha / r) * b @ a, f"{key} after merge_lora")


@graded("merge_lora", points=2,
        hint="Replace every LoRALinear wherever it sits (use the names from named_modules()), and keep each base "
             "layer's bias in the merged layer.")
def test_merge_lora_keeps_biases_and_nested_layers(student):
    gen = generator(310)
    tree = _module_tree(student, gen)
    originals = state_dict_of(tree, "the ModuleDict")
    model = student.inject_lora(tree, ["proj", "up"], 2, 6)
    lora = {}
    for name, shape in (("proj", (4, 6)), ("inner.proj", (6, 6)), ("inner.up", (10, 6))):
        lora[name] = (randn(gen, 2, shape[1], scale=0.3), randn(gen, shape[0], 2, scale=0.3))
    model.load_state_dict({f"{n}.lora_{x}.weight": t for n, (a, b) in lora.items() for x, t in (("A", a), ("B", b))},
                          strict=False)
    merged = student.merge_lora(model)
    if merged is None:
        fail("merge_lora should return the model.", hint="End with `return model`.")
    types = types_of(student, merged)
    for name in lora:
        expect(types.get(name) == "Linear", f"After merge_lora, `{name}` is a {types.get(name)}, not an nn.Linear.")
    sd = state_dict_of(merged, "the merged ModuleDict")
    for name, (a, b) in lora.items():
        expect_close(sd.get(f"{name}.bias"), originals[f"{name}.bias"], f"{name}.bias after merge_lora",
                     hint="Copy the base layer's bias into the merged layer.")
        expect_close(sd.get(f"{name}.weight"), originals[f"{name}.weight"] + 3.0 * b @ a, f"{name}.weight after merge_lora")


# -- ROUGE -----------------------------------------------------------------------------------------

_WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "red", "ball", "ran"]


def _random_pairs(seed: int, count: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        texts = []
        for _ in range(2):
            words = [rng.choice(_WORDS[:rng.randint(3, len(_WORDS))]) for _ in range(rng.randint(0, 9))]
            texts.append(" ".join(w.upper() if rng.random() < 0.15 else w for w in words))
        pairs.append(tuple(texts))
    return pairs


_ROUGE_N_CASES = [  # candidate, reference, n, (precision, recall, f1), what it tests
    ("", "the cat", 1, (0.0, 0.0, 0.0), "an empty candidate"),
    ("the cat", "", 1, (0.0, 0.0, 0.0), "an empty reference"),
    ("", "", 2, (0.0, 0.0, 0.0), "two empty texts"),
    ("the cat", "the cat sat", 3, (0.0, 0.0, 0.0), "a candidate shorter than n"),
    ("The CAT sat", "the cat SAT", 1, (1.0, 1.0, 1.0), "texts that differ only in case"),
    ("cat cat", "cat cat cat", 1, (1.0, 2 / 3, 0.8), "repeated tokens on both sides"),
    ("cat cat cat cat", "cat dog", 1, (0.25, 0.5, 1 / 3), "a token repeated more often than in the reference"),
    ("the bag.", "the bag", 1, (0.5, 0.5, 0.5), "punctuation attached to a word"),
    ("a b a b a", "a b a", 2, (0.5, 1.0, 2 / 3), "repeated bigrams (clipped: 'a b' twice, 'b a' once)"),
    ("  the\tcat \n sat ", "the cat sat", 2, (1.0, 1.0, 1.0), "extra whitespace (tabs, newlines)"),
]


@graded("rouge_n", points=3,
        hint="Tokens are text.lower().split(); count n-grams with a Counter; clip with the minimum of the two counts; "
             "a side with no n-grams scores 0 (and f1 is 0 when precision + recall is 0): never divide by zero.")
def test_rouge_n_edge_cases(student):
    for cand, refr, n, expected, what in _ROUGE_N_CASES:
        result = student.rouge_n(cand, refr, n=n)
        hint = None
        if what.startswith("repeated") or what.startswith("a token repeated"):
            hint = "Clip: an n-gram matches at most min(count in candidate, count in reference) times."
        expect_scores(result, expected, f"rouge_n({cand!r}, {refr!r}, n={n}) ({what})", hint)


@graded("rouge_n", points=3, hint="Follow the definition exactly for every n: clipped n-gram overlap, "
                                  "precision over the candidate's n-grams, recall over the reference's.")
def test_rouge_n_random_texts(student):
    for i, (cand, refr) in enumerate(_random_pairs(400, 30)):
        n = 1 + i % 3
        expected = ref.rouge_n(cand, refr, n)
        expect_scores(student.rouge_n(cand, refr, n=n), tuple(expected.values()),
                      f"rouge_n({cand!r}, {refr!r}, n={n})")


_ROUGE_L_CASES = [
    ("", "the cat", (0.0, 0.0, 0.0), "an empty candidate", None),
    ("the cat", "", (0.0, 0.0, 0.0), "an empty reference", None),
    ("", "", (0.0, 0.0, 0.0), "two empty texts", None),
    ("a b c d", "a x b y c", (0.75, 0.6, 2 / 3), "a common subsequence with gaps",
     "The words of the LCS need not be next to each other: this is not the longest common substring."),
    ("cat the", "the cat", (0.5, 0.5, 0.5), "the same words in the other order",
     "Order matters in ROUGE-L: counting shared words (an n-gram overlap) is ROUGE-1, not ROUGE-L."),
    ("The Cat SAT", "the cat sat", (1.0, 1.0, 1.0), "texts that differ only in case", None),
    ("the the the", "the cat the", (2 / 3, 2 / 3, 2 / 3), "repeated tokens", None),
    ("a b c b d a b", "b d c a b a", (4 / 7, 4 / 6, 8 / 13), "a classic LCS example (length 4)", None),
]


@graded("rouge_l", points=3,
        hint="LCS by dynamic programming: L[i][j] = L[i-1][j-1] + 1 if the tokens match, else max(L[i-1][j], "
             "L[i][j-1]). Lower-case and split on whitespace first; an empty side scores 0.")
def test_rouge_l_edge_cases(student):
    for cand, refr, expected, what, hint in _ROUGE_L_CASES:
        expect_scores(student.rouge_l(cand, refr), expected, f"rouge_l({cand!r}, {refr!r}) ({what})", hint)


@graded("rouge_l", points=2, hint="precision = LCS / candidate length, recall = LCS / reference length, "
                                  "f1 their harmonic mean.")
def test_rouge_l_random_texts(student):
    for cand, refr in _random_pairs(401, 30):
        expect_scores(student.rouge_l(cand, refr), tuple(ref.rouge_l(cand, refr).values()), f"rouge_l({cand!r}, {refr!r})")


# -- finetune --------------------------------------------------------------------------------------

def _varied_examples(seed: int, count: int, vocab: int = 40) -> list[dict]:
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        length = rng.randint(4, 12)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        prompt = rng.randint(1, length - 2)
        examples.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return examples


def _identical_examples(n: int) -> list[dict]:
    ids = [1, 7, 3, 11, 19, 5, 23, 2]
    return [{"input_ids": list(ids), "labels": [-100] * 2 + ids[2:]} for _ in range(n)]


@graded("finetune", points=2,
        hint="Every step: loss = model(**batch).loss; optimizer.zero_grad(); loss.backward(); optimizer.step(); "
             "with torch.optim.AdamW(trainable parameters, lr=lr) made once, before the loop, at a constant lr.")
def test_finetune_losses_match_the_reference(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 500)
    data = _identical_examples(3)  # every batch is the same, whatever the order: the losses are determined
    losses = student.finetune(student_llama(student, config, weights), data, 6, 5e-3, batch_size=2, seed=0)
    expected = ref.finetune(local_llama(config, weights), data, 6, 5e-3, batch_size=2, seed=0)
    if not isinstance(losses, list) or len(losses) != 6:
        fail(f"finetune(..., steps=6) should return a list of 6 losses, not {str(losses)[:80]}.")
    expect_close(torch.tensor(losses, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                 "the 6 losses on a repeated batch (vs the reference loop)", rtol=1e-4, atol=1e-5)


@graded("finetune", points=1,
        hint="Pad each batch with pad_batch (labels -100 and attention 0 at padding) and use every example once per "
             "shuffled pass: with batch_size == len(dataset) the first batch is the whole data set.")
def test_finetune_first_batch_is_padded_correctly(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 510)
    data = _varied_examples(511, 6)
    losses = student.finetune(student_llama(student, config, weights), data, 1, 1e-3, batch_size=6, seed=3)
    with torch.no_grad():
        expected = local_llama(config, weights)(**ref.pad_batch(data)).loss.item()
    if not isinstance(losses, list) or len(losses) != 1:
        fail(f"finetune(..., steps=1) should return a list of 1 loss, not {str(losses)[:80]}.")
    expect(abs(losses[0] - expected) < 1e-4 * max(1.0, expected),
           f"The first loss on 6 examples of different lengths (batch_size=6) should be {expected:.4f}, but it is "
           f"{losses[0]:.4f}.")


@graded("finetune", points=2, requires_main=True,
        hint="Give the optimizer only the parameters with requires_grad=True, and do not unfreeze anything: frozen "
             "parameters must come out of training unchanged.")
def test_finetune_changes_only_trainable_parameters(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 520)
    model = student_llama(student, config, weights)
    model.requires_grad_(False)
    model.lm_head.requires_grad_(True)
    student.finetune(model, _varied_examples(521, 8), 3, 1e-2, batch_size=4, seed=0)
    after = state_dict_of(model, "the model after finetune")
    changed_frozen = [k for k, v in weights.items() if k != "lm_head.weight" and not torch.equal(after[k], v)]
    expect(not changed_frozen, f"finetune changed frozen parameters: {changed_frozen[:3]}.")
    expect(not torch.equal(after["lm_head.weight"], weights["lm_head.weight"]),
           "finetune did not change the only trainable parameter (lm_head.weight).")


@graded("finetune", points=1, requires_main=True,
        hint="Shuffle with your own torch.Generator().manual_seed(seed) (not the global random state), so that the "
             "same seed gives the same batches, and another seed other batches.")
def test_finetune_is_reproducible(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 530)
    data = _varied_examples(531, 10)
    runs = [student.finetune(student_llama(student, config, weights), data, 3, 1e-3, batch_size=2, seed=s)
            for s in (7, 7, 8)]
    expect(all(isinstance(r, list) and len(r) == 3 for r in runs), "finetune(..., steps=3) should return 3 losses.")
    expect(max(abs(a - b) for a, b in zip(runs[0], runs[1])) < 1e-6,
           f"Two runs with seed=7 from the same weights gave different losses: {runs[0]} and {runs[1]}.")
    expect(runs[0] != runs[2], "Runs with seed=7 and seed=8 gave the same losses: is `seed` used for the shuffling?")
