"""Visible checks for 04_lora: what `check("04_lora/<exercise>")` runs in your notebook.

They build small models in your kernel (a tiny Llama from transformers, plain nn.Linear layers), give
them known weights, and compare what your code does with what the formulas say. More checks run when
your notebook is graded (among them: the same model wrapped by the `peft` library).

What they share with the graders' checks (the tiny Llama, reading your modules back) lives in
llmcourse.checking.shared.lora, so that both talk about your models in the same words.
"""
from __future__ import annotations

import math
import random

import torch

from llmcourse.checking import expect, expect_close, expect_tensor, fail, generator, graded, randn, state_dict_of
from llmcourse.checking.shared.lora import (ATTENTION, MLP, expect_lora_layer, expect_scores, flags_of, llama_weights,
                                            load_random_lora, local_llama, logits_of, student_linear, student_llama,
                                            tiny_llama_config, types_of)

ASSIGNMENT = "04_lora"


# -- counting --------------------------------------------------------------------------------------

@graded("count_trainable_parameters", points=2,
        hint="Add up p.numel() over model.parameters(), keeping only the parameters with p.requires_grad.")
def test_count_trainable_small_modules(student):
    first = student.construct("torch.nn.Linear", 4, 8)
    model = student.construct("torch.nn.Sequential", first, student.construct("torch.nn.ReLU"),
                              student.construct("torch.nn.Linear", 8, 2))
    n = student.count_trainable_parameters(model)
    expect(n == 58, f"Linear(4, 8) -> ReLU -> Linear(8, 2) has 4 * 8 + 8 + 8 * 2 + 2 = 58 parameters, all trainable, "
                    f"but count_trainable_parameters says {n!r}.")
    first.requires_grad_(False)
    n = student.count_trainable_parameters(model)
    expect(n == 18, f"With its first layer frozen, the same model has 8 * 2 + 2 = 18 trainable parameters, but "
                    f"count_trainable_parameters says {n!r}.",
           hint="Frozen parameters (requires_grad=False) are not trainable: skip them.")


@graded("count_trainable_parameters", points=1, requires_main=True,
        hint="A count is a plain Python int: sum(p.numel() for ...) already is one. Don't wrap it in torch.tensor "
             "(and if you have a one-element tensor, .item() turns it into a number).")
def test_count_trainable_returns_an_int(student):
    model = student.construct("torch.nn.Linear", 4, 8)
    n = student.count_trainable_parameters(model)
    expect(isinstance(n, int) and not isinstance(n, bool),
           f"count_trainable_parameters should return a Python int, but it returned {type(n).__name__} {n!r}.")


@graded("lora_parameter_count", points=2,
        hint="A is (r, d_in) and B is (d_out, r): count the entries of both (no biases).")
def test_lora_parameter_count_small(student):
    n = student.lora_parameter_count(128, 384, 8)
    expect(n == 8 * 128 + 384 * 8, f"A LoRA pair for a 128 -> 384 layer at rank 8 has 8 * 128 + 384 * 8 = 4096 "
                                    f"parameters, but lora_parameter_count(128, 384, 8) says {n!r}.")


# -- LoRALinear ------------------------------------------------------------------------------------

@graded("lora_linear", points=3, requires_main=True,
        hint="Keep the layer you are given as self.base and freeze it (requires_grad_(False)); add lora_A and "
             "lora_B as nn.Linear without bias; scaling = alpha / r.")
def test_lora_linear_structure(student):
    gen = generator(0)
    base = student_linear(student, randn(gen, 6, 10, scale=0.3), randn(gen, 6, scale=0.1))
    layer = student.LoRALinear(base, 4, 8)
    sd = state_dict_of(layer, "LoRALinear(Linear(10, 6), r=4, alpha=8)")
    expect_lora_layer(sd, "", 10, 6, 4, "LoRALinear(Linear(10, 6), r=4, alpha=8)")
    flags = flags_of(student, layer)
    expect(flags.get("lora_A.weight") and flags.get("lora_B.weight"), "lora_A and lora_B should be trainable.")
    frozen = [name for name in ("base.weight", "base.bias") if flags.get(name, True)]
    expect(not frozen, f"The base layer's parameters ({', '.join(frozen)}) should be frozen (requires_grad=False), "
                       f"or missing from `self.base`.",
           hint="Keep the given layer as `self.base` and call self.base.requires_grad_(False): weight AND bias.")
    scaling = layer.scaling
    expect(isinstance(scaling, (int, float)) and abs(scaling - 2.0) < 1e-12,
           f"With r=4 and alpha=8, `scaling` should be alpha / r = 2.0, but it is {scaling!r}.")


