"""Helpers shared by the asset scripts: paths, seeding, threads, data reading, packing, saving."""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
ASSETS = HERE.parent
DATA = ASSETS / "data"
MODELS = ASSETS / "models"
TOKENIZER = ASSETS / "tokenizer"


def setup(seed: int, threads: int | None = None) -> None:
    """Seed everything and set the number of CPU threads.

    One process per model with one thread each is the fastest use of a small, busy machine: torch's
    threads wait on each other at every operation, and tiny models have many small operations. Without
    `threads`, the scripts use what the notebooks use (llmcourse.setup.threads_wanted).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    from llmcourse.setup import threads_wanted

    torch.set_num_threads(threads or threads_wanted())
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    return rows


def load_tokenizer(path: Path = TOKENIZER, post: str = "none"):
    """The shared tokenizer, wrapped for one model family (see train_tokenizer.as_transformers)."""
    from tokenizers import Tokenizer

    from train_tokenizer import as_transformers

    return as_transformers(Tokenizer.from_file(str(Path(path) / "tokenizer.json")), post)


class Packer:
    """Turn a stream of token lists into fixed-length rows (documents separated by their </s>)."""

    def __init__(self, seq_len: int):
        self.seq_len = seq_len
        self.buffer: list[int] = []

    def add(self, ids: list[int]) -> list[list[int]]:
        self.buffer.extend(ids)
        rows = []
        while len(self.buffer) >= self.seq_len:
            rows.append(self.buffer[: self.seq_len])
            self.buffer = self.buffer[self.seq_len:]
        return rows


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.1) -> float:
    """Linear warmup, then cosine decay to `floor` times the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * progress)))


def save_model(model, tokenizer, out: Path, extra: dict | None = None) -> None:
    """Save weights as safetensors, the config, the tokenizer, and the training facts (train_info.json)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if extra is not None:
        (out / "train_info.json").write_text(json.dumps(extra, indent=2) + "\n")
    # safetensors writes its file readable by its owner only; graded kernels run as other users.
    for path in out.iterdir():
        path.chmod(0o644)


class Timer:
    def __init__(self):
        self.start = time.time()

    def __call__(self) -> float:
        return time.time() - self.start


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def training_arguments(description: str, name: str, size: str, sizes, steps: int, batch_size: int, lr: float):
    """The command-line options every training script shares (defaults differ per model)."""
    import argparse

    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--tokenizer", type=Path, default=TOKENIZER)
    ap.add_argument("--out", type=Path, default=MODELS / name)
    ap.add_argument("--size", choices=sorted(sizes), default=size)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--limit", type=int, default=None, help="read at most this many rows per data file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--log-every", type=int, default=100)
    return ap


def train_step(model, opt, loss, step: int, args, running: float | None, timer) -> float:
    """One optimiser step on `loss`: the schedule's learning rate, clipped gradients; returns the
    smoothed loss and prints it every `args.log_every` steps."""
    import torch

    for group in opt.param_groups:
        group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
    if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
        print(f"step {step + 1:5d}  loss {running:.3f}  {timer():6.0f} s", flush=True)
    return running
