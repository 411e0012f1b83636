"""Grading on many machines: one Celery task per submission, the gradebook on PostgreSQL.

    grader worker --broker redis://queue-host:6379/0            # on each grading machine
    grader worker --broker redis://queue-host:6379/0 --gpu      # a machine that takes GPU work only
    grader grade 01_attention --submissions DIR --broker redis://queue-host:6379/0

Why Celery on Redis (see docs/scaling.md): a durable queue outlives the instructor's terminal, a task is
acknowledged only after it finished (`acks_late`), so work on a worker that dies goes back to the queue,
and queues let GPU machines take GPU work only. Redis is one Debian package with no configuration.

Each task runs exactly what local grading runs (`grading.autograde`: nbgrader autograde with our sandboxed
`RunChecks`) on a worker that has its own copy of the course. Only data travels: the submission's files
go to the worker and the results come back as JSON, never pickles. Work is written to the gradebook
exactly once: a task holds a PostgreSQL advisory lock on its submission while it grades, and records the
result under a key made of the submission's bytes and the course's checks. A redelivered or repeated
task finds that record and returns it instead of grading again.

Only the student's code decides a grade. When the machinery fails instead (the database, the queue, the
worker's disk, a kernel that cannot start), the task goes back to the queue with a growing delay, and after
`RETRIES` tries the submission is reported as not graded: nothing is recorded, so the next run grades it.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable

from .course import Course, CourseError, MachineryFailure
from .grading import (MAX_ATTEMPTS, Submission, SubmissionResult, Workspace, autograde, check_cell_notes,
                      find_submissions, prepare_gradebook, require_readable_assets, stage, submission_result)

TASK = "llmcourse.grade_submission"
CPU_QUEUE, GPU_QUEUE = "grading-cpu", "grading-gpu"
MAX_SUBMISSION_BYTES = 64 * 2**20  # a notebook and its data files; more is a mistake, not homework
_COURSE_ENV = "LLMCOURSE_WORKER_COURSE"
RETRIES = 5  # tries after the first when the machinery fails; the delays double from RETRY_DELAY seconds
RETRY_DELAY = 10.0
BROKER_PATIENCE = 900  # seconds `grader grade` waits for a task queue that went away to come back


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
        # Redis hands an unacknowledged task to another worker after this long: longer than any task runs. The
        # workers look for such tasks every 10 s (kombu's default is one real look in ten of those, so a dead
        # worker's task waited up to 100 s more).
        broker_transport_options={"visibility_timeout": _visibility_timeout(notebook_timeout),
                                  "unacked_restore_interval": 10, "unacked_restore_throttle": 1},
        task_default_queue=CPU_QUEUE, task_track_started=True, result_expires=24 * 3600,  # collected results are removed at once
        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
        worker_send_task_events=False, task_send_sent_event=False,
        # A restarted Redis must not cost a finished grade: storing the result waits for the server to come
        # back, and a task running when the connection drops carries on (its result is in the ledger anyway).
        result_backend_always_retry=True, result_backend_max_retries=60,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    app.task(name=TASK, bind=True)(_grade_task)
    return app


def _notebook_timeout(course: Course) -> int:
    return int(course.config().RunChecks.get("notebook_timeout", 1200))


def _visibility_timeout(notebook_timeout: int) -> int:
    override = os.environ.get("LLMCOURSE_QUEUE_VISIBILITY_TIMEOUT")
    return int(override) if override else notebook_timeout + 900


def _retries() -> int:
    return int(os.environ.get("LLMCOURSE_QUEUE_RETRIES", RETRIES))


def _retry_delay(retries_so_far: int) -> float:
    """Doubling delays, capped well below the visibility timeout (Redis would hand a waiting retry to
    another worker after that)."""
    base = float(os.environ.get("LLMCOURSE_QUEUE_RETRY_DELAY", RETRY_DELAY))
    return min(base * 2 ** retries_so_far, 300.0)


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
    """Queue one task per submission and collect the results as workers finish them.

    A submission whose task the machinery could not complete comes back with `not_graded` set: no worker
    finished it within `timeout` seconds, the queue stayed unreachable for BROKER_PATIENCE seconds, or its
    task failed on every try.
    """
    course.require_assignment(assignment)
    db_url = course.config().CourseDirectory.db_url
    _require_postgres(db_url)
    submissions = submissions.resolve()
    students = students or find_submissions(submissions, assignment)
    expected = [p.stem for p in course.source_notebooks(assignment)]
    app = make_app(broker, course)
    queue = GPU_QUEUE if gpu else CPU_QUEUE
    _require_workers(app, queue, broker)

    # Everything the workers write to exists before the first task is queued, so they only ever add rows.
    from nbgrader.api import Gradebook

    from .gradebook import schema_lock

    with schema_lock(db_url):
        prepare_gradebook(course, assignment, {})
        create_ledger(db_url)
        with Gradebook(db_url) as gb:
            for student in students:
                gb.update_or_create_student(student)

    fingerprint, gradebook = course_fingerprint(course, assignment), gradebook_identity(db_url)
    staged: dict[str, Submission] = {}

    def send(student: str) -> str:
        with tempfile.TemporaryDirectory(prefix="grader-queue-") as scratch:
            names, problems, notes = stage(submissions / student / assignment, Path(scratch) / student, expected)
            notes.extend(check_cell_notes(course, assignment, Path(scratch) / student, names, expected, problems))
            files = _read_files(Path(scratch) / student)
        staged[student] = Submission(assignment, student, expected, names, problems, notes)
        payload = {"assignment": assignment, "student": student, "files": files, "course": fingerprint,
                   "gradebook": gradebook}
        # A fresh id per run: what makes a rerun idempotent is the ledger (work_key), not the queue.
        task_id = f"{assignment}:{student}:{uuid.uuid4().hex[:16]}"
        app.send_task(TASK, args=[payload], task_id=task_id, queue=queue)
        return task_id

    results: list[SubmissionResult] = []

    def collect(student: str, outcome: dict) -> None:
        if outcome.get("not_graded"):
            result = SubmissionResult(assignment=assignment, student=student, not_graded=outcome["not_graded"])
        else:
            _write_autograded(course, assignment, student, outcome.pop("notebooks", {}))
            submission = staged.get(student, Submission(assignment, student, expected, []))
            result = submission_result(course, submission, outcome, course.root / "autograded")
        result.events.extend(outcome.get("events", []))
        results.append(result)
        if progress:
            progress(result)

    queue_errors = _queue_errors()
    queue_state = _QueueWatch(app)
    waiting: dict[str, str] = {}  # task id -> student
    unsent = list(students)
    started = time.monotonic()
    while unsent or waiting:
        if timeout is not None and time.monotonic() - started > timeout:
            for student in [*waiting.values(), *unsent]:
                collect(student, {"not_graded": f"no grading worker finished it within {timeout:g} s"})
            break
        try:
            if queue_state.restarted():
                # The queue lost what it held: tasks waiting in it, results not collected yet. Send those again;
                # work already recorded in the ledger comes back from it without being graded again.
                unsent = [*waiting.values(), *unsent]
                waiting.clear()
            while unsent:
                try:
                    task_id = send(unsent[0])  # a send that fails leaves its student in `unsent`
                except MachineryFailure as exc:  # this machine could not copy it (a full disk): as in local mode
                    collect(unsent.pop(0), {"not_graded": str(exc)})
                    continue
                waiting[task_id] = unsent.pop(0)
            for task_id, meta in _finished(app, list(waiting)):
                collect(waiting.pop(task_id), _outcome(meta))
                app.AsyncResult(task_id).forget()  # its graded notebooks are on disk now: free the queue's memory
        except queue_errors as exc:
            if queue_state.unreachable_for() > BROKER_PATIENCE:
                reason = (f"the task queue at {broker} could not be reached for {BROKER_PATIENCE // 60} minutes "
                          f"({type(exc).__name__})")
                for student in [*waiting.values(), *unsent]:
                    collect(student, {"not_graded": reason})
                break
        if waiting:
            time.sleep(_POLL)
    return sorted(results, key=lambda r: r.student or "")


_POLL = 0.5  # seconds between two looks at the results: short against a grading, long against a query


def _queue_errors() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError as KombuError
    from redis.exceptions import RedisError

    return (KombuError, RedisError, ConnectionError, TimeoutError)


class _QueueWatch:
    """Notices when the Redis server behind the queue restarted: its run_id, which is new at every start."""

    def __init__(self, app):
        self.app = app
        self.run_id: str | None = None  # read before the first task is sent
        self.down_since: float | None = None

    def restarted(self) -> bool:
        current = str(self.app.backend.client.info("server").get("run_id"))
        self.down_since = None
        previous, self.run_id = self.run_id, current
        return previous is not None and current != previous

    def unreachable_for(self) -> float:
        """Seconds since the queue was last reached, counted from the first failure after that."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        return now - self.down_since


