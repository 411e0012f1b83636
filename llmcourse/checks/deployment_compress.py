"""Visible checks for 07_deployment (memory, quantisation, pruning): what `check("07_deployment/<exercise>")` runs.

Small cases worked out by hand, and properties every correct answer has (integer codes in range, every value
within half a step of its code, the largest |w| of a slice on the largest code). Layers and models are built in
your kernel (an nn.Linear, a tiny Llama from transformers) with known weights. More checks run when your notebook
is graded.

What they share with the graders' checks lives in llmcourse.checking.shared.deployment_compress, so that both
talk about your code in the same words.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from llmcourse.checking import expect, expect_close, fail, generator, graded, mistake_hint, randn, state_dict_of
from llmcourse.checking.shared.deployment_compress import (MEMORY_HINT, PRUNE_HINT, QL_HINT, QM_HINT, QUANT_ABSMAX_HINT,
                                                           QUANT_DEQUANTIZE_HINT, QUANT_ZEROPOINT_HINT,
                                                           compress_same_object, compress_shown, memory_expect_bytes,
                                                           ql_expect_state, ql_expected_scale, ql_from_linear,
                                                           ql_weight_of, qm_expect_types, qm_student_model,
                                                           quant_expect_absmax, quant_expect_zeropoint)
from llmcourse.checking.shared.lora import local_llama, logits_of, student_linear

ASSIGNMENT = "07_deployment"


# -- model_memory --------------------------------------------------------------------------------------

@graded("model_memory", points=2, hint=MEMORY_HINT)
def test_model_memory_for_inference(student):
    n = 10 ** 9
    for n_params, dtype, expected in [(n, "fp32", 4 * n), (n, "fp16", 2 * n), (n, "bf16", 2 * n), (n, "int8", n),
                                      (n, "int4", n // 2), (7, "int4", 4), (3, "fp16", 6), (0, "fp32", 0)]:
        mistakes = [] if dtype != "int4" else [
            (n_params, "int4 stores two parameters in a byte: half a byte each."),
            (n_params * 0.5, "An odd number of 4-bit parameters still needs a whole last byte: round up (math.ceil)."),
            (n_params // 2, "An odd number of 4-bit parameters still needs a whole last byte: round up, not down."),
        ]
        memory_expect_bytes(student.model_memory(n_params, dtype), expected, f"model_memory({n_params}, {dtype!r})",
                            mistakes, "the weights only")


@graded("model_memory", points=2, hint=MEMORY_HINT)
def test_model_memory_for_training(student):
    # (dtype, mixed_precision, bytes per parameter: weights, gradients, Adam's two states, master copy)
    for dtype, mixed, parts in [("fp32", False, (4, 4, 8, 0)), ("fp16", False, (2, 2, 8, 0)),
                                ("bf16", True, (2, 2, 8, 4)), ("fp16", True, (2, 2, 8, 4))]:
        for count in (10 ** 9, 1000):
            weights, grads, adam, master = (count * p for p in parts)
            why = (f"{parts[0]} (weights) + {parts[1]} (gradients) + 8 (Adam's two fp32 states)"
                   + (" + 4 (fp32 master copy)" if mixed else "") + " bytes a parameter")
            memory_expect_bytes(
                student.model_memory(count, dtype, training=True, mixed_precision=mixed), weights + grads + adam + master,
                f"model_memory({count}, {dtype!r}, training=True, mixed_precision={mixed})", [
                    (weights + grads + master, "Adam keeps two numbers per parameter (the running mean and the "
                                               "running mean of squares), in fp32: 8 bytes a parameter."),
                    (weights + grads + adam // 2 + master, "Adam keeps TWO states per parameter (first and second "
                                                           "moment), 4 bytes each: 8 bytes a parameter."),
                    (weights + grads + adam + 4 * count, "The fp32 master copy exists only with mixed precision: "
                                                         "pure fp32 (or pure fp16) training has no second copy."),
                    (weights + 4 * count + adam + master, "The gradients have the weights' dtype (2 bytes under "
                                                          "mixed precision); only the master copy is fp32."),
                    (weights + adam + master, "Training stores a gradient for every weight, in the weights' dtype."),
                ], why)


# -- quantize_absmax -----------------------------------------------------------------------------------

@graded("quantize_absmax", points=2, hint=QUANT_ABSMAX_HINT)
def test_quantize_absmax_by_hand(student):
    w = torch.tensor([[-2.54, 1.0, 0.0], [0.5, -0.058, 2.0]])
    what = "quantize_absmax(w) for w = [[-2.54, 1.0, 0.0], [0.5, -0.058, 2.0]]"
    q, scale = quant_expect_absmax(student.quantize_absmax(w), w, 8, None, what)
    expect(abs(float(scale.reshape(-1)[0]) - 0.02) < 1e-7,
           f"max|w| = 2.54, so the scale should be 2.54 / 127 = 0.02, not {float(scale.reshape(-1)[0]):.6g}.")
    expected = torch.tensor([[-127, 50, 0], [25, -3, 100]], dtype=torch.int8)
    expect(torch.equal(q, expected), f"{what}, with scale 0.02, should give q = {expected.tolist()} (e.g. -0.058 / "
                                     f"0.02 = -2.9 rounds to -3), but q = {q.tolist()}.")
    w = torch.tensor([1.4, -0.62, 0.26, 0.0, -1.15])
    what = "quantize_absmax(w, bits=4) for w = [1.4, -0.62, 0.26, 0.0, -1.15]"
    q, scale = quant_expect_absmax(student.quantize_absmax(w, bits=4), w, 4, None, what)
    expected = torch.tensor([7, -3, 1, 0, -6], dtype=torch.int8)
    expect(torch.equal(q, expected), f"{what} (qmax = 7, scale = 1.4 / 7 = 0.2) should give q = {expected.tolist()}, "
                                     f"but q = {q.tolist()}.")


@graded("quantize_absmax", points=2, hint=QUANT_ABSMAX_HINT)
def test_quantize_absmax_per_slice_by_hand(student):
    w = torch.tensor([[0.254, -0.13, 0.0, 0.1], [0.0, 0.0, 0.0, 0.0], [-1.27, 0.5, 0.0116, 0.8]])
    shown = "w = [[0.254, -0.13, 0.0, 0.1], [0.0, 0.0, 0.0, 0.0], [-1.27, 0.5, 0.0116, 0.8]]"
    what = f"quantize_absmax(w, dim=0) for {shown}"
    q, scale = quant_expect_absmax(student.quantize_absmax(w, dim=0), w, 8, 0, what)
    expect_close(scale, torch.tensor([[0.002], [1.0], [0.01]]), f"{what}: the scale (one per row; the row of zeros "
                                                                f"gets 1)", rtol=1e-5, atol=0)
    expected = torch.tensor([[127, -65, 0, 50], [0, 0, 0, 0], [-127, 50, 1, 80]], dtype=torch.int8)
    expect(torch.equal(q, expected), f"{what} should give q = {expected.tolist()}, but q = {q.tolist()}.")
    for dim in (1, -1):
        what = f"quantize_absmax(w, dim={dim}) (one scale per column) for {shown}"
        q, scale = quant_expect_absmax(student.quantize_absmax(w, dim=dim), w, 8, dim, what)
        expected = torch.tensor([[25, -33, 0, 16], [0, 0, 0, 0], [-127, 127, 127, 127]], dtype=torch.int8)
        expect(torch.equal(q, expected), f"{what} should give q = {expected.tolist()}, but q = {q.tolist()}.")


@graded("quantize_absmax", points=2, hint=QUANT_ABSMAX_HINT)
def test_quantize_absmax_properties(student):
    gen = generator(7)
    for shape, dim, bits in [((5, 7), None, 8), ((5, 7), 0, 8), ((5, 7), 1, 4), ((2, 3, 4), 1, 8),
                             ((2, 3, 4), -1, 3), ((6,), 0, 8), ((6,), None, 2), ((4, 9), -2, 6)]:
        w = randn(gen, *shape)
        w.view(-1)[3] = 5.0  # an outlier
        quant_expect_absmax(student.quantize_absmax(w, bits=bits, dim=dim), w, bits, dim,
                            f"quantize_absmax(w of shape {shape}, bits={bits}, dim={dim})")


# -- quantize_zeropoint --------------------------------------------------------------------------------

@graded("quantize_zeropoint", points=2, hint=QUANT_ZEROPOINT_HINT)
def test_quantize_zeropoint_by_hand(student):
    for w, bits, scale, zp, codes, note in [
        ([-1.0, 0.0, 0.5, 1.55, 0.237, -0.237], 8, 0.01, 100, [0, 100, 150, 255, 124, 76],
         "range [-1, 1.55], scale 2.55 / 255 = 0.01, zero point 100"),
        ([0.5, 1.0, 2.55], 8, 0.01, 0, [50, 100, 255], "all positive: the range [0, 2.55] still holds 0"),
        ([-0.51, -0.2], 8, 0.002, 255, [0, 155], "all negative: the range is [-0.51, 0]"),
        ([-0.37, 0.0, 0.83, 0.3], 4, 0.08, 5, [0, 5, 15, 9],
         "4 bits: qmax 15, scale 1.2 / 15 = 0.08, zero point round(0.37 / 0.08) = round(4.625) = 5"),
    ]:
        what = f"quantize_zeropoint(torch.tensor({w})" + (", bits=4)" if bits == 4 else ")")
        w = torch.tensor(w)
        result = student.quantize_zeropoint(w, bits=bits) if bits != 8 else student.quantize_zeropoint(w)
        q, s, z = quant_expect_zeropoint(result, w, bits, None, what)
        expect(abs(float(s.reshape(-1)[0]) - scale) < 1e-6 and int(z.reshape(-1)[0]) == zp and q.tolist() == codes,
               f"{what} should give scale {scale}, zero_point {zp} and q = {codes} ({note}), but it gave scale "
               f"{float(s.reshape(-1)[0]):.6g}, zero_point {int(z.reshape(-1)[0])} and q = {q.tolist()}.")


@graded("quantize_zeropoint", points=2, hint=QUANT_ZEROPOINT_HINT)
def test_quantize_zeropoint_per_slice_by_hand(student):
    w = torch.tensor([[-1.0, 0.0, 0.5, 1.55], [0.0, 0.0, 0.0, 0.0], [0.5, 1.0, 2.55, 1.2]])
    shown = "w = [[-1.0, 0.0, 0.5, 1.55], [0.0, 0.0, 0.0, 0.0], [0.5, 1.0, 2.55, 1.2]]"
    what = f"quantize_zeropoint(w, dim=0) for {shown}"
    q, scale, zp = quant_expect_zeropoint(student.quantize_zeropoint(w, dim=0), w, 8, 0, what)
    expect_close(scale, torch.tensor([[0.01], [1.0], [0.01]]), f"{what}: the scale (one per row; the row of zeros "
                                                               f"gets 1)", rtol=1e-5, atol=0)
    expect(zp.flatten().tolist() == [100, 0, 0], f"{what} should give the zero points [100, 0, 0], not "
                                                 f"{zp.flatten().tolist()}.")
    expected = [[0, 100, 150, 255], [0, 0, 0, 0], [50, 100, 255, 120]]
    expect(q.tolist() == expected, f"{what} should give q = {expected}, but q = {q.tolist()}.")
    for dim in (1, -1):
        what = f"quantize_zeropoint(w, dim={dim}) (one scale per column) for {shown}"
        q, scale, zp = quant_expect_zeropoint(student.quantize_zeropoint(w, dim=dim), w, 8, dim, what)
        expected = [[0, 0, 50, 255], [170, 0, 0, 0], [255, 255, 255, 197]]
        expect(q.tolist() == expected and zp.flatten().tolist() == [170, 0, 0, 0],
               f"{what} should give q = {expected} and zero points [170, 0, 0, 0], but it gave q = {q.tolist()} and "
               f"{zp.flatten().tolist()}.")


@graded("quantize_zeropoint", points=1, hint=QUANT_ZEROPOINT_HINT)
def test_quantize_zeropoint_properties(student):
    gen = generator(8)
    for shape, dim, bits, shift in [((5, 7), None, 8, 0.3), ((5, 7), 0, 8, 0.0), ((5, 7), 1, 4, 0.5),
                                    ((2, 3, 4), 1, 8, -0.4), ((2, 3, 4), -1, 3, 0.0), ((6,), None, 2, 2.0),
                                    ((4, 9), -2, 6, 0.7)]:
        w = randn(gen, *shape) + shift
        w.view(-1)[2] = 0.0  # an exact zero must stay exact
        quant_expect_zeropoint(student.quantize_zeropoint(w, bits=bits, dim=dim), w, bits, dim,
                               f"quantize_zeropoint(w of shape {shape}, bits={bits}, dim={dim})")


# -- dequantize ----------------------------------------------------------------------------------------

def dequant_expect(student, q, scale, zero_point, expected, what: str) -> None:
    got = student.dequantize(q, scale) if zero_point is None else student.dequantize(q, scale, zero_point)
    if isinstance(got, torch.Tensor) and got.shape == expected.shape and not torch.allclose(
            got.double(), expected.double(), rtol=1e-5, atol=1e-7):
        s, c = scale.double(), q.double()
        z = 0.0 if zero_point is None else zero_point.double()
        hint = mistake_hint(got, expected, [
            ((c + z) * s, "Subtract the zero point: w = (q - zero_point) * scale."),
            ((c - z) / s, "Multiply by the scale: w = (q - zero_point) * scale."),
            (c * s, "Use the zero point when one is given: w = (q - zero_point) * scale."),
            ((q - zero_point).double() * s if zero_point is not None else None,
             "q - zero_point computed in the integer dtype wraps around (uint8: 0 - 100 = 156): cast q and the "
             "zero point to scale's dtype before subtracting."),
        ], rtol=1e-5, atol=1e-7)
        if hint is not None:
            fail(f"{what} does not give the expected values: got {got.flatten().tolist()[:6]}, expected "
                 f"{expected.flatten().tolist()[:6]}.", hint)
    expect_close(got, expected, what, rtol=1e-6, atol=1e-7, check_dtype=True, hint=QUANT_DEQUANTIZE_HINT)


@graded("dequantize", points=2, hint=QUANT_DEQUANTIZE_HINT)
def test_dequantize_by_hand(student):
    dequant_expect(student, torch.tensor([[-127, 50, 0], [25, -3, 100]], dtype=torch.int8), torch.tensor(0.02), None,
                   torch.tensor([[-2.54, 1.0, 0.0], [0.5, -0.06, 2.0]]), "dequantize(int8 codes, scale 0.02)")
    dequant_expect(student, torch.tensor([0, 100, 150, 255], dtype=torch.uint8), torch.tensor(0.01),
                   torch.tensor(100, dtype=torch.int32), torch.tensor([-1.0, 0.0, 0.5, 1.55]),
                   "dequantize([0, 100, 150, 255] as uint8, scale 0.01, zero_point 100)")
    q = torch.tensor([[0, 10, 255], [3, 0, 1]], dtype=torch.uint8)
    scale = torch.tensor([[0.5], [0.25]], dtype=torch.float64)
    zp = torch.tensor([[10], [2]], dtype=torch.uint8)
    dequant_expect(student, q, scale, zp, torch.tensor([[-5.0, 0.0, 122.5], [0.25, -0.5, -0.25]], dtype=torch.float64),
                   "dequantize(uint8 codes, float64 scales of shape (2, 1), uint8 zero points of shape (2, 1)) "
                   "(the result should have scale's dtype, float64)")


# -- QuantizedLinear -----------------------------------------------------------------------------------

def ql_expect_buffers(layer, weight: torch.Tensor, bias, bits: int, group_size, what: str) -> dict:
    """weight_q int8 (out, in) with the right codes, scale (n_scales, 1), bias kept, no float copy of the weight."""
    sd = state_dict_of(layer, what)
    ql_expect_state(sd, weight, bias, bits, group_size, what)
    return sd


@graded("quantized_linear", points=2, hint=QL_HINT)
def test_quantized_linear_stores_int8_codes(student):
    gen = generator(20)
    weight = randn(gen, 6, 8, scale=0.3) * torch.linspace(0.2, 2.0, 6)[:, None]  # rows of different sizes
    bias = randn(gen, 6, scale=0.1)
    for bits in (8, 4):
        what = f"QuantizedLinear.from_linear(Linear(8, 6), bits={bits})"
        layer = ql_from_linear(student, weight, bias, bits, None, what)
        sd = ql_expect_buffers(layer, weight, bias, bits, None, what)
        stored = sum(v.numel() * v.element_size() for v in sd.values())
        expect(stored <= (weight.numel() * 4 + bias.numel() * 4) // 2,
               f"{what} stores {stored} bytes, about as much as the float layer "
               f"({weight.numel() * 4 + bias.numel() * 4} bytes): quantising should shrink it.",
               hint="Keep only weight_q (int8), scale and bias on the module.")


@graded("quantized_linear", points=3, hint=QL_HINT)
def test_quantized_linear_forward(student):
    gen = generator(21)
    for out_features, in_features, bias_on, shape in [(6, 8, True, (2, 3, 8)), (5, 12, False, (4, 12))]:
        weight = randn(gen, out_features, in_features, scale=0.3)
        bias = randn(gen, out_features, scale=0.1) if bias_on else None
        what = f"QuantizedLinear.from_linear(Linear({in_features}, {out_features}, bias={bias_on}))"
        layer = ql_from_linear(student, weight, bias, 8, None, what)
        sd = state_dict_of(layer, what)
        if not {"weight_q", "scale"} <= set(sd):
            fail(f"{what} has no buffers weight_q and scale.", hint=QL_HINT)
        x = randn(gen, *shape)
        out = layer(x)
        dequantised = ql_weight_of(sd, out_features, in_features)
        expected = F.linear(x.double(), dequantised, None if bias is None else bias.double())
        if isinstance(out, torch.Tensor) and out.shape == expected.shape and not torch.allclose(
                out.double(), expected, rtol=1e-4, atol=1e-5):
            codes_only = F.linear(x.double(), sd["weight_q"].double(), None if bias is None else bias.double())
            if torch.allclose(out.double(), codes_only, rtol=1e-4, atol=1e-4):
                fail(f"{what}: forward multiplies by the integer codes: the scales are missing.",
                     hint="Dequantise first: weight = weight_q * scale (in float), then F.linear(x, weight, bias).")
            if bias is not None and torch.allclose(out.double(), expected - bias.double(), rtol=1e-4, atol=1e-5):
                fail(f"{what}: forward leaves out the bias.", hint="F.linear(x, weight, self.bias).")
        expect_close(out, expected.float(), f"{what}(x) for x of shape {shape} (compared with F.linear and the "
                                            f"weight your buffers stand for, weight_q * scale)",
                     rtol=1e-4, atol=1e-5)
        full = F.linear(x.double(), weight.double(), None if bias is None else bias.double())
        bound = x.double().abs() @ (ql_expected_scale(weight, 8, None) / 2).expand(-1, in_features).t()
        expect(bool(((out.double() - full).abs() <= bound + 1e-5).all()),
               f"{what}(x) is further from the float layer's output than the quantisation error allows.", QL_HINT)


@graded("quantized_linear", points=2, hint=QL_HINT)
def test_quantized_linear_groups(student):
    gen = generator(22)
    weight = randn(gen, 4, 16, scale=0.2)
    weight[1, 3] = 6.0  # an outlier: one scale per row would waste the codes of row 1
    bias = randn(gen, 4, scale=0.1)
    x = randn(gen, 3, 16)
    errors = {}
    for group_size in (None, 4):
        what = f"QuantizedLinear.from_linear(Linear(16, 4), group_size={group_size})"
        layer = ql_from_linear(student, weight, bias, 8, group_size, what)
        sd = ql_expect_buffers(layer, weight, bias, 8, group_size, what)
        out = layer(x)
        expect_close(out, F.linear(x.double(), ql_weight_of(sd, 4, 16), bias.double()).float(),
                     f"{what}(x) (compared with F.linear and the weight your buffers stand for)", rtol=1e-4, atol=1e-5,
                     hint="forward: view weight_q as (n_scales, -1), multiply by scale, reshape to (out, in), then "
                          "F.linear.")
        errors[group_size] = (out.double() - F.linear(x.double(), weight.double(), bias.double())).abs().max().item()
    expect(errors[4] < errors[None], f"With an outlier in the weight, groups of 4 should give a smaller error than "
                                     f"one scale per row, but the errors are {errors[4]:.3g} (groups) and "
                                     f"{errors[None]:.3g} (rows).", hint=QL_HINT)


# -- quantize_model ------------------------------------------------------------------------------------

QM_PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def qm_expect_quantised(student, model, config, weights, ids, quantised: list[str], bits: int, group_size,
                        what: str) -> None:
    """Each quantised layer holds the codes of its own weight (bits, group_size passed on), and the model computes
    what a float model with those dequantised weights computes."""
    sd = state_dict_of(model, what)
    dequantised = dict(weights)
    for name in quantised:
        layer_sd = {k[len(name) + 1:]: v for k, v in sd.items() if k.startswith(name + ".")}
        n_scales = weights[f"{name}.weight"].numel() // group_size if group_size else \
            weights[f"{name}.weight"].shape[0]
        scale = layer_sd.get("scale")
        if not isinstance(scale, torch.Tensor) or tuple(scale.shape) != (n_scales, 1):
            fail(f"{what}: {name}.scale should have shape ({n_scales}, 1) for bits={bits}, group_size={group_size}, "
                 f"not {compress_shown(scale)}.", hint="Pass bits and group_size on to QuantizedLinear.from_linear.")
        codes = layer_sd.get("weight_q")
        qmax = 2 ** (bits - 1) - 1
        if isinstance(codes, torch.Tensor) and codes.numel() and int(codes.abs().max()) > qmax:
            fail(f"{what}: with bits={bits}, {name}.weight_q should hold codes in [-{qmax}, {qmax}].",
                 hint="Pass bits and group_size on to QuantizedLinear.from_linear.")
        ql_expect_state(layer_sd, weights[f"{name}.weight"], None, bits, group_size, f"{what}: {name}")
        dequantised[f"{name}.weight"] = ql_weight_of(layer_sd, *weights[f"{name}.weight"].shape).float()
    with torch.no_grad():
        expected = local_llama(config, dequantised)(input_ids=ids).logits
    expect_close(logits_of(model, ids, "the quantised model"), expected,
                 f"{what}: the logits (compared with the float model whose weights are your dequantised ones)",
                 rtol=1e-4, atol=1e-4, hint=QM_HINT)


@graded("quantize_model", points=2, hint=QM_HINT)
def test_quantize_model_replaces_the_linear_layers(student):
    config, weights, model, ids = qm_student_model(student, 30)
    result = student.quantize_model(model)
    if not compress_same_object(result, model):
        hint = "End with `return model`." if result is None else \
            "Change the model you were given, in place (setattr on its parent modules), and return that same model."
        fail(f"quantize_model(model) should return the model it was given (changed in place), not "
             f"{compress_shown(result)}.", hint)
    layers = [f"model.layers.{i}.{p}" for i in range(config["num_hidden_layers"]) for p in QM_PROJECTIONS]
    qm_expect_types(student, model, layers, ["lm_head"], "After quantize_model(model)")
    qm_expect_quantised(student, model, config, weights, ids, layers, 8, None, "quantize_model(model)")


@graded("quantize_model", points=2, hint=QM_HINT)
def test_quantize_model_skip_bits_and_groups(student):
    config, weights, model, ids = qm_student_model(student, 31)
    result = student.quantize_model(model, bits=4, group_size=8, skip=("mlp",))
    expect(compress_same_object(result, model), "quantize_model should return the model it was given.", QM_HINT)
    n = config["num_hidden_layers"]
    attention = [f"model.layers.{i}.{p}" for i in range(n) for p in QM_PROJECTIONS if p.startswith("self_attn")]
    mlp = [f"model.layers.{i}.{p}" for i in range(n) for p in QM_PROJECTIONS if p.startswith("mlp")]
    what = "quantize_model(model, bits=4, group_size=8, skip=('mlp',))"
    qm_expect_types(student, model, attention + ["lm_head"], mlp, f"After {what}")
    qm_expect_quantised(student, model, config, weights, ids, attention + ["lm_head"], 4, 8, what)


# -- magnitude_prune -----------------------------------------------------------------------------------

def prune_student_mlp(student, layers: list[tuple[torch.Tensor, torch.Tensor]]):
    """nn.Sequential(Linear, ReLU, Linear, ...) in the student's kernel, with these (weight, bias) pairs."""
    modules = []
    for i, (weight, bias) in enumerate(layers):
        if i:
            modules.append(student.construct("torch.nn.ReLU"))
        modules.append(student_linear(student, weight, bias))
    return student.construct("torch.nn.Sequential", *modules)


