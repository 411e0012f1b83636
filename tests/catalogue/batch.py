"""Grade the whole catalogue in one batch, then look at the machine for anything the cases left behind.

    run = run_catalogue()            # a fresh course copy, every case graded at once (--jobs 4)
    for obs in run.observations:     # one per case: the grader's result, the graded notebook's output
        problems = evaluate(obs)     # [] when the case got exactly what it should
    run.cleanup()

The course copy lives outside /tmp (every kernel gets a private /tmp, which would hide it whatever the
sandbox's other rules did) and is readable by every user, so that only the sandbox keeps a kernel out.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import sysconfig
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from .cases import ASSIGNMENT, CASES, NOTEBOOK, POINTS, Case, Check, Context, Fifo, Files, Symlink, stamp

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixture_course"
JOBS = 4  # four at a time: many cases wait on a limit (a 10 s cell, a 5 s answer), and waiting takes no core

# The copy's nbgrader_config.py gets these lines: a memory limit that keeps each bomb under about 4 GB on
# a shared machine (the fixture's own limits stay: 10 s per cell, 5 s per answer to a check, 512 MiB disk,
# 512 processes).
CONFIG_OVERRIDES = """
# tests/catalogue: a smaller memory limit, so that a memory bomb costs the machine at most 4 GiB.
c.SandboxedKernelManager.memory_limit = 4 * 2**30
"""


@dataclass
class Observation:
    case: Case
    student: str
    result: dict | None
    graded_text: str  # everything the graded notebook's cells printed or raised
    graded_size: int  # bytes of the graded notebook
    run: "CatalogueRun"
    rerun_result: dict | None = None

    @property
    def scores(self) -> dict[str, float]:
        return _scores(self.result)

    @property
    def rerun_scores(self) -> dict[str, float]:
        return _scores(self.rerun_result)

    @property
    def message(self) -> str:
        return result_message(self.result)

    @property
    def cell_summary(self) -> str:
        """What the case's own cells printed for the record ("CATALOGUE ..."), and the grader's notes in them."""
        pattern = r"CATALOGUE [^\n]*|\[the grader kept [^\]]*\]|(?:CellTimeoutError|KernelDied|NotebookTimeLimit): [^\n]*"
        return " | ".join(m.group(0).strip() for m in re.finditer(pattern, self.graded_text))


@dataclass
class CatalogueRun:
    ctx: Context
    root: Path
    observations: list[Observation] = field(default_factory=list)
    stray_processes: list[str] = field(default_factory=list)
    escaped_files: list[str] = field(default_factory=list)
    leftover_sandboxes: list[str] = field(default_factory=list)
    loopback_connections: int = 0
    peak_processes: int = 0  # the most processes of this run's sandbox users seen at once during grading
    exit_codes: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def observation(self, name: str) -> Observation:
        return next(o for o in self.observations if o.case.name == name)

    def cleanup(self) -> None:
        """Remove the run's folder, and any marker a case managed to leave elsewhere (named by the run's token)."""
        from tests.conftest import forget_fixture_checks

        for path in escaped_files(self.ctx):
            with contextlib.suppress(OSError):
                os.unlink(path)
        forget_fixture_checks(self.root / "course")
        shutil.rmtree(self.root, ignore_errors=True)


def _scores(result: dict | None) -> dict[str, float]:
    if not result:
        return {}
    return {ex["id"].split("/", 1)[-1]: float(ex["score"]) for ex in result.get("exercises", [])}


def result_message(result: dict | None) -> str:
    """What the grader said about a submission: its error, its events, what failed checks said."""
    if not result:
        return ""
    parts = [result.get("error") or ""] + list(result.get("events", []))
    for ex in result.get("exercises", []):
        name = ex["id"].split("/", 1)[-1]
        if ex.get("error"):
            parts.append(f"{name}: {ex['error']}")
        for c in ex.get("checks", []):
            if not c["passed"]:
                parts.append(f"{name}, {c['name']}: {c['message']}")
    return "; ".join(p for p in parts if p)


# -- running ---------------------------------------------------------------------------------------------
def catalogue_base() -> Path:
    """Where the run's course lives: not /tmp (private to every kernel), and reachable by every user."""
    env = os.environ.get("LLMCOURSE_CATALOGUE_DIR")
    if env:
        return Path(env)
    return Path("/run") if os.geteuid() == 0 else Path.home() / ".cache"


