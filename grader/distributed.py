"""Grading on many machines: one Celery task per submission, the gradebook on PostgreSQL.

    grader worker --broker redis://queue-host:6379/0            # on each grading machine
    grader worker --broker redis://queue-host:6379/0 --gpu      # a machine that takes GPU work only
    grader grade 01_attention --submissions DIR --broker redis://queue-host:6379/0

Why Celery on Redis (see docs/scaling.md): a durable queue outlives the instructor's terminal, a task is
acknowledged only after it finished (`acks_late`), so work on a worker that dies goes back to the queue,
and queues let GPU machines take GPU work only. Redis is one Debian package with no configuration.

Each task runs exactly what local grading runs (`grading._autograde`: nbgrader autograde with our sandboxed
`RunChecks`) on a worker that has its own copy of the course. Only data travels: the submission's files
go to the worker and the results come back as JSON, never pickles. Work is written to the gradebook
exactly once: a task holds a PostgreSQL advisory lock on its submission while it grades, and records the
result under a key made of the submission's bytes and the course's checks. A redelivered or repeated
task finds that record and returns it instead of grading again.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterable

from .course import Course, CourseError
from .grading import (MAX_ATTEMPTS, SubmissionResult, _autograde, _collect, find_submissions, prepare_gradebook,
                      require_readable_assets, stage)

TASK = "llmcourse.grade_submission"
CPU_QUEUE, GPU_QUEUE = "grading-cpu", "grading-gpu"
MAX_SUBMISSION_BYTES = 64 * 2**20  # a notebook and its data files; more is a mistake, not homework
_COURSE_ENV = "LLMCOURSE_WORKER_COURSE"


# -- the Celery application ---------------------------------------------------------------------------
def make_app(broker: str, course: Course | None = None):
    """The Celery app, configured the same on the client and the workers."""
    from celery import Celery

    notebook_timeout = _notebook_timeout(course) if course else 1200
    app = Celery("llmcourse", broker=broker, backend=broker, set_as_current=False)
    app.conf.update(
        # Only JSON crosses the queue: a pickle from a compromised machine could run code on the others.
        task_serializer="json", result_serializer="json", accept_content=["json"], result_accept_content=["json"],
        # Acknowledge after the work, not before: a task on a worker that dies is delivered again.
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        # A task is stopped some time after the notebook's own limit (the sandbox enforces that one first).
        task_time_limit=notebook_timeout + 600, task_soft_time_limit=notebook_timeout + 300,
        # Redis hands an unacknowledged task to another worker after this long: longer than any task runs.
        broker_transport_options={"visibility_timeout": _visibility_timeout(notebook_timeout)},
        task_default_queue=CPU_QUEUE, task_track_started=True, result_expires=24 * 3600,  # collected results are removed at once
        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
        worker_send_task_events=False, task_send_sent_event=False,
    )
    app.task(name=TASK, bind=True)(_grade_task)
    return app


def _notebook_timeout(course: Course) -> int:
    return int(course.config().RunChecks.get("notebook_timeout", 1200))


def _visibility_timeout(notebook_timeout: int) -> int:
    override = os.environ.get("LLMCOURSE_QUEUE_VISIBILITY_TIMEOUT")
    return int(override) if override else notebook_timeout + 900


# -- what identifies a piece of work --------------------------------------------------------------------
def course_fingerprint(course: Course, assignment: str) -> str:
    """Hash of what decides a grade: the source notebooks, the check modules, the grading engine."""
    import importlib.util

    from llmcourse.checks import check_modules

    digest = hashlib.sha256()
    files = list(course.source_notebooks(assignment))
    for module in (*check_modules(assignment), f"grader.reference.{assignment.split('_', 1)[-1]}"):
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:  # e.g. no reference module for this assignment
            spec = None
        if spec and spec.origin:
            files.append(Path(spec.origin))
    engine = Path(__file__).parent
    files += sorted(engine.glob("*.py")) + sorted((engine.parent / "llmcourse").glob("*.py"))
    files += sorted((engine.parent / "llmcourse" / "checking").glob("*.py"))
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def gradebook_identity(db_url: str) -> str:
    """Which gradebook a URL names, without its password (that never travels through the queue)."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    return hashlib.sha256(f"{url.drivername}|{url.host}|{url.port}|{url.database}".encode()).hexdigest()[:16]