def _finished(app, task_ids: list[str]) -> list[tuple[str, dict]]:
    """The tasks among `task_ids` whose results are in, read from the result store in one round trip each 500."""
    from celery import states

    backend, done = app.backend, []
    for i in range(0, len(task_ids), 500):
        chunk = task_ids[i:i + 500]
        for task_id, raw in zip(chunk, backend.mget([backend.get_key_for_task(t) for t in chunk])):
            meta = backend.decode_result(raw) if raw else None
            if meta and meta.get("status") in states.READY_STATES:
                done.append((task_id, meta))
    return done


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
    try:  # a broker that refuses connections is said at once (asking the workers first took 18 s to fail)
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=2, interval_start=0.2, interval_step=0.5, timeout=5)
    except Exception as exc:  # kombu raises several kinds for an unreachable broker
        raise CourseError(f"the task queue at {broker} cannot be reached ({type(exc).__name__}: {exc})") from None
    for tries_left in (2, 1, 0):
        try:
            replies = app.control.inspect(timeout=3.0).active_queues() or {}
            break
        except Exception as exc:  # kombu raises several kinds for an unreachable broker
            # A pooled connection to a Redis that has restarted since fails once, and is then replaced.
            if not tries_left:
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
    # A task raises only when the machinery failed (the student's code runs in the sandbox, and its errors
    # are part of the graded notebook): that is never a grade.
    error = meta.get("result")
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}"
    elif isinstance(error, dict):
        text = f"{error.get('exc_type')}: {error.get('exc_message')}"
    else:
        text = str(error)
    return {"not_graded": f"the grading task failed on its worker ({text[:200]})"}


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
    assignment = payload["assignment"]
    db_url = course.config().CourseDirectory.db_url
    # A worker set up differently from the instructor's machine is the machinery's fault, not the student's.
    if payload["gradebook"] != gradebook_identity(db_url):
        return {"not_graded": f"worker {task.request.hostname} writes to a different gradebook than the instructor's "
                              f"(set the same c.CourseDirectory.db_url on both)"}
    if payload["course"] != course_fingerprint(course, assignment):
        return {"not_graded": f"worker {task.request.hostname} has a copy of the course that differs from the "
                              f"instructor's (update it to the same version and start the worker again)"}
    try:
        return _grade_once(course, db_url, payload)
    except Exception as exc:  # the task's own code never fails because of the student's: this is the machinery
        if task.request.retries < _retries():
            raise task.retry(countdown=_retry_delay(task.request.retries), max_retries=_retries(), exc=exc)
        return {"not_graded": f"{_machinery_reason(exc)} (tried {task.request.retries + 1} times, last on worker "
                              f"{task.request.hostname})"}


