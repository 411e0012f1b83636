"""The checks of 01_attention, visible and hidden, written here once.

A check marked `@visible` ships to students: `grader build` copies it, with the helpers and imports it
uses, into `llmcourse/checks/attention.py` (docstring: STUDENT_DOC below), where a student runs it before
grading. Visible checks use small worked examples and properties every right answer has, never the
reference. The other checks stay here and run only when a notebook is graded: they test the student's
code against `grader.reference.attention`.

Seeded random inputs of several shapes and dtypes, the edge cases the contract names, and behaviour
(causality, residuals, in-place loading). Where a wrong answer matches a known mistake, the check says
which one. The reference runs here, in the grader; only inputs and weights go to the student's kernel.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from grader.reference import attention as ref
from llmcourse.checking import (CheckFailed, expect, expect_close, expect_tensor, fail, generator, graded,
                                load_weights, randn, same_answer, state_dict_of, visible)
from llmcourse.checking.shared.attention import (block_shapes, gpt2_config, gpt2_logits, gpt2_weights, mha_shapes,
                                                 minigpt_shapes, random_weights, student_gpt2)

STUDENT_DOC = """Visible checks for 01_attention: what `check("01_attention/<exercise>")` runs in your notebook.

They compare your code with PyTorch's and transformers' own building blocks (torch.softmax,
F.scaled_dot_product_attention, nn.MultiheadAttention, nn.TransformerEncoderLayer, GPT2LMHeadModel),
or test a property every correct answer has. More checks run when your notebook is graded.

