"""The checks of 01b_llama, visible and hidden, written here once.

A check marked `@visible` ships to students: `grader build` copies it, with the helpers and imports it
uses, into `llmcourse/checks/llama.py` (docstring: STUDENT_DOC below), where a student runs it before
grading. Visible checks compare with transformers' own Llama parts (LlamaRMSNorm, the rotary embedding,
LlamaMLP, LlamaForCausalLM, course-lm itself) or use small worked examples and properties every right answer
has, never the reference. The other checks stay here and run only when a notebook is graded: they test the
student's code against `grader.reference.llama` on random inputs, odd shapes and float64, and name the known
mistake a wrong answer matches. The reference runs here, in the grader; only inputs and weights go to the
student's kernel.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from grader.reference import llama as ref
from llmcourse.checking import (CheckFailed, expect, expect_close, expect_tensor, fail, generator, graded,
                                load_weights, randn, same_answer, state_dict_of, visible)

STUDENT_DOC = """Visible checks for 01b_llama: what `check("01b_llama/<exercise>")` runs in your notebook.

They compare your code with transformers' own Llama parts (LlamaRMSNorm, the rotary embedding and
apply_rotary_pos_emb, LlamaMLP, LlamaForCausalLM, and course-lm itself), or work out a small example by
hand, or test a property every correct answer has. More checks run when your notebook is graded.
"""

ASSIGNMENT = "01b_llama"


# -- weights by name, and transformers' Llama holding the same weights ----------------------------------

def mini_llama_shapes(vocab_size: int, d_model: int, n_layers: int, d_ff: int) -> dict[str, tuple[int, ...]]:
    """MiniLlama's parameters by name (lm_head.weight is the same tensor as tok_emb.weight)."""
    d = d_model
    shapes: dict[str, tuple[int, ...]] = {"tok_emb.weight": (vocab_size, d)}
    for i in range(n_layers):
        shapes.update({f"blocks.{i}.attn_norm.weight": (d,),
                       **{f"blocks.{i}.attn.{p}_proj.weight": (d, d) for p in "qkvo"},
                       f"blocks.{i}.mlp_norm.weight": (d,),
                       f"blocks.{i}.mlp.gate_proj.weight": (d_ff, d), f"blocks.{i}.mlp.up_proj.weight": (d_ff, d),
                       f"blocks.{i}.mlp.down_proj.weight": (d, d_ff)})
    shapes.update({"norm.weight": (d,), "lm_head.weight": (vocab_size, d)})
    return shapes


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int,
                   dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Weights of a sensible size for every name: norm gains near 1, unit-scale activations; a tied lm_head."""
    gen = generator(seed)
    weights = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        if name.endswith("norm.weight"):
            value = 1.0 + 0.2 * noise
        elif name.startswith("tok_emb"):
            value = noise
        else:
            value = noise / math.sqrt(shape[-1])
        weights[name] = value.to(dtype)
    if "lm_head.weight" in weights:
        weights["lm_head.weight"] = weights["tok_emb.weight"]
    return weights


def hf_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights under the names of transformers' LlamaForCausalLM (the table in the notebook)."""
    renamed = {}
    for name, value in weights.items():
        hf = name.replace("tok_emb.", "model.embed_tokens.").replace("blocks.", "model.layers.")
        hf = hf.replace(".attn_norm.", ".input_layernorm.").replace(".mlp_norm.", ".post_attention_layernorm.")
        hf = hf.replace(".attn.", ".self_attn.")
        renamed["model.norm.weight" if name == "norm.weight" else hf] = value
    return renamed


def llama_config(vocab_size: int, d_model: int, n_heads: int, n_layers: int, d_ff: int, eps: float = 1e-5,
                 base: float = 10000.0) -> dict:
    """LlamaConfig arguments for a Llama shaped like MiniLlama(vocab_size, d_model, n_heads, n_layers, d_ff, eps,
    base): as many key/value heads as query heads, no biases, SiLU, tied embeddings (as course-lm)."""
    return dict(vocab_size=vocab_size, hidden_size=d_model, num_attention_heads=n_heads,
                num_key_value_heads=n_heads, num_hidden_layers=n_layers, intermediate_size=d_ff, rms_norm_eps=eps,
                rope_parameters={"rope_theta": base, "rope_type": "default"}, max_position_embeddings=256,
                hidden_act="silu", attention_bias=False, mlp_bias=False, tie_word_embeddings=True,
                pad_token_id=0, bos_token_id=1, eos_token_id=2)


def mini_llama_args(config: dict) -> tuple:
    return (config["vocab_size"], config["hidden_size"], config["num_attention_heads"], config["num_hidden_layers"],
            config["intermediate_size"])


def llama_logits(config: dict, weights: dict[str, torch.Tensor], input_ids: torch.Tensor) -> torch.Tensor:
    """The logits of transformers' own LlamaForCausalLM holding these weights (contract names), computed here."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(**config)).to(weights["tok_emb.weight"].dtype)
    model.load_state_dict(hf_names(weights))
    model.eval()
    with torch.no_grad():
        return model(input_ids).logits


def student_llama(student, config: dict, weights: dict[str, torch.Tensor]):
    """A LlamaForCausalLM holding these weights (contract names), built inside the student's kernel."""
    hf = student.construct("transformers.LlamaForCausalLM", student.construct("transformers.LlamaConfig", **config))
    hf.load_state_dict(hf_names(weights))
    hf.eval()
    return hf



def expect_structure(student, module, shapes: dict[str, tuple[int, ...]], what: str, hint: str,
                     tied: tuple[str, ...] = ()) -> None:
    """`module` has exactly these parameters (by name and shape), and no others; the names in `tied` are the same
    tensor as another one (counted once)."""
    sd = state_dict_of(module, what)
    missing = [name for name in shapes if name not in sd]
    if missing:
        listed = ", ".join(f"`{m}`" for m in missing[:4]) + (" ..." if len(missing) > 4 else "")
        fail(f"{what} has no parameter named {listed}. The checks (and loading course-lm) find your weights "
             f"by these names.", hint)
    for name, shape in shapes.items():
        if tuple(sd[name].shape) != tuple(shape):
            fail(f"{what}'s `{name}` has shape {tuple(sd[name].shape)}, but it should have shape {tuple(shape)}.", hint)
    n = student.construct("torch.nn.utils.parameters_to_vector", module.parameters()).numel()
    expected = sum(math.prod(s) for name, s in shapes.items() if name not in tied)
    if n != expected:
        fail(f"{what} has {n} parameters, but the contract gives it {expected}: is there an extra layer, a bias "
             f"where there should be none, or an lm_head of its own instead of the token embedding?", hint)


