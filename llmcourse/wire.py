"""The data format that crosses between a student's kernel and the grader.

Only data crosses: tensors travel as a safetensors file, everything else as JSON inside that file's
metadata. Nothing is ever pickled, so a reply can never run code in the process that reads it.
Anything that is not data (a module, a function, a model) stays where it lives and crosses as a
reference number, which the other side can only use to ask for more data.

Both directions use the same two functions, `dumps` and `loads`, and both sides enforce the limits.
"""
from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

# Bound here, once: a notebook that replaces builtins (say `builtins.isinstance`) must not change
# how its answers are encoded.
isinstance, type, len, float, int, str, repr, any, all = isinstance, type, len, float, int, str, repr, any, all  # noqa: A001,PLW0127

MAX_BYTES = 64 * 1024 * 1024  # a whole message
MAX_DEPTH = 32  # nesting of lists and dicts
MAX_ITEMS = 200_000  # JSON values in one message
MAX_STRING = 1_000_000  # characters in one string


class WireError(ValueError):
    """A message that breaks the format or its limits."""


class NotData(Exception):
    """Raised by `dumps` when a value is not data and no reference table was given."""


@dataclass(frozen=True)
class Ref:
    """A reference to an object that stays on the other side (a module, a function, ...)."""

    id: int
    type_name: str = "object"


_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64,
    torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool,
)}


def dumps(value: Any, make_ref: Callable[[Any], Ref] | None = None) -> bytes:
    """Encode `value`. Objects that are not data become `make_ref(obj)`, or raise NotData."""
    tensors: dict[str, torch.Tensor] = {}
    count = [0]
    size = [0]

    def room_for(nbytes: int) -> None:
        # Checked before any copy: a 1 GB answer is refused without first being copied (twice).
        size[0] += nbytes
        if size[0] > MAX_BYTES:
            raise WireError(f"the data is at least {size[0] / 2**20:.1f} MB, more than the {MAX_BYTES / 2**20:.0f} MB limit")

    def enc(v: Any, depth: int) -> Any:
        count[0] += 1
        if count[0] > MAX_ITEMS:
            raise WireError(f"more than {MAX_ITEMS} values in one message")
        if depth > MAX_DEPTH:
            raise WireError(f"data nested more than {MAX_DEPTH} levels deep")
        if v is None or isinstance(v, (bool, str)):
            if isinstance(v, str):
                if len(v) > MAX_STRING:
                    raise WireError(f"a string of {len(v)} characters is longer than {MAX_STRING}")
                room_for(len(v))
            return v
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return int(v)
        if isinstance(v, (float, np.floating)):
            f = float(v)
            return f if math.isfinite(f) else {"__float__": repr(f)}
        if isinstance(v, Ref):
            return {"__ref__": v.id, "type": v.type_name}
        if isinstance(v, torch.Tensor):
            room_for(v.numel() * v.element_size())
            return {"__tensor__": _add(tensors, _plain_tensor(v))}
        if isinstance(v, np.ndarray) and v.dtype != object:
            room_for(v.nbytes)
            return {"__tensor__": _add(tensors, torch.from_numpy(np.ascontiguousarray(v)).clone()), "numpy": True}
        if isinstance(v, torch.dtype):
            return {"__dtype__": str(v).removeprefix("torch.")}
        if isinstance(v, torch.Generator):
            raise NotData("a torch.Generator cannot cross; send a Seeded(n) instead")
        if isinstance(v, Seeded):
            return {"__generator__": int(v.seed)}
        if isinstance(v, slice):
            return {"__slice__": [enc(v.start, depth + 1), enc(v.stop, depth + 1), enc(v.step, depth + 1)]}
        if type(v) in (list, tuple):
            items = [enc(x, depth + 1) for x in v]
            return items if type(v) is list else {"__tuple__": items}
        if type(v) is dict or type(v) is OrderedDict:  # a state_dict is an OrderedDict
            if all(type(k) is str for k in v):
                if any(k.startswith("__") and k.endswith("__") for k in v):
                    return {"__dict__": [[k, enc(x, depth + 1)] for k, x in v.items()]}
                return {k: enc(x, depth + 1) for k, x in v.items()}
            return {"__dict__": [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in v.items()]}
        if make_ref is None:
            raise NotData(type(v).__name__)
        return enc(make_ref(v), depth)

    payload = json.dumps({"v": enc(value, 0)}, allow_nan=False)
    blob = _st_save(tensors, metadata={"payload": payload})
    if len(blob) > MAX_BYTES:
        raise WireError(f"the data is {len(blob) / 2**20:.1f} MB, more than the {MAX_BYTES / 2**20:.0f} MB limit")
    return blob