def run_catalogue(cases: list[Case] = CASES, log=lambda msg: None) -> CatalogueRun:
    from grader.cli import main
    from grader.sandbox import sandbox_base

    from tests.conftest import use_fixture_checks

    started = time.monotonic()
    base = catalogue_base()
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="llmcourse-catalogue-", dir=base))
    root.chmod(0o755)  # every user may look: only the sandbox's hiding keeps kernels out
    course = root / "course"
    shutil.copytree(FIXTURE, course, ignore=shutil.ignore_patterns("__pycache__", "release", "solutions", "gradebook.db",
                                                                   "autograded", "submitted", "feedback", "reports"))
    with open(course / "nbgrader_config.py", "a") as f:
        f.write(CONFIG_OVERRIDES)
    use_fixture_checks(course)
    token = uuid.uuid4().hex[:12]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    ctx = Context(course=course, submissions=root / "submissions", token=token, port=listener.getsockname()[1],
                  repo=REPO, sandbox_base=sandbox_base(), site_packages=Path(sysconfig.get_paths()["purelib"]))
    run = CatalogueRun(ctx=ctx, root=root)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--course", str(course), "build"]) == 0, "grader build failed on the fixture course"
        exchange = course / "exchange" / "inbound"
        exchange.mkdir(parents=True)
        (exchange / "secret.txt").write_text(ctx.exchange_secret)
        for path in (course / "exchange", exchange, exchange / "secret.txt"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        ctx.students = {case.name: f"{i + 1:02d}_{case.name}" for i, case in enumerate(cases)}
        run.seconds["setup"] = time.monotonic() - started

        for case in cases:
            write_submission(ctx.submissions / ctx.students[case.name] / ASSIGNMENT, case.build(ctx), ctx, case.name)
        log(f"grading {len(cases)} submissions, {JOBS} at a time")
        t = time.monotonic()
        results = _grade(run, course, ctx.submissions)
        run.seconds["batch"] = time.monotonic() - t
        for case in cases:
            student = ctx.students[case.name]
            graded = course / "autograded" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
            run.observations.append(Observation(case=case, student=student, result=results.get(student),
                                                graded_text=graded_output(graded),
                                                graded_size=graded.stat().st_size if graded.exists() else 0, run=run))

        again = [case for case in cases if case.rerun]
        if again:
            rerun_dir = root / "submissions-rerun"
            for case in again:
                write_submission(rerun_dir / ctx.students[case.name] / ASSIGNMENT, case.build(ctx), ctx, case.name)
            log(f"grading {len(again)} submissions a second time")
            t = time.monotonic()
            second = _grade(run, course, rerun_dir)
            run.seconds["rerun"] = time.monotonic() - t
            for obs in run.observations:
                if obs.case.rerun:
                    obs.rerun_result = second.get(obs.student)

        run.loopback_connections = _count_connections(listener)
        run.stray_processes = stray_processes(token)
        run.escaped_files = escaped_files(ctx)
        run.leftover_sandboxes = leftover_sandboxes(ctx)
    finally:
        listener.close()
        run.seconds["total"] = time.monotonic() - started
    return run


def _grade(run: CatalogueRun, course: Path, submissions: Path) -> dict[str, dict]:
    from grader.cli import main

    # Kernels inherit PATH: a harmless entry naming the run finds this run's processes (during and after).
    saved = os.environ["PATH"]
    os.environ["PATH"] = f"/nonexistent/llmcourse-catalogue-{run.ctx.token}{os.pathsep}{saved}"
    buffer = io.StringIO()
    done = threading.Event()

    def watch():
        while not done.wait(0.5):
            run.peak_processes = max(run.peak_processes, len(run_processes(run.ctx.token)))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with contextlib.redirect_stdout(buffer):
            code = main(["--course", str(course), "grade", ASSIGNMENT, "--submissions", str(submissions),
                         "--jobs", str(JOBS), "--json"])
    finally:
        done.set()
        watcher.join()
        os.environ["PATH"] = saved
    run.exit_codes.append(code)
    if code != 0:
        return {}
    return {r["student"]: r for r in json.loads(buffer.getvalue())}


def write_submission(folder: Path, built: Any, ctx: Context, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    files = built if isinstance(built, Files) else Files({f"{NOTEBOOK}.ipynb": built})
    for file_name, content in files.items():
        path = folder / file_name
        if isinstance(content, Symlink):
            path.symlink_to(content.target)
        elif isinstance(content, Fifo):
            os.mkfifo(path)
        elif isinstance(content, nbformat.NotebookNode):
            nbformat.write(stamp(content, ctx, name), str(path))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def graded_output(path: Path) -> str:
    if not path.exists():
        return ""
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    texts = []
    for c in nb.get("cells", []):
        for out in c.get("outputs", []) or []:
            if out.get("output_type") == "stream":
                texts.append(_join(out.get("text", "")))
            elif out.get("output_type") == "error":
                texts.append(f"{out.get('ename')}: {out.get('evalue')}")
            else:
                texts.append(_join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


def _join(text) -> str:
    return "".join(text) if isinstance(text, list) else str(text)


# -- the machine afterwards ------------------------------------------------------------------------------
def _count_connections(listener: socket.socket) -> int:
    n = 0
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, OSError):
            return n
        conn.close()
        n += 1


def run_processes(token: str) -> list[str]:
    """Live processes of sandbox users (uid >= 200000) whose environment carries this run's token."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            uid = entry.stat().st_uid
            if uid < 200000:
                continue
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
            with open(f"/proc/{entry.name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        if token.encode() in environ and state != "Z":
            found.append(f"pid {entry.name} uid {uid}: {cmdline[:120]}")
    return found


def stray_processes(token: str, wait: float = 5.0) -> list[str]:
    """This run's sandboxed processes still alive after grading (given `wait` seconds to finish dying)."""
    deadline = time.monotonic() + wait
    while True:
        found = run_processes(token)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def sandbox_uid_processes() -> int:
    """How many processes of any sandbox user run now (this run's or anyone else's)."""
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                n += entry.stat().st_uid >= 200000
            except OSError:
                pass
    return n


def escaped_files(ctx: Context) -> list[str]:
    """Marker files of this run (catalogue-<case>-<token>.txt) found on the host: in every folder a case tried,
    in /tmp (the kernelspec's argv would write there), and anywhere in this run's folder."""
    pattern = f"catalogue-*-{ctx.token}.txt"
    found = []
    for folder in [*ctx.escape_targets(), Path("/run/lock"), Path("/tmp")]:
        found += [str(p) for p in folder.glob(pattern)]
    found += [str(p) for p in ctx.course.parent.rglob(pattern)]
    found += [str(p) for p in ctx.course.parent.rglob("fill-*.bin")]
    return sorted(set(found))


def leftover_sandboxes(ctx: Context) -> list[str]:
    """Sandbox folders of this run's kernels still on the host (each would hold a copy of a submission)."""
    left = []
    try:
        entries = list(os.scandir(ctx.sandbox_base))
    except OSError:
        return left
    for entry in entries:
        if not entry.name.startswith("kernel-"):
            continue
        work = Path(entry.path) / "work"
        try:
            for f in work.iterdir():
                if f.is_file() and ctx.token.encode() in f.read_bytes():
                    left.append(str(f))
        except OSError:
            continue
    return left


# -- judging -----------------------------------------------------------------------------------------------
def evaluate(obs: Observation) -> list[str]:
    """Everything in which the grading of this case differs from what the catalogue expects."""
    case, result = obs.case, obs.result
    if result is None:
        return ["the batch has no result for this submission"]
    problems = []
    scores = obs.scores
    if set(scores) != set(POINTS):
        problems.append(f"exercises graded: {sorted(scores)}, expected {sorted(POINTS)}")
    for exercise, want in case.expected.items():
        got = scores.get(exercise)
        if got is None:
            continue
        if isinstance(want, Check):
            if not want.test(got, obs):
                problems.append(f"{exercise}: {got:g} points, expected {want}")
        elif got != want:
            problems.append(f"{exercise}: {got:g} points, expected {want:g}")
    if result.get("max_score") != sum(POINTS.values()):
        problems.append(f"max_score is {result.get('max_score')}, expected {sum(POINTS.values()):g}")
    if abs(result.get("score", 0) - sum(scores.values())) > 1e-6:
        problems.append(f"score {result.get('score')} is not the sum of the exercises' scores")
    message = obs.message
    if case.message is None:
        if result.get("error") or result.get("events"):
            problems.append(f"expected no error and no events, got: {result.get('error')!r} {result.get('events')}")
    elif case.message and not re.search(case.message, message):
        problems.append(f"the message does not match /{case.message}/: {message[:400]!r}")
    for pattern in case.output:
        if not re.search(pattern, obs.graded_text):
            problems.append(f"the graded notebook's output does not match /{pattern}/: {obs.cell_summary[:400]!r}")
    for pattern in case.forbidden:
        m = re.search(pattern, obs.graded_text)
        if m:
            start = max(0, m.start() - 60)
            problems.append(f"the graded notebook's output matches /{pattern}/: {obs.graded_text[start:m.end() + 60]!r}")
    if case.verify:
        problems += case.verify(obs)
    return problems
