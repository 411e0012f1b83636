"""Scaffolding for 03_prompting: counting a model's forward passes (no solutions in here).

    counter = ForwardCounter(model)      # from now on, every forward pass of `model` is recorded
    ids = generate_with_cache(model, prompt_ids, 8)
    counter.lengths                      # input length of each pass, e.g. [12, 1, 1, 1, 1, 1, 1, 1]
    counter.remove()

The hook sits on the model's input embedding, so it sees every pass however the model is called
(`model(...)`, `model.forward(...)`, `model.model(...)` then the head). The checks use it the same way.
"""
from __future__ import annotations

from typing import Any

import torch


class ForwardCounter:
    """Records the token ids fed to `model` in each forward pass, until `remove()`."""

    def __init__(self, model: torch.nn.Module):
        embedding = model.get_input_embeddings()
        if embedding is None:
            raise ValueError("ForwardCounter needs a model with an input embedding (get_input_embeddings()).")
        self.lengths: list[int] = []
        self.batch_sizes: list[int] = []
        self.token_ids: list[list[list[int]]] = []
        self._handle = embedding.register_forward_pre_hook(self._record)

    def _record(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        ids = args[0] if args else None
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().reshape(-1, ids.shape[-1]) if ids.dim() else ids.reshape(1, 1)
            self.lengths.append(int(ids.shape[-1]))
            self.batch_sizes.append(int(ids.shape[0]))
            self.token_ids.append(ids.cpu().tolist())

    @property
    def calls(self) -> int:
        return len(self.lengths)

    def reset(self) -> None:
        self.lengths.clear()
        self.batch_sizes.clear()
        self.token_ids.clear()

    def remove(self) -> None:
        self._handle.remove()

    def __enter__(self) -> "ForwardCounter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
