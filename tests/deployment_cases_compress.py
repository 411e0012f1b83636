"""Mutants and alternatives of 07_deployment (compress exercises), used by tests/test_deployment_checks.py.

Each is source code run after the notebook's cells (torch, nn, F, math, Counter, copy are there): it redefines one
solution. A mutant is a mistake a student really makes and must lose points in its exercise; an alternative is
another right answer and must get full marks, in its exercise and in those built on it.
"""
from __future__ import annotations

# -- model_memory --------------------------------------------------------------------------------------

_MEMORY_CHECKS = '''
    if dtype not in BYTES_PER_PARAM:
        raise ValueError(f"unknown dtype {dtype!r}")
    if training and dtype in ("int8", "int4"):
        raise ValueError("integer weights cannot be trained")
    if training and mixed_precision and dtype == "fp32":
        raise ValueError("mixed precision needs 16-bit weights")
'''


def _memory(body: str) -> str:
    return "def model_memory(n_params, dtype, training=False, mixed_precision=False):\n" + _MEMORY_CHECKS + body


_MEMORY_RIGHT = '''    weights = math.ceil(n_params * BYTES_PER_PARAM[dtype])
    if not training:
        return weights
    return 2 * weights + 8 * n_params + (4 * n_params if mixed_precision else 0)
'''

# -- QuantizedLinear -------------------------------------------------------------------------------------

_QL_HEAD = "class QuantizedLinear(QuantizedLinear):\n"
_QL_FROM_LINEAR = '''
    @classmethod
    def from_linear(cls, linear, bits=8, group_size=None):
        layer = cls(linear.in_features, linear.out_features, bits, group_size, bias=linear.bias is not None)
        w = linear.weight.detach()
'''
_QL_REST = '''        q, scale = quantize_absmax(rows, bits, dim=0)
        layer.weight_q = q.reshape(w.shape)
        layer.scale = scale
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer
'''
_QL_ROWS = "        rows = w.reshape(-1, group_size) if group_size else w\n"


def _ql(from_linear: str | None = None, forward: str | None = None) -> str:
    source = _QL_HEAD
    if from_linear is not None:
        source += _QL_FROM_LINEAR + from_linear
    if forward is not None:
        source += "\n    def forward(self, x):\n" + forward
    return source


# -- quantize_model -------------------------------------------------------------------------------------

_QM_REPLACE = '''    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantizedLinear.from_linear(module, bits, group_size))
'''


def _qm(select: str, tail: str = "    return model\n", replace: str = _QM_REPLACE) -> str:
    return ('def quantize_model(model, bits=8, group_size=None, skip=("lm_head",)):\n'
            f"    targets = [(name, module) for name, module in model.named_modules() if {select}]\n"
            + replace + tail)


_QM_PARTS = 'isinstance(module, nn.Linear) and not any(part in skip for part in name.split("."))'

# -- magnitude_prune ------------------------------------------------------------------------------------

_PRUNE_HEAD = '''def magnitude_prune(model, sparsity, module_types=(nn.Linear,)):
    if not 0 <= sparsity <= 1:
        raise ValueError("sparsity is a fraction")
'''
_PRUNE_APPLY = '''    start = 0
    with torch.no_grad():
        for w in weights:
            w.mul_(keep[start:start + w.numel()].view_as(w))
            start += w.numel()
    return model
'''


def _prune(body: str, apply: str = _PRUNE_APPLY) -> str:
    return _PRUNE_HEAD + body + apply


_PRUNE_WEIGHTS = '''    weights = [m.weight for m in model.modules() if isinstance(m, module_types)]
    scores = torch.cat([w.detach().abs().flatten() for w in weights])
'''