def _grade_once(course: Course, db_url: str, payload: dict) -> dict:
    assignment, student = payload["assignment"], payload["student"]
    with _WorkLedger(db_url, work_key(payload), _student_lock(payload)) as ledger:
        done = ledger.finished()
        if done is not None:
            return done
        attempts = ledger.start(assignment, student)
        if attempts > MAX_ATTEMPTS:
            # Dying is not something a submission can be graded for: let the next run try it afresh.
            ledger.forget_attempts()
            return {"not_graded": f"the grading process died {MAX_ATTEMPTS} times on this submission"}
        try:
            outcome = _grade_files(course, assignment, student, payload["files"])
        except BaseException:
            ledger.forget_attempt()  # a failure we saw is not a death; a retry counts afresh
            raise
        if attempts > 1:
            outcome.setdefault("events", []).append(f"graded on attempt {attempts} (an earlier worker stopped)")
        ledger.finish(outcome)
        return outcome


class MachineryError(Exception):
    """Grading could not finish for a reason of the machinery (database, disk, kernel start-up)."""


# What nbgrader's autograde reports, as text in its log, when the machinery failed under it. Every other
# failure it reports is about the submission itself, and is graded as local grading grades it.
_MACHINERY_SIGNS = {
    "OperationalError": "the gradebook's database could not be reached",
    "InterfaceError": "the gradebook's database could not be reached",
    "error accessing the nbgrader database": "the gradebook's database could not be reached",
    # nbgrader rolls back a write that collides with another one and raises InvalidEntry with the database's words.
    "IntegrityError": "the gradebook's database refused a write made at the same moment by another worker",
    "duplicate key value violates unique constraint": "the gradebook's database refused a write made at the same "
                                                       "moment by another worker",
    "could not serialize access": "the gradebook's database refused a write made at the same moment by another worker",
    "No space left on device": "the worker's disk is full",
    "Disk quota exceeded": "the worker's disk is full",
    "Kernel died before replying to kernel_info": "the notebook's kernel could not start",
    "Kernel didn't respond in": "the notebook's kernel could not start",
    "no free user id for a sandboxed kernel": "the notebook's kernel could not start",
    "KernelRestartFailed": "the notebook's kernel could not be restarted",
}


