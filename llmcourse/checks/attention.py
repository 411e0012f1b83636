"""Visible checks for 01_attention: what `check("01_attention/<exercise>")` runs in your notebook.

They compare your code with PyTorch's and transformers' own building blocks (torch.softmax,
F.scaled_dot_product_attention, nn.MultiheadAttention, nn.TransformerEncoderLayer, GPT2LMHeadModel),
or test a property every correct answer has. More checks run when your notebook is graded.

What they share with the graders' checks (random weights, loading them into your modules) lives in
llmcourse.checking.shared.attention, so that both talk about your modules in the same words.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcourse.checking import expect, expect_close, expect_tensor, fail, generator, graded, randn, state_dict_of
from llmcourse.checking.shared.attention import (block_shapes, gpt2_config, gpt2_logits, gpt2_weights, load_weights,
                                                 mha_shapes, minigpt_shapes, random_weights, student_gpt2)

ASSIGNMENT = "01_attention"


# -- helpers ---------------------------------------------------------------------------------------

def expect_structure(student, module, shapes: dict[str, tuple[int, ...]], what: str, hint: str) -> None:
    """`module` has exactly these parameters (by name and shape), and no others."""
    sd = state_dict_of(module, what)
    missing = [name for name in shapes if name not in sd]
    if missing:
        listed = ", ".join(f"`{m}`" for m in missing[:4]) + (" ..." if len(missing) > 4 else "")
        fail(f"{what} has no parameter named {listed}. The checks (and GPT-2 loading) find your weights "
             f"by these names.", hint)
    for name, shape in shapes.items():
        if tuple(sd[name].shape) != tuple(shape):
            fail(f"{what}'s `{name}` has shape {tuple(sd[name].shape)}, but it should have shape {tuple(shape)}.", hint)
    n = student.construct("torch.nn.utils.parameters_to_vector", module.parameters()).numel()
    expected = sum(math.prod(s) for s in shapes.values())
    if n != expected:
        fail(f"{what} has {n} parameters, but the contract gives it {expected}: is there an extra layer, "
             f"or a bias where there should be none?", hint)


def torch_mha(weights: dict[str, torch.Tensor], d_model: int, n_heads: int) -> nn.MultiheadAttention:
    """PyTorch's nn.MultiheadAttention holding the same weights (it stacks q, k, v into one matrix)."""
    mha = nn.MultiheadAttention(d_model, n_heads, bias=True, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([weights[f"{n}_proj.weight"] for n in "qkv"]))
        mha.in_proj_bias.copy_(torch.cat([weights[f"{n}_proj.bias"] for n in "qkv"]))
        mha.out_proj.weight.copy_(weights["out_proj.weight"])
        mha.out_proj.bias.copy_(weights["out_proj.bias"])
    return mha


# -- softmax ---------------------------------------------------------------------------------------

@graded("softmax", points=1, hint="exp(x) divided by its sum over `dim` (use keepdim=True so the shapes line up); "
                                  "the default dim is the last one.")
def test_softmax_matches_torch(student):
    x = randn(generator(0), 3, 4, 5)
    expect_close(student.softmax(x), torch.softmax(x, dim=-1), "softmax(x) with the default dim")
    for dim in (0, 1, -1):
        out = student.softmax(x, dim=dim)
        expect_close(out, torch.softmax(x, dim=dim), f"softmax(x, dim={dim}) for x of shape (3, 4, 5)")


@graded("softmax", points=2, hint="Subtract each slice's maximum before exp() (exp(1000) overflows to inf), and "
                                  "return zeros, not 0/0, for a slice that is entirely -inf.")
