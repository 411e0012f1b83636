"""Hidden checks for 07_deployment (memory, quantisation, pruning): the student's code against
`grader.reference.deployment` and torch.nn.utils.prune.

Seeded random tensors of several shapes, dims, bit widths and dtypes (float64 included), slices of zeros and
outliers; QuantizedLinear layers and quantised tiny Llamas compared with the reference built here from the same
weights; global pruning compared with torch's own global_unstructured. Codes may differ from the reference by one
on a rare float tie, never more, never often. Only inputs cross to the student's kernel; every expected value is
computed here.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as torch_prune

from grader.reference import deployment as ref
from llmcourse.checking import StudentRaised, expect, expect_close, fail, generator, graded, randn, state_dict_of
from llmcourse.checking.shared.deployment_compress import (MEMORY_HINT, PRUNE_HINT, QL_HINT, QM_HINT, QUANT_ABSMAX_HINT,
                                                           QUANT_DEQUANTIZE_HINT, QUANT_ZEROPOINT_HINT,
                                                           compress_same_object, compress_shown, memory_expect_bytes,
                                                           ql_expect_state, ql_from_linear, ql_weight_of,
                                                           qm_expect_types, qm_student_model, quant_expect_absmax,
                                                           quant_expect_zeropoint)
from llmcourse.checking.shared.lora import local_llama, logits_of

ASSIGNMENT = "07_deployment"


def compress_expect_raises(call, what: str, hint: str) -> None:
    """`call()` must raise ValueError in the student's code."""
    try:
        value = call()
    except StudentRaised as raised:
        expect(raised.type_name == "ValueError", f"{what} raised {raised.type_name}, but it should raise ValueError.",
               hint)
        return
    fail(f"{what} should raise ValueError, but it returned {compress_shown(value)}.", hint)


