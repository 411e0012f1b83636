"""The gradebook: nbgrader's schema made once and safely, and a class's gradebook moved from SQLite to
PostgreSQL (`grader migrate-gradebook URL`).

nbgrader keeps the whole gradebook in one SQLAlchemy schema, so a move is: create the schema in the
new database with nbgrader itself, copy every table's rows in dependency order, and compare counts.
The old file stays as it was; the course switches when nbgrader_config.py names the new URL.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
import threading

from .course import Course, CourseError

# The advisory lock every process of this course takes to change a PostgreSQL gradebook's schema: concurrent
# CREATE TABLE statements fail there, even with IF NOT EXISTS. Any fixed number would do; this one is "llmc".
SCHEMA_LOCK = 0x6C6C6D63
_held = threading.local()  # the gradebooks whose schema lock this thread holds


@contextmanager
def schema_lock(db_url: str):
    """Held while nbgrader's schema and ours are created, so that two graders starting on an empty PostgreSQL
    gradebook take turns. SQLite serialises writers by itself and needs nothing."""
    if not db_url.startswith("postgresql") or db_url in _held.__dict__.setdefault("urls", set()):
        yield  # SQLite; or this thread holds the lock already (a second session would wait for it forever)
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": SCHEMA_LOCK})
            conn.commit()
            _held.urls.add(db_url)
            try:
                yield
            finally:
                _held.urls.discard(db_url)
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SCHEMA_LOCK})
                conn.commit()
    finally:
        engine.dispose()


def make_schema(db_url: str) -> None:
    """nbgrader's tables and its migration stamp in an empty gradebook, made in this process.

    nbgrader's own `Gradebook` learns the stamp of a new database by running the `alembic` command in a new
    Python process, which imports all of nbgrader again: 2.7 s for every new gradebook, every `grader check`
    included. Here the stamp comes from the same migration scripts, read in this process. A gradebook that
    already has tables is left exactly as it is."""
    from nbgrader.api import Base
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(db_url)
    try:
        with schema_lock(db_url):
            if inspect(engine).get_table_names():
                return
            Base.metadata.create_all(bind=engine)
            with engine.begin() as conn:
                conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
                conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": migration_head()})
    finally:
        engine.dispose()


def set_up(db_url: str, then: str) -> None:
    """make_schema, with a database that cannot be set up said in one sentence (`then`: what to do next)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        make_schema(db_url)
    except SQLAlchemyError as exc:
        lines = str(exc).strip().splitlines()
        raise CourseError(f"the gradebook could not be set up ({lines[0][:200] if lines else type(exc).__name__}): "
                          f"check that its database is running and writable, then {then}") from None


@lru_cache(maxsize=1)
def migration_head() -> str:
    """The newest of nbgrader's gradebook migrations: what `alembic heads` prints for nbgrader's scripts."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", "nbgrader:alembic")
    return ScriptDirectory.from_config(config).get_current_head()


def final_score(submission) -> float:
    """A submission's score as `nbgrader export` gives it: its points (hand grades included) less its late
    penalty, never below 0."""
    return max(0.0, float(submission.score or 0) - float(submission.late_submission_penalty or 0))


def open_gradebook(db_url: str, course_id: str | None = None):
    """nbgrader's `Gradebook` on `db_url`, its schema made here first if the database is empty."""
    from nbgrader.api import Gradebook

    make_schema(db_url)
    return Gradebook(db_url) if course_id is None else Gradebook(db_url, course_id=course_id)


def migrate_gradebook(course: Course, target_url: str) -> dict[str, int]:
    """Copy the course's current gradebook into the empty database at `target_url`; rows per table."""
    from nbgrader.api import Base
    from sqlalchemy import create_engine, func, select
    from sqlalchemy.exc import SQLAlchemyError

    source_url = course.config().CourseDirectory.db_url
    if _same(source_url, target_url):
        raise CourseError("the course's gradebook already is that database")
    if not target_url.startswith(("postgresql", "sqlite")):
        raise CourseError(f"{target_url.split(':')[0]!r} is not a database URL nbgrader supports here "
                          f"(use postgresql+psycopg://user:password@host:port/database)")
    source = create_engine(source_url)
    try:
        with source.connect() as conn:
            conn.execute(select(func.count()).select_from(Base.metadata.tables["assignment"])).scalar()
    except SQLAlchemyError:
        raise CourseError(f"the course's gradebook ({source_url}) cannot be read: grade something first, or check "
                          f"c.CourseDirectory.db_url in nbgrader_config.py") from None
    try:
        with schema_lock(target_url):
            with open_gradebook(target_url, course.config().CourseDirectory.get("course_id", "default_course")):
                pass  # nbgrader creates its schema (and stamps its migrations) in the new database
            if target_url.startswith("postgresql"):
                from .distributed import create_ledger

                create_ledger(target_url)  # the task queue's table too, before any worker needs it
        target = create_engine(target_url)
        with target.connect() as conn:
            if any(conn.execute(select(func.count()).select_from(t)).scalar()
                   for t in Base.metadata.sorted_tables if t.name != "course"):
                raise CourseError("the target database already holds a gradebook; give an empty database")
    except SQLAlchemyError as exc:
        raise CourseError(f"cannot use {_safe(target_url)} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:160]})") from None

    counts: dict[str, int] = {}
    with source.connect() as src, target.begin() as dst:
        for table in Base.metadata.sorted_tables:
            rows = [dict(r) for r in src.execute(select(table)).mappings()]
            if table.name == "course":  # nbgrader made this row already when it created the schema
                existing = {r[0] for r in dst.execute(select(table.c.id))}
                rows = [r for r in rows if r["id"] not in existing]
            if rows:
                dst.execute(table.insert(), rows)
            counts[table.name] = len(rows)
    with source.connect() as src, target.connect() as dst:
        for table in Base.metadata.sorted_tables:
            a = src.execute(select(func.count()).select_from(table)).scalar()
            b = dst.execute(select(func.count()).select_from(table)).scalar()
            if a != b:
                raise CourseError(f"the copy of table {table.name} has {b} rows instead of {a}; the new database "
                                  f"is incomplete and the course still uses the old one")
    source.dispose()
    target.dispose()
    return counts


def _same(a: str, b: str) -> bool:
    from sqlalchemy.engine import make_url

    try:
        ua, ub = make_url(a), make_url(b)
    except Exception:
        raise CourseError(f"{b!r} is not a database URL") from None
    return (ua.drivername, ua.host, ua.port, ua.database) == (ub.drivername, ub.host, ub.port, ub.database)


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