def test_softmax_is_numerically_stable(student):
    inf = float("inf")
    x = torch.tensor([[1000.0, 0.0, -1000.0], [0.0, -inf, math.log(3.0)], [-inf, -inf, -inf]])
    out = expect_tensor(student.softmax(x, dim=-1), "softmax of [[1000, 0, -1000], [0, -inf, log 3], [-inf x 3]]",
                        shape=(3, 3))
    if torch.isnan(out[0]).any():
        fail("softmax([1000, 0, -1000]) contains NaN: exp(1000) is too large for a float.",
             hint="Subtract the maximum of the slice first: softmax(x) = softmax(x - max(x)).")
    if torch.isnan(out[2]).any():
        fail("A row that is entirely -inf (a query that may attend to nothing) gave NaN; it should give zeros.",
             hint="Where the maximum is -inf, subtract 0 instead; where the sum of exponentials is 0, divide by 1.")
    expect_close(out, torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.0, 0.75], [0.0, 0.0, 0.0]]),
                 "softmax of [[1000, 0, -1000], [0, -inf, log 3], [-inf, -inf, -inf]]")


@graded("softmax", points=1, requires_main=True,
        hint="A tensor's dtype is its number format (float32 keeps about 7 digits, float64 about 16). Compute in "
             "the dtype you are given: no .float() or dtype=torch.float32 inside softmax.")
def test_softmax_keeps_the_dtype(student):
    for dtype in (torch.float64, torch.float32):
        x = randn(generator(13), 2, 5, dtype=dtype)
        out = expect_tensor(student.softmax(x), f"softmax(x) for a {dtype} x of shape (2, 5)", shape=(2, 5))
        expect(out.dtype == dtype, f"softmax of a {dtype} x returned a {out.dtype} tensor; it should keep the "
                                   f"input's dtype, {dtype}.")


@graded("softmax", points=1, requires_main=True,
        hint="Work on new tensors (x - m), not in place (x -= m, x.sub_(m), x.exp_()): an in-place operation "
             "overwrites the caller's tensor, e.g. the attention scores they still need.")
def test_softmax_leaves_x_unchanged(student):
    x = randn(generator(14), 3, 4)
    for dim in (-1, 0):
        remote = student.put(x.clone())  # a tensor that stays in your kernel, to see whether softmax changes it
        student.softmax(remote, dim=dim)
        expect(torch.equal(remote.fetch(), x), f"softmax(x, dim={dim}) changed its input x in place.")


# -- scaled dot-product attention ------------------------------------------------------------------

@graded("scaled_dot_product_attention", points=3,
        hint="weights = softmax(q @ k^T / sqrt(d)) over the keys (the last dim); out = weights @ v; return (out, weights).")
def test_attention_matches_pytorch(student):
    gen = generator(1)
    q, k, v = randn(gen, 2, 3, 5, 8), randn(gen, 2, 3, 6, 8), randn(gen, 2, 3, 6, 4)
    result = student.scaled_dot_product_attention(q, k, v)
    if not isinstance(result, tuple) or len(result) != 2:
        fail("scaled_dot_product_attention should return a pair (out, weights).",
             hint="End with `return out, weights`.")
    out, weights = result
    expect_tensor(weights, "weights", shape=(2, 3, 5, 6), hint="weights has one row per query and one column per key.")
    expect_close(weights.sum(-1), torch.ones(2, 3, 5), "the weights summed over the keys",
                 hint="Take the softmax over the last dim (the keys).")
    expect_close(out, F.scaled_dot_product_attention(q, k, v), "out, compared with F.scaled_dot_product_attention")
    expect_close(weights, torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1), "weights")


@graded("scaled_dot_product_attention", points=3,
        hint="Before the softmax, set the scores where mask is False to -inf (masked_fill(~mask, ...)); "
             "a query with no allowed key must get zero weights and a zero output.")