@graded("lora_linear", points=3,
        hint="Initialise lora_B's weight to zero (nn.init.zeros_) and leave lora_A random: the wrapped layer then "
             "computes exactly what the base layer did.")
def test_lora_linear_starts_as_the_base(student):
    gen = generator(1)
    weight, bias = randn(gen, 6, 10, scale=0.3), randn(gen, 6, scale=0.1)
    layer = student.LoRALinear(student_linear(student, weight, bias), 4, 8)
    sd = state_dict_of(layer, "LoRALinear")
    expect(bool((sd.get("lora_B.weight", torch.ones(1)) == 0).all()), "lora_B's weight should start at zero.")
    expect(bool((sd.get("lora_A.weight", torch.zeros(1)) != 0).any()),
           "lora_A's weight is all zero: with A = B = 0 no gradient reaches either, and LoRA cannot learn.",
           hint="Only B starts at zero; A keeps nn.Linear's random initialisation.")
    x = randn(gen, 3, 10)
    expect_close(layer(x), x @ weight.T + bias, "LoRALinear's output right after creation (should equal the base's)")


@graded("lora_linear", points=4,
        hint="forward(x) = base(x) + scaling * lora_B(lora_A(dropout(x))), with scaling = alpha / r.")
def test_lora_linear_forward(student):
    gen = generator(2)
    weight, bias = randn(gen, 6, 10, scale=0.3), randn(gen, 6, scale=0.1)
    layer = student.LoRALinear(student_linear(student, weight, bias), 2, 6)
    a, b = randn(gen, 2, 10), randn(gen, 6, 2)
    layer.load_state_dict({"lora_A.weight": a, "lora_B.weight": b}, strict=False)
    x = randn(gen, 2, 5, 10)
    expect_close(layer(x), x @ weight.T + bias + 3.0 * (x @ a.T @ b.T),
                 "LoRALinear(r=2, alpha=6) with known A and B, for x of shape (2, 5, 10)")


@graded("lora_linear", points=2,
        hint="Dropout (randomly zeroing inputs while training) belongs on the input of the LoRA path only: "
             "base(x) + scaling * lora_B(lora_A(dropout(x))). The frozen base must always see the whole x.")
def test_lora_linear_dropout_only_on_the_lora_path(student):
    gen = generator(3)
    weight, bias = randn(gen, 5, 8, scale=0.3), randn(gen, 5, scale=0.1)
    layer = student.LoRALinear(student_linear(student, weight, bias), 2, 4, dropout=0.5)
    layer.load_state_dict({"lora_A.weight": randn(gen, 2, 8), "lora_B.weight": torch.zeros(5, 2)}, strict=False)
    layer.train()
    x = randn(gen, 64, 8)
    expect_close(layer(x), x @ weight.T + bias,
                 "LoRALinear(dropout=0.5) with B = 0 in training mode (the LoRA path adds nothing, so the output "
                 "should be the base's)")


@graded("lora_linear", points=2,
        hint="merged() returns a new nn.Linear with weight W + scaling * lora_B.weight @ lora_A.weight (shape "
             "(out, in), like W) and the base's bias: one layer that computes what the LoRALinear computes.")
def test_lora_linear_merged(student):
    gen = generator(4)
    weight, bias = randn(gen, 6, 10, scale=0.3), randn(gen, 6, scale=0.1)
    layer = student.LoRALinear(student_linear(student, weight, bias), 2, 6)
    a, b = randn(gen, 2, 10), randn(gen, 6, 2)
    layer.load_state_dict({"lora_A.weight": a, "lora_B.weight": b}, strict=False)
    x = randn(gen, 3, 10)
    linear = layer.merged()
    if linear is None or getattr(linear, "type_name", "") != "torch.nn.modules.linear.Linear":
        fail(f"merged() should return an nn.Linear, not {linear!r}.",
             hint="Build nn.Linear(in_features, out_features) and copy the merged weight and the bias into it.")
    sd = state_dict_of(linear, "merged()")
    expect_close(sd.get("weight"), weight + 3.0 * b @ a,
                 "merged().weight for r=2, alpha=6 (should be W + (6 / 2) * B @ A)")
    expect_close(sd.get("bias"), bias, "merged().bias (should be the base layer's bias)")
    expect_close(linear(x), x @ weight.T + bias + 3.0 * (x @ a.T @ b.T), "the merged layer's output")


