"""Pretrain course-t5, the course's encoder-decoder model, with T5's span-corruption objective.

    python assets/scripts/train_t5.py [--steps N] [--out assets/models/course-t5]

Each story loses about 15% of its tokens in spans of about 3 tokens. The encoder reads the story with
every span replaced by the next sentinel (<extra_id_0>, <extra_id_1>, ...); the decoder writes each
sentinel followed by the tokens it replaced, and one closing sentinel at the end. The corruption is the
reference solution of 02_variants (`grader.reference.variants.span_corrupt`), the one students write.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common as C  # noqa: E402
import torch  # noqa: E402

from grader.reference.variants import span_corrupt  # noqa: E402

SIZES = {"tiny": (64, 2, 2, 128), "small": (128, 3, 4, 384)}


def main(argv: list[str] | None = None) -> None:
    ap = C.training_arguments(__doc__, "course-t5", "small", SIZES, steps=4000, batch_size=32, lr=0.002)
    args = ap.parse_args(argv)

    C.setup(args.seed, args.threads)
    from transformers import T5Config, T5ForConditionalGeneration

    tok = C.load_tokenizer(args.tokenizer, "t5")
    sentinels = [tok.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(32)]
    texts = [r["text"] for r in C.read_jsonl(args.data / "stories" / "train.jsonl", args.limit)]
    encoded = [ids for ids in tok(texts, add_special_tokens=False, truncation=True, max_length=250)["input_ids"]
               if len(ids) >= 4]
    d, n_layers, n_heads, d_ff = SIZES[args.size]
    config = T5Config(vocab_size=len(tok), d_model=d, d_kv=d // n_heads, d_ff=d_ff, num_layers=n_layers,
                      num_decoder_layers=n_layers, num_heads=n_heads, relative_attention_num_buckets=32,
                      relative_attention_max_distance=128, dropout_rate=0.0, feed_forward_proj="gated-gelu",
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.pad_token_id)
    model = T5ForConditionalGeneration(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = random.Random(args.seed)
    timer = C.Timer()
    running = None
    print(f"course-t5: {C.n_params(model) / 1e6:.2f} M parameters, {len(encoded)} texts, {args.steps} steps", flush=True)

    def pad(rows, value):
        width = max(map(len, rows))
        return torch.tensor([r + [value] * (width - len(r)) for r in rows])

    for step in range(args.steps):
        pairs = [span_corrupt(rng.choice(encoded), sentinels, generator=rng) for _ in range(args.batch_size)]
        inputs = [i + [tok.eos_token_id] for i, _ in pairs]
        targets = [t + [tok.eos_token_id] for _, t in pairs]
        x = pad(inputs, tok.pad_token_id)
        y = pad(targets, -100)
        loss = model(input_ids=x, attention_mask=(x != tok.pad_token_id).long(), labels=y).loss
        running = C.train_step(model, opt, loss, step, args, running, timer)
    model.eval()
    model.generation_config.decoder_start_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    C.save_model(model, tok, args.out, {
        "model": "course-t5", "size": args.size, "parameters": C.n_params(model), "steps": args.steps,
        "batch_size": args.batch_size, "seconds": round(timer(), 1), "threads": torch.get_num_threads(),
        "seed": args.seed, "final_loss": round(running, 4),
    })
    print(f"saved {args.out} after {timer():.0f} s", flush=True)


if __name__ == "__main__":
    main()