def _machinery_reason(exc: BaseException) -> str:
    import errno

    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, MachineryError):
        return str(exc)
    if isinstance(exc, DBAPIError):
        return f"the gradebook's database failed ({str(exc.orig or exc).splitlines()[0][:120]})"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the worker's disk is full"
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0][:120]}" if first else type(exc).__name__


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
        outcome = autograde(course, assignment, student, Workspace({"submitted_directory": str(base)},
                                                                   hide=(str(base.parent),)))
        log = outcome.pop("log", "")
        if not outcome.get("success"):
            text = f"{outcome.get('error', '')}\n{log}"
            for sign, reason in _MACHINERY_SIGNS.items():
                if sign in text:
                    raise MachineryError(reason)
        graded = course.root / "autograded" / student / assignment
        outcome["notebooks"] = {p.name: p.read_text() for p in graded.glob("*.ipynb")} if outcome.get("success") else {}
        return outcome
    finally:
        shutil.rmtree(base, ignore_errors=True)


_LEDGER_TABLE = ("CREATE TABLE IF NOT EXISTS llmcourse_graded (key TEXT PRIMARY KEY, assignment TEXT NOT NULL, "
                 "student TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, result TEXT, "
                 "updated TIMESTAMP NOT NULL DEFAULT now())")


def create_ledger(db_url_or_conn) -> None:
    """The ledger's table, made once whoever asks first. PostgreSQL's CREATE TABLE IF NOT EXISTS fails when
    two sessions run it at the same moment, so it runs under a transaction-scoped advisory lock."""
    from sqlalchemy import create_engine, text

    from .gradebook import SCHEMA_LOCK

    def create(conn) -> None:
        if conn.execute(text("SELECT to_regclass('llmcourse_graded')")).scalar() is None:
            # Not SCHEMA_LOCK itself: the client holds that one, on another connection, while it calls this.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK + 1})
            conn.execute(text(_LEDGER_TABLE))
        conn.commit()

    if not isinstance(db_url_or_conn, str):
        create(db_url_or_conn)
        return
    engine = create_engine(db_url_or_conn)
    try:
        with engine.connect() as conn:
            create(conn)
    finally:
        engine.dispose()


def _student_lock(payload: dict) -> int:
    """One lock per student and assignment in a gradebook: nbgrader's rows for a student (the submission, its
    grades) are written by one task at a time, even for two versions of the same submission."""
    digest = hashlib.sha256(f"{payload['gradebook']}|{payload['assignment']}|{payload['student']}".encode())
    return int(digest.hexdigest()[:15], 16)


class _WorkLedger:
    """A row per piece of work in the gradebook's database, and an advisory lock while it is graded.

    The lock is PostgreSQL's own: it belongs to this connection, so a worker that dies releases it.
    """

    def __init__(self, db_url: str, key: str, lock: int | None = None):
        from sqlalchemy import create_engine

        self.key = key
        self.lock = lock if lock is not None else int(key[:15], 16)
        self.engine = create_engine(db_url, pool_pre_ping=True)

    def __enter__(self) -> "_WorkLedger":
        from sqlalchemy import text

        self.conn = self.engine.connect()
        try:
            create_ledger(self.conn)
            self.conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.lock})
            self.conn.commit()
        except BaseException:
            self._close()
            raise
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

    def forget_attempt(self) -> None:
        """Best effort: after the database itself failed, this connection may be gone too."""
        from sqlalchemy import text

        try:
            self.conn.execute(text("UPDATE llmcourse_graded SET attempts = greatest(attempts - 1, 0) WHERE key = :k"),
                              {"k": self.key})
            self.conn.commit()
        except Exception:
            pass

    def forget_attempts(self) -> None:
        from sqlalchemy import text

        self.conn.execute(text("UPDATE llmcourse_graded SET attempts = 0 WHERE key = :k"), {"k": self.key})
        self.conn.commit()

    def finish(self, outcome: dict) -> None:
        from sqlalchemy import text

        self.conn.execute(text("UPDATE llmcourse_graded SET result = :r, updated = now() WHERE key = :k"),
                          {"k": self.key, "r": json.dumps(outcome)})
        self.conn.commit()

    def __exit__(self, *exc) -> None:
        from sqlalchemy import text

        try:
            self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.lock})
            self.conn.commit()
        except Exception:
            pass  # a connection that broke took its lock with it
        finally:
            self._close()

    def _close(self) -> None:
        try:
            self.conn.close()
        finally:
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
