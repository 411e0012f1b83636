"""What the 05_rlhf checks, visible and hidden, both use: response masks and batches padded on either side, a
tiny Llama built from the same weights in the student's kernel and here, and the DPO-trained policy's
weights as data for the judge.

The checks (grader.checks.rlhf) import these helpers from here, and so does the students' copy of the visible
checks (llmcourse.checks.rlhf), with which this module ships.
"""
from __future__ import annotations

import math

import torch

from llmcourse.checking import fail, generator, randn


# -- batches with padding on either side -----------------------------------------------------------

def segment_mask(starts: list[int], ends: list[int], length: int) -> torch.Tensor:
    """(B, length) bool, True on [start, end) of each row: one contiguous block of response tokens per row."""
    positions = torch.arange(length)
    return (positions >= torch.tensor(starts)[:, None]) & (positions < torch.tensor(ends)[:, None])


def random_segments(gen: torch.Generator, batch: int, length: int, side: str) -> torch.Tensor:
    """Response masks as a PPO batch has them: a prompt, then the response, then (right) padding; or
    (left) padding, a prompt, then a response that runs to the end."""
    starts, ends = [], []
    for _ in range(batch):
        n = int(torch.randint(1, length - 1, (1,), generator=gen))  # response length, at least 1
        start = int(torch.randint(1, length - n + 1, (1,), generator=gen))
        if side == "left":
            start = length - n
        starts.append(start)
        ends.append(start + n)
    return segment_mask(starts, ends, length)


def padded_batch(gen: torch.Generator, lengths: list[int], prompt_lengths: list[int], side: str):
    """input_ids, attention_mask (bool) and response_mask (bool), (B, L), padded on `side`."""
    length = max(lengths)
    ids = torch.zeros(len(lengths), length, dtype=torch.long)
    attention = torch.zeros(len(lengths), length, dtype=torch.bool)
    response = torch.zeros(len(lengths), length, dtype=torch.bool)
    for i, (n, p) in enumerate(zip(lengths, prompt_lengths)):
        offset = length - n if side == "left" else 0
        ids[i, offset:offset + n] = torch.randint(3, TINY_LLAMA["vocab_size"], (n,), generator=gen)
        attention[i, offset:offset + n] = True
        response[i, offset + p:offset + n] = True
    return ids, attention, response


def tuple_of(result, n: int, what: str, hint: str) -> tuple:
    if not isinstance(result, tuple) or len(result) != n:
        fail(f"{what} should return a tuple of {n} values.", hint)
    return result


# -- a tiny Llama, the same in the kernel and here -------------------------------------------------

TINY_LLAMA = dict(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                  tie_word_embeddings=False)


def tiny_llama_weights(seed: int) -> dict[str, torch.Tensor]:
    """Random weights for a LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)), large enough to give peaked logits."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA))
    gen = generator(seed)
    weights = {}
    for name, value in model.state_dict().items():
        if value.dim() == 2:
            weights[name] = randn(gen, *value.shape, scale=1.0 / math.sqrt(value.shape[-1]) * 2.0)
        else:
            weights[name] = value.clone()
    return weights


def tiny_llama(weights: dict[str, torch.Tensor]):
    """The same model here, in the checker, to compute what the answer should be."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA))
    model.load_state_dict(weights)
    return model.eval()


def student_tiny_llama(student, weights: dict[str, torch.Tensor]):
    """The same model built inside the student's kernel."""
    model = student.construct("transformers.LlamaForCausalLM", student.construct("transformers.LlamaConfig", **TINY_LLAMA))
    model.load_state_dict(weights)
    model.eval()
    return model


def expected_sequence_logprob(model, ids, attention, response) -> torch.Tensor:
    """What transformers itself says: a causal LM's own loss on the response tokens (it shifts the labels), times
    their number, is minus their summed log-probability. One row at a time, since the loss averages a batch."""
    labels = torch.where(response.bool(), ids, torch.full_like(ids, -100))
    sums = []
    with torch.no_grad():
        for i in range(ids.shape[0]):
            count = int(response[i, 1:].sum())
            if count == 0:
                sums.append(torch.zeros((), dtype=torch.float64))
                continue
            out = model(input_ids=ids[i:i + 1], attention_mask=attention[i:i + 1].long(), labels=labels[i:i + 1])
            sums.append(-out.loss.double() * count)
    return torch.stack(sums)


# -- the DPO-trained policy: data both the visible and the hidden checks use -----------------------

def policy_weights(student, name: str = "dpo_policy") -> dict[str, torch.Tensor]:
    """The weights of the student's trained model, as data, checked against course-lm's names and shapes."""
    from llmcourse.assets import load_model

    if not student.has(name):
        fail(f"`{name}` is not defined. Run the cell that trains it (and the cells above it).",
             hint=f"The training cell must leave the trained model in a variable named `{name}`.")
    model = getattr(student, name)
    if not hasattr(model, "type_name") or not model.type_name.endswith("ForCausalLM"):
        fail(f"`{name}` should be the trained course-lm (a LlamaForCausalLM), not {getattr(model, 'type_name', type(model).__name__)}.",
             hint="Keep the model object you trained (the one you passed to the trainer or to your optimiser); it is trained in place.")
    sd = model.state_dict(destination={})
    expected = {k: v.shape for k, v in load_model("course-lm").state_dict().items()}
    missing = [k for k in expected if k not in sd or tuple(sd[k].shape) != tuple(expected[k])]
    if missing:
        fail(f"`{name}` does not have course-lm's weights (e.g. `{missing[0]}` is missing or has another shape).",
             hint="Train a copy of course-lm itself: load_model('course-lm'), without LoRA or a new head.")
    return {k: sd[k].detach().float().cpu() for k in expected}


def course_lm_with(weights: dict[str, torch.Tensor]):
    """A fresh course-lm in the checker holding these weights."""
    from llmcourse.assets import load_model

    model = load_model("course-lm")
    model.load_state_dict(weights, strict=False)
    return model.eval()
