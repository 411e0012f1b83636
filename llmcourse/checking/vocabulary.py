"""Words every assignment's checks use: seeded random inputs, and a student's module as data.

Inputs come from a seeded generator, so that a check asks the same question on every machine and every run, and
the grader can recompute the right answer for exactly the inputs the student's code saw.
"""
from __future__ import annotations

import torch

from .api import fail


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(gen: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> torch.Tensor:
    """Normal noise times `scale`, drawn in float64 and then cast: the same values, whatever `dtype` asks for."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


def state_dict_of(module, what: str) -> dict[str, torch.Tensor]:
    """The module's state dict as data (a plain dict crosses to the checker; an OrderedDict would not)."""
    sd = module.state_dict(destination={})
    if not isinstance(sd, dict):
        fail(f"{what}.state_dict() did not return a dictionary of tensors.",
             hint="Build your modules from nn.Module and torch's own layers (nn.Linear, nn.LayerNorm, nn.Embedding), "
                  "as the notebook describes.")
    return sd


def load_weights(module, weights: dict[str, torch.Tensor], what: str, hint: str) -> None:
    """Load these weights into a student's module, with a clear message when names or shapes differ."""
    sd = state_dict_of(module, what)
    missing = [name for name in weights if name not in sd]
    if missing:
        listed = ", ".join(f"`{m}`" for m in missing[:4]) + (" ..." if len(missing) > 4 else "")
        fail(f"{what} has no parameter named {listed}, so the checks cannot give it known weights.", hint)
    for name, value in weights.items():
        if tuple(sd[name].shape) != tuple(value.shape):
            fail(f"{what}'s `{name}` has shape {tuple(sd[name].shape)}, but it should have shape "
                 f"{tuple(value.shape)}.", hint)
    module.load_state_dict(weights, strict=False)
