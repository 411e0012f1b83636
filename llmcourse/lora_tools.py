"""Scaffolding for 04_lora: measuring a training run (no solutions here).

`measure` times a block of code and records its peak memory. (The helpers the checks run in your kernel to
describe a model as plain data live in llmcourse.in_kernel.)
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import torch

__all__ = ["measure", "Measurement"]


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
