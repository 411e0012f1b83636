"""Reference solutions for 02_variants: the three transformer families and their training objectives.

The hidden checks run these on the same inputs as the student's code and compare, or use them to build
known-good data (span-corrupted pairs for `merge_spans`). Written to be read, like the notebook's solution.
`span_corrupt` is also what course-t5 was pretrained on (assets/scripts/train_t5.py imports it).
"""
from __future__ import annotations

import random
import re

import torch
import torch.nn.functional as F

from llmcourse.checking.shared.variants import span_counts

KINDS = ("encoder-only", "encoder-decoder", "decoder-only")

ARCHITECTURE_FOR_TASK = {
    "sentiment analysis": "encoder-only",
    "named entity recognition": "encoder-only",
    "word classification": "encoder-only",
    "extractive question answering": "encoder-only",
    "translation": "encoder-decoder",
    "summarization": "encoder-decoder",
    "generative question answering": "encoder-decoder",
    "open text generation": "decoder-only",
}

ARCHITECTURE_OF_MODEL = {
    "BERT": "encoder-only",
    "DistilBERT": "encoder-only",
    "RoBERTa": "encoder-only",
    "course-mlm": "encoder-only",
    "BART": "encoder-decoder",
    "T5": "encoder-decoder",
    "course-t5": "encoder-decoder",
    "GPT-2": "decoder-only",
    "BLOOM": "decoder-only",
    "LLaMA": "decoder-only",
    "PaLM": "decoder-only",
    "course-lm": "decoder-only",
}

PARAMETER_OR_HYPERPARAMETER = {
    "attention weights": "parameter",
    "feed-forward weights": "parameter",
    "token embeddings": "parameter",
    "biases": "parameter",
    "LayerNorm gains": "parameter",
    "learning rate": "hyperparameter",
    "batch size": "hyperparameter",
    "number of layers": "hyperparameter",
    "number of heads": "hyperparameter",
    "hidden size": "hyperparameter",
    "dropout rate": "hyperparameter",
    "warmup steps": "hyperparameter",
}


def attention_visibility(kind: str, n_query: int, n_key: int | None = None) -> torch.Tensor:
    n_key = n_query if n_key is None else n_key
    if kind in ("bidirectional", "cross"):
        return torch.ones(n_query, n_key, dtype=torch.bool)
    if kind == "causal":
        if n_key != n_query:
            raise ValueError("a causal mask relates a sequence to itself: n_key must equal n_query")
        return torch.ones(n_query, n_query, dtype=torch.bool).tril()
    raise ValueError(f"unknown kind {kind!r}: use 'bidirectional', 'causal' or 'cross'")