MUTANTS: dict[str, dict[str, str]] = {
    "model_memory": {
        "Adam states forgotten": _memory('''    weights = math.ceil(n_params * BYTES_PER_PARAM[dtype])
    if not training:
        return weights
    return 2 * weights + (4 * n_params if mixed_precision else 0)
'''),
        "only one Adam state": _memory('''    weights = math.ceil(n_params * BYTES_PER_PARAM[dtype])
    if not training:
        return weights
    return 2 * weights + 4 * n_params + (4 * n_params if mixed_precision else 0)
'''),
        "master copy always added": _memory('''    weights = math.ceil(n_params * BYTES_PER_PARAM[dtype])
    if not training:
        return weights
    return 2 * weights + 8 * n_params + 4 * n_params
'''),
        "int4 as one byte": _memory('''    size = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "int4": 1}[dtype]
    weights = n_params * size
    if not training:
        return weights
    return 2 * weights + 8 * n_params + (4 * n_params if mixed_precision else 0)
'''),
        "gradients in fp32 under mixed precision": _memory('''    weights = math.ceil(n_params * BYTES_PER_PARAM[dtype])
    if not training:
        return weights
    if mixed_precision:
        return weights + 4 * n_params + 8 * n_params + 4 * n_params
    return 2 * weights + 8 * n_params
'''),
        "returns gigabytes": _memory('''    weights = math.ceil(n_params * BYTES_PER_PARAM[dtype])
    if training:
        weights = 2 * weights + 8 * n_params + (4 * n_params if mixed_precision else 0)
    return weights / 1e9
'''),
        "int4 rounded down": _memory('''    weights = int(n_params * BYTES_PER_PARAM[dtype])
    if not training:
        return weights
    return 2 * weights + 8 * n_params + (4 * n_params if mixed_precision else 0)
'''),
    },
    "quantize_absmax": {
        "scale from the mean": '''
def quantize_absmax(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        amax = w.abs().mean()
    else:
        others = [d for d in range(w.dim()) if d != dim % w.dim()]
        amax = w.abs().mean(dim=others, keepdim=True) if others else w.abs()
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8), scale
''',
        "qmax = 2^(bits-1), clamped to [-128, 128]": '''
def quantize_absmax(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1)
    if dim is None:
        amax = w.abs().max()
    else:
        others = [d for d in range(w.dim()) if d != dim % w.dim()]
        amax = w.abs().amax(dim=others, keepdim=True) if others else w.abs()
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8), scale
''',
        "per slice along the wrong axis": '''
def quantize_absmax(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    amax = w.abs().max() if dim is None else w.abs().amax(dim=dim, keepdim=True)
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8), scale
''',
        "q left as floats": '''
def quantize_absmax(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        amax = w.abs().max()
    else:
        others = [d for d in range(w.dim()) if d != dim % w.dim()]
        amax = w.abs().amax(dim=others, keepdim=True) if others else w.abs()
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return torch.round(w / scale).clamp(-qmax, qmax), scale
''',
        "truncation instead of rounding": '''
def quantize_absmax(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        amax = w.abs().max()
    else:
        others = [d for d in range(w.dim()) if d != dim % w.dim()]
        amax = w.abs().amax(dim=others, keepdim=True) if others else w.abs()
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return (w / scale).clamp(-qmax, qmax).to(torch.int8), scale
''',
        "one scale per tensor even when dim is given": '''
def quantize_absmax(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    amax = w.abs().max()
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8), scale
''',
        "zero slices left with scale 0 (NaN codes)": '''
def quantize_absmax(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        amax = w.abs().max()
    else:
        others = [d for d in range(w.dim()) if d != dim % w.dim()]
        amax = w.abs().amax(dim=others, keepdim=True) if others else w.abs()
    scale = amax / qmax
    return torch.nan_to_num(torch.round(w / scale)).clamp(-qmax, qmax).to(torch.int8), scale
''',
        "scale without keepdim": '''
def quantize_absmax(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        amax = w.abs().max()
    else:
        others = [d for d in range(w.dim()) if d != dim % w.dim()]
        amax = w.abs().amax(dim=others, keepdim=True) if others else w.abs()
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8), scale.squeeze()
''',
    },
    "quantize_zeropoint": {
        "zero point truncated, not rounded": '''
def quantize_zeropoint(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    others = list(range(w.dim())) if dim is None else [d for d in range(w.dim()) if d != dim % w.dim()]
    low = (w.amin(dim=others, keepdim=dim is not None) if others else w).clamp(max=0)
    high = (w.amax(dim=others, keepdim=dim is not None) if others else w).clamp(min=0)
    scale = torch.where(high == low, torch.ones_like(low), (high - low) / qmax)
    zero_point = (-low / scale).to(torch.int32)
    q = (torch.round(w / scale) + zero_point).clamp(0, qmax).to(torch.uint8)
    return q, scale, zero_point
''',
        "zero point left as a float": '''
def quantize_zeropoint(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    others = list(range(w.dim())) if dim is None else [d for d in range(w.dim()) if d != dim % w.dim()]
    low = (w.amin(dim=others, keepdim=dim is not None) if others else w).clamp(max=0)
    high = (w.amax(dim=others, keepdim=dim is not None) if others else w).clamp(min=0)
    scale = torch.where(high == low, torch.ones_like(low), (high - low) / qmax)
    zero_point = -low / scale
    q = torch.round(w / scale + zero_point).clamp(0, qmax).to(torch.uint8)
    return q, scale, zero_point
''',
        "per slice along the wrong axis": '''
def quantize_zeropoint(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    if dim is None:
        low, high = w.min(), w.max()
    else:
        low, high = w.amin(dim=dim, keepdim=True), w.amax(dim=dim, keepdim=True)
    low, high = low.clamp(max=0), high.clamp(min=0)
    scale = torch.where(high == low, torch.ones_like(low), (high - low) / qmax)
    zero_point = torch.round(-low / scale).to(torch.int32)
    q = (torch.round(w / scale) + zero_point).clamp(0, qmax).to(torch.uint8)
    return q, scale, zero_point
''',
        "range without zero (min and max of w only)": '''
def quantize_zeropoint(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    others = list(range(w.dim())) if dim is None else [d for d in range(w.dim()) if d != dim % w.dim()]
    low = w.amin(dim=others, keepdim=dim is not None) if others else w
    high = w.amax(dim=others, keepdim=dim is not None) if others else w
    scale = torch.where(high == low, torch.ones_like(low), (high - low) / qmax)
    zero_point = torch.round(-low / scale).to(torch.int32)
    q = (torch.round(w / scale) + zero_point).clamp(0, qmax).to(torch.uint8)
    return q, scale, zero_point
''',
        "clamped to the signed range": '''
def quantize_zeropoint(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    others = list(range(w.dim())) if dim is None else [d for d in range(w.dim()) if d != dim % w.dim()]
    low = (w.amin(dim=others, keepdim=dim is not None) if others else w).clamp(max=0)
    high = (w.amax(dim=others, keepdim=dim is not None) if others else w).clamp(min=0)
    scale = torch.where(high == low, torch.ones_like(low), (high - low) / qmax)
    zero_point = torch.round(-low / scale).to(torch.int32)
    half = 2 ** (bits - 1)
    q = (torch.round(w / scale) + zero_point).clamp(-half, half - 1).to(torch.uint8)
    return q, scale, zero_point
''',
        "zero point with the wrong sign": '''
def quantize_zeropoint(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    others = list(range(w.dim())) if dim is None else [d for d in range(w.dim()) if d != dim % w.dim()]
    low = (w.amin(dim=others, keepdim=dim is not None) if others else w).clamp(max=0)
    high = (w.amax(dim=others, keepdim=dim is not None) if others else w).clamp(min=0)
    scale = torch.where(high == low, torch.ones_like(low), (high - low) / qmax)
    zero_point = torch.round(low / scale).to(torch.int32)
    q = (torch.round(w / scale) - zero_point).clamp(0, qmax).to(torch.uint8)
    return q, scale, zero_point
''',
        "codes from the unrounded low, round((w - low) / scale)": '''
def quantize_zeropoint(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    others = list(range(w.dim())) if dim is None else [d for d in range(w.dim()) if d != dim % w.dim()]
    low = (w.amin(dim=others, keepdim=dim is not None) if others else w).clamp(max=0)
    high = (w.amax(dim=others, keepdim=dim is not None) if others else w).clamp(min=0)
    scale = torch.where(high == low, torch.ones_like(low), (high - low) / qmax)
    zero_point = torch.round(-low / scale).to(torch.int32)
    q = torch.round((w - low) / scale).clamp(0, qmax).to(torch.uint8)
    return q, scale, zero_point
''',
    },
    "dequantize": {
        "zero point added": '''
def dequantize(q, scale, zero_point=None):
    values = q.to(scale.dtype)
    if zero_point is not None:
        values = values + zero_point.to(scale.dtype)
    return values * scale
''',
        "divides by the scale": '''
def dequantize(q, scale, zero_point=None):
    values = q.to(scale.dtype)
    if zero_point is not None:
        values = values - zero_point.to(scale.dtype)
    return values / scale
''',
        "no cast: integer arithmetic wraps": '''
def dequantize(q, scale, zero_point=None):
    if zero_point is not None:
        q = q - zero_point
    return q * scale
''',
        "zero point ignored": '''
def dequantize(q, scale, zero_point=None):
    return q.to(scale.dtype) * scale
''',
        "always float32": '''
def dequantize(q, scale, zero_point=None):
    values = q.float()
    if zero_point is not None:
        values = values - zero_point.float()
    return (values * scale).float()
''',
    },
    "quantized_linear": {
        "one scale for the whole weight": _ql(from_linear='''        q, scale = quantize_absmax(w, bits)
        layer.weight_q = q
        layer.scale = scale.reshape(1, 1).expand_as(layer.scale).clone()
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer
'''),
        "groups along the columns": _ql(from_linear='''        rows = w.t().reshape(-1, group_size) if group_size else w
        q, scale = quantize_absmax(rows, bits, dim=0)
        layer.weight_q = q.reshape(w.t().shape).t().contiguous() if group_size else q
        layer.scale = scale
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer
''', forward='''        if self.group_size:
            rows = self.weight_q.t().reshape(self.scale.shape[0], -1)
            weight = dequantize(rows, self.scale).reshape(self.in_features, self.out_features).t()
        else:
            weight = dequantize(self.weight_q, self.scale)
        return F.linear(x, weight.to(x.dtype), self.bias)
'''),
        "float layer kept and used": _ql(from_linear=_QL_ROWS + _QL_REST.replace(
            "        return layer\n", "        layer.linear = linear\n        return layer\n"),
            forward="        return self.linear(x)\n"),
        "bias dropped": _ql(from_linear=_QL_ROWS + '''        q, scale = quantize_absmax(rows, bits, dim=0)
        layer.weight_q = q.reshape(w.shape)
        layer.scale = scale
        return layer
'''),
        "forward uses the codes without the scales": _ql(forward='''        return F.linear(x, self.weight_q.to(x.dtype), self.bias)
'''),
        "codes stored as floats": _ql(from_linear=_QL_ROWS + _QL_REST.replace(
            "layer.weight_q = q.reshape(w.shape)", "layer.weight_q = q.reshape(w.shape).float()")),
        "bits not passed on": _ql(from_linear=_QL_ROWS + _QL_REST.replace("quantize_absmax(rows, bits, dim=0)",
                                                                          "quantize_absmax(rows, dim=0)")),
    },
    "quantize_model": {
        "lm_head quantised too (skip ignored)": _qm("isinstance(module, nn.Linear)"),
        "only the top-level children": '''
def quantize_model(model, bits=8, group_size=None, skip=("lm_head",)):
    for name, module in list(model.named_children()):
        if isinstance(module, nn.Linear) and name not in skip:
            setattr(model, name, QuantizedLinear.from_linear(module, bits, group_size))
    return model
''',
        "a quantised copy returned, the model unchanged": '''
def quantize_model(model, bits=8, group_size=None, skip=("lm_head",)):
    model = copy.deepcopy(model)
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and not any(part in skip for part in name.split("."))]
''' + _QM_REPLACE + "    return model\n",
        "bits and group_size not passed on": _qm(_QM_PARTS, replace=_QM_REPLACE.replace(
            "from_linear(module, bits, group_size)", "from_linear(module)")),
        "skip compared with the whole name": _qm("isinstance(module, nn.Linear) and name not in skip"),
        "returns nothing": _qm(_QM_PARTS, tail=""),
    },
    "magnitude_prune": {
        "each layer pruned on its own": _PRUNE_HEAD + '''    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, module_types):
                k = round(sparsity * m.weight.numel())
                if k:
                    idx = torch.topk(m.weight.abs().flatten(), k, largest=False).indices
                    m.weight.view(-1)[idx] = 0
    return model
''',
        "the largest weights pruned": _prune(_PRUNE_WEIGHTS + '''    k = round(sparsity * scores.numel())
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        keep[torch.topk(scores, k).indices] = False
'''),
        "int() instead of round": _prune(_PRUNE_WEIGHTS + '''    k = int(sparsity * scores.numel())
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        keep[torch.topk(scores, k, largest=False).indices] = False
'''),
        "biases pruned too": _prune('''    weights = [p for m in model.modules() if isinstance(m, module_types) for p in m.parameters(recurse=False)]
    scores = torch.cat([w.detach().abs().flatten() for w in weights])
    k = round(sparsity * scores.numel())
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        keep[torch.topk(scores, k, largest=False).indices] = False
'''),
        "threshold guessed from the mean |w|": _prune(_PRUNE_WEIGHTS + '''    keep = scores > 2 * sparsity * scores.mean()
'''),
        "a pruned copy returned, the model unchanged": _PRUNE_HEAD + '''    model = copy.deepcopy(model)
''' + _PRUNE_WEIGHTS + '''    k = round(sparsity * scores.numel())
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        keep[torch.topk(scores, k, largest=False).indices] = False
''' + _PRUNE_APPLY,
    },
}

