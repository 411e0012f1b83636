"""What the 04_lora checks, visible and hidden, both use: a tiny Llama built from the same random weights in the
student's kernel and here, the student's modules read back as data, and how ROUGE scores are read.
07_deployment's checks build their tiny Llamas with these helpers too.

The checks (grader.checks.lora) import these helpers from here, and so does the students' copy of the visible
checks (llmcourse.checks.lora), with which this module ships.
"""
from __future__ import annotations

import math

import torch

from llmcourse.checking import fail, generator, randn

# The linear layers of a Llama block, by the name their qualified names end with.


ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]


# -- a tiny Llama and plain layers, the same in the kernel and here --------------------------------

def tiny_llama_config(**changes) -> dict:
    """LlamaConfig arguments for a model small enough to check in milliseconds (no dropout anywhere)."""
    config = dict(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, attention_dropout=0.0)
    config.update(changes)
    return config


def llama_weights(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """Random weights of a sensible size for every parameter of a LlamaForCausalLM with this config."""
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in LlamaForCausalLM(LlamaConfig(**config)).state_dict().items()}
    gen = generator(seed)
    weights = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        if "norm" in name:
            value = 1.0 + 0.1 * noise
        elif "embed" in name:
            value = noise
        else:
            value = noise / math.sqrt(shape[-1])
        weights[name] = value.float()
    return weights


def local_llama(config: dict, weights: dict[str, torch.Tensor]):
    """transformers' own LlamaForCausalLM with these weights, here in the checker."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(**config))
    model.load_state_dict(weights)
    return model.eval()


def student_llama(student, config: dict, weights: dict[str, torch.Tensor]):
    """The same LlamaForCausalLM, built inside the student's kernel."""
    model = student.construct("transformers.LlamaForCausalLM", student.construct("transformers.LlamaConfig", **config))
    model.load_state_dict(weights)
    model.eval()
    return model


def student_linear(student, weight: torch.Tensor, bias: torch.Tensor | None):
    """An nn.Linear with these weights, inside the student's kernel."""
    out_features, in_features = weight.shape
    linear = student.construct("torch.nn.Linear", in_features, out_features, bias=bias is not None, dtype=weight.dtype)
    linear.load_state_dict({"weight": weight} if bias is None else {"weight": weight, "bias": bias})
    return linear


# -- the student's modules, as data ----------------------------------------------------------------

def flags_of(student, module) -> dict[str, bool]:
    """{parameter name: requires_grad} of a module in the student's kernel, in one request."""
    return student.construct("llmcourse.in_kernel.requires_grad_flags", module)


def types_of(student, module) -> dict[str, str]:
    """{submodule name: class name} of a module in the student's kernel, in one request."""
    return student.construct("llmcourse.in_kernel.module_types", module)


def load_random_lora(student, model, weights: dict[str, torch.Tensor], gen: torch.Generator,
                     r: int) -> dict[str, torch.Tensor]:
    """Random, non-zero factors A and B for every LoRALinear of a model in the student's kernel (a fresh B is
    zero, which would hide every mistake after it), loaded into it; returns them."""
    lora = {}
    for name, kind in types_of(student, model).items():
        if kind == "LoRALinear":
            d_out, d_in = weights[f"{name}.weight"].shape
            lora[f"{name}.lora_A.weight"] = randn(gen, r, d_in, scale=0.3)
            lora[f"{name}.lora_B.weight"] = randn(gen, d_out, r, scale=0.3)
    model.load_state_dict(lora, strict=False)
    return lora


def logits_of(model, ids: torch.Tensor, what: str) -> torch.Tensor:
    """The logits of a transformers causal LM in the student's kernel (as a tuple: ModelOutput is not data)."""
    out = model(input_ids=ids, use_cache=False, return_dict=False)
    if not isinstance(out, tuple) or not out or not isinstance(out[0], torch.Tensor):
        fail(f"{what} did not return a transformers output with logits.",
             hint="inject_lora and merge_lora must return the model they were given, changed in place.")
    return out[0]


def expect_lora_layer(sd: dict[str, torch.Tensor], prefix: str, d_in: int, d_out: int, r: int, what: str) -> None:
    """`prefix`lora_A.weight is (r, d_in), `prefix`lora_B.weight is (d_out, r), and there are no LoRA biases."""
    for name, shape in ((f"{prefix}lora_A.weight", (r, d_in)), (f"{prefix}lora_B.weight", (d_out, r))):
        if name not in sd:
            fail(f"{what} has no parameter `{name}`.",
                 hint="Name the two factors `lora_A` and `lora_B`: nn.Linear(in_features, r, bias=False) and "
                      "nn.Linear(r, out_features, bias=False).")
        if tuple(sd[name].shape) != shape:
            fail(f"{what}'s `{name}` has shape {tuple(sd[name].shape)}, but it should have shape {shape}.",
                 hint="lora_A maps in_features -> r, lora_B maps r -> out_features (nn.Linear stores (out, in)).")
    if f"{prefix}lora_A.bias" in sd or f"{prefix}lora_B.bias" in sd:
        fail(f"{what}'s lora_A or lora_B has a bias.", hint="Create both with bias=False.")


# -- ROUGE -----------------------------------------------------------------------------------------

def expect_scores(result, expected: tuple[float, float, float], what: str, hint: str | None = None) -> None:
    if not isinstance(result, dict) or not {"precision", "recall", "f1"} <= set(result):
        fail(f"{what} should return a dict with keys 'precision', 'recall' and 'f1', not {result!r}.", hint)
    got = tuple(result[k] for k in ("precision", "recall", "f1"))
    if not all(isinstance(v, (int, float)) for v in got):
        fail(f"{what} should give plain numbers, but gave {got!r}.", hint="Return Python floats, e.g. float(x).")
    if any(abs(g - e) > 1e-9 for g, e in zip(got, expected)):
        shown = ", ".join(f"{k}={v:.4f}" for k, v in zip(("precision", "recall", "f1"), expected))
        fail(f"{what} gave precision={got[0]:.4f}, recall={got[1]:.4f}, f1={got[2]:.4f}; expected {shown}.", hint)
