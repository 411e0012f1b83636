"""Fine-tune course-lm into course-lm-apps: it reads retrieved passages, runs ReAct traces and writes programs.

    python assets/scripts/train_apps.py [--steps N] [--out assets/models/course-lm-apps]

course-lm-apps starts from course-lm's weights (same architecture, same tokenizer) and reads a mixture of
  * retrieval prompts (45%): a question about an article, numbered passages (the article and others), and the
    answer with the number of its passage. A curriculum: one passage in the first 15% of each phase's rows,
    two in the next 15%, then three. The article comes first (as a retriever ranks it) in 65% of prompts and
    anywhere in the rest;
  * copying (7%): repeat two to four invented names, or a passage, word for word. Reading an answer out of a
    passage is copying: an invented name must come out as the passage spells it, not as a name that looks alike;
  * closed-book questions (3%), so that the model answers with confidence even where it cannot know: the
    failure that retrieval repairs;
  * ReAct traces (27%): word problems of assets/data/bigmath solved with calculator[...], questions
    answered with lookup[...], and comparisons that need two lookups and the calculator;
  * programs (7%): the big-number problems written as a few assignments ending in `answer = ...`;
  * the same problems worked step by step (3%), so that the chain-of-thought instruction keeps its own format;
  * course-lm's own mixture (8%), so that what it could do stays.
The loss is on the responses only (and not on the tools' observations inside ReAct traces): the prompts'
invented names cannot be predicted, and learning to read them is what matters. The answers of the retrieval
and copy documents weigh RAG_WEIGHT times as much as other tokens (a weighted mean): they are a few tokens
each, and without the weight the long traces and programs take nearly all of each step's gradient.
A row of the batch holds whole documents only (then padding): an answer cut off from its passages could only
be guessed.
Training has two phases (PHASES): two thirds of the steps at the peak learning rate, then a third at half of
it, each from a fresh optimiser and the mixture's stream from its start (so the curriculum again). The
second phase is where the reading settles: after the first phase alone, the model answered 66.5% of the
held-out retrieval questions (it copied years, lengths and foods, but few colours or habitats); after both, 88%.
The articles are invented on the spot by the generator of assets/data/facts (appdata.entity), each name
once, none of the test split's: a fact seen twice could be remembered instead of read. The problems are
bigmath's train split. The test articles and problems stay unseen (assets/scripts/evaluate.py).
The prompt formats are those of llmcourse.applications_formats.
"""
from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import appdata as A  # noqa: E402
import common as C  # noqa: E402
import torch  # noqa: E402

from llmcourse.applications_formats import (closed_book_prompt, cot_prompt, pal_prompt, rag_text,  # noqa: E402
                                             react_prompt)
from llmcourse.assets import format_instruction  # noqa: E402

MIXTURE = {"rag": 0.45, "copy": 0.07, "closed": 0.03, "react": 0.27, "pal": 0.07, "cot": 0.03, "replay": 0.08}
CURRICULUM = (0.15, 0.3)  # up to these fractions of a phase's rows: one passage, then two; then three
SHUFFLED = 0.35  # the share of retrieval prompts whose passages are in random order (the rest: the article first)
RAG_WEIGHT = 4  # the weight of the retrieval and copy answers' tokens in the loss
PHASES = ((2 / 3, 1.0), (1 / 3, 0.5))  # (share of the steps, share of the peak learning rate)


class FreshFacts:
    """Articles about entities invented on the spot, never twice the same name, never a test name: the model
    cannot remember a fact, so reading the passages is the only way to answer."""

    def __init__(self, rng: random.Random, reserved: set[str]):
        self.rng, self.taken = rng, set(reserved)

    def __call__(self, kind: str | None = None) -> dict:
        while True:
            ent = A.entity(self.rng, self.taken)
            if kind is None or ent["kind"] == kind:
                return ent