What they share with the graders' checks (random weights, loading them into your modules) lives in
llmcourse.checking.shared.attention, so that both talk about your modules in the same words.
"""

ASSIGNMENT = "01_attention"
INF = float("inf")


# -- helpers of the visible checks -----------------------------------------------------------------

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

@visible
@graded("softmax", points=1, hint="exp(x) divided by its sum over `dim` (use keepdim=True so the shapes line up); "
                                  "the default dim is the last one.")
def test_softmax_matches_torch(student):
    x = randn(generator(0), 3, 4, 5)
    expect_close(student.softmax(x), torch.softmax(x, dim=-1), "softmax(x) with the default dim")
    for dim in (0, 1, -1):
        out = student.softmax(x, dim=dim)
        expect_close(out, torch.softmax(x, dim=dim), f"softmax(x, dim={dim}) for x of shape (3, 4, 5)")


@visible
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


@visible
@graded("softmax", points=1, requires_main=True,
        hint="A tensor's dtype is its number format (float32 keeps about 7 digits, float64 about 16). Compute in "
             "the dtype you are given: no .float() or dtype=torch.float32 inside softmax.")
def test_softmax_keeps_the_dtype(student):
    for dtype in (torch.float64, torch.float32):
        x = randn(generator(13), 2, 5, dtype=dtype)
        out = expect_tensor(student.softmax(x), f"softmax(x) for a {dtype} x of shape (2, 5)", shape=(2, 5))
        expect(out.dtype == dtype, f"softmax of a {dtype} x returned a {out.dtype} tensor; it should keep the "
                                   f"input's dtype, {dtype}.")


@visible
@graded("softmax", points=1, requires_main=True,
        hint="Work on new tensors (x - m), not in place (x -= m, x.sub_(m), x.exp_()): an in-place operation "
             "overwrites the caller's tensor, e.g. the attention scores they still need.")
def test_softmax_leaves_x_unchanged(student):
    x = randn(generator(14), 3, 4)
    for dim in (-1, 0):
        remote = student.put(x.clone())  # a tensor that stays in your kernel, to see whether softmax changes it
        student.softmax(remote, dim=dim)
        expect(torch.equal(remote.fetch(), x), f"softmax(x, dim={dim}) changed its input x in place.")


_NAN_HINT = ("NaN appeared. exp() of a large number overflows to inf (subtract the maximum first), and a slice that "
             "is all -inf gives -inf - (-inf) = NaN (subtract 0 there, and return zeros when the sum is 0).")


@graded("softmax", points=1, hint="Normalise along the `dim` you are given, and keep the input's dtype (no .float()).")
def test_softmax_matches_reference_on_random_inputs(student):
    gen = generator(100)
    for shape in ((7,), (3, 5), (2, 3, 4, 5)):
        for dtype in (torch.float32, torch.float64):
            x = randn(gen, *shape, dtype=dtype, scale=3.0)
            for dim in sorted({-1, 0, len(shape) // 2}):
                others = [d for d in range(len(shape)) if d != dim % len(shape)]
                expect_close(student.softmax(x, dim=dim), ref.softmax(x, dim=dim),
                             f"softmax(x, dim={dim}) for a {dtype} x of shape {shape}",
                             hint="Normalise along `dim` and keep the input's dtype.", check_dtype=True,
                             mistakes=[(lambda d=d: ref.softmax(x, dim=d),
                                        f"The values sum to 1 along another dim, not along dim={dim}: pass `dim` to "
                                        f"amax/sum, with keepdim=True.") for d in others])


@graded("softmax", points=1, hint=_NAN_HINT)
def test_softmax_edge_cases(student):
    cases = [
        ("a slice of length 1", torch.tensor([[5.0], [-3.0]]), -1),
        ("large float32 values", torch.tensor([[1000.0, 999.0, 990.0], [-1000.0, -1003.0, -1e4]]), -1),
        ("float64 values whose exp() overflows", torch.tensor([800.0, 790.0, -800.0], dtype=torch.float64), 0),
        ("one finite value among -inf", torch.tensor([[-INF, 7.0, -INF], [2.0, -INF, 2.0]]), -1),
        ("columns that are entirely -inf (dim=0)", torch.tensor([[-INF, 1.0], [-INF, 3.0], [-INF, -INF]]), 0),
        ("a batch of fully masked rows", torch.full((2, 3, 4), -INF), -1),
        ("equal large values", torch.full((4,), 500.0), -1),
    ]
    for what, x, dim in cases:
        out = student.softmax(x, dim=dim)
        if isinstance(out, torch.Tensor) and torch.isnan(out).any():
            fail(f"softmax of {what} gave NaN.", hint=_NAN_HINT)
        # Large inputs leave fewer significant digits for the result: float32 gets a looser tolerance here.
        tolerance = dict(rtol=1e-3, atol=1e-6) if x.dtype == torch.float32 else {}
        expect_close(out, ref.softmax(x, dim=dim), f"softmax of {what} (dim={dim})", hint=_NAN_HINT, **tolerance)


@graded("softmax", points=1, requires_main=True,
        hint="Work on new tensors (x - m, not x -= m or x.sub_(m)): the caller's x must not change.")
def test_softmax_leaves_its_input_unchanged(student):
    x = randn(generator(101), 4, 6)
    for dim in (-1, 0):
        remote = student.put(x.clone())
        student.softmax(remote, dim=dim)
        expect(torch.equal(remote.fetch(), x), f"softmax(x, dim={dim}) changed its input x in place.",
               hint="Use out-of-place operations (x - m) rather than in-place ones (x -= m, x.sub_(m), x.exp_()).")


# -- scaled dot-product attention ------------------------------------------------------------------

@visible
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


@visible
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


def _attention_variant(q, k, v, mask=None, *, scale=None, dim=-1, invert=False):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        scores = scores.masked_fill(mask if invert else ~mask, -INF)
    weights = ref.softmax(scores, dim=dim)
    return weights @ v, weights


_ATTENTION_MISTAKES = (
    (dict(scale=1.0), "The scores are not scaled: divide q @ k^T by sqrt(d), where d = q.shape[-1]."),
    ("by d", "The scores are divided by d; divide them by sqrt(d) instead."),
    (dict(dim=-2), "The softmax runs over the queries; it must run over the keys (the last dim of the scores)."),
    (dict(invert=True), "The mask is used the wrong way round: True means the query MAY attend to the key, so set "
                        "the scores to -inf where the mask is False (~mask)."),
)


def _check_attention(student, q, k, v, mask, what: str, hint: str, **tolerance) -> None:
    result = student.scaled_dot_product_attention(q, k, v, mask)
    if not isinstance(result, tuple) or len(result) != 2:
        fail("scaled_dot_product_attention should return a pair (out, weights).", hint="End with `return out, weights`.")
    out, weights = result
    expected_out, expected_weights = ref.scaled_dot_product_attention(q, k, v, mask)
    variants = []
    for change, specific in _ATTENTION_MISTAKES:
        if change == "by d":
            change = dict(scale=1 / q.shape[-1])
        if "invert" in change and mask is None:
            continue
        variants.append((change, specific))

    def mistakes(index: int):
        return [(lambda c=c: _attention_variant(q, k, v, mask, **c)[index], s) for c, s in variants]

    expect_close(weights, expected_weights, f"the weights for {what}", hint=hint, mistakes=mistakes(1),
                 check_dtype=True, **tolerance)
    expect_close(out, expected_out, f"the output for {what}", hint=hint, mistakes=mistakes(0), check_dtype=True,
                 **tolerance)


@graded("scaled_dot_product_attention", points=2,
        hint="softmax(q @ k.transpose(-2, -1) / sqrt(d)) over the last dim, then @ v; any number of leading batch "
             "dims; keep the input's dtype.")
def test_attention_matches_reference(student):
    gen = generator(110)
    cases = [((5, 8), (5, 8), (5, 8), torch.float32),
             ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), torch.float32),
             ((2, 2, 2, 3, 4), (2, 2, 2, 5, 4), (2, 2, 2, 5, 7), torch.float32),
             ((3, 6, 16), (3, 9, 16), (3, 9, 16), torch.float64)]
    for qs, ks, vs, dtype in cases:
        q, k, v = randn(gen, *qs, dtype=dtype), randn(gen, *ks, dtype=dtype), randn(gen, *vs, dtype=dtype)
        _check_attention(student, q, k, v, None, f"q {qs}, k {ks}, v {vs} ({dtype})",
                         hint="weights = softmax(q @ k^T / sqrt(d)) over the keys; out = weights @ v.")


@graded("scaled_dot_product_attention", points=2,
        hint="Use the mask as it comes (it broadcasts against the scores): scores.masked_fill(~mask, float('-inf')).")
def test_attention_with_broadcast_masks(student):
    gen = generator(111)
    q, k, v = randn(gen, 2, 3, 4, 8), randn(gen, 2, 3, 6, 8), randn(gen, 2, 3, 6, 5)
    lengths = torch.tensor([6, 2])
    padding = (torch.arange(6) < lengths[:, None])[:, None, None, :]  # (B, 1, 1, Lk)
    banded = torch.ones(4, 6, dtype=torch.bool).tril(2)  # (Lq, Lk)
    per_head = torch.rand(2, 3, 4, 6, generator=gen) < 0.6  # (B, h, Lq, Lk)
    per_head[..., 0] = True
    for mask, what in ((padding, "a padding mask of shape (2, 1, 1, 6)"), (banded, "a mask of shape (4, 6)"),
                       (per_head, "a mask of shape (2, 3, 4, 6)")):
        _check_attention(student, q, k, v, mask, what,
                         hint="Fill the scores with -inf where the mask is False (it broadcasts to (..., Lq, Lk)).")


@graded("scaled_dot_product_attention", points=1,
        hint="A query whose mask row is all False gets all-zero weights and a zero output; your softmax should "
             "return zeros for an all -inf row.")
def test_attention_fully_masked_queries_give_zeros(student):
    gen = generator(112)
    for dtype in (torch.float32, torch.float64):
        q, k, v = randn(gen, 2, 5, 4, dtype=dtype), randn(gen, 2, 3, 4, dtype=dtype), randn(gen, 2, 3, 6, dtype=dtype)
        mask = torch.tensor([[1, 1, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
        out, weights = student.scaled_dot_product_attention(q, k, v, mask)
        expect_tensor(weights, "weights", shape=(2, 5, 3))
        expect_tensor(out, "out", shape=(2, 5, 6))
        if torch.isnan(weights).any() or torch.isnan(out).any():
            fail(f"Queries 1 and 3 may attend to no key; your attention gave NaN for them ({dtype}).",
                 hint="NaN is what torch.softmax (and F.softmax) give for a row that is all -inf. Give such queries "
                      "zero weights and a zero output: your own softmax, which returns zeros for an all -inf row, "
                      "does this without any special case.")
        expect(bool((weights[:, [1, 3]] == 0).all()) and bool((out[:, [1, 3]] == 0).all()),
               f"Queries 1 and 3 may attend to no key, so their weights and outputs should be exactly 0 ({dtype}).")
        expect(bool((weights.masked_select(~mask.expand(2, 5, 3)) == 0).all()),
               "Some weights where the mask is False are not exactly 0.",
               hint="Use -inf for masked scores: exp(-inf) is exactly 0, a large negative number may not be.")
        _check_attention(student, q, k, v, mask, f"a mask with fully masked queries ({dtype})",
                         hint="Masked scores become -inf before the softmax.")


@graded("scaled_dot_product_attention", points=1,
        hint="Use your stable softmax (large scores must not give NaN) and the true last dims of q, k, v.")
def test_attention_edge_cases(student):
    gen = generator(113)
    q, k, v = randn(gen, 3, 1, 4), randn(gen, 3, 1, 4), randn(gen, 3, 1, 2)
    _check_attention(student, q, k, v, None, "sequences of length 1", hint="One key gets weight 1; out = v.")
    q, k, v = randn(gen, 2, 4, 8, scale=20.0), randn(gen, 2, 5, 8, scale=20.0), randn(gen, 2, 5, 3)
    out, _ = student.scaled_dot_product_attention(q, k, v)
    if isinstance(out, torch.Tensor) and torch.isnan(out).any():
        fail("Large scores (in the hundreds) gave NaN.", hint="Subtract the row maximum in the softmax before exp().")
    # Scores in the hundreds keep about four significant digits after the softmax in float32.
    _check_attention(student, q, k, v, None, "large scores", hint="Use your stable softmax.", rtol=1e-3, atol=1e-5)
    q, k, v = randn(gen, 2, 4, 8), randn(gen, 2, 4, 8), randn(gen, 2, 4, 8)
    _check_attention(student, q, k, v, torch.ones(4, 4, dtype=torch.bool), "a mask that allows everything",
                     hint="A mask of all True must give the same result as no mask.")


# -- masks -----------------------------------------------------------------------------------------

@visible
@graded("causal_mask", points=2, hint="Position i may look at positions 0..i: True on and below the diagonal "
                                      "(torch.tril), as a bool tensor.")
def test_causal_mask_small(student):
    expect_close(student.causal_mask(5), torch.ones(5, 5).tril().bool(), "causal_mask(5)")


@visible
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


@graded("causal_mask", points=2, hint="True on and below the diagonal: query i may attend to keys 0..i, itself included.")
def test_causal_mask_matches_reference_for_many_sizes(student):
    for n in (8, 1, 2, 3, 33):  # n = 8 first: small masks cannot tell the mistakes apart
        expect_close(student.causal_mask(n), ref.causal_mask(n), f"causal_mask({n})",
                     hint="True on and below the diagonal (torch.tril).",
                     mistakes=[(lambda n=n: torch.ones(n, n, dtype=torch.bool).tril(-1),
                                "The diagonal is missing: a position may attend to itself (use tril(), not tril(-1))."),
                               (lambda n=n: torch.ones(n, n, dtype=torch.bool).triu(),
                                "This is the upper triangle: row i (a query) may see columns 0..i, i.e. below the "
                                "diagonal."),
                               (lambda n=n: torch.ones(n, n, dtype=torch.bool).triu(1),
                                "The mask is inverted: True must mark the positions a query MAY attend to.")])


@graded("causal_mask", points=1, requires_main=True,
        hint="Return a torch.bool tensor (dtype=torch.bool), not 0/1 numbers.")
def test_causal_mask_is_boolean(student):
    for n in (1, 4):
        mask = expect_tensor(student.causal_mask(n), f"causal_mask({n})", shape=(n, n))
        expect(mask.dtype == torch.bool, f"causal_mask({n}) has dtype {mask.dtype}; masks are torch.bool so that "
               f"~mask and masked_fill work.", hint="Create it with dtype=torch.bool, or call .bool() at the end.")


@graded("padding_mask", points=2, hint="Position j of sequence b is a real token when j < lengths[b].")
def test_padding_mask_random_lengths(student):
    gen = generator(120)
    max_len = 9
    lengths = torch.cat([torch.tensor([0, max_len]), torch.randint(0, max_len + 1, (6,), generator=gen)])
    positions = torch.arange(max_len)
    got = student.padding_mask(lengths, max_len)
    expected = ref.padding_mask(lengths, max_len)
    if (isinstance(got, torch.Tensor) and not got.dtype.is_floating_point and got.dtype != torch.bool
            and got.shape == expected.shape and torch.equal(got.bool(), expected)):
        fail(f"padding_mask(lengths={lengths.tolist()}, max_len={max_len}) holds the right 0s and 1s, but as "
             f"{got.dtype} integers, not booleans.",
             "The mask holds 0/1 integers: return a bool tensor. Comparing the positions with the lengths (<) "
             "already gives True/False; drop the conversion to int (.long(), .int()).")
    expect_close(got, expected,
                 f"padding_mask(lengths={lengths.tolist()}, max_len={max_len})", hint="True where position < length.",
                 mistakes=[(lambda: positions <= lengths[:, None],
                            "One padding position too many is True: position j is real when j < length, not "
                            "j <= length."),
                           (lambda: positions >= lengths[:, None],
                            "The mask is inverted: True marks the real tokens, False the padding.")])


@graded("padding_mask", points=1, requires_main=True,
        hint="The mask is (B, max_len) wide even when every sequence is shorter than max_len.")
def test_padding_mask_width_is_max_len(student):
    for lengths, max_len in ((torch.tensor([2, 3]), 7), (torch.tensor([0]), 2)):
        expect_tensor(student.padding_mask(lengths, max_len), f"padding_mask(tensor({lengths.tolist()}), {max_len})",
                      shape=(len(lengths), max_len), hint="Use torch.arange(max_len), not lengths.max().")


@graded("padding_mask", points=1, hint="True exactly where position j < lengths[b], as a torch.bool tensor of shape "
                                       "(B, max_len), whatever the integer dtype of lengths.")
def test_padding_mask_edge_cases(student):
    cases = [(torch.tensor([1]), 1), (torch.tensor([0, 0, 0]), 4), (torch.tensor([3, 1, 2], dtype=torch.int32), 3)]
    for lengths, max_len in cases:
        what = f"padding_mask({lengths.tolist()} ({lengths.dtype}), {max_len})"
        mask = expect_tensor(student.padding_mask(lengths, max_len), what, shape=(len(lengths), max_len))
        expect(mask.dtype == torch.bool, f"{what} has dtype {mask.dtype}; it should be torch.bool.")
        expect_close(mask, ref.padding_mask(lengths, max_len), what)


# -- sinusoidal positional encoding ------------------------------------------------------------------

@visible
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


@visible
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


def _pe_variant(n, d, *, base=10000.0, per_pair=True, swap=False, halves=False, first=0):
    position = torch.arange(first, first + n, dtype=torch.float64)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float64) if per_pair else torch.arange(d // 2, dtype=torch.float64)
    angle = position * base ** (-i / d)
    a, b = (torch.cos(angle), torch.sin(angle)) if swap else (torch.sin(angle), torch.cos(angle))
    if halves:
        return torch.cat([a, b], dim=1).float()
    pe = torch.empty(n, d, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = a, b
    return pe.float()


_PE_MISTAKES = (
    (dict(swap=True), "sin and cos are swapped: sin goes on the even columns (0, 2, ...), cos on the odd ones."),
    (dict(halves=True), "The sines and cosines are in two halves; interleave them: column 2i = sin, column 2i+1 = cos."),
    (dict(per_pair=False), "The exponent uses the pair number i: it should be 2i / d_model (the even column index "
                           "divided by d_model)."),
    (dict(base=1000.0), "The base should be 10000."),
    (dict(first=1), "Positions start at 0, not 1."),
)


@graded("sinusoidal_positional_encoding", points=2,
        hint="PE[p, 2i] = sin(p / 10000^(2i/d_model)) and PE[p, 2i+1] = cos(p / 10000^(2i/d_model)), p = 0, 1, ...")
def test_positional_encoding_matches_reference(student):
    for n, d in ((1, 2), (7, 6), (50, 16), (300, 64)):
        expect_close(student.sinusoidal_positional_encoding(n, d), ref.sinusoidal_positional_encoding(n, d),
                     f"sinusoidal_positional_encoding({n}, {d})", rtol=0.0, atol=1e-4,
                     hint="sin on even columns, cos on odd ones, frequency 1 / 10000^(2i / d_model).",
                     mistakes=[(lambda c=c, n=n, d=d: _pe_variant(n, d, **c), s) for c, s in _PE_MISTAKES])


@graded("sinusoidal_positional_encoding", points=1, requires_main=True,
        hint="Every value is a sine or cosine (between -1 and 1), and no two positions share the same encoding.")
def test_positional_encoding_is_bounded_and_distinct(student):
    pe = expect_tensor(student.sinusoidal_positional_encoding(100, 16), "sinusoidal_positional_encoding(100, 16)",
                       shape=(100, 16))
    expect(pe.is_floating_point(), "The encoding should be a floating-point tensor.")
    expect(bool(torch.isfinite(pe).all()) and float(pe.abs().max()) <= 1.0 + 1e-6,
           "Some values are not between -1 and 1 (or are not finite).")
    distance = torch.cdist(pe.double(), pe.double()) + torch.eye(100, dtype=torch.float64) * 10
    expect(float(distance.min()) > 1e-3, "Two different positions get (almost) the same encoding.")


# -- multi-head attention --------------------------------------------------------------------------

@visible
@graded("multi_head_attention", points=2, requires_main=True,
        hint="Four nn.Linear(d_model, d_model, bias=bias) named q_proj, k_proj, v_proj and out_proj.")
def test_mha_has_the_four_projections(student):
    mha = student.MultiHeadAttention(16, 4)
    expect_structure(student, mha, mha_shapes(16), "MultiHeadAttention(16, 4)",
                     hint="Four nn.Linear(d_model, d_model) named q_proj, k_proj, v_proj and out_proj.")
    plain = student.MultiHeadAttention(16, 4, bias=False)
    expect_structure(student, plain, mha_shapes(16, bias=False), "MultiHeadAttention(16, 4, bias=False)",
                     hint="Pass bias=bias on to every nn.Linear.")


@visible
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


def _mha_variant(weights, x, h, context=None, mask=None, *, split_wrong=False, merge_wrong=False,
                 skip_out_proj=False, scale_by_d_model=False, ignore_context=False, ignore_mask=False):
    ctx = x if context is None or ignore_context else context
    b, lq, d = x.shape
    dh = d // h

    def project(t, name):
        bias = weights.get(f"{name}.bias")
        return t @ weights[f"{name}.weight"].T + (0 if bias is None else bias)

    def split(t):
        n = t.shape[1]
        return t.reshape(b, h, n, dh) if split_wrong else t.reshape(b, n, h, dh).transpose(1, 2)

    q, k, v = split(project(x, "q_proj")), split(project(ctx, "k_proj")), split(project(ctx, "v_proj"))
    scores = q @ k.transpose(-2, -1) / math.sqrt(d if scale_by_d_model else dh)
    if mask is not None and not ignore_mask:
        scores = scores.masked_fill(~mask, -INF)
    out = ref.softmax(scores) @ v
    out = out.reshape(b, lq, d) if merge_wrong else out.transpose(1, 2).reshape(b, lq, d)
    return out if skip_out_proj else project(out, "out_proj")


_SPLIT_HINT = ("The heads are split in the wrong order: view (B, L, d_model) as (B, L, n_heads, d_head), then "
               "transpose(1, 2) to (B, n_heads, L, d_head); merge back with transpose(1, 2) and reshape.")
_MHA_MISTAKES = (
    (dict(split_wrong=True, merge_wrong=True), _SPLIT_HINT),
    (dict(split_wrong=True), _SPLIT_HINT),
    (dict(merge_wrong=True), _SPLIT_HINT),
    (dict(skip_out_proj=True), "The output projection is missing: return self.out_proj(...) of the merged heads."),
    (dict(scale_by_d_model=True), "Each head's scores must be scaled by sqrt(d_head), not sqrt(d_model)."),
    (dict(ignore_context=True), "With a context, keys and values come from the context (queries still come from x)."),
    (dict(ignore_mask=True), "The mask is not used: pass mask=mask on to scaled_dot_product_attention."),
)


def _student_mha(student, d, h, seed, bias=True, dtype=torch.float32):
    weights = random_weights(mha_shapes(d, bias), seed=seed, dtype=dtype)
    module = student.MultiHeadAttention(d, h, bias=bias)
    if dtype == torch.float64:
        module = module.double()
    load_weights(module, weights, f"MultiHeadAttention({d}, {h})",
                 hint="Name the projections q_proj, k_proj, v_proj and out_proj.")
    reference = ref.MultiHeadAttention(d, h, bias=bias).to(dtype)
    reference.load_state_dict(weights)
    return module, reference, weights


def _check_mha(module, reference, weights, h, x, context, mask, what, hint):
    actual = module(x, context=context, mask=mask)
    with torch.no_grad():
        expected = reference(x, context=context, mask=mask)
    mistakes = [(lambda c=c: _mha_variant(weights, x, h, context, mask, **c), s) for c, s in _MHA_MISTAKES
                if (context is not None or "ignore_context" not in c) and (mask is not None or "ignore_mask" not in c)]
    expect_close(actual, expected, what, hint=hint, mistakes=mistakes, check_dtype=True)
    return reference.last_weights


@graded("multi_head_attention", points=3,
        hint="Project x to q, k, v; split into heads (B, h, L, d_head); attend with your scaled_dot_product_attention; "
             "merge the heads back to (B, L, d_model); apply out_proj.")
def test_mha_matches_reference_self_attention(student):
    gen = generator(130)
    for b, n, d, h in ((2, 5, 16, 4), (1, 7, 24, 3), (3, 1, 8, 8), (2, 4, 12, 1)):
        module, reference, weights = _student_mha(student, d, h, seed=131 + d)
        _check_mha(module, reference, weights, h, randn(gen, b, n, d), None, None,
                   f"MultiHeadAttention({d}, {h}) on x of shape {(b, n, d)}",
                   hint="Split heads as (B, L, h, d_head) -> transpose -> (B, h, L, d_head); finish with out_proj.")


@graded("multi_head_attention", points=2,
        hint="Queries from x, keys and values from `context` (which may be longer or shorter than x).")
def test_mha_cross_attention(student):
    gen = generator(140)
    module, reference, weights = _student_mha(student, 16, 2, seed=141)
    x, context = randn(gen, 2, 4, 16), randn(gen, 2, 6, 16)
    _check_mha(module, reference, weights, 2, x, context, None, "cross-attention, x (2, 4, 16), context (2, 6, 16)",
               hint="k = k_proj(context), v = v_proj(context); q = q_proj(x).")
    padding = (torch.arange(6) < torch.tensor([6, 3])[:, None])[:, None, None, :]
    _check_mha(module, reference, weights, 2, x, context, padding, "cross-attention with a (2, 1, 1, 6) padding mask",
               hint="Pass the mask to the attention; it broadcasts over heads and queries.")


@graded("multi_head_attention", points=2,
        hint="Hand the mask to scaled_dot_product_attention after splitting the heads; it broadcasts to (B, h, Lq, Lk).")
def test_mha_masks(student):
    gen = generator(150)
    d, h, b, n = 16, 4, 2, 5
    module, reference, weights = _student_mha(student, d, h, seed=151)
    x = randn(gen, b, n, d)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    padding = (torch.arange(n) < torch.tensor([5, 2])[:, None])[:, None, None, :]
    per_head = torch.rand(b, h, n, n, generator=gen) < 0.5
    per_head[0, 1, 2] = False  # one query of one head may attend to nothing
    for mask, what in ((causal, "a causal (5, 5) mask"), (padding, "a (2, 1, 1, 5) padding mask"),
                       (per_head, "a (2, 4, 5, 5) mask with a fully masked query")):
        actual = module(x, mask=mask)
        if isinstance(actual, torch.Tensor) and torch.isnan(actual).any():
            fail(f"MultiHeadAttention gave NaN with {what}.",
                 hint="A query with nothing to attend to must get zero weights (see scaled_dot_product_attention).")
        _check_mha(module, reference, weights, h, x, None, mask, f"MultiHeadAttention with {what}",
                   hint="Pass mask=mask on to the attention of the split heads.")


@graded("multi_head_attention", points=2,
        hint="After each forward, keep the attention weights of every head: self.last_weights, shape (B, h, Lq, Lk).")
def test_mha_last_weights(student):
    gen = generator(160)
    d, h = 12, 3
    module, reference, weights = _student_mha(student, d, h, seed=161)
    for b, lq, lk in ((2, 4, 4), (1, 3, 6)):
        x = randn(gen, b, lq, d)
        context = None if lq == lk else randn(gen, b, lk, d)
        expected = _check_mha(module, reference, weights, h, x, context, None, f"the output for x {(b, lq, d)}",
                              hint="Split heads as (B, L, h, d_head) -> (B, h, L, d_head).")
        last = expect_tensor(module.last_weights, "self.last_weights", shape=(b, h, lq, lk),
                             hint="Store the per-head weights (B, n_heads, Lq, Lk) of the latest call, not an average.")
        expect_close(last.sum(-1), torch.ones(b, h, lq), "self.last_weights summed over the keys")
        expect_close(last, expected, f"self.last_weights for x {(b, lq, d)}",
                     hint="Store the weights the attention returned.")


@graded("multi_head_attention", points=1,
        hint="bias=False means nn.Linear(..., bias=False) for all four projections; nothing may force float32.")
def test_mha_without_bias_and_in_float64(student):
    gen = generator(170)
    module, reference, weights = _student_mha(student, 8, 2, seed=171, bias=False)
    _check_mha(module, reference, weights, 2, randn(gen, 2, 3, 8), None, None, "MultiHeadAttention(8, 2, bias=False)",
               hint="Create the projections with bias=bias.")
    module, reference, weights = _student_mha(student, 8, 2, seed=172, dtype=torch.float64)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    _check_mha(module, reference, weights, 2, randn(gen, 2, 4, 8, dtype=torch.float64), None, causal,
               "MultiHeadAttention(8, 2).double() on float64 input", hint="Keep the input's dtype throughout.")


# -- transformer block ------------------------------------------------------------------------------

def _torch_block(weights: dict[str, torch.Tensor], d: int, h: int, d_ff: int) -> nn.TransformerEncoderLayer:
    layer = nn.TransformerEncoderLayer(d, h, dim_feedforward=d_ff, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    mha = torch_mha({k.removeprefix("attn."): v for k, v in weights.items() if k.startswith("attn.")}, d, h)
    layer.self_attn.load_state_dict(mha.state_dict())
    for ours, theirs in (("ln1", "norm1"), ("ln2", "norm2"), ("mlp.0", "linear1"), ("mlp.2", "linear2")):
        getattr(layer, theirs).load_state_dict({"weight": weights[f"{ours}.weight"], "bias": weights[f"{ours}.bias"]})
    return layer


@visible
@graded("transformer_block", points=1, requires_main=True,
        hint="Submodules ln1, attn (MultiHeadAttention), ln2, and mlp = nn.Sequential(Linear(d, d_ff), GELU(), Linear(d_ff, d)).")
def test_block_structure(student):
    expect_structure(student, student.TransformerBlock(16, 4, 40), block_shapes(16, 40), "TransformerBlock(16, 4, 40)",
                     hint="Submodules ln1, attn, ln2, mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), "
                          "nn.Linear(d_ff, d_model)).")


@visible
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


def _block_variant(block: ref.TransformerBlock, x, mask, kind: str):
    attn = lambda t, m=mask: block.attn(t, mask=m)  # noqa: E731
    mlp = block.mlp
    if kind == "relu":
        mlp = lambda t: block.mlp[2](F.relu(block.mlp[0](t)))  # noqa: E731
    if kind == "tanh":
        mlp = lambda t: block.mlp[2](F.gelu(block.mlp[0](t), approximate="tanh"))  # noqa: E731
    if kind == "post-norm":
        x = block.ln1(x + attn(x))
        return block.ln2(x + mlp(x))
    if kind == "no attention residual":
        x = attn(block.ln1(x))
        return x + mlp(block.ln2(x))
    if kind == "no mlp residual":
        x = x + attn(block.ln1(x))
        return mlp(block.ln2(x))
    if kind == "no mask":
        attn = lambda t: block.attn(t)  # noqa: E731
    if kind == "norms swapped":
        x = x + attn(block.ln2(x))
        return x + mlp(block.ln1(x))
    x = x + attn(block.ln1(x))
    return x + mlp(block.ln2(x))


_BLOCK_MISTAKES = (
    ("post-norm", "This is a post-norm block (LayerNorm after adding). GPT-2 is pre-norm: x = x + attn(ln1(x)), "
                  "then x = x + mlp(ln2(x))."),
    ("no attention residual", "The attention's residual connection is missing: add its output to x (x = x + ...)."),
    ("no mlp residual", "The MLP's residual connection is missing: x = x + mlp(ln2(x))."),
    ("relu", "The MLP uses ReLU; use nn.GELU() (exact, the default) between the two linear layers."),
    ("tanh", "The MLP uses the tanh approximation of GELU; use nn.GELU() with its default approximate='none'."),
    ("no mask", "The mask is not passed on to the attention: self.attn(self.ln1(x), mask=mask)."),
    ("norms swapped", "ln1 and ln2 are swapped: ln1 goes before the attention, ln2 before the MLP."),
)


def _student_block(student, d, h, d_ff, seed, dtype=torch.float32):
    weights = random_weights(block_shapes(d, d_ff), seed=seed, dtype=dtype)
    module = student.TransformerBlock(d, h, d_ff)
    if dtype == torch.float64:
        module = module.double()
    load_weights(module, weights, f"TransformerBlock({d}, {h}, {d_ff})", hint="Use the contract's submodule names.")
    reference = ref.TransformerBlock(d, h, d_ff).to(dtype)
    reference.load_state_dict(weights)
    return module, reference


def _check_block(module, reference, x, mask, what, hint, **tolerance):
    actual = module(x, mask=mask)
    with torch.no_grad():
        expected = reference(x, mask=mask)
        mistakes = [(lambda k=k: _block_variant(reference, x, mask, k).detach(), s) for k, s in _BLOCK_MISTAKES
                    if mask is not None or k != "no mask"]
        expect_close(actual, expected, what, hint=hint, mistakes=mistakes, check_dtype=True, **tolerance)


@graded("transformer_block", points=3, hint="Pre-norm with two residuals: x = x + attn(ln1(x), mask); x = x + mlp(ln2(x)).")
def test_block_matches_reference(student):
    gen = generator(180)
    cases = [(16, 4, 40, 2, 6, "causal"), (24, 2, 24, 1, 5, None), (8, 1, 32, 3, 4, "padding")]
    for d, h, d_ff, b, n, kind in cases:
        module, reference = _student_block(student, d, h, d_ff, seed=181 + d)
        mask = None
        if kind == "causal":
            mask = torch.ones(n, n, dtype=torch.bool).tril()
        elif kind == "padding":
            mask = (torch.arange(n) < torch.tensor([4, 1, 3])[:, None])[:, None, None, :]
        _check_block(module, reference, randn(gen, b, n, d), mask,
                     f"TransformerBlock({d}, {h}, {d_ff}) on x {(b, n, d)} with {kind or 'no'} mask",
                     hint="x = x + attn(ln1(x), mask=mask); x = x + mlp(ln2(x)).")


@graded("transformer_block", points=2, requires_main=True,
        hint="Pass the mask to the attention; the MLP works on each position alone.")
def test_block_passes_the_mask_on(student):
    d, h, d_ff, n = 16, 4, 32, 7
    module, _ = _student_block(student, d, h, d_ff, seed=190)
    gen = generator(191)
    x = randn(gen, 2, n, d)
    changed = x.clone()
    changed[:, 4:] = randn(gen, 2, n - 4, d)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    expect_close(module(changed, mask=causal)[:, :4], module(x, mask=causal)[:, :4],
                 "the outputs at positions 0-3 after changing the inputs at positions 4-6, with a causal mask",
                 hint="With a causal mask, earlier positions cannot see later ones: self.attn(..., mask=mask).")


@graded("transformer_block", points=2, requires_main=True,
        hint="Both sublayers are residual: when their last layers output zero, the block returns its input unchanged.")
def test_block_is_identity_when_branches_are_zero(student):
    d, h, d_ff = 16, 2, 32
    weights = random_weights(block_shapes(d, d_ff), seed=200)
    for name in ("attn.out_proj.weight", "attn.out_proj.bias", "mlp.2.weight", "mlp.2.bias"):
        weights[name] = torch.zeros_like(weights[name])
    module = student.TransformerBlock(d, h, d_ff)
    load_weights(module, weights, f"TransformerBlock({d}, {h}, {d_ff})", hint="Use the contract's submodule names.")
    x = randn(generator(201), 2, 5, d)
    expect_close(module(x), x, "the block's output when attn.out_proj and mlp[2] are all zeros",
                 hint="Add each sublayer's output to x (residual connections) instead of replacing x; "
                      "and normalise the sublayer's input, not the sum (pre-norm).")


@graded("transformer_block", points=1, hint="Exact GELU (nn.GELU()) and default LayerNorm; nothing may force float32.")
def test_block_in_float64(student):
    module, reference = _student_block(student, 12, 3, 48, seed=210, dtype=torch.float64)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    _check_block(module, reference, randn(generator(211), 2, 6, 12, dtype=torch.float64), causal,
                 "TransformerBlock(12, 3, 48).double() on float64 input", hint="Use nn.GELU() and nn.LayerNorm(d_model).")


# -- MiniGPT ---------------------------------------------------------------------------------------

@visible
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


@visible
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


@visible
@graded("mini_gpt", points=2,
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


@visible
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


def _minigpt_variant(model: ref.MiniGPT, ids, kind: str):
    n = ids.shape[1]
    tokens, positions = model.tok_emb(ids), model.pos_emb(torch.arange(n))
    mask = None if kind == "not causal" else ref.causal_mask(n)
    x = tokens if kind in ("positions after blocks", "no positions") else tokens + positions
    for block in model.blocks:
        x = block(x, mask=mask)
    if kind == "positions after blocks":
        x = x + positions
    return model.lm_head(x if kind == "no final norm" else model.ln_f(x))


_MINIGPT_MISTAKES = (
    ("not causal", "The model is not causal: give every block mask=causal_mask(L)."),
    ("positions after blocks", "Add the position embeddings to the token embeddings before the first block, not after "
                               "the last one."),
    ("no positions", "The position embeddings are missing: x = tok_emb(ids) + pos_emb(arange(L))."),
    ("no final norm", "The final LayerNorm is missing: logits = lm_head(ln_f(x))."),
)


def _student_minigpt(student, config, seed):
    vocab, max_len, d, h, layers, d_ff = config
    weights = random_weights(minigpt_shapes(vocab, max_len, d, layers, d_ff), seed=seed)
    module = student.MiniGPT(*config)
    load_weights(module, weights, f"MiniGPT{config}", hint="Use the contract's names: tok_emb, pos_emb, blocks, ln_f, "
                                                          "lm_head.")
    reference = ref.MiniGPT(*config)
    reference.load_state_dict(weights)
    return module, reference


def _check_minigpt(module, reference, ids, what, hint):
    actual = module(ids)
    with torch.no_grad():
        expected = reference(ids)
        mistakes = [(lambda k=k: _minigpt_variant(reference, ids, k), s) for k, s in _MINIGPT_MISTAKES]
        expect_close(actual, expected, what, hint=hint, mistakes=mistakes, rtol=1e-4, atol=1e-4)


@graded("mini_gpt", points=3, hint="logits = lm_head(ln_f(blocks(tok_emb(ids) + pos_emb(positions), causal mask))).")
def test_minigpt_matches_reference(student):
    gen = generator(220)
    for config, shape in (((30, 12, 16, 4, 2, 32), (2, 12)), ((17, 20, 24, 3, 1, 48), (3, 5)),
                          ((50, 8, 8, 2, 3, 8), (1, 8))):
        module, reference = _student_minigpt(student, config, seed=221 + config[0])
        if "lm_head.bias" in state_dict_of(module, f"MiniGPT{config}"):
            fail(f"MiniGPT{config}'s lm_head has a bias (lm_head.bias), which GPT-2's output layer does not have.",
                 "lm_head has a bias: make it nn.Linear(d_model, vocab_size, bias=False). A bias of its own, which "
                 "no GPT-2 weight fills, shifts every logit.")
        ids = torch.randint(0, config[0], shape, generator=gen)
        _check_minigpt(module, reference, ids, f"MiniGPT{config} logits for input_ids of shape {shape}",
                       hint="Embed tokens + positions, run the blocks with a causal mask, then ln_f and lm_head.")


@graded("mini_gpt", points=1, requires_main=True,
        hint="Build the mask from the input's length L with causal_mask(L) and pass it to every block.")
def test_minigpt_is_causal_everywhere(student):
    module, _ = _student_minigpt(student, (25, 10, 16, 2, 2, 32), seed=230)
    ids = torch.randint(0, 25, (3, 10), generator=generator(231))
    before = module(ids)
    for cut in (1, 4, 9):
        changed = ids.clone()
        changed[:, cut:] = (changed[:, cut:] + 7) % 25
        expect_close(module(changed)[:, :cut], before[:, :cut],
                     f"the logits at positions before {cut} after changing the tokens from position {cut} on",
                     hint="Every block needs the causal mask: a position may only look at itself and earlier ones.")


@graded("mini_gpt", points=2, hint="Positions are 0..L-1 for an input of length L, anywhere from 1 to max_len.")
def test_minigpt_short_and_full_length_inputs(student):
    config = (20, 9, 16, 4, 2, 24)
    module, reference = _student_minigpt(student, config, seed=240)
    gen = generator(241)
    for n in (1, 3, 9):
        ids = torch.randint(0, 20, (2, n), generator=gen)
        _check_minigpt(module, reference, ids, f"MiniGPT{config} logits for a sequence of length {n}",
                       hint="Use torch.arange(L) for the positions and causal_mask(L) for the mask.")


@graded("mini_gpt", points=1, requires_main=True,
        hint="Nothing may mix different sequences of a batch: attention works within one sequence.")
def test_minigpt_batch_items_are_independent(student):
    module, _ = _student_minigpt(student, (15, 6, 8, 2, 1, 16), seed=250)
    ids = torch.randint(0, 15, (4, 6), generator=generator(251))
    together = module(ids)
    for i in range(4):
        expect_close(together[i:i + 1], module(ids[i:i + 1]), f"the logits of sequence {i}, alone vs in a batch of 4",
                     rtol=1e-4, atol=1e-5)


# -- loading GPT-2 ---------------------------------------------------------------------------------

_SMALL_GPT2 = gpt2_config(vocab_size=40, n_positions=12, d_model=16, n_heads=4, n_layers=2, d_ff=48)
# The same shape with lm_head a separate matrix, not the token embedding (tie_word_embeddings=False).
_UNTIED_GPT2 = gpt2_config(vocab_size=40, n_positions=12, d_model=16, n_heads=4, n_layers=2, d_ff=48, tie=False)


@visible
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


@visible
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


@visible
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


def _minigpt_args(config: dict) -> tuple[int, ...]:
    return (config["vocab_size"], config["n_positions"], config["n_embd"], config["n_head"], config["n_layer"],
            config["n_inner"])


def _expected_state(config: dict, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(**config))
    hf.load_state_dict(weights)
    model = ref.load_gpt2_weights(ref.MiniGPT(*_minigpt_args(config)), hf)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _diagnose_weight(name, got, expected, before, expected_state) -> str:
    """A hint for one MiniGPT weight that does not hold what GPT-2 holds."""
    if before is not None and torch.equal(got, before):
        return f"`{name}` still holds its initial value: nothing was copied into it."
    if got.dim() == 2 and same_answer(got, expected.T):
        return (f"`{name}` is transposed. GPT-2's Conv1D stores its weight as (in, out), nn.Linear as (out, in): "
                f"copy conv.weight.T.")
    for part in ("q", "k", "v"):
        if f".{part}_proj." in name:
            for other in ("q", "k", "v"):
                twin = expected_state[name.replace(f".{part}_proj.", f".{other}_proj.")]
                if other != part and (same_answer(got, twin) or
                                      (got.dim() == 2 and same_answer(got, twin.T))):
                    return (f"`{name}` holds the {other} part of c_attn. Its output columns are [q | k | v]: split "
                            f"the last dim of c_attn.weight (and c_attn.bias) into three d_model-wide pieces, in order.")
    if name == "lm_head.weight" and same_answer(got, expected_state["tok_emb.weight"]):
        return ("lm_head.weight holds the token embedding. In GPT-2 they are the same tensor, but copy "
                "hf_model.lm_head.weight so that any model loads correctly.")
    return f"`{name}` does not hold the matching GPT-2 weight; see the name map in the notebook."


def _diagnose_load(student_sd, expected_state, before) -> tuple[str, str] | None:
    for name, expected in expected_state.items():
        got = student_sd.get(name)
        if got is None or got.shape != expected.shape or not same_answer(got, expected):
            if got is None:
                return f"The loaded MiniGPT has no `{name}`.", "Use the contract's names."
            return (f"After loading, MiniGPT's `{name}` does not match GPT-2's weights.",
                    _diagnose_weight(name, got, expected, before.get(name), expected_state))
    return None


def _load(student, config, seed):
    weights = gpt2_weights(config, seed=seed)
    hf = student_gpt2(student, config, weights)
    model = student.MiniGPT(*_minigpt_args(config))
    before = state_dict_of(model, "MiniGPT")
    loaded = student.load_gpt2_weights(model, hf)
    if not hasattr(loaded, "type_name"):
        fail("load_gpt2_weights should return the MiniGPT it filled.", hint="End with `return model`.")
    return weights, hf, model, loaded, before


_LOAD_HINT = ("Conv1D weights are (in, out): copy their .T into nn.Linear; split c_attn into q | k | v; copy every "
              "LayerNorm's weight and bias, both embeddings and lm_head.")


@graded("load_gpt2_weights", points=3, hint=_LOAD_HINT)
def test_load_matches_gpt2_on_other_shapes(student):
    configs = (gpt2_config(50, 16, 24, 3, 1, 96), gpt2_config(30, 10, 16, 2, 3, 16),
               gpt2_config(20, 8, 8, 2, 2, 32, tie=False))
    gen = generator(260)
    for i, config in enumerate(configs):
        weights, _, _, loaded, before = _load(student, config, seed=261 + i)
        ids = torch.randint(0, config["vocab_size"], (2, config["n_positions"]), generator=gen)
        what = f"MiniGPT{_minigpt_args(config)} logits after loading a GPT-2 of the same shape"
        try:
            expect_close(loaded(ids), gpt2_logits(config, weights, ids), what, rtol=1e-4, atol=1e-4, hint=_LOAD_HINT)
        except CheckFailed as failure:
            found = _diagnose_load(state_dict_of(loaded, "the loaded MiniGPT"), _expected_state(config, weights), before)
            raise CheckFailed(failure.message, found[1] if found else _LOAD_HINT) from None


@graded("load_gpt2_weights", points=3, hint=_LOAD_HINT)
def test_load_copies_every_weight_the_right_way_round(student):
    config = gpt2_config(24, 10, 16, 4, 2, 32)
    weights, _, _, loaded, before = _load(student, config, seed=270)
    found = _diagnose_load(state_dict_of(loaded, "the loaded MiniGPT"), _expected_state(config, weights), before)
    if found:
        fail(*found)


@graded("load_gpt2_weights", points=1, requires_main=True,
        hint="Read from the GPT-2 model, never write to it: copy into MiniGPT (.T makes a view; don't transpose in place).")
def test_load_leaves_the_gpt2_model_unchanged(student):
    config = gpt2_config(24, 10, 16, 4, 2, 32)
    weights, hf, _, _, _ = _load(student, config, seed=280)
    after = state_dict_of(hf, "the GPT-2 model")
    for name, value in weights.items():
        expect(name in after and torch.equal(after[name], value),
               f"Loading changed the GPT-2 model's `{name}`.",
               hint="Use .T (a new view) and copy_ into MiniGPT's parameters; never call t_() or copy_ on GPT-2's.")


@graded("load_gpt2_weights", points=1, hint="Copy into the parameters of the model you are given (param.copy_ under "
                                            "torch.no_grad()) and return that same model.")
def test_load_fills_the_model_in_place(student):
    config = gpt2_config(24, 10, 16, 4, 2, 32)
    weights, _, model, _, _ = _load(student, config, seed=290)
    ids = torch.randint(0, 24, (2, 10), generator=generator(291))
    expect_close(model(ids), gpt2_logits(config, weights, ids), "the logits of the MiniGPT passed to load_gpt2_weights",
                 rtol=1e-4, atol=1e-4,
                 hint="Fill the model you were given (not a new one): copy_ into its parameters, then return it.")


# -- counting parameters ---------------------------------------------------------------------------

@visible
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


@visible
@graded("count_parameters", points=1, requires_main=True,
        hint="sum(p.numel() for p in ...) is already a Python int; don't wrap it in torch.tensor(...). A one-element "
             "tensor prints like a number but is not one (json.dumps and isinstance(n, int) reject it).")
def test_count_parameters_gives_a_python_int(student):
    for what, model in (("nn.Linear(10, 5)", student.construct("torch.nn.Linear", 10, 5)),
                        ("nn.ReLU()", student.construct("torch.nn.ReLU"))):
        n = student.count_parameters(model)
        expect(isinstance(n, int) and not isinstance(n, bool),
               f"count_parameters({what}) returned {n!r} ({type(n).__name__}); it should return a Python int.")


def _count(student, model, what: str, expected: int, hint: str, exactly_int: bool = False) -> None:
    n = student.count_parameters(model)
    if isinstance(n, torch.Tensor) and n.numel() == 1 and not n.is_floating_point() and not exactly_int:
        n = int(n)  # the type has its own check; the others judge the number
    expect(isinstance(n, int) and not isinstance(n, bool), f"count_parameters({what}) returned {n!r}; it should "
           f"return a Python int.", hint="sum(p.numel() for p in ...) is already an int; don't wrap it in a tensor.")
    expect(n == expected, f"{what} has {expected} trainable parameters, but count_parameters says {n}.", hint)


@graded("count_parameters", points=1, hint="Skip the parameters with requires_grad=False (frozen).")
def test_count_parameters_skips_frozen(student):
    emb = student.construct("torch.nn.Embedding", 50, 8)
    model = student.construct("torch.nn.Sequential", emb, student.construct("torch.nn.LayerNorm", 8),
                              student.construct("torch.nn.Linear", 8, 3))
    emb.requires_grad_(False)
    _count(student, model, "Embedding(50, 8) (frozen) -> LayerNorm(8) -> Linear(8, 3)", 16 + 27,
           hint="Frozen parameters (requires_grad=False) are not trainable; leave them out.")
    model.requires_grad_(False)
    _count(student, model, "the same model entirely frozen", 0, hint="A fully frozen model has 0 trainable parameters.")


@graded("count_parameters", points=1, hint="Count model.parameters(), not the state dict: buffers are not parameters.")
def test_count_parameters_skips_buffers(student):
    model = student.construct("torch.nn.Sequential", student.construct("torch.nn.BatchNorm1d", 6),
                              student.construct("torch.nn.Linear", 6, 2))
    _count(student, model, "BatchNorm1d(6) -> Linear(6, 2)", 12 + 14,
           hint="BatchNorm's running statistics are buffers, not parameters: count model.parameters() only.")


@graded("count_parameters", points=1, hint="A weight shared by two layers is one parameter: model.parameters() yields it once.")
def test_count_parameters_counts_shared_weights_once(student):
    shared = student.construct("torch.nn.Linear", 5, 5)
    model = student.construct("torch.nn.Sequential", shared, student.construct("torch.nn.Tanh"), shared)
    _count(student, model, "Sequential(lin, Tanh(), lin) with one shared Linear(5, 5)", 30,
           hint="Iterate model.parameters(), which lists a shared tensor once (named_parameters(remove_duplicate=False) "
                "and the state dict list it twice).")


@graded("count_parameters", points=1, hint="Return a Python int: the sum of p.numel() (0 for a model without parameters).")
def test_count_parameters_returns_an_int(student):
    _count(student, student.construct("torch.nn.ReLU"), "nn.ReLU()", 0, hint="sum() of nothing is 0.", exactly_int=True)
    _count(student, student.construct("torch.nn.Linear", 3, 2, bias=False), "nn.Linear(3, 2, bias=False)", 6,
           hint="Count the elements of each parameter (p.numel()), not the number of tensors.", exactly_int=True)