ALTERNATIVES: dict[str, dict[str, str]] = {
    "model_memory": {
        "bits per parameter, integer arithmetic": '''
BITS = {"fp32": 32, "fp16": 16, "bf16": 16, "int8": 8, "int4": 4}

def model_memory(n_params, dtype, training=False, mixed_precision=False):
    if dtype not in BITS:
        raise ValueError(dtype)
    if training and (BITS[dtype] < 16 or (mixed_precision and dtype == "fp32")):
        raise ValueError("cannot train like this")
    weights = (n_params * BITS[dtype] + 7) // 8
    if not training:
        return weights
    return weights + weights + n_params * 2 * 32 // 8 + (n_params * 32 // 8 if mixed_precision else 0)
''',
        "a dict of components": _memory('''    parts = {"weights": math.ceil(n_params * BYTES_PER_PARAM[dtype])}
    if training:
        parts["gradients"] = parts["weights"]
        parts["adam_m"] = parts["adam_v"] = 4 * n_params
        if mixed_precision:
            parts["master"] = 4 * n_params
    return sum(parts.values())
'''),
    },
    "quantize_absmax": {
        "permute to the front, reshape, amax": '''
def quantize_absmax(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        amax = w.abs().reshape(-1).max().reshape([1] * w.dim())
    else:
        d = dim % w.dim()
        moved = w.abs().movedim(d, 0).reshape(w.shape[d], -1)
        shape = [1] * w.dim()
        shape[d] = w.shape[d]
        amax = moved.amax(dim=1).reshape(shape)
    scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
    return torch.clamp(torch.round(w / scale), -qmax, qmax).to(torch.int8), scale
''',
        "float64 computation cast back": '''
def quantize_absmax(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    x = w.double()
    if dim is None:
        amax = x.abs().max()
    else:
        others = tuple(d for d in range(x.dim()) if d != dim % x.dim())
        amax = x.abs().amax(dim=others, keepdim=True) if others else x.abs()
    scale = (amax / qmax).to(w.dtype)
    scale[scale == 0] = 1
    return torch.round(x / scale.double()).clamp(-qmax, qmax).to(torch.int8), scale
''',
        "torch.max over a flattened view, per slice in a loop": '''
def quantize_absmax(w, bits=8, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        scale = torch.max(w.abs().flatten()) / qmax
        scale = scale if scale > 0 else torch.ones_like(scale)
    else:
        d = dim % w.dim()
        shape = [1] * w.dim()
        shape[d] = w.shape[d]
        scale = torch.stack([torch.max(s.abs().flatten()) for s in w.unbind(d)]).reshape(shape) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (w / scale).round().clamp(min=-qmax, max=qmax).to(torch.int8), scale
''',
    },
    "quantize_zeropoint": {
        "the grid-aligned shift: round(w / scale + zero_point)": '''
def quantize_zeropoint(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    others = tuple(range(w.dim())) if dim is None else tuple(d for d in range(w.dim()) if d != dim % w.dim())
    keep = dim is not None
    low = torch.minimum(w.amin(dim=others, keepdim=keep) if others else w, torch.zeros(()))
    high = torch.maximum(w.amax(dim=others, keepdim=keep) if others else w, torch.zeros(()))
    scale = (high - low) / qmax
    scale = scale.masked_fill(scale == 0, 1.0)
    zero_point = (-low / scale).round().int()
    q = torch.round(w / scale + zero_point).clamp(0, qmax).byte()
    return q, scale, zero_point
''',
        "float64 version": '''
def quantize_zeropoint(w, bits=8, dim=None):
    qmax = 2 ** bits - 1
    x = w.double()
    others = tuple(range(x.dim())) if dim is None else tuple(d for d in range(x.dim()) if d != dim % x.dim())
    keep = dim is not None
    low = (x.amin(dim=others, keepdim=keep) if others else x).clamp(max=0)
    high = (x.amax(dim=others, keepdim=keep) if others else x).clamp(min=0)
    scale = torch.where(high > low, (high - low) / qmax, torch.ones_like(low)).to(w.dtype)
    s = scale.double()
    zero_point = torch.round(-low / s).long()
    q = (torch.round(x / s) + zero_point).clamp(0, qmax).to(torch.uint8)
    return q, scale, zero_point
''',
    },
    "dequantize": {
        "torch.sub and torch.mul in float64, cast back": '''
def dequantize(q, scale, zero_point=None):
    values = q.to(torch.float64)
    if zero_point is not None:
        values = torch.sub(values, zero_point.to(torch.float64))
    return torch.mul(values, scale.to(torch.float64)).to(scale.dtype)
''',
        "q.float() route": '''
def dequantize(q, scale, zero_point=None):
    shift = 0 if zero_point is None else zero_point.float()
    return ((q.float() - shift) * scale).to(scale.dtype)
''',
    },
    "quantized_linear": {
        "forward as x @ weight.T + bias": _ql(forward='''        weight = dequantize(self.weight_q.view(len(self.scale), -1), self.scale).view_as(self.weight_q)
        out = x @ weight.to(x.dtype).T
        return out if self.bias is None else out + self.bias.to(x.dtype)
'''),
        "groups with unflatten, scales computed directly": _ql(from_linear='''        qmax = 2 ** (bits - 1) - 1
        g = group_size or linear.in_features
        groups = w.unflatten(1, (-1, g))
        amax = groups.abs().amax(dim=-1, keepdim=True)
        scale = torch.where(amax == 0, torch.ones_like(amax), amax / qmax)
        layer.weight_q = torch.round(groups / scale).clamp(-qmax, qmax).to(torch.int8).flatten(1)
        layer.scale = scale.reshape(-1, 1)
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer
''', forward='''        g = self.group_size or self.in_features
        weight = (self.weight_q.unflatten(1, (-1, g)).to(self.scale.dtype)
                  * self.scale.view(self.out_features, -1, 1)).flatten(1)
        return F.linear(x, weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
'''),
    },
    "quantize_model": {
        "recursive walk over named_children": '''
def quantize_model(model, bits=8, group_size=None, skip=("lm_head",)):
    def walk(module, prefix):
        for name, child in list(module.named_children()):
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(child, nn.Linear):
                if not any(part in skip for part in full.split(".")):
                    setattr(module, name, QuantizedLinear.from_linear(child, bits, group_size))
            else:
                walk(child, full)
    walk(model, "")
    return model
''',
        "substring test on the name": _qm("isinstance(module, nn.Linear) and not any(s in name for s in skip)"),
    },
    "magnitude_prune": {
        "kthvalue threshold, tie-safe by index": _PRUNE_HEAD + _PRUNE_WEIGHTS + '''    k = round(sparsity * scores.numel())
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        threshold = torch.kthvalue(scores, k).values
        below = (scores < threshold).nonzero().flatten()
        tied = (scores == threshold).nonzero().flatten()[: k - len(below)]
        keep[torch.cat([below, tied])] = False
''' + _PRUNE_APPLY,
        "torch.nn.utils.prune, made permanent": _PRUNE_HEAD + '''    import torch.nn.utils.prune as prune
    targets = [(m, "weight") for m in model.modules() if isinstance(m, module_types)]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(sparsity))
    for module, name in targets:
        prune.remove(module, name)
    return model
''',
    },
}

