"""Write assets/MODELS.md (a card per model, with the measured numbers) and assets/manifest.json.

    python assets/scripts/make_cards.py [--assets assets]

The numbers come from assets/eval_results.json (evaluate.py), each model's train_info.json and
assets/build_info.json (build_all.py). The manifest holds the sha256 of every model, tokenizer and data
file; llmcourse.assets checks it when loading, so a damaged file is reported, not silently used.
Run this script again after editing any asset by hand.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

BARS = {
    "icl": "8-shot accuracy at least 3x the 0-shot accuracy",
    "cot": "step by step beats the direct answer; a majority vote beats one sample",
    "lora": "ROUGE-L gain of at least 0.2 after a LoRA fine-tune of under 60 s",
    "reward": "held-out pair accuracy of at least 90%",
    "mlm": "top-1 accuracy of at least 50% on masked content words",
    "generation": "temperature, top-k and top-p visibly change diversity (distinct-2 rises along each knob)",
    "rag": "closed-book exact match at most 10%; with BM25 retrieval of the top 3 passages at least 70%",
    "tools": "3- and 4-digit word problems: chain of thought under 40%; ReAct with the calculator at least 80%; "
             "PAL at least 80%",
}

DATA_NOTES = {
    "stories": "short stories (classroom, library, park, kitchen, farm...), a kind or an unkind ending",
    "instructions": "four task families in one prompt format: classify, qa, summarize (a dialogue), continue",
    "fewshot": "items of 12 few-shot task families; test items are new to their family",
    "facts": "an encyclopedia of invented rivers, towns, inventors and creatures: one article and three questions "
             "each; the names exist nowhere else, and test articles are never trained on",
    "bigmath": "word problems with 3- and 4-digit numbers and 2 or 3 steps (each step kept, for ReAct traces and "
               "PAL programs)",
    "arithmetic": "word problems with 2 to 4 steps and a step-by-step solution ending 'The answer is N.'",
    "titles": "the LoRA target task: write a title for a story (kept out of pretraining)",
    "preferences": "story openings with a kind (chosen) and an unkind (rejected) continuation",
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(assets: Path) -> dict:
    files = {}
    for folder in ("models", "tokenizer", "data"):
        for path in sorted((assets / folder).rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                files[path.relative_to(assets).as_posix()] = sha256(path)
    manifest = {"about": "sha256 of every asset file; written by assets/scripts/make_cards.py", "sha256": files}
    (assets / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return files


def mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def rows(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def checks(r: dict) -> dict[str, tuple[str, bool]]:
    """Each capability: the measured numbers in words, and whether the bar is met."""
    out = {}
    if "icl" in r:
        a = r["icl"]["accuracy"]
        out["icl"] = (f"0-shot {pct(a['0'])}, 8-shot {pct(a['8'])} ({r['icl']['ratio_8_to_0']:.1f}x)",
                      a["8"] >= 3 * a["0"])
    if "cot" in r:
        c = r["cot"]
        out["cot"] = (f"direct {pct(c['direct_accuracy'])}, step by step {pct(c['cot_greedy_accuracy'])} (greedy); "
                      f"one sample {pct(c['cot_single_sample_accuracy'])}, majority of {c['n_samples']} "
                      f"{pct(c['cot_majority_accuracy'])}",
                      c["cot_greedy_accuracy"] > c["direct_accuracy"]
                      and c["cot_majority_accuracy"] > c["cot_single_sample_accuracy"])
    if "lora" in r:
        lo = r["lora"]
        out["lora"] = (f"ROUGE-L {lo['rouge_l_before']:.3f} -> {lo['rouge_l_after']:.3f} (+{lo['gain']:.3f}) "
                       f"in {lo['train_seconds']:.0f} s", lo["gain"] >= 0.2 and lo["train_seconds"] < 60)
    if "reward" in r:
        out["reward"] = (f"pair accuracy {pct(r['reward']['pair_accuracy'])}", r["reward"]["pair_accuracy"] >= 0.9)
    if "mlm" in r:
        out["mlm"] = (f"top-1 {pct(r['mlm']['top1_accuracy'])}", r["mlm"]["top1_accuracy"] >= 0.5)
    if "generation" in r:
        s = {k: v["distinct_2"] for k, v in r["generation"]["settings"].items()}
        knobs = [["temperature=0.3", "temperature=0.7", "temperature=1.0", "temperature=1.5"],
                 ["top_k=2", "top_k=10", "top_k=50"], ["top_p=0.3", "top_p=0.7", "top_p=0.95"]]
        # Visible: along each knob, distinct-2 rises at every step, and greedy decoding is the least diverse.
        rising = all(s[a] < s[b] for knob in knobs for a, b in zip(knob, knob[1:]))
        lowest = all(s["greedy"] <= v for v in s.values())
        out["generation"] = ("distinct-2: greedy {:.2f}; temperature 0.3 -> 1.5: {:.2f} -> {:.2f}; top-k 2 -> 50: "
                             "{:.2f} -> {:.2f}; top-p 0.3 -> 0.95: {:.2f} -> {:.2f}".format(
                                 s["greedy"], s["temperature=0.3"], s["temperature=1.5"], s["top_k=2"], s["top_k=50"],
                                 s["top_p=0.3"], s["top_p=0.95"]), rising and lowest)
    if "apps" in r:
        a = r["apps"]
        out["rag"] = (f"closed book {pct(a['closed_book_exact_match'])}; RAG with BM25 top 3 "
                      f"{pct(a['rag_bm25_exact_match'])} (dense {pct(a['rag_dense_exact_match'])}, both "
                      f"{pct(a['rag_both_exact_match'])})",
                      a["closed_book_exact_match"] <= 0.10 and a["rag_bm25_exact_match"] >= 0.70)
        out["tools"] = (f"chain of thought {pct(a['cot']['accuracy'])}; ReAct {pct(a['react']['accuracy'])} "
                        f"({a['react']['calls']:.1f} model calls each); PAL {pct(a['pal']['accuracy'])}",
                        a["cot"]["accuracy"] < 0.40 and a["react"]["accuracy"] >= 0.80 and a["pal"]["accuracy"] >= 0.80)
    return out


def train_time(i: dict, build: dict, script: str) -> str:
    """How long a model trained: wall clock, and the CPU time when the build measured it."""
    text = f"{i['seconds'] / 60:.1f} minutes wall-clock on {i['threads']} thread" + ("s" if i['threads'] != 1 else "")
    cpu = build.get("cpu_seconds", {}).get(script)
    return text + (f" ({cpu / 60:.1f} CPU minutes)" if cpu else "")


def card(assets: Path) -> str:
    r = json.loads((assets / "eval_results.json").read_text())
    build = json.loads((assets / "build_info.json").read_text()) if (assets / "build_info.json").is_file() else {}
    info = {m: json.loads((assets / "models" / m / "train_info.json").read_text())
            for m in ("course-lm", "course-mlm", "course-t5")}
    cfg = {m: json.loads((assets / "models" / m / "config.json").read_text()) for m in info}
    vocab = cfg["course-lm"]["vocab_size"]
    ok = checks(r)
    secs = build.get("seconds", {})
    L = []
    add = L.append
    add("# The course's models and data")
    add("")
    add("Everything here is made by the scripts in `assets/scripts/` from fixed seeds: no text, model or")
    add("tokenizer is downloaded. `make assets` rebuilds it all" +
        (f" (last build: {secs['total'] / 60:.0f} minutes on {build.get('cpu_count')} CPU cores)." if "total" in secs else "."))
    add("The numbers below are written by `assets/scripts/make_cards.py` from `assets/eval_results.json`, which")
    add("`assets/scripts/evaluate.py` measures on the **test** splits (never seen in training).")
    add("")
    add("```python")
    add("from llmcourse.assets import load_model, load_tokenizer, load_task")
    add('model, tok = load_model("course-lm"), load_tokenizer("course-lm")   # from_pretrained on the local folder')
    add('stories = load_task("stories")                                      # DatasetDict: train, test')
    add("```")
    add("")
    add("Set `LLMCOURSE_ASSETS` to use assets stored elsewhere, and `LLMCOURSE_HUB=1` (with `HF_HUB_OFFLINE=0`) to")
    add("swap in real hub models of the same families (`llmcourse.assets.HUB_MODELS`).")
    add("")
    add("## Capabilities the assignments rely on")
    add("")
    add("| capability | bar | measured | |")
    add("|---|---|---|---|")
    names = {"icl": "in-context learning (course-lm)", "cot": "chain of thought (course-lm)",
             "lora": "LoRA target task (course-lm)", "reward": "reward model from course-lm",
             "mlm": "masked LM (course-mlm)", "generation": "sampling settings (course-lm)",
             "rag": "reading retrieved passages (course-lm-apps)", "tools": "tools and programs (course-lm-apps)"}
    for key, title in names.items():
        if key in ok:
            text, good = ok[key]
            add(f"| {title} | {BARS[key]} | {text} | {verdict(good)} |")
    add("")

    # ------------------------------------------------------------------ course-lm
    c, i = cfg["course-lm"], info["course-lm"]
    add("## course-lm: the main model (decoder-only)")
    add("")
    add(f"- **Architecture**: `LlamaForCausalLM`, {c['num_hidden_layers']} layers, hidden size {c['hidden_size']}, "
        f"{c['num_attention_heads']} heads, SwiGLU MLP of {c['intermediate_size']}, rotary positions, tied embeddings, "
        f"vocabulary {vocab}. Attention projections `q_proj`, `k_proj`, `v_proj`, `o_proj` and the MLP's "
        "`gate_proj`, `up_proj`, `down_proj` are plain `nn.Linear` layers (LoRA targets).")
    add(f"- **Size**: {i['parameters'] / 1e6:.2f} M parameters, {mb(assets / 'models' / 'course-lm'):.1f} MB on disk "
        "(float32 safetensors).")
    add(f"- **Training**: {i['steps']} steps of {i['batch_size']} rows x {i['seq_len']} tokens "
        f"({i['tokens'] / 1e6:.1f} M tokens), AdamW with warmup and cosine decay, {train_time(i, build, 'train_lm.py')}; "
        f"final training loss {i['final_loss']}.")
    add("- **Data**: a packed mixture of `stories` (20%), `instructions` (30%), `arithmetic` (25%; each problem "
        "both step by step and answer-only) and few-shot episodes of 6 to 10 items of one `fewshot` family (25%). "
        "`titles` and `preferences` are kept out, so LoRA and preference tuning have something to teach.")
    add("- **Prompt formats** (see `llmcourse.assets.format_instruction` and `format_few_shot`):")
    add("")
    add("```text")
    add("### Instruction:\nSolve the problem step by step.\n\n### Input:\nTom has 5 apples. He eats 2. ...\n\n### Response:\n")
    add("```")
    add("```text")
    add("Input: cat\nOutput: red\n\nInput: bread\nOutput: blue\n\nInput: lamp\nOutput:")
    add("```")
    add("")
    import make_data as D

    add("The instructions course-lm was trained with (other wordings work less well):")
    add("")
    add(f"- classify: {', '.join(repr(x) for x in D.CLASSIFY_FEELING + D.CLASSIFY_ENDING)}")
    add(f"- qa (input: the story, a newline, then `Question: ...`): {', '.join(repr(x) for x in D.QA)}")
    add(f"- summarize (input: lines `Name: words`): {', '.join(repr(x) for x in D.SUMMARIZE)}")
    add(f"- continue: {', '.join(repr(x) for x in D.CONTINUE)}")
    add(f"- word problems: {D.STEP_BY_STEP!r} (a worked solution ending `The answer is N.`) and {D.DIRECT!r} "
        "(only `The answer is N.`)")
    add(f"- not trained, the LoRA task: {D.TITLE!r}")
    add("")
    if "icl" in r:
        ic = r["icl"]
        add(f"**In-context learning** ({ic['n_tasks']} families, {ic['n_queries_per_task']} held-out queries each; "
            "the shots and the query all come from the test split; greedy exact match):")
        add("")
        add("| family | " + " | ".join(f"{k}-shot" for k in ic["shots"]) + " |")
        add("|---|" + "---|" * len(ic["shots"]))
        for task, acc in ic["per_task"].items():
            add(f"| {task} | " + " | ".join(f"{acc[str(k)] if str(k) in acc else acc[k]:.2f}" for k in ic["shots"]) + " |")
        add("| **mean** | " + " | ".join(f"**{ic['accuracy'][str(k)]:.2f}**" for k in ic["shots"]) + " |")
        add("")
        add("Zero-shot, the query is ambiguous (which family is meant?), so the model guesses; each example narrows "
            "the family down. Families sharing label words (colour/colour_mix, nonsense/nonsense_mix) and the digit "
            "families need more than one example. This is task *recognition*: the families were seen in "
            "pretraining, the held-out inputs were not. Learning a brand-new mapping from the examples alone is "
            "beyond a model this small.")
        add("")
    if "cot" in r:
        co = r["cot"]
        add(f"**Chain of thought** ({co['n_problems']} held-out word problems): direct answer "
            f"{pct(co['direct_accuracy'])}; step by step {pct(co['cot_greedy_accuracy'])} (greedy); sampling at "
            f"temperature {co['temperature']}: one sample {pct(co['cot_single_sample_accuracy'])}, majority vote of "
            f"{co['n_samples']} samples {pct(co['cot_majority_accuracy'])}. Step-by-step accuracy by number of steps: "
            + ", ".join(f"{k} steps {pct(v)}" for k, v in co["cot_greedy_by_steps"].items()) + ".")
        add("")
    if "instructions" in r:
        add("**Instructions** (held-out prompts of each family, greedy response):")
        add("")
        add("| family | exact match | ROUGE-L | example |")
        add("|---|---|---|---|")
        for task, v in r["instructions"].items():
            if not isinstance(v, dict):
                continue
            ex = {k: str(x).replace("\n", " / ").replace("|", "\\|") for k, x in v["example"].items()}
            add(f"| {task} | {pct(v['exact_match'])} | {v['rouge_l']:.2f} | "
                f"reference \"{ex['reference']}\", response \"{ex['response']}\" |")
        add("")
    if "lora" in r:
        lo = r["lora"]
        add(f"**LoRA target task** (`titles`, {lo['n_test']} held-out stories): ROUGE-L F1 {lo['rouge_l_before']:.3f} "
            f"before, {lo['rouge_l_after']:.3f} after a peft LoRA fine-tune (r={lo['r']}, all attention and MLP "
            f"projections, {lo['trainable_parameters']} trainable parameters, {lo['steps']} steps of {lo['batch_size']}, "
            f"lr {lo['lr']}) that took {lo['train_seconds']:.0f} s on {lo['threads']} thread. Example: reference "
            f"\"{lo['example']['reference']}\", before \"{lo['example']['before']}\", after \"{lo['example']['after']}\".")
        add("")
    if "reward" in r:
        rw = r["reward"]
        add(f"**Reward model**: `AutoModelForSequenceClassification` from course-lm (one output, a new head), "
            f"Bradley-Terry loss, {rw['steps']} steps of {rw['batch_size']} pairs ({rw['train_seconds']:.0f} s): "
            f"{pct(rw['pair_accuracy'])} of {rw['n_test_pairs']} held-out pairs ranked correctly.")
        add("")
    if "generation" in r:
        g = r["generation"]
        add(f"**Sampling settings** ({g['n_prompts']} story openings, {g['n_samples']} samples of "
            f"{g['max_new_tokens']} tokens each; {g['measure']}):")
        add("")
        add("| setting | distinct-1 | distinct-2 | distinct-3 |")
        add("|---|---|---|---|")
        for name, v in g["settings"].items():
            add(f"| {name} | {v['distinct_1']:.2f} | {v['distinct_2']:.2f} | {v['distinct_3']:.2f} |")
        add("")

    # ------------------------------------------------------------------ course-mlm
    c, i = cfg["course-mlm"], info["course-mlm"]
    add("## course-mlm: the encoder-only masked LM")
    add("")
    add(f"- **Architecture**: `BertForMaskedLM`, {c['num_hidden_layers']} layers, hidden size {c['hidden_size']}, "
        f"{c['num_attention_heads']} heads, MLP {c['intermediate_size']}, learned positions (up to "
        f"{c['max_position_embeddings']}), vocabulary {vocab}. Its tokenizer wraps every text as `<s> ... </s>`.")
    add(f"- **Size**: {i['parameters'] / 1e6:.2f} M parameters, {mb(assets / 'models' / 'course-mlm'):.1f} MB on disk.")
    add(f"- **Training**: BERT's objective (15% of tokens picked; 80% `<mask>`, 10% random, 10% kept) on the "
        f"stories and the inputs of the classify/continue/summarize instructions; {i['steps']} steps of "
        f"{i['batch_size']} texts, {train_time(i, build, 'train_mlm.py')}; final loss {i['final_loss']}.")
    if "mlm" in r:
        m = r["mlm"]
        add(f"- **Score**: {pct(m['top1_accuracy'])} top-1 on {m['n_masked_words']} content words (nouns, verbs, "
            f"adjectives, names; one masked at a time) of {m['n_stories']} held-out stories.")
    add("")

    # ------------------------------------------------------------------ course-t5
    c, i = cfg["course-t5"], info["course-t5"]
    add("## course-t5: the encoder-decoder span-infilling model")
    add("")
    add(f"- **Architecture**: `T5ForConditionalGeneration`, {c['num_layers']} encoder and {c['num_decoder_layers']} "
        f"decoder layers, d_model {c['d_model']}, {c['num_heads']} heads, gated-GELU MLP {c['d_ff']}, relative "
        f"position buckets, vocabulary {vocab}. Its tokenizer appends `</s>`; sentinels are `<extra_id_0>` to "
        "`<extra_id_31>`.")
    add(f"- **Size**: {i['parameters'] / 1e6:.2f} M parameters, {mb(assets / 'models' / 'course-t5'):.1f} MB on disk.")
    add(f"- **Training**: T5 span corruption (15% noise, mean span 3) on the stories; {i['steps']} steps of "
        f"{i['batch_size']} stories, {train_time(i, build, 'train_t5.py')}; final loss {i['final_loss']}.")
    if "t5" in r:
        t = r["t5"]
        add(f"- **Score** on {t['n_stories']} held-out stories, corrupted the same way: {pct(t['span_token_accuracy'])} "
            f"of the hidden tokens predicted (teacher-forced top-1); {pct(t['span_exact_match'])} of the "
            f"{t['n_spans']} hidden spans restored exactly by greedy decoding. Example: input "
            f"`{t['example']['input']}`, target `{t['example']['target']}`, output `{t['example']['generated']}`.")
    add("")

    # ------------------------------------------------------------------ course-lm-apps
    apps_dir = assets / "models" / "course-lm-apps"
    if (apps_dir / "train_info.json").is_file():
        i = json.loads((apps_dir / "train_info.json").read_text())
        add("## course-lm-apps: course-lm fine-tuned for applications (06_applications)")
        add("")
        add(f"- **Architecture and size**: course-lm's ({i['parameters'] / 1e6:.2f} M parameters, "
            f"{mb(apps_dir):.1f} MB on disk), same tokenizer.")
        phases = i.get("phases", [])
        schedule = (" in " + " then ".join(f"{p['steps']} at learning rate {p['lr']:g}" for p in phases)
                    + " (each phase from a fresh optimiser and the data stream's start)") if len(phases) > 1 else ""
        add(f"- **Training**: from course-lm's weights, {i['steps']} steps of {i['batch_size']} rows x {i['seq_len']} "
            f"tokens ({i['tokens'] / 1e6:.1f} M tokens){schedule}, {train_time(i, build, 'train_apps.py')}; final "
            f"training loss {i['final_loss']}.")
        mix = i.get("mixture", {})
        curriculum = i.get("curriculum")
        passages = (f"one, then two, then three numbered passages (up to {curriculum[0]:.0%} and {curriculum[1]:.0%} "
                    "of each phase's rows)" if curriculum else "three numbered passages")
        weight = (f"; their answers weigh {i['answer_weight']} times as much as other tokens in the loss"
                  if i.get("answer_weight") else "")
        copy = (f", copying invented names or a passage word for word ({mix['copy']:.0%})" if "copy" in mix else "")
        cot = (f", the same problems worked step by step ({mix['cot']:.0%})" if "cot" in mix else "")
        add(f"- **Data**: retrieval prompts on `facts` ({mix.get('rag', 0):.0%}: a question, {passages}, the answer "
            f"and its passage's number{weight}){copy}, closed-book questions on the same articles "
            f"({mix.get('closed', 0):.0%}), ReAct traces ({mix.get('react', 0):.0%}: `bigmath` problems with "
            "`calculator[...]`, `facts` questions with `lookup[...]`, comparisons with both), programs of `bigmath` "
            f"problems ({mix.get('pal', 0):.0%}){cot} and course-lm's own mixture ({mix.get('replay', 0):.0%}). "
            "Train splits only.")
        add("- **Prompt formats**: `llmcourse.applications_formats` (retrieval, closed book, ReAct, PAL).")
        if "apps" in r:
            a = r["apps"]
            add("")
            add(f"**Retrieval** ({a['n_questions']} held-out questions, one per test article; greedy exact match of "
                f"the answer before its citation):")
            add("")
            add("| method | exact match | recall@1 | recall@3 | recall@10 |")
            add("|---|---|---|---|---|")
            add(f"| closed book | {pct(a['closed_book_exact_match'])} | | | |")
            for name in ("bm25", "dense", "both"):
                rk = a[f"recall_at_k_{name}"]
                add(f"| RAG, {name} top 3 | {pct(a[f'rag_{name}_exact_match'])} | {pct(rk['1'])} | {pct(rk['3'])} "
                    f"| {pct(rk['10'])} |")  # keys are strings: the results were read from JSON
            add("")
            if "rag_by_position" in a:
                by = a["rag_by_position"]
                add("**Where the answering article sits** (the same questions, the article and two others drawn at "
                    "random, the article first, second or third):")
                add("")
                add("| the article is passage | exact match | cites that passage |")
                add("|---|---|---|")
                for position in ("1", "2", "3"):
                    add(f"| [{position}] | {pct(by[position]['exact_match'])} | {pct(by[position]['cites_it'])} |")
                add("")
                add("The model learned where a retriever puts the best passage: its reading is best, and its citation "
                    "right, when the answering article comes first, as it does after BM25 (recall@1 is "
                    f"{pct(a['recall_at_k_bm25']['1'])}). It was trained with the article first in most prompts "
                    "(`SHUFFLED` in train_apps.py); 06_applications shows this as a lesson on position bias.")
                add("")
            add(f"**Tools and programs** ({r['apps'].get('n_problems', 200)} held-out `bigmath` problems):")
            add("")
            add("| method | accuracy | model calls per problem | seconds (batched generation) |")
            add("|---|---|---|---|")
            for key, title in (("cot", "chain of thought"), ("react", "ReAct + calculator"), ("pal", "PAL")):
                add(f"| {title} | {pct(a[key]['accuracy'])} | {a[key]['calls']:.1f} | {a[key]['seconds']:.0f} |")
        add("")

    # ------------------------------------------------------------------ tokenizer and data
    tok = json.loads((assets / "tokenizer" / "tokenizer_config.json").read_text())
    add("## The tokenizer")
    add("")
    add(f"Byte-level BPE trained with `tokenizers` on the train splits (vocabulary {vocab}), saved in transformers "
        f"format in `assets/tokenizer/` and copied into each model folder. Special tokens: pad `{tok['pad_token']}` (id 0), "
        f"bos/cls `{tok['bos_token']}`, eos/sep `{tok['eos_token']}`, unk `{tok['unk_token']}`, mask `{tok['mask_token']}`, "
        f"and {len(tok.get('extra_special_tokens', []))} sentinels `<extra_id_0>` ... for span corruption.")
    add("")
    add("## The data sets")
    add("")
    add("JSON Lines in `assets/data/<name>/{train,test}.jsonl`, generated by `assets/scripts/make_data.py`; "
        "`load_task(name)` reads them with `datasets.load_dataset(\"json\", ...)`.")
    add("")
    add("| name | train | test | fields | what |")
    add("|---|---|---|---|---|")
    from llmcourse.assets import TASK_FIELDS

    for name, fields in TASK_FIELDS.items():
        d = assets / "data" / name
        add(f"| `{name}` | {rows(d / 'train.jsonl')} | {rows(d / 'test.jsonl')} | {', '.join(fields)} | {DATA_NOTES[name]} |")
    add("")
    sweep_path = assets / "data" / "scaling" / "runs.json"
    if sweep_path.is_file():
        sweep = json.loads(sweep_path.read_text())
        runs = sweep["runs"]
        sizes = sorted({(r["params"], r["hidden_size"], r["layers"]) for r in runs})
        budgets = sorted({r["tokens"] for r in runs})
        loss = {(r["params"], r["tokens"]): r["loss"] for r in runs}
        add("## The scaling-law sweep (07_deployment)")
        add("")
        add(f"`assets/data/scaling/runs.json`, made by `assets/scripts/train_scaling.py` in {sweep['seconds'] / 60:.0f} "
            f"minutes on one core: {len(runs)} fresh Llama-style models, each trained on course-lm's mixture with its "
            f"own warmup and cosine schedule to its token budget (batches of {sweep['batch_size']} x {sweep['seq_len']} "
            f"tokens, peak learning rate {sweep['lr']}). Held-out loss (nats per token) on the `stories` test split; "
            "parameters exclude the embedding table. The notebook fits the Chinchilla law to it.")
        add("")
        add("| parameters (hidden x layers) | " + " | ".join(f"{b / 1e6:.2f} M tokens" for b in budgets) + " |")
        add("|---|" + "---|" * len(budgets))
        for n, d, layers in sizes:
            add(f"| {n:,} ({d} x {layers}) | " + " | ".join(f"{loss[n, b]:.3f}" for b in budgets) + " |")
        add("")
    add("## Rebuilding")
    add("")
    add("`make assets` runs `assets/scripts/build_all.py`: data, tokenizer, then course-lm in one process while "
        "course-mlm and course-t5 train in another (one thread each), then course-lm-apps is fine-tuned from "
        "course-lm (two threads), then the evaluation and this file.")
    if secs:
        cpu = build.get("cpu_seconds", {})
        add("")
        load = build.get("load_average_at_end")
        add(f"The last build ran on a machine with {build.get('cpu_count')} cores shared with other work"
            + (f" (load average {load[0]} at its end)" if load else "")
            + ", so wall-clock times overstate the cost; the CPU seconds (where measured) are what each step "
            "needs from one core of its own.")
        add("")
        add("| step | wall-clock seconds | CPU seconds |")
        add("|---|---|---|")
        again = build.get("retrained", {})
        for k, v in secs.items():
            label = f"{k} (rerun {again[k]})" if k in again else k
            add(f"| {label} | {v:.0f} | {cpu[k]:.0f} |" if k in cpu else f"| {label} | {v:.0f} | |")
        if again:
            add("")
            add(f"The rows marked *rerun* come from `build_all.py --only ...` after the last full build "
                f"({build.get('finished', '?')}); the total is that of the full build.")
    total_mb = sum(mb(assets / f) for f in ("models", "tokenizer", "data"))
    add("")
    add(f"All models, the tokenizer and the data take {total_mb:.1f} MB.")
    add("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=Path, default=HERE.parent)
    args = ap.parse_args(argv)
    (args.assets / "MODELS.md").write_text(card(args.assets))
    files = write_manifest(args.assets)
    print(f"wrote {args.assets / 'MODELS.md'} and a manifest of {len(files)} files")
    for key, (text, good) in checks(json.loads((args.assets / "eval_results.json").read_text())).items():
        print(f"{key:11s} {'met    ' if good else 'NOT MET'} {text}")


if __name__ == "__main__":
    main()