def test_attention_respects_the_mask(student):
    gen = generator(2)
    q, k, v = randn(gen, 2, 4, 8), randn(gen, 2, 5, 8), randn(gen, 2, 5, 3)
    mask = torch.tensor([[1, 0, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    out, weights = student.scaled_dot_product_attention(q, k, v, mask)
    expect_tensor(weights, "weights", shape=(2, 4, 5))
    expect_tensor(out, "out", shape=(2, 4, 3))
    if torch.isnan(weights).any() or torch.isnan(out).any():
        fail("The query in row 2 may attend to no key at all, and your attention gave NaN there.",
             hint="Such a query should get zero weights and a zero output; a stable softmax that returns zeros for "
                  "an all -inf row does exactly that.")
    expect(bool((weights[:, 2] == 0).all()) and bool((out[:, 2] == 0).all()),
           "The query in row 2 may attend to no key at all, so its weights and its output should be all zeros.",
           hint="Fill masked scores with -inf (not a large negative number, which turns a fully masked row into a "
                "uniform average), and let your softmax return zeros for an all -inf row.")
    expect(bool((weights.masked_select(~mask.expand(2, 4, 5)) == 0).all()),
           "Some weights where the mask is False are not exactly 0.",
           hint="mask is True where a query MAY attend; fill the scores where it is False (not where it is True).")
    allowed = mask.clone()
    allowed[2] = True  # PyTorch returns NaN for a fully masked row; compute the others, then zero that row
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    expected[:, 2] = 0.0
    expect_close(out, expected, "out with a mask (compared with F.scaled_dot_product_attention)")


# -- masks -----------------------------------------------------------------------------------------

@graded("causal_mask", points=2, hint="Position i may look at positions 0..i: True on and below the diagonal "
                                      "(torch.tril), as a bool tensor.")
def test_causal_mask_small(student):
    expect_close(student.causal_mask(5), torch.ones(5, 5).tril().bool(), "causal_mask(5)")


@graded("padding_mask", points=2, hint="Compare each position 0..max_len-1 with the sequence's length: "
                                       "positions < length are real tokens (True).")
def test_padding_mask_small(student):
    expected = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    expect_close(student.padding_mask(torch.tensor([3, 1, 6]), 6), expected, "padding_mask(tensor([3, 1, 6]), 6)")
    # No sequence fills the batch here: the mask is still max_len wide (the model's input is padded to it).
    expected = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    expect_close(student.padding_mask(torch.tensor([2, 0]), 4), expected, "padding_mask(tensor([2, 0]), 4)",
                 hint="The mask has max_len columns even when every sequence is shorter: compare torch.arange(max_len) "
                      "with the lengths.")


# -- sinusoidal positional encoding ------------------------------------------------------------------

@graded("sinusoidal_positional_encoding", points=2,
        hint="Shape (n_positions, d_model); column 2i holds sin(pos * w_i), column 2i+1 holds cos(pos * w_i).")
def test_positional_encoding_shape_and_first_columns(student):
    pe = expect_tensor(student.sinusoidal_positional_encoding(10, 8), "sinusoidal_positional_encoding(10, 8)",
                       shape=(10, 8))
    expect(pe.is_floating_point(), "The positional encoding should be a floating-point tensor.")
    pos = torch.arange(10, dtype=torch.float32)
    expect_close(pe[0], torch.tensor([0.0, 1.0] * 4), "row 0 (position 0: sin 0 = 0, cos 0 = 1)",
                 hint="Put sin on the even columns and cos on the odd ones.")
    expect_close(pe[:, 0], torch.sin(pos), "column 0 (sin of the position, frequency 1)")
    expect_close(pe[:, 1], torch.cos(pos), "column 1 (cos of the position, frequency 1)")


@graded("sinusoidal_positional_encoding", points=2,
        hint="The pair of columns (2i, 2i+1) turns at frequency w_i = 1 / 10000^(2i / d_model).")
def test_positional_encoding_frequencies(student):
    n, d = 20, 16
    pe = expect_tensor(student.sinusoidal_positional_encoding(n, d), f"sinusoidal_positional_encoding({n}, {d})",
                       shape=(n, d)).double()
    expect_close(pe[:, 0::2] ** 2 + pe[:, 1::2] ** 2, torch.ones(n, d // 2, dtype=torch.float64),
                 "sin^2 + cos^2 of each pair of columns (2i, 2i+1)", rtol=1e-5, atol=1e-5,
                 hint="Columns 2i and 2i+1 must use the same angle: sin on the even one, cos on the odd one.")
    angle_at_1 = torch.atan2(pe[1, 0::2], pe[1, 1::2])  # position 1: the angle is the frequency itself
    frequency = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    expect_close(angle_at_1, frequency, "the frequency of each pair of columns", rtol=1e-4, atol=1e-6)


# -- multi-head attention --------------------------------------------------------------------------

@graded("multi_head_attention", points=2, requires_main=True,
        hint="Four nn.Linear(d_model, d_model, bias=bias) named q_proj, k_proj, v_proj and out_proj.")
def test_mha_has_the_four_projections(student):
    mha = student.MultiHeadAttention(16, 4)
    expect_structure(student, mha, mha_shapes(16), "MultiHeadAttention(16, 4)",
                     hint="Four nn.Linear(d_model, d_model) named q_proj, k_proj, v_proj and out_proj.")
    plain = student.MultiHeadAttention(16, 4, bias=False)
    expect_structure(student, plain, mha_shapes(16, bias=False), "MultiHeadAttention(16, 4, bias=False)",
                     hint="Pass bias=bias on to every nn.Linear.")


@graded("multi_head_attention", points=4,
        hint="Project, split d_model into (n_heads, d_head) and move heads before the sequence: "
             "(B, L, d) -> (B, L, h, d_head) -> (B, h, L, d_head); attend; merge back; apply out_proj.")
def test_mha_matches_pytorch(student):
    d, h = 16, 4
    gen = generator(3)
    weights = random_weights(mha_shapes(d), seed=4)
    mha = student.MultiHeadAttention(d, h)
    load_weights(mha, weights, "MultiHeadAttention(16, 4)", hint="Name the projections q_proj, k_proj, v_proj, out_proj.")
    ref = torch_mha(weights, d, h)
    x, context = randn(gen, 2, 5, d), randn(gen, 2, 7, d)
    causal = torch.ones(5, 5).tril().bool()
    with torch.no_grad():
        # PyTorch's boolean masks mean the opposite of ours: True = may NOT attend.
        expected, expected_w = ref(x, x, x, attn_mask=~causal, average_attn_weights=False)
        expected_cross, expected_cross_w = ref(x, context, context, average_attn_weights=False)
    expect_close(mha(x, mask=causal), expected, "self-attention output with a causal mask (vs nn.MultiheadAttention)")
    expect_close(mha.last_weights, expected_w, "last_weights after self-attention, shape (B, n_heads, Lq, Lk)",
                 hint="Keep the (B, n_heads, Lq, Lk) weights of the last call in self.last_weights.")
    expect_close(mha(x, context=context), expected_cross, "cross-attention output (keys and values from `context`)",
                 hint="With a context, queries come from x but keys and values come from the context.")
    expect_close(mha.last_weights, expected_cross_w, "last_weights after cross-attention")


# -- transformer block ------------------------------------------------------------------------------

def _torch_block(weights: dict[str, torch.Tensor], d: int, h: int, d_ff: int) -> nn.TransformerEncoderLayer:
    layer = nn.TransformerEncoderLayer(d, h, dim_feedforward=d_ff, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    mha = torch_mha({k.removeprefix("attn."): v for k, v in weights.items() if k.startswith("attn.")}, d, h)
    layer.self_attn.load_state_dict(mha.state_dict())
    for ours, theirs in (("ln1", "norm1"), ("ln2", "norm2"), ("mlp.0", "linear1"), ("mlp.2", "linear2")):
        getattr(layer, theirs).load_state_dict({"weight": weights[f"{ours}.weight"], "bias": weights[f"{ours}.bias"]})
    return layer


@graded("transformer_block", points=1, requires_main=True,
        hint="Submodules ln1, attn (MultiHeadAttention), ln2, and mlp = nn.Sequential(Linear(d, d_ff), GELU(), Linear(d_ff, d)).")
def test_block_structure(student):
    expect_structure(student, student.TransformerBlock(16, 4, 40), block_shapes(16, 40), "TransformerBlock(16, 4, 40)",
                     hint="Submodules ln1, attn, ln2, mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), "
                          "nn.Linear(d_ff, d_model)).")


@graded("transformer_block", points=3,
        hint="Pre-norm: x = x + attn(ln1(x), mask=mask); then x = x + mlp(ln2(x)).")
def test_block_matches_pytorch_pre_norm_layer(student):
    d, h, d_ff = 16, 4, 40
    weights = random_weights(block_shapes(d, d_ff), seed=5)
    block = student.TransformerBlock(d, h, d_ff)
    load_weights(block, weights, "TransformerBlock(16, 4, 40)", hint="Use the submodule names of the contract.")
    ref = _torch_block(weights, d, h, d_ff)
    x = randn(generator(6), 2, 6, d)
    causal = torch.ones(6, 6).tril().bool()
    with torch.no_grad():
        expected_plain = ref(x)
        expected_causal = ref(x, src_mask=~causal)  # PyTorch: True = may NOT attend
    expect_close(block(x), expected_plain, "block(x) (vs nn.TransformerEncoderLayer with norm_first=True)")
    expect_close(block(x, mask=causal), expected_causal, "block(x, mask=causal) (vs nn.TransformerEncoderLayer)",
                 hint="Pass the mask on to the attention: self.attn(self.ln1(x), mask=mask).")


# -- MiniGPT ---------------------------------------------------------------------------------------

@graded("mini_gpt", points=2, requires_main=True,
        hint="tok_emb and pos_emb (nn.Embedding), blocks (nn.ModuleList of TransformerBlock), ln_f (nn.LayerNorm), "
             "lm_head = nn.Linear(d_model, vocab_size, bias=False); forward returns (B, L, vocab_size) logits.")
def test_minigpt_structure_and_output_shape(student):
    model = student.MiniGPT(30, 12, 16, 4, 2, 32)
    expect_structure(student, model, minigpt_shapes(30, 12, 16, 2, 32), "MiniGPT(30, 12, 16, 4, 2, 32)",
                     hint="tok_emb, pos_emb, blocks (an nn.ModuleList), ln_f, lm_head (no bias).")
    ids = torch.randint(0, 30, (3, 7), generator=generator(7))
    expect_tensor(model(ids), "MiniGPT(...)(input_ids) for input_ids of shape (3, 7)", shape=(3, 7, 30),
                  hint="Return the logits of lm_head: one score per vocabulary entry at every position.")


@graded("mini_gpt", points=2, requires_main=True,
        hint="Give every block the causal mask: causal_mask(L) for a sequence of length L.")
def test_minigpt_is_causal(student):
    model = student.MiniGPT(30, 12, 16, 4, 2, 32)
    load_weights(model, random_weights(minigpt_shapes(30, 12, 16, 2, 32), seed=8), "MiniGPT", hint="Use the contract's names.")
    ids = torch.randint(0, 30, (2, 10), generator=generator(9))
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 30
    before, after = model(ids), model(changed)
    expect_close(after[:, :6], before[:, :6], "the logits at positions 0-5 after changing the tokens at positions 6-9",
                 hint="A position must not see later tokens: pass causal_mask(L) to every block.")
    expect(not torch.allclose(after[:, 6:], before[:, 6:]), "Changing tokens 6-9 did not change the logits at "
           "positions 6-9: does the model use its input at all?")


def _blocks_switched_off(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights with every block's two output layers at zero: each block then returns x + 0 + 0 = x."""
    silent = dict(weights)
    for name in weights:
        if name.startswith("blocks.") and (".attn.out_proj." in name or ".mlp.2." in name):
            silent[name] = torch.zeros_like(weights[name])
    return silent


@graded("mini_gpt", points=1,
        hint="Embed the tokens with tok_emb and the positions 0, 1, ..., L-1 with pos_emb, add them, run the blocks, "
             "then the final LayerNorm ln_f, then lm_head.")
def test_minigpt_with_the_blocks_switched_off(student):
    vocab, max_len, d = 30, 12, 16
    weights = _blocks_switched_off(random_weights(minigpt_shapes(vocab, max_len, d, 2, 32), seed=15))
    model = student.MiniGPT(vocab, max_len, d, 4, 2, 32)
    load_weights(model, weights, "MiniGPT", hint="Use the contract's names.")
    ids = torch.randint(0, vocab, (2, 7), generator=generator(16))
    # With blocks that add nothing, only the embeddings, the final LayerNorm and the head are left.
    x = weights["tok_emb.weight"][ids] + weights["pos_emb.weight"][:7]
    x = F.layer_norm(x, (d,), weights["ln_f.weight"], weights["ln_f.bias"], eps=1e-5)
    expect_close(model(ids), x @ weights["lm_head.weight"].T,
                 "the logits with every block switched off (out_proj and mlp[2] zero, so a block returns x as it "
                 "is), compared with lm_head(ln_f(tok_emb(ids) + pos_emb(0..L-1)))", rtol=1e-4, atol=1e-4)


@graded("mini_gpt", points=1, requires_main=True,
        hint="Add pos_emb(positions) to the token embeddings BEFORE the first block: attention can then carry a "
             "token's position to the later tokens that look at it. Position p uses row p of pos_emb (from 0).")
def test_minigpt_positions_reach_later_tokens(student):
    vocab, max_len, d, p = 30, 12, 16, 3
    weights = random_weights(minigpt_shapes(vocab, max_len, d, 2, 32), seed=17)
    model = student.MiniGPT(vocab, max_len, d, 4, 2, 32)
    load_weights(model, weights, "MiniGPT", hint="Use the contract's names.")
    ids = torch.randint(0, vocab, (2, 8), generator=generator(18))
    before = model(ids)
    moved = dict(weights)
    moved["pos_emb.weight"] = weights["pos_emb.weight"].clone()
    moved["pos_emb.weight"][p] += randn(generator(19), d)
    load_weights(model, moved, "MiniGPT", hint="Use the contract's names.")
    after = expect_tensor(model(ids), "MiniGPT's logits", shape=tuple(before.shape))
    changed = [(after[:, i] - before[:, i]).abs().max().item() > 1e-3 for i in range(8)]
    expect(not any(changed[:p]), f"Changing row {p} of pos_emb changed the logits at position "
           f"{changed.index(True)}, before position {p}.",
           hint="Position p must use row p of pos_emb, counting from 0 (torch.arange(L)), and no position may see "
                "a later one.")
    expect(changed[p], f"Changing row {p} of pos_emb did not change the logits at position {p}: are the position "
                       f"embeddings added at all?")
    expect(all(changed[p + 1:]), f"Changing row {p} of pos_emb changed the logits at position {p} but not at the "
           f"later positions {p + 1}-7, which attend to position {p}: the blocks never saw the position embeddings.",
           hint="Add the position embeddings to the token embeddings before the first block, not after the last "
                "one: x = tok_emb(ids) + pos_emb(positions), then the blocks.")


# -- loading GPT-2 ---------------------------------------------------------------------------------

_SMALL_GPT2 = gpt2_config(vocab_size=40, n_positions=12, d_model=16, n_heads=4, n_layers=2, d_ff=48)
# The same shape with lm_head a separate matrix, not the token embedding (tie_word_embeddings=False).
_UNTIED_GPT2 = gpt2_config(vocab_size=40, n_positions=12, d_model=16, n_heads=4, n_layers=2, d_ff=48, tie=False)


@graded("load_gpt2_weights", points=2,
        hint="Copy wte into tok_emb, wpe into pos_emb and hf_model.lm_head.weight into lm_head (under "
             "torch.no_grad()), into the parameters of the model you were given, and return that model.")
def test_load_copies_embeddings_and_returns_the_model(student):
    for config, seed in ((_SMALL_GPT2, 10), (_UNTIED_GPT2, 20)):
        weights = gpt2_weights(config, seed=seed)
        hf = student_gpt2(student, config, weights)
        given = student.MiniGPT(40, 12, 16, 4, 2, 48)
        model = student.load_gpt2_weights(given, hf)
        if model is None or not hasattr(model, "type_name") or not model.type_name.endswith("MiniGPT"):
            fail("load_gpt2_weights should return the MiniGPT it filled.", hint="End with `return model`.")
        sd = state_dict_of(model, "the loaded MiniGPT")
        expect_close(sd["tok_emb.weight"], weights["transformer.wte.weight"], "tok_emb.weight after loading")
        expect_close(sd["pos_emb.weight"], weights["transformer.wpe.weight"], "pos_emb.weight after loading")
        expect_close(sd["lm_head.weight"], weights["lm_head.weight"],
                     "lm_head.weight after loading a GPT-2 whose lm_head is not tied to its token embedding" if
                     config is _UNTIED_GPT2 else "lm_head.weight after loading",
                     hint="Copy hf_model.lm_head.weight into lm_head. GPT-2 usually shares it with the token "
                          "embedding wte (\"tied\" weights), but not every model does.")
        expect_close(state_dict_of(given, "the MiniGPT passed in")["tok_emb.weight"], weights["transformer.wte.weight"],
                     "tok_emb.weight of the MiniGPT passed to load_gpt2_weights",
                     hint="Fill the model you are given (copy_ into its parameters) and return that same model, "
                          "not a new one or a copy.")


@graded("load_gpt2_weights", points=1, requires_main=True,
        hint="Only read from the GPT-2 model: take a transposed view (.T or .t()) and copy it into MiniGPT; "
             "in-place operations such as .t_() or .copy_() on GPT-2's tensors change GPT-2 itself.")
def test_load_leaves_the_gpt2_model_as_it_was(student):
    weights = gpt2_weights(_SMALL_GPT2, seed=21)
    hf = student_gpt2(student, _SMALL_GPT2, weights)
    student.load_gpt2_weights(student.MiniGPT(40, 12, 16, 4, 2, 48), hf)
    after = state_dict_of(hf, "the GPT-2 model")
    for name, value in weights.items():
        expect(name in after and torch.equal(after[name], value),
               f"Loading changed the GPT-2 model's `{name}`" +
               (" (it now holds its transpose)." if name in after and after[name].shape == value.T.shape and
                torch.equal(after[name], value.T) else "."))


@graded("load_gpt2_weights", points=3,
        hint="GPT-2's Conv1D stores weights as (in, out): transpose them for nn.Linear; c_attn holds q, k and v "
             "side by side (split its output dim in three, in that order).")
def test_load_gives_gpt2_logits(student):
    weights = gpt2_weights(_SMALL_GPT2, seed=11)
    hf = student_gpt2(student, _SMALL_GPT2, weights)
    model = student.load_gpt2_weights(student.MiniGPT(40, 12, 16, 4, 2, 48), hf)
    ids = torch.randint(0, 40, (2, 12), generator=generator(12))
    expect_close(model(ids), gpt2_logits(_SMALL_GPT2, weights, ids), "MiniGPT's logits after loading (vs GPT2LMHeadModel)",
                 rtol=1e-4, atol=1e-4)


# -- counting parameters ---------------------------------------------------------------------------

@graded("count_parameters", points=1,
        hint="Add up p.numel() over model.parameters(), keeping only the parameters with p.requires_grad.")
def test_count_parameters_small_modules(student):
    n = student.count_parameters(student.construct("torch.nn.Linear", 10, 5))
    expect(n == 55, f"nn.Linear(10, 5) has 10 * 5 weights + 5 biases = 55 parameters, but count_parameters says {n!r}.")
    first = student.construct("torch.nn.Linear", 4, 8)
    model = student.construct("torch.nn.Sequential", first, student.construct("torch.nn.ReLU"),
                              student.construct("torch.nn.Linear", 8, 2))
    first.requires_grad_(False)
    n = student.count_parameters(model)
    expect(n == 18, f"With its first layer frozen, Linear(4, 8) -> ReLU -> Linear(8, 2) has 8 * 2 + 2 = 18 trainable "
                    f"parameters, but count_parameters says {n!r}.",
           hint="Frozen parameters (requires_grad=False) are not trainable: skip them.")
    shared = student.construct("torch.nn.Linear", 3, 3)
    n = student.count_parameters(student.construct("torch.nn.Sequential", shared, student.construct("torch.nn.Tanh"),
                                                   shared))
    expect(n == 12, f"Sequential(lin, Tanh(), lin), which uses one Linear(3, 3) twice, has 3 * 3 + 3 = 12 parameters, "
                    f"but count_parameters says {n!r}.",
           hint="A weight shared by two layers (as GPT-2's lm_head shares the token embedding) is one parameter: "
                "model.parameters() lists it once, while named_parameters(remove_duplicate=False) and the state "
                "dict list it twice.")


@graded("count_parameters", points=1, requires_main=True,
        hint="sum(p.numel() for p in ...) is already a Python int; don't wrap it in torch.tensor(...). A one-element "
             "tensor prints like a number but is not one (json.dumps and isinstance(n, int) reject it).")
def test_count_parameters_gives_a_python_int(student):
    for what, model in (("nn.Linear(10, 5)", student.construct("torch.nn.Linear", 10, 5)),
                        ("nn.ReLU()", student.construct("torch.nn.ReLU"))):
        n = student.count_parameters(model)
        expect(isinstance(n, int) and not isinstance(n, bool),
               f"count_parameters({what}) returned {n!r} ({type(n).__name__}); it should return a Python int.")


# -- rms_norm --------------------------------------------------------------------------------------

RMS_HINT = ("Divide x by the root of the mean of its squares over the LAST dimension, with eps added under the root: "
            "x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps), then multiply by weight. No mean is subtracted.")


@graded("rms_norm", points=1, hint=RMS_HINT)
def test_rms_norm_small_example(student):
    x = torch.tensor([[3.0, 4.0], [1.0, -1.0]])
    out = student.rms_norm(x, torch.tensor([2.0, 0.5]), eps=0.0)
    # row 0: mean of squares (9 + 16) / 2 = 12.5; row 1: 1. Then times the weight.
    expected = torch.tensor([[2 * 3 / math.sqrt(12.5), 0.5 * 4 / math.sqrt(12.5)], [2.0, -0.5]])
    expect_close(out, expected, "rms_norm([[3, 4], [1, -1]], weight=[2, 0.5], eps=0)")


@graded("rms_norm", points=1, hint=RMS_HINT)
def test_rms_norm_rows_come_out_with_rms_one(student):
    x = randn(generator(71), 2, 3, 8, scale=5.0)
    out = expect_tensor(student.rms_norm(x, torch.ones(8), eps=1e-12), "rms_norm of a (2, 3, 8) tensor",
                        shape=(2, 3, 8))
    rms = out.pow(2).mean(-1).sqrt()
    expect_close(rms, torch.ones(2, 3), "the root mean square of each position's output (weight 1): it should be 1",
                 hint="Normalise each position's vector on its own: the mean runs over the last dimension (d_model), "
                      "never over the batch or the positions.")


@graded("rms_norm", points=1, hint=RMS_HINT)
def test_rms_norm_eps_goes_under_the_root(student):
    x = torch.full((1, 4), 1e-3)
    out = student.rms_norm(x, torch.ones(4), eps=1e-2)
    expect_close(out, torch.full((1, 4), 1e-3 / math.sqrt(1e-6 + 1e-2)), "rms_norm of a tiny vector with eps=0.01",
                 hint="eps goes under the square root, added to the mean of the squares: sqrt(mean(x^2) + eps). It "
                      "keeps an all-zero vector finite (0 instead of 0 / 0).")
    zeros = student.rms_norm(torch.zeros(1, 4), torch.ones(4))
    expect(bool(torch.isfinite(expect_tensor(zeros, "rms_norm(zeros)", shape=(1, 4))).all()),
           "rms_norm of an all-zero vector is not finite: eps belongs under the root so that 0 / 0 never happens.")


@graded("rms_norm", points=1, requires_main=True,
        hint="Compute in x's own dtype: a .float() turns float64 into float32 and loses precision.")
def test_rms_norm_keeps_the_dtype(student):
    x = randn(generator(72), 3, 6, dtype=torch.float64)
    expect_tensor(student.rms_norm(x, torch.ones(6, dtype=torch.float64)), "rms_norm of float64 input",
                  dtype=torch.float64)
