"""01b_llama: the cases its checks are tried against (see tests/specs/__init__.py for the form).

A case of MiniLlama subclasses the notebook's own class (named like it, as a student's later cell would be); a
mistake inside one of the modules MiniLlama's cell also defines (RopeAttention, LlamaBlock) is that module,
redefined under its own name through `uses=`, so that the notebook's MiniLlama builds the wrong one.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from grader.reference.llama import (LlamaBlock, MiniLlama, RopeAttention, SwiGLU, apply_rope,
                                    load_course_lm_weights as _load_right)
from tests.specs import Spec

SPEC = Spec(
    "01b_llama",
    depends_on={
        "rms_norm": set(),
        "apply_rope": set(),
        "swiglu": set(),
        "mini_llama": {"rms_norm", "apply_rope", "swiglu"},
        "load_course_lm_weights": {"mini_llama"},
    },
    solution_names={"swiglu": "SwiGLU", "mini_llama": "MiniLlama"},
    # The load_course_lm_weights checks build a MiniLlama to load into.
    used_by_checks={"load_course_lm_weights": {"mini_llama"}},
)


# -- rms_norm ---------------------------------------------------------------------------------------------

@SPEC.mutant("rms_norm", hint="That is LayerNorm")
def layer_norm_without_bias(x, weight, eps=1e-6):
    centred = x - x.mean(-1, keepdim=True)
    return centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * weight


@SPEC.mutant("rms_norm", hint="under the square root")
def eps_outside_the_root(x, weight, eps=1e-6):
    return x / (torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + eps) * weight


@SPEC.mutant("rms_norm", hint="eps is missing")
def no_eps(x, weight, eps=1e-6):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True)) * weight


@SPEC.mutant("rms_norm", hint="The square root is missing")
def no_square_root(x, weight, eps=1e-6):
    return x / (x.pow(2).mean(-1, keepdim=True) + eps) * weight


@SPEC.mutant("rms_norm", hint="The squares are summed")
def sum_instead_of_mean(x, weight, eps=1e-6):
    return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * weight


@SPEC.mutant("rms_norm", hint="never over the batch or the positions")
def over_the_first_dimension(x, weight, eps=1e-6):
    return x / torch.sqrt(x.pow(2).mean(0, keepdim=True) + eps) * weight


@SPEC.mutant("rms_norm", hint="Multiply by weight")
def weight_left_out(x, weight, eps=1e-6):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


@SPEC.mutant("rms_norm", hint="a .float() turns float64 into float32")
def computed_in_float32(x, weight, eps=1e-6):
    x32 = x.float()
    return x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


@SPEC.mutant("rms_norm", hint="not in place (x /= rms")
def divides_in_place(x, weight, eps=1e-6):
    x /= torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x * weight


@SPEC.alternative("rms_norm")
def with_rsqrt(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


@SPEC.alternative("rms_norm")
def torchs_own_rms_norm(x, weight, eps=1e-6):
    return torch.nn.functional.rms_norm(x, (x.shape[-1],), weight, eps)


@SPEC.alternative("rms_norm")
def from_the_vector_norm(x, weight, eps=1e-6):
    d = x.shape[-1]
    return weight * x / torch.sqrt(torch.linalg.vector_norm(x, dim=-1, keepdim=True) ** 2 / d + eps)


# -- apply_rope -------------------------------------------------------------------------------------------

@SPEC.mutant("apply_rope", name="interleaved pairs (0, 1), (2, 3)", hint="pairs dimension i with dimension i + d/2")
def interleaved_pairs(x, positions, base=10000.0):
    d = x.shape[-1]
    angle = positions.to(x.dtype)[:, None] / base ** (torch.arange(0, d, 2, dtype=x.dtype) / d)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.stack([even * angle.cos() - odd * angle.sin(), odd * angle.cos() + even * angle.sin()], dim=-1)
    return out.flatten(-2)


@SPEC.mutant("apply_rope", name="positions 0..L-1 instead of the ones given", hint="positions you are given")
def positions_not_used(x, positions, base=10000.0):
    d = x.shape[-1]
    positions = torch.arange(x.shape[-2])
    angle = positions.to(x.dtype)[:, None] / base ** (torch.arange(0, d, 2, dtype=x.dtype) / d)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * angle.cos() - x2 * angle.sin(), x2 * angle.cos() + x1 * angle.sin()], dim=-1)


@SPEC.mutant("apply_rope", name="base 10000 whatever base is given", hint="`base` argument is not used")
def base_argument_ignored(x, positions, base=10000.0):
    d = x.shape[-1]
    angle = positions.to(x.dtype)[:, None] / 10000.0 ** (torch.arange(0, d, 2, dtype=x.dtype) / d)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * angle.cos() - x2 * angle.sin(), x2 * angle.cos() + x1 * angle.sin()], dim=-1)


@SPEC.mutant("apply_rope", name="rotated the wrong way", hint="wrong way")
def rotated_the_wrong_way(x, positions, base=10000.0):
    d = x.shape[-1]
    angle = positions.to(x.dtype)[:, None] / base ** (torch.arange(0, d, 2, dtype=x.dtype) / d)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * angle.cos() + x2 * angle.sin(), x2 * angle.cos() - x1 * angle.sin()], dim=-1)


@SPEC.mutant("apply_rope", name="frequency base^(-i/d)", hint="not base^(-i/d)")
def exponent_i_over_d(x, positions, base=10000.0):
    d = x.shape[-1]
    angle = positions.to(x.dtype)[:, None] / base ** (torch.arange(d // 2, dtype=x.dtype) / d)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * angle.cos() - x2 * angle.sin(), x2 * angle.cos() + x1 * angle.sin()], dim=-1)


@SPEC.mutant("apply_rope", name="angles repeated (w0, w0, w1, w1, ...)", hint="one after the other")
def angles_repeat_interleaved(x, positions, base=10000.0):
    d = x.shape[-1]
    angle = positions.to(x.dtype)[:, None] / base ** (torch.arange(0, d, 2, dtype=x.dtype) / d)
    angle = angle.repeat_interleave(2, dim=-1)  # (L, d)
    rotated = torch.cat([-x[..., d // 2:], x[..., : d // 2]], dim=-1)
    return x * angle.cos() + rotated * angle.sin()


@SPEC.mutant("apply_rope", hint="Compute the angles and the result in x's own dtype")
def angles_in_float32(x, positions, base=10000.0):
    d = x.shape[-1]
    angle = positions.float()[:, None] / base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    x1, x2 = x[..., : d // 2].float(), x[..., d // 2:].float()
    return torch.cat([x1 * angle.cos() - x2 * angle.sin(), x2 * angle.cos() + x1 * angle.sin()], dim=-1)


@SPEC.alternative("apply_rope", name="rotate_half, as transformers writes it")
def rotate_half_as_transformers_writes_it(x, positions, base=10000.0):
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=x.dtype) / d)
    angle = torch.outer(positions.to(x.dtype), inv_freq)
    full = torch.cat([angle, angle], dim=-1)  # (L, d)
    rotated = torch.cat([-x[..., d // 2:], x[..., : d // 2]], dim=-1)
    return x * full.cos() + rotated * full.sin()


@SPEC.alternative("apply_rope", name="complex numbers, in float64")
def complex_numbers_in_float64(x, positions, base=10000.0):
    d = x.shape[-1]
    angle = positions.double()[:, None] * base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    turn = torch.polar(torch.ones_like(angle), angle)  # e^(i angle), (L, d/2)
    z = torch.complex(x[..., : d // 2].double(), x[..., d // 2:].double()) * turn
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


@SPEC.alternative("apply_rope", name="a 2x2 rotation matrix per pair")
def rotation_matrix_per_pair(x, positions, base=10000.0):
    d = x.shape[-1]
    angle = positions.to(x.dtype)[:, None] * base ** (-torch.arange(0, d, 2, dtype=x.dtype) / d)
    c, s = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (L, d/2, 2, 2)
    pairs = torch.stack([x[..., : d // 2], x[..., d // 2:]], dim=-1)  # (..., L, d/2, 2)
    turned = (rotation @ pairs.unsqueeze(-1)).squeeze(-1)
    return torch.cat([turned[..., 0], turned[..., 1]], dim=-1)


# -- swiglu -----------------------------------------------------------------------------------------------

@SPEC.mutant("swiglu", name="SiLU on the up branch", hint="wrong branch")
class SiluOnTheUpBranch(SwiGLU):
    def forward(self, x):
        return self.down_proj(self.gate_proj(x) * F.silu(self.up_proj(x)))


@SPEC.mutant("swiglu", name="GELU instead of SiLU", hint="That is GELU")
class GeluInsteadOfSilu(SwiGLU):
    def forward(self, x):
        return self.down_proj(F.gelu(self.gate_proj(x)) * self.up_proj(x))


@SPEC.mutant("swiglu", name="sigmoid gate (GLU)", hint="original GLU")
class SigmoidGate(SwiGLU):
    def forward(self, x):
        return self.down_proj(torch.sigmoid(self.gate_proj(x)) * self.up_proj(x))


@SPEC.mutant("swiglu", name="no up branch", hint="up_proj branch is missing")
class NoUpBranch(SwiGLU):
    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)))


@SPEC.mutant("swiglu", hint="Llama's MLP has no biases", name="layers with biases")
class LayersWithBiases(SwiGLU):
    def __init__(self, d_model, d_ff):
        super().__init__(d_model, d_ff)
        self.gate_proj = nn.Linear(d_model, d_ff)
        self.up_proj = nn.Linear(d_model, d_ff)
        self.down_proj = nn.Linear(d_ff, d_model)


@SPEC.alternative("swiglu", name="one fused projection, split in two")
class OneFusedProjection(SwiGLU):
    def forward(self, x):
        fused = F.linear(x, torch.cat([self.gate_proj.weight, self.up_proj.weight]))  # (..., 2 d_ff)
        gate, up = fused.chunk(2, dim=-1)
        return self.down_proj(gate * torch.sigmoid(gate) * up)


@SPEC.alternative("swiglu", name="matrix products by hand")
class MatrixProductsByHand(SwiGLU):
    def forward(self, x):
        gate = x @ self.gate_proj.weight.T
        up = x @ self.up_proj.weight.T
        return (nn.functional.silu(gate) * up) @ self.down_proj.weight.T


# -- mini_llama -------------------------------------------------------------------------------------------

class _AttentionWithoutMask(RopeAttention):
    def forward(self, x, positions):
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.n_heads, self.d_head).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = apply_rope(q, positions, self.rope_base), apply_rope(k, positions, self.rope_base)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_head), dim=-1)
        return self.o_proj((weights @ v).transpose(1, 2).reshape(b, n, d))


@SPEC.mutant("mini_llama", name="not causal", hint="not causal", uses=(("RopeAttention", _AttentionWithoutMask),))
class NotCausal(MiniLlama):
    pass


class _AttentionWithoutRope(RopeAttention):
    def forward(self, x, positions):
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.n_heads, self.d_head).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        return self.o_proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, n, d))


@SPEC.mutant("mini_llama", name="no RoPE", hint="positions are not used",
             uses=(("RopeAttention", _AttentionWithoutRope),))
class NoRope(MiniLlama):
    pass


class _RopeOnTheValuesToo(RopeAttention):
    def forward(self, x, positions):
        b, n, d = x.shape
        q, k, v = (apply_rope(p(x).view(b, n, self.n_heads, self.d_head).transpose(1, 2), positions, self.rope_base)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        return self.o_proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, n, d))


@SPEC.mutant("mini_llama", name="RoPE on the values too", hint="values too",
             uses=(("RopeAttention", _RopeOnTheValuesToo),))
class RopeOnTheValuesToo(MiniLlama):
    pass


class _RopeBeforeTheHeadSplit(RopeAttention):
    def forward(self, x, positions):
        b, n, d = x.shape
        q = apply_rope(self.q_proj(x), positions, self.rope_base).view(b, n, self.n_heads, self.d_head).transpose(1, 2)
        k = apply_rope(self.k_proj(x), positions, self.rope_base).view(b, n, self.n_heads, self.d_head).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.n_heads, self.d_head).transpose(1, 2)
        return self.o_proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, n, d))


@SPEC.mutant("mini_llama", name="RoPE over d_model, before the head split", hint="split the heads first",
             uses=(("RopeAttention", _RopeBeforeTheHeadSplit),))
class RopeBeforeTheHeadSplit(MiniLlama):
    pass


class _ScaledBySqrtDModel(RopeAttention):
    def forward(self, x, positions):
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.n_heads, self.d_head).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = apply_rope(q, positions, self.rope_base), apply_rope(k, positions, self.rope_base)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
        return self.o_proj((torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, n, d))


@SPEC.mutant("mini_llama", name="scaled by sqrt(d_model)", hint="sqrt(d_head)",
             uses=(("RopeAttention", _ScaledBySqrtDModel),))
class ScaledBySqrtDModel(MiniLlama):
    pass


class _PostNorm(LlamaBlock):
    def forward(self, x, positions):
        x = self.attn_norm(x + self.attn(x, positions))
        return self.mlp_norm(x + self.mlp(x))


@SPEC.mutant("mini_llama", name="post-norm blocks", hint="pre-norm", uses=(("LlamaBlock", _PostNorm),))
class PostNormBlocks(MiniLlama):
    pass


@SPEC.mutant("mini_llama", name="no final norm", hint="final RMSNorm is missing")
class NoFinalNorm(MiniLlama):
    def forward(self, input_ids):
        positions = torch.arange(input_ids.shape[1])
        x = self.tok_emb(input_ids)
        for block in self.blocks:
            x = block(x, positions)
        return self.lm_head(x)


@SPEC.mutant("mini_llama", hint="Tie the output layer to the token embedding", name="lm_head not tied")
class LmHeadNotTied(MiniLlama):
    def __init__(self, vocab_size, d_model, n_heads, n_layers, d_ff, eps=1e-5, rope_base=10000.0):
        super().__init__(vocab_size, d_model, n_heads, n_layers, d_ff, eps, rope_base)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)


@SPEC.mutant("mini_llama", hint="Pass eps and rope_base from MiniLlama's constructor",
             name="eps and rope_base not passed on")
class EpsAndRopeBaseNotPassedOn(MiniLlama):
    def __init__(self, vocab_size, d_model, n_heads, n_layers, d_ff, eps=1e-5, rope_base=10000.0):
        super().__init__(vocab_size, d_model, n_heads, n_layers, d_ff)


class _WithTorchsAttention(RopeAttention):
    def forward(self, x, positions):
        b, n, d = x.shape
        q, k, v = (p(x).unflatten(-1, (self.n_heads, self.d_head)).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = apply_rope(q, positions, self.rope_base), apply_rope(k, positions, self.rope_base)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, h, L, d_head)
        return self.o_proj(out.transpose(1, 2).flatten(2))


@SPEC.alternative("mini_llama", name="torch's scaled_dot_product_attention",
                  uses=(("RopeAttention", _WithTorchsAttention),))
class TorchsScaledDotProductAttention(MiniLlama):
    pass


class _EinsumAttention(RopeAttention):
    def forward(self, x, positions):
        b, n, d = x.shape
        q, k, v = (p(x).reshape(b, n, self.n_heads, self.d_head).permute(0, 2, 1, 3)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = apply_rope(q, positions, self.rope_base), apply_rope(k, positions, self.rope_base)
        scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * self.d_head ** -0.5
        future = torch.ones(n, n, dtype=torch.bool).triu(1)
        weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        return self.o_proj(torch.einsum("bhqk,bhkd->bqhd", weights, v).reshape(b, n, d))


@SPEC.alternative("mini_llama", name="einsum attention, logits from the embedding matrix",
                  uses=(("RopeAttention", _EinsumAttention),))
class EinsumAttentionLogitsFromTheEmbedding(MiniLlama):
    def forward(self, input_ids):
        positions = torch.arange(input_ids.shape[1])
        x = self.tok_emb(input_ids)
        for block in self.blocks:
            x = block(x, positions)
        return F.linear(self.norm(x), self.tok_emb.weight)


# -- load_course_lm_weights: most mutants load right, then spoil one part ---------------------------------
# A case's decorators are dropped, so these use `with torch.no_grad()` where the notebook's cell has the
# @torch.no_grad() decorator.

@SPEC.mutant("load_course_lm_weights", original="_load_right", hint="transposed")
def attention_weights_transposed(model, hf_model):
    with torch.no_grad():
        _load_right(model, hf_model)
        for block, layer in zip(model.blocks, hf_model.model.layers):
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                getattr(block.attn, name).weight.copy_(getattr(layer.self_attn, name).weight.T)
    return model


@SPEC.mutant("load_course_lm_weights", name="the two norms of a layer swapped", original="_load_right",
             hint="input_layernorm goes to attn_norm")
def norms_swapped(model, hf_model):
    with torch.no_grad():
        _load_right(model, hf_model)
        for block, layer in zip(model.blocks, hf_model.model.layers):
            block.attn_norm.weight.copy_(layer.post_attention_layernorm.weight)
            block.mlp_norm.weight.copy_(layer.input_layernorm.weight)
    return model


@SPEC.mutant("load_course_lm_weights", name="gate_proj and up_proj swapped", original="_load_right",
             hint="gate_proj and up_proj keep their names")
def gate_and_up_swapped(model, hf_model):
    with torch.no_grad():
        _load_right(model, hf_model)
        for block, layer in zip(model.blocks, hf_model.model.layers):
            block.mlp.gate_proj.weight.copy_(layer.mlp.up_proj.weight)
            block.mlp.up_proj.weight.copy_(layer.mlp.gate_proj.weight)
    return model


@SPEC.mutant("load_course_lm_weights", name="final norm not copied", original="_load_right",
             hint="nothing was copied")
def final_norm_not_copied(model, hf_model):
    with torch.no_grad():
        keep = model.norm.weight.clone()
        _load_right(model, hf_model)
        model.norm.weight.copy_(keep)
    return model


@SPEC.mutant("load_course_lm_weights", hint="still holds its initial value: nothing was copied into it",
             name="o_proj not copied", original="_load_right")
def o_proj_not_copied(model, hf_model):
    with torch.no_grad():
        keep = [block.attn.o_proj.weight.clone() for block in model.blocks]
        _load_right(model, hf_model)
        for block, weight in zip(model.blocks, keep):
            block.attn.o_proj.weight.copy_(weight)
    return model


@SPEC.mutant("load_course_lm_weights", hint="return that same model, not a new one", original="_load_right")
def returns_a_new_model(model, hf_model):
    import copy
    return _load_right(copy.deepcopy(model), hf_model)


@SPEC.mutant("load_course_lm_weights", hint="never the other way round",
             name="copies into the Llama as well", original="_load_right")
def copies_into_the_llama_as_well(model, hf_model):
    with torch.no_grad():
        _load_right(model, hf_model)
        hf_model.model.norm.weight.mul_(1.0001)
    return model


@SPEC.alternative("load_course_lm_weights")
def renamed_state_dict(model, hf_model):
    new = {}
    for name, value in hf_model.state_dict().items():
        if name == "lm_head.weight":
            continue
        name = name.replace("model.embed_tokens.", "tok_emb.").replace("model.layers.", "blocks.")
        name = name.replace(".input_layernorm.", ".attn_norm.").replace(".post_attention_layernorm.", ".mlp_norm.")
        name = name.replace(".self_attn.", ".attn.").replace("model.norm.", "norm.")
        new[name] = value
    new["lm_head.weight"] = new["tok_emb.weight"]
    model.load_state_dict(new)
    return model


@SPEC.alternative("load_course_lm_weights", name="module by module with .data")
def module_by_module_with_data(model, hf_model):
    model.tok_emb.weight.data.copy_(hf_model.get_input_embeddings().weight.data)
    for block, layer in zip(model.blocks, hf_model.model.layers):
        for ours, theirs in ((block.attn_norm, layer.input_layernorm), (block.mlp_norm, layer.post_attention_layernorm),
                             (block.attn.q_proj, layer.self_attn.q_proj), (block.attn.k_proj, layer.self_attn.k_proj),
                             (block.attn.v_proj, layer.self_attn.v_proj), (block.attn.o_proj, layer.self_attn.o_proj),
                             (block.mlp.gate_proj, layer.mlp.gate_proj), (block.mlp.up_proj, layer.mlp.up_proj),
                             (block.mlp.down_proj, layer.mlp.down_proj)):
            ours.weight.data.copy_(theirs.weight.data)
    model.norm.weight.data.copy_(hf_model.model.norm.weight.data)
    return model


# -- the notebook's solution and the reference agree on these inputs ------------------------------------

@SPEC.inputs_of("rms_norm")
def rms_norm_inputs(gen):
    for shape, dtype in [((4, 16), torch.float32), ((2, 5, 12), torch.float64), ((7,), torch.float32),
                         ((3, 1, 2, 10), torch.float64)]:
        x = torch.randn(shape, generator=gen, dtype=dtype) * 3
        weight = torch.randn(shape[-1], generator=gen, dtype=dtype)
        yield (x, weight), {}
        yield (x, weight), {"eps": 1e-3}
    yield (torch.zeros(2, 4), torch.ones(4)), {}
    yield (torch.full((1, 4), 1e-3), torch.ones(4)), {"eps": 1e-2}


@SPEC.inputs_of("apply_rope")
def apply_rope_inputs(gen):
    for shape, first, dtype in [((5, 8), 0, torch.float32), ((2, 3, 6, 16), 4, torch.float32),
                                ((3, 1, 2, 4, 10), 11, torch.float64), ((1, 2), 9, torch.float64),
                                ((2, 4, 7, 32), 500, torch.float64)]:
        x = torch.randn(shape, generator=gen, dtype=dtype)
        positions = torch.arange(first, first + shape[-2])
        yield (x, positions), {}
        yield (x, positions), {"base": 100.0}
    yield (torch.randn(2, 4, 8, generator=gen), torch.tensor([7, 2, 2, 0])), {}


def _same_modules(mine, theirs, calls, what):
    from tests.test_checks import assert_same

    for i, (args, kwargs) in enumerate(calls):
        with torch.no_grad():
            assert_same(mine(*args, **kwargs), theirs(*args, **kwargs), f"{what}, call {i}")


@SPEC.agreement("swiglu")
def swiglu_agrees(notebook_class, reference_class):
    from tests.test_checks import assert_same

    gen = torch.Generator().manual_seed(3)
    for d, d_ff, dtype in ((16, 24, torch.float32), (6, 10, torch.float64), (4, 4, torch.float32)):
        mine, theirs = notebook_class(d, d_ff).to(dtype), reference_class(d, d_ff).to(dtype)
        assert list(mine.state_dict()) == list(theirs.state_dict())
        theirs.load_state_dict({k: torch.randn(v.shape, generator=gen, dtype=dtype) for k, v in
                                theirs.state_dict().items()})
        mine.load_state_dict(theirs.state_dict())
        assert_same(mine, theirs, "the loaded weights")
        x = torch.randn(2, 3, d, generator=gen, dtype=dtype)
        _same_modules(mine, theirs, [((x,), {}), ((x[0],), {})], f"SwiGLU({d}, {d_ff}) in {dtype}")


@SPEC.agreement("mini_llama")
def mini_llama_agrees(notebook_class, reference_class):
    from grader.checks.llama import mini_llama_shapes, random_weights
    from tests.test_checks import assert_same

    gen = torch.Generator().manual_seed(4)
    for vocab, d, h, layers, d_ff, eps, base, dtype in ((23, 16, 4, 2, 32, 1e-5, 10000.0, torch.float32),
                                                        (11, 12, 3, 1, 48, 1e-6, 500.0, torch.float64),
                                                        (9, 8, 2, 0, 16, 1e-5, 10000.0, torch.float32)):
        what = f"MiniLlama({vocab}, {d}, {h}, {layers}, {d_ff}, eps={eps}, rope_base={base}) in {dtype}"
        mine = notebook_class(vocab, d, h, layers, d_ff, eps=eps, rope_base=base).to(dtype)
        theirs = reference_class(vocab, d, h, layers, d_ff, eps=eps, rope_base=base).to(dtype)
        assert list(mine.state_dict()) == list(theirs.state_dict()), what
        weights = random_weights(mini_llama_shapes(vocab, d, layers, d_ff), seed=vocab + d, dtype=dtype)
        mine.load_state_dict(weights)
        theirs.load_state_dict(weights)
        assert mine.lm_head.weight is mine.tok_emb.weight, what
        calls = [((torch.randint(0, vocab, (3, 10), generator=gen),), {}),
                 ((torch.randint(0, vocab, (1, 1), generator=gen),), {}),
                 ((torch.randint(0, vocab, (2, 40), generator=gen).int(),), {})]
        _same_modules(mine, theirs, calls, what)
        assert_same(mine, theirs, what)


@SPEC.agreement("load_course_lm_weights")
def load_course_lm_weights_agrees(notebook_load, reference_load):
    import copy

    from llmcourse.assets import load_model
    from tests.test_checks import assert_same

    hf = load_model("course-lm")
    c = hf.config
    model = MiniLlama(c.vocab_size, c.hidden_size, c.num_attention_heads, c.num_hidden_layers, c.intermediate_size,
                      eps=c.rms_norm_eps, rope_base=c.rope_parameters["rope_theta"])
    loaded = []
    for load in (notebook_load, reference_load):
        mine, theirs = copy.deepcopy(model), copy.deepcopy(hf)
        assert load(mine, theirs) is mine, f"{load.__module__}.load_course_lm_weights returns the model it filled"
        assert_same(theirs, hf, f"{load.__module__}: course-lm after loading (it is left unchanged)")
        loaded.append(mine)
    assert_same(loaded[0], loaded[1], "the MiniLlama loaded from course-lm")