@graded("lora_linear", points=1, requires_main=True,
        hint="merged() must build a new layer and leave the LoRALinear as it was: adding scaling * B @ A into "
             "self.base.weight in place would count the update twice in the LoRALinear from then on.")
def test_lora_linear_merged_leaves_the_layer_unchanged(student):
    gen = generator(5)
    weight, bias = randn(gen, 6, 10, scale=0.3), randn(gen, 6, scale=0.1)
    layer = student.LoRALinear(student_linear(student, weight, bias), 2, 6)
    layer.load_state_dict({"lora_A.weight": randn(gen, 2, 10), "lora_B.weight": randn(gen, 6, 2)}, strict=False)
    x = randn(gen, 3, 10)
    before = layer(x)
    layer.merged()
    expect_close(state_dict_of(layer, "LoRALinear").get("base.weight"), weight,
                 "the base layer's weight after calling merged() (should be unchanged)")
    expect_close(layer(x), before, "the LoRALinear's output after calling merged() (should be unchanged)")


@graded("lora_linear", points=1, requires_main=True,
        hint="Create lora_A and lora_B with the base layer's dtype (and device): nn.Linear(..., bias=False, "
             "dtype=base.weight.dtype, device=base.weight.device). Otherwise a float64 (or float16) model gets "
             "float32 factors, and the matrix products fail or change precision.")
def test_lora_linear_keeps_the_dtype(student):
    gen = generator(6)
    weight, bias = randn(gen, 3, 6, dtype=torch.float64), randn(gen, 3, dtype=torch.float64)
    layer = student.LoRALinear(student_linear(student, weight, bias), 2, 4)
    sd = state_dict_of(layer, "LoRALinear on a float64 layer")
    expect_lora_layer(sd, "", 6, 3, 2, "LoRALinear on a float64 layer")
    dtypes = (sd["lora_A.weight"].dtype, sd["lora_B.weight"].dtype)
    expect(dtypes == (torch.float64, torch.float64),
           f"On a float64 base layer, lora_A and lora_B should be float64 too, but they are {dtypes[0]} and "
           f"{dtypes[1]}.")
    x = randn(gen, 2, 6, dtype=torch.float64)
    expect_tensor(layer(x), "LoRALinear's output for a float64 input of shape (2, 6)", shape=(2, 3),
                  dtype=torch.float64)


# -- inject_lora -----------------------------------------------------------------------------------

def injected_llama(student, seed: int, targets, r: int = 4, alpha: float = 8):
    config = tiny_llama_config()
    weights = llama_weights(config, seed)
    model = student.inject_lora(student_llama(student, config, weights), targets, r, alpha)
    return config, weights, model


@graded("inject_lora", points=4,
        hint="Freeze the whole model first (model.requires_grad_(False)), then replace each nn.Linear whose name "
             "ends with a target by LoRALinear(that_linear, r, alpha, dropout) on its parent module.")
def test_inject_lora_wraps_the_targets(student):
    config, _, model = injected_llama(student, 10, ["q_proj", "v_proj"])
    if model is None or not getattr(model, "type_name", "").endswith("LlamaForCausalLM"):
        fail("inject_lora should return the model it was given.", hint="End with `return model`.")
    types = types_of(student, model)
    wrapped = sorted(name for name, kind in types.items() if kind == "LoRALinear")
    expected = sorted(f"model.layers.{i}.self_attn.{t}" for i in range(2) for t in ("q_proj", "v_proj"))
    expect(wrapped == expected, f"With target_modules=['q_proj', 'v_proj'] the LoRALinear layers should be "
                                f"{expected}, but they are {wrapped}.")
    flags = flags_of(student, model)
    trainable = sorted(name for name, on in flags.items() if on)
    expect(all(".lora_A." in n or ".lora_B." in n for n in trainable),
           f"Only lora_A and lora_B should be trainable, but so are: {[n for n in trainable if 'lora_' not in n][:4]}.")
    d = config["hidden_size"]
    n = sum(math.prod(v.shape) for k, v in state_dict_of(model, "the model").items() if flags.get(k))
    expect(n == 4 * 4 * (d + d), f"4 wrapped 16 -> 16 layers at rank 4 should give {4 * 4 * 32} trainable "
                                 f"parameters, but the model has {n}.")


