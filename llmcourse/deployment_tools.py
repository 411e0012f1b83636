"""Helpers for 07_deployment: a course benchmark, timing, sizes on disk, a small student, the scaling sweep.

None of these is an exercise: they set up the measurements, so that the notebook's cells show what is measured
rather than how the bookkeeping is done.
"""
from __future__ import annotations

import copy
import io
import json
import random
import statistics
import time

import torch
import torch.nn.functional as F

from .applications_tools import generate_batch, table  # (the same batched greedy decoding and tables as 06)
from .assets import REBUILD, AssetError, _verify, assets_dir, format_few_shot, load_task

__all__ = ["BENCHMARK_FAMILIES", "course_benchmark", "generate_batch", "held_out_stories", "logits_of",
           "ms_per_token", "next_token_cross_entropy", "packed_rows", "scaling_runs", "size_mb", "small_student",
           "table", "train_student"]

# Few-shot families of the `fewshot` data set whose outputs come from a set of four: a four-way benchmark.
BENCHMARK_FAMILIES = ("colour", "colour_mix", "kind", "letter", "nonsense")


def course_benchmark(n: int = 100, shots: int = 4, seed: int = 0) -> list[dict]:
    """`n` four-way multiple-choice items, MMLU-style, from the held-out split of `fewshot`.

    Each item is {"prompt", "choices", "answer", "family"}: the prompt shows `shots` solved examples of one family
    and a new input; the choices are the family's four possible outputs, each with the leading space that follows
    "Output:"; "answer" is the index of the right one."""
    rng = random.Random(seed)
    rows = [r for r in load_task("fewshot", "test") if r["task"] in BENCHMARK_FAMILIES]
    by_family: dict[str, list[dict]] = {}
    for row in rows:
        by_family.setdefault(row["task"], []).append(row)
    labels = {family: sorted({r["output"] for r in group}) for family, group in by_family.items()}
    items = []
    for i in range(n):
        family = BENCHMARK_FAMILIES[i % len(BENCHMARK_FAMILIES)]
        *examples, query = rng.sample(by_family[family], shots + 1)
        choices = [" " + label for label in labels[family]]
        items.append({"prompt": format_few_shot(examples, query["input"]), "choices": choices,
                      "answer": labels[family].index(query["output"]), "family": family})
    return items


def held_out_stories(n: int = 100) -> list[str]:
    """The first `n` stories of the test split: text no course model was trained on."""
    return list(load_task("stories", "test")["text"][:n])


def size_mb(model) -> float:
    """Megabytes of the model's state dict as torch.save writes it (what a checkpoint costs on disk)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 1e6


@torch.no_grad()
def ms_per_token(model, tokenizer, prompt: str = "Once upon a time", new_tokens: int = 32, repeats: int = 5) -> float:
    """Median milliseconds per generated token (greedy, batch of one, with the KV cache), after one warm-up run."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(next(model.parameters(), torch.zeros(1)).device)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  pad_token_id=tokenizer.pad_token_id)
    model.generate(ids, **kwargs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.generate(ids, **kwargs)
        times.append((time.perf_counter() - start) / new_tokens * 1000)
    return statistics.median(times)


def packed_rows(tokenizer, texts: list[str], seq_len: int = 128) -> torch.Tensor:
    """Texts joined by </s> and cut into rows of `seq_len` tokens (the last, partial row is dropped)."""
    ids: list[int] = []
    for row in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        ids.extend(row + [tokenizer.eos_token_id])
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)


def small_student(teacher, hidden_size: int = 64, layers: int = 2, seed: int = 0):
    """A fresh, smaller model of the teacher's family and vocabulary (random weights, from `seed`)."""
    config = copy.deepcopy(teacher.config)
    heads = max(1, hidden_size // 32)
    config.hidden_size, config.num_hidden_layers = hidden_size, layers
    config.num_attention_heads = config.num_key_value_heads = heads
    config.head_dim = hidden_size // heads
    config.intermediate_size = 3 * hidden_size
    torch.manual_seed(seed)
    return type(teacher)(config)


@torch.no_grad()
def logits_of(model, rows: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """The model's logits for every row, computed once (a teacher's answers, stored for offline distillation)."""
    model.eval()
    return torch.cat([model(input_ids=rows[i:i + batch_size]).logits for i in range(0, len(rows), batch_size)])


def train_student(student, rows: torch.Tensor, steps: int, loss_fn, teacher_logits: torch.Tensor | None = None,
                  batch_size: int = 8, lr: float = 3e-3, seed: int = 0, progress: str | None = None) -> list[float]:
    """Train `student` for `steps` AdamW steps on batches of `rows` (the same batches for any loss_fn and seed).

    loss_fn(student_logits, teacher_logits, labels) -> scalar, where teacher_logits are the rows of
    `teacher_logits` in the batch (None without a teacher). Returns the loss of every step. With `progress`, a
    progress bar with that label shows the steps."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    warm = max(1, steps // 10)
    student.train()
    losses = []
    for step in tqdm(range(steps), desc=progress, disable=progress is None, mininterval=1):
        for group in opt.param_groups:  # linear warmup over 10% of the steps, then linear decay
            group["lr"] = lr * min((step + 1) / warm, (steps - step) / max(1, steps - warm))
        index = torch.randint(len(rows), (batch_size,), generator=gen)
        batch = rows[index]
        teacher = None if teacher_logits is None else teacher_logits[index]
        loss = loss_fn(student(input_ids=batch).logits, teacher, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    student.eval()
    return losses


def next_token_cross_entropy(student_logits, teacher_logits, labels):
    """Training on the labels alone (the teacher's logits are ignored): the shifted cross-entropy."""
    vocab = student_logits.shape[-1]
    return F.cross_entropy(student_logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1), ignore_index=-100)


def scaling_runs() -> list[dict]:
    """The runs of the scaling-law sweep (assets/data/scaling/runs.json): {"params", "tokens", "loss", ...} each."""
    root = assets_dir()
    path = root / "data" / "scaling" / "runs.json"
    if not path.is_file():
        raise AssetError(f"The scaling-law sweep is missing ({path}). {REBUILD}")
    _verify(root, path.parent, "scaling-law sweep")
    return json.loads(path.read_text())["runs"]
