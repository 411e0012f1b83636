"""01_attention: the cases its checks are tried against (see tests/specs/__init__.py for the form).

A case of a module exercise subclasses the notebook's own class (named like it, as a student's later cell
would be) and replaces what it gets wrong; a class's case name is given with `name=`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from grader.reference.attention import (MiniGPT, MultiHeadAttention, TransformerBlock, causal_mask,
                                        load_gpt2_weights as _load_right, scaled_dot_product_attention, softmax)
from tests.specs import Spec

SPEC = Spec(
    "01_attention",
    depends_on={
        "softmax": set(),
        "scaled_dot_product_attention": {"softmax"},
        "causal_mask": set(),
        "padding_mask": set(),
        "sinusoidal_positional_encoding": set(),
        "multi_head_attention": {"scaled_dot_product_attention"},
        "transformer_block": {"multi_head_attention"},
        "mini_gpt": {"transformer_block", "causal_mask"},
        "load_gpt2_weights": {"mini_gpt"},
        "count_parameters": set(),
    },
    solution_names={"multi_head_attention": "MultiHeadAttention", "transformer_block": "TransformerBlock",
                    "mini_gpt": "MiniGPT"},
    # The load_gpt2_weights checks build a MiniGPT to load into.
    used_by_checks={"load_gpt2_weights": {"mini_gpt"}},
)


# -- softmax ----------------------------------------------------------------------------------------------

@SPEC.mutant("softmax", hint="Subtract the maximum of the slice first", name="no max subtraction (overflows)")
def no_max_subtraction(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


@SPEC.mutant("softmax", hint="along another dim")
def always_the_last_dim(x, dim=-1):
    top = x.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = torch.exp(x - top)
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


@SPEC.mutant("softmax", hint="Where the maximum is -inf, subtract 0 instead", name="NaN for fully masked rows")
def nan_for_fully_masked_rows(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


@SPEC.mutant("softmax", hint="no .float() or dtype=torch.float32 inside softmax")
def computes_in_float32(x, dim=-1):
    x = x.float()
    top = x.amax(dim=dim, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = torch.exp(x - top)
    total = e.sum(dim=dim, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


@SPEC.mutant("softmax", hint="not in place (x -= m")
def subtracts_the_max_in_place(x, dim=-1):
    top = x.amax(dim=dim, keepdim=True)
    x.sub_(torch.where(torch.isfinite(top), top, torch.zeros_like(top)))
    e = torch.exp(x)
    total = e.sum(dim=dim, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


@SPEC.alternative("softmax", name="log-sum-exp")
def log_sum_exp(x, dim=-1):
    lse = torch.logsumexp(x, dim=dim, keepdim=True)
    return torch.exp(x - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)))


@SPEC.alternative("softmax", name="move the dim last, then nan_to_num")
def move_the_dim_last_then_nan_to_num(x, dim=-1):
    z = x.movedim(dim, -1)
    e = torch.exp(z - z.max(dim=-1, keepdim=True).values)
    return torch.nan_to_num(e / e.sum(-1, keepdim=True), nan=0.0).movedim(-1, dim)


# -- scaled_dot_product_attention -------------------------------------------------------------------------

@SPEC.mutant("scaled_dot_product_attention", name="no sqrt(d) scaling", hint="not scaled")
def no_scaling(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-1)
    return weights @ v, weights


@SPEC.mutant("scaled_dot_product_attention", hint="The scores are divided by d")
def scaled_by_d(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / q.shape[-1]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-1)
    return weights @ v, weights


@SPEC.mutant("scaled_dot_product_attention", hint="over the queries")
def softmax_over_the_queries(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-2)
    return weights @ v, weights


@SPEC.mutant("scaled_dot_product_attention", hint="wrong way round")
def mask_inverted(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    weights = softmax(scores, dim=-1)
    return weights @ v, weights


@SPEC.mutant("scaled_dot_product_attention", hint="not a large negative number",
             name="-1e9 without zeroing fully masked rows")
def large_negative_fill_without_zeroing_fully_masked_rows(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, -1e9)
    weights = softmax(scores, dim=-1)
    return weights @ v, weights


@SPEC.mutant("scaled_dot_product_attention", hint="NaN is what torch.softmax (and F.softmax) give",
             name="torch.softmax gives NaN rows")
def torch_softmax_gives_nan_rows(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


@SPEC.alternative("scaled_dot_product_attention")
def einsum(q, k, v, mask=None):
    scores = torch.einsum("...qd,...kd->...qk", q, k) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = torch.where(mask, scores, torch.tensor(float("-inf"), dtype=scores.dtype))
    weights = softmax(scores)
    return torch.einsum("...qk,...kv->...qv", weights, v), weights


@SPEC.alternative("scaled_dot_product_attention", name="large negative fill, then zero the masked weights")
def large_negative_fill_then_zero_the_masked_weights(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)  # a fully masked row would otherwise be uniform
    return weights @ v, weights


@SPEC.alternative("scaled_dot_product_attention")
def computed_in_float64(q, k, v, mask=None):
    dtype = q.dtype
    q, k, v = q.double(), k.double(), v.double()
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-1)
    return (weights @ v).to(dtype), weights.to(dtype)


# -- causal_mask ------------------------------------------------------------------------------------------

@SPEC.mutant("causal_mask", hint="diagonal is missing")
def diagonal_excluded(n):
    return torch.ones(n, n, dtype=torch.bool).tril(-1)


@SPEC.mutant("causal_mask", hint="This is the upper triangle")
def upper_triangle(n):
    return torch.ones(n, n, dtype=torch.bool).triu()


@SPEC.mutant("causal_mask", hint="Create it with dtype=torch.bool", name="float 0/1 mask")
def float_mask(n):
    return torch.ones(n, n).tril()


@SPEC.mutant("causal_mask", hint="inverted")
def inverted(n):
    return torch.ones(n, n, dtype=torch.bool).triu(1)


@SPEC.alternative("causal_mask")
def compare_indices(n):
    i = torch.arange(n)
    return i[:, None] >= i[None, :]


@SPEC.alternative("causal_mask")
def python_loops(n):
    return torch.tensor([[j <= i for j in range(n)] for i in range(n)], dtype=torch.bool).reshape(n, n)


@SPEC.alternative("causal_mask")
def not_the_strict_upper_triangle(n):
    return ~torch.ones(n, n, dtype=torch.bool).triu(1)


# -- padding_mask -----------------------------------------------------------------------------------------

@SPEC.mutant("padding_mask", name="<= instead of <", hint="j < length")
def less_or_equal(lengths, max_len):
    return torch.arange(max_len) <= lengths[:, None]


@SPEC.mutant("padding_mask", name="True at padding", hint="inverted")
def true_at_padding(lengths, max_len):
    return torch.arange(max_len) >= lengths[:, None]


@SPEC.mutant("padding_mask", hint="not lengths.max()")
def width_from_the_longest_sequence(lengths, max_len):
    return torch.arange(int(lengths.max())) < lengths[:, None]


@SPEC.mutant("padding_mask", hint="The mask holds 0/1 integers", name="0/1 integers")
def integers(lengths, max_len):
    return (torch.arange(max_len) < lengths[:, None]).long()


@SPEC.alternative("padding_mask")
def python_loop(lengths, max_len):
    mask = torch.zeros(len(lengths), max_len, dtype=torch.bool)
    for b, n in enumerate(lengths.tolist()):
        mask[b, :n] = True
    return mask


@SPEC.alternative("padding_mask")
def cumulative_count(lengths, max_len):
    count = torch.ones(len(lengths), max_len, dtype=torch.long).cumsum(dim=1)  # 1, 2, ..., max_len
    return count <= lengths.long().unsqueeze(1)


# -- sinusoidal_positional_encoding -----------------------------------------------------------------------

@SPEC.mutant("sinusoidal_positional_encoding", hint="swapped")
def sin_and_cos_swapped(n_positions, d_model):
    angle = torch.arange(n_positions)[:, None] * 10000.0 ** (-torch.arange(0, d_model, 2) / d_model)
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.cos(angle), torch.sin(angle)
    return pe


@SPEC.mutant("sinusoidal_positional_encoding", hint="10000")
def base_1000(n_positions, d_model):
    angle = torch.arange(n_positions)[:, None] * 1000.0 ** (-torch.arange(0, d_model, 2) / d_model)
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe


@SPEC.mutant("sinusoidal_positional_encoding", hint="it should be 2i / d_model", name="exponent i/d instead of 2i/d")
def exponent_i_over_d(n_positions, d_model):
    angle = torch.arange(n_positions)[:, None] * 10000.0 ** (-torch.arange(d_model // 2) / d_model)
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe


@SPEC.mutant("sinusoidal_positional_encoding", hint="The sines and cosines are in two halves")
def sines_then_cosines_in_halves(n_positions, d_model):
    angle = torch.arange(n_positions)[:, None] * 10000.0 ** (-torch.arange(0, d_model, 2) / d_model)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


@SPEC.mutant("sinusoidal_positional_encoding", hint="Positions start at 0, not 1", name="positions from 1")
def encoded_positions_from_1(n_positions, d_model):
    angle = torch.arange(1, n_positions + 1)[:, None] * 10000.0 ** (-torch.arange(0, d_model, 2) / d_model)
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe


@SPEC.alternative("sinusoidal_positional_encoding", name="exp-log in float32")
def exp_log_in_float32(n_positions, d_model):
    position = torch.arange(n_positions, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe


@SPEC.alternative("sinusoidal_positional_encoding")
def python_math_loops(n_positions, d_model):
    rows = []
    for p in range(n_positions):
        row = []
        for i in range(0, d_model, 2):
            angle = p / 10000 ** (i / d_model)
            row += [math.sin(angle), math.cos(angle)]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32).reshape(n_positions, d_model)


# -- multi_head_attention ---------------------------------------------------------------------------------

@SPEC.mutant("multi_head_attention", name="heads split in the wrong order", hint="wrong order")
class HeadsSplitInTheWrongOrder(MultiHeadAttention):
    def forward(self, x, context=None, mask=None):
        context = x if context is None else context
        b, lq, d = x.shape
        lk = context.shape[1]
        q = self.q_proj(x).reshape(b, self.n_heads, lq, self.d_head)
        k = self.k_proj(context).reshape(b, self.n_heads, lk, self.d_head)
        v = self.v_proj(context).reshape(b, self.n_heads, lk, self.d_head)
        out, weights = scaled_dot_product_attention(q, k, v, mask)
        self.last_weights = weights.detach()
        return self.out_proj(out.reshape(b, lq, d))


@SPEC.mutant("multi_head_attention", name="no out_proj", hint="output projection")
class NoOutProj(MultiHeadAttention):
    def forward(self, x, context=None, mask=None):
        context = x if context is None else context
        b, lq, d = x.shape
        lk = context.shape[1]
        q = self.q_proj(x).view(b, lq, self.n_heads, self.d_head).transpose(1, 2)
        k = self.k_proj(context).view(b, lk, self.n_heads, self.d_head).transpose(1, 2)
        v = self.v_proj(context).view(b, lk, self.n_heads, self.d_head).transpose(1, 2)
        out, weights = scaled_dot_product_attention(q, k, v, mask)
        self.last_weights = weights.detach()
        return out.transpose(1, 2).reshape(b, lq, d)


@SPEC.mutant("multi_head_attention", name="scaled by sqrt(d_model)", hint="sqrt(d_head)")
class ScaledBySqrtDModel(MultiHeadAttention):
    def forward(self, x, context=None, mask=None):
        context = x if context is None else context
        b, lq, d = x.shape
        lk = context.shape[1]
        q = self.q_proj(x).view(b, lq, self.n_heads, self.d_head).transpose(1, 2)
        k = self.k_proj(context).view(b, lk, self.n_heads, self.d_head).transpose(1, 2)
        v = self.v_proj(context).view(b, lk, self.n_heads, self.d_head).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = softmax(scores)
        self.last_weights = weights.detach()
        return self.out_proj((weights @ v).transpose(1, 2).reshape(b, lq, d))


@SPEC.mutant("multi_head_attention", hint="keys and values come from the context", name="context ignored")
class ContextIgnored(MultiHeadAttention):
    def forward(self, x, context=None, mask=None):
        b, lq, d = x.shape
        q, k, v = (p(x).view(b, lq, self.n_heads, self.d_head).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        out, weights = scaled_dot_product_attention(q, k, v, mask if context is None else None)
        self.last_weights = weights.detach()
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, d))


@SPEC.mutant("multi_head_attention", hint="not an average", name="last_weights averaged over heads")
class LastWeightsAveragedOverHeads(MultiHeadAttention):
    def forward(self, x, context=None, mask=None):
        out = super().forward(x, context=context, mask=mask)
        self.last_weights = self.last_weights.mean(1)
        return out


@SPEC.mutant("multi_head_attention", name="mask ignored", hint="mask is not used")
class MaskIgnored(MultiHeadAttention):
    def forward(self, x, context=None, mask=None):
        return super().forward(x, context=context)


@SPEC.alternative("multi_head_attention", name="one head at a time")
class OneHeadAtATime(MultiHeadAttention):
    def forward(self, x, context=None, mask=None):
        context = x if context is None else context
        b, lq, d = x.shape
        q, k, v = self.q_proj(x), self.k_proj(context), self.v_proj(context)
        if mask is not None:
            mask = torch.broadcast_to(mask, (b, self.n_heads, lq, context.shape[1]))
        outs, weights = [], []
        for h in range(self.n_heads):
            part = slice(h * self.d_head, (h + 1) * self.d_head)
            out, w = scaled_dot_product_attention(q[..., part], k[..., part], v[..., part],
                                                  None if mask is None else mask[:, h])
            outs.append(out)
            weights.append(w)
        self.last_weights = torch.stack(weights, dim=1).detach()
        return self.out_proj(torch.cat(outs, dim=-1))


@SPEC.alternative("multi_head_attention", name="unflatten and einsum")
class UnflattenAndEinsum(MultiHeadAttention):
    def forward(self, x, context=None, mask=None):
        context = x if context is None else context

        def split(t):  # (B, L, d) -> (B, h, L, d_head)
            return t.unflatten(-1, (self.n_heads, self.d_head)).permute(0, 2, 1, 3)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(context)), split(self.v_proj(context))
        scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(self.d_head)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = softmax(scores)
        self.last_weights = weights.detach()
        out = torch.einsum("bhqk,bhkd->bqhd", weights, v).flatten(2)
        return self.out_proj(out)


# -- transformer_block ------------------------------------------------------------------------------------

@SPEC.mutant("transformer_block", name="post-norm", hint="post-norm")
class PostNorm(TransformerBlock):
    def forward(self, x, mask=None):
        x = self.ln1(x + self.attn(x, mask=mask))
        return self.ln2(x + self.mlp(x))


@SPEC.mutant("transformer_block", name="no residual around attention", hint="residual connection is missing")
class NoResidualAroundAttention(TransformerBlock):
    def forward(self, x, mask=None):
        x = self.attn(self.ln1(x), mask=mask)
        return x + self.mlp(self.ln2(x))


@SPEC.mutant("transformer_block", name="ReLU instead of GELU", hint="ReLU")
class ReluInsteadOfGelu(TransformerBlock):
    def __init__(self, d_model, n_heads, d_ff):
        super().__init__(d_model, n_heads, d_ff)
        self.mlp[1] = nn.ReLU()


@SPEC.mutant("transformer_block", hint="tanh approximation of GELU", name="tanh approximation of GELU")
class TanhApproximationOfGelu(TransformerBlock):
    def __init__(self, d_model, n_heads, d_ff):
        super().__init__(d_model, n_heads, d_ff)
        self.mlp[1] = nn.GELU(approximate="tanh")


@SPEC.mutant("transformer_block", name="mask not passed on", hint="not passed on")
class MaskNotPassedOn(TransformerBlock):
    def forward(self, x, mask=None):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


@SPEC.mutant("transformer_block", hint="ln1 and ln2 are swapped", name="norms swapped")
class NormsSwapped(TransformerBlock):
    def forward(self, x, mask=None):
        x = x + self.attn(self.ln2(x), mask=mask)
        return x + self.mlp(self.ln1(x))


@SPEC.alternative("transformer_block", name="named sublayers")
class NamedSublayers(TransformerBlock):
    def _attend(self, x, mask):
        return self.attn(self.ln1(x), context=None, mask=mask)

    def _feed_forward(self, x):
        return self.mlp(self.ln2(x))

    def forward(self, x, mask=None):
        x = x + self._attend(x, mask)
        x = x + self._feed_forward(x)
        return x


@SPEC.alternative("transformer_block", name="explicit GELU and a 4-D mask")
class ExplicitGeluAndA4dMask(TransformerBlock):
    def __init__(self, d_model, n_heads, d_ff):
        super().__init__(d_model, n_heads, d_ff)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(approximate="none"), nn.Linear(d_ff, d_model))

    def forward(self, x, mask=None):
        if mask is not None and mask.dim() == 2:
            mask = mask[None, None]  # (1, 1, L, L)
        h = self.ln1(x)
        x = x + self.attn(h, mask=mask)
        h = self.ln2(x)
        return x + self.mlp(h)


# -- mini_gpt ---------------------------------------------------------------------------------------------

@SPEC.mutant("mini_gpt", name="not causal", hint="not causal")
class NotCausal(MiniGPT):
    def forward(self, input_ids):
        x = self.tok_emb(input_ids) + self.pos_emb(torch.arange(input_ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


@SPEC.mutant("mini_gpt", name="positions added after the blocks", hint="before the first block")
class PositionsAddedAfterTheBlocks(MiniGPT):
    def forward(self, input_ids):
        n = input_ids.shape[1]
        x = self.tok_emb(input_ids)
        for block in self.blocks:
            x = block(x, mask=causal_mask(n))
        return self.lm_head(self.ln_f(x + self.pos_emb(torch.arange(n))))


@SPEC.mutant("mini_gpt", name="no final LayerNorm", hint="final LayerNorm")
class NoFinalLayerNorm(MiniGPT):
    def forward(self, input_ids):
        n = input_ids.shape[1]
        x = self.tok_emb(input_ids) + self.pos_emb(torch.arange(n))
        for block in self.blocks:
            x = block(x, mask=causal_mask(n))
        return self.lm_head(x)


@SPEC.mutant("mini_gpt", hint="counting from 0 (torch.arange(L))", name="positions from 1")
class EmbeddedPositionsFrom1(MiniGPT):
    def forward(self, input_ids):
        n = input_ids.shape[1]
        x = self.tok_emb(input_ids) + self.pos_emb(torch.arange(1, n + 1))
        for block in self.blocks:
            x = block(x, mask=causal_mask(n))
        return self.lm_head(self.ln_f(x))


@SPEC.mutant("mini_gpt", hint="lm_head has a bias", name="lm_head with a bias")
class LmHeadWithABias(MiniGPT):
    def __init__(self, vocab_size, max_len, d_model, n_heads, n_layers, d_ff):
        super().__init__(vocab_size, max_len, d_model, n_heads, n_layers, d_ff)
        self.lm_head = nn.Linear(d_model, vocab_size)


@SPEC.alternative("mini_gpt", name="mask kept as a persistent buffer")
class MaskKeptAsAPersistentBuffer(MiniGPT):
    def __init__(self, vocab_size, max_len, d_model, n_heads, n_layers, d_ff):
        super().__init__(vocab_size, max_len, d_model, n_heads, n_layers, d_ff)
        self.register_buffer("mask", causal_mask(max_len))

    def forward(self, input_ids):
        n = input_ids.shape[1]
        x = self.tok_emb(input_ids) + self.pos_emb.weight[:n]
        for block in self.blocks:
            x = block(x, mask=self.mask[:n, :n])
        return self.lm_head(self.ln_f(x))


@SPEC.alternative("mini_gpt", name="inline mask, expanded positions")
class InlineMaskExpandedPositions(MiniGPT):
    def forward(self, input_ids):
        b, n = input_ids.shape
        positions = torch.arange(n, device=input_ids.device).unsqueeze(0).expand(b, n)
        h = self.tok_emb(input_ids) + self.pos_emb(positions)
        mask = torch.tril(torch.ones(n, n, dtype=torch.bool, device=input_ids.device))
        for block in self.blocks:
            h = block(h, mask)
        return self.lm_head(self.ln_f(h))


# -- load_gpt2_weights: most mutants load right, then spoil one part --------------------------------------
# A case's decorators are dropped, so these use `with torch.no_grad()` where the notebook's cell has the
# @torch.no_grad() decorator.

@SPEC.mutant("load_gpt2_weights", original="_load_right", hint="transposed")
def attention_weights_not_transposed(model, hf_model):
    with torch.no_grad():
        _load_right(model, hf_model)
        d = model.tok_emb.embedding_dim
        for block, hf_block in zip(model.blocks, hf_model.transformer.h):
            for linear, w in zip((block.attn.q_proj, block.attn.k_proj, block.attn.v_proj),
                                 hf_block.attn.c_attn.weight.split(d, dim=1)):
                linear.weight.copy_(w)
            block.attn.out_proj.weight.copy_(hf_block.attn.c_proj.weight)
    return model


@SPEC.mutant("load_gpt2_weights", name="q, k, v split in the wrong order", original="_load_right",
             hint="[q | k | v]")
def qkv_split_in_the_wrong_order(model, hf_model):
    with torch.no_grad():
        _load_right(model, hf_model)
        d = model.tok_emb.embedding_dim
        for block, hf_block in zip(model.blocks, hf_model.transformer.h):
            w_k, w_q, w_v = hf_block.attn.c_attn.weight.split(d, dim=1)
            b_k, b_q, b_v = hf_block.attn.c_attn.bias.split(d)
            for linear, w, b in ((block.attn.q_proj, w_q, b_q), (block.attn.k_proj, w_k, b_k),
                                 (block.attn.v_proj, w_v, b_v)):
                linear.weight.copy_(w.T)
                linear.bias.copy_(b)
    return model


@SPEC.mutant("load_gpt2_weights", hint="`lm_head.weight` still holds its initial value",
             name="lm_head not copied", original="_load_right")
def lm_head_not_copied(model, hf_model):
    with torch.no_grad():
        keep = model.lm_head.weight.clone()
        _load_right(model, hf_model)
        model.lm_head.weight.copy_(keep)
    return model


@SPEC.mutant("load_gpt2_weights", name="lm_head taken from wte", original="_load_right",
             hint="hf_model.lm_head.weight")
def lm_head_taken_from_wte(model, hf_model):
    with torch.no_grad():
        _load_right(model, hf_model)
        model.lm_head.weight.copy_(hf_model.transformer.wte.weight)
    return model


@SPEC.mutant("load_gpt2_weights", name="LayerNorm biases not copied", original="_load_right",
             hint="nothing was copied")
def layer_norm_biases_not_copied(model, hf_model):
    with torch.no_grad():
        _load_right(model, hf_model)
        for norm in [model.ln_f] + [n for b in model.blocks for n in (b.ln1, b.ln2)]:
            norm.bias.zero_()
    return model


@SPEC.mutant("load_gpt2_weights", hint="never call t_()",
             name="transposes GPT-2's weight in place", original="_load_right")
def transposes_the_weight_in_place(model, hf_model):
    with torch.no_grad():
        _load_right(model, hf_model)
        for block, hf_block in zip(model.blocks, hf_model.transformer.h):
            block.attn.out_proj.weight.copy_(hf_block.attn.c_proj.weight.t_())
    return model


@SPEC.mutant("load_gpt2_weights", hint="not a new one", original="_load_right")
def returns_a_new_model(model, hf_model):
    import copy
    return _load_right(copy.deepcopy(model), hf_model)


@SPEC.alternative("load_gpt2_weights")
def renamed_state_dict(model, hf_model):
    sd = hf_model.state_dict()
    new = {"tok_emb.weight": sd["transformer.wte.weight"], "pos_emb.weight": sd["transformer.wpe.weight"],
           "ln_f.weight": sd["transformer.ln_f.weight"], "ln_f.bias": sd["transformer.ln_f.bias"],
           "lm_head.weight": sd["lm_head.weight"]}
    for i in range(len(model.blocks)):
        g, m = f"transformer.h.{i}.", f"blocks.{i}."
        for ours, theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
            new[m + ours + ".weight"] = sd[g + theirs + ".weight"]
            new[m + ours + ".bias"] = sd[g + theirs + ".bias"]
        for name, w, b in zip("qkv", sd[g + "attn.c_attn.weight"].chunk(3, dim=-1), sd[g + "attn.c_attn.bias"].chunk(3)):
            new[m + f"attn.{name}_proj.weight"] = w.t()
            new[m + f"attn.{name}_proj.bias"] = b
        for ours, theirs in (("attn.out_proj", "attn.c_proj"), ("mlp.0", "mlp.c_fc"), ("mlp.2", "mlp.c_proj")):
            new[m + ours + ".weight"] = sd[g + theirs + ".weight"].t()
            new[m + ours + ".bias"] = sd[g + theirs + ".bias"]
    model.load_state_dict(new)
    return model


@SPEC.alternative("load_gpt2_weights", name="parameter by parameter with .data")
def parameter_by_parameter_with_data(model, hf_model):
    t = hf_model.transformer
    model.tok_emb.weight.data = t.wte.weight.data.clone()
    model.pos_emb.weight.data = t.wpe.weight.data.clone()
    for ours, theirs in zip(model.blocks, t.h):
        q, k, v = theirs.attn.c_attn.weight.data.t().contiguous().chunk(3, dim=0)
        bq, bk, bv = theirs.attn.c_attn.bias.data.chunk(3)
        pairs = [(ours.attn.q_proj.weight, q), (ours.attn.k_proj.weight, k), (ours.attn.v_proj.weight, v),
                 (ours.attn.q_proj.bias, bq), (ours.attn.k_proj.bias, bk), (ours.attn.v_proj.bias, bv),
                 (ours.attn.out_proj.weight, theirs.attn.c_proj.weight.data.t()),
                 (ours.attn.out_proj.bias, theirs.attn.c_proj.bias.data),
                 (ours.mlp[0].weight, theirs.mlp.c_fc.weight.data.t()), (ours.mlp[0].bias, theirs.mlp.c_fc.bias.data),
                 (ours.mlp[2].weight, theirs.mlp.c_proj.weight.data.t()), (ours.mlp[2].bias, theirs.mlp.c_proj.bias.data),
                 (ours.ln1.weight, theirs.ln_1.weight.data), (ours.ln1.bias, theirs.ln_1.bias.data),
                 (ours.ln2.weight, theirs.ln_2.weight.data), (ours.ln2.bias, theirs.ln_2.bias.data)]
        for param, value in pairs:
            param.data.copy_(value)
    model.ln_f.weight.data.copy_(t.ln_f.weight.data)
    model.ln_f.bias.data.copy_(t.ln_f.bias.data)
    model.lm_head.weight.data.copy_(hf_model.lm_head.weight.data)
    return model


# -- count_parameters -------------------------------------------------------------------------------------

@SPEC.mutant("count_parameters", hint="Frozen parameters (requires_grad=False) are not trainable")
def counts_frozen_parameters(model):
    return sum(p.numel() for p in model.parameters())


@SPEC.mutant("count_parameters", hint="running statistics are buffers, not parameters",
             name="counts the state dict (buffers too)")
def counts_the_state_dict(model):
    return sum(t.numel() for t in model.state_dict().values())


@SPEC.mutant("count_parameters", hint="not the number of tensors", name="counts tensors, not elements")
def counts_tensors_not_elements(model):
    return sum(1 for p in model.parameters() if p.requires_grad)


@SPEC.mutant("count_parameters", hint="is one parameter: model.parameters() lists it once")
def counts_a_shared_weight_twice(model):
    return sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False) if p.requires_grad)


@SPEC.mutant("count_parameters", hint="wrap it in a tensor")
def returns_a_tensor(model):
    return torch.tensor(sum(p.numel() for p in model.parameters() if p.requires_grad))


@SPEC.alternative("count_parameters")
def deduplicate_by_identity(model):
    unique = {id(p): p for _, p in model.named_parameters(remove_duplicate=False)}
    return sum(math.prod(p.shape) for p in unique.values() if p.requires_grad)


@SPEC.alternative("count_parameters")
def explicit_loop(model):
    total = 0
    for p in model.parameters():
        if p.requires_grad:
            total += p.numel()
    return int(total)


# -- the notebook's solution and the reference agree on these inputs ------------------------------------

@SPEC.inputs_of("softmax")
def softmax_inputs(gen):
    from llmcourse.checking import randn

    inf = float("inf")
    for dtype in (torch.float32, torch.float64):
        yield (randn(gen, 7, dtype=dtype),), {}
        yield (randn(gen, 3, 5, dtype=dtype, scale=3.0),), {}
        for dim in (0, 1, -1, -2):
            yield (randn(gen, 2, 3, 4, 5, dtype=dtype),), {"dim": dim}
        # exp() of these overflows without the maximum subtracted (and underflows without it, for the negatives)
        yield (randn(gen, 4, 6, dtype=dtype, scale=1000.0),), {}
        yield (torch.tensor([[1000.0, 999.0, 990.0], [-1000.0, -1001.0, -1e4]], dtype=dtype),), {}
        # -inf entries, a slice all -inf along the last dim (x[2, 2]) and one all -inf along dim 1 (x[1, :, 3])
        x = randn(gen, 3, 4, 5, dtype=dtype)
        x[0, 1, 2] = -inf
        x[1, :, 3] = -inf
        x[2, 2, :] = -inf
        yield (x,), {}
        yield (x,), {"dim": 1}
        yield (torch.full((2, 3), -inf, dtype=dtype),), {"dim": 0}  # every slice masked: all zeros
        yield (randn(gen, 1, 1, dtype=dtype),), {}  # one entry: weight 1
        yield (torch.tensor(2.5, dtype=dtype),), {}  # a 0-d tensor
        yield (torch.empty(0, 4, dtype=dtype),), {}  # no slices at all
    for dtype in (torch.float16, torch.bfloat16):  # the contract keeps the dtype, whatever it is
        yield (randn(gen, 3, 8, dtype=dtype, scale=10.0),), {}


@SPEC.inputs_of("scaled_dot_product_attention")
def attention_inputs(gen):
    from llmcourse.checking import randn

    def causal(n):
        return torch.ones(n, n, dtype=torch.bool).tril()

    for dtype in (torch.float32, torch.float64):
        # no batch dims; Lq != Lk and dv != d
        yield (randn(gen, 4, 8, dtype=dtype), randn(gen, 6, 8, dtype=dtype), randn(gen, 6, 3, dtype=dtype)), {}
        # a batch dim, then batch and heads
        q, k, v = randn(gen, 2, 5, 8, dtype=dtype), randn(gen, 2, 7, 8, dtype=dtype), randn(gen, 2, 7, 4, dtype=dtype)
        yield (q, k, v), {}
        yield (q, k, v), {"mask": None}
        lengths = torch.tensor([7, 2])
        yield (q, k, v), {"mask": (torch.arange(7) < lengths[:, None])[:, None, :]}  # (B, 1, Lk) padding
        q, k, v = (randn(gen, 2, 3, 5, 4, dtype=dtype), randn(gen, 2, 3, 5, 4, dtype=dtype),
                   randn(gen, 2, 3, 5, 6, dtype=dtype))
        yield (q, k, v), {"mask": causal(5)}  # (Lq, Lk), broadcast over batch and heads
        padding = (torch.arange(5) < torch.tensor([5, 3])[:, None])[:, None, None, :]  # (B, 1, 1, Lk)
        yield (q, k, v), {"mask": causal(5) & padding}  # (B, 1, Lq, Lk)
        yield (q, k, v), {"mask": torch.rand(1, 3, 1, 5, generator=gen) < 0.6}  # (1, h, 1, Lk): keys per head
        # random mask with fully masked queries: zero weights and a zero output there
        mask = torch.rand(2, 3, 5, 5, generator=gen) < 0.5
        mask[0, 1, 2] = False
        mask[1, :, 4] = False
        yield (q, k, v), {"mask": mask}
        yield (q, k, v), {"mask": torch.zeros(5, 5, dtype=torch.bool)}  # nothing allowed anywhere
        yield (q, k, v), {"mask": torch.ones(5, 5, dtype=torch.bool)}  # everything allowed: as without a mask
        # length-1 sequences; scores in the hundreds
        yield (randn(gen, 3, 1, 4, dtype=dtype), randn(gen, 3, 1, 4, dtype=dtype), randn(gen, 3, 1, 2, dtype=dtype)), {}
        yield (randn(gen, 2, 4, 8, dtype=dtype, scale=20.0), randn(gen, 2, 5, 8, dtype=dtype, scale=20.0),
               randn(gen, 2, 5, 3, dtype=dtype)), {}


@SPEC.inputs_of("causal_mask")
def causal_mask_inputs(gen):
    for n in (0, 1, 2, 3, 8, 33):
        yield (n,), {}


@SPEC.inputs_of("padding_mask")
def padding_mask_inputs(gen):
    max_len = 9
    yield (torch.cat([torch.tensor([0, max_len]), torch.randint(0, max_len + 1, (6,), generator=gen)]), max_len), {}
    for dtype in (torch.int32, torch.int16, torch.uint8):  # any integer dtype of lengths
        yield (torch.tensor([3, 1, 2, 0], dtype=dtype), 3), {}
    yield (torch.tensor([2, 3]), 7), {}  # every sequence shorter than max_len: still max_len wide
    yield (torch.tensor([1]), 1), {}
    yield (torch.tensor([0, 0, 0]), 4), {}
    yield (torch.tensor([4, 4]), 4), {}
    yield (torch.tensor([0, 0]), 0), {}  # max_len 0: (B, 0)
    yield (torch.tensor([], dtype=torch.long), 5), {}  # no sequences: (0, max_len)


@SPEC.inputs_of("sinusoidal_positional_encoding")
def positional_encoding_inputs(gen):
    for n, d in ((1, 2), (7, 6), (50, 16), (300, 64), (0, 8), (4096, 8), (128, 512)):
        yield (n, d), {}
    # An odd d_model is outside the contract (even only), but both end on a sine column: they once did not agree.
    for n, d in ((1, 1), (7, 5), (50, 33)):
        yield (n, d), {}


def _forwards_agree(mine, theirs, calls, what):
    """Both modules, holding the same weights, give the same outputs, the same gradients (of a random weighting of
    the outputs) and, where they keep them, the same detached attention weights."""
    from tests.test_checks import assert_same

    gen = torch.Generator().manual_seed(1)
    for i, (args, kwargs) in enumerate(calls):
        outs = []
        for module in (mine, theirs):
            module.zero_grad(set_to_none=True)
            out = module(*args, **kwargs)
            weighting = torch.randn(out.shape, generator=gen.manual_seed(i), dtype=torch.float64).to(out.dtype)
            (out * weighting).sum().backward()
            outs.append(out.detach())
        assert_same(outs[0], outs[1], f"{what}, call {i}: the output")
        grads = [{n: p.grad for n, p in module.named_parameters()} for module in (mine, theirs)]
        assert_same(grads[0], grads[1], f"{what}, call {i}: the gradients")
        attentions = [[m for m in module.modules() if hasattr(m, "last_weights")] for module in (mine, theirs)]
        assert len(attentions[0]) == len(attentions[1]), what
        for a, b in zip(*attentions):
            assert a.last_weights is not None and not a.last_weights.requires_grad, f"{what}: last_weights"
            assert_same(a.last_weights, b.last_weights, f"{what}, call {i}: last_weights")


def _with_weights(mine, theirs, weights, dtype):
    """Both modules in `dtype` holding `weights`: loaded strictly, so both have exactly these parameters."""
    from tests.test_checks import assert_same

    mine, theirs = mine.to(dtype), theirs.to(dtype)
    assert list(mine.state_dict()) == list(theirs.state_dict()), (list(mine.state_dict()), list(theirs.state_dict()))
    mine.load_state_dict(weights)
    theirs.load_state_dict(weights)
    assert_same(mine, theirs, "the loaded weights")
    return mine, theirs


@SPEC.agreement("multi_head_attention")
def multi_head_attention_agrees(notebook_class, reference_class):
    from llmcourse.checking import generator, randn
    from llmcourse.checking.shared.attention import mha_shapes, random_weights

    gen = generator(2)
    for d, h, bias, dtype in ((16, 4, True, torch.float32), (12, 3, False, torch.float32),
                              (8, 1, True, torch.float64), (6, 6, False, torch.float64)):
        what = f"MultiHeadAttention({d}, {h}, bias={bias}) in {dtype}"
        mine, theirs = _with_weights(notebook_class(d, h, bias=bias), reference_class(d, h, bias=bias),
                                     random_weights(mha_shapes(d, bias), seed=10 * d + h, dtype=dtype), dtype)
        assert (mine.n_heads, mine.d_head) == (theirs.n_heads, theirs.d_head) == (h, d // h), what
        assert mine.last_weights is None and theirs.last_weights is None, what
        b, lq, lk = 2, 5, 7
        x, context = randn(gen, b, lq, d, dtype=dtype), randn(gen, b, lk, d, dtype=dtype)
        lengths = torch.tensor([lq, 2])
        fully_masked = torch.rand(b, h, lq, lk, generator=gen) < 0.5
        fully_masked[0, 0, 1] = False  # query 1 of head 0 sees nothing
        calls = [((x,), {}),
                 ((x,), {"mask": torch.ones(lq, lq, dtype=torch.bool).tril()}),  # causal (Lq, Lk)
                 ((x,), {"mask": (torch.arange(lq) < lengths[:, None])[:, None, None, :]}),  # padding (B, 1, 1, Lk)
                 ((x,), {"context": None, "mask": None}),
                 ((x,), {"context": context}),  # cross-attention, Lk != Lq
                 ((x, context), {"mask": fully_masked}),  # (B, h, Lq, Lk)
                 ((x, context, torch.zeros(1, 1, 1, lk, dtype=torch.bool)), {}),  # nothing allowed: zero weights
                 ((x[:1, :1],), {})]  # one sequence of one token
        _forwards_agree(mine, theirs, calls, what)
    # d_model not divisible by n_heads: both refuse it (the notebook's scaffold asserts, an AssertionError; the
    # reference raises ValueError; the contract names no exception).
    for cls in (notebook_class, reference_class):
        try:
            cls(10, 4)
        except Exception:
            pass
        else:
            raise AssertionError(f"{cls.__module__}.MultiHeadAttention(10, 4) accepted d_model=10 with 4 heads")


@SPEC.agreement("transformer_block")
def transformer_block_agrees(notebook_class, reference_class):
    from llmcourse.checking import generator, randn
    from llmcourse.checking.shared.attention import block_shapes, random_weights

    gen = generator(3)
    for d, h, d_ff, dtype in ((16, 4, 64, torch.float32), (12, 3, 48, torch.float64), (8, 2, 8, torch.float32)):
        what = f"TransformerBlock({d}, {h}, {d_ff}) in {dtype}"
        mine, theirs = _with_weights(notebook_class(d, h, d_ff), reference_class(d, h, d_ff),
                                     random_weights(block_shapes(d, d_ff), seed=d + d_ff, dtype=dtype), dtype)
        b, n = 3, 6
        x = randn(gen, b, n, d, dtype=dtype, scale=2.0)
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        padding = (torch.arange(n) < torch.tensor([n, 4, 1])[:, None])[:, None, None, :]  # (B, 1, 1, L)
        calls = [((x,), {}),
                 ((x,), {"mask": causal}),
                 ((x, causal), {}),
                 ((x,), {"mask": padding}),
                 ((x,), {"mask": causal & padding}),
                 ((x,), {"mask": torch.zeros(n, n, dtype=torch.bool)}),  # attention adds nothing: x + mlp(ln2(x))
                 ((x[:, :1],), {"mask": causal[:1, :1]})]
        _forwards_agree(mine, theirs, calls, what)


@SPEC.agreement("mini_gpt")
def mini_gpt_agrees(notebook_class, reference_class):
    from llmcourse.checking import generator
    from llmcourse.checking.shared.attention import minigpt_shapes, random_weights

    gen = generator(4)
    for vocab, max_len, d, h, layers, d_ff, dtype in ((23, 12, 16, 4, 2, 32, torch.float32),
                                                      (11, 8, 12, 3, 1, 48, torch.float64),
                                                      (7, 5, 8, 2, 3, 8, torch.float32),
                                                      (9, 4, 8, 2, 0, 16, torch.float32)):  # no blocks at all
        what = f"MiniGPT({vocab}, {max_len}, {d}, {h}, {layers}, {d_ff}) in {dtype}"
        mine, theirs = _with_weights(notebook_class(vocab, max_len, d, h, layers, d_ff),
                                     reference_class(vocab, max_len, d, h, layers, d_ff),
                                     random_weights(minigpt_shapes(vocab, max_len, d, layers, d_ff), seed=vocab + d,
                                                    dtype=dtype), dtype)
        calls = [((torch.randint(0, vocab, (3, max_len), generator=gen),), {}),  # the full length
                 ((torch.randint(0, vocab, (2, max_len - 2), generator=gen),), {}),
                 ((torch.randint(0, vocab, (1, 1), generator=gen),), {}),
                 ((torch.randint(0, vocab, (2, 3), generator=gen).int(),), {})]  # int32 ids
        _forwards_agree(mine, theirs, calls, what)


@SPEC.agreement("load_gpt2_weights")
def load_gpt2_weights_agrees(notebook_load, reference_load):
    import copy

    from transformers import GPT2Config, GPT2LMHeadModel

    from llmcourse.checking.shared.attention import gpt2_config, gpt2_weights
    from tests.test_checks import assert_same

    for seed, config in enumerate((gpt2_config(24, 10, 16, 4, 2, 32), gpt2_config(20, 8, 8, 2, 1, 32, tie=False),
                                   gpt2_config(30, 6, 12, 3, 3, 12))):
        hf = GPT2LMHeadModel(GPT2Config(**config))
        hf.load_state_dict(gpt2_weights(config, seed=seed))
        hf.eval()
        model = MiniGPT(config["vocab_size"], config["n_positions"], config["n_embd"], config["n_head"],
                        config["n_layer"], config["n_inner"])
        loaded = []
        for load in (notebook_load, reference_load):
            mine, theirs = copy.deepcopy(model), copy.deepcopy(hf)
            assert load(mine, theirs) is mine, f"{load.__module__}.load_gpt2_weights returns the model it filled"
            assert_same(theirs, hf, f"{load.__module__}: GPT-2 after loading (it is left unchanged)")
            loaded.append(mine)
        assert_same(loaded[0], loaded[1], f"the MiniGPT loaded from {config}")


@SPEC.inputs_of("count_parameters")
def count_parameters_inputs(gen):
    yield (nn.Linear(3, 2),), {}
    yield (nn.Linear(3, 2, bias=False),), {}
    yield (nn.ReLU(),), {}  # no parameters: 0
    partly_frozen = nn.Sequential(nn.Embedding(50, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    partly_frozen[0].weight.requires_grad_(False)
    yield (partly_frozen,), {}
    yield (nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)).requires_grad_(False),), {}  # all frozen: 0
    yield (nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 2)),), {}  # running statistics are buffers
    shared = nn.Linear(5, 5)
    yield (nn.Sequential(shared, nn.Tanh(), shared),), {}  # one shared Linear counts once
    scalar = nn.Module()
    scalar.scale = nn.Parameter(torch.tensor(2.0))  # a 0-d parameter is one element
    scalar.register_buffer("steps", torch.zeros(3), persistent=False)
    yield (scalar,), {}
    yield (MultiHeadAttention(12, 3, bias=False),), {}
    tied = MiniGPT(20, 8, 8, 2, 2, 16)
    tied.lm_head.weight = tied.tok_emb.weight  # GPT-2's tying: counted once
    yield (tied,), {}
    with torch.device("meta"):  # GPT-2 small's shape, without its memory
        yield (MiniGPT(vocab_size=50257, max_len=1024, d_model=768, n_heads=12, n_layers=12, d_ff=3072),), {}

