"""Visible checks for 04_lora: what `check("04_lora/<exercise>")` runs in your notebook.

They build small models in your kernel (a tiny Llama from transformers, plain nn.Linear layers), give
them known weights, and compare what your code does with what the formulas say. More checks run when
your notebook is graded (among them: the same model wrapped by the `peft` library).

What they share with the graders' checks (the tiny Llama, reading your modules back) lives in
llmcourse.checking.shared.lora, so that both talk about your models in the same words.
"""
from __future__ import annotations

import math

import torch

from llmcourse.checking import expect, expect_close, fail, generator, graded, randn, state_dict_of
from llmcourse.checking.shared.lora import (ATTENTION, MLP, expect_lora_layer, expect_scores, flags_of, llama_weights,
                                            local_llama, logits_of, student_linear, student_llama, tiny_llama_config,
                                            types_of)

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


# -- merge_lora ------------------------------------------------------------------------------------

@graded("merge_lora", points=3,
        hint="Replace every LoRALinear (on its parent module) by layer.merged(): a plain nn.Linear whose weight is "
             "W + scaling * B @ A.")
def test_merge_lora_keeps_outputs(student):
    config, weights, model = injected_llama(student, 20, ["q_proj", "up_proj"], r=2, alpha=6)
    gen = generator(21)
    lora = {}
    for name, kind in types_of(student, model).items():
        if kind == "LoRALinear":
            d_out, d_in = weights[f"{name}.weight"].shape
            lora[f"{name}.lora_A.weight"] = randn(gen, 2, d_in, scale=0.3)
            lora[f"{name}.lora_B.weight"] = randn(gen, d_out, 2, scale=0.3)
    model.load_state_dict(lora, strict=False)
    ids = torch.randint(0, config["vocab_size"], (2, 7), generator=gen)
    before = logits_of(model, ids, "the model with LoRA")
    merged = student.merge_lora(model)
    if merged is None:
        fail("merge_lora should return the model.", hint="End with `return model`.")
    left = [n for n, kind in types_of(student, merged).items() if kind == "LoRALinear"]
    expect(not left, f"After merge_lora the model still has LoRALinear layers: {left[:3]}.")
    expect_close(logits_of(merged, ids, "the merged model"), before, "the logits after merge_lora (vs before it)",
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


@graded("rouge_l", points=3,
        hint="Find the length of the longest common subsequence (in order, gaps allowed) of the two token lists by "
             "dynamic programming; precision = LCS / candidate length, recall = LCS / reference length.")
def test_rouge_l_worked_examples(student):
    expect_scores(student.rouge_l("the cat sat on the mat", "The cat is on the mat"), (5 / 6, 5 / 6, 5 / 6),
                  'rouge_l("the cat sat on the mat", "The cat is on the mat")')
    expect_scores(student.rouge_l("mat on sat cat the", "the cat sat on mat"), (1 / 5, 1 / 5, 1 / 5),
                  'rouge_l("mat on sat cat the", "the cat sat on mat") (every word matches, but in reverse order)',
                  hint="ROUGE-L counts words in the same order: a longest common SUBSEQUENCE, not a bag of words.")


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
