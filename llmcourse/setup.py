"""The first cell of every notebook: `device = notebook_setup()`."""
from __future__ import annotations

import logging
import os
import random
import warnings

import numpy as np
import torch


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and torch so that a notebook gives the same numbers every run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def threads_wanted() -> int:
    """The CPU threads torch uses in the course's notebooks and scripts: LLMCOURSE_THREADS, else 1."""
    try:
        return max(1, int(os.environ.get("LLMCOURSE_THREADS", "1") or 1))
    except ValueError:
        return 1


def get_device() -> torch.device:
    """The GPU when there is one (set LLMCOURSE_DEVICE=cpu to refuse it), else the CPU."""
    wanted = os.environ.get("LLMCOURSE_DEVICE", "").strip().lower()
    if wanted:
        return torch.device(wanted)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def apply_gpu_memory_cap() -> None:
    """Honour the grader's per-kernel GPU memory share (LLMCOURSE_GPU_MEMORY_FRACTION), if it set one."""
    fraction = os.environ.get("LLMCOURSE_GPU_MEMORY_FRACTION")
    if fraction and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(float(fraction))


def notebook_setup(seed: int = 0) -> torch.device:
    """Seed everything, quiet the libraries' chatter, pick the device, and say which one it is."""
    set_seed(seed)
    # Library warnings and progress bars go to stderr; they are noise for a learner reading the notebook.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    for name in ("transformers", "datasets", "huggingface_hub", "accelerate", "peft", "trl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import matplotlib.pyplot as plt

        plt.rcParams.update({"figure.figsize": (6, 4), "figure.dpi": 100, "axes.grid": True})
    except ImportError:  # plotting is optional for the grader's kernels
        pass
    device = get_device()
    apply_gpu_memory_cap()
    if device.type == "cpu":
        # The course's models are tiny: splitting each matrix product over several threads saves little on a
        # quiet machine, and on a busy one (a shared hub, a grading server) the threads wait on each other, up
        # to 50 times slower (measured here). LLMCOURSE_THREADS=N gives N threads to a bigger model.
        torch.set_num_threads(threads_wanted())
    if device.type == "cuda":
        print(f"Using the GPU: {torch.cuda.get_device_name(device)}")
    else:
        threads = torch.get_num_threads()
        print(f"Using the CPU ({threads} thread{'' if threads == 1 else 's'}). Everything in this course runs here.")
    return device
