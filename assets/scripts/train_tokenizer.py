"""Train the course's byte-level BPE tokenizer on the train splits and save it in transformers format.

    python assets/scripts/train_tokenizer.py [--data assets/data] [--out assets/tokenizer] [--vocab-size 2048]

Special tokens (ids 0..4, then the sentinels):
    <pad> padding, <s> start (and the classification token of the encoder), </s> end of text,
    <unk>, <mask> for masked language modelling, <extra_id_0> ... <extra_id_31> span-corruption sentinels.

The shared tokenizer goes to assets/tokenizer/ with no post-processing. Each model folder later gets its
own copy (train_models.py): the masked LM's wraps every text in "<s> ... </s>", the T5 model's appends
"</s>", and the causal LM's adds nothing (its prompts end where generation starts).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

N_SENTINELS = 32
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"] + [f"<extra_id_{i}>" for i in range(N_SENTINELS)]
SPECIAL_TOKENS_KW = dict(pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                         mask_token="<mask>", cls_token="<s>", sep_token="</s>")


def texts(data: Path):
    """The train splits, formatted the way the models read them (the test splits stay unseen)."""
    from llmcourse.assets import format_few_shot, format_instruction

    def rows(name):
        path = data / name / "train.jsonl"
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)

    for row in rows("stories"):
        yield row["text"]
    for name in ("instructions", "titles"):
        for row in rows(name):
            yield format_instruction(row["instruction"], row["input"], row["output"])
    for row in rows("arithmetic"):
        yield row["question"] + "\n" + row["solution"]
    for row in rows("preferences"):
        yield row["prompt"] + row["chosen"]
        yield row["prompt"] + row["rejected"]
    for row in rows("fewshot"):
        yield format_few_shot([(row["input"], row["output"])], row["input"]) + " " + row["output"]


def train(data: Path, vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts(data), trainer=trainer)
    return tok


def as_transformers(tok: Tokenizer, post: str = "none"):
    """Wrap a `tokenizers.Tokenizer` as a transformers fast tokenizer with the course's special tokens.

    post: "none" (causal LM), "mlm" ("<s> A </s>" and "<s> A </s> B </s>"), or "t5" ("A </s>").
    """
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_str(tok.to_str())
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    if post == "mlm":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1", special_tokens=[("<s>", bos), ("</s>", eos)])
    elif post == "t5":
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", eos)])
    elif post != "none":
        raise ValueError(post)
    sentinels = [f"<extra_id_{i}>" for i in range(N_SENTINELS)]
    return PreTrainedTokenizerFast(tokenizer_object=tok, additional_special_tokens=sentinels,
                                   model_input_names=["input_ids", "attention_mask"], model_max_length=512,
                                   clean_up_tokenization_spaces=False, **SPECIAL_TOKENS_KW)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent / "data")
    ap.add_argument("--out", type=Path, default=HERE.parent / "tokenizer")
    ap.add_argument("--vocab-size", type=int, default=2048)
    args = ap.parse_args(argv)
    tok = train(args.data, args.vocab_size)
    hf = as_transformers(tok)
    args.out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(args.out)
    sample = "The teacher teaches the student with a book."
    print(f"vocabulary {tok.get_vocab_size()}; {sample!r} -> {hf.tokenize(sample)}")


if __name__ == "__main__":
    main()
