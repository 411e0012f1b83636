"""Reference solutions for 04b_finetuning (the same code as the source notebook's solution cells).

The hidden checks run these in the grader, next to the student's code in the kernel, on the same inputs.
"""
from __future__ import annotations

import torch


def instruction_labels(prompt_ids: list[int], response_ids: list[int]) -> tuple[list[int], list[int]]:
    input_ids = list(prompt_ids) + list(response_ids)
    # -100 is the label transformers' loss skips: the prompt is read, never predicted.
    labels = [-100] * len(prompt_ids) + list(response_ids)
    return input_ids, labels


def _replay_count(n_task: int, replay_fraction: float) -> int:
    """How many replay rows make up `replay_fraction` of a mixed data set with `n_task` task rows."""
    return round(replay_fraction * n_task / (1 - replay_fraction))


def mixed_dataset(task_rows: list, replay_rows: list, replay_fraction: float, seed: int = 0) -> list:
    if not 0 <= replay_fraction < 1:
        raise ValueError(f"replay_fraction must be at least 0 and below 1, not {replay_fraction}")
    k = _replay_count(len(task_rows), replay_fraction)
    if k > len(replay_rows):
        raise ValueError(f"{k} replay rows are needed, but only {len(replay_rows)} were given")
    chosen = torch.randperm(len(replay_rows), generator=torch.Generator().manual_seed(seed))[:k].tolist()
    return list(task_rows) + [replay_rows[i] for i in chosen]
