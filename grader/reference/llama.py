"""Reference solutions for 01b_llama: the parts of a Llama-style model, up to a MiniLlama that runs course-lm.

The hidden checks run these on the same inputs and weights as the student's code and compare. They are
written to be read: one small function or module per idea, shapes in comments where they change.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x divided by the root mean square of its last dimension (plus eps under the root), times weight."""
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate dimension i with dimension i + d/2 of each row of x (..., L, d) by the angle position * base^(-2i/d)."""
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=x.dtype, device=x.device) / d)  # (d/2,)
    angle = positions.to(x.dtype)[:, None] * inv_freq  # (L, d/2)
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    # Each pair (x1[i], x2[i]) turns by its angle: the 2-D rotation [[cos, -sin], [sin, cos]].
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class SwiGLU(nn.Module):
    """The gated MLP: down_proj(silu(gate_proj(x)) * up_proj(x)), no biases."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class RMSNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class RopeAttention(nn.Module):
    """Causal multi-head self-attention whose queries and keys are rotated by their positions."""

    def __init__(self, d_model: int, n_heads: int, rope_base: float = 10000.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.d_head, self.rope_base = n_heads, d_model // n_heads, rope_base
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def heads(t):  # (B, L, d) -> (B, h, L, d_head)
            return t.view(b, n, self.n_heads, self.d_head).transpose(1, 2)

        # RoPE turns each head's queries and keys, never the values.
        q = apply_rope(heads(self.q_proj(x)), positions, self.rope_base)
        k = apply_rope(heads(self.k_proj(x)), positions, self.rope_base)
        v = heads(self.v_proj(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)  # (B, h, L, L)
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        return self.o_proj((weights @ v).transpose(1, 2).reshape(b, n, d))


class LlamaBlock(nn.Module):
    """Pre-norm decoder block: x + attn(attn_norm(x)), then + mlp(mlp_norm(x))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, eps: float = 1e-5, rope_base: float = 10000.0):
        super().__init__()
        self.attn_norm = RMSNorm(d_model, eps)
        self.attn = RopeAttention(d_model, n_heads, rope_base)
        self.mlp_norm = RMSNorm(d_model, eps)
        self.mlp = SwiGLU(d_model, d_ff)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), positions)
        return x + self.mlp(self.mlp_norm(x))


class MiniLlama(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, n_heads: int, n_layers: int, d_ff: int, eps: float = 1e-5,
                 rope_base: float = 10000.0):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(LlamaBlock(d_model, n_heads, d_ff, eps, rope_base) for _ in range(n_layers))
        self.norm = RMSNorm(d_model, eps)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied: one matrix reads tokens in and writes them out

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.tok_emb(input_ids)  # (B, L, d); no position vectors: RoPE works inside attention
        for block in self.blocks:
            x = block(x, positions)
        return self.lm_head(self.norm(x))  # (B, L, vocab)


@torch.no_grad()
def load_course_lm_weights(model: MiniLlama, hf_model) -> MiniLlama:
    llama = hf_model.model
    model.tok_emb.weight.copy_(llama.embed_tokens.weight)  # lm_head shares this tensor
    for block, layer in zip(model.blocks, llama.layers, strict=True):
        block.attn_norm.weight.copy_(layer.input_layernorm.weight)
        block.mlp_norm.weight.copy_(layer.post_attention_layernorm.weight)
        # Llama's layers are nn.Linear like ours: (out, in), copied as they are.
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            getattr(block.attn, name).weight.copy_(getattr(layer.self_attn, name).weight)
        for name in ("gate_proj", "up_proj", "down_proj"):
            getattr(block.mlp, name).weight.copy_(getattr(layer.mlp, name).weight)
    model.norm.weight.copy_(llama.norm.weight)
    return model
