"""A grading kernel forked from the kernel forker against one exec'd as a new Python.

    python benchmarks/kernel_start.py [--runs 10] [--class-size 8]

Two measurements, each comparing `SandboxedKernelManager(fork_kernels=True)` with `fork_kernels=False`, runs
interleaved (forked, exec'd, forked, ...) so that the machine's noise hits both alike:

1. One kernel, from `start_kernel` to the end of the course's setup cell (`import torch; from llmcourse import
   notebook_setup, check; device = notebook_setup()`): wall seconds, and the kernel's own CPU seconds (its
   `resource.getrusage`, read in the kernel after the cell). The forker's one-time start (its imports) is
   reported apart: it happens once per grading process, before its first kernel.
2. A class of `--class-size` copies of the fixture course's solution, graded by `grader grade --jobs 1`:
   the command's wall seconds with each setting.

Results: benchmarks/results/kernel_start.{json,md}. Compare figures only from one run on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SETUP = "import torch\nfrom llmcourse import notebook_setup, check\n\ndevice = notebook_setup()"
CPU = ("import resource, json\n_r = resource.getrusage(resource.RUSAGE_SELF)\n"
       "from IPython.display import publish_display_data\n"
       "publish_display_data({'application/x-cpu': json.dumps(_r.ru_utime + _r.ru_stime)})")


async def one_kernel(fork: bool, cwd: str) -> dict:
    from grader.remote import run_code
    from grader.sandbox import SandboxedKernelManager

    km = SandboxedKernelManager(fork_kernels=fork)
    started = time.perf_counter()
    await km.start_kernel(cwd=cwd)
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=300)
        status, _ = await run_code(kc, SETUP, 300)
        assert status == "ok", status
        wall = time.perf_counter() - started
        status, payloads = await run_code(kc, CPU, 60, "application/x-cpu")
        assert status == "ok", status
        return {"wall": wall, "cpu": json.loads(payloads[-1])}
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


def forker_start() -> float:
    """Wall seconds for a new forker to be ready (its imports)."""
    from grader.kernel_fork import KernelForker, forker_environment

    KernelForker._instances.clear()
    started = time.perf_counter()
    forker = KernelForker.for_environment(forker_environment(1))
    seconds = time.perf_counter() - started
    forker.process.kill()
    forker.process.wait()
    KernelForker._instances.clear()
    return seconds


def grade_class(course: Path, submissions: Path, fork: bool) -> float:
    config = course / "nbgrader_config.py"
    text = config.read_text().split("\n# kernel_start.py\n")[0]
    config.write_text(f"{text}\n# kernel_start.py\nc.SandboxedKernelManager.fork_kernels = {fork}\n")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "grader.cli", "--course", str(course), "grade", "00_basics",
                           "--submissions", str(submissions), "--jobs", "1", "--json"],
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(r["score"] == 10 for r in json.loads(proc.stdout)), proc.stdout[-2000:]
    return seconds


def provenance(load_before: float) -> dict:
    """When, where and at which commit a benchmark ran, and the machine's load around it."""
    return {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}",
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                 text=True).stdout.strip(),
        "load_before": load_before, "load_after": os.getloadavg()[0],
    }


def header(title: str, result: dict, script: str) -> list[str]:
    """A results page's first lines: its title and the run's provenance."""
    return [f"# {title}", "",
            f"{result['when']}, {result['machine']}, commit {result['commit']}; 1-minute load average "
            f"{result['load_before']:.2f} before, {result['load_after']:.2f} after. Produced by `benchmarks/{script}`.",
            ""]


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--class-size", type=int, default=8)
    parser.add_argument("--class-runs", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="kernel-start-"))
    try:
        cwd = scratch / "work"
        cwd.mkdir()
        asyncio.run(one_kernel(True, str(cwd)))  # untimed: starts this process's forker, warms the disk cache
        asyncio.run(one_kernel(False, str(cwd)))
        kernels = {True: [], False: []}
        for _ in range(args.runs):
            for fork in (True, False):
                kernels[fork].append(asyncio.run(one_kernel(fork, str(cwd))))
        forker = [forker_start() for _ in range(3)]

        from tests.conftest import cell_by_id, copy_fixture_course, read, write_submission
        from tests.test_grading_machinery import ANSWERS
        from grader.cli import main as grader_main

        course = copy_fixture_course(scratch / "course")
        with contextlib.redirect_stdout(io.StringIO()):
            assert grader_main(["--course", str(course), "build"]) == 0
        submissions = scratch / "submissions"
        for i in range(args.class_size):
            nb = read(course / "release" / "00_basics" / "basics.ipynb")
            for grade_id, source in ANSWERS.items():
                cell_by_id(nb, grade_id).source = source
            write_submission(submissions, f"s{i:02d}", nb)
        classes = {True: [], False: []}
        for _ in range(args.class_runs):
            for fork in (True, False):
                classes[fork].append(grade_class(course, submissions, fork))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    result = {
        **provenance(load_before),
        "runs": args.runs, "class_size": args.class_size, "class_runs": args.class_runs,
        "kernel": {("forked" if f else "execd"): rows for f, rows in kernels.items()},
        "forker_start": forker,
        "class": {("forked" if f else "execd"): rows for f, rows in classes.items()},
    }
    out = REPO / "benchmarks" / "results"
    (out / "kernel_start.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        *header("Grading kernels: forked from the kernel forker, or exec'd", result, "kernel_start.py"),
        f"## One kernel, to the end of the setup cell ({args.runs} runs each, interleaved; median (min–max))",
        "",
        "| kernel | wall s | the kernel's own CPU s |",
        "|---|---|---|",
        f"| exec'd (a new Python) | {summary([r['wall'] for r in kernels[False]])} | "
        f"{summary([r['cpu'] for r in kernels[False]])} |",
        f"| forked | {summary([r['wall'] for r in kernels[True]])} | {summary([r['cpu'] for r in kernels[True]])} |",
        "",
        f"Forked over exec'd: wall **{med(kernels[True], 'wall') / med(kernels[False], 'wall'):.2f}×**, the kernel's "
        f"CPU **{med(kernels[True], 'cpu') / med(kernels[False], 'cpu'):.2f}×**. The forker's own start, once per "
        f"grading process before its first kernel: {summary(forker)} s wall (3 starts).",
        "",
        f"## A class of {args.class_size} (the fixture course's solution), `grader grade --jobs 1` "
        f"({args.class_runs} runs each, interleaved)",
        "",
        "| kernels | wall s |",
        "|---|---|",
        f"| exec'd | {summary(classes[False])} |",
        f"| forked | {summary(classes[True])} |",
        "",
        f"Forked over exec'd: **{statistics.median(classes[True]) / statistics.median(classes[False]):.2f}×**.",
        "",
    ]
    (out / "kernel_start.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