def n_passages(progress: float) -> int:
    """How many passages a retrieval prompt holds at this point of a phase (0 <= progress < 1)."""
    return 1 + sum(progress >= edge for edge in CURRICULUM)


def app_texts(rng: random.Random, fresh: FreshFacts, problems: list[dict], source: str,
              progress: float = 1.0) -> tuple[str, str]:
    """One training document of the mixture, as (prompt, response)."""
    if source in ("rag", "closed"):
        ent = fresh()
        question, answer = rng.choice(ent["qa"])
        if source == "closed":
            return closed_book_prompt(question), answer
        same_kind = rng.random() < 0.5
        passages = [ent] + [fresh(ent["kind"] if same_kind else None) for _ in range(n_passages(progress) - 1)]
        if rng.random() < SHUFFLED:
            rng.shuffle(passages)
        text = rag_text(question, [e["passage"] for e in passages], answer, passages.index(ent) + 1)
        prompt = rag_text(question, [e["passage"] for e in passages])
        return prompt, text[len(prompt):]
    if source == "copy":
        if rng.random() < 0.5:
            names = ", ".join(fresh()["name"] for _ in range(rng.randint(2, 4)))
            return format_instruction("Repeat the names.", names), f" {names}"
        passage = fresh()["passage"]
        return format_instruction("Repeat the passage.", passage), f" {passage}"
    if source == "pal":
        row = rng.choice(problems)
        return pal_prompt(row["question"]), A.pal_program(row)
    if source == "cot":
        row = rng.choice(problems)
        return cot_prompt(row["question"]), A.cot_solution(row)
    r = rng.random()
    if r < 0.6:
        row = rng.choice(problems)
        return react_prompt(row["question"]), A.react_trace(row)
    if r < 0.85:
        ent = fresh()
        question, answer = rng.choice(ent["qa"])
        return react_prompt(question), A.lookup_trace(ent, question, answer)
    while True:
        kind = rng.choice(["river", "town"])
        a, b = fresh(kind), fresh(kind)
        if pair := A.compare_question(a, b) or A.compare_question(b, a):
            question, trace = pair
            return react_prompt(question), trace


OBSERVATION = re.compile(r"(?<=Observation:)[^\n]*")


def labelled(tok, prompt: str, response: str, weight: int = 1) -> list[tuple[int, int, int]]:
    """(token, label, weight) triples: the loss is on the response only, and not on what tools wrote
    (observations), which the model never has to produce: the application does. The end-of-text token is
    learned. Tokens that are not learned have label -100 and weight 0."""
    text = prompt + response
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    hidden = [(len(prompt) + m.start(), len(prompt) + m.end()) for m in OBSERVATION.finditer(response)]
    pairs = []
    for token, (start, _) in zip(enc["input_ids"], enc["offset_mapping"]):
        learn = start >= len(prompt) and not any(a <= start < b for a, b in hidden)
        pairs.append((token, token, weight) if learn else (token, -100, 0))
    return pairs + [(tok.eos_token_id, tok.eos_token_id, weight)]


def stream(tok, data: Path, seq_len: int, seed: int, n_rows: int):
    """Rows of whole documents from the mixture, as (token, label, weight) triples; `n_rows` (the rows of the
    phase) paces the curriculum."""
    import train_lm

    rng = random.Random(seed)
    reserved = {name for row in C.read_jsonl(data / "facts" / "test.jsonl")
                for name in (row["name"], *(a for _, a in row["qa"]))}
    fresh = FreshFacts(random.Random(f"fresh-facts-{seed}"), reserved)
    problems = C.read_jsonl(data / "bigmath" / "train.jsonl")
    replay = iter(_unpack(train_lm.stream(tok, data, seq_len, seed + 1, None)))
    names, weights = zip(*MIXTURE.items())
    row: list[tuple[int, int, int]] = []
    done = 0
    while True:
        source = rng.choices(names, weights)[0]
        if source == "replay":
            pairs = [(t, t, 1) for t in next(replay)]
        else:
            texts = app_texts(rng, fresh, problems, source, done / max(1, n_rows))
            pairs = labelled(tok, *texts, RAG_WEIGHT if source in ("rag", "copy") else 1)[:seq_len]
        # A document never straddles two rows: an answer cut off from the passages it was read from could only
        # be guessed, and the model would learn to guess. The rest of a row that cannot hold the next one is
        # padding, which is not learned.
        if len(row) + len(pairs) > seq_len:
            yield row + [(tok.pad_token_id, -100, 0)] * (seq_len - len(row))
            done += 1
            row = []
        row.extend(pairs)