SPECIFIC_HINTS: list[tuple[str, str, str]] = [  # (exercise, mutant, words the hint of some failing check contains)
    ("model_memory", "Adam states forgotten", "Adam keeps two numbers"),
    ("model_memory", "only one Adam state", "TWO states"),
    ("model_memory", "master copy always added", "only with mixed precision"),
    ("model_memory", "int4 as one byte", "half a byte"),
    ("model_memory", "gradients in fp32 under mixed precision", "gradients have the weights' dtype"),
    ("model_memory", "returns gigabytes", "converts to GB"),
    ("model_memory", "int4 rounded down", "round up"),
    ("quantize_absmax", "scale from the mean", "largest |w|"),
    ("quantize_absmax", "qmax = 2^(bits-1), clamped to [-128, 128]", "qmax = 2**(bits - 1) - 1 ="),
    ("quantize_absmax", "per slice along the wrong axis", "every OTHER dimension"),
    ("quantize_absmax", "q left as floats", "one byte"),
    ("quantize_absmax", "truncation instead of rounding", "torch.round"),
    ("quantize_absmax", "one scale per tensor even when dim is given", "not one for the whole tensor"),
    ("quantize_absmax", "zero slices left with scale 0 (NaN codes)", "zero scales by 1"),
    ("quantize_absmax", "scale without keepdim", "keepdim=True"),
    ("quantize_zeropoint", "zero point truncated, not rounded", "Round the zero point"),
    ("quantize_zeropoint", "zero point left as a float", "integer dtype"),
    ("quantize_zeropoint", "per slice along the wrong axis", "every OTHER dimension"),
    ("quantize_zeropoint", "range without zero (min and max of w only)", "has an exact code"),
    ("quantize_zeropoint", "clamped to the signed range", "unsigned"),
    ("quantize_zeropoint", "zero point with the wrong sign", "is a code >= 0"),
    ("quantize_zeropoint", "codes from the unrounded low, round((w - low) / scale)", "Round w / scale first"),
    ("dequantize", "zero point added", "Subtract the zero point"),
    ("dequantize", "divides by the scale", "Multiply by the scale"),
    ("dequantize", "no cast: integer arithmetic wraps", "wraps around"),
    ("dequantize", "zero point ignored", "Use the zero point"),
    ("quantized_linear", "one scale for the whole weight", "one scale for the whole weight"),
    ("quantized_linear", "groups along the columns", "run down the columns"),
    ("quantized_linear", "float layer kept and used", "only weight_q, scale and bias"),
    ("quantized_linear", "bias dropped", "bias"),
    ("quantized_linear", "forward uses the codes without the scales", "Dequantise first"),
    ("quantized_linear", "codes stored as floats", "int8"),
    ("quantized_linear", "bits not passed on", "pass `bits` on"),
    ("quantize_model", "lm_head quantised too (skip ignored)", "a part in `skip`"),
    ("quantize_model", "only the top-level children", "named_modules()"),
    ("quantize_model", "a quantised copy returned, the model unchanged", "in place"),
    ("quantize_model", "bits and group_size not passed on", "Pass bits and group_size"),
    ("quantize_model", "skip compared with the whole name", "a part in `skip`"),
    ("quantize_model", "returns nothing", "return model"),
    ("magnitude_prune", "each layer pruned on its own", "global"),
    ("magnitude_prune", "the largest weights pruned", "LARGEST"),
    ("magnitude_prune", "int() instead of round", "round(sparsity * total)"),
    ("magnitude_prune", "biases pruned too", "not its bias"),
    ("magnitude_prune", "a pruned copy returned, the model unchanged", "in place"),
]
