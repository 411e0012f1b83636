"""Helpers for 04_lora: measuring a training run, and looking inside a model (used by the checks).

Nothing here solves an exercise. `measure` times a block of code and records its peak memory; the
other functions describe a model as plain data (names, flags, gradients), so that a check can ask for
all of it in one request instead of one request per parameter.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

__all__ = ["measure", "Measurement", "requires_grad_flags", "module_types", "gradients"]


class Measurement:
    """What `measure` found: wall-clock seconds and peak memory in bytes (and how that was measured)."""

    seconds: float = 0.0
    peak_bytes: int = 0
    how: str = ""

    def __repr__(self) -> str:
        return f"Measurement(seconds={self.seconds:.2f}, peak_bytes={self.peak_bytes}, how={self.how!r})"


def _rss_bytes() -> int | None:
    """The process's resident memory right now (Linux /proc), or None where that is not available."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def measure(device: torch.device | str = "cpu", interval: float = 0.01) -> Iterator[Measurement]:
    """Time the block, and record how far memory rose above where it started.

    On a GPU: torch.cuda's peak allocated bytes during the block, minus those allocated at its start.
    On a CPU: the process's resident memory (RSS), sampled every `interval` seconds by a thread (sampling
    more often competes with torch's own threads on a small machine), peak minus start. RSS also counts
    memory the allocator keeps for reuse, so treat CPU numbers as rough.
    """
    result = Measurement()
    device = torch.device(device)
    stop = threading.Event()
    sampler = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start_bytes = torch.cuda.memory_allocated(device)
        result.how = "peak GPU memory allocated by torch above the start"
    else:
        start_bytes = _rss_bytes() or 0
        peak = [start_bytes]

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_bytes() or 0)
                stop.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result.how = "peak resident memory (RSS) above the start, sampled"
    start = time.perf_counter()
    try:
        yield result
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            result.peak_bytes = torch.cuda.max_memory_allocated(device) - start_bytes
        result.seconds = time.perf_counter() - start
        if sampler is not None:
            stop.set()
            sampler.join()
            peak[0] = max(peak[0], _rss_bytes() or 0)
            result.peak_bytes = peak[0] - start_bytes


def requires_grad_flags(model: nn.Module) -> dict[str, bool]:
    """{parameter name: requires_grad} for every parameter of `model`."""
    return {name: bool(p.requires_grad) for name, p in model.named_parameters()}


def module_types(model: nn.Module) -> dict[str, str]:
    """{module name: class name} for every submodule of `model` (the root is "")."""
    return {name: type(module).__name__ for name, module in model.named_modules()}


def gradients(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Backpropagate (module(x) * weight).sum() from fresh gradients; {parameter name: its gradient or None}."""
    for p in module.parameters():
        p.grad = None
    (module(x) * weight).sum().backward()
    out = {name: (None if p.grad is None else p.grad.detach().clone()) for name, p in module.named_parameters()}
    for p in module.parameters():
        p.grad = None
    return out
