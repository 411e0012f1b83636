"""Throughput of grading through the task queue with 1, 2 and 4 workers, against local grading.

    python benchmarks/distributed_grading.py [--copies 2] [--workers 1 2 4]

The class is the bundled demo class of 01_attention (5 submissions: full marks, blank, three with one
mistake each), copied `--copies` times. Redis and PostgreSQL run on loopback (Debian's packages, started
as in the tests); each worker is a `grader worker` process with concurrency 1, standing in for a machine.
Every setting grades the same class into the same PostgreSQL gradebook; the record of finished work is
emptied between settings so every submission is really graded. Local mode (`--jobs 1`, no queue) is run
first and last, so the queue's overhead per submission is measured against the local mode next to it.
Results: benchmarks/results/distributed_grading.{json,md}.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.services.postgres import postgres_server  # noqa: E402
from tests.services.redis import redis_server  # noqa: E402

ASSIGNMENT = "01_attention"


def make_course(base: Path, db_url: str, copies: int) -> tuple[Path, Path]:
    course = base / "course"
    course.mkdir()
    shutil.copy(REPO / "nbgrader_config.py", course)
    for name in ("source", "release"):
        shutil.copytree(REPO / name, course / name)
    with open(course / "nbgrader_config.py", "a") as f:
        f.write(f"\nc.CourseDirectory.db_url = {db_url!r}\n")
    submissions = base / "submissions"
    for student in sorted((REPO / "demo" / "submissions").iterdir()):
        for k in range(copies):
            shutil.copytree(student, submissions / f"{student.name}{k}")
    return course, submissions


def grade(course: Path, submissions: Path, *extra: str) -> tuple[float, dict[str, float]]:
    from grader.cli import main

    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["--course", str(course), "grade", ASSIGNMENT, "--submissions", str(submissions), "--json", *extra])
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"grading failed with exit code {code}")
    return seconds, {r["student"]: r["score"] for r in json.loads(out.getvalue())}


def forget_finished_work(db_url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS llmcourse_graded"))  # the workers make it afresh
    engine.dispose()


@contextlib.contextmanager
def workers(course: Path, broker: str, n: int, logs: Path):
    from grader.distributed import make_app

    procs = []
    for i in range(n):
        log = open(logs / f"worker{n}-{i}.log", "ab")
        procs.append(subprocess.Popen([sys.executable, "-m", "grader.cli", "--course", str(course), "worker",
                                       "--broker", broker, "--name", f"w{i}@bench"],
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    app = make_app(broker)
    deadline = time.monotonic() + 90
    while len(app.control.inspect(timeout=1.0).ping() or {}) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"{n} workers did not come up; see {logs}")
    try:
        yield
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=2, help="copies of the 5-student demo class")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "distributed_grading"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_before = os.getloadavg()[0]
    rows, grades = [], []
    with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp, postgres_server() as db_url, \
            redis_server() as broker:
        base = Path(tmp)
        course, submissions = make_course(base, db_url, args.copies)
        n = len(list(submissions.iterdir()))
        local_first, scores = grade(course, submissions, "--jobs", "1")
        grades.append(scores)
        rows.append({"mode": "local --jobs 1 (first)", "workers": 0, "seconds": local_first})
        for k in args.workers:
            forget_finished_work(db_url)
            with workers(course, broker, k, base):
                seconds, scores = grade(course, submissions, "--broker", broker)
            grades.append(scores)
            rows.append({"mode": f"queue, {k} worker{'s' if k > 1 else ''}", "workers": k, "seconds": seconds})
        local_last, scores = grade(course, submissions, "--jobs", "1")
        grades.append(scores)
        rows.append({"mode": "local --jobs 1 (last)", "workers": 0, "seconds": local_last})
        with workers(course, broker, 1, base):
            cached, scores = grade(course, submissions, "--broker", broker)  # nothing forgotten: all recorded
        grades.append(scores)
        rows.append({"mode": "queue, 1 worker, class already graded", "workers": 1, "seconds": cached})
    same = all(g == grades[0] for g in grades)
    local = (local_first + local_last) / 2
    one_worker = next(r["seconds"] for r in rows if r["workers"] == 1)
    for r in rows:
        r["per_submission"] = r["seconds"] / n
        r["submissions_per_minute"] = 60 * n / r["seconds"]
    result = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(), "submissions": n, "assignment": ASSIGNMENT, "rows": rows,
        "local_per_submission": local / n, "queue_overhead_per_submission": (one_worker - local) / n,
        "same_grades_everywhere": same, "load_before": load_before, "load_after": os.getloadavg()[0],
    }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Distributed grading: throughput by number of workers",
        "",
        f"{result['when']}, {result['cpus']} CPUs, {n} submissions of {ASSIGNMENT} (the demo class, copied). "
        f"Redis and PostgreSQL on loopback; each worker a `grader worker` process with concurrency 1. "
        f"Load average (1 min) {load_before:.2f} before, {result['load_after']:.2f} after.",
        "",
        "| mode | wall seconds | seconds per submission | submissions per minute |",
        "|---|---|---|---|",
        *(f"| {r['mode']} | {r['seconds']:.1f} | {r['per_submission']:.2f} | {r['submissions_per_minute']:.1f} |"
          for r in rows),
        "",
        f"- Local grading, mean of the first and last run: {result['local_per_submission']:.2f} s per submission.",
        f"- Queue overhead (1 worker against local --jobs 1): {result['queue_overhead_per_submission']:+.2f} s per "
        f"submission ({100 * (one_worker - local) / local:+.1f}%).",
        f"- Every run gave the same grades: {'yes' if same else 'NO'}.",
        "- This machine has 2 cores, so more than 2 workers only share them: the rows for 2 and 4 workers show "
        "the queue keeping the cores busy, not the scaling of a pool of machines (see docs/scaling.md).",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