def compress_expect_codes_near(q: torch.Tensor, expected: torch.Tensor, what: str, hint: str) -> None:
    """Integer codes equal to the reference's, except one step off on a rare float tie."""
    diff = (q.to(torch.int64) - expected.to(torch.int64)).abs()
    off = int((diff > 0).sum())
    expect(int(diff.max()) <= 1 and off <= max(1, diff.numel() // 100),
           f"{what}: {off} of {diff.numel()} codes differ from the expected ones (by up to {int(diff.max())}).", hint)


def compress_expect_unchanged(student, name: str, args: list, what: str) -> None:
    """Calling student.<name>(*args) leaves its tensor arguments as they were."""
    placed = [student.put(a) if isinstance(a, torch.Tensor) else a for a in args]
    getattr(student, name)(*placed)
    for before, after in zip(args, placed):
        if isinstance(before, torch.Tensor):
            expect(torch.equal(after.fetch(), before), f"{what} changed its input tensor in place.",
                   hint="Compute new tensors (w / scale, w.abs(), ...) instead of changing w in place (div_, abs_).")


# -- model_memory --------------------------------------------------------------------------------------

@graded("model_memory", points=1, hint=MEMORY_HINT)
def test_model_memory_matches_reference(student):
    for n_params in (1, 2, 7, 999, 123_456_789, 7_000_000_001, 70 * 10 ** 9):
        for dtype in ("fp32", "fp16", "bf16", "int8", "int4"):
            settings = [(False, False)] + ([(True, False)] if dtype not in ("int8", "int4") else []) + \
                       ([(True, True)] if dtype in ("fp16", "bf16") else [])
            for training, mixed in settings:
                memory_expect_bytes(student.model_memory(n_params, dtype, training=training, mixed_precision=mixed),
                                    ref.model_memory(n_params, dtype, training, mixed),
                                    f"model_memory({n_params}, {dtype!r}, training={training}, "
                                    f"mixed_precision={mixed})")


@graded("model_memory", points=1, requires_main=True,
        hint="Raise ValueError for a dtype that is not one of fp32, fp16, bf16, int8, int4; for training int8 or "
             "int4 weights; and for mixed precision with fp32 weights.")
def test_model_memory_rejects_bad_arguments(student):
    for args, kwargs, why in [((10, "fp64"), {}, "an unknown dtype"), ((10, "float16"), {}, "an unknown dtype"),
                              ((10, "int8"), {"training": True}, "training int8 weights"),
                              ((10, "int4"), {"training": True, "mixed_precision": True}, "training int4 weights"),
                              ((10, "fp32"), {"training": True, "mixed_precision": True},
                               "mixed precision with fp32 weights")]:
        shown = ", ".join([repr(a) for a in args] + [f"{k}={v}" for k, v in kwargs.items()])
        compress_expect_raises(lambda: student.model_memory(*args, **kwargs), f"model_memory({shown}) ({why})",
                               "Keep the ValueError checks at the top of model_memory (given in the notebook).")


# -- quantize_absmax / quantize_zeropoint -------------------------------------------------------------

def quant_random_cases(seed: int):
    """(w, bits, dim) cases: shapes, dims, bits, float32 and float64, outliers, slices of zeros."""
    gen = generator(seed)
    cases = []
    for shape, dim, bits, dtype in [((3,), None, 8, torch.float32), ((8, 16), 0, 8, torch.float32),
                                    ((8, 16), 1, 4, torch.float64), ((4, 5, 6), 2, 8, torch.float32),
                                    ((4, 5, 6), -3, 5, torch.float64), ((4, 5, 6), None, 3, torch.float32),
                                    ((1, 7), 0, 2, torch.float32), ((16, 32), -1, 8, torch.float64),
                                    ((10,), 0, 7, torch.float32)]:
        w = randn(gen, *shape, dtype=dtype, scale=0.5)
        w.view(-1)[0] = -4.0  # an outlier
        if len(shape) > 1 and dim is not None and w.shape[dim] > 1:
            w.select(dim, 1).zero_()  # a slice of zeros
        cases.append((w, bits, dim))
    shifted = randn(gen, 6, 9, scale=0.3) + 1.0  # all positive
    cases.append((shifted, 8, 0))
    cases.append((-shifted.t().contiguous(), 8, 1))  # all negative
    return cases


@graded("quantize_absmax", points=1, hint=QUANT_ABSMAX_HINT)
def test_quantize_absmax_matches_reference(student):
    for w, bits, dim in quant_random_cases(50):
        what = f"quantize_absmax(w of shape {tuple(w.shape)}, {w.dtype}, bits={bits}, dim={dim})"
        q, scale = quant_expect_absmax(student.quantize_absmax(w, bits=bits, dim=dim), w, bits, dim, what)
        q_ref, scale_ref = ref.quantize_absmax(w, bits, dim)
        expect_close(scale.reshape(-1), scale_ref.reshape(-1), f"{what}: the scale", hint=QUANT_ABSMAX_HINT)
        compress_expect_codes_near(q, q_ref, what, QUANT_ABSMAX_HINT)


@graded("quantize_absmax", points=1, requires_main=True,
        hint="Leave w unchanged (no in-place division) and return the scale in w's dtype (float64 in, float64 out).")
def test_quantize_absmax_keeps_input_and_dtype(student):
    gen = generator(51)
    for dtype, dim in ((torch.float64, 0), (torch.float32, None)):
        w = randn(gen, 5, 6, dtype=dtype)
        _, scale = student.quantize_absmax(w, bits=8, dim=dim)
        expect(scale.dtype == dtype, f"quantize_absmax on a {dtype} tensor gave a {scale.dtype} scale; it should "
                                     f"keep w's dtype.")
        compress_expect_unchanged(student, "quantize_absmax", [w, 8, dim], f"quantize_absmax(w, 8, {dim})")


@graded("quantize_zeropoint", points=1, hint=QUANT_ZEROPOINT_HINT)
def test_quantize_zeropoint_matches_reference(student):
    for w, bits, dim in quant_random_cases(52):
        what = f"quantize_zeropoint(w of shape {tuple(w.shape)}, {w.dtype}, bits={bits}, dim={dim})"
        q, scale, zp = quant_expect_zeropoint(student.quantize_zeropoint(w, bits=bits, dim=dim), w, bits, dim, what)
        q_ref, scale_ref, zp_ref = ref.quantize_zeropoint(w, bits, dim)
        expect_close(scale.reshape(-1), scale_ref.reshape(-1), f"{what}: the scale", hint=QUANT_ZEROPOINT_HINT)
        compress_expect_codes_near(zp.reshape(-1), zp_ref.reshape(-1), f"{what}: the zero points", QUANT_ZEROPOINT_HINT)
        compress_expect_codes_near(q, q_ref, what, QUANT_ZEROPOINT_HINT)


@graded("quantize_zeropoint", points=1, requires_main=True,
        hint="Leave w unchanged (no in-place operations on it) and return the scale in w's dtype (float64 in, "
             "float64 out).")
def test_quantize_zeropoint_keeps_input_and_dtype(student):
    gen = generator(53)
    for dtype, dim in ((torch.float64, 1), (torch.float32, None)):
        w = randn(gen, 5, 6, dtype=dtype)
        _, scale, _ = student.quantize_zeropoint(w, bits=8, dim=dim)
        expect(scale.dtype == dtype, f"quantize_zeropoint on a {dtype} tensor gave a {scale.dtype} scale; it "
                                     f"should keep w's dtype.")
        compress_expect_unchanged(student, "quantize_zeropoint", [w, 8, dim], f"quantize_zeropoint(w, 8, {dim})")


# -- dequantize ----------------------------------------------------------------------------------------

@graded("dequantize", points=1, hint=QUANT_DEQUANTIZE_HINT)
def test_dequantize_matches_reference(student):
    for w, bits, dim in quant_random_cases(54):
        q, scale = ref.quantize_absmax(w, bits, dim)
        expect_close(student.dequantize(q, scale), ref.dequantize(q, scale),
                     f"dequantize(int8 codes of shape {tuple(q.shape)}, {scale.dtype} scale of shape "
                     f"{tuple(scale.shape)})", check_dtype=True, hint=QUANT_DEQUANTIZE_HINT)
        q, scale, zp = ref.quantize_zeropoint(w, bits, dim)
        for zp_dtype in (torch.int32, torch.int64, torch.uint8):
            expect_close(student.dequantize(q, scale, zp.to(zp_dtype)), ref.dequantize(q, scale, zp),
                         f"dequantize(uint8 codes of shape {tuple(q.shape)}, {scale.dtype} scale, {zp_dtype} zero "
                         f"points of shape {tuple(zp.shape)})", check_dtype=True, hint=QUANT_DEQUANTIZE_HINT)


# -- QuantizedLinear -----------------------------------------------------------------------------------

def ql_reference(weight: torch.Tensor, bias, bits: int, group_size):
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return ref.QuantizedLinear.from_linear(linear, bits, group_size)


@graded("quantized_linear", points=1, hint=QL_HINT)
def test_quantized_linear_matches_reference(student):
    gen = generator(60)
    for out_features, in_features, bits, group_size, bias_on in [(5, 12, 8, None, True), (7, 16, 4, 8, False),
                                                                  (3, 6, 2, 3, True), (8, 24, 8, 12, True),
                                                                  (1, 9, 5, None, False)]:
        weight = randn(gen, out_features, in_features, scale=0.3)
        weight[0, 0] = 3.0
        bias = randn(gen, out_features, scale=0.1) if bias_on else None
        what = (f"QuantizedLinear.from_linear(Linear({in_features}, {out_features}, bias={bias_on}), bits={bits}, "
                f"group_size={group_size})")
        layer = ql_from_linear(student, weight, bias, bits, group_size, what)
        sd = state_dict_of(layer, what)
        ql_expect_state(sd, weight, bias, bits, group_size, what)
        reference = ql_reference(weight, bias, bits, group_size)
        compress_expect_codes_near(sd["weight_q"], reference.weight_q, f"{what}.weight_q", QL_HINT)
        x = randn(gen, 2, 3, in_features)
        same_codes = torch.equal(sd["weight_q"], reference.weight_q)
        expected = reference(x) if same_codes else \
            F.linear(x, ql_weight_of(sd, out_features, in_features).float(), bias)
        expect_close(layer(x), expected, f"{what}(x) (compared with F.linear and the dequantised weight)",
                     rtol=1e-5, atol=1e-6, hint=QL_HINT)


@graded("quantized_linear", points=1, requires_main=True,
        hint="In forward, cast the dequantised weight (and the bias) to x's dtype: F.linear(x, weight.to(x.dtype), "
             "...), so that a float64 input gives a float64 output.")
def test_quantized_linear_follows_the_input_dtype(student):
    gen = generator(61)
    weight, bias = randn(gen, 4, 8, scale=0.3), randn(gen, 4, scale=0.1)
    layer = ql_from_linear(student, weight, bias, 8, 4, "QuantizedLinear.from_linear(Linear(8, 4), group_size=4)")
    x = randn(gen, 3, 8, dtype=torch.float64)
    expect_close(layer(x), ql_reference(weight, bias, 8, 4)(x), "QuantizedLinear(x) for a float64 x",
                 rtol=1e-6, atol=1e-9, check_dtype=True)


# -- quantize_model ------------------------------------------------------------------------------------

@graded("quantize_model", points=1, hint=QM_HINT)
def test_quantize_model_matches_reference(student):
    for seed, kwargs in [(70, dict(bits=4, group_size=4, skip=("self_attn", "lm_head"))),
                         (71, dict(bits=6, group_size=None, skip=("lm_head", "up_proj")))]:
        config, weights, model, ids = qm_student_model(student, seed)
        what = "quantize_model(model, " + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"
        result = student.quantize_model(model, **kwargs)
        expect(compress_same_object(result, model), f"{what} should return the model it was given.", QM_HINT)
        expected_model = ref.quantize_model(local_llama(config, weights), **kwargs)
        types = {n: type(m).__name__ for n, m in expected_model.named_modules()}
        quantised = [n for n, t in types.items() if t == "QuantizedLinear"]
        qm_expect_types(student, model, quantised, [n for n, t in types.items() if t == "Linear"], f"After {what}")
        with torch.no_grad():
            expected = expected_model(input_ids=ids).logits
        expect_close(logits_of(model, ids, "the quantised model"), expected,
                     f"{what}: the logits", rtol=1e-4, atol=1e-4, hint=QM_HINT)


# -- magnitude_prune -----------------------------------------------------------------------------------

def prune_reference(model: nn.Module, sparsity: float, module_types) -> nn.Module:
    """torch.nn.utils.prune's global L1 pruning of the `weight` of every module of these types, made permanent."""
    targets = [(m, "weight") for m in model.modules() if isinstance(m, module_types)]
    torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=float(sparsity))
    for module, name in targets:
        torch_prune.remove(module, name)
    return model


