"""The KV cache speed-up on course-lm: greedy decoding with and without a cache, 32 to 256 new tokens.

    python benchmarks/prompting_kv_cache.py [--runs 3] [--threads 1] [--new-tokens 32 64 128 256]

Both loops are 03_prompting's reference solutions (grader.reference.prompting): `greedy_generate` runs the
model on the whole sequence at every step, `generate_with_cache` feeds one token per step with the cache.
`model.generate` with `use_cache=False` and `True` is measured alongside. Runs are interleaved (no cache,
cache, generate, generate, then again), so that both sides of each ratio see the same machine load; the
table reports medians and the ratio of the medians, all from one run of this script. Each pair is also
checked to produce the same tokens. Results: benchmarks/results/prompting_kv_cache.{json,md}.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from grader.reference.prompting import generate_with_cache, greedy_generate  # noqa: E402
from llmcourse.assets import load_model, load_tokenizer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "Once upon a time, there was a little"


def timed(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: what one student's kernel gets)")
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[32, 64, 128, 256])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model("course-lm").eval(), load_tokenizer("course-lm")
    ids = tok([PROMPT], return_tensors="pt").input_ids
    mask = torch.ones_like(ids)
    rows = []
    greedy_generate(model, ids, 4), generate_with_cache(model, ids, 4)  # warm-up
    for n in args.new_tokens:
        kinds = {
            "loop_no_cache": lambda: greedy_generate(model, ids, n),
            "loop_cache": lambda: generate_with_cache(model, ids, n),
            "generate_no_cache": lambda: model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                                                        use_cache=False, eos_token_id=None, pad_token_id=0),
            "generate_cache": lambda: model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                                                     use_cache=True, eos_token_id=None, pad_token_id=0),
        }
        times: dict[str, list[float]] = {k: [] for k in kinds}
        outputs = {}
        for _ in range(args.runs):
            for kind, fn in kinds.items():
                seconds, outputs[kind] = timed(fn)
                times[kind].append(seconds)
        same = all(torch.equal(outputs["loop_no_cache"], o) for o in outputs.values())
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"new_tokens": n, "prompt_tokens": ids.shape[1], "median_seconds": med,
                     "all_seconds": times, "same_tokens": same,
                     "speedup_loop": med["loop_no_cache"] / med["loop_cache"],
                     "speedup_generate": med["generate_no_cache"] / med["generate_cache"]})
        print(f"{n:4d} new tokens: loop {med['loop_no_cache']:.3f} s -> {med['loop_cache']:.3f} s "
              f"({rows[-1]['speedup_loop']:.2f}x); generate {med['generate_no_cache']:.3f} s -> "
              f"{med['generate_cache']:.3f} s ({rows[-1]['speedup_generate']:.2f}x); same tokens: {same}", flush=True)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "prompting_kv_cache.json").write_text(json.dumps(
        {"date": date, "load_average": load, "cpus": os.cpu_count(), "threads": args.threads, "runs": args.runs,
         "prompt": PROMPT, "rows": rows}, indent=2))
    lines = ["# The KV cache speed-up on course-lm (03_prompting)", "",
             f"{date}, {os.cpu_count()} CPUs, {args.threads} torch thread(s), load average {load} (other jobs shared "
             f"the machine: absolute times are inflated, the ratios less so since the runs are interleaved). Greedy "
             f"decoding after a {ids.shape[1]}-token prompt, median of {args.runs} interleaved runs; "
             f"`python benchmarks/prompting_kv_cache.py` reproduces it.", "",
             "| new tokens | loop, no cache (s) | loop, cache (s) | speed-up | generate, no cache (s) | "
             "generate, cache (s) | speed-up | same tokens |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["median_seconds"]
        lines.append(f"| {r['new_tokens']} | {m['loop_no_cache']:.3f} | {m['loop_cache']:.3f} | "
                     f"**{r['speedup_loop']:.2f}x** | {m['generate_no_cache']:.3f} | {m['generate_cache']:.3f} | "
                     f"{r['speedup_generate']:.2f}x | {'yes' if r['same_tokens'] else 'NO'} |")
    lines += ["", "The loops are `greedy_generate` (whole sequence every step) and `generate_with_cache` (one token "
              "per step) from the reference solution; `generate` is `model.generate(use_cache=False/True)`. "
              "The speed-up grows with the number of new tokens: without a cache step t processes prompt + t "
              "positions, with it one."]
    (RESULTS / "prompting_kv_cache.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
