"""Measure what the assignments rely on, on held-out data, and write assets/eval_results.json.

    python assets/scripts/evaluate.py [--only icl,cot,lora,reward,mlm,t5,generation] [--models DIR] [--quick]

Sections (each one a claim in assets/MODELS.md, where make_cards.py turns the numbers into model cards):
  icl         few-shot accuracy of course-lm against the number of shots, on the fewshot test split
  cot         word problems: direct answer vs step by step (greedy), one sample vs a majority vote of samples
  instructions  held-out instructions of the four families: exact match and ROUGE-L of greedy responses
  lora        titles: ROUGE-L of course-lm before and after a LoRA fine-tune of at most 60 s (peft)
  reward      a reward model initialised from course-lm, trained on preference pairs: held-out pair accuracy
  mlm         course-mlm: top-1 accuracy on masked content words of held-out stories
  t5          course-t5: span infilling on held-out stories
  generation  distinct-n of course-lm samples under temperature, top-k and top-p
  apps        course-lm-apps: closed book vs retrieval (BM25, dense, both), recall@k; chain of thought vs
              ReAct with a calculator vs programs (PAL) on held-out word problems with big numbers
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common as C  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from grader.reference.lora import rouge_l  # noqa: E402  (ROUGE-L as 04_lora defines it)
from llmcourse.assets import format_few_shot, format_instruction  # noqa: E402
from make_data import DIRECT, STEP_BY_STEP  # noqa: E402  (the two ways a word problem is asked)

SHOTS = [0, 1, 2, 4, 8]
STOPWORDS = set("""a an the and or but so to of in on at for with by from up as is are was were be been am it its
he she him her his hers they them their we us our you your i me my this that these those there here then than
not no yes do does did has have had will would can could all very too also just into out about some one""".split())


# ---------------------------------------------------------------------------------------------- helpers

def load(kind: str, path: Path):
    import transformers

    cls = {"lm": transformers.AutoModelForCausalLM, "mlm": transformers.AutoModelForMaskedLM,
           "t5": transformers.AutoModelForSeq2SeqLM}[kind]
    model = cls.from_pretrained(path)
    model.eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    return model, tok


@torch.no_grad()
def completion_correct(model, tok, prompts: list[str], targets: list[str], batch_size: int = 64) -> list[bool]:
    """Would greedy decoding after each prompt produce exactly its target, then end the line (or the text)?

    Checked with one teacher-forced forward pass per prompt instead of token-by-token generation.
    """
    newline = tok.convert_tokens_to_ids("Ċ")
    enders = {newline, tok.eos_token_id}
    out = []
    for i in range(0, len(prompts), batch_size):
        rows, spans = [], []
        for p, t in zip(prompts[i:i + batch_size], targets[i:i + batch_size]):
            p_ids = tok(p, add_special_tokens=False)["input_ids"]
            t_ids = tok(" " + t, add_special_tokens=False)["input_ids"]
            rows.append(p_ids + t_ids)
            spans.append((len(p_ids), t_ids))
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, :len(r)] = torch.tensor(r)
            mask[j, :len(r)] = 1
        pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
        for j, (start, t_ids) in enumerate(spans):
            ok = all(pred[j, start - 1 + k].item() == t for k, t in enumerate(t_ids))
            ok = ok and pred[j, start - 1 + len(t_ids)].item() in enders if start + len(t_ids) <= width else ok
            out.append(bool(ok))
    return out


@torch.no_grad()
def generate(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int = 32, stop_newline: bool = False,
             **sampling) -> list[str]:
    """Batched generation with left padding; returns only the new text of each prompt."""
    tok.padding_side = "left"
    texts = []
    for i in range(0, len(prompts), batch_size):
        enc = tok(prompts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id, **sampling)
        for row in out[:, enc["input_ids"].shape[1]:]:
            text = tok.decode(row, skip_special_tokens=True)
            texts.append(text.split("\n")[0] if stop_newline else text)
    tok.padding_side = "right"
    return texts


# ---------------------------------------------------------------------------------------------- sections

def eval_icl(models: Path, data: Path, n_queries: int = 40, seed: int = 0) -> dict:
    """Few-shot accuracy on held-out items: shots and query all come from the task's test split."""
    import fewshot

    model, tok = load("lm", models / "course-lm")
    by_task = defaultdict(list)
    for row in C.read_jsonl(data / "fewshot" / "test.jsonl"):
        by_task[row["task"]].append(row)
    per_task = {}
    for task in sorted(by_task):
        rng = random.Random(f"{seed}-{task}")
        episodes = []
        for _ in range(n_queries):
            rows = rng.sample(by_task[task], max(SHOTS) + 1)
            episodes.append((rows[:-1], rows[-1]))
        per_task[task] = {}
        for k in SHOTS:
            prompts = [format_few_shot(shots[:k], q["input"]) for shots, q in episodes]
            ok = completion_correct(model, tok, prompts, [q["output"] for _, q in episodes])
            per_task[task][k] = sum(ok) / len(ok)
    mean = {k: sum(per_task[t][k] for t in per_task) / len(per_task) for k in SHOTS}
    labels = {k: sum(per_task[t][k] for t in fewshot.LABEL_TASKS) / len(fewshot.LABEL_TASKS) for k in SHOTS}
    return {"shots": SHOTS, "accuracy": mean, "label_tasks_accuracy": labels, "per_task": per_task,
            "ratio_8_to_0": mean[8] / max(mean[0], 1e-9), "n_queries_per_task": n_queries,
            "n_tasks": len(per_task)}