@graded("inject_lora", points=3, requires_main=True,
        hint="Right after inject_lora the model must compute exactly what it did before (B starts at zero).")
def test_inject_lora_leaves_outputs_unchanged(student):
    config, weights, model = injected_llama(student, 11, ATTENTION + MLP)
    ids = torch.randint(0, config["vocab_size"], (2, 7), generator=generator(12))
    expect_close(logits_of(model, ids, "the model after inject_lora"), local_llama(config, weights)(input_ids=ids).logits,
                 "the logits right after inject_lora (compared with the untouched model)")


def named_linears(student, gen):
    """A ModuleDict of biased layers whose names test the "ends with" rule: proj, out_proj, proj_head, inner.proj
    (and a LayerNorm, inner.norm)."""
    def linear(d_in, d_out):
        return student_linear(student, randn(gen, d_out, d_in, scale=0.3), randn(gen, d_out, scale=0.1))

    inner = student.construct("torch.nn.ModuleDict", {"proj": linear(6, 6),
                                                      "norm": student.construct("torch.nn.LayerNorm", 6)})
    return student.construct("torch.nn.ModuleDict", {"proj": linear(6, 4), "out_proj": linear(4, 6),
                                                     "proj_head": linear(6, 3), "inner": inner})


@graded("inject_lora", points=2,
        hint="A target names whole parts of a qualified name: a layer matches when its name equals the target or "
             "ends with '.' + target. 'proj' in name also matches 'proj_head', and name.endswith('proj') also "
             "matches 'out_proj'.")
def test_inject_lora_matches_whole_names(student):
    model = student.inject_lora(named_linears(student, generator(13)), ["proj"], 2, 4)
    if model is None:
        fail("inject_lora should return the model it was given.", hint="End with `return model`.")
    wrapped = sorted(name for name, kind in types_of(student, model).items() if kind == "LoRALinear")
    expect(wrapped == ["inner.proj", "proj"],
           f"In a model with layers proj, out_proj, proj_head and inner.proj, target_modules=['proj'] should wrap "
           f"exactly ['inner.proj', 'proj'], but inject_lora wrapped {wrapped}.")


@graded("inject_lora", points=2,
        hint="Freeze the whole model first with model.requires_grad_(False): that freezes every parameter, "
             "biases and norms included. Only the new lora_A and lora_B are trainable afterwards.")
def test_inject_lora_freezes_biases_and_norms(student):
    model = student.inject_lora(named_linears(student, generator(14)), ["proj"], 2, 4)
    if model is None:
        fail("inject_lora should return the model it was given.", hint="End with `return model`.")
    trainable = sorted(name for name, on in flags_of(student, model).items() if on)
    expected = sorted(f"{layer}.lora_{x}.weight" for layer in ("proj", "inner.proj") for x in "AB")
    others = [n for n in trainable if ".lora_A." not in n and ".lora_B." not in n]
    expect(not others, f"After inject_lora these parameters are still trainable: {others[:4]}.")
    expect(trainable == expected, f"After inject_lora(model, ['proj'], ...) the trainable parameters should be "
                                  f"{expected}, but they are {trainable}.",
           hint="Freeze first, wrap after: freezing after wrapping also freezes lora_A and lora_B." if not trainable
           else "Only the layers whose names end with '.proj' (or are 'proj') get a lora_A and a lora_B.")


# -- merge_lora ------------------------------------------------------------------------------------

@graded("merge_lora", points=3,
        hint="Replace every LoRALinear (on its parent module) by layer.merged(): a plain nn.Linear whose weight is "
             "W + scaling * B @ A.")