def prune_names(layers) -> list[str]:
    return [f"{2 * i}.weight" for i in range(len(layers))]


def prune_expect(student, layers, sparsity: float, expected_zero: list[torch.Tensor] | None, what: str) -> None:
    """Prune a fresh model; check the result is the same model, the zeros and the untouched values."""
    model = prune_student_mlp(student, layers)
    result = student.magnitude_prune(model, sparsity)
    sd = state_dict_of(model, "the model")
    weights = [w for w, _ in layers]
    got = [sd[name] for name in prune_names(layers)]
    total = sum(w.numel() for w in weights)
    k = round(sparsity * total)
    zeros = sum(int((g == 0).sum()) for g in got)
    if zeros == 0 and k > 0 and not compress_same_object(result, model) and \
            getattr(result, "type_name", "").endswith("Sequential"):
        returned = state_dict_of(result, "the returned model")
        if any(bool((returned.get(n, torch.ones(1)) == 0).any()) for n in prune_names(layers)):
            fail(f"{what}: the returned model is pruned, but the model you were given is unchanged.",
                 hint="Prune in place (w.mul_(mask) under torch.no_grad(), or w[mask] = 0) and return the same model.")
    for (weight, bias), name in zip(layers, prune_names(layers)):
        b = sd.get(name.replace("weight", "bias"))
        expect(b is not None and torch.equal(b, bias), f"{what}: the biases should stay as they were.",
               hint="Prune only each module's `weight`, not its bias (model.parameters() includes the biases).")
    all_w = torch.cat([w.abs().flatten() for w in weights])
    all_g = torch.cat([g.flatten() for g in got])
    pruned = all_g == 0
    kept_same = bool((all_g[~pruned] == torch.cat([w.flatten() for w in weights])[~pruned]).all())
    expect(kept_same, f"{what}: the weights that are not pruned should keep their values.", PRUNE_HINT)
    if zeros != k:
        hint = PRUNE_HINT
        if zeros == int(sparsity * total):
            hint = f"k = round(sparsity * total): {sparsity} * {total} = {sparsity * total:g} rounds to {k}, not {zeros}."
        elif all(int((g == 0).sum()) == round(sparsity * w.numel()) for g, w in zip(got, weights)):
            hint = "That prunes each layer on its own: pruning is global, one ranking of |w| over all layers together."
        fail(f"{what}: {zeros} of the {total} weights are zero, but round({sparsity} * {total}) = {k} should be.", hint)
    if 0 < k < total:
        largest_pruned, smallest_kept = all_w[pruned].max().item(), all_w[~pruned].min().item()
        if largest_pruned > smallest_kept:
            hint = PRUNE_HINT
            if all_w[pruned].min().item() >= all_w[~pruned].max().item():
                hint = "Those are the LARGEST weights: prune the smallest |w| (topk with largest=False)."
            elif all(int((g == 0).sum()) == round(sparsity * w.numel()) for g, w in zip(got, weights)):
                hint = "That prunes each layer on its own: pruning is global, one ranking of |w| over all layers."
            fail(f"{what}: a weight with |w| = {largest_pruned:.4g} was set to zero while one with |w| = "
                 f"{smallest_kept:.4g} was kept; the smallest |w| of all layers together should go first.", hint)
    if expected_zero is not None:
        for g, e, name in zip(got, expected_zero, prune_names(layers)):
            expect(torch.equal(g == 0, e), f"{what}: the zeros of {name} should be at {e.nonzero().tolist()}, "
                                           f"but they are at {(g == 0).nonzero().tolist()}.", PRUNE_HINT)
    expect(compress_same_object(result, model), f"{what}: magnitude_prune should return the model it was given.",
           hint="End with `return model` (the same model, pruned in place).")


