"""What a self-learner's `grader check` and an instructor's `grader grade` cost, whole process, against simply
running the same notebook with `jupyter nbconvert --to notebook --execute`.

    python benchmarks/startup.py [--runs 5] [--class-size 10] [--class-runs 3] [--before DIR]

The notebook is source/01_attention/attention.ipynb, the solution (every check passes). nbconvert runs it without
its demo cells, which grading skips too; `grader check` and `grader grade` take the whole notebook. Every figure
is a whole process timed from outside, wall clock, runs of the compared commands interleaved so that the
machine's noise hits them alike, medians reported with min-max. Each run of `grader grade` starts from an empty
course (no gradebook yet), the first grading of a term; CPU seconds and peak memory come from the process's
own accounting (wait4).

Measured:
- check / nbconvert and grade (one submission) / nbconvert, target <= 1.25;
- a class of `--class-size` copies graded with --jobs 1 and --jobs 2 (throughput ratio, target >= 1.7), and where
  the rest of the time goes (the grading processes' own time per submission, against the whole);
- the class report built for a class of 30 (target < 2 s);
- the fixed start-up of `grader check` by phase, measured inside the process (imports, the scratch gradebook,
  autograde, the interpreter's teardown), for this code and, with `--before DIR`, for another checkout of the
  repository in DIR (its `grader` and `llmcourse` are put first on the path; it needs grader.grading's public
  `autograde` and `submission_result`).

Results: benchmarks/results/startup.{json,md}. Compare figures only from one run on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import datetime
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
BIN = Path(sys.executable).parent
ASSIGNMENT = "01_attention"
NOTEBOOK = REPO / "source" / ASSIGNMENT / "attention.ipynb"

# Run inside a fresh process: the steps of `grader check`, timed one by one, through grader.grading's public
# functions only, so that another checkout (--before) is measured the same way.
PHASES = r'''
import json, sys, time, os
t0 = time.monotonic()
marks = {}
def mark(name):
    global t0
    now = time.monotonic(); marks[name] = now - t0; t0 = now
import grader.grading as g
from grader.course import Course
from pathlib import Path
import tempfile, nbformat
mark("imports (grader, nbgrader, nbformat)")
course, path = Course(Path(sys.argv[1])), Path(sys.argv[2])
nb = g.read_notebook(path)
assignment, name = g.identify_assignment(course, nb, path)
root = Path(tempfile.mkdtemp(prefix="startup-phases-"))
dirs = {"submitted_directory": str(root / "submitted"), "autograded_directory": str(root / "autograded"),
        "feedback_directory": str(root / "feedback"), "db_url": "sqlite:///" + str(root / "gradebook.db")}
g.prepare_gradebook(course, assignment, dirs)
mark("scratch gradebook (nbgrader generate_assignment)")
target = root / "submitted" / "self" / assignment
target.mkdir(parents=True)
nbformat.write(nb, str(target / f"{name}.ipynb"))
outcome = g.autograde(course, assignment, "self", g.Workspace(dirs))
mark("autograde (kernel, cells, checks)")
result = g.submission_result(course, g.Submission(assignment, "self", [name], [name]), outcome, root / "autograded")
mark("results read back")
print(json.dumps({"marks": marks, "score": result.score}), flush=True)
import grader.cli
if hasattr(grader.cli, "run"):  # the `grader` command ends without the interpreter's teardown; so does this
    os._exit(0)
'''


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict:
    """Wall, CPU and peak memory of one whole process (its own and its children's, from wait4)."""
    started = time.perf_counter()
    # stderr goes to a file: two pipes read one after the other could fill and stop the process.
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=errors)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        errors.seek(0)
        err = errors.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024,
            "code": proc.returncode, "out": out.decode(errors="replace"), "err": err.decode(errors="replace"),
            "ended": time.time()}


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def fmt(s: dict, unit: str = "") -> str:
    return f"{s['median']:.2f}{unit} ({s['min']:.2f}–{s['max']:.2f})"


def load() -> float:
    return round(os.getloadavg()[0], 2)


