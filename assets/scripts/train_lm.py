"""Pretrain course-lm, the course's main model: a small Llama-style decoder.

    python assets/scripts/train_lm.py [--steps N] [--out assets/models/course-lm] [--size base]

The model reads a mixture of documents, packed into rows of `--seq-len` tokens:
  * stories (assets/data/stories), plain text;
  * instructions (assets/data/instructions) in the course prompt format (llmcourse.assets.format_instruction);
  * word problems (assets/data/arithmetic), half asked step by step, half asked for the answer only;
  * few-shot episodes built from assets/data/fewshot: 6 to 10 examples of one task family in the
    "Input: x / Output: y" format, with no instruction, so the family has to be read off the examples.
The LoRA target task (titles) and the preference pairs are kept out of pretraining on purpose.

Attention uses plain nn.Linear q_proj/k_proj/v_proj/o_proj, so LoRA targets ordinary Linear layers.
"""
from __future__ import annotations

import random
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common as C  # noqa: E402
import torch  # noqa: E402

from llmcourse.assets import format_few_shot, format_instruction  # noqa: E402
from make_data import DIRECT, STEP_BY_STEP  # noqa: E402  (the two ways a word problem is asked)

SIZES = {
    # name: hidden, layers, heads, mlp
    "tiny": (64, 2, 2, 128),
    "small": (128, 4, 4, 384),
    "base": (128, 6, 4, 384),
    "large": (192, 6, 6, 512),
}
MIXTURE = {"stories": 0.2, "instructions": 0.3, "arithmetic": 0.25, "fewshot": 0.25}


def build_config(vocab_size: int, size: str, tokenizer):
    from transformers import LlamaConfig

    d, n_layers, n_heads, d_ff = SIZES[size]
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=d, intermediate_size=d_ff, num_hidden_layers=n_layers,
        num_attention_heads=n_heads, num_key_value_heads=n_heads, max_position_embeddings=512,
        rms_norm_eps=1e-5, tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def static_documents(data: Path, limit: int | None) -> dict[str, list[str]]:
    docs: dict[str, list[str]] = {"stories": [], "instructions": [], "arithmetic": []}
    for row in C.read_jsonl(data / "stories" / "train.jsonl", limit):
        docs["stories"].append(row["text"])
    for row in C.read_jsonl(data / "instructions" / "train.jsonl", limit):
        docs["instructions"].append(format_instruction(row["instruction"], row["input"], row["output"]))
    for row in C.read_jsonl(data / "arithmetic" / "train.jsonl", limit):
        docs["arithmetic"].append(format_instruction(STEP_BY_STEP, row["question"], row["solution"]))
        docs["arithmetic"].append(format_instruction(DIRECT, row["question"], f"The answer is {row['answer']}."))
    return docs


def few_shot_episode(rng: random.Random, by_task: dict[str, list[dict]], n_min: int = 6, n_max: int = 10) -> str:
    task = rng.choice(sorted(by_task))
    rows = rng.sample(by_task[task], min(len(by_task[task]), rng.randint(n_min, n_max)))
    *shots, query = rows
    return format_few_shot(shots, query["input"]) + " " + query["output"]


def stream(tok, data: Path, seq_len: int, seed: int, limit: int | None):
    """An endless stream of packed rows from the mixture."""
    rng = random.Random(seed)
    texts = static_documents(data, limit)
    encoded = {k: [ids + [tok.eos_token_id] for ids in tok(v, add_special_tokens=False)["input_ids"]]
               for k, v in texts.items()}
    by_task = defaultdict(list)
    for row in C.read_jsonl(data / "fewshot" / "train.jsonl"):
        by_task[row["task"]].append(row)
    order = {k: [] for k in encoded}
    packer = C.Packer(seq_len)
    names, weights = zip(*MIXTURE.items())
    while True:
        source = rng.choices(names, weights)[0]
        if source == "fewshot":
            ids = tok(few_shot_episode(rng, by_task), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        else:
            if not order[source]:
                order[source] = list(range(len(encoded[source])))
                rng.shuffle(order[source])
            ids = encoded[source][order[source].pop()]
        yield from packer.add(ids)


def main(argv: list[str] | None = None) -> None:
    ap = C.training_arguments(__doc__, "course-lm", "base", SIZES, steps=3000, batch_size=16, lr=0.003)
    ap.add_argument("--seq-len", type=int, default=256)
    args = ap.parse_args(argv)

    C.setup(args.seed, args.threads)
    from transformers import LlamaForCausalLM

    tok = C.load_tokenizer(args.tokenizer, "none")
    config = build_config(len(tok), args.size, tok)
    model = LlamaForCausalLM(config)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    rows = stream(tok, args.data, args.seq_len, args.seed, args.limit)
    timer = C.Timer()
    print(f"course-lm: {C.n_params(model) / 1e6:.2f} M parameters, {args.steps} steps of "
          f"{args.batch_size} x {args.seq_len} tokens", flush=True)
    running = None
    for step in range(args.steps):
        batch = torch.tensor([next(rows) for _ in range(args.batch_size)])
        loss = model(input_ids=batch, labels=batch).loss
        running = C.train_step(model, opt, loss, step, args, running, timer)
    model.eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    C.save_model(model, tok, args.out, {
        "model": "course-lm", "size": args.size, "parameters": C.n_params(model), "steps": args.steps,
        "batch_size": args.batch_size, "seq_len": args.seq_len, "tokens": args.steps * args.batch_size * args.seq_len,
        "seconds": round(timer(), 1), "threads": torch.get_num_threads(), "seed": args.seed, "final_loss": round(running, 4),
    })
    print(f"saved {args.out} after {timer():.0f} s", flush=True)


if __name__ == "__main__":
    main()