@graded("magnitude_prune", points=3, hint=PRUNE_HINT)
def test_magnitude_prune_by_hand(student):
    layers = [(torch.tensor([[0.05, -0.9, 0.4], [-0.02, 0.6, 0.01]]), torch.tensor([0.001, -0.002])),
              (torch.tensor([[0.7, -0.3], [0.5, 0.08], [-0.2, 0.95]]), torch.tensor([0.003, 0.0005, -0.004]))]
    # |w| sorted over both layers: 0.01, 0.02, 0.05 (first layer), 0.08, 0.2, ... (second layer)
    first = torch.tensor([[True, False, False], [True, False, True]])
    none_second = torch.zeros(3, 2, dtype=torch.bool)
    prune_expect(student, layers, 0.25, [first, none_second],
                 "magnitude_prune(Linear(3, 2) -> ReLU -> Linear(2, 3), 0.25) (k = 3 of 12 weights: 0.01, 0.02, "
                 "0.05, all in the first layer)")
    prune_expect(student, layers, 0.3, [first, torch.tensor([[False, False], [False, True], [False, False]])],
                 "magnitude_prune(the same model, 0.3) (0.3 * 12 = 3.6 rounds to k = 4: 0.01, 0.02, 0.05 and 0.08)")


@graded("magnitude_prune", points=2, hint=PRUNE_HINT)
def test_magnitude_prune_random_model(student):
    gen = generator(40)
    layers = [(randn(gen, 10, 20, scale=0.2), randn(gen, 10, scale=0.01)),
              (randn(gen, 5, 10, scale=0.4), randn(gen, 5, scale=0.01)),
              (randn(gen, 3, 5, scale=0.6), randn(gen, 3, scale=0.01))]
    for sparsity in (0.5, 0.9, 0.0, 1.0):
        prune_expect(student, layers, sparsity, None,
                     f"magnitude_prune(Linear(20, 10) -> Linear(10, 5) -> Linear(5, 3), {sparsity}) (265 weights)")
