"""What the 01_attention checks, visible and hidden, both use: random weights with the contract's names and
shapes, loading them into the student's modules, and a transformers GPT-2 holding known weights.

The checks (grader.checks.attention) import these helpers from here, and so does the students' copy of the visible
checks (llmcourse.checks.attention), with which this module ships.
"""
from __future__ import annotations

import math

import torch

from llmcourse.checking import generator


# -- weights by name -------------------------------------------------------------------------------

def mha_shapes(d_model: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        shapes[f"{name}.weight"] = (d_model, d_model)
        if bias:
            shapes[f"{name}.bias"] = (d_model,)
    return shapes


def block_shapes(d_model: int, d_ff: int) -> dict[str, tuple[int, ...]]:
    d = d_model
    return {"ln1.weight": (d,), "ln1.bias": (d,),
            **{f"attn.{k}": s for k, s in mha_shapes(d).items()},
            "ln2.weight": (d,), "ln2.bias": (d,),
            "mlp.0.weight": (d_ff, d), "mlp.0.bias": (d_ff,), "mlp.2.weight": (d, d_ff), "mlp.2.bias": (d,)}


def minigpt_shapes(vocab_size: int, max_len: int, d_model: int, n_layers: int, d_ff: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"tok_emb.weight": (vocab_size, d_model), "pos_emb.weight": (max_len, d_model)}
    for i in range(n_layers):
        shapes.update({f"blocks.{i}.{k}": s for k, s in block_shapes(d_model, d_ff).items()})
    shapes.update({"ln_f.weight": (d_model,), "ln_f.bias": (d_model,), "lm_head.weight": (vocab_size, d_model)})
    return shapes


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Weights of a sensible size for every name: LayerNorm gains near 1, small biases, unit-scale activations."""
    gen = generator(seed)
    weights = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        module = name.rsplit(".", 2)[-2] if name.count(".") else ""
        if module.startswith("ln") and name.endswith(".weight"):
            value = 1.0 + 0.2 * noise
        elif name.endswith(".bias"):
            value = 0.2 * noise
        elif "emb" in module:
            value = noise
        else:
            value = noise / math.sqrt(shape[-1])
        weights[name] = value.to(dtype)
    return weights



# -- GPT-2 with known weights ----------------------------------------------------------------------

def gpt2_config(vocab_size: int, n_positions: int, d_model: int, n_heads: int, n_layers: int, d_ff: int,
                tie: bool = True) -> dict:
    """GPT2Config arguments for a GPT-2 that MiniGPT can copy exactly: exact GELU, eps 1e-5, no dropout."""
    return dict(vocab_size=vocab_size, n_positions=n_positions, n_embd=d_model, n_head=n_heads, n_layer=n_layers,
                n_inner=d_ff, activation_function="gelu", layer_norm_epsilon=1e-5, resid_pdrop=0.0,
                embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, tie_word_embeddings=tie)


def gpt2_weights(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """Random weights with GPT-2's names and layouts (Conv1D weights are (in, out))."""
    from transformers import GPT2Config, GPT2LMHeadModel

    shapes = {k: tuple(v.shape) for k, v in GPT2LMHeadModel(GPT2Config(**config)).state_dict().items()}
    gen = generator(seed)
    weights = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        if ".ln_" in name and name.endswith(".weight"):
            value = 1.0 + 0.2 * noise
        elif name.endswith(".bias"):
            value = 0.2 * noise
        elif name.startswith("transformer.w"):
            value = noise
        else:
            fan_in = shape[1] if name == "lm_head.weight" else shape[0]  # Conv1D: (in, out); Linear: (out, in)
            value = noise / math.sqrt(fan_in)
        weights[name] = value.float()
    if config.get("tie_word_embeddings", True):
        weights["lm_head.weight"] = weights["transformer.wte.weight"]
    return weights


def gpt2_logits(config: dict, weights: dict[str, torch.Tensor], input_ids: torch.Tensor) -> torch.Tensor:
    """The logits of transformers' own GPT2LMHeadModel with these weights (computed here, not by the student)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(**config))
    model.load_state_dict(weights)
    model.eval()
    with torch.no_grad():
        return model(input_ids).logits


def student_gpt2(student, config: dict, weights: dict[str, torch.Tensor]):
    """A GPT2LMHeadModel with these weights, built inside the student's kernel."""
    hf = student.construct("transformers.GPT2LMHeadModel", student.construct("transformers.GPT2Config", **config))
    hf.load_state_dict(weights)
    hf.eval()
    return hf
