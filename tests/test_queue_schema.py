"""The task queue's ledger on an empty PostgreSQL gradebook, made by many workers at the same instant."""
from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path

import pytest

from .services.postgres import pg_bin, postgres_instance

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL is not installed here (.ci/run installs it)")]

N_WORKERS = 8
N_DATABASES = 4


def test_workers_starting_together_on_an_empty_database_all_get_their_ledger():
    from sqlalchemy import create_engine, text

    from grader.distributed import _WorkLedger

    with postgres_instance() as server:
        for round_ in range(N_DATABASES):
            url = server.create_database(f"empty{round_}")
            ready = threading.Barrier(N_WORKERS)
            failures: list[str] = []

            def first_task(i: int) -> None:
                key = hashlib.sha256(f"{round_}-{i}".encode()).hexdigest()
                ledger = _WorkLedger(url, key)
                # Every worker has its connection open, then all of them enter together, as workers that took
                # the first tasks of a class at the same moment do.
                ledger.engine.connect().close()
                ready.wait()
                try:
                    with ledger:
                        assert ledger.finished() is None
                        ledger.start("00_basics", f"s{i}")
                        ledger.finish({"success": True, "worker": i})
                except Exception as exc:
                    failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")

            threads = [threading.Thread(target=first_task, args=(i,)) for i in range(N_WORKERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert failures == [], f"database {round_}: {failures}"

            engine = create_engine(url)
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT count(*) FROM llmcourse_graded WHERE result IS NOT NULL")).scalar()
            engine.dispose()
            assert rows == N_WORKERS


def test_graders_starting_together_on_an_empty_database_make_nbgraders_schema_in_turn(monkeypatch):
    """nbgrader's Gradebook creates its tables with the same unsafe statements: without the lock, 3 of 4
    graders opening an empty PostgreSQL gradebook at once fail with an IntegrityError."""
    from nbgrader.api import Gradebook

    from grader.gradebook import schema_lock

    # nbgrader stamps a new database's schema version by running the `alembic` command next to Python.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with postgres_instance() as server:
        url = server.create_database("empty")
        ready = threading.Barrier(4)
        failures: list[str] = []

        def open_gradebook() -> None:
            ready.wait()
            try:
                with schema_lock(url), Gradebook(url) as gb:
                    gb.update_or_create_student("s0")
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")

        threads = [threading.Thread(target=open_gradebook) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        with Gradebook(url) as gb:
            assert [s.id for s in gb.students] == ["s0"]