class Course:
    """A scratch course holding the assignment, graded in place (gradebook, autograded/, reports/)."""

    def __init__(self, scratch: Path, students: int):
        self.root = scratch / "course"
        (self.root / "source").mkdir(parents=True)
        shutil.copy(REPO / "nbgrader_config.py", self.root)
        shutil.copytree(REPO / "source" / ASSIGNMENT, self.root / "source" / ASSIGNMENT)
        self.one = scratch / "one"
        self.many = scratch / "class"
        for folder, n in ((self.one, 1), (self.many, students)):
            for i in range(n):
                target = folder / f"student{i:02d}" / ASSIGNMENT
                target.mkdir(parents=True)
                shutil.copy(NOTEBOOK, target)

    def reset(self) -> None:
        for name in ("gradebook.db", "autograded", "reports", "feedback"):
            path = self.root / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def without_demo_cells(source: Path, target: Path) -> None:
    import nbformat

    nb = nbformat.read(str(source), as_version=4)
    nb.cells = [c for c in nb.cells if "demo" not in c.metadata.get("tags", [])]
    nbformat.write(nb, str(target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--class-size", type=int, default=10)
    parser.add_argument("--class-runs", type=int, default=3)
    parser.add_argument("--report-size", type=int, default=30)
    parser.add_argument("--before", type=Path, help="an older checkout of this repository, for the phases")
    parser.add_argument("--skip-class", action="store_true", help="leave out the class (the longest part)")
    parser.add_argument("--markdown-only", action="store_true",
                        help="rewrite results/startup.md from results/startup.json, measuring nothing")
    args = parser.parse_args()
    out_dir = REPO / "benchmarks" / "results"
    if args.markdown_only:
        (out_dir / "startup.md").write_text(markdown(json.loads((out_dir / "startup.json").read_text())))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    grader, jupyter = str(BIN / "grader"), str(BIN / "jupyter")
    facts = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
             "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                      text=True).stdout.strip(),
             "load_before": load()}
    results: dict = {"facts": facts}
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as scratch_name:
        scratch = Path(scratch_name)
        course = Course(scratch, args.class_size)
        plain = scratch / "plain.ipynb"
        without_demo_cells(NOTEBOOK, plain)
        mine = scratch / "attention.ipynb"
        shutil.copy(NOTEBOOK, mine)
        commands = {
            "nbconvert": [jupyter, "nbconvert", "--to", "notebook", "--execute", str(plain), "--output",
                          str(scratch / "executed.ipynb")],
            "check": [grader, "--course", str(course.root), "check", str(mine)],
            "grade": [grader, "--course", str(course.root), "grade", ASSIGNMENT, "--submissions", str(course.one),
                      "--jobs", "1", "--no-isolation", "--json"],
        }

        def once(name: str) -> dict:
            if name == "grade":
                course.reset()
            out = run(commands[name], scratch, env)
            if out["code"] != 0:
                raise SystemExit(f"{name} failed (exit {out['code']}):\n{out['err'][-2000:]}")
            return out

        # 1. One notebook, three ways, interleaved (one untimed warm-up round fills the disk cache).
        for name in commands:
            once(name)
        samples: dict[str, list[dict]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name in commands:
                samples[name].append(once(name))
                print(f"  {name}: {samples[name][-1]['wall']:.2f} s", flush=True)
        one = {name: {"wall": summary([s["wall"] for s in runs]), "cpu": summary([s["cpu"] for s in runs]),
                      "peak_mib": summary([s["peak_mib"] for s in runs])} for name, runs in samples.items()}
        base = one["nbconvert"]["wall"]["median"]
        results["one_notebook"] = {**one, "check_ratio": one["check"]["wall"]["median"] / base,
                                   "grade_ratio": one["grade"]["wall"]["median"] / base, "load_after": load()}

        # 2. Where `grader check`'s time goes, phase by phase, now and (optionally) before.
        results["phases"] = {"now": phases(REPO, course.root, mine, env, args.runs)}
        if args.before:
            results["phases"]["before"] = phases(args.before.resolve(), course.root, mine, env, args.runs)

        # 3. A class: --jobs 1 against --jobs 2, interleaved.
        if not args.skip_class:
            results["class"] = grade_class(course, grader, env, args.class_runs)

        # 4. The class report for a class of --report-size.
        results["report"] = report_cost(course, env, args.report_size, args.runs)
    facts["load_after"] = load()
    (out_dir / "startup.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "startup.md").write_text(markdown(results))
    print(markdown(results))


def phases(repo: Path, course: Path, notebook: Path, env: dict[str, str], runs: int) -> dict:
    """`grader check`'s steps timed inside one fresh process each, and the process's whole wall time."""
    env = {**env, "PYTHONPATH": str(repo)}
    marks: dict[str, list[float]] = {}
    for _ in range(runs):
        out = run([sys.executable, "-c", PHASES, str(course), str(notebook)], repo, env)
        if out["code"] != 0:
            raise SystemExit(f"the phase run failed:\n{out['err'][-2000:]}")
        data = json.loads(out["out"].strip().splitlines()[-1])
        steps = dict(data["marks"])
        inside = sum(steps.values())
        # What the parent saw and the steps did not: the interpreter's start, and its teardown at exit.
        steps["interpreter start and teardown"] = out["wall"] - inside
        steps["whole process"] = out["wall"]
        for key, value in steps.items():
            marks.setdefault(key, []).append(value)
    return {key: summary(values) for key, values in marks.items()}


def grade_class(course: Course, grader: str, env: dict[str, str], runs: int) -> dict:
    samples: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(runs):
        for jobs in (1, 2):
            course.reset()
            out = run([grader, "--course", str(course.root), "grade", ASSIGNMENT, "--submissions", str(course.many),
                       "--jobs", str(jobs), "--no-isolation", "--json"], course.root, env)
            if out["code"] != 0:
                raise SystemExit(f"grading the class failed (exit {out['code']}):\n{out['err'][-2000:]}")
            graded = json.loads(out["out"])
            out["scores"] = sorted({r["score"] for r in graded})
            out["autograde_seconds"] = sum(r["seconds"] for r in graded)
            samples[jobs].append(out)
            print(f"  class, --jobs {jobs}: {out['wall']:.1f} s", flush=True)
    size = len(list(course.many.iterdir()))
    one = {jobs: {"wall": summary([s["wall"] for s in runs_]),
                  "autograde_per_submission": summary([s["autograde_seconds"] / size for s in runs_]),
                  "scores": runs_[0]["scores"]} for jobs, runs_ in samples.items()}
    return {"size": size, "jobs": one,
            "speedup": one[1]["wall"]["median"] / one[2]["wall"]["median"], "load_after": load()}


def report_cost(course: Course, env: dict[str, str], size: int, runs: int) -> dict:
    """Build the report of a class of `size` from a graded class's results (copies under new names)."""
    course.reset()
    out = run([str(BIN / "grader"), "--course", str(course.root), "grade", ASSIGNMENT, "--submissions",
               str(course.one), "--jobs", "1", "--no-isolation", "--json"], course.root, env)
    if out["code"] != 0:
        raise SystemExit(f"grading for the report failed:\n{out['err'][-2000:]}")
    grades = course.root / "reports" / ASSIGNMENT / "grades.json"
    one = json.loads(grades.read_text())[0]
    grades.write_text(json.dumps([{**one, "student": f"student{i:02d}"} for i in range(size)]))
    code = ("import sys, time; from pathlib import Path; from grader.course import Course; "
            "from grader.report import build_report; t = time.perf_counter(); "
            f"build_report(Course(Path(sys.argv[1])), {ASSIGNMENT!r}); print(time.perf_counter() - t)")
    inside, whole = [], []
    for _ in range(runs):
        out = run([sys.executable, "-c", code, str(course.root)], course.root, env)
        if out["code"] != 0:
            raise SystemExit(f"the report failed:\n{out['err'][-2000:]}")
        inside.append(float(out["out"].strip().splitlines()[-1]))
        whole.append(out["wall"])
    return {"size": size, "build_report": summary(inside), "whole_process": summary(whole)}


def markdown(r: dict) -> str:
    f = r["facts"]
    one = r["one_notebook"]
    lines = [
        "# Start-up: `grader check` and `grader grade` against running the notebook", "",
        f"{f['date']}, {f['cpus']} CPUs ({f['machine']}), Python {f['python']}, commit {f['commit']}; "
        f"1-minute load average {f['load_before']} before, {f['load_after']} after. Produced by "
        "`benchmarks/startup.py`.", "",
        f"The notebook: `source/{ASSIGNMENT}/attention.ipynb`, the solution (full marks). Whole processes timed "
        "from outside, the three commands interleaved run by run, medians (min–max) of "
        f"{one['nbconvert']['wall']['runs']} runs after one untimed round. nbconvert runs the notebook without its "
        "demo cells (grading skips them too). Each `grader grade` starts from an empty course (no gradebook). "
        "CPU seconds are the process's and those of the children it waited for: nbconvert's kernel is among "
        "them, the grader's sandboxed kernels (reaped inside their sandbox) are not.", "",
        "| command | wall s | CPU s | peak MiB | wall ÷ nbconvert | target |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in (("nbconvert", "`jupyter nbconvert --to notebook --execute`"),
                        ("check", "`grader check attention.ipynb`"),
                        ("grade", "`grader grade 01_attention` (one submission)")):
        ratio = one[name]["wall"]["median"] / one["nbconvert"]["wall"]["median"]
        target = "" if name == "nbconvert" else ("≤ 1.25: met" if ratio <= 1.25 else "≤ 1.25: **not met**")
        lines.append(f"| {label} | {fmt(one[name]['wall'])} | {fmt(one[name]['cpu'])} | "
                     f"{one[name]['peak_mib']['median']:.0f} | {ratio:.2f}× | {target} |")
    lines += ["", "## Where `grader check`'s time goes", "",
              "Each step timed inside a fresh process (median seconds; the last line is the whole process timed "
              "from outside). *Before* is the code this benchmark was first run against, *now* this commit.", ""]
    ph = r["phases"]
    keys = list(dict.fromkeys([*ph.get("before", {}), *ph["now"]]))
    head = "| step | " + (" before |" if "before" in ph else "") + " now |"
    lines += [head, "|---|" + ("---|" if "before" in ph else "") + "---|"]
    for key in keys:
        cells = [ph[k][key]["median"] if key in ph[k] else None for k in (("before", "now") if "before" in ph
                                                                            else ("now",))]
        lines.append(f"| {key} | " + " | ".join("" if c is None else f"{c:.2f}" for c in cells) + " |")
    if "class" in r:
        c = r["class"]
        lines += ["", f"## A class of {c['size']} (the same solution notebook each)", "",
                  "| --jobs | wall s | grading process's own seconds per submission | scores |",
                  "|---|---|---|---|"]
        for jobs, row in c["jobs"].items():
            lines.append(f"| {jobs} | {fmt(row['wall'])} | {fmt(row['autograde_per_submission'])} | "
                         f"{', '.join(f'{s:g}' for s in row['scores'])} |")
        verdict = "met" if c["speedup"] >= 1.7 else "**not met**"
        lines += ["", f"Throughput of --jobs 2 over --jobs 1: **{c['speedup']:.2f}×** (target ≥ 1.7: {verdict}); "
                      f"load average after: {c['load_after']}."]
        fixed = {jobs: row["wall"]["median"] - c["size"] * row["autograde_per_submission"]["median"] / int(jobs)
                 for jobs, row in c["jobs"].items()}
        one_job, two_jobs = (c["jobs"][k]["autograde_per_submission"]["median"] for k in sorted(c["jobs"]))
        lines += ["", "Where the rest goes. A grading process spends "
                  f"{one_job:.2f} s on a submission alone and {two_jobs:.2f} s beside another: on 2 cores the two "
                  "hardly slow each other, because one submission keeps about one core busy (its grading process "
                  "and its kernel mostly take turns). What does not shrink with more jobs is the fixed part, "
                  "the class's wall time less its submissions' share: "
                  + ", ".join(f"{v:.1f} s at --jobs {k}" for k, v in sorted(fixed.items()))
                  + " (the command's imports, nbgrader registering the assignment in the gradebook, the grading "
                  "processes' start, the last submission's tail, the class files and the report). On N cores, N "
                  "jobs should scale about as well until that fixed part, or the SQLite gradebook's one writer at "
                  "a time, dominates; this machine has 2 cores, so that is not measured here."]
    rep = r["report"]
    lines += ["", f"## The class report, for a class of {rep['size']}", "",
              f"`build_report`: {fmt(rep['build_report'], ' s')} inside the process; "
              f"{fmt(rep['whole_process'], ' s')} for the whole process that builds it (imports included). "
              f"Target under 2 s: {'met' if rep['build_report']['median'] < 2 else '**not met**'}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
