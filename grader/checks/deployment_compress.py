"""The checks of 07_deployment (memory, quantisation, pruning), visible and hidden.

A check marked `@visible` ships to students: `grader build` copies it, with the helpers and imports it
uses, into `llmcourse/checks/deployment_compress.py` (docstring: STUDENT_DOC below), where a student runs it before
grading. Visible checks use small worked examples and properties every right answer has, never the
reference. The other checks stay here and run only when a notebook is graded: they test the student's
code against `grader.reference.deployment` and torch.nn.utils.prune.

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
from llmcourse.checking import (StudentRaised, expect, expect_close, fail, generator, graded, mistake_hint, randn,
                                state_dict_of, visible)
from llmcourse.checking.shared.deployment_compress import (MEMORY_HINT, PRUNE_HINT, QL_HINT, QM_HINT, QUANT_ABSMAX_HINT,
                                                           QUANT_DEQUANTIZE_HINT, QUANT_ZEROPOINT_HINT,
                                                           compress_same_object, compress_shown, memory_expect_bytes,
                                                           ql_expect_state, ql_expected_scale, ql_from_linear,
                                                           ql_weight_of, qm_expect_types, qm_student_model,
                                                           quant_expect_absmax, quant_expect_zeropoint)
from llmcourse.checking.shared.lora import local_llama, logits_of, student_linear

STUDENT_DOC = """Visible checks for 07_deployment (memory, quantisation, pruning): what `check("07_deployment/<exercise>")` runs.

Small cases worked out by hand, and properties every correct answer has (integer codes in range, every value
within half a step of its code, the largest |w| of a slice on the largest code). Layers and models are built in
your kernel (an nn.Linear, a tiny Llama from transformers) with known weights. More checks run when your notebook
is graded.

What they share with the graders' checks lives in llmcourse.checking.shared.deployment_compress, so that both
talk about your code in the same words.
"""

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

@visible
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


@visible
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

@visible
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


@visible
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


@visible
@graded("quantize_absmax", points=2, hint=QUANT_ABSMAX_HINT)
def test_quantize_absmax_properties(student):
    gen = generator(7)
    for shape, dim, bits in [((5, 7), None, 8), ((5, 7), 0, 8), ((5, 7), 1, 4), ((2, 3, 4), 1, 8),
                             ((2, 3, 4), -1, 3), ((6,), 0, 8), ((6,), None, 2), ((4, 9), -2, 6)]:
        w = randn(gen, *shape)
        w.view(-1)[3] = 5.0  # an outlier
        quant_expect_absmax(student.quantize_absmax(w, bits=bits, dim=dim), w, bits, dim,
                            f"quantize_absmax(w of shape {shape}, bits={bits}, dim={dim})")


@visible
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


@visible
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


@visible
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


@visible
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


@graded("dequantize", points=1, hint=QUANT_DEQUANTIZE_HINT)
def test_dequantize_matches_reference(student):
    for w, bits, dim in quant_random_cases(54):
        q, scale = ref.quantize_absmax(w, bits, dim)
        got = student.dequantize(q, scale)
        what = f"dequantize(int8 codes of shape {tuple(q.shape)}, {scale.dtype} scale of shape {tuple(scale.shape)})"
        if isinstance(got, torch.Tensor) and got.dtype == torch.float32 != scale.dtype:
            fail(f"{what} has dtype torch.float32, but it should keep scale's dtype {scale.dtype}.",
                 _ALWAYS_FLOAT32.format(dtype=str(scale.dtype).removeprefix("torch.")))
        expect_close(got, ref.dequantize(q, scale), what, check_dtype=True, hint=QUANT_DEQUANTIZE_HINT)
        q, scale, zp = ref.quantize_zeropoint(w, bits, dim)
        for zp_dtype in (torch.int32, torch.int64, torch.uint8):
            expect_close(student.dequantize(q, scale, zp.to(zp_dtype)), ref.dequantize(q, scale, zp),
                         f"dequantize(uint8 codes of shape {tuple(q.shape)}, {scale.dtype} scale, {zp_dtype} zero "
                         f"points of shape {tuple(zp.shape)})", check_dtype=True, hint=QUANT_DEQUANTIZE_HINT)


_ALWAYS_FLOAT32 = ("The result is always float32: cast the codes to scale's dtype (here {dtype}) with "
                   "q.to(scale.dtype), not to a fixed float32 with .float().")


# -- QuantizedLinear -----------------------------------------------------------------------------------

def ql_expect_buffers(layer, weight: torch.Tensor, bias, bits: int, group_size, what: str) -> dict:
    """weight_q int8 (out, in) with the right codes, scale (n_scales, 1), bias kept, no float copy of the weight."""
    sd = state_dict_of(layer, what)
    ql_expect_state(sd, weight, bias, bits, group_size, what)
    return sd


@visible
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


@visible
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


@visible
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


@visible
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


@visible
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


@visible
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


@visible
@graded("magnitude_prune", points=2, hint=PRUNE_HINT)
def test_magnitude_prune_random_model(student):
    gen = generator(40)
    layers = [(randn(gen, 10, 20, scale=0.2), randn(gen, 10, scale=0.01)),
              (randn(gen, 5, 10, scale=0.4), randn(gen, 5, scale=0.01)),
              (randn(gen, 3, 5, scale=0.6), randn(gen, 3, scale=0.01))]
    for sparsity in (0.5, 0.9, 0.0, 1.0):
        prune_expect(student, layers, sparsity, None,
                     f"magnitude_prune(Linear(20, 10) -> Linear(10, 5) -> Linear(5, 3), {sparsity}) (265 weights)")


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
        pruned = [name for name, value in expected.items() if bool((value == 0).any()) and name in got
                  and got[name].shape == value.shape]
        k, zeros = sum(int((expected[n] == 0).sum()) for n in pruned), sum(int((got[n] == 0).sum()) for n in pruned)
        if abs(zeros - k) > len(pruned):  # more than rounding per tensor: not the k smallest
            fail(f"{what}: {zeros} of the weights are zero, but exactly k = round(sparsity * total) = {k} should be.",
                 hint="The number of zeros is not k: a threshold guessed from the weights (such as a multiple of "
                      "their mean |w|) does not prune exactly k of them. Find the k smallest |w| over all the weights "
                      "together (torch.topk(..., largest=False)) and zero exactly those.")
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
