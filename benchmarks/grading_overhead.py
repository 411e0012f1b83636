"""How much slower is grading a notebook than just running it?

    python benchmarks/grading_overhead.py [NOTEBOOK ...] [--runs N] [--warmup N] [--profile]

For each source notebook (default: source/01_attention/attention.ipynb if it exists, else the
fixture course's notebook) three things are timed, interleaved run by run (A, B, C, A, B, C, ...)
so that machine noise hits all three alike:

  A  plain execution: nbclient runs the solution form of the notebook (demo cells removed) in an
     ordinary kernel. Its check cells run the visible checks in the kernel, as in JupyterLab.
  B  the grading run: RunChecks (our nbgrader Execute replacement) on the source notebook: sandboxed
     kernel, demo cells skipped, check cells graded from this process (visible + hidden checks).
  C  `grader check`: check_notebook(), the whole nbgrader pipeline a self-learner runs (scratch
     gradebook, generate_assignment to register the assignment, autograde with RunChecks).

Reported per notebook: median and min/max wall seconds of A, B, C, and median(B)/median(A),
median(C)/median(A). The target is B/A <= 1.25; it is reported, never asserted. When B/A is above
it (or with --profile), a few extra instrumented runs of A and B break their time down into kernel
start, cell execution, check cells (pytest vs round trips to the kernel) and kernel shutdown.

Results go to benchmarks/results/grading_overhead.{json,md}; the table is also printed.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.conftest import FIXTURE, use_fixture_checks  # noqa: E402  (the test suite's fixture course)
ATTENTION = REPO / "source" / "01_attention" / "attention.ipynb"
RESULTS = REPO / "benchmarks" / "results"
TARGET = 1.25  # median(B) / median(A)
SKIP_TAGS = {"demo"}
# nbgrader's own SQLAlchemy chatter during autograde (C): not ours, and not a problem.
warnings.filterwarnings("ignore", message=".*not in session.*")

import nbformat  # noqa: E402
import pytest  # noqa: E402
from jupyter_client import AsyncKernelManager  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from grader.build import solution_notebook  # noqa: E402
from grader.course import Course  # noqa: E402
from grader.grading import check_notebook  # noqa: E402
from grader.preprocessors import RunChecks, is_check_cell  # noqa: E402
from grader.remote import KernelSession  # noqa: E402
from grader.sandbox import SandboxedKernelManager  # noqa: E402
from llmcourse.checking.runner import run_checks  # noqa: E402


# -- the notebooks -------------------------------------------------------------------------------------
def default_notebooks() -> list[Path]:
    return [ATTENTION] if ATTENTION.is_file() else [FIXTURE / "source" / "00_basics" / "basics.ipynb"]


def prepare(path: Path, scratch: Path) -> tuple[Course, Path]:
    """The course and notebook to benchmark; the fixture course is used from a scratch copy."""
    path = path.resolve()
    if path.is_relative_to(FIXTURE.resolve()):
        root = scratch / "fixture_course"
        if not root.exists():
            shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns(
                "__pycache__", "release", "solutions", "gradebook.db", "autograded", "submitted", "feedback"))
        path = root / path.relative_to(FIXTURE.resolve())
    course = Course.find(path.parent)
    if (course.root / "fixture_checks").is_dir():
        use_fixture_checks(course.root)
    return course, path


def display_name(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def plain_notebook(source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = solution_notebook(source)
    nb.cells = [c for c in nb.cells if not SKIP_TAGS & set(c.get("metadata", {}).get("tags", []))]
    return nb


# -- the three measurements ----------------------------------------------------------------------------
def run_a(source: nbformat.NotebookNode, client_class=NotebookClient) -> tuple[float, dict]:
    nb = plain_notebook(source)
    with tempfile.TemporaryDirectory(prefix="bench-plain-") as tmpdir:
        started = time.perf_counter()
        client = client_class(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmpdir}})
        client.execute()
        seconds = time.perf_counter() - started
    errors = sum(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    return seconds, {"error_outputs": errors}


def run_b(course: Course, source: nbformat.NotebookNode, preprocessor_class=RunChecks) -> tuple[float, dict]:
    nb = copy.deepcopy(source)
    with tempfile.TemporaryDirectory(prefix="bench-grade-") as tmpdir:
        started = time.perf_counter()
        pre = preprocessor_class(config=course.config())
        pre.preprocess(nb, {"metadata": {"path": tmpdir}})
        seconds = time.perf_counter() - started
    grading = nb.metadata.get("llmcourse", {}).get("grading", {})
    checks = [c for r in pre.results for c in r.checks]
    return seconds, {"score": sum(r.score for r in pre.results), "max_score": sum(r.max_score for r in pre.results),
                     "checks_visible": sum(c.visible for c in checks), "checks_hidden": sum(not c.visible for c in checks),
                     "events": grading.get("events", []), "sandbox_refused": grading.get("sandbox_refused", [])}


def run_c(course: Course, path: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    result = check_notebook(course, path)
    seconds = time.perf_counter() - started
    return seconds, {"score": result.score, "max_score": result.max_score, "error": result.error,
                     "autograde_seconds": result.seconds}


# -- profiling: where the time of A and B goes ---------------------------------------------------------
# Row names shared by A and B; indented rows are parts of the row above them.
KM, LAUNCH, READY = "kernel manager created", "kernel launched", "kernel ready (client waits for it)"
BOOT, CODE, CHECKS = "check agent loaded at start (B only)", "code cells", "check cells"
BOOT_CELL = "  agent bootstrap and channel, per exercise"
RUN_CHECKS = "  run_checks: one pytest session per exercise"
SESSION = "    pytest start-up, collection (imports the check modules), teardown"
TESTS = "    the checks themselves (pytest runtest)"
RPC = "      requests to the kernel (round trips)"
GRADER = "      the checks' own work in the grader (the rest)"
SHUTDOWN, OTHER, TOTAL = "kernel shutdown", "other (config, setup, kernel_info, temp dirs)", "total"
ROWS = [KM, LAUNCH, READY, BOOT, CODE, CHECKS, BOOT_CELL, RUN_CHECKS, SESSION, TESTS, RPC, GRADER, SHUTDOWN, OTHER,
        TOTAL]


class Phases:
    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.per_exercise: dict[str, dict] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds
        self.counts[name] += 1


class _Timed:
    def __init__(self, phases: Phases, name: str):
        self.phases, self.name = phases, name

    def __enter__(self):
        self.t = time.perf_counter()

    def __exit__(self, *exc):
        self.phases.add(self.name, time.perf_counter() - self.t)


# Every phase is timed in a subclass, through public methods and nbclient's hooks: nothing is patched.
def _timed_shutdown(manager_class: type, phases: Phases) -> type:
    """The kernel manager, its final shutdown timed (a restart stops its kernel another way)."""

    class TimedShutdown(manager_class):
        async def shutdown_kernel(self, now: bool = False, restart: bool = False):
            with _Timed(phases, SHUTDOWN):
                return await super().shutdown_kernel(now=now, restart=restart)

    return TimedShutdown


def _profiled_client(phases: Phases):
    class ProfiledClient(NotebookClient):
        def __init__(self, nb, **kw):
            super().__init__(nb, kernel_manager_class=_timed_shutdown(AsyncKernelManager, phases), **kw)

        def create_kernel_manager(self):
            with _Timed(phases, KM):
                return super().create_kernel_manager()

        async def async_start_new_kernel(self, **kw):
            with _Timed(phases, LAUNCH):
                return await super().async_start_new_kernel(**kw)

        async def async_start_new_kernel_client(self):
            with _Timed(phases, READY):
                return await super().async_start_new_kernel_client()

        async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
            # A's check cells run the visible checks in the kernel (pytest there), as in JupyterLab.
            if cell.cell_type != "code":
                return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
            with _Timed(phases, CHECKS if is_check_cell(cell) else CODE):
                return await super().async_execute_cell(cell, cell_index, execution_count, store_history)

    return ProfiledClient


def _profiled_run_checks(phases: Phases):
    class ProfiledSession(KernelSession):
        async def connect(self):
            with _Timed(phases, BOOT_CELL):
                return await super().connect()

        async def request(self, payload, timeout):
            with _Timed(phases, RPC):
                return await super().request(payload, timeout)

    class ProfiledRunChecks(RunChecks):
        def __init__(self, **kw):
            super().__init__(kernel_manager_class=_timed_shutdown(SandboxedKernelManager, phases), **kw)

        def create_kernel_manager(self):
            with _Timed(phases, KM):
                return super().create_kernel_manager()

        def start_new_kernel(self, **kw):
            with _Timed(phases, LAUNCH):
                return super().start_new_kernel(**kw)

        def start_new_kernel_client(self):
            # nbclient calls on_notebook_start (the agent's bootstrap, its own row) before this returns.
            started, boot = time.perf_counter(), phases.seconds[BOOT]
            try:
                return super().start_new_kernel_client()
            finally:
                phases.add(READY, time.perf_counter() - started - (phases.seconds[BOOT] - boot))

        async def on_notebook_start(self, notebook):
            with _Timed(phases, BOOT):
                return await super().on_notebook_start(notebook)

        def kernel_session(self):
            session = super().kernel_session()
            return ProfiledSession(session.km, session.kc, session.deadline, session.startup_timeout)

        def execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
            with _Timed(phases, CODE):
                return super().execute_cell(cell, cell_index, execution_count, store_history)

        def grade_cell(self, cell):
            with _Timed(phases, CHECKS):
                return super().grade_cell(cell)

        def check_exercise(self, exercise_id, student, visible, hidden):
            # What RunChecks.check_exercise runs, with a timer among the pytest session's plugins.
            rpc_seconds, rpc_count, started = phases.seconds[RPC], phases.counts[RPC], time.perf_counter()
            result = run_checks(exercise_id, student, visible=visible, hidden=hidden, plugins=[_PytestTimer(phases)])
            seconds = time.perf_counter() - started
            phases.add(RUN_CHECKS, seconds)
            phases.per_exercise[exercise_id] = {
                "seconds": round(seconds, 4), "round_trip_seconds": round(phases.seconds[RPC] - rpc_seconds, 4),
                "round_trips": phases.counts[RPC] - rpc_count, "checks": len(result.checks)}
            return result

    return ProfiledRunChecks


class _PytestTimer:
    """A pytest plugin added to each check session: the time spent running the checks (runtest)."""

    def __init__(self, phases: Phases):
        self.phases = phases

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        with _Timed(self.phases, TESTS):
            yield


def profile(course: Course, source: nbformat.NotebookNode, runs: int) -> dict:
    """Median seconds per phase over `runs` instrumented runs of A and of B (interleaved)."""
    samples: dict[str, dict[str, list[float]]] = {"A": defaultdict(list), "B": defaultdict(list)}
    counts: dict[str, dict[str, int]] = {"A": {}, "B": {}}
    per_exercise: list[dict[str, dict]] = []
    for _ in range(runs):
        for label in ("A", "B"):
            phases = Phases()
            if label == "A":
                total, _info = run_a(source, _profiled_client(phases))
            else:
                total, _info = run_b(course, source, _profiled_run_checks(phases))
            seconds = dict(phases.seconds)
            seconds[OTHER] = total - sum(v for k, v in seconds.items() if not k.startswith(" "))
            if RUN_CHECKS in seconds:
                seconds[SESSION] = seconds[RUN_CHECKS] - seconds.get(TESTS, 0.0)
                seconds[GRADER] = seconds.get(TESTS, 0.0) - seconds.get(RPC, 0.0)
            if label == "B":
                per_exercise.append(phases.per_exercise)
            seconds[TOTAL] = total
            for k, v in seconds.items():
                samples[label][k].append(v)
            counts[label] = dict(phases.counts)
    out = {label: {"median_seconds": {k: round(statistics.median(per[k]), 4) for k in ROWS if k in per},
                   "seconds_per_run": {k: [round(v, 4) for v in per[k]] for k in ROWS if k in per},
                   "calls_per_run": counts[label]} for label, per in samples.items()}
    # B, per exercise (one pytest session each): median seconds, and the round trips to the kernel in them.
    out["B"]["per_exercise"] = {
        ex: {key: round(statistics.median(run[ex][key] for run in per_exercise if ex in run), 4)
             for key in ("seconds", "round_trip_seconds", "round_trips", "checks")}
        for ex in dict.fromkeys(ex for run in per_exercise for ex in run)}
    return out


# -- the benchmark -------------------------------------------------------------------------------------
def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "runs": [round(v, 4) for v in values]}


def benchmark(path: Path, runs: int, warmup: int, force_profile: bool, profile_runs: int, scratch: Path) -> dict:
    course, notebook = prepare(path, scratch)
    digest = hashlib.sha256(notebook.read_bytes()).hexdigest()
    source = nbformat.read(str(notebook), as_version=4)
    # C grades a snapshot, so that all three measure the same notebook even if someone edits it meanwhile.
    snapshot = scratch / "snapshot" / digest[:12] / notebook.name
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(source, str(snapshot))
    print(f"== {display_name(path)}: {warmup} warm-up round(s), then {runs} timed round(s) of A, B, C", flush=True)
    load_before = _load()
    times: dict[str, list[float]] = {"A": [], "B": [], "C": []}
    infos: dict[str, dict] = {}
    for round_no in range(-warmup, runs):
        for label in ("A", "B", "C"):
            if label == "A":
                seconds, info = run_a(source)
            elif label == "B":
                seconds, info = run_b(course, source)
            else:
                seconds, info = run_c(course, snapshot)
            infos[label] = info
            tag = "warm-up" if round_no < 0 else f"run {round_no + 1}/{runs}"
            print(f"   {tag:12s} {label}: {seconds:7.2f} s", flush=True)
            if round_no >= 0:
                times[label].append(seconds)
    entry = {
        "notebook": display_name(path),
        "notebook_sha256": digest,
        "runs": runs,
        "warmup_rounds": warmup,
        "A_plain_execution": summary(times["A"]),
        "B_runchecks": summary(times["B"]),
        "C_check_notebook": summary(times["C"]),
        "ratio_B_over_A": round(statistics.median(times["B"]) / statistics.median(times["A"]), 3),
        "ratio_C_over_A": round(statistics.median(times["C"]) / statistics.median(times["A"]), 3),
        "target_B_over_A": TARGET,
        "load_average_1_5_15_min": {"before": load_before, "after": _load()},  # other work on the machine
        "last_run": infos,  # sanity: the grading runs gave full marks, the plain run had no errors
    }
    entry["meets_target"] = entry["ratio_B_over_A"] <= TARGET
    if force_profile or not entry["meets_target"]:
        print(f"   profiling A and B ({profile_runs} instrumented round(s))", flush=True)
        entry["profile"] = profile(course, source, profile_runs)
    return entry


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict:
    import jupyter_client
    import nbclient
    import nbgrader
    import torch

    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "nbgrader": nbgrader.__version__,
        "nbclient": nbclient.__version__,
        "jupyter_client": jupyter_client.__version__,
        "git_commit": commit,
        "git_tracked_files_modified": dirty,
    }


def _cell(s: dict) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Grading overhead",
        "",
        f"{m['date']}, {m['cpu_count']} CPUs ({m['processor']}), Python {m['python']}, torch {m['torch']}, "
        f"nbgrader {m['nbgrader']}, commit {m['git_commit'] or '?'}. Wall seconds: median (min–max).",
        "",
        "A: plain nbclient run of the solution notebook (demo cells removed). B: `RunChecks` on the source "
        "notebook (sandboxed kernel, checks graded from outside). C: `check_notebook` (`grader check`, the "
        f"whole nbgrader pipeline). Target: B/A <= {TARGET}.",
        "",
        "| notebook | runs | A plain | B RunChecks | C grader check | B/A | C/A | B/A target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in report["notebooks"]:
        ok = "met" if e["meets_target"] else "**missed**"
        lines.append(f"| {e['notebook']} | {e['runs']} | {_cell(e['A_plain_execution'])} | {_cell(e['B_runchecks'])} | "
                     f"{_cell(e['C_check_notebook'])} | {e['ratio_B_over_A']:.2f} | {e['ratio_C_over_A']:.2f} | "
                     f"<= {TARGET} {ok} |")
    lines.append("")
    for e in report["notebooks"]:
        load, runs = e.get("load_average_1_5_15_min", {}), e.get("last_run", {})
        b, c = runs.get("B", {}), runs.get("C", {})
        when = f" (measured {e['machine']['date']}, an earlier invocation)" if e.get("machine") else ""
        counts = (f" from {b['checks_visible']} visible + {b['checks_hidden']} hidden checks (A runs only the "
                  f"visible ones)" if "checks_visible" in b else "")
        lines.append(f"- {e['notebook']}{when}: {e['warmup_rounds']} untimed warm-up round(s); grading gave "
                     f"{b.get('score', 0):g}/{b.get('max_score', 0):g} (B){counts} and {c.get('score', 0):g}/"
                     f"{c.get('max_score', 0):g} (C); C's autograde alone took {c.get('autograde_seconds', 0):.2f} s "
                     f"(the rest of C is generate_assignment into a scratch gradebook); load average "
                     f"(1 min) {load.get('before', ['?'])[0]} before, {load.get('after', ['?'])[0]} after.")
    for e in report["notebooks"]:
        if "profile" not in e:
            continue
        lines += ["", f"## Where the time goes: {e['notebook']} (median seconds, instrumented runs)", "",
                  "| phase | A plain | B RunChecks |", "|---|---|---|"]
        a, b = e["profile"]["A"]["median_seconds"], e["profile"]["B"]["median_seconds"]
        ca, cb = e["profile"]["A"]["calls_per_run"], e["profile"]["B"]["calls_per_run"]
        for key in [k for k in ROWS if k in a or k in b]:
            def fmt(d, c):
                if key not in d:
                    return ""
                return f"{d[key]:.2f}" + (f" ({c[key]}×)" if c.get(key, 1) > 1 else "")
            depth = (len(key) - len(key.lstrip(" "))) // 2
            name = "&nbsp;&nbsp;" * depth + ("↳ " if depth else "") + key.strip()
            lines.append(f"| {name} | {fmt(a, ca)} | {fmt(b, cb)} |")
        per = e["profile"]["B"].get("per_exercise", {})
        if per:
            lines += ["", "B per exercise (one pytest session each; median seconds):", "",
                      "| exercise | checks | seconds | round trips to the kernel | their seconds |", "|---|---|---|---|---|"]
            for ex, v in per.items():
                lines.append(f"| {ex} | {v['checks']:g} | {v['seconds']:.2f} | {v['round_trips']:g} | "
                             f"{v['round_trip_seconds']:.2f} |")
        lines += ["", "A's check cells run the visible checks in the kernel (as in JupyterLab); B's run the visible "
                  "and hidden checks in the grader. Kernel shutdown includes waiting for the kernel process to "
                  "exit; one that has not exited after half of jupyter_client's shutdown_wait_time (2.5 s) is "
                  "sent SIGTERM. Per-run values are in grading_overhead.json."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="source notebooks (default: source/01_attention/attention.ipynb, else the fixture's)")
    parser.add_argument("--runs", type=int, default=5, help="timed rounds per notebook (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (imports, caches; default 1)")
    parser.add_argument("--profile", action="store_true", help="break A and B down by phase even if B/A meets the target")
    parser.add_argument("--profile-runs", type=int, default=3, help="instrumented rounds when profiling (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory (default benchmarks/results)")
    parser.add_argument("--keep-others", action="store_true",
                        help="keep the results file's entries for notebooks not measured this time")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or default_notebooks()
    for nb in notebooks:
        if not nb.is_file():
            parser.error(f"{nb} does not exist")
    report = {"machine": machine(), "target_B_over_A": TARGET, "notebooks": []}
    with tempfile.TemporaryDirectory(prefix="bench-course-") as scratch:
        for nb in notebooks:
            report["notebooks"].append(benchmark(nb, args.runs, args.warmup, args.profile, args.profile_runs,
                                                 Path(scratch)))
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "grading_overhead.json"
    if args.keep_others and json_path.exists():
        measured = {e["notebook"] for e in report["notebooks"]}
        old = json.loads(json_path.read_text())
        for e in old.get("notebooks", []):
            if e["notebook"] not in measured:
                e.setdefault("machine", old.get("machine"))  # measured then, on that machine
                report["notebooks"].append(e)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    (args.out / "grading_overhead.md").write_text(md)
    print()
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
