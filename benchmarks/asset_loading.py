"""How long loading each course model takes through `llmcourse.assets` (from_pretrained on local files).

    python benchmarks/asset_loading.py [--runs 10]

The first load of each family pays for importing its transformers module; the table reports that
first load and the median of the following ones, side by side in one run. Budget: under a second.
Results: benchmarks/results/asset_loading.{json,md}.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from pathlib import Path

from llmcourse import assets

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for name in assets.MODELS:
        times = []
        for _ in range(args.runs + 1):
            start = time.perf_counter()
            assets.load_model(name)
            assets.load_tokenizer(name)
            times.append(time.perf_counter() - start)
        rows.append({"model": name, "first_seconds": times[0], "median_seconds": statistics.median(times[1:]),
                     "runs": args.runs})
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "asset_loading.json").write_text(json.dumps({"date": date, "load_average": load, "models": rows}, indent=2))
    lines = ["# Loading the course models", "", f"{date}, {os.cpu_count()} CPUs, load average {load}. Model and "
             f"tokenizer together, through `llmcourse.assets`; budget: under a second.", "",
             "| model | first load (s) | median of the next %d (s) |" % args.runs, "|---|---|---|"]
    lines += [f"| {r['model']} | {r['first_seconds']:.2f} | {r['median_seconds']:.3f} |" for r in rows]
    (RESULTS / "asset_loading.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
