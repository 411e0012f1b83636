"""A throwaway Redis server on 127.0.0.1 (Debian's redis-server), the task queue for distributed grading."""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .postgres import free_port


def redis_bin() -> str | None:
    return shutil.which("redis-server")


class RedisServer:
    """A server that keeps nothing on disk: a restart loses every queued task and stored result, the worst
    a restart can do to the queue."""

    def __init__(self):
        self.binary = redis_bin()
        if self.binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server); .ci/run installs it")
        self.base = Path(tempfile.mkdtemp(prefix="redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                                      "--appendonly", "no", "--dir", str(self.base), "--protected-mode", "yes"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # no chance to save anything: it keeps nothing anyway
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.base, ignore_errors=True)


@contextmanager
def redis_instance():
    """Yields a running RedisServer; stops it afterwards."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.close()


@contextmanager
def redis_server():
    """Yields a broker URL; the server keeps nothing on disk and stops afterwards."""
    with redis_instance() as server:
        yield server.url
