"""The student side of the course: notebook setup, device choice, seeding, and `check()`.

Everything here may be read by students. Hidden checks and reference solutions live in `grader`,
which the student package never contains.
"""
from __future__ import annotations

import os

# Nothing in the course may wait on a model hub; set before transformers is imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

__all__ = ["check", "get_device", "notebook_setup", "set_seed"]
__version__ = "0.1.0"

# Loaded on first use, so that tools that only need a light part of the package (the grader's command line,
# its class-grading process) do not pay for importing torch.
_LAZY = {"check": ".checking_entry", "get_device": ".setup", "notebook_setup": ".setup", "set_seed": ".setup"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'llmcourse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
