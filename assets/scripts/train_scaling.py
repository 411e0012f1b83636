"""The scaling-law sweep of 07_deployment: small course models trained at several sizes and token budgets.

    python assets/scripts/train_scaling.py [--out assets/data/scaling/runs.json] [--quick]

Every run is a fresh Llama-style decoder with course-lm's tokenizer, trained on course-lm's own pretraining
mixture (train_lm.stream, same seed for every run) with its own warmup and cosine schedule that ends exactly
at its token budget, as in the Chinchilla experiments (a checkpoint taken in the middle of a longer run is
not a run with a smaller budget: its learning rate has not decayed). The loss is measured on the same
held-out rows for every run: the `stories` test split, packed into rows of 128 tokens.

`params` counts the parameters outside the embedding table (which course-lm shares with its output layer):
with a vocabulary of 1,659 words the table would otherwise dominate the smallest models. The notebook says so.

The result is data, shipped in the repository: the notebook fits the law and never trains the sweep.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common as C  # noqa: E402
import torch  # noqa: E402

from train_lm import stream  # noqa: E402  (course-lm's pretraining mixture)

# hidden size, layers, heads (head size 16); the MLP is 3x the hidden size (SwiGLU)
SIZES = [(16, 2, 1), (32, 2, 2), (48, 3, 3), (64, 4, 4), (96, 4, 6)]
BUDGETS = [250_000, 500_000, 1_000_000, 2_000_000]  # training tokens
SEQ_LEN, BATCH = 128, 2  # small batches: the shortest runs need enough optimiser steps
# Peak learning rate inversely proportional to the width (as muP prescribes for Adam): one rate for all sizes
# is too low for the narrowest models and too high for the widest in their shortest runs.
LR_TIMES_WIDTH, WARMUP_SHARE = 0.3, 0.05
HELD_OUT_ROWS = 96


def config_for(tok, d: int, layers: int, heads: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=d, intermediate_size=3 * d, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=SEQ_LEN,
                       rms_norm_eps=1e-5, tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def held_out(tok, data: Path = C.DATA) -> torch.Tensor:
    rows = C.read_jsonl(data / "stories" / "test.jsonl")
    packer, packed = C.Packer(SEQ_LEN), []
    for ids in tok([r["text"] for r in rows], add_special_tokens=False)["input_ids"]:
        packed.extend(packer.add(ids + [tok.eos_token_id]))
    return torch.tensor(packed[:HELD_OUT_ROWS])


@torch.no_grad()
def loss_on(model, rows: torch.Tensor) -> float:
    model.eval()
    total = sum(model(input_ids=rows[i:i + 16], labels=rows[i:i + 16]).loss.item() * len(rows[i:i + 16])
                for i in range(0, len(rows), 16))
    return total / len(rows)


def training_rows(tok, tokens: int, seed: int, data: Path = C.DATA) -> torch.Tensor:
    """The mixture's first rows: every run reads a prefix of the same sequence."""
    data = stream(tok, data, SEQ_LEN, seed, None)
    return torch.tensor([next(data) for _ in range(tokens // SEQ_LEN)])


def train_one(rows_in: torch.Tensor, rows_out: torch.Tensor, tok, d: int, layers: int, heads: int, tokens: int,
              seed: int) -> dict:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(config_for(tok, d, layers, heads))
    embedding = model.model.embed_tokens.weight.numel()
    params = sum(p.numel() for p in model.parameters()) - embedding
    steps = tokens // (SEQ_LEN * BATCH)
    warmup = max(1, int(WARMUP_SHARE * steps))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    lr = LR_TIMES_WIDTH / d
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98))
    timer = C.Timer()
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = C.lr_at(step, steps, lr, warmup)
        batch = rows_in[step * BATCH:(step + 1) * BATCH]
        model(input_ids=batch, labels=batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    loss = loss_on(model, rows_out)
    return {"params": params, "tokens": steps * SEQ_LEN * BATCH, "loss": round(loss, 5), "hidden_size": d,
            "layers": layers, "lr": round(lr, 6), "embedding_params": embedding, "steps": steps,
            "seconds": round(timer(), 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=C.DATA)
    ap.add_argument("--tokenizer", type=Path, default=C.TOKENIZER)
    ap.add_argument("--out", type=Path, default=C.DATA / "scaling" / "runs.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="two sizes, two tiny budgets (a smoke test)")
    args = ap.parse_args(argv)
    C.setup(args.seed, args.threads)
    tok = C.load_tokenizer(args.tokenizer, "none")
    sizes, budgets = (SIZES[:2], [2_560, 5_120]) if args.quick else (SIZES, BUDGETS)
    rows_out, rows_in = held_out(tok, args.data), training_rows(tok, max(budgets), args.seed, args.data)
    timer, runs = C.Timer(), []
    for d, layers, heads in sizes:
        for tokens in budgets:
            run = train_one(rows_in, rows_out, tok, d, layers, heads, tokens, args.seed)
            runs.append(run)
            print(f"hidden {d:3d} x {layers} layers ({run['params']:7d} params), {run['tokens']:8d} tokens: "
                  f"held-out loss {run['loss']:.4f}  ({run['seconds']:.0f} s)", flush=True)
    assert all(math.isfinite(r["loss"]) for r in runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "about": "Held-out loss (stories test split, nats per token) of small course models, one fresh run per "
                 "(size, budget) with its own cosine schedule; params excludes the embedding table. Made by "
                 "assets/scripts/train_scaling.py.",
        "seq_len": SEQ_LEN, "batch_size": BATCH, "lr": f"{LR_TIMES_WIDTH} / hidden size", "seed": args.seed, "seconds": round(timer(), 1),
        "runs": runs}, indent=1) + "\n")
    print(f"wrote {args.out} ({len(runs)} runs, {timer():.0f} s)", flush=True)


if __name__ == "__main__":
    main()