# -- rms_norm --------------------------------------------------------------------------------------

RMS_HINT = ("Divide x by the root of the mean of its squares over the LAST dimension, with eps added under the root: "
            "x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps), then multiply by weight. No mean is subtracted.")


@visible
@graded("rms_norm", points=2, hint=RMS_HINT)
def test_rms_norm_small_example(student):
    x = torch.tensor([[3.0, 4.0], [1.0, -1.0]])
    out = student.rms_norm(x, torch.tensor([2.0, 0.5]), eps=0.0)
    # row 0: mean of squares (9 + 16) / 2 = 12.5; row 1: 1. Then times the weight.
    expected = torch.tensor([[2 * 3 / math.sqrt(12.5), 0.5 * 4 / math.sqrt(12.5)], [2.0, -0.5]])
    expect_close(out, expected, "rms_norm([[3, 4], [1, -1]], weight=[2, 0.5], eps=0)")


@visible
@graded("rms_norm", points=2, hint=RMS_HINT)
def test_rms_norm_rows_come_out_with_rms_one(student):
    x = randn(generator(71), 2, 3, 8, scale=5.0)
    out = expect_tensor(student.rms_norm(x, torch.ones(8), eps=1e-12), "rms_norm of a (2, 3, 8) tensor",
                        shape=(2, 3, 8))
    rms = out.pow(2).mean(-1).sqrt()
    expect_close(rms, torch.ones(2, 3), "the root mean square of each position's output (weight 1): it should be 1",
                 hint="Normalise each position's vector on its own: the mean runs over the last dimension (d_model), "
                      "never over the batch or the positions.")


@visible
@graded("rms_norm", points=2, hint=RMS_HINT)
def test_rms_norm_eps_goes_under_the_root(student):
    x = torch.full((1, 4), 1e-3)
    out = student.rms_norm(x, torch.ones(4), eps=1e-2)
    expect_close(out, torch.full((1, 4), 1e-3 / math.sqrt(1e-6 + 1e-2)), "rms_norm of a tiny vector with eps=0.01",
                 hint="eps goes under the square root, added to the mean of the squares: sqrt(mean(x^2) + eps). It "
                      "keeps an all-zero vector finite (0 instead of 0 / 0).")
    zeros = student.rms_norm(torch.zeros(1, 4), torch.ones(4))
    expect(bool(torch.isfinite(expect_tensor(zeros, "rms_norm(zeros)", shape=(1, 4))).all()),
           "rms_norm of an all-zero vector is not finite: eps belongs under the root so that 0 / 0 never happens.")


@visible
@graded("rms_norm", points=1, hint=RMS_HINT)
def test_rms_norm_matches_llama_rms_norm(student):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    gen = generator(74)
    norm = LlamaRMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(randn(gen, 16))
    x = randn(gen, 2, 3, 16, scale=2.0)
    with torch.no_grad():
        expected = norm(x)
    expect_close(student.rms_norm(x, norm.weight.detach(), eps=1e-5), expected,
                 "rms_norm with the weight and eps of a transformers LlamaRMSNorm (the layer course-lm uses)")


@visible
@graded("rms_norm", points=1, requires_main=True,
        hint="Compute in x's own dtype: a .float() turns float64 into float32 and loses precision.")
def test_rms_norm_keeps_the_dtype(student):
    x = randn(generator(72), 3, 6, dtype=torch.float64)
    expect_tensor(student.rms_norm(x, torch.ones(6, dtype=torch.float64)), "rms_norm of float64 input",
                  dtype=torch.float64)


@graded("rms_norm", points=3, hint="x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight: the mean of "
                                   "the squares over the last dimension, eps under the root, no mean subtracted.")
def test_rms_norm_matches_reference(student):
    gen = generator(73)
    for shape, eps, dtype, scale in [((4, 16), 1e-6, torch.float32, 3.0), ((2, 5, 12), 1e-5, torch.float64, 3.0),
                                     ((7,), 1e-3, torch.float32, 3.0), ((3, 1, 2, 10), 0.0, torch.float64, 3.0),
                                     ((2, 6), 1e-2, torch.float64, 0.05)]:  # small vectors: eps matters
        x = randn(gen, *shape, dtype=dtype, scale=scale)
        weight = randn(gen, shape[-1], dtype=dtype)
        what = f"rms_norm(x {tuple(shape)} {dtype}, weight, eps={eps})"
        expected = ref.rms_norm(x, weight, eps)
        got = student.rms_norm(x, weight, eps=eps)
        if isinstance(got, torch.Tensor) and got.dtype == torch.float32 != dtype:
            fail(f"{what} has dtype torch.float32, but it should keep the input's dtype {dtype}.",
                 "Compute in x's own dtype: a .float() turns float64 into float32 and loses precision.")
        expect_close(got, expected, what, check_dtype=True,
                     mistakes=[(lambda: (x - x.mean(-1, keepdim=True)) / (x.var(-1, unbiased=False, keepdim=True)
                                                                          + eps).sqrt() * weight,
                                "That is LayerNorm: RMSNorm subtracts no mean; it divides by the root mean square."),
                               (lambda: x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * weight,
                                "eps goes under the square root: sqrt(mean(x^2) + eps)."),
                               (lambda: x / x.pow(2).mean(-1, keepdim=True).sqrt() * weight,
                                "eps is missing: add it to the mean of the squares, under the root, "
                                "sqrt(mean(x^2) + eps), so that small (or all-zero) vectors stay finite."),
                               (lambda: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps),
                                "Multiply by weight: it is the learned gain of each dimension."),
                               (lambda: x / (x.pow(2).mean(-1, keepdim=True) + eps) * weight,
                                "The square root is missing: divide by sqrt(mean(x^2) + eps), the ROOT mean square, "
                                "not by the mean square itself."),
                               (lambda: x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps) * weight,
                                "The squares are summed: take their MEAN over the last dimension (the sum divided by "
                                "the number of dimensions), so that each output has a root mean square of 1.")])


@visible
@graded("rms_norm", points=1, requires_main=True,
        hint="Work on new tensors (x / rms), not in place (x /= rms, x.mul_(...)): the caller's x must not change.")
def test_rms_norm_leaves_x_unchanged(student):
    x = randn(generator(75), 3, 8)
    remote = student.put(x.clone())
    student.rms_norm(remote, torch.ones(8))
    expect(torch.equal(remote.fetch(), x), "rms_norm(x, weight) changed its input x in place.")


