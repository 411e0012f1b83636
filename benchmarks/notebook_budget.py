"""Runs each executed-solution notebook top to bottom and records its wall time and peak memory.

    python benchmarks/notebook_budget.py [NOTEBOOK ...] [--runs N]

The budget (DESIGN.md): every solution notebook runs in under 2 minutes on 2 CPU cores with a peak
resident memory under 3 GB. Memory is the kernel process's (and its children's) RSS, sampled every
50 ms while the notebook runs. Results go to benchmarks/results/notebook_budget.{json,md}; naming some notebooks replaces only their rows.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import psutil
import torch
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BUDGET_SECONDS, BUDGET_BYTES = 120, 3 * 2**30


def run_once(path: Path) -> tuple[float, int]:
    nb = nbformat.read(str(path), as_version=4)
    with tempfile.TemporaryDirectory() as scratch:
        km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(scratch, "k"))
        client = NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": scratch}})
        peak = [0]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                if km.has_kernel:
                    try:
                        proc = psutil.Process(km.provisioner.pid)
                        rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                        peak[0] = max(peak[0], rss)
                    except (psutil.Error, AttributeError):
                        pass
                time.sleep(0.05)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        started = time.perf_counter()
        try:
            client.execute()
        finally:
            seconds = time.perf_counter() - started
            stop.set()
            thread.join()
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    return seconds, peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    notebooks = [p.resolve() for p in args.notebooks] or sorted((REPO / "solutions").glob("*/*.ipynb"))
    rows = []
    for path in notebooks:
        runs = [run_once(path) for _ in range(args.runs)]
        secs = [s for s, _ in runs]
        peaks = [p for _, p in runs]
        rows.append({"notebook": str(path.relative_to(REPO)), "runs": args.runs, "median_seconds": statistics.median(secs),
                     "seconds": secs, "peak_rss_bytes": max(peaks),
                     "within_budget": statistics.median(secs) < BUDGET_SECONDS and max(peaks) < BUDGET_BYTES})
        print(f"{path.name}: median {statistics.median(secs):.1f} s, peak RSS {max(peaks) / 2**20:.0f} MB")
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "load_average": ", ".join(f"{x:.1f}" for x in os.getloadavg())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    previous = RESULTS / "notebook_budget.json"
    if args.notebooks and previous.is_file():  # measuring some notebooks keeps the others' last rows
        measured = {r["notebook"] for r in rows}
        kept = [r for r in json.loads(previous.read_text())["notebooks"] if r["notebook"] not in measured]
        rows = sorted(kept + rows, key=lambda r: r["notebook"])
    (RESULTS / "notebook_budget.json").write_text(json.dumps({"machine": meta, "notebooks": rows}, indent=2))
    lines = ["# Solution notebooks: time and memory", "",
             f"{meta['date']}, {meta['cpus']} CPUs, Python {meta['python']}, torch {meta['torch']}, "
             f"GPU: {'yes' if meta['cuda'] else 'no'}, load average {meta['load_average']}. Budget: under {BUDGET_SECONDS} s and {BUDGET_BYTES / 2**30:.0f} GB peak RSS.", "",
             "| notebook | runs | median s | all runs (s) | peak RSS (MB) | within budget |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['notebook']} | {r['runs']} | {r['median_seconds']:.1f} | "
                     f"{', '.join(f'{s:.1f}' for s in r['seconds'])} | {r['peak_rss_bytes'] / 2**20:.0f} | "
                     f"{'yes' if r['within_budget'] else 'NO'} |")
    (RESULTS / "notebook_budget.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