def test_merge_lora_keeps_outputs(student):
    config, weights, model = injected_llama(student, 20, ["q_proj", "up_proj"], r=2, alpha=6)
    gen = generator(21)
    load_random_lora(student, model, weights, gen, r=2)
    ids = torch.randint(0, config["vocab_size"], (2, 7), generator=gen)
    before = logits_of(model, ids, "the model with LoRA")
    merged = student.merge_lora(model)
    if merged is None:
        fail("merge_lora should return the model.", hint="End with `return model`.")
    left = [n for n, kind in types_of(student, merged).items() if kind == "LoRALinear"]
    expect(not left, f"After merge_lora the model still has LoRALinear layers: {left[:3]}.")
    expect_close(logits_of(merged, ids, "the merged model"), before, "the logits after merge_lora (vs before it)",
                 rtol=1e-4, atol=1e-4)


@graded("merge_lora", points=2,
        hint="Replace every LoRALinear (on its parent module, under the same name) by layer.merged(): an nn.Linear "
             "with weight W + scaling * B @ A that keeps the base layer's bias.")
def test_merge_lora_keeps_the_biases(student):
    config = tiny_llama_config(attention_bias=True, mlp_bias=True)  # every projection has a bias
    weights = llama_weights(config, 22)
    model = student.inject_lora(student_llama(student, config, weights), ["v_proj", "down_proj"], 2, 4)
    gen = generator(23)
    load_random_lora(student, model, weights, gen, r=2)
    ids = torch.randint(0, config["vocab_size"], (2, 7), generator=gen)
    before = logits_of(model, ids, "the model with LoRA")
    merged = student.merge_lora(model)
    if merged is None:
        fail("merge_lora should return the model.", hint="End with `return model`.")
    missing = sorted(set(weights) - set(state_dict_of(merged, "the merged model")))
    expect(not missing, f"After merge_lora, a model whose layers have biases lacks: {missing[:3]}.",
           hint="The merged nn.Linear keeps the base layer's bias: nn.Linear(in, out, bias=base.bias is not None), "
                "with the bias copied over." if all(k.endswith(".bias") for k in missing) else None)
    expect_close(logits_of(merged, ids, "the merged model"), before,
                 "the logits after merge_lora, in a model whose layers have biases (vs before it)",
                 rtol=1e-4, atol=1e-4)


# -- ROUGE -----------------------------------------------------------------------------------------

@graded("rouge_n", points=3,
        hint="Count each n-gram of the lower-cased whitespace tokens; the overlap counts an n-gram at most as often "
             "as it occurs in each text (min of the two counts). precision = overlap / candidate n-grams, "
             "recall = overlap / reference n-grams.")
def test_rouge_n_worked_examples(student):
    expect_scores(student.rouge_n("the cat sat on the mat", "The cat is on the mat"), (5 / 6, 5 / 6, 5 / 6),
                  'rouge_n("the cat sat on the mat", "The cat is on the mat")')
    expect_scores(student.rouge_n("the cat sat on the mat", "The cat is on the mat", n=2), (3 / 5, 3 / 5, 3 / 5),
                  'rouge_n(..., n=2) for the same texts (bigrams "the cat", "on the", "the mat" match)')
    expect_scores(student.rouge_n("the the the", "the cat"), (1 / 3, 1 / 2, 0.4),
                  'rouge_n("the the the", "the cat")',
                  hint='"the" occurs once in the reference, so it can match only once: clip the counts.')


@graded("rouge_n", points=1, requires_main=True,
        hint="A text with no n-grams (empty, or shorter than n) gives nothing to divide by: its precision or "
             "recall is 0, and f1 is 0 when precision + recall is 0. Test before you divide.")
def test_rouge_n_empty_texts_score_zero(student):
    for cand, refr, n in [("", "the cat", 1), ("the cat", "", 1), ("", "", 1), ("the cat", "the cat sat", 3)]:
        expect_scores(student.rouge_n(cand, refr, n=n), (0.0, 0.0, 0.0), f"rouge_n({cand!r}, {refr!r}, n={n})")


@graded("rouge_l", points=3,
        hint="Find the length of the longest common subsequence (in order, gaps allowed) of the two token lists by "
             "dynamic programming; precision = LCS / candidate length, recall = LCS / reference length.")
