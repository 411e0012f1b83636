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


@contextmanager
def redis_server():
    """Yields a broker URL; the server keeps nothing on disk and stops afterwards."""
    binary = redis_bin()
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server); .ci/run installs it")
    base = Path(tempfile.mkdtemp(prefix="redis-"))
    port = free_port()
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(base), "--protected-mode", "yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(base, ignore_errors=True)