def loads(blob: bytes) -> Any:
    """Decode a message from `dumps`. Raises WireError for anything malformed or over the limits."""
    if not isinstance(blob, (bytes, bytearray)):
        raise WireError("a message must be bytes")
    if len(blob) > MAX_BYTES:
        raise WireError(f"the data is {len(blob) / 2**20:.1f} MB, more than the {MAX_BYTES / 2**20:.0f} MB limit")
    try:
        header_len = int.from_bytes(blob[:8], "little")
        header = json.loads(bytes(blob[8:8 + header_len]))
        payload = header["__metadata__"]["payload"]
        tensors = _st_load(bytes(blob)) if len(header) > 1 else {}
        doc = json.loads(payload)["v"]
    except WireError:
        raise
    except Exception as exc:  # malformed bytes of any kind are one error for the reader
        raise WireError(f"unreadable message ({type(exc).__name__})") from None
    count = [0]

    def dec(v: Any, depth: int) -> Any:
        count[0] += 1
        if count[0] > MAX_ITEMS:
            raise WireError(f"more than {MAX_ITEMS} values in one message")
        if depth > MAX_DEPTH:
            raise WireError(f"data nested more than {MAX_DEPTH} levels deep")
        if v is None or isinstance(v, (bool, int, float)):
            return v
        if isinstance(v, str):
            if len(v) > MAX_STRING:
                raise WireError(f"a string longer than {MAX_STRING} characters")
            return v
        if isinstance(v, list):
            return [dec(x, depth + 1) for x in v]
        if not isinstance(v, dict):
            raise WireError(f"unexpected JSON value {type(v).__name__}")
        if "__tensor__" in v:
            t = tensors.get(v["__tensor__"])
            if t is None:
                raise WireError("a tensor is missing from the message")
            return t.numpy() if v.get("numpy") else t
        if "__float__" in v:
            if v["__float__"] not in ("nan", "inf", "-inf"):
                raise WireError("bad float")
            return float(v["__float__"])
        if "__ref__" in v:
            return Ref(int(v["__ref__"]), str(v.get("type", "object"))[:200])
        if "__tuple__" in v:
            return tuple(dec(x, depth + 1) for x in v["__tuple__"])
        if "__dict__" in v:
            out = {}
            for pair in v["__dict__"]:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise WireError("bad dict entry")
                key = dec(pair[0], depth + 1)
                try:
                    out[key] = dec(pair[1], depth + 1)
                except TypeError:
                    raise WireError("a dict key that cannot be hashed") from None
            return out
        if "__dtype__" in v:
            if v["__dtype__"] not in _DTYPES:
                raise WireError(f"unknown dtype {v['__dtype__']!r}")
            return _DTYPES[v["__dtype__"]]
        if "__generator__" in v:
            return torch.Generator().manual_seed(int(v["__generator__"]))
        if "__slice__" in v:
            return slice(*(dec(x, depth + 1) for x in v["__slice__"]))
        return {str(k): dec(x, depth + 1) for k, x in v.items()}

    return dec(doc, 0)


@dataclass(frozen=True)
class Seeded:
    """Stands for `torch.Generator().manual_seed(seed)` on the other side (generators are not data)."""

    seed: int


def _plain_tensor(t: torch.Tensor) -> torch.Tensor:
    # Subclasses (and Parameters) become plain tensors: the reader must get data, not behaviour.
    t = torch.Tensor.as_subclass(t.detach(), torch.Tensor)
    if t.is_sparse or t.layout != torch.strided:
        t = t.to_dense()
    return t.to("cpu").contiguous().clone()


def _add(tensors: dict[str, torch.Tensor], t: torch.Tensor) -> str:
    name = f"t{len(tensors)}"
    tensors[name] = t
    return name