def mask_tokens(input_ids: torch.Tensor, mask_token_id: int, vocab_size: int,
                special_tokens_mask: torch.Tensor | None = None, mlm_probability: float = 0.15,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    shape = input_ids.shape
    picked = torch.rand(shape, generator=generator) < mlm_probability
    if special_tokens_mask is not None:
        picked &= ~special_tokens_mask.bool()
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(shape, generator=generator)  # one roll per position decides mask / random / keep
    random_ids = torch.randint(0, vocab_size, shape, generator=generator, dtype=input_ids.dtype)
    inputs = torch.where(picked & (roll < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(picked & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels


def _split(total: int, parts: int, generator: torch.Generator | random.Random | None) -> list[int]:
    """`total` as an ordered sum of `parts` positive integers, uniformly among all such sums.

    The notebook's contract draws from a torch.Generator. A random.Random is accepted too because course-t5 was
    pretrained with one (assets/scripts/train_t5.py): its seed must keep giving the spans the model learned from.
    """
    if isinstance(generator, random.Random):
        cuts = sorted(generator.sample(range(1, total), parts - 1))
    else:
        cuts = (torch.randperm(total - 1, generator=generator)[:parts - 1] + 1).sort().values.tolist()
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def span_corrupt(token_ids: list[int], sentinel_ids: list[int], noise_density: float = 0.15,
                 mean_span_length: float = 3.0, generator: torch.Generator | random.Random | None = None
                 ) -> tuple[list[int], list[int]]:
    ids = [int(t) for t in token_ids]
    n = len(ids)
    if n < 2:
        raise ValueError("span corruption needs at least two tokens")
    n_noise, n_spans = span_counts(n, noise_density, mean_span_length, len(sentinel_ids))
    noise = _split(n_noise, n_spans, generator)
    # n_spans + 1 kept stretches: the inner ones at least one token, the first and last possibly empty.
    keep = _split(n - n_noise + 2, n_spans + 1, generator)
    keep[0] -= 1
    keep[-1] -= 1
    inputs, targets, pos = [], [], 0
    for i in range(n_spans):
        inputs += ids[pos:pos + keep[i]]
        pos += keep[i]
        inputs.append(sentinel_ids[i])
        targets += [sentinel_ids[i], *ids[pos:pos + noise[i]]]
        pos += noise[i]
    inputs += ids[pos:]
    targets.append(sentinel_ids[n_spans])
    return inputs, targets


def merge_spans(inputs: list[int], targets: list[int], sentinel_ids: list[int]) -> list[int]:
    sentinels = {int(s): i for i, s in enumerate(sentinel_ids)}
    spans: dict[int, list[int]] = {}
    current = None
    for t in targets:
        t = int(t)
        if t in sentinels:
            current = sentinels[t]
            spans[current] = []
        elif current is not None:
            spans[current].append(t)
    out = []
    for t in inputs:
        t = int(t)
        out += spans.get(sentinels[t], []) if t in sentinels else [t]
    return out


def causal_lm_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return input_ids.masked_fill(attention_mask == 0, -100)


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    predictions = logits[..., :-1, :]  # position t predicts token t + 1
    targets = labels[..., 1:]
    return F.cross_entropy(predictions.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def build_model(kind: str, vocab_size: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 4):
    from transformers import (BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, T5Config,
                              T5ForConditionalGeneration)

    special = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)  # the course tokenizers' special ids
    if kind == "encoder-only":
        config = BertConfig(vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=n_layers,
                            num_attention_heads=n_heads, intermediate_size=4 * d_model, max_position_embeddings=256,
                            **special)
        return BertForMaskedLM(config)
    if kind == "encoder-decoder":
        config = T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=d_model // n_heads, d_ff=4 * d_model,
                          num_layers=n_layers, num_decoder_layers=n_layers, num_heads=n_heads,
                          decoder_start_token_id=0, **special)
        return T5ForConditionalGeneration(config)
    if kind == "decoder-only":
        config = GPT2Config(vocab_size=vocab_size, n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_positions=256,
                            **special)
        return GPT2LMHeadModel(config)
    raise ValueError(f"unknown kind {kind!r}: use one of {KINDS}")


def training_step(model, batch: dict, optimizer) -> float:
    model.train()
    batch = {k: v.to(model.device) for k, v in batch.items()}
    if model.config.model_type in ("bert", "t5"):
        loss = model(**batch).loss  # BERT and T5 compare their logits with the labels as they are
    else:  # decoder-only: the labels are the inputs; the loss shifts them by one
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = next_token_loss(logits, batch["labels"])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


# -- byte-level BPE ------------------------------------------------------------------------------------------

def byte_symbols() -> dict[int, str]:
    """GPT-2's table: every byte value as one printable character. Bytes that print as themselves keep their
    character; the others (space, control characters, ...) get the characters from chr(256) on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


BYTE_SYMBOL = byte_symbols()
SYMBOL_BYTE = {s: b for b, s in BYTE_SYMBOL.items()}


def pre_split(text: str) -> list[str]:
    """The text cut just before every space: each space starts the piece that follows it."""
    return [piece for piece in re.split(r"(?= )", text) if piece]


def to_symbols(piece: str) -> list[str]:
    return [BYTE_SYMBOL[b] for b in piece.encode("utf-8")]


def _merge_pair(symbols: list[str], a: str, b: str) -> list[str]:
    """Every occurrence of the pair (a, b), left to right, as one token ("a a a" -> "aa a")."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def train_bpe(texts: list[str], vocab_size: int, special_tokens=()) -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab: dict[str, int] = {}
    for token in [*special_tokens, *sorted(BYTE_SYMBOL.values())]:
        vocab.setdefault(token, len(vocab))
    counts: dict[tuple[str, ...], int] = {}
    for text in texts:
        for piece in pre_split(text):
            word = tuple(to_symbols(piece))
            counts[word] = counts.get(word, 0) + 1
    words = [(list(word), n) for word, n in counts.items()]
    merges = []
    while len(vocab) < vocab_size:
        pairs: dict[tuple[str, str], int] = {}
        for symbols, n in words:
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] = pairs.get(pair, 0) + n
        if not pairs:
            break
        # the most frequent pair; a tie goes to the smallest id on the left, then on the right (as in tokenizers)
        a, b = min(pairs, key=lambda p: (-pairs[p], vocab[p[0]], vocab[p[1]]))
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        words = [(_merge_pair(symbols, a, b), n) for symbols, n in words]
    return vocab, merges


def bpe_encode(text: str, merges: list[tuple[str, str]], vocab: dict[str, int]) -> list[int]:
    rank = {tuple(pair): i for i, pair in enumerate(merges)}
    ids = []
    for piece in pre_split(text):
        symbols = to_symbols(piece)
        while len(symbols) > 1:
            pairs = [(rank.get(pair, len(rank)), pair) for pair in zip(symbols, symbols[1:])]
            best, pair = min(pairs)
            if best == len(rank):
                break
            symbols = _merge_pair(symbols, *pair)
        ids += [vocab[s] for s in symbols]
    return ids