# -- apply_rope ------------------------------------------------------------------------------------

ROPE_HINT = ("Pair dimension i with dimension i + d/2 (the first half with the second half, as transformers' "
             "rotate_half does) and turn each pair by the angle position * base^(-2i/d): "
             "out = x * cos + rotate_half(x) * sin, with cos and sin of shape (L, d) (each angle written twice).")


def hf_rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """transformers' own rotary embedding of x (B, h, L, d): LlamaRotaryEmbedding, then apply_rotary_pos_emb."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    b, h, _, d = x.shape
    config = LlamaConfig(hidden_size=h * d, num_attention_heads=h, head_dim=d,
                         rope_parameters={"rope_theta": base, "rope_type": "default"})
    cos, sin = LlamaRotaryEmbedding(config)(x, positions[None].expand(b, -1))  # (B, L, d) each
    return apply_rotary_pos_emb(x, x, cos, sin)[0]


@visible
@graded("apply_rope", points=3, hint=ROPE_HINT)
def test_apply_rope_small_example(student):
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    out = student.apply_rope(x, torch.tensor([0, 1]))
    # d = 4: the pairs are (dim 0, dim 2), turning at 10000^(0/4) = 1 radian per position, and (dim 1, dim 3),
    # at 10000^(-2/4) = 0.01. Position 0 turns nothing; position 1 turns the pairs by 1 and 0.01.
    c1, s1, c2, s2 = math.cos(1.0), math.sin(1.0), math.cos(0.01), math.sin(0.01)
    expected = torch.tensor([[1.0, 2.0, 3.0, 4.0],
                             [1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2]])
    expect_close(out, expected, "apply_rope([[1, 2, 3, 4], [1, 2, 3, 4]], positions=[0, 1])")


@visible
@graded("apply_rope", points=4, hint=ROPE_HINT)
def test_apply_rope_matches_transformers(student):
    gen = generator(80)
    for shape, first, base in (((2, 3, 5, 8), 0, 10000.0), ((1, 2, 6, 16), 7, 10000.0), ((2, 1, 4, 6), 3, 500.0)):
        x = randn(gen, *shape)
        positions = torch.arange(first, first + shape[2])
        expect_close(student.apply_rope(x, positions, base=base), hf_rope(x, positions, base),
                     f"apply_rope(x of shape {shape}, positions {first}..{first + shape[2] - 1}, base={base}) "
                     f"against transformers' LlamaRotaryEmbedding + apply_rotary_pos_emb", rtol=1e-4, atol=1e-5,
                     hint=ROPE_HINT if first == 0 else
                     "Use the positions you are given (they need not start at 0) and the base you are given.")


@visible
@graded("apply_rope", points=1, requires_main=True,
        hint="A rotation keeps lengths: after RoPE, each pair (x[i], x[i + d/2]) has the same length as before. "
             "Use cos and sin of the same angle, and nothing else multiplies x.")
def test_apply_rope_keeps_the_length_of_every_pair(student):
    x = randn(generator(81), 2, 7, 12)
    out = expect_tensor(student.apply_rope(x, torch.arange(7)), "apply_rope of a (2, 7, 12) tensor", shape=(2, 7, 12))
    before = x[..., :6] ** 2 + x[..., 6:] ** 2
    after = out[..., :6] ** 2 + out[..., 6:] ** 2
    expect_close(after, before, "the squared length of each pair (x[i], x[i + 6]) after RoPE (d = 12)", rtol=1e-4,
                 atol=1e-5)


@visible
@graded("apply_rope", points=2, requires_main=True,
        hint="RoPE's point: a query at position m and a key at position n rotated by their own angles have a dot "
             "product that depends only on m - n. Rotate every pair by position * frequency, with the same "
             "frequencies for queries and keys.")
def test_apply_rope_scores_depend_only_on_the_offset(student):
    gen = generator(82)
    q, k = randn(gen, 1, 16), randn(gen, 1, 16)
    scores = []
    for m, n in ((5, 2), (13, 10), (103, 100)):  # the same offset, 3, three times
        rq = expect_tensor(student.apply_rope(q, torch.tensor([m])), "apply_rope(q, [m])", shape=(1, 16))
        rk = expect_tensor(student.apply_rope(k, torch.tensor([n])), "apply_rope(k, [n])", shape=(1, 16))
        scores.append((rq * rk).sum())
    expect_close(torch.stack(scores), scores[0].expand(3),
                 "q·k after rotating q to positions 5, 13, 103 and k to positions 2, 10, 100 (offset 3 each time)",
                 rtol=1e-4, atol=1e-4)


@visible
@graded("apply_rope", points=1, requires_main=True,
        hint="Compute the angles and the result in x's own dtype: float64 in, float64 out.")
def test_apply_rope_keeps_the_dtype(student):
    x = randn(generator(83), 3, 8, dtype=torch.float64)
    expect_tensor(student.apply_rope(x, torch.arange(3)), "apply_rope of a float64 x", dtype=torch.float64)


def rope_variant(x, positions, base=10000.0, *, interleaved=False, from_zero=False, fixed_base=None, backwards=False,
                 exponent_i=False, frequencies_interleaved=False):
    """apply_rope as a known mistake computes it (computed in float64, returned in x's dtype)."""
    d = x.shape[-1]
    base = fixed_base or base
    i = torch.arange(d // 2, dtype=torch.float64) if exponent_i else torch.arange(0, d, 2, dtype=torch.float64)
    inv_freq = 1.0 / base ** (i / d)
    pos = torch.arange(x.shape[-2]) if from_zero else positions
    angle = pos.to(torch.float64)[:, None] * inv_freq  # (L, d/2)
    sign = -1.0 if backwards else 1.0
    z = x.to(torch.float64)
    if interleaved:  # pairs (0, 1), (2, 3), ...
        a, b = z[..., 0::2], z[..., 1::2]
        out = torch.stack([a * angle.cos() - sign * b * angle.sin(), b * angle.cos() + sign * a * angle.sin()], -1)
        return out.flatten(-2).to(x.dtype)
    if frequencies_interleaved:  # rotate_half's pairs, but the angles repeated as (w0, w0, w1, w1, ...)
        full = angle.repeat_interleave(2, dim=-1)
    else:
        full = torch.cat([angle, angle], dim=-1)
    rotated = torch.cat([-z[..., d // 2:], z[..., : d // 2]], dim=-1)
    return (z * full.cos() + sign * rotated * full.sin()).to(x.dtype)


ROPE_MISTAKES = (
    (dict(interleaved=True), "The pairs are (0, 1), (2, 3), ...: transformers' Llama (and course-lm) pairs dimension "
                             "i with dimension i + d/2. Rotate the first half against the second half (rotate_half)."),
    (dict(from_zero=True), "The positions you are given are not used: the rows were turned as if at positions 0, 1, "
                           "2, ... Use the `positions` argument (a sequence may start anywhere)."),
    (dict(fixed_base=10000.0), "The `base` argument is not used: the frequencies are base^(-2i/d) for the base given."),
    (dict(backwards=True), "The rotation goes the wrong way: x1' = x1 cos - x2 sin and x2' = x2 cos + x1 sin "
                           "(rotate_half(x) is [-x2, x1])."),
    (dict(exponent_i=True), "The frequency of pair i is base^(-2i/d) (2i = 0, 2, 4, ... over d), not base^(-i/d)."),
    (dict(frequencies_interleaved=True), "The angles are repeated as (w0, w0, w1, w1, ...), but rotate_half pairs "
                                         "dimension i with i + d/2: write them twice one after the other, "
                                         "cat([angles, angles]), so that both dimensions of a pair share one angle."),
)


@graded("apply_rope", points=5, hint=ROPE_HINT)
def test_apply_rope_matches_reference(student):
    gen = generator(180)
    cases = [((5, 8), 0, 10000.0, torch.float32), ((2, 3, 6, 16), 4, 10000.0, torch.float32),
             ((3, 1, 2, 4, 10), 11, 100.0, torch.float64), ((1, 2), 9, 10000.0, torch.float64),
             ((2, 4, 7, 32), 40, 10000.0, torch.float64)]
    for shape, first, base, dtype in cases:
        x = randn(gen, *shape, dtype=dtype, scale=2.0)
        positions = torch.arange(first, first + shape[-2])
        what = f"apply_rope(x {tuple(shape)} {dtype}, positions {first}..{first + shape[-2] - 1}, base={base})"
        expect_close(student.apply_rope(x, positions, base=base), ref.apply_rope(x, positions, base), what,
                     check_dtype=True, rtol=1e-4 if dtype == torch.float32 else 1e-7,
                     atol=1e-4 if dtype == torch.float32 else 1e-9,
                     mistakes=[(lambda c=c, x=x, p=positions, b=base: rope_variant(x, p, b, **c), s)
                               for c, s in ROPE_MISTAKES])


@graded("apply_rope", points=3, hint="At large positions the angles are large: build them as position * frequency "
                                     "with the frequencies 1 / base^(2i/d), as transformers does.")
def test_apply_rope_matches_transformers_far_into_a_sequence(student):
    gen = generator(181)
    x = randn(gen, 1, 4, 6, 32)  # course-lm's heads: 32 dimensions
    positions = torch.tensor([0, 1, 130, 255, 256, 511])  # up to course-lm's longest context, 512 tokens
    expect_close(student.apply_rope(x, positions), hf_rope(x, positions, 10000.0),
                 "apply_rope(x (1, 4, 6, 32), positions [0, 1, 130, 255, 256, 511]) against transformers",
                 rtol=1e-4, atol=2e-4, mistakes=[(lambda c=c: rope_variant(x, positions, **c), s)
                                                 for c, s in ROPE_MISTAKES])


@graded("apply_rope", points=2, hint="Row j of x is turned by positions[j] only: positions may come in any order "
                                     "and repeat.")
def test_apply_rope_uses_each_rows_own_position(student):
    gen = generator(182)
    x = randn(gen, 2, 4, 8, dtype=torch.float64)
    positions = torch.tensor([7, 2, 2, 0])
    expect_close(student.apply_rope(x, positions), ref.apply_rope(x, positions),
                 "apply_rope(x (2, 4, 8), positions [7, 2, 2, 0])",
                 mistakes=[(lambda c=c: rope_variant(x, positions, **c), s) for c, s in ROPE_MISTAKES])


@graded("apply_rope", points=1, requires_main=True,
        hint="Build new tensors (torch.cat, x * cos): don't write into x (x[..., :h] = ..., x.mul_()).")
def test_apply_rope_leaves_x_unchanged(student):
    x = randn(generator(183), 2, 5, 8)
    remote = student.put(x.clone())
    student.apply_rope(remote, torch.arange(5))
    expect(torch.equal(remote.fetch(), x), "apply_rope(x, positions) changed its input x in place.")


# -- SwiGLU ----------------------------------------------------------------------------------------

SWIGLU_HINT = ("gate_proj, up_proj: nn.Linear(d_model, d_ff, bias=False); down_proj: nn.Linear(d_ff, d_model, "
               "bias=False); forward: down_proj(F.silu(gate_proj(x)) * up_proj(x)).")


def swiglu_shapes(d_model: int, d_ff: int) -> dict[str, tuple[int, ...]]:
    return {"gate_proj.weight": (d_ff, d_model), "up_proj.weight": (d_ff, d_model), "down_proj.weight": (d_model, d_ff)}


def llama_mlp(weights: dict[str, torch.Tensor], d_model: int, d_ff: int):
    """transformers' LlamaMLP (course-lm's MLP) holding these weights."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    mlp = LlamaMLP(LlamaConfig(hidden_size=d_model, intermediate_size=d_ff, num_attention_heads=1, num_key_value_heads=1,
                               hidden_act="silu", mlp_bias=False))
    mlp.load_state_dict(weights)
    return mlp.to(weights["gate_proj.weight"].dtype)


@visible
@graded("swiglu", points=2, requires_main=True, hint=SWIGLU_HINT)
def test_swiglu_has_the_three_projections(student):
    expect_structure(student, student.SwiGLU(12, 20), swiglu_shapes(12, 20), "SwiGLU(12, 20)",
                     hint="Three nn.Linear layers without bias, named gate_proj, up_proj and down_proj.")


@visible
@graded("swiglu", points=3, hint=SWIGLU_HINT)
def test_swiglu_small_example(student):
    mlp = student.SwiGLU(2, 2)
    weights = {"gate_proj.weight": torch.eye(2), "up_proj.weight": 2 * torch.eye(2), "down_proj.weight": torch.eye(2)}
    load_weights(mlp, weights, "SwiGLU(2, 2)", hint="Name the layers gate_proj, up_proj and down_proj.")
    x = torch.tensor([[1.0, -1.0]])
    # gate = x, up = 2x, down = identity: out = silu(x) * 2x, with silu(t) = t * sigmoid(t).
    silu = [t / (1 + math.exp(-t)) for t in (1.0, -1.0)]
    expect_close(mlp(x), torch.tensor([[silu[0] * 2.0, silu[1] * -2.0]]),
                 "SwiGLU with gate_proj = I, up_proj = 2I, down_proj = I, on x = [1, -1] (out = silu(x) * 2x)")


@visible
@graded("swiglu", points=4, hint=SWIGLU_HINT)
def test_swiglu_matches_llama_mlp(student):
    gen = generator(90)
    for d, d_ff, shape in ((16, 24, (2, 5)), (8, 40, (3,))):
        weights = {name: randn(gen, *s) / math.sqrt(s[1]) for name, s in swiglu_shapes(d, d_ff).items()}
        mlp = student.SwiGLU(d, d_ff)
        load_weights(mlp, weights, f"SwiGLU({d}, {d_ff})", hint="Name the layers gate_proj, up_proj and down_proj.")
        x = randn(gen, *shape, d, scale=2.0)
        with torch.no_grad():
            expected = llama_mlp(weights, d, d_ff)(x)
        expect_close(mlp(x), expected, f"SwiGLU({d}, {d_ff}) on x of shape {(*shape, d)}, against transformers' "
                                       f"LlamaMLP with the same weights")


def swiglu_variant(weights: dict[str, torch.Tensor], x: torch.Tensor, kind: str) -> torch.Tensor:
    gate, up = x @ weights["gate_proj.weight"].T, x @ weights["up_proj.weight"].T
    hidden = {"silu on up": gate * F.silu(up), "gelu": F.gelu(gate) * up, "relu": F.relu(gate) * up,
              "sigmoid": torch.sigmoid(gate) * up, "no gate": F.silu(gate), "no up": F.silu(up)}[kind]
    return hidden @ weights["down_proj.weight"].T


SWIGLU_MISTAKES = (
    ("silu on up", "SiLU is on the wrong branch: it goes on gate_proj(x), and up_proj(x) stays linear: "
                   "silu(gate_proj(x)) * up_proj(x)."),
    ("gelu", "That is GELU: Llama's MLP uses SiLU, silu(t) = t * sigmoid(t) (F.silu)."),
    ("relu", "That is ReLU: Llama's MLP uses SiLU, silu(t) = t * sigmoid(t) (F.silu)."),
    ("sigmoid", "That is sigmoid(gate) * up (the original GLU): SwiGLU uses silu(gate) = gate * sigmoid(gate)."),
    ("no gate", "The up_proj branch is missing: the gate multiplies it, silu(gate_proj(x)) * up_proj(x)."),
    ("no up", "The gate_proj branch is missing: silu(gate_proj(x)) * up_proj(x)."),
)


@graded("swiglu", points=4, hint=SWIGLU_HINT)
def test_swiglu_matches_reference(student):
    gen = generator(190)
    for d, d_ff, shape, dtype in ((16, 24, (2, 5), torch.float32), (6, 10, (2, 3, 4), torch.float64),
                                  (4, 4, (1,), torch.float32), (10, 30, (7,), torch.float64)):
        weights = {name: randn(gen, *s, dtype=dtype) / math.sqrt(s[1]) for name, s in swiglu_shapes(d, d_ff).items()}
        mlp = student.SwiGLU(d, d_ff).to(dtype)
        load_weights(mlp, weights, f"SwiGLU({d}, {d_ff})", hint="Name the layers gate_proj, up_proj and down_proj.")
        reference = ref.SwiGLU(d, d_ff).to(dtype)
        reference.load_state_dict(weights)
        x = randn(gen, *shape, d, dtype=dtype, scale=2.0)
        with torch.no_grad():
            expected = reference(x)
        expect_close(mlp(x), expected, f"SwiGLU({d}, {d_ff}) in {dtype} on x of shape {(*shape, d)}", check_dtype=True,
                     mistakes=[(lambda k=k, w=weights, x=x: swiglu_variant(w, x, k), s) for k, s in SWIGLU_MISTAKES])


@graded("swiglu", points=1, requires_main=True,
        hint="Llama's MLP has no biases: nn.Linear(..., bias=False) for all three layers.")
def test_swiglu_has_no_biases(student):
    sd = state_dict_of(student.SwiGLU(8, 12), "SwiGLU(8, 12)")
    extra = sorted(set(sd) - set(swiglu_shapes(8, 12)))
    expect(not extra, f"SwiGLU(8, 12) has parameters the contract does not give it: {', '.join(extra)}.")


# -- MiniLlama ---------------------------------------------------------------------------------------

LLAMA_HINT = ("tok_emb; then each block: x = x + attn(attn_norm(x), positions), x = x + mlp(mlp_norm(x)), with RoPE "
              "on each head's queries and keys (not the values), scores / sqrt(d_head) and the causal mask; then "
              "norm and lm_head (tied to tok_emb).")
STRUCTURE_HINT = ("tok_emb (nn.Embedding), blocks (nn.ModuleList) whose blocks hold attn_norm, attn (q_proj, k_proj, "
                  "v_proj, o_proj), mlp_norm and mlp (a SwiGLU), then norm and lm_head, with "
                  "self.lm_head.weight = self.tok_emb.weight; no biases.")


def student_mini_llama(student, config: dict, seed: int, dtype: torch.dtype = torch.float32):
    """The student's MiniLlama shaped as `config`, holding random weights (returned with them)."""
    args = mini_llama_args(config)
    weights = random_weights(mini_llama_shapes(args[0], args[1], args[3], args[4]), seed=seed, dtype=dtype)
    model = student.MiniLlama(*args, eps=config["rms_norm_eps"], rope_base=config["rope_parameters"]["rope_theta"])
    if dtype != torch.float32:
        model.to(dtype)
    # lm_head is not loaded: it must be the token embedding, which is.
    load_weights(model, {k: w for k, w in weights.items() if k != "lm_head.weight"}, f"MiniLlama{args}",
                 hint=STRUCTURE_HINT)
    return model, weights


_TINY = llama_config(vocab_size=30, d_model=16, n_heads=4, n_layers=2, d_ff=24)


@visible
@graded("mini_llama", points=2, requires_main=True, hint=STRUCTURE_HINT)
def test_mini_llama_structure_and_output_shape(student):
    model = student.MiniLlama(30, 16, 4, 2, 24)
    expect_structure(student, model, mini_llama_shapes(30, 16, 2, 24), "MiniLlama(30, 16, 4, 2, 24)",
                     hint=STRUCTURE_HINT, tied=("lm_head.weight",))
    ids = torch.randint(0, 30, (3, 7), generator=generator(91))
    expect_tensor(model(ids), "MiniLlama(...)(input_ids) for input_ids of shape (3, 7)", shape=(3, 7, 30),
                  hint="Return the logits of lm_head: one score per vocabulary entry at every position.")


@visible
@graded("mini_llama", points=1, requires_main=True,
        hint="Tie the output layer to the token embedding: self.lm_head.weight = self.tok_emb.weight (one tensor, "
             "so that loading tok_emb also fills lm_head, as in course-lm).")
def test_mini_llama_ties_lm_head_to_the_embedding(student):
    model = student.MiniLlama(30, 16, 4, 2, 24)
    load_weights(model, {"tok_emb.weight": randn(generator(92), 30, 16)}, "MiniLlama", hint=STRUCTURE_HINT)
    sd = state_dict_of(model, "MiniLlama")
    expect("lm_head.weight" in sd and torch.equal(sd["lm_head.weight"], sd["tok_emb.weight"]),
           "After new values were loaded into tok_emb.weight alone, lm_head.weight does not hold them: lm_head has "
           "a weight of its own.")


@visible
@graded("mini_llama", points=6, hint=LLAMA_HINT)
def test_mini_llama_matches_llama_for_causal_lm(student):
    gen = generator(93)
    for config, seed, shape in ((_TINY, 94, (2, 9)),
                                (llama_config(20, 12, 3, 1, 20, eps=1e-3, base=100.0), 95, (3, 6))):
        model, weights = student_mini_llama(student, config, seed)
        ids = torch.randint(0, config["vocab_size"], shape, generator=gen)
        expect_close(model(ids), llama_logits(config, weights, ids),
                     f"MiniLlama{mini_llama_args(config)} with eps={config['rms_norm_eps']}, "
                     f"rope_base={config['rope_parameters']['rope_theta']}: its logits against transformers' "
                     f"LlamaForCausalLM holding the same weights", rtol=1e-4, atol=1e-4,
                     hint=LLAMA_HINT if seed == 94 else
                     "Pass eps to every RMSNorm and rope_base to apply_rope: they come from the constructor.")


@visible
@graded("mini_llama", points=2, requires_main=True,
        hint="Mask the scores with the causal mask (True on and below the diagonal) in every block, before the softmax.")
def test_mini_llama_is_causal(student):
    model, _ = student_mini_llama(student, _TINY, seed=96)
    ids = torch.randint(0, 30, (2, 10), generator=generator(97))
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 30
    before, after = model(ids), model(changed)
    expect_close(after[:, :6], before[:, :6], "the logits at positions 0-5 after changing the tokens at positions 6-9",
                 hint="A position must not see later tokens: mask the scores above the diagonal with -inf.")
    expect(not torch.allclose(after[:, 6:], before[:, 6:]), "Changing tokens 6-9 did not change the logits at "
           "positions 6-9: does the model use its input at all?")


def _blocks_switched_off(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights with every block's two output layers at zero: each block then returns x + 0 + 0 = x."""
    return {name: torch.zeros_like(w) if name.endswith(("o_proj.weight", "down_proj.weight")) else w
            for name, w in weights.items()}


@visible
@graded("mini_llama", points=2, hint="Embed the tokens with tok_emb (no position vectors are added: RoPE works inside "
                                     "attention), run the blocks, then the final RMSNorm `norm`, then lm_head.")
def test_mini_llama_with_the_blocks_switched_off(student):
    weights = _blocks_switched_off(random_weights(mini_llama_shapes(30, 16, 2, 24), seed=98))
    model = student.MiniLlama(30, 16, 4, 2, 24)
    load_weights(model, weights, "MiniLlama", hint=STRUCTURE_HINT)
    ids = torch.randint(0, 30, (2, 7), generator=generator(99))
    x = weights["tok_emb.weight"][ids]
    x = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weights["norm.weight"]
    expect_close(model(ids), x @ weights["lm_head.weight"].T,
                 "the logits with every block switched off (o_proj and down_proj zero, so a block returns x as it "
                 "is), compared with lm_head(norm(tok_emb(ids))) with eps 1e-5", rtol=1e-4, atol=1e-4)


def llama_variant(model: ref.MiniLlama, ids: torch.Tensor, kind: str) -> torch.Tensor:
    """The reference MiniLlama's logits, computed as a known mistake would."""
    n = ids.shape[1]
    positions = torch.arange(n)
    x = model.tok_emb(ids)
    for block in model.blocks:
        a = block.attn
        h = x if kind == "post-norm" else block.attn_norm(x)
        b, _, d = h.shape

        def heads(t):
            return t.view(b, n, a.n_heads, a.d_head).transpose(1, 2)

        q, k, v = a.q_proj(h), a.k_proj(h), a.v_proj(h)
        if kind == "rope before the head split":
            q, k = ref.apply_rope(q, positions, a.rope_base), ref.apply_rope(k, positions, a.rope_base)
        q, k, v = heads(q), heads(k), heads(v)
        if kind not in ("no rope", "rope before the head split"):
            q, k = ref.apply_rope(q, positions, a.rope_base), ref.apply_rope(k, positions, a.rope_base)
        if kind == "rope on v":
            v = ref.apply_rope(v, positions, a.rope_base)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d if kind == "sqrt(d_model)" else a.d_head)
        if kind != "not causal":
            scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
        out = a.o_proj((torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, n, d))
        if kind == "post-norm":
            x = block.attn_norm(x + out)
            x = block.mlp_norm(x + block.mlp(x))
        else:
            x = x + out
            x = x + block.mlp(block.mlp_norm(x))
    return model.lm_head(x if kind == "no final norm" else model.norm(x))


LLAMA_MISTAKES = (
    ("not causal", "The model is not causal: mask the scores with the causal mask in every block."),
    ("no rope", "The positions are not used: apply_rope to each head's queries and keys, at positions 0..L-1."),
    ("rope on v", "RoPE is applied to the values too: it rotates only the queries and the keys."),
    ("rope before the head split", "RoPE was applied to the whole (B, L, d_model) projection: split the heads first, "
                                   "then rotate each head's d_head dimensions, (B, h, L, d_head)."),
    ("sqrt(d_model)", "Divide the scores by sqrt(d_head), each head's width, not by sqrt(d_model)."),
    ("post-norm", "The norms go before each sublayer (pre-norm): x + attn(attn_norm(x)), then x + mlp(mlp_norm(x))."),
    ("no final norm", "The final RMSNorm is missing: logits = lm_head(norm(x))."),
)


def _check_against_reference(student, config: dict, seed: int, ids: torch.Tensor, what: str, hint: str,
                             dtype: torch.dtype = torch.float32) -> None:
    model, weights = student_mini_llama(student, config, seed, dtype)
    reference = ref.MiniLlama(*mini_llama_args(config), eps=config["rms_norm_eps"],
                              rope_base=config["rope_parameters"]["rope_theta"]).to(dtype)
    reference.load_state_dict(weights)
    with torch.no_grad():
        expected = reference(ids)
        mistakes = [(lambda k=k: llama_variant(reference, ids, k), s) for k, s in LLAMA_MISTAKES]
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else {}
    expect_close(model(ids), expected, what, hint=hint, mistakes=mistakes, check_dtype=True, **tolerance)


@graded("mini_llama", points=8, hint=LLAMA_HINT)
def test_mini_llama_matches_reference(student):
    gen = generator(200)
    for i, (config, shape, dtype) in enumerate((
            (llama_config(30, 16, 4, 2, 24), (2, 12), torch.float32),
            (llama_config(17, 24, 3, 1, 48, eps=1e-6), (3, 5), torch.float64),
            (llama_config(50, 8, 2, 3, 8, base=50.0), (1, 8), torch.float32),
            (llama_config(11, 12, 1, 2, 16), (2, 6), torch.float64))):
        ids = torch.randint(0, config["vocab_size"], shape, generator=gen)
        _check_against_reference(student, config, 201 + i, ids,
                                 f"MiniLlama{mini_llama_args(config)} ({dtype}) logits for input_ids of shape {shape}",
                                 LLAMA_HINT, dtype)


@graded("mini_llama", points=3, hint="Positions are 0..L-1 for an input of any length L: RoPE needs no table, so "
                                     "any L works.")
def test_mini_llama_short_and_long_inputs(student):
    gen = generator(210)
    config = llama_config(20, 16, 2, 2, 24)
    for n in (1, 2, 70):
        ids = torch.randint(0, 20, (2, n), generator=gen)
        _check_against_reference(student, config, 211, ids, f"MiniLlama{mini_llama_args(config)} logits for a "
                                                             f"sequence of length {n}",
                                 "Use torch.arange(L) for the positions and a causal mask of size (L, L).")


@graded("mini_llama", points=3, hint="MiniLlama(..., eps, rope_base) passes eps to every RMSNorm (the blocks' and the "
                                     "final one) and rope_base to every apply_rope.")
def test_mini_llama_uses_eps_and_rope_base(student):
    gen = generator(220)
    for i, config in enumerate((llama_config(25, 16, 4, 2, 24, eps=0.5), llama_config(25, 16, 4, 2, 24, base=30.0))):
        ids = torch.randint(0, 25, (2, 10), generator=gen)
        _check_against_reference(student, config, 221 + i, ids,
                                 f"MiniLlama{mini_llama_args(config)} with eps={config['rms_norm_eps']} and "
                                 f"rope_base={config['rope_parameters']['rope_theta']}",
                                 "Pass eps and rope_base from MiniLlama's constructor down to the blocks.")


@graded("mini_llama", points=1, requires_main=True,
        hint="Nothing may mix different sequences of a batch: attention works within one sequence.")
def test_mini_llama_batch_items_are_independent(student):
    model, _ = student_mini_llama(student, llama_config(15, 8, 2, 1, 16), seed=230)
    ids = torch.randint(0, 15, (4, 6), generator=generator(231))
    together = model(ids)
    for i in range(4):
        expect_close(together[i:i + 1], model(ids[i:i + 1]), f"the logits of sequence {i}, alone vs in a batch of 4",
                     rtol=1e-4, atol=1e-5)


# -- loading course-lm -----------------------------------------------------------------------------

LOAD_HINT = ("Copy model.embed_tokens into tok_emb, each layer's input_layernorm into attn_norm, "
             "self_attn.q/k/v/o_proj into attn.q/k/v/o_proj, post_attention_layernorm into mlp_norm, mlp.gate/up/"
             "down_proj into mlp, and model.norm into norm, as they are (Llama's layers are nn.Linear: no .T).")


@functools.lru_cache(maxsize=1)
def course_lm():
    """course-lm, loaded here (in the checker) as the notebook loads it."""
    from llmcourse.assets import load_model

    return load_model("course-lm").eval()


def course_lm_config() -> dict:
    c = course_lm().config
    return llama_config(c.vocab_size, c.hidden_size, c.num_attention_heads, c.num_hidden_layers, c.intermediate_size,
                        eps=c.rms_norm_eps, base=c.rope_parameters["rope_theta"])


def _load(student, config: dict, seed: int):
    """A LlamaForCausalLM with random weights in the student's kernel, loaded into their MiniLlama."""
    args = mini_llama_args(config)
    weights = random_weights(mini_llama_shapes(args[0], args[1], args[3], args[4]), seed=seed)
    hf = student_llama(student, config, weights)
    model = student.MiniLlama(*args, eps=config["rms_norm_eps"], rope_base=config["rope_parameters"]["rope_theta"])
    before = state_dict_of(model, "MiniLlama")
    loaded = student.load_course_lm_weights(model, hf)
    if not hasattr(loaded, "type_name"):
        fail("load_course_lm_weights should return the MiniLlama it filled.", hint="End with `return model`.")
    return weights, hf, model, loaded, before


@visible
@graded("load_course_lm_weights", points=3,
        hint="Copy (param.copy_ under torch.no_grad()) into the parameters of the MiniLlama you are given, and "
             "return that same model.")
def test_load_fills_the_given_model_and_returns_it(student):
    config = _TINY
    weights = random_weights(mini_llama_shapes(30, 16, 2, 24), seed=100)
    hf = student_llama(student, config, weights)
    given = student.MiniLlama(30, 16, 4, 2, 24)
    model = student.load_course_lm_weights(given, hf)
    if model is None or not hasattr(model, "type_name") or not model.type_name.endswith("MiniLlama"):
        fail("load_course_lm_weights should return the MiniLlama it filled.", hint="End with `return model`.")
    expect_close(state_dict_of(model, "the loaded MiniLlama")["tok_emb.weight"], weights["tok_emb.weight"],
                 "tok_emb.weight after loading", hint="Copy hf_model.model.embed_tokens.weight into tok_emb.weight.")
    expect_close(state_dict_of(given, "the MiniLlama passed in")["tok_emb.weight"], weights["tok_emb.weight"],
                 "tok_emb.weight of the MiniLlama passed to load_course_lm_weights",
                 hint="Fill the model you are given (copy_ into its parameters) and return that same model, not a new "
                      "one or a copy.")


@visible
@graded("load_course_lm_weights", points=6, hint=LOAD_HINT)
def test_load_gives_the_logits_of_a_llama(student):
    weights, _, _, loaded, _ = _load(student, _TINY, seed=101)
    ids = torch.randint(0, 30, (2, 12), generator=generator(102))
    expect_close(loaded(ids), llama_logits(_TINY, weights, ids),
                 "MiniLlama's logits after loading a random LlamaForCausalLM (vs that LlamaForCausalLM)",
                 rtol=1e-4, atol=1e-4)


@visible
@graded("load_course_lm_weights", points=4, hint=LOAD_HINT + " Build the MiniLlama from course-lm's config (eps = "
                                                           "config.rms_norm_eps, rope_base = its rope_theta).")
def test_load_reproduces_course_lm(student):
    config = course_lm_config()
    hf = student.construct("llmcourse.assets.load_model", "course-lm")
    model = student.MiniLlama(*mini_llama_args(config), eps=config["rms_norm_eps"],
                              rope_base=config["rope_parameters"]["rope_theta"])
    loaded = student.load_course_lm_weights(model, hf)
    if not hasattr(loaded, "type_name"):
        fail("load_course_lm_weights should return the MiniLlama it filled.", hint="End with `return model`.")
    ids = torch.randint(3, config["vocab_size"], (2, 24), generator=generator(103))
    with torch.no_grad():
        expected = course_lm()(ids).logits
    expect_close(loaded(ids), expected, "MiniLlama's logits after loading course-lm (vs course-lm itself)",
                 rtol=1e-4, atol=1e-3)


@visible
@graded("load_course_lm_weights", points=1, requires_main=True,
        hint="Only read from the transformers model: copy its tensors into MiniLlama's parameters, never the other "
             "way round, and change nothing of it in place.")
def test_load_leaves_the_llama_as_it_was(student):
    weights = random_weights(mini_llama_shapes(30, 16, 2, 24), seed=104)
    hf = student_llama(student, _TINY, weights)
    student.load_course_lm_weights(student.MiniLlama(30, 16, 4, 2, 24), hf)
    after = state_dict_of(hf, "the LlamaForCausalLM")
    for name, value in hf_names(weights).items():
        expect(name in after and torch.equal(after[name], value), f"Loading changed the LlamaForCausalLM's `{name}`.")


def _diagnose_weight(name: str, got: torch.Tensor, expected_state: dict[str, torch.Tensor], before) -> str:
    """A hint for one MiniLlama weight that does not hold what course-lm's layer holds."""
    expected = expected_state[name]
    if before is not None and torch.equal(got, before):
        return f"`{name}` still holds its initial value: nothing was copied into it."
    if got.dim() == 2 and got.shape == expected.T.shape and same_answer(got, expected.T):
        return (f"`{name}` is transposed. Llama's layers are nn.Linear, stored (out, in) like yours: copy them as "
                f"they are, without the .T that GPT-2's Conv1D needed.")
    twins = {"attn_norm": "mlp_norm", "mlp_norm": "attn_norm", "gate_proj": "up_proj", "up_proj": "gate_proj"}
    for part, other in twins.items():
        twin_name = name.replace(f".{part}.", f".{other}.")
        if f".{part}." in name and twin_name in expected_state and same_answer(got, expected_state[twin_name]):
            return (f"`{name}` holds the weight of {other}. input_layernorm goes to attn_norm and "
                    f"post_attention_layernorm to mlp_norm; gate_proj and up_proj keep their names.")
    return f"`{name}` does not hold the matching weight of the Llama; see the name table in the notebook."


def _diagnose_load(loaded, weights: dict[str, torch.Tensor], before) -> tuple[str, str] | None:
    got_state = state_dict_of(loaded, "the loaded MiniLlama")
    for name, expected in weights.items():
        got = got_state.get(name)
        if got is None:
            return f"The loaded MiniLlama has no `{name}`.", STRUCTURE_HINT
        if got.shape != expected.shape or not same_answer(got, expected):
            return (f"After loading, MiniLlama's `{name}` does not match the Llama's weights.",
                    _diagnose_weight(name, got, weights, before.get(name)))
    return None


@graded("load_course_lm_weights", points=4, hint=LOAD_HINT)
def test_load_matches_llama_on_other_shapes(student):
    gen = generator(240)
    for i, config in enumerate((llama_config(50, 24, 3, 1, 40), llama_config(20, 8, 2, 3, 8, eps=1e-6, base=500.0))):
        weights, _, _, loaded, before = _load(student, config, seed=241 + i)
        ids = torch.randint(0, config["vocab_size"], (2, 10), generator=gen)
        what = f"MiniLlama{mini_llama_args(config)} logits after loading a LlamaForCausalLM of the same shape"
        try:
            expect_close(loaded(ids), llama_logits(config, weights, ids), what, rtol=1e-4, atol=1e-4, hint=LOAD_HINT)
        except CheckFailed as failure:
            found = _diagnose_load(loaded, weights, before)
            raise CheckFailed(failure.message, found[1] if found else LOAD_HINT) from None


@graded("load_course_lm_weights", points=4, hint=LOAD_HINT)
def test_load_copies_every_weight_into_its_place(student):
    weights, _, _, loaded, before = _load(student, llama_config(24, 16, 4, 2, 32), seed=250)
    found = _diagnose_load(loaded, weights, before)
    if found:
        fail(*found)


@graded("load_course_lm_weights", points=2, hint=LOAD_HINT)
def test_load_reproduces_course_lm_on_a_long_input(student):
    config = course_lm_config()
    hf = student.construct("llmcourse.assets.load_model", "course-lm")
    model = student.MiniLlama(*mini_llama_args(config), eps=config["rms_norm_eps"],
                              rope_base=config["rope_parameters"]["rope_theta"])
    loaded = student.load_course_lm_weights(model, hf)
    if not hasattr(loaded, "type_name"):
        fail("load_course_lm_weights should return the MiniLlama it filled.", hint="End with `return model`.")
    ids = torch.randint(3, config["vocab_size"], (1, 300), generator=generator(260))
    with torch.no_grad():
        expected = course_lm()(ids).logits
    expect_close(loaded(ids), expected, "MiniLlama's logits after loading course-lm, for 300 tokens",
                 rtol=1e-4, atol=1e-3)
