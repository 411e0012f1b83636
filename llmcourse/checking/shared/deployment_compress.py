"""What 07_deployment's compression checks (memory, quantisation, the quantised layer, pruning), visible and
hidden, both use: each exercise's hint, and how each answer is read, down to the codes, scales and buffers.

The checks (grader.checks.deployment_compress) import these helpers from here, and so does the students' copy of the visible
checks (llmcourse.checks.deployment_compress), with which this module ships.
"""
from __future__ import annotations

import torch

from llmcourse.checking import expect, expect_close, expect_tensor, fail, generator, mistake_hint
from llmcourse.checking.shared.lora import llama_weights, student_linear, student_llama, tiny_llama_config, types_of


# -- the hints an exercise's visible and hidden checks share ---------------------------------------

MEMORY_HINT = ("Inference: n_params times the bytes of one parameter (fp32 4, fp16 and bf16 2, int8 1, int4 half a "
               "byte, rounded up). Training adds the gradients (in the weights' dtype), Adam's two states (fp32: "
               "8 bytes a parameter) and, with mixed precision, an fp32 master copy of the weights (4 bytes).")


QUANT_ABSMAX_HINT = ("qmax = 2**(bits - 1) - 1; scale = max|w| / qmax (over the whole tensor, or over each slice "
                     "along `dim`, keeping every dimension, size 1 except `dim`); a slice of zeros gets scale 1; "
                     "q = round(w / scale) clamped to [-qmax, qmax], as torch.int8.")
QUANT_ZEROPOINT_HINT = ("qmax = 2**bits - 1; low = min(w, 0), high = max(w, 0) (per tensor or per slice); scale = "
                        "(high - low) / qmax (1 for a slice of zeros); zero_point = round(-low / scale) as an integer "
                        "tensor; q = clamp(round(w / scale) + zero_point, 0, qmax), as torch.uint8.")
QUANT_DEQUANTIZE_HINT = ("Cast q (and the zero point) to scale's dtype first, then compute (q - zero_point) * "
                         "scale; without a zero point, q * scale.")


QL_HINT = ("from_linear: quantise the weight with absmax, one scale per output row (quantize_absmax(w, bits, "
           "dim=0)), or per group of group_size consecutive inputs (reshape the weight to (-1, group_size) first); "
           "store the int8 codes in weight_q (out, in), the scales in scale (n_scales, 1), and a copy of the bias. "
           "forward: dequantise the weight, then F.linear(x, weight, bias).")


QM_HINT = ("Walk model.named_modules(); for each nn.Linear whose name has no part (name.split('.')) in `skip`, "
           "replace it on its parent module by QuantizedLinear.from_linear(module, bits, group_size); return the "
           "same model.")


PRUNE_HINT = ("Global magnitude pruning: put |w| of the `weight` of every module of module_types in one list, find "
              "the k = round(sparsity * total) smallest (torch.topk(..., largest=False)), and set exactly those "
              "weights to zero in place (biases untouched); return the model.")


# -- answers and the student's objects -------------------------------------------------------------

def compress_shown(value) -> str:
    if value is None:
        return "None (did the function forget to `return`?)"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)} values"
    if isinstance(value, (bool, int, float, str)):
        return repr(value)
    return f"a {getattr(value, 'type_name', type(value).__name__)}"


def compress_same_object(a, b) -> bool:
    """Whether two references from the student's kernel stand for the same object."""
    return getattr(a, "_ref", None) is not None and getattr(a, "_ref", None) == getattr(b, "_ref", None)


# -- model_memory ----------------------------------------------------------------------------------

