"""Hints for known mistakes, shared by the hidden checks: when a failed check's answer is what a known wrong
implementation gives, the hint names that mistake."""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from llmcourse.checking import CheckFailed

Mistakes = Iterable[tuple[Callable[[], object], str]]


def same(a, b, atol: float = 1e-6) -> bool:
    """Equal values; tensors of one shape within rtol 1e-4 and `atol` (NaN equal to NaN)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), rtol=1e-4, atol=atol, equal_nan=True))
    return a == b


def explained(check: Callable[[], None], actual, mistakes: Mistakes, expected=None, atol: float = 1e-6) -> None:
    """Run `check`; if it fails and `actual` equals what a known mistake gives, use that mistake's hint."""
    try:
        check()
    except CheckFailed as failure:
        for wrong, hint in mistakes:
            try:
                candidate = wrong()
            except Exception:  # that mistake cannot happen for these inputs
                continue
            if candidate is not None and (expected is None or not same(candidate, expected, atol)) \
                    and same(actual, candidate, atol):
                raise CheckFailed(failure.message, hint) from None
        raise
