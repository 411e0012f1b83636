"""Reference solutions for 01_attention: attention from scratch, up to a GPT-2-compatible MiniGPT.

The hidden checks run these on the same inputs and weights as the student's code and compare. They are
written to be read: one small function or module per idea, shapes in comments where they change.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    # Subtracting the maximum keeps exp() in range. A slice that is all -inf has maximum -inf, and
    # -inf - (-inf) is NaN, so those slices subtract 0 instead and end up as exp(-inf) = 0 everywhere.
    top = x.amax(dim=dim, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = torch.exp(x - top)
    total = e.sum(dim=dim, keepdim=True)
    # A slice with nothing allowed sums to 0: return zeros rather than 0 / 0.
    return e / torch.where(total > 0, total, torch.ones_like(total))


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Lq, Lk)
    if mask is not None:
        # -inf, not a large negative number: exp(-inf) is exactly 0, whatever the other scores are.
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-1)
    return weights @ v, weights  # (..., Lq, dv), (..., Lq, Lk)


def causal_mask(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril()


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    lengths = torch.as_tensor(lengths)
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(-1)  # (B, max_len)


def sinusoidal_positional_encoding(n_positions: int, d_model: int) -> torch.Tensor:
    # Computed in float64 so that large positions keep their precision, returned in the default dtype.
    position = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)  # (n, 1)
    frequency = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (ceil(d/2),)
    angle = position * frequency  # (n, ceil(d/2))
    pe = torch.zeros(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)[:, : d_model // 2]
    return pe.to(torch.get_default_dtype())


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, bias: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.last_weights = None

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.n_heads, self.d_head).transpose(1, 2)  # (B, L, d) -> (B, h, L, d_head)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q = self._split_heads(self.q_proj(x))
        k = self._split_heads(self.k_proj(context))
        v = self._split_heads(self.v_proj(context))
        out, weights = scaled_dot_product_attention(q, k, v, mask)  # (B, h, Lq, d_head), (B, h, Lq, Lk)
        self.last_weights = weights.detach()
        b, lq, d = x.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, d))


class TransformerBlock(nn.Module):
    """Pre-norm decoder block: normalise, transform, add back (twice)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask=mask)
        return x + self.mlp(self.ln2(x))


class MiniGPT(nn.Module):
    def __init__(self, vocab_size: int, max_len: int, d_model: int, n_heads: int, n_layers: int, d_ff: int):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[-1]
        positions = torch.arange(n, device=input_ids.device)
        x = self.tok_emb(input_ids) + self.pos_emb(positions)  # (B, L, d)
        mask = causal_mask(n).to(input_ids.device)
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.lm_head(self.ln_f(x))  # (B, L, vocab)


@torch.no_grad()
def load_gpt2_weights(model: MiniGPT, hf_model) -> MiniGPT:
    gpt = hf_model.transformer
    d = model.tok_emb.embedding_dim
    model.tok_emb.weight.copy_(gpt.wte.weight)
    model.pos_emb.weight.copy_(gpt.wpe.weight)
    for block, hf_block in zip(model.blocks, gpt.h, strict=True):
        _copy_norm(block.ln1, hf_block.ln_1)
        _copy_norm(block.ln2, hf_block.ln_2)
        # GPT-2's Conv1D keeps its weight as (in, out); nn.Linear keeps (out, in): hence every .T below.
        # c_attn computes q, k and v in one product; its output columns are [q | k | v].
        w_q, w_k, w_v = hf_block.attn.c_attn.weight.split(d, dim=1)
        b_q, b_k, b_v = hf_block.attn.c_attn.bias.split(d)
        for linear, w, b in ((block.attn.q_proj, w_q, b_q), (block.attn.k_proj, w_k, b_k),
                             (block.attn.v_proj, w_v, b_v)):
            linear.weight.copy_(w.T)
            linear.bias.copy_(b)
        _copy_conv1d(block.attn.out_proj, hf_block.attn.c_proj)
        _copy_conv1d(block.mlp[0], hf_block.mlp.c_fc)
        _copy_conv1d(block.mlp[2], hf_block.mlp.c_proj)
    _copy_norm(model.ln_f, gpt.ln_f)
    model.lm_head.weight.copy_(hf_model.lm_head.weight)
    return model


def _copy_norm(norm: nn.LayerNorm, hf_norm: nn.LayerNorm) -> None:
    norm.weight.copy_(hf_norm.weight)
    norm.bias.copy_(hf_norm.bias)


def _copy_conv1d(linear: nn.Linear, conv) -> None:
    linear.weight.copy_(conv.weight.T)
    linear.bias.copy_(conv.bias)


def count_parameters(model: nn.Module) -> int:
    # parameters() yields a shared (tied) tensor once; buffers are not parameters at all.
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

