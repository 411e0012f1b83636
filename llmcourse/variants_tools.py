"""Helpers for 02_variants that run inside your kernel (no solutions here).

The checks call your random procedures many times; `call_repeatedly` and `call_each` do that in one
request instead of hundreds, and hand every result back so that the checks can inspect them all.
"""
from __future__ import annotations

from typing import Any, Callable


def call_repeatedly(fn: Callable, n: int, *args: Any, **kwargs: Any) -> list:
    """[fn(*args, **kwargs) for n times], with the same arguments (a generator among them keeps advancing)."""
    return [fn(*args, **kwargs) for _ in range(int(n))]


def call_each(fn: Callable, calls: list) -> list:
    """[fn(*args, **kwargs) for each (args, kwargs) in calls]."""
    return [fn(*args, **kwargs) for args, kwargs in calls]
