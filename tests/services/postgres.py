"""A throwaway PostgreSQL server on 127.0.0.1, from Debian's packages, for the duration of a test."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A server of its own (data directory, port), which a test may restart or give more databases."""

    def __init__(self):
        self.bindir = pg_bin()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it")
        self.runner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.base = Path(tempfile.mkdtemp(prefix="pg-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None))
        self.data, self.sockets = self.base / "data", self.base / "sock"
        self.sockets.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            shutil.chown(self.sockets, "postgres")
        self.port = free_port()
        self._run("initdb", "-D", str(self.data), "-U", "grader", "--auth=trust", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.runner, str(self.bindir / tool), *args], check=True, capture_output=True)

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c fsync=off -c max_connections=100"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.base / "log"), "-w", "start")

    def stop(self) -> None:
        """As a crash or a power cut would: every connection drops, open transactions are lost."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str) -> str:
        """A new, empty database on this server; its SQLAlchemy URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "grader", name)
        return f"postgresql+psycopg://grader@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        subprocess.run([*self.runner, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


@contextmanager
def postgres_instance():
    """Yields a running PostgresServer; stops and deletes it afterwards."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@contextmanager
def postgres_server():
    """Yields a SQLAlchemy URL of a fresh, empty database; stops and deletes the server afterwards."""
    with postgres_instance() as server:
        yield server.create_database("gradebook")