def parse_answer(text: str) -> str | None:
    found = re.findall(r"answer is (-?\d+)", text)
    return found[-1] if found else None


def eval_cot(models: Path, data: Path, n_problems: int = 200, n_samples: int = 10, temperature: float = 0.8,
             seed: int = 0) -> dict:
    model, tok = load("lm", models / "course-lm")
    rows = C.read_jsonl(data / "arithmetic" / "test.jsonl")[:n_problems]
    gold = [str(r["answer"]) for r in rows]
    direct = generate(model, tok, [format_instruction(DIRECT, r["question"]) for r in rows], 12)
    cot_prompts = [format_instruction(STEP_BY_STEP, r["question"]) for r in rows]
    cot = generate(model, tok, cot_prompts, 120)
    torch.manual_seed(seed)
    samples = generate(model, tok, [p for p in cot_prompts for _ in range(n_samples)], 120,
                       do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    answers = [[parse_answer(samples[i * n_samples + j]) for j in range(n_samples)] for i in range(len(rows))]
    single = sum(a == g for ans, g in zip(answers, gold) for a in ans) / (len(rows) * n_samples)
    first = sum(ans[0] == g for ans, g in zip(answers, gold)) / len(rows)

    def vote(ans):
        counts = Counter(a for a in ans if a is not None)
        return counts.most_common(1)[0][0] if counts else None

    majority = sum(vote(ans) == g for ans, g in zip(answers, gold)) / len(rows)
    by_steps = defaultdict(list)
    for r, c in zip(rows, cot):
        by_steps[r["n_steps"]].append(parse_answer(c) == str(r["answer"]))
    return {
        "n_problems": len(rows), "direct_accuracy": sum(parse_answer(d) == g for d, g in zip(direct, gold)) / len(rows),
        "cot_greedy_accuracy": sum(parse_answer(c) == g for c, g in zip(cot, gold)) / len(rows),
        "cot_single_sample_accuracy": single, "cot_first_sample_accuracy": first,
        "cot_majority_accuracy": majority, "n_samples": n_samples, "temperature": temperature,
        "cot_greedy_by_steps": {k: sum(v) / len(v) for k, v in sorted(by_steps.items())},
        "example": {"question": rows[0]["question"], "direct": direct[0], "cot": cot[0]},
    }


def eval_instructions(models: Path, data: Path, n_per_task: int = 50) -> dict:
    """Greedy responses to held-out instructions: exact match (classify, qa) and ROUGE-L (all four)."""
    model, tok = load("lm", models / "course-lm")
    by_task = defaultdict(list)
    for row in C.read_jsonl(data / "instructions" / "test.jsonl"):
        if len(by_task[row["task"]]) < n_per_task:
            by_task[row["task"]].append(row)
    out = {}
    for task, rows in sorted(by_task.items()):
        responses = generate(model, tok, [format_instruction(r["instruction"], r["input"]) for r in rows], 60)
        responses = [x.strip() for x in responses]
        out[task] = {"exact_match": sum(x == r["output"] for x, r in zip(responses, rows)) / len(rows),
                     "rouge_l": sum(rouge_l(x, r["output"])["f1"] for x, r in zip(responses, rows)) / len(rows),
                     "n": len(rows), "example": {"input": rows[0]["input"], "reference": rows[0]["output"],
                                                 "response": responses[0]}}
    return out


def title_prompt(row: dict) -> str:
    return format_instruction(row["instruction"], row["input"])


def eval_lora(models: Path, data: Path, steps: int = 120, batch_size: int = 16, lr: float = 3e-3, r: int = 16,
              n_test: int = 100, seed: int = 0, limit: int | None = None) -> dict:
    """LoRA (peft) on the titles task: the base model's ROUGE-L, then a fine-tune of a fixed number of steps."""
    from peft import LoraConfig, get_peft_model

    model, tok = load("lm", models / "course-lm")
    train = C.read_jsonl(data / "titles" / "train.jsonl", limit)
    test = C.read_jsonl(data / "titles" / "test.jsonl")[:n_test]

    def score(m):
        outs = generate(m, tok, [title_prompt(t) for t in test], 16, stop_newline=True)
        return sum(rouge_l(o, t["output"])["f1"] for o, t in zip(outs, test)) / len(test), outs

    before, outs_before = score(model)
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng = random.Random(seed)
    model.train()
    start = time.time()
    for step in range(steps):
        batch = [rng.choice(train) for _ in range(batch_size)]
        ids, labels = [], []
        for row in batch:
            p = tok(title_prompt(row), add_special_tokens=False)["input_ids"]
            t = tok(row["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids.append(p + t)
            labels.append([-100] * len(p) + t)
        width = max(map(len, ids))
        x = torch.full((len(ids), width), tok.pad_token_id)
        y = torch.full((len(ids), width), -100)
        m = torch.zeros((len(ids), width), dtype=torch.long)
        for j, (a, b) in enumerate(zip(ids, labels)):
            x[j, :len(a)], y[j, :len(b)], m[j, :len(a)] = torch.tensor(a), torch.tensor(b), 1
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 10)
        loss = model(input_ids=x, attention_mask=m, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    seconds = time.time() - start
    model.eval()
    after, outs_after = score(model)
    return {"rouge_l_before": before, "rouge_l_after": after, "gain": after - before, "train_seconds": seconds,
            "steps": steps, "batch_size": batch_size, "lr": lr, "r": r, "trainable_parameters": trainable,
            "threads": torch.get_num_threads(), "n_test": len(test),
            "example": {"reference": test[0]["output"], "before": outs_before[0], "after": outs_after[0]}}


def eval_reward(models: Path, data: Path, steps: int = 100, batch_size: int = 16, lr: float = 3e-4, seed: int = 0,
                limit: int | None = None) -> dict:
    """A reward model from course-lm (a fresh scalar head on its last token), Bradley-Terry loss."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = models / "course-lm"
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(seed)
    rm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    train = C.read_jsonl(data / "preferences" / "train.jsonl", limit)
    test = C.read_jsonl(data / "preferences" / "test.jsonl")

    def rewards(texts):
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return rm(**enc).logits.squeeze(-1)

    opt = torch.optim.AdamW(rm.parameters(), lr=lr)
    rng = random.Random(seed)
    rm.train()
    start = time.time()
    for step in range(steps):
        batch = [rng.choice(train) for _ in range(batch_size)]
        r = rewards([b["prompt"] + b["chosen"] for b in batch] + [b["prompt"] + b["rejected"] for b in batch])
        loss = -F.logsigmoid(r[:batch_size] - r[batch_size:]).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    seconds = time.time() - start
    rm.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test), 32):
            b = test[i:i + 32]
            r = rewards([x["prompt"] + x["chosen"] for x in b] + [x["prompt"] + x["rejected"] for x in b])
            correct += (r[:len(b)] > r[len(b):]).sum().item()
    return {"pair_accuracy": correct / len(test), "n_test_pairs": len(test), "steps": steps,
            "batch_size": batch_size, "train_seconds": seconds}


def content_positions(tok, text: str) -> tuple[list[int], list[int]]:
    """Token ids of a text (with the MLM's <s> ... </s>) and the positions of single-token content words."""
    enc = tok(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    positions = []
    for i in range(1, len(ids) - 1):
        s, e = offsets[i]
        word = text[s:e].strip()
        nxt = text[offsets[i + 1][0]:offsets[i + 1][1]] if i + 1 < len(ids) - 1 else " "
        starts_word = s == 0 or text[s] == " " or text[s - 1] in " \"\n"
        ends_word = not nxt[:1].isalpha()
        if starts_word and ends_word and word.isalpha() and word.lower() not in STOPWORDS and len(word) > 1:
            positions.append(i)
    return ids, positions


@torch.no_grad()
def eval_mlm(models: Path, data: Path, n_stories: int = 200) -> dict:
    """Mask one content word at a time in held-out stories; is the top-1 prediction the original word?"""
    model, tok = load("mlm", models / "course-mlm")
    rows = C.read_jsonl(data / "stories" / "test.jsonl")[:n_stories]
    correct = total = 0
    examples = []
    for row in rows:
        ids, positions = content_positions(tok, row["text"])
        if not positions:
            continue
        batch = torch.tensor([ids] * len(positions))
        for j, p in enumerate(positions):
            batch[j, p] = tok.mask_token_id
        logits = model(input_ids=batch).logits
        for j, p in enumerate(positions):
            guess = logits[j, p].argmax().item()
            correct += guess == ids[p]
            total += 1
            if len(examples) < 5 and j == 0:
                examples.append({"masked": tok.decode(batch[j][1:-1]), "guess": tok.decode([guess]),
                                 "truth": tok.decode([ids[p]])})
    return {"top1_accuracy": correct / total, "n_masked_words": total, "n_stories": len(rows), "examples": examples}


def split_spans(ids: list[int], sentinels: list[int]) -> dict[int, list[int]]:
    """{sentinel: the tokens after it} for a T5 target sequence."""
    spans, current = {}, None
    for t in ids:
        if t in sentinels:
            current = t
            spans[current] = []
        elif current is not None:
            spans[current].append(t)
    return spans


@torch.no_grad()
def eval_t5(models: Path, data: Path, n_stories: int = 200, seed: int = 0) -> dict:
    """Corrupt held-out stories with the span objective; does the model restore the spans?"""
    from grader.reference.variants import span_corrupt

    model, tok = load("t5", models / "course-t5")
    sentinels = [tok.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(32)]
    specials = {tok.pad_token_id, tok.eos_token_id}
    rows = C.read_jsonl(data / "stories" / "test.jsonl")[:n_stories]
    rng = random.Random(seed)
    token_correct = token_total = span_exact = span_total = 0
    example = None
    for row in rows:
        ids = tok(row["text"], add_special_tokens=False)["input_ids"]
        inp, tgt = span_corrupt(ids, sentinels, generator=rng)
        x = torch.tensor([inp + [tok.eos_token_id]])
        y = torch.tensor([tgt + [tok.eos_token_id]])
        pred = model(input_ids=x, labels=y).logits.argmax(-1)[0]
        hidden = torch.tensor([t not in sentinels for t in y[0].tolist()])
        token_correct += (pred[hidden] == y[0][hidden]).sum().item()
        token_total += hidden.sum().item()
        out = model.generate(input_ids=x, max_new_tokens=len(tgt) + 5, do_sample=False)[0].tolist()
        got = split_spans([t for t in out if t not in specials], sentinels)
        gold = split_spans(tgt, sentinels)
        for s, span in gold.items():
            if span:
                span_total += 1
                span_exact += got.get(s) == span
        if example is None:
            example = {"input": tok.decode(inp), "target": tok.decode(tgt),
                       "generated": tok.decode([t for t in out if t not in specials])}
    return {"span_token_accuracy": token_correct / token_total, "span_exact_match": span_exact / span_total,
            "n_spans": span_total, "n_stories": len(rows), "example": example}


def distinct(texts: list[str], n: int) -> float:
    grams = [tuple(t.split()[i:i + n]) for t in texts for i in range(max(0, len(t.split()) - n + 1))]
    return len(set(grams)) / max(1, len(grams))


@torch.no_grad()
def eval_generation(models: Path, data: Path, n_prompts: int = 30, n_samples: int = 5, seed: int = 0) -> dict:
    model, tok = load("lm", models / "course-lm")
    rows = C.read_jsonl(data / "stories" / "test.jsonl")[:n_prompts]
    prompts = [r["text"].split(". ")[0] + "." for r in rows]
    settings = {
        "greedy": dict(do_sample=False),
        "temperature=0.3": dict(do_sample=True, temperature=0.3, top_k=0),
        "temperature=0.7": dict(do_sample=True, temperature=0.7, top_k=0),
        "temperature=1.0": dict(do_sample=True, temperature=1.0, top_k=0),
        "temperature=1.5": dict(do_sample=True, temperature=1.5, top_k=0),
        "top_k=2": dict(do_sample=True, temperature=1.0, top_k=2),
        "top_k=10": dict(do_sample=True, temperature=1.0, top_k=10),
        "top_k=50": dict(do_sample=True, temperature=1.0, top_k=50),
        "top_p=0.3": dict(do_sample=True, temperature=1.0, top_k=0, top_p=0.3),
        "top_p=0.7": dict(do_sample=True, temperature=1.0, top_k=0, top_p=0.7),
        "top_p=0.95": dict(do_sample=True, temperature=1.0, top_k=0, top_p=0.95),
    }
    out = {}
    for name, kw in settings.items():
        torch.manual_seed(seed)
        texts = generate(model, tok, [p for p in prompts for _ in range(n_samples)], 40, **kw)
        groups = [texts[i:i + n_samples] for i in range(0, len(texts), n_samples)]
        out[name] = {f"distinct_{n}": sum(distinct(g, n) for g in groups) / len(groups) for n in (1, 2, 3)}
        out[name]["corpus_distinct_2"] = distinct(texts, 2)
        out[name]["sample"] = prompts[0] + texts[0]
    return {"settings": out, "n_prompts": n_prompts, "n_samples": n_samples, "max_new_tokens": 40,
            "measure": "distinct-n among the samples of one prompt, averaged over prompts"}


SECTIONS = {"icl": eval_icl, "cot": eval_cot, "instructions": eval_instructions, "lora": eval_lora,
            "reward": eval_reward, "mlm": eval_mlm, "t5": eval_t5, "generation": eval_generation}


# ---------------------------------------------------------------------------------------------- applications

def run_pal(program: str) -> int | float | None:
    """The value of `answer` after a PAL program, or None where the program is refused (the reference runner)."""
    from grader.reference.applications import run_program

    try:
        return run_program(program)["answer"]
    except ValueError:
        return None


def as_number(x) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def react_batch(model, tok, questions: list[str], lookup, max_steps: int = 6) -> tuple[list[str | None], list[int]]:
    """Run the ReAct loop for many questions at once (one batched generation per step); the calculator is the
    reference safe_eval."""
    from grader.reference.applications import safe_eval

    from llmcourse.applications_formats import react_prompt

    prompts = [react_prompt(q) for q in questions]
    answers: list[str | None] = [None] * len(questions)
    calls = [0] * len(questions)
    active = list(range(len(questions)))
    for _ in range(max_steps):
        if not active:
            break
        texts = generate(model, tok, [prompts[i] for i in active], 48)
        still = []
        for i, text in zip(active, texts):
            calls[i] += 1
            text = text.split("\nObservation:")[0]
            m = re.search(r"^Action: (\w+)\[(.*)\]\s*$", text, re.M)
            if not m:
                continue
            tool, arg = m.group(1), m.group(2)
            if tool.lower() == "finish":
                answers[i] = arg.strip()
                continue
            try:
                obs = as_number(safe_eval(arg)) if tool == "calculator" else lookup(arg)
            except Exception as e:  # a tool's error is what the model reads next
                obs = f"Error: {e}"
            prompts[i] += text[:m.end()] + f"\nObservation: {obs}\n"
            still.append(i)
        active = still
    return answers, calls


@torch.no_grad()
def embed_mean(model, tok, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True)
        hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out)


def eval_apps(models: Path, data: Path, n_questions: int = 200, n_problems: int = 200, seed: int = 0) -> dict:
    """course-lm-apps on held-out articles and problems: closed book vs retrieval; CoT vs ReAct vs PAL."""
    import bm25s

    from llmcourse.applications_formats import closed_book_prompt, cot_prompt, pal_prompt, rag_text, split_citation
    from llmcourse.applications_tools import words

    model, tok = load("lm", models / "course-lm-apps")
    facts = C.read_jsonl(data / "facts" / "test.jsonl")
    rng = random.Random(seed)
    qa = [(i, *rng.choice(e["qa"])) for i, e in enumerate(facts)][:n_questions]
    passages = [e["passage"] for e in facts]
    retriever = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    retriever.index([words(p) for p in passages], show_progress=False)
    bm25 = torch.tensor(np.stack([retriever.get_scores(words(q)) for _, q, _ in qa]))
    mlm, mtok = load("mlm", models / "course-mlm")
    dense = embed_mean(mlm, mtok, [q for _, q, _ in qa]) @ embed_mean(mlm, mtok, passages).T
    gold = torch.tensor([i for i, _, _ in qa])
    result = {"n_questions": len(qa), "n_passages": len(passages)}

    def recall(scores, k):
        return (scores.topk(min(k, scores.shape[1]), dim=1).indices == gold[:, None]).any(1).float().mean().item()

    def exact(prompts):
        outs = generate(model, tok, prompts, 16, stop_newline=True)
        return sum(split_citation(o)[0] == a for o, (_, _, a) in zip(outs, qa)) / len(qa), outs

    result["closed_book_exact_match"], _ = exact([closed_book_prompt(q) for _, q, _ in qa])
    for name, scores in (("bm25", bm25), ("dense", dense), ("both", bm25 / bm25.max(1, keepdim=True).values + dense)):
        result[f"recall_at_k_{name}"] = {k: recall(scores, k) for k in (1, 3, 10)}
        top = scores.topk(min(3, scores.shape[1]), dim=1).indices
        em, outs = exact([rag_text(q, [passages[j] for j in top[r]]) for r, (_, q, _) in enumerate(qa)])
        result[f"rag_{name}_exact_match"] = em
        if name == "bm25":
            result["rag_example"] = {"question": qa[0][1], "answer": qa[0][2], "response": outs[0]}
    # Where the answering article sits among the three passages: a retriever puts it first; how much of the
    # reading survives when it comes second or third (two other articles, drawn at random)?
    result["rag_by_position"] = {}
    for position in (1, 2, 3):
        prompts = []
        for i, q, _ in qa:
            shown = [passages[j] for j in rng.sample([j for j in range(len(passages)) if j != i], 2)]
            shown.insert(position - 1, passages[i])
            prompts.append(rag_text(q, shown))
        em, outs = exact(prompts)
        result["rag_by_position"][position] = {
            "exact_match": em, "cites_it": sum(split_citation(o)[1] == position for o in outs) / len(qa)}

    problems = C.read_jsonl(data / "bigmath" / "test.jsonl")[:n_problems]
    result["n_problems"] = len(problems)
    gold_answers = [str(p["answer"]) for p in problems]
    t = time.time()
    cot = generate(model, tok, [cot_prompt(p["question"]) for p in problems], 160)
    result["cot"] = {"accuracy": sum(parse_answer(c) == g for c, g in zip(cot, gold_answers)) / len(problems),
                     "calls": 1.0, "seconds": round(time.time() - t, 1)}
    by_name = {e["name"]: e["passage"] for e in facts}

    def lookup(name):
        if name.strip() not in by_name:
            raise KeyError(f"no article named {name.strip()!r}")
        return by_name[name.strip()]

    t = time.time()
    answers, calls = react_batch(model, tok, [p["question"] for p in problems], lookup)
    result["react"] = {"accuracy": sum(a == g for a, g in zip(answers, gold_answers)) / len(problems),
                       "calls": sum(calls) / len(calls), "seconds": round(time.time() - t, 1)}
    t = time.time()
    programs = generate(model, tok, [pal_prompt(p["question"]) for p in problems], 64)
    pal = [run_pal(prog.split("\n\n")[0]) for prog in programs]
    result["pal"] = {"accuracy": sum(a is not None and as_number(a) == g for a, g in zip(pal, gold_answers))
                     / len(problems), "calls": 1.0, "seconds": round(time.time() - t, 1)}
    result["examples"] = {"question": problems[0]["question"], "cot": cot[0], "pal": programs[0]}
    return result


SECTIONS["apps"] = eval_apps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=C.MODELS)
    ap.add_argument("--data", type=Path, default=C.DATA)
    ap.add_argument("--only", default=",".join(SECTIONS))
    ap.add_argument("--out", type=Path, default=C.ASSETS / "eval_results.json")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    C.setup(args.seed, args.threads)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    quick = {"apps": dict(n_questions=4, n_problems=4), "icl": dict(n_queries=2), "instructions": dict(n_per_task=2), "cot": dict(n_problems=2, n_samples=2), "lora": dict(steps=2, n_test=2, limit=50),
             "reward": dict(steps=2, limit=50), "mlm": dict(n_stories=2), "t5": dict(n_stories=2),
             "generation": dict(n_prompts=2, n_samples=2)}
    for name in args.only.split(","):
        start = time.time()
        kwargs = quick[name] if args.quick else {}
        results[name] = SECTIONS[name](args.models, args.data, **kwargs)
        results[name]["eval_seconds"] = round(time.time() - start, 1)
        print(f"== {name} ({results[name]['eval_seconds']} s)")
        print(json.dumps({k: v for k, v in results[name].items() if k not in ("per_task",)}, indent=1)[:3000], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