def _require_postgres(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        raise CourseError("grading on several machines needs the gradebook on PostgreSQL, which every machine can "
                          "reach: set c.CourseDirectory.db_url in nbgrader_config.py (`grader migrate-gradebook URL` "
                          "moves an existing SQLite gradebook there)")


# -- the client: `grader grade --broker` ---------------------------------------------------------------
def grade_class_distributed(course: Course, assignment: str, submissions: Path, broker: str, gpu: bool = False,
                            progress: Callable[[SubmissionResult], None] | None = None,
                            students: list[str] | None = None, timeout: float | None = None) -> list[SubmissionResult]:
    """Queue one task per submission and collect the results as workers finish them."""
    course.require_assignment(assignment)
    db_url = course.config().CourseDirectory.db_url
    _require_postgres(db_url)
    submissions = submissions.resolve()
    students = students or find_submissions(submissions, assignment)
    expected = [p.stem for p in course.source_notebooks(assignment)]
    app = make_app(broker, course)
    queue = GPU_QUEUE if gpu else CPU_QUEUE
    _require_workers(app, queue, broker)

    prepare_gradebook(course, assignment, {})
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        for student in students:
            gb.update_or_create_student(student)

    fingerprint, gradebook = course_fingerprint(course, assignment), gradebook_identity(db_url)
    pending: dict[str, tuple[str, list[str], dict[str, str]]] = {}
    with tempfile.TemporaryDirectory(prefix="grader-queue-") as scratch:
        for student in students:
            staged = Path(scratch) / student
            names, problems = stage(submissions / student / assignment, staged, expected)
            files = _read_files(staged)
            payload = {"assignment": assignment, "student": student, "files": files, "course": fingerprint,
                       "gradebook": gradebook}
            # A fresh id per run: what makes a rerun idempotent is the ledger (work_key), not the queue.
            task_id = f"{assignment}:{student}:{uuid.uuid4().hex[:16]}"
            app.send_task(TASK, args=[payload], task_id=task_id, queue=queue)
            pending[task_id] = (student, names, problems)

    from celery.result import ResultSet

    results: list[SubmissionResult] = []
    waiting = ResultSet([app.AsyncResult(task_id) for task_id in pending])
    for task_id, meta in waiting.iter_native(timeout=timeout):
        student, names, problems = pending[task_id]
        outcome = _outcome(meta)
        _write_autograded(course, assignment, student, outcome.pop("notebooks", {}))
        result = _collect(course, assignment, student, course.root / "autograded", expected, names, problems, outcome)
        result.events.extend(outcome.get("events", []))
        app.AsyncResult(task_id).forget()  # its graded notebooks are on disk now: free the queue's memory
        results.append(result)
        if progress:
            progress(result)
    return sorted(results, key=lambda r: r.student or "")


def work_key(payload: dict) -> str:
    """The same submission graded by the same checks into the same gradebook: the same key."""
    digest = hashlib.sha256()
    for field in ("assignment", "student", "course", "gradebook"):
        digest.update(str(payload[field]).encode() + b"\0")
    for name in sorted(payload["files"]):
        digest.update(name.encode() + b"\0" + payload["files"][name].encode() + b"\0")
    return digest.hexdigest()


def _require_workers(app, queue: str, broker: str) -> None:
    """Fail early, in a sentence, when no worker listens on the queue the work would wait in."""
    try:
        replies = app.control.inspect(timeout=3.0).active_queues() or {}
    except Exception as exc:  # kombu raises several kinds for an unreachable broker
        raise CourseError(f"the task queue at {broker} cannot be reached ({type(exc).__name__}: {exc})") from None
    if not any(q.get("name") == queue for queues in replies.values() for q in queues):
        kind = "GPU " if queue == GPU_QUEUE else ""
        flag = " --gpu" if queue == GPU_QUEUE else ""
        raise CourseError(f"no {kind}grading worker is listening at {broker}: start one on each grading machine "
                          f"with `grader worker --broker {broker}{flag}`")


def _read_files(folder: Path) -> dict[str, str]:
    files, total = {}, 0
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            total += len(data)
            if total > MAX_SUBMISSION_BYTES:
                raise CourseError(f"the submission in {folder.name} is larger than {MAX_SUBMISSION_BYTES >> 20} MB")
            files[path.name] = base64.b64encode(data).decode("ascii")
    return files


def _outcome(meta: dict) -> dict:
    if meta.get("status") == "SUCCESS" and isinstance(meta.get("result"), dict):
        return dict(meta["result"])
    error = meta.get("result")
    text = f"{error.get('exc_type')}: {error.get('exc_message')}" if isinstance(error, dict) else str(error)
    return {"success": False, "error": f"the grading task failed on its worker ({text})"}


def _write_autograded(course: Course, assignment: str, student: str, notebooks: dict[str, str]) -> None:
    folder = course.root / "autograded" / student / assignment
    for name, text in notebooks.items():
        if Path(name).name != name or not name.endswith(".ipynb"):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


# -- the worker: `grader worker` -------------------------------------------------------------------------
def run_worker(course: Course, broker: str, gpu: bool = False, concurrency: int = 1, name: str | None = None) -> None:
    """Take grading tasks from the queue until stopped. A GPU worker takes only GPU work."""
    _require_postgres(course.config().CourseDirectory.db_url)
    require_readable_assets()
    os.environ[_COURSE_ENV] = str(course.root)
    if gpu:
        import torch

        if not torch.cuda.is_available():
            print("grader worker: --gpu was given but this machine shows no CUDA device; GPU work will run on CPU.")
    app = make_app(broker, course)
    argv = ["worker", "--loglevel", "WARNING", "--concurrency", str(concurrency), "--pool", "prefork",
            "--queues", GPU_QUEUE if gpu else CPU_QUEUE, "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if name:
        argv += ["--hostname", name]
    app.worker_main(argv)


def _grade_task(task, payload: dict) -> dict:
    """One submission, on a worker: exactly once into the gradebook, whatever happens to other workers."""
    course = Course(Path(os.environ[_COURSE_ENV]))
    assignment, student = payload["assignment"], payload["student"]
    db_url = course.config().CourseDirectory.db_url
    if payload["gradebook"] != gradebook_identity(db_url):
        return {"success": False, "error": "this worker's course writes to a different gradebook than the instructor's"}
    if payload["course"] != course_fingerprint(course, assignment):
        return {"success": False, "error": "this worker's copy of the course differs from the instructor's (update "
                                           "it to the same version and start the worker again)"}
    key = work_key(payload)
    with _WorkLedger(db_url, key) as ledger:
        done = ledger.finished()
        if done is not None:
            return done
        attempts = ledger.start(assignment, student)
        if attempts > MAX_ATTEMPTS:
            outcome = {"success": False, "error": f"the grading process died {MAX_ATTEMPTS} times on this submission"}
        else:
            outcome = _grade_files(course, assignment, student, payload["files"])
            if attempts > 1:
                outcome.setdefault("events", []).append(f"graded on attempt {attempts} (an earlier worker stopped)")
        ledger.finish(outcome)
        return outcome


def _grade_files(course: Course, assignment: str, student: str, files: dict[str, str]) -> dict:
    scratch = course.root / ".grader"
    scratch.mkdir(exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="grader-task-", dir=scratch))
    try:
        folder = base / student / assignment
        folder.mkdir(parents=True)
        for name, data in files.items():
            if Path(name).name == name:
                (folder / name).write_bytes(base64.b64decode(data))
        outcome = _autograde(str(course.root), assignment, student, {"submitted_directory": str(base)}, [str(base.parent)])
        graded = course.root / "autograded" / student / assignment
        outcome["notebooks"] = {p.name: p.read_text() for p in graded.glob("*.ipynb")} if outcome.get("success") else {}
        outcome.pop("log", None)
        return outcome
    finally:
        shutil.rmtree(base, ignore_errors=True)


class _WorkLedger:
    """A row per piece of work in the gradebook's database, and an advisory lock while it is graded.

    The lock is PostgreSQL's own: it belongs to this connection, so a worker that dies releases it.
    """

    def __init__(self, db_url: str, key: str):
        from sqlalchemy import create_engine

        self.key = key
        self.engine = create_engine(db_url, pool_pre_ping=True)

    def __enter__(self) -> "_WorkLedger":
        from sqlalchemy import text

        self.conn = self.engine.connect()
        self.conn.execute(text(
            "CREATE TABLE IF NOT EXISTS llmcourse_graded (key TEXT PRIMARY KEY, assignment TEXT NOT NULL, "
            "student TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, result TEXT, "
            "updated TIMESTAMP NOT NULL DEFAULT now())"))
        self.conn.commit()
        self.conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": int(self.key[:15], 16)})
        return self

    def finished(self) -> dict | None:
        from sqlalchemy import text

        row = self.conn.execute(text("SELECT result FROM llmcourse_graded WHERE key = :k"), {"k": self.key}).first()
        self.conn.commit()
        return json.loads(row[0]) if row and row[0] else None

    def start(self, assignment: str, student: str) -> int:
        from sqlalchemy import text

        self.conn.execute(text(
            "INSERT INTO llmcourse_graded (key, assignment, student, attempts) VALUES (:k, :a, :s, 1) "
            "ON CONFLICT (key) DO UPDATE SET attempts = llmcourse_graded.attempts + 1, updated = now()"),
            {"k": self.key, "a": assignment, "s": student})
        attempts = self.conn.execute(text("SELECT attempts FROM llmcourse_graded WHERE key = :k"), {"k": self.key}).scalar()
        self.conn.commit()
        return int(attempts)

    def finish(self, outcome: dict) -> None:
        from sqlalchemy import text

        self.conn.execute(text("UPDATE llmcourse_graded SET result = :r, updated = now() WHERE key = :k"),
                          {"k": self.key, "r": json.dumps(outcome)})
        self.conn.commit()

    def __exit__(self, *exc) -> None:
        from sqlalchemy import text

        try:
            self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": int(self.key[:15], 16)})
            self.conn.commit()
        finally:
            self.conn.close()
            self.engine.dispose()


def graded_students(course: Course, assignment: str) -> Iterable[str]:
    """Students with a recorded result for `assignment` (for tools and tests)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(course.config().CourseDirectory.db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT student FROM llmcourse_graded WHERE assignment = :a AND result IS NOT NULL"),
                            {"a": assignment}).all()
    engine.dispose()
    return sorted(r[0] for r in rows)
