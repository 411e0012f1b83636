"""Grading processes forked from the grading-process template against spawned ones, and kernel forkers.

    python benchmarks/grading_start.py [--runs 5]

One program grades classes of the fixture course's solution again and again with `grader grade`, as a queue
worker, a hub's grading service or a test session does: a class of 1 with `--jobs 1`, and a class of 4 with
`--jobs 2`. Each class is graded three ways, runs interleaved so that the machine's noise hits all alike:
- "template + forker parent" (the default): grading processes forked from the program's template
  (grader/process_template.py), each with a kernel forker forked by the program's forker parent
  (grader/kernel_fork.py: ForkerParent);
- "template + own forkers": forked from the template, each starting its own kernel forker (a new Python);
- "spawned": grading processes spawned as new Pythons, each starting its own kernel forker.
For each run: wall seconds, and CPU seconds of the whole machine (/proc/stat: every process the grading
started, kernels included, and anything else running, so run it on an otherwise idle machine). The template's
own start and the forker parent's (their imports, once per program) are measured apart.

Results: benchmarks/results/grading_start.{json,md}.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from kernel_start import header, provenance, summary  # noqa: E402  (this folder is on sys.path: the script's own)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
CLASSES = ((1, 1), (4, 2))  # (submissions, --jobs)


def machine_cpu() -> float:
    """CPU seconds the whole machine has spent not idle since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


SETTINGS = ("template + forker parent", "template + own forkers", "spawned")


def grade(course: Path, submissions: Path, jobs: int, setting: str) -> dict:
    import grader.grading as grading
    from grader.cli import main as grader_main
    from grader.kernel_fork import ForkerParent

    original, connect = grading.grading_context, ForkerParent.connect
    if setting == "spawned":
        grading.grading_context = lambda: multiprocessing.get_context("spawn")
    if setting != "template + forker parent":
        ForkerParent.connect = classmethod(lambda cls, env: None)
    try:
        cpu, started = machine_cpu(), time.perf_counter()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = grader_main(["--course", str(course), "grade", "00_basics", "--submissions", str(submissions),
                                "--jobs", str(jobs), "--json"])
        wall, cpu = time.perf_counter() - started, machine_cpu() - cpu
    finally:
        grading.grading_context, ForkerParent.connect = original, connect
    assert code == 0
    assert all(r["score"] == 10 for r in json.loads(out.getvalue())), out.getvalue()[-2000:]
    return {"wall": wall, "cpu": cpu}


def template_start() -> float:
    """Wall seconds for a new template to be ready (its imports)."""
    from grader.process_template import Template

    previous, Template._instance = Template._instance, None
    started = time.perf_counter()
    Template.get().ready()
    seconds = time.perf_counter() - started
    Template._instance.process.kill()
    Template._instance.process.wait()
    Template._instance = previous
    return seconds


def forker_parent_start() -> float:
    """Wall seconds from a new forker parent's start to its first forked kernel forker saying it is ready."""
    import json as json_

    from grader.kernel_fork import MAX_MESSAGE, ForkerParent, forker_environment

    started = time.perf_counter()
    parent = ForkerParent(forker_environment(max(1, os.cpu_count() or 1)))
    sock = parent._connect()
    assert sock is not None and "ready" in json_.loads(sock.recv(MAX_MESSAGE))
    seconds = time.perf_counter() - started
    sock.close()
    parent.stop()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from grader.cli import main as grader_main
    from tests.conftest import cell_by_id, copy_fixture_course, read, write_submission
    from tests.test_grading_machinery import ANSWERS

    load_before = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="grading-start-"))
    runs: dict[str, list[dict]] = {}
    try:
        course = copy_fixture_course(scratch / "course")
        with contextlib.redirect_stdout(io.StringIO()):
            assert grader_main(["--course", str(course), "build"]) == 0
        classes = {}
        for size, jobs in CLASSES:
            submissions = scratch / f"class-{size}"
            for i in range(size):
                nb = read(course / "release" / "00_basics" / "basics.ipynb")
                for grade_id, source in ANSWERS.items():
                    cell_by_id(nb, grade_id).source = source
                write_submission(submissions, f"s{i:02d}", nb)
            classes[size, jobs] = submissions
        for (size, jobs), submissions in classes.items():  # untimed: starts the template, warms the disk cache
            for setting in SETTINGS:
                grade(course, submissions, jobs, setting)
        for _ in range(args.runs):
            for (size, jobs), submissions in classes.items():
                for setting in SETTINGS:
                    key = f"{size} submission{'s' if size > 1 else ''}, --jobs {jobs}, {setting}"
                    runs.setdefault(key, []).append(grade(course, submissions, jobs, setting))
        starts = [template_start() for _ in range(3)]
        parent_starts = [forker_parent_start() for _ in range(3)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    result = {**provenance(load_before), "runs": runs, "template_start": starts, "forker_parent_start": parent_starts}
    out = REPO / "benchmarks" / "results"
    (out / "grading_start.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        *header("Grading processes and kernel forkers: forked, or new Pythons", result, "grading_start.py"),
        f"One program grades each class {args.runs} times with each setting, interleaved; median (min–max). CPU: "
        "the whole machine's, kernels included.",
        "",
        "| class | grading processes | wall s | CPU s |",
        "|---|---|---|---|",
    ]
    for key, rows in runs.items():
        what, how = key.rsplit(", ", 1)
        lines.append(f"| {what} | {how} | {summary([r['wall'] for r in rows])} | {summary([r['cpu'] for r in rows])} |")
    lines.append("")
    def ratio(a: list[dict], b: list[dict], what: str) -> str:
        return f"{statistics.median(r[what] for r in a) / statistics.median(r[what] for r in b):.2f}×"

    for size, jobs in CLASSES:
        prefix = f"{size} submission{'s' if size > 1 else ''}, --jobs {jobs}, "
        parent, own, spawned = (runs[prefix + setting] for setting in SETTINGS)
        lines.append(f"- {prefix.rstrip(', ')}: template + forker parent over template with own forkers, wall "
                     f"**{ratio(parent, own, 'wall')}**, CPU **{ratio(parent, own, 'cpu')}**; template with own forkers "
                     f"over spawned, wall **{ratio(own, spawned, 'wall')}**, CPU **{ratio(own, spawned, 'cpu')}**.")
    lines += ["", f"Once per program: the template's start {summary(starts)} s wall, the forker parent's (to its first "
                  f"forker's readiness) {summary(parent_starts)} s wall (3 starts each).", ""]
    (out / "grading_start.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