def test_rouge_l_worked_examples(student):
    expect_scores(student.rouge_l("the cat sat on the mat", "The cat is on the mat"), (5 / 6, 5 / 6, 5 / 6),
                  'rouge_l("the cat sat on the mat", "The cat is on the mat")')
    expect_scores(student.rouge_l("mat on sat cat the", "the cat sat on mat"), (1 / 5, 1 / 5, 1 / 5),
                  'rouge_l("mat on sat cat the", "the cat sat on mat") (every word matches, but in reverse order)',
                  hint="ROUGE-L counts words in the same order: a longest common SUBSEQUENCE, not a bag of words.")


@graded("rouge_l", points=2,
        hint="f1 is the harmonic mean of precision p and recall r: 2 * p * r / (p + r). It is pulled towards the "
             "smaller of the two (the plain mean (p + r) / 2 is not).")
def test_rouge_l_f1_is_the_harmonic_mean(student):
    expect_scores(student.rouge_l("the cat sat on the mat", "the cat sat"), (1 / 2, 1.0, 2 / 3),
                  'rouge_l("the cat sat on the mat", "the cat sat") (LCS 3 of 6 and of 3 words: f1 = 2 * 0.5 * 1 '
                  '/ 1.5)')


# -- finetune --------------------------------------------------------------------------------------

def memorise_examples(n: int = 4) -> list[dict]:
    """n copies of one short sequence, its first 3 tokens unlabelled (every batch is then the same)."""
    ids = [1, 5, 9, 13, 17, 21, 25, 2]
    return [{"input_ids": list(ids), "labels": [-100] * 3 + ids[3:]} for _ in range(n)]


@graded("finetune", points=3,
        hint="Return a list with one float (loss.item()) per step; record each step's loss before updating, so "
             "the first is the untrained model's loss.")
def test_finetune_returns_the_losses(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 30)
    model = student_llama(student, config, weights)
    losses = student.finetune(model, memorise_examples(), 10, 3e-2, batch_size=2, seed=0)
    if not isinstance(losses, list) or len(losses) != 10 or not all(isinstance(v, float) for v in losses):
        fail(f"finetune(..., steps=10) should return a list of 10 floats, not {type(losses).__name__} "
             f"{str(losses)[:80]}.")
    example = memorise_examples(1)[0]
    start = local_llama(config, weights)(input_ids=torch.tensor([example["input_ids"]]),
                                         labels=torch.tensor([example["labels"]])).loss.item()
    expect(abs(losses[0] - start) < 1e-4 * max(1.0, start),
           f"The first loss should be the untrained model's loss on the first batch ({start:.4f}), but it is "
           f"{losses[0]:.4f}.", hint="Use the loss the model returns when given labels (model(**batch).loss), and "
                                     "record it before the optimizer step.")
    expect(losses[-1] < 0.5 * losses[0], f"On a batch repeated 10 times at lr=3e-2 the loss should fall below half "
                                         f"its start, but it went from {losses[0]:.3f} to {losses[-1]:.3f}.",
           hint="optimizer.zero_grad(), loss.backward(), optimizer.step() at every step, with AdamW(lr=lr).")


