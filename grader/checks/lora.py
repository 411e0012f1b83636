"""The checks of 04_lora, visible and hidden, written here once.

A check marked `@visible` ships to students: `grader build` copies it, with the helpers and imports it
uses, into `llmcourse/checks/lora.py` (docstring: STUDENT_DOC below), where a student runs it before
grading. Visible checks use small worked examples and properties every right answer has, never the
reference. The other checks stay here and run only when a notebook is graded: they test the student's
code against `grader.reference.lora` and the `peft` library.

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
from llmcourse.checking import (expect, expect_close, expect_tensor, fail, generator, graded, randn, same_answer,
                                state_dict_of, visible)
from llmcourse.checking.shared.lora import (ATTENTION, MLP, expect_lora_layer, expect_scores, flags_of, llama_weights,
                                            load_random_lora, local_llama, logits_of, student_linear, student_llama,
                                            tiny_llama_config, types_of)

STUDENT_DOC = """Visible checks for 04_lora: what `check("04_lora/<exercise>")` runs in your notebook.

They build small models in your kernel (a tiny Llama from transformers, plain nn.Linear layers), give
them known weights, and compare what your code does with what the formulas say. More checks run when
your notebook is graded (among them: the same model wrapped by the `peft` library).

What they share with the graders' checks (the tiny Llama, reading your modules back) lives in
llmcourse.checking.shared.lora, so that both talk about your models in the same words.
"""

ASSIGNMENT = "04_lora"


# -- counting --------------------------------------------------------------------------------------

@visible
@graded("count_trainable_parameters", points=2,
        hint="Add up p.numel() over model.parameters(), keeping only the parameters with p.requires_grad.")
def test_count_trainable_small_modules(student):
    first = student.construct("torch.nn.Linear", 4, 8)
    model = student.construct("torch.nn.Sequential", first, student.construct("torch.nn.ReLU"),
                              student.construct("torch.nn.Linear", 8, 2))
    n = student.count_trainable_parameters(model)
    expect(n == 58, f"Linear(4, 8) -> ReLU -> Linear(8, 2) has 4 * 8 + 8 + 8 * 2 + 2 = 58 parameters, all trainable, "
                    f"but count_trainable_parameters says {n!r}.")
    first.requires_grad_(False)
    n = student.count_trainable_parameters(model)
    expect(n == 18, f"With its first layer frozen, the same model has 8 * 2 + 2 = 18 trainable parameters, but "
                    f"count_trainable_parameters says {n!r}.",
           hint="Frozen parameters (requires_grad=False) are not trainable: skip them.")


@visible
@graded("count_trainable_parameters", points=1, requires_main=True,
        hint="A count is a plain Python int: sum(p.numel() for ...) already is one. Don't wrap it in torch.tensor "
             "(and if you have a one-element tensor, .item() turns it into a number).")
def test_count_trainable_returns_an_int(student):
    model = student.construct("torch.nn.Linear", 4, 8)
    n = student.count_trainable_parameters(model)
    expect(isinstance(n, int) and not isinstance(n, bool),
           f"count_trainable_parameters should return a Python int, but it returned {type(n).__name__} {n!r}.")


@visible
@graded("lora_parameter_count", points=2,
        hint="A is (r, d_in) and B is (d_out, r): count the entries of both (no biases).")
def test_lora_parameter_count_small(student):
    n = student.lora_parameter_count(128, 384, 8)
    expect(n == 8 * 128 + 384 * 8, f"A LoRA pair for a 128 -> 384 layer at rank 8 has 8 * 128 + 384 * 8 = 4096 "
                                    f"parameters, but lora_parameter_count(128, 384, 8) says {n!r}.")


@graded("count_trainable_parameters", points=2,
        hint="Use model.parameters() (each shared tensor once, no buffers) and p.numel() of those with "
             "requires_grad; return a Python int.")
def test_count_trainable_shared_weights_and_buffers(student):
    config = tiny_llama_config(tie_word_embeddings=True)
    model = student.construct("transformers.LlamaForCausalLM", student.construct("transformers.LlamaConfig", **config))
    local = local_llama(config, llama_weights(config, 0))
    expected = ref.count_trainable_parameters(local)
    n = student.count_trainable_parameters(model)
    if isinstance(n, torch.Tensor):
        fail("count_trainable_parameters returned a tensor.", hint="Return a plain int: sum(...) of p.numel() "
                                                                   "values, without wrapping it in a tensor.")
    tensors = sum(1 for p in local.parameters() if p.requires_grad)
    expect(n == expected, f"A tiny Llama whose output layer shares the embedding's tensor has {expected} trainable "
                          f"parameters, but count_trainable_parameters says {n!r}.",
           hint=f"{tensors} is the number of trainable parameter TENSORS: count their entries instead, adding up "
                f"p.numel() of each." if n == tensors else
                "Count model.parameters(): it lists a shared tensor once (a state_dict lists it under both names).")
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
        if n == 2 * r * d_in and d_in != d_out:
            fail(f"lora_parameter_count({d_in}, {d_out}, {r}) = {n}: that is 2 * r * d_in, as if B had A's shape.",
                 hint="B is (d_out, r), not (r, d_in) like A: it has d_out * r entries, so the total is "
                      "r * d_in + d_out * r.")
        if n == expected + d_out:
            fail(f"lora_parameter_count({d_in}, {d_out}, {r}) = {n}: that is {d_out} (d_out) more than A and B hold.",
                 hint="A bias was counted: LoRA's A and B are bias-free (nn.Linear(..., bias=False)), so count only "
                      "r * d_in + d_out * r.")
        expect(n == expected, f"lora_parameter_count({d_in}, {d_out}, {r}) should be {expected}, not {n!r}.")


# -- LoRALinear ------------------------------------------------------------------------------------

@visible
@graded("lora_linear", points=3, requires_main=True,
        hint="Keep the layer you are given as self.base and freeze it (requires_grad_(False)); add lora_A and "
             "lora_B as nn.Linear without bias; scaling = alpha / r.")
def test_lora_linear_structure(student):
    gen = generator(0)
    base = student_linear(student, randn(gen, 6, 10, scale=0.3), randn(gen, 6, scale=0.1))
    layer = student.LoRALinear(base, 4, 8)
    sd = state_dict_of(layer, "LoRALinear(Linear(10, 6), r=4, alpha=8)")
    expect_lora_layer(sd, "", 10, 6, 4, "LoRALinear(Linear(10, 6), r=4, alpha=8)")
    flags = flags_of(student, layer)
    expect(flags.get("lora_A.weight") and flags.get("lora_B.weight"), "lora_A and lora_B should be trainable.")
    frozen = [name for name in ("base.weight", "base.bias") if flags.get(name, True)]
    expect(not frozen, f"The base layer's parameters ({', '.join(frozen)}) should be frozen (requires_grad=False), "
                       f"or missing from `self.base`.",
           hint="Keep the given layer as `self.base` and call self.base.requires_grad_(False): weight AND bias.")
    scaling = layer.scaling
    expect(isinstance(scaling, (int, float)) and abs(scaling - 2.0) < 1e-12,
           f"With r=4 and alpha=8, `scaling` should be alpha / r = 2.0, but it is {scaling!r}.")


@visible
@graded("lora_linear", points=3,
        hint="Initialise lora_B's weight to zero (nn.init.zeros_) and leave lora_A random: the wrapped layer then "
             "computes exactly what the base layer did.")
def test_lora_linear_starts_as_the_base(student):
    gen = generator(1)
    weight, bias = randn(gen, 6, 10, scale=0.3), randn(gen, 6, scale=0.1)
    layer = student.LoRALinear(student_linear(student, weight, bias), 4, 8)
    sd = state_dict_of(layer, "LoRALinear")
    expect(bool((sd.get("lora_B.weight", torch.ones(1)) == 0).all()), "lora_B's weight should start at zero.")
    expect(bool((sd.get("lora_A.weight", torch.zeros(1)) != 0).any()),
           "lora_A's weight is all zero: with A = B = 0 no gradient reaches either, and LoRA cannot learn.",
           hint="Only B starts at zero; A keeps nn.Linear's random initialisation.")
    x = randn(gen, 3, 10)
    expect_close(layer(x), x @ weight.T + bias, "LoRALinear's output right after creation (should equal the base's)")


@visible
@graded("lora_linear", points=4,
        hint="forward(x) = base(x) + scaling * lora_B(lora_A(dropout(x))), with scaling = alpha / r.")
def test_lora_linear_forward(student):
    gen = generator(2)
    weight, bias = randn(gen, 6, 10, scale=0.3), randn(gen, 6, scale=0.1)
    layer = student.LoRALinear(student_linear(student, weight, bias), 2, 6)
    a, b = randn(gen, 2, 10), randn(gen, 6, 2)
    layer.load_state_dict({"lora_A.weight": a, "lora_B.weight": b}, strict=False)
    x = randn(gen, 2, 5, 10)
    expect_close(layer(x), x @ weight.T + bias + 3.0 * (x @ a.T @ b.T),
                 "LoRALinear(r=2, alpha=6) with known A and B, for x of shape (2, 5, 10)")


@visible
@graded("lora_linear", points=2,
        hint="Dropout (randomly zeroing inputs while training) belongs on the input of the LoRA path only: "
             "base(x) + scaling * lora_B(lora_A(dropout(x))). The frozen base must always see the whole x.")
def test_lora_linear_dropout_only_on_the_lora_path(student):
    gen = generator(3)
    weight, bias = randn(gen, 5, 8, scale=0.3), randn(gen, 5, scale=0.1)
    layer = student.LoRALinear(student_linear(student, weight, bias), 2, 4, dropout=0.5)
    layer.load_state_dict({"lora_A.weight": randn(gen, 2, 8), "lora_B.weight": torch.zeros(5, 2)}, strict=False)
    layer.train()
    x = randn(gen, 64, 8)
    expect_close(layer(x), x @ weight.T + bias,
                 "LoRALinear(dropout=0.5) with B = 0 in training mode (the LoRA path adds nothing, so the output "
                 "should be the base's)")


@visible
@graded("lora_linear", points=2,
        hint="merged() returns a new nn.Linear with weight W + scaling * lora_B.weight @ lora_A.weight (shape "
             "(out, in), like W) and the base's bias: one layer that computes what the LoRALinear computes.")
def test_lora_linear_merged(student):
    gen = generator(4)
    weight, bias = randn(gen, 6, 10, scale=0.3), randn(gen, 6, scale=0.1)
    layer = student.LoRALinear(student_linear(student, weight, bias), 2, 6)
    a, b = randn(gen, 2, 10), randn(gen, 6, 2)
    layer.load_state_dict({"lora_A.weight": a, "lora_B.weight": b}, strict=False)
    x = randn(gen, 3, 10)
    linear = layer.merged()
    if linear is None or getattr(linear, "type_name", "") != "torch.nn.modules.linear.Linear":
        fail(f"merged() should return an nn.Linear, not {linear!r}.",
             hint="Build nn.Linear(in_features, out_features) and copy the merged weight and the bias into it.")
    sd = state_dict_of(linear, "merged()")
    expect_close(sd.get("weight"), weight + 3.0 * b @ a,
                 "merged().weight for r=2, alpha=6 (should be W + (6 / 2) * B @ A)")
    expect_close(sd.get("bias"), bias, "merged().bias (should be the base layer's bias)")
    expect_close(linear(x), x @ weight.T + bias + 3.0 * (x @ a.T @ b.T), "the merged layer's output")


@visible
@graded("lora_linear", points=1, requires_main=True,
        hint="merged() must build a new layer and leave the LoRALinear as it was: adding scaling * B @ A into "
             "self.base.weight in place would count the update twice in the LoRALinear from then on.")
def test_lora_linear_merged_leaves_the_layer_unchanged(student):
    gen = generator(5)
    weight, bias = randn(gen, 6, 10, scale=0.3), randn(gen, 6, scale=0.1)
    layer = student.LoRALinear(student_linear(student, weight, bias), 2, 6)
    layer.load_state_dict({"lora_A.weight": randn(gen, 2, 10), "lora_B.weight": randn(gen, 6, 2)}, strict=False)
    x = randn(gen, 3, 10)
    before = layer(x)
    layer.merged()
    expect_close(state_dict_of(layer, "LoRALinear").get("base.weight"), weight,
                 "the base layer's weight after calling merged() (should be unchanged)")
    expect_close(layer(x), before, "the LoRALinear's output after calling merged() (should be unchanged)")


@visible
@graded("lora_linear", points=1, requires_main=True,
        hint="Create lora_A and lora_B with the base layer's dtype (and device): nn.Linear(..., bias=False, "
             "dtype=base.weight.dtype, device=base.weight.device). Otherwise a float64 (or float16) model gets "
             "float32 factors, and the matrix products fail or change precision.")
def test_lora_linear_keeps_the_dtype(student):
    gen = generator(6)
    weight, bias = randn(gen, 3, 6, dtype=torch.float64), randn(gen, 3, dtype=torch.float64)
    layer = student.LoRALinear(student_linear(student, weight, bias), 2, 4)
    sd = state_dict_of(layer, "LoRALinear on a float64 layer")
    expect_lora_layer(sd, "", 6, 3, 2, "LoRALinear on a float64 layer")
    dtypes = (sd["lora_A.weight"].dtype, sd["lora_B.weight"].dtype)
    expect(dtypes == (torch.float64, torch.float64),
           f"On a float64 base layer, lora_A and lora_B should be float64 too, but they are {dtypes[0]} and "
           f"{dtypes[1]}.")
    x = randn(gen, 2, 6, dtype=torch.float64)
    expect_tensor(layer(x), "LoRALinear's output for a float64 input of shape (2, 6)", shape=(2, 3),
                  dtype=torch.float64)


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
def test_lora_linear_merged_on_several_shapes(student):
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
def test_lora_linear_computes_in_float64(student):
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
def test_lora_linear_dropout_in_training_mode(student):
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

def injected_llama(student, seed: int, targets, r: int = 4, alpha: float = 8):
    config = tiny_llama_config()
    weights = llama_weights(config, seed)
    model = student.inject_lora(student_llama(student, config, weights), targets, r, alpha)
    return config, weights, model


@visible
@graded("inject_lora", points=4,
        hint="Freeze the whole model first (model.requires_grad_(False)), then replace each nn.Linear whose name "
             "ends with a target by LoRALinear(that_linear, r, alpha, dropout) on its parent module.")
def test_inject_lora_wraps_the_targets(student):
    config, _, model = injected_llama(student, 10, ["q_proj", "v_proj"])
    if model is None or not getattr(model, "type_name", "").endswith("LlamaForCausalLM"):
        fail("inject_lora should return the model it was given.", hint="End with `return model`.")
    types = types_of(student, model)
    wrapped = sorted(name for name, kind in types.items() if kind == "LoRALinear")
    expected = sorted(f"model.layers.{i}.self_attn.{t}" for i in range(2) for t in ("q_proj", "v_proj"))
    expect(wrapped == expected, f"With target_modules=['q_proj', 'v_proj'] the LoRALinear layers should be "
                                f"{expected}, but they are {wrapped}.")
    flags = flags_of(student, model)
    trainable = sorted(name for name, on in flags.items() if on)
    expect(all(".lora_A." in n or ".lora_B." in n for n in trainable),
           f"Only lora_A and lora_B should be trainable, but so are: {[n for n in trainable if 'lora_' not in n][:4]}.")
    d = config["hidden_size"]
    n = sum(math.prod(v.shape) for k, v in state_dict_of(model, "the model").items() if flags.get(k))
    expect(n == 4 * 4 * (d + d), f"4 wrapped 16 -> 16 layers at rank 4 should give {4 * 4 * 32} trainable "
                                 f"parameters, but the model has {n}.")


@visible
@graded("inject_lora", points=3, requires_main=True,
        hint="Right after inject_lora the model must compute exactly what it did before (B starts at zero).")
def test_inject_lora_leaves_outputs_unchanged(student):
    config, weights, model = injected_llama(student, 11, ATTENTION + MLP)
    ids = torch.randint(0, config["vocab_size"], (2, 7), generator=generator(12))
    expect_close(logits_of(model, ids, "the model after inject_lora"), local_llama(config, weights)(input_ids=ids).logits,
                 "the logits right after inject_lora (compared with the untouched model)")


def named_linears(student, gen):
    """A ModuleDict of biased layers whose names test the "ends with" rule: proj, out_proj, proj_head, inner.proj
    (and a LayerNorm, inner.norm)."""
    def linear(d_in, d_out):
        return student_linear(student, randn(gen, d_out, d_in, scale=0.3), randn(gen, d_out, scale=0.1))

    inner = student.construct("torch.nn.ModuleDict", {"proj": linear(6, 6),
                                                      "norm": student.construct("torch.nn.LayerNorm", 6)})
    return student.construct("torch.nn.ModuleDict", {"proj": linear(6, 4), "out_proj": linear(4, 6),
                                                     "proj_head": linear(6, 3), "inner": inner})


@visible
@graded("inject_lora", points=2,
        hint="A target names whole parts of a qualified name: a layer matches when its name equals the target or "
             "ends with '.' + target. 'proj' in name also matches 'proj_head', and name.endswith('proj') also "
             "matches 'out_proj'.")
def test_inject_lora_matches_whole_names(student):
    model = student.inject_lora(named_linears(student, generator(13)), ["proj"], 2, 4)
    if model is None:
        fail("inject_lora should return the model it was given.", hint="End with `return model`.")
    wrapped = sorted(name for name, kind in types_of(student, model).items() if kind == "LoRALinear")
    expect(wrapped == ["inner.proj", "proj"],
           f"In a model with layers proj, out_proj, proj_head and inner.proj, target_modules=['proj'] should wrap "
           f"exactly ['inner.proj', 'proj'], but inject_lora wrapped {wrapped}.")


@visible
@graded("inject_lora", points=2,
        hint="Freeze the whole model first with model.requires_grad_(False): that freezes every parameter, "
             "biases and norms included. Only the new lora_A and lora_B are trainable afterwards.")
def test_inject_lora_freezes_biases_and_norms(student):
    model = student.inject_lora(named_linears(student, generator(14)), ["proj"], 2, 4)
    if model is None:
        fail("inject_lora should return the model it was given.", hint="End with `return model`.")
    trainable = sorted(name for name, on in flags_of(student, model).items() if on)
    expected = sorted(f"{layer}.lora_{x}.weight" for layer in ("proj", "inner.proj") for x in "AB")
    others = [n for n in trainable if ".lora_A." not in n and ".lora_B." not in n]
    expect(not others, f"After inject_lora these parameters are still trainable: {others[:4]}.")
    expect(trainable == expected, f"After inject_lora(model, ['proj'], ...) the trainable parameters should be "
                                  f"{expected}, but they are {trainable}.",
           hint="Freeze first, wrap after: freezing after wrapping also freezes lora_A and lora_B." if not trainable
           else "Only the layers whose names end with '.proj' (or are 'proj') get a lora_A and a lora_B.")


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
            elif set(wrapped) < set(expected) and all("." not in name for name in wrapped):
                hint = ("Only the model's direct children were wrapped: a target nested deeper (such as inner.proj) "
                        "must be wrapped too. Walk every submodule with model.named_modules() and replace each target "
                        "on its parent module.")
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

@visible
@graded("merge_lora", points=3,
        hint="Replace every LoRALinear (on its parent module) by layer.merged(): a plain nn.Linear whose weight is "
             "W + scaling * B @ A.")
def test_merge_lora_keeps_outputs(student):
    config, weights, model = injected_llama(student, 20, ["q_proj", "up_proj"], r=2, alpha=6)
    gen = generator(21)
    load_random_lora(student, model, weights, gen, r=2)
    ids = torch.randint(0, config["vocab_size"], (2, 7), generator=gen)
    before = logits_of(model, ids, "the model with LoRA")
    merged = student.merge_lora(model)
    if merged is None:
        fail("merge_lora should return the model.", hint="End with `return model`.")
    left = [n for n, kind in types_of(student, merged).items() if kind == "LoRALinear"]
    expect(not left, f"After merge_lora the model still has LoRALinear layers: {left[:3]}.")
    expect_close(logits_of(merged, ids, "the merged model"), before, "the logits after merge_lora (vs before it)",
                 rtol=1e-4, atol=1e-4)


@visible
@graded("merge_lora", points=2,
        hint="Replace every LoRALinear (on its parent module, under the same name) by layer.merged(): an nn.Linear "
             "with weight W + scaling * B @ A that keeps the base layer's bias.")
def test_merge_lora_keeps_the_biases(student):
    config = tiny_llama_config(attention_bias=True, mlp_bias=True)  # every projection has a bias
    weights = llama_weights(config, 22)
    model = student.inject_lora(student_llama(student, config, weights), ["v_proj", "down_proj"], 2, 4)
    gen = generator(23)
    load_random_lora(student, model, weights, gen, r=2)
    ids = torch.randint(0, config["vocab_size"], (2, 7), generator=gen)
    before = logits_of(model, ids, "the model with LoRA")
    merged = student.merge_lora(model)
    if merged is None:
        fail("merge_lora should return the model.", hint="End with `return model`.")
    missing = sorted(set(weights) - set(state_dict_of(merged, "the merged model")))
    expect(not missing, f"After merge_lora, a model whose layers have biases lacks: {missing[:3]}.",
           hint="The merged nn.Linear keeps the base layer's bias: nn.Linear(in, out, bias=base.bias is not None), "
                "with the bias copied over." if all(k.endswith(".bias") for k in missing) else None)
    expect_close(logits_of(merged, ids, "the merged model"), before,
                 "the logits after merge_lora, in a model whose layers have biases (vs before it)",
                 rtol=1e-4, atol=1e-4)


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
    left = [name for name in lora if types.get(name) == "LoRALinear"]
    if left == list(lora):
        fail("After merge_lora every LoRALinear is still in the model.",
             hint="layer.merged() returns a new nn.Linear and leaves the model as it was: put that new layer in the "
                  "LoRALinear's place, setattr(parent, child_name, layer.merged()).")
    if left and "proj" not in left:
        fail(f"After merge_lora the top-level `proj` is merged, but {left} are still LoRALinear layers.",
             hint="Only the model's direct children were merged: a LoRALinear nested deeper must be replaced too. "
                  "Walk every submodule with model.named_modules() and replace each LoRALinear on its parent.")
    for name in lora:
        expect(types.get(name) == "Linear", f"After merge_lora, `{name}` is a {types.get(name)}, not an nn.Linear.")
    sd = state_dict_of(merged, "the merged ModuleDict")
    for name, (a, b) in lora.items():
        expect_close(sd.get(f"{name}.bias"), originals[f"{name}.bias"], f"{name}.bias after merge_lora",
                     hint="Copy the base layer's bias into the merged layer.")
        expect_close(sd.get(f"{name}.weight"), originals[f"{name}.weight"] + 3.0 * b @ a, f"{name}.weight after merge_lora")


# -- ROUGE -----------------------------------------------------------------------------------------

@visible
@graded("rouge_n", points=3,
        hint="Count each n-gram of the lower-cased whitespace tokens; the overlap counts an n-gram at most as often "
             "as it occurs in each text (min of the two counts). precision = overlap / candidate n-grams, "
             "recall = overlap / reference n-grams.")
def test_rouge_n_worked_examples(student):
    expect_scores(student.rouge_n("the cat sat on the mat", "The cat is on the mat"), (5 / 6, 5 / 6, 5 / 6),
                  'rouge_n("the cat sat on the mat", "The cat is on the mat")')
    expect_scores(student.rouge_n("the cat sat on the mat", "The cat is on the mat", n=2), (3 / 5, 3 / 5, 3 / 5),
                  'rouge_n(..., n=2) for the same texts (bigrams "the cat", "on the", "the mat" match)')
    expect_scores(student.rouge_n("the the the", "the cat"), (1 / 3, 1 / 2, 0.4),
                  'rouge_n("the the the", "the cat")',
                  hint='"the" occurs once in the reference, so it can match only once: clip the counts.')


@visible
@graded("rouge_n", points=1, requires_main=True,
        hint="A text with no n-grams (empty, or shorter than n) gives nothing to divide by: its precision or "
             "recall is 0, and f1 is 0 when precision + recall is 0. Test before you divide.")
def test_rouge_n_empty_texts_score_zero(student):
    for cand, refr, n in [("", "the cat", 1), ("the cat", "", 1), ("", "", 1), ("the cat", "the cat sat", 3)]:
        expect_scores(student.rouge_n(cand, refr, n=n), (0.0, 0.0, 0.0), f"rouge_n({cand!r}, {refr!r}, n={n})")


@visible
@graded("rouge_l", points=3,
        hint="Find the length of the longest common subsequence (in order, gaps allowed) of the two token lists by "
             "dynamic programming; precision = LCS / candidate length, recall = LCS / reference length.")
def test_rouge_l_worked_examples(student):
    expect_scores(student.rouge_l("the cat sat on the mat", "The cat is on the mat"), (5 / 6, 5 / 6, 5 / 6),
                  'rouge_l("the cat sat on the mat", "The cat is on the mat")')
    expect_scores(student.rouge_l("mat on sat cat the", "the cat sat on mat"), (1 / 5, 1 / 5, 1 / 5),
                  'rouge_l("mat on sat cat the", "the cat sat on mat") (every word matches, but in reverse order)',
                  hint="ROUGE-L counts words in the same order: a longest common SUBSEQUENCE, not a bag of words.")


@visible
@graded("rouge_l", points=2,
        hint="f1 is the harmonic mean of precision p and recall r: 2 * p * r / (p + r). It is pulled towards the "
             "smaller of the two (the plain mean (p + r) / 2 is not).")
def test_rouge_l_f1_is_the_harmonic_mean(student):
    expect_scores(student.rouge_l("the cat sat on the mat", "the cat sat"), (1 / 2, 1.0, 2 / 3),
                  'rouge_l("the cat sat on the mat", "the cat sat") (LCS 3 of 6 and of 3 words: f1 = 2 * 0.5 * 1 '
                  '/ 1.5)')


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


def _case_kept(text: str) -> str:
    """`text` with each whitespace token spelled in hex code points: lower-casing then changes nothing, so the
    reference scores it as a rouge that never lower-cased ('The' and 'the' stay two tokens)."""
    return " ".join(".".join(f"{ord(c):x}" for c in token) for token in text.split())


def _scores(result) -> tuple | None:
    try:
        return tuple(float(result[k]) for k in ("precision", "recall", "f1"))
    except Exception:
        return None


def _scores_mistake(result, expected: tuple, mistakes) -> str | None:
    """The hint of the first known mistake whose (precision, recall, f1) the student's `result` is, or None: a
    mistake that gives the right scores for these texts is no mistake here."""
    got = _scores(result)
    if got is None:
        return None

    def same(a, b):
        return all(abs(x - y) <= 1e-9 for x, y in zip(a, b))
    for answer, hint in mistakes:
        wrong = answer() if callable(answer) else answer
        if wrong is not None and not same(wrong, expected) and same(got, wrong):
            return hint
    return None


_NOT_LOWER_CASED = ("The tokens are not lower-cased: 'The' and 'the' count as different words. Lower-case both texts "
                    "before splitting them (text.lower().split()).")
_PRECISION_RECALL_SWAPPED = ("precision and recall are swapped: precision divides the overlap by the CANDIDATE's "
                             "count, recall by the REFERENCE's.")
_F1_PLAIN_MEAN = ("precision and recall are right but f1 is not: f1 is the harmonic mean 2 * p * r / (p + r), "
                  "not the plain mean (p + r) / 2.")


def _rouge_mistakes(expected: tuple, case_kept: tuple | None = None, unigrams: tuple | None = None) -> list:
    p, r, f1 = expected
    return [(case_kept, _NOT_LOWER_CASED),
            (unigrams, "n is ignored: these are the unigram (n=1) scores. Count the n-grams, tuples of n "
                       "consecutive tokens, for the n asked."),
            ((r, p, f1), _PRECISION_RECALL_SWAPPED),
            ((p, r, (p + r) / 2), _F1_PLAIN_MEAN)]


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
        hint = _scores_mistake(result, expected, _rouge_mistakes(expected))
        if hint is None and what.startswith("texts that differ only in case"):
            hint = _NOT_LOWER_CASED
        elif hint is None and (what.startswith("repeated") or what.startswith("a token repeated")):
            hint = "Clip: an n-gram matches at most min(count in candidate, count in reference) times."
        expect_scores(result, expected, f"rouge_n({cand!r}, {refr!r}, n={n}) ({what})", hint)


@graded("rouge_n", points=3, hint="Follow the definition exactly for every n: clipped n-gram overlap, "
                                  "precision over the candidate's n-grams, recall over the reference's.")
def test_rouge_n_random_texts(student):
    for i, (cand, refr) in enumerate(_random_pairs(400, 30)):
        n = 1 + i % 3
        expected = tuple(ref.rouge_n(cand, refr, n).values())
        result = student.rouge_n(cand, refr, n=n)
        mistakes = _rouge_mistakes(expected, tuple(ref.rouge_n(_case_kept(cand), _case_kept(refr), n).values()),
                                   tuple(ref.rouge_n(cand, refr, 1).values()) if n > 1 else None)
        expect_scores(result, expected, f"rouge_n({cand!r}, {refr!r}, n={n})", _scores_mistake(result, expected, mistakes))


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
        result = student.rouge_l(cand, refr)
        named = _scores_mistake(result, expected, _rouge_mistakes(expected))
        if named is None and what.startswith("texts that differ only in case"):
            named = _NOT_LOWER_CASED
        expect_scores(result, expected, f"rouge_l({cand!r}, {refr!r}) ({what})", named or hint)


@graded("rouge_l", points=2, hint="precision = LCS / candidate length, recall = LCS / reference length, "
                                  "f1 their harmonic mean.")
def test_rouge_l_random_texts(student):
    for cand, refr in _random_pairs(401, 30):
        expected = tuple(ref.rouge_l(cand, refr).values())
        result = student.rouge_l(cand, refr)
        mistakes = _rouge_mistakes(expected, tuple(ref.rouge_l(_case_kept(cand), _case_kept(refr)).values()))
        expect_scores(result, expected, f"rouge_l({cand!r}, {refr!r})", _scores_mistake(result, expected, mistakes))


# -- finetune --------------------------------------------------------------------------------------

def memorise_examples(n: int = 4) -> list[dict]:
    """n copies of one short sequence, its first 3 tokens unlabelled (every batch is then the same)."""
    ids = [1, 5, 9, 13, 17, 21, 25, 2]
    return [{"input_ids": list(ids), "labels": [-100] * 3 + ids[3:]} for _ in range(n)]


@visible
@graded("finetune", points=3,
        hint="Return a list with one float (loss.item()) per step; record each step's loss before updating, so "
             "the first is the untrained model's loss.")
def test_finetune_returns_the_losses(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 30)
    model = student_llama(student, config, weights)
    losses = student.finetune(model, memorise_examples(), 10, 3e-2, batch_size=2, seed=0)
    if not isinstance(losses, list) or len(losses) != 10 or not all(isinstance(v, float) for v in losses):
        fail(f"finetune(..., steps=10) should return a list of 10 floats, not {type(losses).__name__} "
             f"{str(losses)[:80]}.")
    example = memorise_examples(1)[0]
    start = local_llama(config, weights)(input_ids=torch.tensor([example["input_ids"]]),
                                         labels=torch.tensor([example["labels"]])).loss.item()
    expect(abs(losses[0] - start) < 1e-4 * max(1.0, start),
           f"The first loss should be the untrained model's loss on the first batch ({start:.4f}), but it is "
           f"{losses[0]:.4f}.", hint="Use the loss the model returns when given labels (model(**batch).loss), and "
                                     "record it before the optimizer step.")
    expect(losses[-1] < 0.5 * losses[0], f"On a batch repeated 10 times at lr=3e-2 the loss should fall below half "
                                         f"its start, but it went from {losses[0]:.3f} to {losses[-1]:.3f}.",
           hint="optimizer.zero_grad(), loss.backward(), optimizer.step() at every step, with AdamW(lr=lr).")


def varied_examples(seed: int, count: int) -> list[dict]:
    """`count` random sequences of 4 to 12 tokens, each with an unlabelled prompt of random length."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        ids = [rng.randrange(3, 40) for _ in range(rng.randint(4, 12))]
        prompt = rng.randint(1, len(ids) - 2)
        examples.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return examples


