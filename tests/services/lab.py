"""A real JupyterLab on 127.0.0.1, started the way `make lab` starts it, and a headless Chromium to drive it.

    with lab_server(course_copy) as lab:               # jupyter lab --notebook-dir=release, in course_copy
        with chromium_page(artefacts) as page:          # Debian's /usr/bin/chromium, driven by Playwright
            page.goto(lab.url("lab/tree/01_attention/attention.ipynb"))

Nothing is mocked and nothing is downloaded: the server is the venv's `jupyter lab`, the browser is
the one Debian installs (`apt-get install chromium`). Everything started here is stopped on exit,
kernels included.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil
import requests

CHROMIUM = os.environ.get("LLMCOURSE_CHROMIUM", "/usr/bin/chromium")
# The flags this machine's browser tests use: headless, and no attempt to reach Google's servers.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def screenshots_dir() -> Path:
    """Where browser tests keep their screenshots: tests/artifacts/screenshots, or $LLMCOURSE_SCREENSHOTS."""
    folder = Path(os.environ.get("LLMCOURSE_SCREENSHOTS") or REPO / "tests" / "artifacts" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen | None, timeout: float, log: Path | None = None,
                  ok=(200,), headers: dict | None = None) -> None:
    """Poll `url` until it answers with one of `ok`; fail early, with the log's tail, if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before {url} answered\n{tail(log)}")
        try:
            if requests.get(url, timeout=5, headers=headers, allow_redirects=False).status_code in ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s\n{tail(log)}")


def tail(log: Path | None, lines: int = 40) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def stop_tree(proc: subprocess.Popen, grace: float = 10.0) -> list[str]:
    """SIGTERM a server and wait for it to stop its own children; SIGKILL whatever of its tree is left.

    Returns what had to be killed (a server that stops cleanly leaves nothing). Kernels and spawned
    servers run in sessions of their own, so the tree is read before the server is asked to stop.
    """
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    _, alive = psutil.wait_procs([p for p in tree if p.is_running()], timeout=5)
    killed = []
    for p in alive:
        try:
            killed.append(" ".join(p.cmdline())[:200])
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
    return killed


@dataclass
class Lab:
    base: str
    token: str
    root: Path
    log: Path
    pid: int
    killed: list[str] | None = None  # after exit: what did not stop with the server

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}/{path.lstrip('/')}{sep}token={self.token}"

    def api(self, path: str) -> requests.Response:
        return requests.get(f"{self.base}/api/{path.lstrip('/')}", headers={"Authorization": f"token {self.token}"},
                            timeout=10)


@contextmanager
def lab_server(course: Path, timeout: float = 120) -> Iterator[Lab]:
    """`make lab` in `course` (a copy of the course with nbgrader_config.py and release/), on a free port.

    The command line is the Makefile's (`jupyter lab --notebook-dir=release --ServerApp.ip=127.0.0.1`,
    `--allow-root` as root) plus what a test needs: its own port and token, no browser of its own, and
    private Jupyter config, runtime and settings folders so that nothing of the machine's user leaks in.
    """
    home = Path(tempfile.mkdtemp(prefix="lab-home-"))
    settings = home / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # No "would you like news?" toast over the notebook (it would only cover the toolbar in screenshots).
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port, token = free_port(), secrets.token_hex(16)
    log = home / "lab.log"
    cmd = [str(VENV_BIN / "jupyter"), "lab", "--notebook-dir=release", "--ServerApp.ip=127.0.0.1",
           *(["--allow-root"] if os.geteuid() == 0 else []),
           "--no-browser", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    env = {**os.environ,
           "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "IPYTHONDIR": str(home / "ipython"),
           "MPLCONFIGDIR": str(home / "matplotlib"),
           "HF_HUB_OFFLINE": "1",
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=course, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    lab = Lab(base=f"http://127.0.0.1:{port}", token=token, root=course / "release", log=log, pid=proc.pid)
    try:
        wait_for_http(f"{lab.base}/api/status", proc, timeout, log, headers={"Authorization": f"token {token}"})
        yield lab
    finally:
        lab.killed = stop_tree(proc)
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def chromium_page(viewport=(1400, 900)):
    """A Playwright page in Debian's headless Chromium (never a browser Playwright downloads)."""
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": viewport[0], "height": viewport[1]})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            yield page
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
