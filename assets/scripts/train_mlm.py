"""Pretrain course-mlm, the course's encoder-only masked language model (BERT-style).

    python assets/scripts/train_mlm.py [--steps N] [--out assets/models/course-mlm]

It reads the stories and the inputs of the instruction set, one text per row ("<s> text </s>"), and learns
BERT's objective: 15% of the tokens are picked; of those, 80% become <mask>, 10% a random token, and 10%
stay; the loss is on the picked tokens only.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common as C  # noqa: E402
import torch  # noqa: E402

SIZES = {"tiny": (64, 2, 2, 128), "small": (128, 4, 4, 512)}


def mask_batch(ids: torch.Tensor, special: torch.Tensor, mask_id: int, vocab: int, gen: torch.Generator,
               p: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 rule, as 02_variants' mask_tokens, but not that function: its random ids skip ids 0-4
    (<pad> to <mask>) and are drawn only where needed, which is what course-mlm was trained on. The reference's
    contract draws from [0, vocab_size) at every position, so sharing it would change the training data."""
    picked = (torch.rand(ids.shape, generator=gen) < p) & ~special
    labels = torch.where(picked, ids, torch.full_like(ids, -100))
    inputs = ids.clone()
    roll = torch.rand(ids.shape, generator=gen)
    inputs[picked & (roll < 0.8)] = mask_id
    rand = picked & (roll >= 0.8) & (roll < 0.9)
    inputs[rand] = torch.randint(5, vocab, (int(rand.sum()),), generator=gen)  # never a special token
    return inputs, labels


def main(argv: list[str] | None = None) -> None:
    ap = C.training_arguments(__doc__, "course-mlm", "small", SIZES, steps=2000, batch_size=32, lr=0.002)
    args = ap.parse_args(argv)

    C.setup(args.seed, args.threads)
    from transformers import BertConfig, BertForMaskedLM

    tok = C.load_tokenizer(args.tokenizer, "mlm")
    texts = [r["text"] for r in C.read_jsonl(args.data / "stories" / "train.jsonl", args.limit)]
    texts += [r["input"] for r in C.read_jsonl(args.data / "instructions" / "train.jsonl", args.limit)
              if r["task"] in ("classify", "continue", "summarize")]
    encoded = tok(texts, truncation=True, max_length=256)["input_ids"]
    d, n_layers, n_heads, d_ff = SIZES[args.size]
    config = BertConfig(vocab_size=len(tok), hidden_size=d, num_hidden_layers=n_layers, num_attention_heads=n_heads,
                        intermediate_size=d_ff, max_position_embeddings=256, type_vocab_size=1,
                        pad_token_id=tok.pad_token_id, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForMaskedLM(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(args.seed)
    special_ids = torch.tensor(tok.all_special_ids)
    order: list[int] = []
    timer = C.Timer()
    running = None
    print(f"course-mlm: {C.n_params(model) / 1e6:.2f} M parameters, {len(encoded)} texts, {args.steps} steps", flush=True)
    for step in range(args.steps):
        if len(order) < args.batch_size:
            order += torch.randperm(len(encoded), generator=gen).tolist()
        rows = [encoded[order.pop()] for _ in range(args.batch_size)]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id)
        attn = torch.zeros_like(ids)
        for j, r in enumerate(rows):
            ids[j, :len(r)] = torch.tensor(r)
            attn[j, :len(r)] = 1
        special = torch.isin(ids, special_ids)
        inputs, labels = mask_batch(ids, special, tok.mask_token_id, len(tok), gen)
        loss = model(input_ids=inputs, attention_mask=attn, labels=labels).loss
        running = C.train_step(model, opt, loss, step, args, running, timer)
    model.eval()
    C.save_model(model, tok, args.out, {
        "model": "course-mlm", "size": args.size, "parameters": C.n_params(model), "steps": args.steps,
        "batch_size": args.batch_size, "seconds": round(timer(), 1), "threads": torch.get_num_threads(),
        "seed": args.seed, "final_loss": round(running, 4),
    })
    print(f"saved {args.out} after {timer():.0f} s", flush=True)


if __name__ == "__main__":
    main()
