"""Grades one synthetic class at several --jobs settings and reports throughput and speed-up.

    python benchmarks/parallel_grading.py [--students 40] [--jobs 1 2 4] [--rounds 1]

The class is built from the test suite's fixture course (assignment 00_basics: three small
exercises), so the numbers measure the grading machinery (sandboxed kernel per submission, checks
from outside, nbgrader's gradebook) rather than the students' models. A third of the class answers
everything, a third nothing, a third gets one exercise wrong. Rounds interleave the settings, so
machine noise hits them alike. Every run must give the same grades: the script says if not.
Results: benchmarks/results/parallel_grading.{json,md}.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import FIXTURE, cell_by_id, read, use_fixture_checks, write_submission  # noqa: E402

ANSWERS = {
    "add": "def add(a, b):\n    return a + b",
    "scale": "def scale(x, factor):\n    return x * factor",
    "mean_rows": "def mean_rows(x):\n    return x.mean(dim=-1)",
}


def make_class(course: Path, submissions: Path, n: int) -> None:
    release = course / "release" / "00_basics" / "basics.ipynb"
    for i in range(n):
        nb = read(release)
        kind = i % 3
        if kind != 1:
            for grade_id, source in ANSWERS.items():
                cell_by_id(nb, grade_id).source = source
        if kind == 2:
            cell_by_id(nb, "scale").source = "def scale(x, factor):\n    return x + factor"
        write_submission(submissions, f"student{i:03d}", nb)


def grade(course: Path, submissions: Path, jobs: int) -> tuple[float, dict[str, float]]:
    from grader.cli import main

    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["--course", str(course), "grade", "00_basics", "--submissions", str(submissions),
                     "--jobs", str(jobs), "--json"])
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"grading failed with exit code {code}")
    return seconds, {r["student"]: r["score"] for r in json.loads(out.getvalue())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="parallel-bench-") as scratch:
        course = Path(scratch) / "course"
        shutil.copytree(FIXTURE, course, ignore=shutil.ignore_patterns("__pycache__"))
        use_fixture_checks(course)
        from grader.cli import main as grader_main

        with contextlib.redirect_stdout(io.StringIO()):
            grader_main(["--course", str(course), "build"])
        submissions = Path(scratch) / "submissions"
        make_class(course, submissions, args.students)
        times: dict[int, list[float]] = {j: [] for j in args.jobs}
        grades: list[dict[str, float]] = []
        for _ in range(args.rounds):
            for jobs in args.jobs:
                seconds, scores = grade(course, submissions, jobs)
                times[jobs].append(seconds)
                grades.append(scores)
                print(f"--jobs {jobs}: {seconds:.1f} s for {args.students} submissions", flush=True)
    identical = all(g == grades[0] for g in grades)
    base = statistics.median(times[args.jobs[0]])
    rows = [{"jobs": j, "median_seconds": statistics.median(t), "seconds": t,
             "submissions_per_minute": 60 * args.students / statistics.median(t),
             "speedup": base / statistics.median(t)} for j, t in times.items()]
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
            "students": args.students, "rounds": args.rounds, "identical_grades": identical,
            "load_average": os.getloadavg()}
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "parallel_grading.json").write_text(json.dumps({"machine": meta, "runs": rows}, indent=2))
    lines = ["# Parallel grading", "",
             f"{meta['date']}, {meta['cpus']} CPUs, a class of {args.students} submissions of the fixture assignment "
             f"(00_basics), {args.rounds} round(s), settings interleaved. Same grades in every run: "
             f"{'yes' if identical else 'NO'}. Load average at the end: {', '.join(f'{x:.1f}' for x in meta['load_average'])}.", "",
             "| --jobs | median s | submissions / min | speed-up vs --jobs %d |" % args.jobs[0], "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['jobs']} | {r['median_seconds']:.1f} | {r['submissions_per_minute']:.1f} | {r['speedup']:.2f}x |")
    lines += ["", "Each submission gets a fresh sandboxed kernel; on this 2-core machine two kernels already use both "
              "cores, so more jobs than cores only overlap the idle moments (kernel start, gradebook writes)."]
    (out / "parallel_grading.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