@graded("magnitude_prune", points=2, hint=PRUNE_HINT)
def test_magnitude_prune_matches_torch_prune(student):
    for seed, sparsity, with_embedding in [(80, 0.37, False), (81, 0.6, True), (82, 0.05, False)]:
        config, weights, model, _ = qm_student_model(student, seed)
        local = local_llama(config, weights)
        if with_embedding:
            kinds = (student.construct("torch.nn.utils.parametrize.type_before_parametrizations",
                                       student.construct("torch.nn.Linear", 1, 1)),
                     student.construct("torch.nn.utils.parametrize.type_before_parametrizations",
                                       student.construct("torch.nn.Embedding", 1, 1)))
            result = student.magnitude_prune(model, sparsity, module_types=kinds)
            expected = prune_reference(local, sparsity, (nn.Linear, nn.Embedding)).state_dict()
            what = f"magnitude_prune(a tiny Llama, {sparsity}, module_types=(nn.Linear, nn.Embedding))"
        else:
            result = student.magnitude_prune(model, sparsity)
            expected = prune_reference(local, sparsity, (nn.Linear,)).state_dict()
            what = f"magnitude_prune(a tiny Llama, {sparsity})"
        expect(compress_same_object(result, model), f"{what} should return the model it was given.", PRUNE_HINT)
        got = state_dict_of(model, "the pruned model")
        for name, value in expected.items():
            mine = got.get(name)
            if mine is None or mine.shape != value.shape or not torch.equal(mine, value):
                zeros = None if mine is None else int((mine == 0).sum())
                fail(f"{what}: {name} differs from torch.nn.utils.prune.global_unstructured's result "
                     f"({zeros} zeros instead of {int((value == 0).sum())}).",
                     hint=PRUNE_HINT if "weight" in name and zeros != 0 else
                     "Prune only the `weight` of the modules of module_types; leave everything else (norms, "
                     "embeddings unless asked) as it was.")


@graded("magnitude_prune", points=1, requires_main=True,
        hint="Keep the ValueError check at the top of magnitude_prune: sparsity is a fraction in [0, 1].")
def test_magnitude_prune_rejects_bad_sparsity(student):
    layer = student.construct("torch.nn.Linear", 4, 3)
    for sparsity in (-0.1, 1.5, 50):
        compress_expect_raises(lambda: student.magnitude_prune(layer, sparsity),
                               f"magnitude_prune(model, {sparsity})", PRUNE_HINT)
