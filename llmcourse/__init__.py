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

from .checking.notebook import check  # noqa: E402
from .setup import get_device, notebook_setup, set_seed  # noqa: E402

__all__ = ["check", "get_device", "notebook_setup", "set_seed"]
__version__ = "0.1.0"