def memory_expect_bytes(got, expected: int, call: str, mistakes=(), why: str = "") -> None:
    """`got` must be the int `expected`; `mistakes` are (value a known mistake gives, hint); `why` explains it."""
    why = f" ({why})" if why else ""
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        fail(f"{call} should return a number of bytes (an int), not {compress_shown(got)}.", MEMORY_HINT)
    if got != expected and any(abs(got - expected / unit) <= 1e-9 * expected / unit for unit in (1e9, 2 ** 30)):
        fail(f"{call} returned {got!r}: that is gigabytes, but it should be bytes ({expected:,}).",
             hint="Return the number of bytes, as an int; the notebook converts to GB when it prints.")
    if got != expected:
        fail(f"{call} should be {expected:,} bytes{why}, but it is {got:,}.",
             mistake_hint(got, expected, mistakes, rtol=0, atol=0) or MEMORY_HINT)
    expect(isinstance(got, int), f"{call} returned the float {got!r}: bytes are whole, return an int.",
           hint="Keep the arithmetic in integers (math.ceil returns an int; 8.0 * n is a float).")


# -- quantisation ----------------------------------------------------------------------------------

def quant_reduced_dims(ndim: int, dim) -> tuple[int, ...]:
    """Every dimension except `dim` (all of them when dim is None)."""
    if dim is None:
        return tuple(range(ndim))
    return tuple(d for d in range(ndim) if d != dim % ndim)


def quant_slice_stat(w: torch.Tensor, dim, op: str) -> torch.Tensor:
    """amax / amin of each slice along `dim` (of the tensor when dim is None), keeping every dimension."""
    dims = quant_reduced_dims(w.dim(), dim)
    return getattr(w, op)(dim=dims, keepdim=True) if dims else w.clone()


def quant_scale_shape(shape: tuple[int, ...], dim) -> tuple[int, ...] | None:
    """The shape of the scale for `dim` (None: one element, any shape)."""
    if dim is None:
        return None
    d = dim % len(shape)
    return tuple(s if i == d else 1 for i, s in enumerate(shape))


def quant_unpack(result, n: int, what: str, hint: str) -> tuple:
    if not isinstance(result, (tuple, list)) or len(result) != n:
        names = "(q, scale)" if n == 2 else "(q, scale, zero_point)"
        fail(f"{what} should return a tuple {names}, but it returned {compress_shown(result)}.", hint)
    return tuple(result)


def quant_expect_scale(scale, w: torch.Tensor, dim, what: str, hint: str) -> torch.Tensor:
    """A float tensor of the right shape (one element when dim is None); returned shaped for broadcasting."""
    scale = expect_tensor(scale, f"{what}: the scale", hint=hint)
    if not scale.is_floating_point():
        fail(f"{what}: the scale has dtype {scale.dtype}; it should be a float tensor like w.", hint)
    shape = quant_scale_shape(tuple(w.shape), dim)
    if shape is None:
        expect(scale.numel() == 1, f"{what} (dim=None) should give one scale for the whole tensor, but the scale "
                                   f"has shape {tuple(scale.shape)}.",
               hint="dim=None means one scale: the largest |w| of the whole tensor divided by qmax.")
        return scale.reshape([1] * w.dim())
    if tuple(scale.shape) != shape:
        d = dim % w.dim()
        swapped = tuple(1 if i == d else s for i, s in enumerate(w.shape))
        hint_here = hint
        if tuple(scale.shape) == swapped:
            hint_here = (f"dim={dim} means one scale per index along dim {dim}: reduce over every OTHER dimension "
                         f"(keepdim=True), not over dim {dim} itself.")
        elif scale.numel() == 1:
            hint_here = f"dim={dim} asks for one scale per index along dim {dim}, not one for the whole tensor."
        elif scale.numel() == w.shape[d]:
            hint_here = (f"Keep the reduced dimensions with size 1 (keepdim=True), so that the scale of shape "
                         f"{shape} broadcasts against w of shape {tuple(w.shape)}.")
        fail(f"{what}: the scale has shape {tuple(scale.shape)}, but it should have shape {shape} "
             f"(one scale per index along dim {dim}, the other dimensions kept with size 1).", hint_here)
    return scale