@visible
@graded("finetune", points=2,
        hint="Make one torch.optim.AdamW(trainable parameters, lr=lr) before the loop (it keeps running averages "
             "of the gradients from step to step), and at every step: loss = model(**batch).loss; "
             "optimizer.zero_grad(); loss.backward(); optimizer.step(). Without zero_grad the gradients of "
             "earlier steps add up.")
def test_finetune_steps_like_adamw(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 31)
    data = memorise_examples(4)  # every batch is the same, whatever the order
    losses = student.finetune(student_llama(student, config, weights), data, 4, 1e-2, batch_size=2, seed=0)
    if not isinstance(losses, list) or len(losses) != 4:
        fail(f"finetune(..., steps=4) should return a list of 4 losses, not {str(losses)[:80]}.")
    # The textbook loop, here in the checker, on that one batch.
    model = local_llama(config, weights)
    batch = {"input_ids": torch.tensor([data[0]["input_ids"]] * 2), "labels": torch.tensor([data[0]["labels"]] * 2),
             "attention_mask": torch.ones(2, len(data[0]["input_ids"]), dtype=torch.long)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    expected = []
    for _ in range(4):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        expected.append(loss.item())
    expect_close(torch.tensor(losses, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                 "the 4 losses on a repeated batch (compared with torch's AdamW made once, zero_grad every step)",
                 rtol=1e-4, atol=1e-5)


@visible
@graded("finetune", points=2,
        hint="Each shuffled pass uses every example once (a permutation, not random draws), so with batch_size == "
             "len(dataset) the first batch is the whole data set. Pad it with pad_batch: padding gets label -100, "
             "so the loss ignores it.")
def test_finetune_first_batch_is_the_whole_padded_data_set(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 32)
    data = varied_examples(33, 6)
    losses = student.finetune(student_llama(student, config, weights), data, 1, 1e-3, batch_size=6, seed=3)
    if not isinstance(losses, list) or len(losses) != 1:
        fail(f"finetune(..., steps=1) should return a list of 1 loss, not {str(losses)[:80]}.")
    pad = torch.nn.utils.rnn.pad_sequence
    batch = {"input_ids": pad([torch.tensor(e["input_ids"]) for e in data], batch_first=True, padding_value=0),
             "labels": pad([torch.tensor(e["labels"]) for e in data], batch_first=True, padding_value=-100),
             "attention_mask": pad([torch.ones(len(e["input_ids"]), dtype=torch.long) for e in data],
                                   batch_first=True)}
    with torch.no_grad():
        expected = local_llama(config, weights)(**batch).loss.item()
    expect(abs(losses[0] - expected) < 1e-4 * max(1.0, expected),
           f"With batch_size=6 on 6 examples of different lengths, the first loss should be the untrained model's "
           f"loss on all 6, right-padded ({expected:.4f}), but it is {losses[0]:.4f}.")


@visible
@graded("finetune", points=1, requires_main=True,
        hint="Give the optimizer only the parameters with requires_grad=True and never unfreeze anything: "
             "finetune trains what the caller left trainable (all of it, or only LoRA's factors).")
def test_finetune_leaves_frozen_parameters_alone(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 34)
    model = student_llama(student, config, weights)
    model.requires_grad_(False)
    model.lm_head.requires_grad_(True)
    student.finetune(model, memorise_examples(4), 2, 1e-2, batch_size=2, seed=0)
    after = state_dict_of(model, "the model after finetune")
    changed = [k for k, v in weights.items() if k != "lm_head.weight" and not torch.equal(after[k], v)]
    expect(not changed, f"With everything frozen but lm_head, finetune changed frozen parameters: {changed[:3]}.")
    flags = flags_of(student, model)
    unfrozen = [k for k, on in flags.items() if on and k != "lm_head.weight"]
    expect(not unfrozen, f"finetune made frozen parameters trainable again: {unfrozen[:3]}.")


@visible
@graded("finetune", points=1, requires_main=True,
        hint="Shuffle with your own torch.Generator().manual_seed(seed) (passed as generator= to torch.randperm), "
             "not the global random state: the same seed then gives the same batches, and another seed others.")
def test_finetune_same_seed_same_losses(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 35)
    data = varied_examples(36, 8)
    runs = [student.finetune(student_llama(student, config, weights), data, 2, 1e-3, batch_size=2, seed=s)
            for s in (7, 7, 8)]
    expect(all(isinstance(r, list) and len(r) == 2 for r in runs), "finetune(..., steps=2) should return 2 losses.")
    expect(max(abs(a - b) for a, b in zip(runs[0], runs[1])) < 1e-6,
           f"Two runs with seed=7 from the same weights gave different losses: {runs[0]} and {runs[1]}.")
    expect(runs[0] != runs[2], "Runs with seed=7 and seed=8 gave the same losses: is `seed` used for the shuffling?")


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