def varied_examples(seed: int, count: int) -> list[dict]:
    """`count` random sequences of 4 to 12 tokens, each with an unlabelled prompt of random length."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        ids = [rng.randrange(3, 40) for _ in range(rng.randint(4, 12))]
        prompt = rng.randint(1, len(ids) - 2)
        examples.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return examples


@graded("finetune", points=2,
        hint="Make one torch.optim.AdamW(trainable parameters, lr=lr) before the loop (it keeps running averages "
             "of the gradients from step to step), and at every step: loss = model(**batch).loss; "
             "optimizer.zero_grad(); loss.backward(); optimizer.step(). Without zero_grad the gradients of "
             "earlier steps add up.")
def test_finetune_steps_like_adamw(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 31)
    data = memorise_examples(4)  # every batch is the same, whatever the order
    losses = student.finetune(student_llama(student, config, weights), data, 4, 1e-2, batch_size=2, seed=0)
    if not isinstance(losses, list) or len(losses) != 4:
        fail(f"finetune(..., steps=4) should return a list of 4 losses, not {str(losses)[:80]}.")
    # The textbook loop, here in the checker, on that one batch.
    model = local_llama(config, weights)
    batch = {"input_ids": torch.tensor([data[0]["input_ids"]] * 2), "labels": torch.tensor([data[0]["labels"]] * 2),
             "attention_mask": torch.ones(2, len(data[0]["input_ids"]), dtype=torch.long)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    expected = []
    for _ in range(4):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        expected.append(loss.item())
    expect_close(torch.tensor(losses, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                 "the 4 losses on a repeated batch (compared with torch's AdamW made once, zero_grad every step)",
                 rtol=1e-4, atol=1e-5)


@graded("finetune", points=2,
        hint="Each shuffled pass uses every example once (a permutation, not random draws), so with batch_size == "
             "len(dataset) the first batch is the whole data set. Pad it with pad_batch: padding gets label -100, "
             "so the loss ignores it.")
def test_finetune_first_batch_is_the_whole_padded_data_set(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 32)
    data = varied_examples(33, 6)
    losses = student.finetune(student_llama(student, config, weights), data, 1, 1e-3, batch_size=6, seed=3)
    if not isinstance(losses, list) or len(losses) != 1:
        fail(f"finetune(..., steps=1) should return a list of 1 loss, not {str(losses)[:80]}.")
    pad = torch.nn.utils.rnn.pad_sequence
    batch = {"input_ids": pad([torch.tensor(e["input_ids"]) for e in data], batch_first=True, padding_value=0),
             "labels": pad([torch.tensor(e["labels"]) for e in data], batch_first=True, padding_value=-100),
             "attention_mask": pad([torch.ones(len(e["input_ids"]), dtype=torch.long) for e in data],
                                   batch_first=True)}
    with torch.no_grad():
        expected = local_llama(config, weights)(**batch).loss.item()
    expect(abs(losses[0] - expected) < 1e-4 * max(1.0, expected),
           f"With batch_size=6 on 6 examples of different lengths, the first loss should be the untrained model's "
           f"loss on all 6, right-padded ({expected:.4f}), but it is {losses[0]:.4f}.")


@graded("finetune", points=1, requires_main=True,
        hint="Give the optimizer only the parameters with requires_grad=True and never unfreeze anything: "
             "finetune trains what the caller left trainable (all of it, or only LoRA's factors).")
def test_finetune_leaves_frozen_parameters_alone(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 34)
    model = student_llama(student, config, weights)
    model.requires_grad_(False)
    model.lm_head.requires_grad_(True)
    student.finetune(model, memorise_examples(4), 2, 1e-2, batch_size=2, seed=0)
    after = state_dict_of(model, "the model after finetune")
    changed = [k for k, v in weights.items() if k != "lm_head.weight" and not torch.equal(after[k], v)]
    expect(not changed, f"With everything frozen but lm_head, finetune changed frozen parameters: {changed[:3]}.")
    flags = flags_of(student, model)
    unfrozen = [k for k, on in flags.items() if on and k != "lm_head.weight"]
    expect(not unfrozen, f"finetune made frozen parameters trainable again: {unfrozen[:3]}.")


@graded("finetune", points=1, requires_main=True,
        hint="Shuffle with your own torch.Generator().manual_seed(seed) (passed as generator= to torch.randperm), "
             "not the global random state: the same seed then gives the same batches, and another seed others.")
def test_finetune_same_seed_same_losses(student):
    config = tiny_llama_config()
    weights = llama_weights(config, 35)
    data = varied_examples(36, 8)
    runs = [student.finetune(student_llama(student, config, weights), data, 2, 1e-3, batch_size=2, seed=s)
            for s in (7, 7, 8)]
    expect(all(isinstance(r, list) and len(r) == 2 for r in runs), "finetune(..., steps=2) should return 2 losses.")
    expect(max(abs(a - b) for a, b in zip(runs[0], runs[1])) < 1e-6,
           f"Two runs with seed=7 from the same weights gave different losses: {runs[0]} and {runs[1]}.")
    expect(runs[0] != runs[2], "Runs with seed=7 and seed=8 gave the same losses: is `seed` used for the shuffling?")