def quant_expect_codes(q, w: torch.Tensor, dtype: torch.dtype, what: str, hint: str) -> torch.Tensor:
    q = expect_tensor(q, f"{what}: q", shape=tuple(w.shape), hint=hint)
    if q.dtype != dtype:
        kind = "floats" if q.is_floating_point() else str(q.dtype)
        fail(f"{what}: q has dtype {q.dtype}, but the codes should be stored as {dtype} (integers, 1 byte each).",
             hint=f"q holds {kind}: round, clamp, then convert with .to({dtype}), so that each code takes one byte.")
    return q


def quant_expect_absmax(result, w: torch.Tensor, bits: int, dim, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every property of a right absmax answer (codes compared with the rule up to float rounding)."""
    hint = QUANT_ABSMAX_HINT
    q, scale = quant_unpack(result, 2, what, hint)
    q = quant_expect_codes(q, w, torch.int8, what, hint)
    scale = quant_expect_scale(scale, w, dim, what, hint)
    qmax = 2 ** (bits - 1) - 1
    w64, s64 = w.double(), scale.double()
    amax = quant_slice_stat(w64.abs(), dim, "amax")
    expected = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    if not torch.allclose(s64, expected, rtol=1e-5, atol=0):
        if torch.allclose(s64, torch.where(amax == 0, torch.ones_like(amax), amax / (qmax + 1)), rtol=1e-5):
            fail(f"{what}: the scale is max|w| / {qmax + 1}, but it should be max|w| / {qmax}.",
                 hint=f"qmax = 2**(bits - 1) - 1 = {qmax} for {bits} bits: the codes run from -{qmax} to {qmax}, "
                      f"so that the largest |w| lands exactly on a code (and 2**(bits - 1) would not fit in int8).")
        mean = quant_slice_stat(w64.abs(), dim, "mean") if dim is not None else w64.abs().mean()
        if torch.allclose(s64, mean / qmax, rtol=1e-4):
            fail(f"{what}: the scale is mean|w| / qmax, but it should be max|w| / qmax.",
                 hint="Use the largest |w| (w.abs().max() or amax): with the mean, the large weights fall outside "
                      "the codes and are clipped.")
        if bool((amax == 0).any()) and not torch.allclose(s64[amax == 0], torch.ones_like(s64[amax == 0])):
            fail(f"{what}: a slice of zeros should get scale 1 (a scale of 0 would divide by zero).",
                 hint="Replace the zero scales by 1, e.g. torch.where(scale == 0, torch.ones_like(scale), scale).")
        expect_close(s64, expected, f"{what}: the scale (max|w| / {qmax})", rtol=1e-5, atol=0, hint=hint)
    codes = q.to(torch.int64)
    expect(int(codes.abs().max()) <= qmax, f"{what} has codes outside [-{qmax}, {qmax}] (e.g. {int(codes.abs().max())}).",
           hint=f"Clamp round(w / scale) to [-{qmax}, {qmax}] with qmax = 2**(bits - 1) - 1.")
    exact = w64 / s64
    error = (codes - exact).abs()
    if bool((error > 0.5 + 1e-3).any()):
        if torch.equal(codes, torch.trunc(exact).clamp(-qmax, qmax).to(torch.int64)) or \
                torch.equal(codes, torch.trunc(exact.float()).clamp(-qmax, qmax).to(torch.int64)):
            fail(f"{what}: the codes are w / scale truncated toward zero, not rounded.",
                 hint="Round to the nearest integer with torch.round before converting: .to(torch.int8) alone "
                      "cuts off the fraction.")
        i = tuple(int(k) for k in (error > 0.5 + 1e-3).nonzero()[0])
        fail(f"{what}: q * scale should be within half a step (scale / 2) of w everywhere, but at index {i} "
             f"w = {w64[i].item():.6g}, w / scale = {exact[i].item():.4f} and q = {int(codes[i])}.", hint)
    top = (w64.abs() == amax) & (amax > 0)
    expect(bool((codes[top] == torch.sign(w64[top]).to(torch.int64) * qmax).all()),
           f"{what}: the largest |w| of each slice should map to ±{qmax}.", hint)
    return q, scale


def quant_expect_zeropoint(result, w: torch.Tensor, bits: int, dim, what: str):
    """Every property of a right zero-point answer (codes compared with the rule up to float rounding)."""
    hint = QUANT_ZEROPOINT_HINT
    q, scale, zero_point = quant_unpack(result, 3, what, hint)
    q = quant_expect_codes(q, w, torch.uint8, what, hint)
    scale = quant_expect_scale(scale, w, dim, what, hint)
    zero_point = expect_tensor(zero_point, f"{what}: the zero_point", hint=hint)
    if zero_point.is_floating_point() or zero_point.dtype == torch.bool:
        fail(f"{what}: the zero_point has dtype {zero_point.dtype}: it should be an integer tensor (a code).",
             hint="The zero point is the code of 0.0: round(-low / scale), converted to an integer dtype such as "
                  "torch.int32, so that 0.0 is stored exactly.")
    if zero_point.numel() != scale.numel():
        fail(f"{what}: the zero_point has shape {tuple(zero_point.shape)}: there should be one per scale.", hint)
    zero_point = zero_point.reshape(scale.shape)
    qmax = 2 ** bits - 1
    w64, s64 = w.double(), scale.double()
    low = quant_slice_stat(w64, dim, "amin").clamp(max=0)
    high = quant_slice_stat(w64, dim, "amax").clamp(min=0)
    expected = torch.where(high == low, torch.ones_like(low), (high - low) / qmax)
    if not torch.allclose(s64, expected, rtol=1e-5, atol=0):
        raw_low, raw_high = quant_slice_stat(w64, dim, "amin"), quant_slice_stat(w64, dim, "amax")
        if torch.allclose(s64, torch.where(raw_high == raw_low, torch.ones_like(s64), (raw_high - raw_low) / qmax),
                          rtol=1e-5):
            fail(f"{what}: the scale covers [min(w), max(w)], but the range should always hold 0: [min(w, 0), "
                 f"max(w, 0)].", hint="Clamp the low end to at most 0 and the high end to at least 0, so that 0.0 "
                                      "has an exact code (padding and ReLU outputs are exact zeros).")
        expect_close(s64, expected, f"{what}: the scale ((max(w, 0) - min(w, 0)) / {qmax})", rtol=1e-5, atol=0,
                     hint=hint)
    ratio = -low / s64
    zp = zero_point.to(torch.int64)
    near_tie = ((ratio - ratio.floor()) - 0.5).abs() < 1e-3
    right = torch.round(ratio).to(torch.int64)
    if not bool(((zp == right) | near_tie).all()):
        if bool(((zp == torch.round(low / s64).to(torch.int64)) | near_tie).all()):
            fail(f"{what}: the zero_point has the wrong sign.", hint="zero_point = round(-low / scale): low <= 0, so "
                                                                  "the zero point is a code >= 0.")
        if bool(((zp == ratio.floor().to(torch.int64)) | near_tie).all()):
            fail(f"{what}: the zero_point is -low / scale cut down to an integer, not rounded.",
                 hint="Round the zero point: torch.round(-low / scale), then convert it to an integer dtype.")
        fail(f"{what}: the zero_point should be round(-low / scale) = {right.flatten().tolist()[:6]}, but it is "
             f"{zp.flatten().tolist()[:6]}.", hint)
    codes = q.to(torch.int64)
    exact = w64 / s64
    error = (codes - zp - exact).abs()
    if bool((error > 0.5 + 1e-3).any()):
        if bool((((codes - torch.round((w64 - low) / s64)).abs() == 0) | (error <= 0.5 + 1e-3)).all()):
            fail(f"{what}: the codes are round((w - low) / scale): up to a whole step off, since low is not a "
                 f"multiple of the scale.", hint="Round w / scale first, then add the (already rounded) zero point: "
                                                 "q = round(w / scale) + zero_point, so that 0.0 maps exactly.")
        i = tuple(int(k) for k in (error > 0.5 + 1e-3).nonzero()[0])
        fail(f"{what}: (q - zero_point) * scale should be within half a step of w everywhere, but at index {i} "
             f"w = {w64[i].item():.6g}, w / scale = {exact[i].item():.4f}, q = {int(codes[i])} and zero_point = "
             f"{int(zp.expand_as(codes)[i])}.", hint="Clamp to [0, 2**bits - 1] (unsigned codes), and round rather "
                                                     "than truncate: q = clamp(round(w / scale) + zero_point, 0, qmax).")
    expect(bool(((codes >= 0) & (codes <= qmax)).all()), f"{what} has codes outside [0, {qmax}].", hint)
    zeros = w64 == 0
    expect(bool((codes[zeros] == zp.expand_as(codes)[zeros]).all()),
           f"{what}: an exact 0.0 in w should be stored as the zero point.", hint)
    return q, scale, zero_point


# -- QuantizedLinear -------------------------------------------------------------------------------

def ql_expected_scale(weight: torch.Tensor, bits: int, group_size) -> torch.Tensor:
    """One absmax scale per output row, or per group of `group_size` consecutive inputs of a row: (n_scales, 1)."""
    rows = weight.double().reshape(-1, group_size) if group_size else weight.double()
    amax = rows.abs().amax(dim=1, keepdim=True)
    return torch.where(amax == 0, torch.ones_like(amax), amax / (2 ** (bits - 1) - 1))


def ql_weight_of(sd: dict, out_features: int, in_features: int) -> torch.Tensor:
    """The float64 weight that a QuantizedLinear's buffers stand for (scale rows are consecutive blocks)."""
    scale = sd["scale"].double()
    return (sd["weight_q"].double().reshape(scale.shape[0], -1) * scale).reshape(out_features, in_features)


def ql_from_linear(student, weight: torch.Tensor, bias, bits: int = 8, group_size=None, what: str = ""):
    """student.QuantizedLinear.from_linear on an nn.Linear with these weights, built in the student's kernel."""
    linear = student_linear(student, weight, bias)
    layer = student.QuantizedLinear.from_linear(linear, bits=bits, group_size=group_size)
    if not getattr(layer, "type_name", "").endswith("QuantizedLinear"):
        fail(f"{what} should return a QuantizedLinear, not {compress_shown(layer)}.",
             hint="Build the layer with cls(in_features, out_features, bits, group_size, bias=...) (given), fill its "
                  "buffers, and return it.")
    return layer


def ql_expect_state(sd: dict, weight: torch.Tensor, bias, bits: int, group_size, what: str) -> None:
    """ql_expect_buffers on a QuantizedLinear's state dict."""
    out_features, in_features = weight.shape
    n_scales = out_features * in_features // group_size if group_size else out_features
    codes = expect_tensor(sd.get("weight_q"), f"{what}.weight_q", shape=(out_features, in_features), hint=QL_HINT)
    if codes.dtype != torch.int8:
        fail(f"{what}.weight_q has dtype {codes.dtype}, but it should hold int8 codes.",
             hint="Store the codes that quantize_absmax returns (int8) in weight_q, not the float weight.")
    floats = [k for k, v in sd.items() if v.is_floating_point() and v.numel() >= weight.numel()]
    expect(not floats, f"{what} keeps a float tensor as large as the weight ({floats[0] if floats else ''}): "
                       f"the point of quantising is to store only the int8 codes and the scales.",
           hint="Do not keep the original layer or its weight on the module: only weight_q, scale and bias.")
    scale = expect_tensor(sd.get("scale"), f"{what}.scale", shape=(n_scales, 1), hint=(
        f"One scale per output row: scale has shape (out_features, 1) = ({out_features}, 1)." if not group_size else
        f"One scale per group of {group_size} consecutive inputs of a row: scale has shape (out * in / group_size, "
        f"1) = ({n_scales}, 1), the groups of row 0 first."))
    expected_scale = ql_expected_scale(weight, bits, group_size)
    if not torch.allclose(scale.double(), expected_scale, rtol=1e-5, atol=0):
        hint = QL_HINT
        qmax = 2 ** (bits - 1) - 1
        if bits != 8 and torch.allclose(scale.double(), ql_expected_scale(weight, 8, group_size), rtol=1e-5):
            hint = f"These are 8-bit scales (max|w| / 127) for bits={bits}: pass `bits` on to quantize_absmax."
        elif torch.allclose(scale.double(), weight.double().abs().max().expand_as(scale) / qmax, rtol=1e-5):
            hint = "That is one scale for the whole weight: use one per output row (or per group), absmax of that row."
        elif group_size and torch.allclose(scale.double(), weight.double().t().reshape(-1, group_size).abs().amax(
                1, keepdim=True) / qmax, rtol=1e-5):
            hint = (f"Your groups run down the columns: a group is {group_size} consecutive INPUTS of one output row, "
                    f"i.e. weight.reshape(-1, group_size) of the (out, in) weight.")
        expect_close(scale.double(), expected_scale, f"{what}.scale (max |w| of each " +
                     ("row" if not group_size else f"group of {group_size} inputs") + f" / {qmax})",
                     rtol=1e-5, atol=0, hint=hint)
    qmax = 2 ** (bits - 1) - 1
    expect(int(codes.abs().max()) <= qmax, f"{what}.weight_q has codes outside [-{qmax}, {qmax}] for bits={bits}.",
           hint="Pass `bits` on to quantize_absmax.")
    exact = weight.double().reshape(n_scales, -1) / scale.double()
    wrong = (codes.double().reshape(n_scales, -1) - exact).abs() > 0.5 + 1e-3
    expect(not bool(wrong.any()), f"{what}.weight_q is not round(w / scale) at {int(wrong.sum())} of "
                                  f"{wrong.numel()} weights.", hint=QL_HINT)
    if bias is None:
        expect(sd.get("bias") is None, f"{what} has a bias, but the nn.Linear had none.", hint=QL_HINT)
    else:
        expect_close(sd.get("bias"), bias, f"{what}.bias (the nn.Linear's bias, copied)",
                     hint="Copy the layer's bias into the QuantizedLinear: layer.bias = linear.bias.detach().clone().")


# -- quantize_model --------------------------------------------------------------------------------

def qm_student_model(student, seed: int):
    """A tiny Llama (config, weights, the model in the student's kernel, input ids)."""
    config = tiny_llama_config()
    weights = llama_weights(config, seed)
    model = student_llama(student, config, weights)
    ids = torch.randint(0, config["vocab_size"], (2, 7), generator=generator(seed + 1))
    return config, weights, model, ids


def qm_expect_types(student, model, quantised: list[str], kept: list[str], what: str) -> None:
    types = types_of(student, model)
    wrong = [n for n in quantised if types.get(n) != "QuantizedLinear"]
    if wrong:
        hint = QM_HINT
        if all(types.get(n) == "Linear" for n in quantised):
            hint = ("Nothing deep in the model was replaced: model.named_modules() reaches every submodule (named "
                    "children are only the top level); replace each on its parent (model.get_submodule).")
        fail(f"{what}: these layers should now be QuantizedLinear: {wrong[:3]}" +
             (f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else "") + ".", hint)
    left = [n for n in kept if types.get(n) != "Linear"]
    expect(not left, f"{what}: these layers should have stayed nn.Linear: {left[:3]}.",
           hint="Skip every nn.Linear whose name has a part in `skip`: any(part in skip for part in name.split('.')).")