def _unpack(rows):
    """course-lm's packed rows, in pieces of about one document (so the mixture's shares are per document)."""
    for row in rows:
        for i in range(0, len(row), 128):
            yield row[i:i + 128]


def weighted_loss(model, batch: torch.Tensor) -> torch.Tensor:
    """The weighted mean of the next-token losses of a (rows, seq_len, 3) batch of (token, label, weight)."""
    logits = model(input_ids=batch[..., 0]).logits[:, :-1].float()
    labels, weights = batch[:, 1:, 1], batch[:, 1:, 2].float()
    losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                                               ignore_index=-100, reduction="none")
    return (losses * weights.reshape(-1)).sum() / weights.sum().clamp(min=1.0)


def phase_steps(total: int) -> list[int]:
    """The steps of each phase of PHASES; they add up to `total`."""
    first = round(total * PHASES[0][0])
    return [first, total - first]


def main(argv: list[str] | None = None) -> None:
    ap = C.training_arguments(__doc__, "course-lm-apps", "base", {"base": None}, steps=3000, batch_size=16, lr=0.001)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--base", type=Path, default=C.MODELS / "course-lm")
    ap.set_defaults(warmup=50)
    args = ap.parse_args(argv)

    C.setup(args.seed, args.threads)
    from transformers import LlamaForCausalLM

    tok = C.load_tokenizer(args.tokenizer, "none")
    model = LlamaForCausalLM.from_pretrained(args.base)
    model.train()
    timer = C.Timer()
    print(f"course-lm-apps: from {args.base.name}, {args.steps} steps of {args.batch_size} x {args.seq_len} tokens",
          flush=True)
    phases = []
    for (_, lr_share), steps in zip(PHASES, phase_steps(args.steps)):
        # Each phase starts as a run of its own would: the same seeds, a fresh optimiser, the stream from its start.
        C.setup(args.seed, args.threads)
        phase = argparse.Namespace(**{**vars(args), "steps": steps, "lr": args.lr * lr_share})
        phases.append({"steps": steps, "lr": phase.lr})
        print(f"phase {len(phases)}: {steps} steps at learning rate {phase.lr:g}", flush=True)
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=phase.lr, betas=(0.9, 0.98))
        rows = stream(tok, args.data, args.seq_len, args.seed, steps * args.batch_size)
        running = None
        for step in range(steps):
            batch = torch.tensor([next(rows) for _ in range(args.batch_size)])  # (rows, seq_len, 3)
            running = C.train_step(model, opt, weighted_loss(model, batch), step, phase, running, timer)
    model.eval()
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, key, getattr(tok, key))
    C.save_model(model, tok, args.out, {
        "model": "course-lm-apps", "base": "course-lm", "parameters": C.n_params(model), "steps": args.steps,
        "phases": phases, "batch_size": args.batch_size, "seq_len": args.seq_len,
        "tokens": args.steps * args.batch_size * args.seq_len, "seconds": round(timer(), 1),
        "threads": torch.get_num_threads(), "seed": args.seed, "final_loss": round(running, 4), "mixture": MIXTURE,
        "curriculum": CURRICULUM, "shuffled": SHUFFLED, "answer_weight": RAG_WEIGHT,
    })
    print(f"saved {args.out} after {timer():.0f} s", flush=True)


if __name__ == "__main__":
    main()
