"""A real JupyterHub on 127.0.0.1, configured by hub/jupyterhub_config.py, with real Unix users.

    with unix_users(["t1-teacher", "t1-alice"]) as users, course_hub(base, ...) as hub:
        alice = hub.login("t1-alice")         # through the hub's login form, then an API token
        alice.start_server()
        alice.post("user", "assignments/fetch", json=...)

The hub runs hub/jupyterhub_config.py (loaded by a small test configuration that only swaps in a
shared-password authenticator), starts configurable-http-proxy from hub/node_modules, spawns each
user's server as a local process owned by that user (from the student environment that
`make hub-env` builds with the image's install script), and runs nbgrader's formgrader as a hub
service in a copy of the course. Everything is stopped on exit, and the users are removed.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil
import requests

from .lab import free_port, stop_tree, tail, wait_for_http

REPO = Path(__file__).resolve().parents[2]
HUB_CONFIG = REPO / "hub" / "jupyterhub_config.py"
STUDENT_ENV = REPO / "build" / "hub" / "student-env"
PROXY = REPO / "hub" / "node_modules" / ".bin" / "configurable-http-proxy"
VENV_BIN = Path(sys.executable).parent


def missing_prerequisites() -> list[str]:
    problems = []
    if not (STUDENT_ENV / ".installed").exists():
        problems.append(f"{STUDENT_ENV} (make hub-env)")
    if not PROXY.exists():
        problems.append(f"{PROXY} (make hub-env, or npm ci in hub/)")
    if not (VENV_BIN / "jupyterhub").exists():
        problems.append("jupyterhub in the venv (make hub-env)")
    python = Path(os.path.realpath(STUDENT_ENV / "bin" / "python"))
    if python.exists() and not _others_can_run(python):
        problems.append(f"a student environment whose Python every user can run ({python} is not: "
                        "make hub-env HUB_PYTHON=/usr/bin/python3.11, after rm -rf build/hub)")
    return problems


def _others_can_run(path: Path) -> bool:
    """Whether a user other than the owner can reach and execute `path`."""
    for folder in path.parents:
        if not folder.stat().st_mode & 0o001:
            return False
    return bool(path.stat().st_mode & 0o001)


# -- Unix users ----------------------------------------------------------------------------------------------
def _run_retrying(cmd: list[str], attempts: int = 20) -> None:
    """useradd and userdel fail while another process holds /etc/passwd's lock: wait and retry."""
    for i in range(attempts):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode == 0:
            return
        if "lock" not in (done.stderr or "").lower() or i == attempts - 1:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
        time.sleep(0.5)


def processes_of(uids: set[int]) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["uids"]):
        try:
            if p.info["uids"] and p.info["uids"].real in uids:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def kill_processes_of(uids: set[int]) -> None:
    procs = processes_of(uids)
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


@contextmanager
def unix_users(names: list[str]) -> Iterator[dict[str, pwd.struct_passwd]]:
    """Create local accounts (with homes) for the test; on exit, end their processes and remove them."""
    created: list[str] = []
    try:
        for name in names:
            _run_retrying(["useradd", "--create-home", "--shell", "/bin/bash", name])
            created.append(name)
        yield {name: pwd.getpwnam(name) for name in names}
    finally:
        uids = set()
        for name in created:
            try:
                uids.add(pwd.getpwnam(name).pw_uid)
            except KeyError:
                pass
        kill_processes_of(uids)
        for name in created:
            _run_retrying(["userdel", "--remove", name])


# -- the hub -------------------------------------------------------------------------------------------------
@dataclass
class HubUser:
    hub: "Hub"
    name: str
    token: str
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self):
        self.session.headers["Authorization"] = f"token {self.token}"

    def url(self, where: str, path: str) -> str:
        prefix = {"hub": "hub/api", "user": f"user/{self.name}", "formgrader": "services/llmcourse/formgrader/api"}
        return f"{self.hub.base}/{prefix[where]}/{path.lstrip('/')}"

    def get(self, where: str, path: str, **kw) -> requests.Response:
        return self.session.get(self.url(where, path), timeout=kw.pop("timeout", 60), **kw)

    def post(self, where: str, path: str, **kw) -> requests.Response:
        return self.session.post(self.url(where, path), timeout=kw.pop("timeout", 60), **kw)

    def put(self, where: str, path: str, **kw) -> requests.Response:
        return self.session.put(self.url(where, path), timeout=kw.pop("timeout", 60), **kw)

    def start_server(self, timeout: float = 150) -> None:
        r = self.post("hub", f"users/{self.name}/server")
        if r.status_code not in (201, 202, 400):  # 400: already running
            raise RuntimeError(f"starting {self.name}'s server: {r.status_code} {r.text}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.get("hub", f"users/{self.name}").json()
            server = model.get("servers", {}).get("", {})
            if server.get("ready"):
                return
            if not model.get("pending") and not server:
                raise RuntimeError(f"{self.name}'s server failed to start\n{tail(self.hub.log, 60)}")
            time.sleep(1)
        raise TimeoutError(f"{self.name}'s server did not start in {timeout:.0f} s\n{tail(self.hub.log, 60)}")


@dataclass
class Hub:
    base: str
    password: str
    log: Path
    proc: subprocess.Popen
    root: Path  # the course, exchange and state folders, and hub.log
    killed: list[str] | None = None  # after exit: what did not stop with the hub

    def login(self, name: str, password: str | None = None) -> HubUser:
        """Log in through the hub's own login form (the authenticator for real), then take an API token."""
        s = requests.Session()
        s.get(f"{self.base}/hub/login", timeout=30)
        xsrf = s.cookies.get("_xsrf", "")
        r = s.post(f"{self.base}/hub/login?_xsrf={xsrf}", data={"username": name, "password": password or self.password,
                                                                "_xsrf": xsrf},
                   allow_redirects=False, timeout=30)
        if r.status_code != 302:
            raise PermissionError(f"{name} could not log in: {r.status_code}")
        r = s.post(f"{self.base}/hub/api/users/{name}/tokens", json={"note": "hub round-trip test"},
                   headers={"X-XSRFToken": s.cookies.get("_xsrf", xsrf)}, timeout=30)
        r.raise_for_status()
        return HubUser(self, name, r.json()["token"])


def settings_env(base: Path, instructors: list[str], students: list[str], port: int, **extra: str) -> dict[str, str]:
    env = {
        "LLMCOURSE_HUB_IP": "127.0.0.1",
        "LLMCOURSE_HUB_PORT": str(port),
        "LLMCOURSE_HUB_HUB_IP": "127.0.0.1",
        "LLMCOURSE_HUB_HUB_PORT": str(free_port()),
        "LLMCOURSE_HUB_FORMGRADER_PORT": str(free_port()),
        "LLMCOURSE_HUB_STATE_DIR": str(base / "state"),
        "LLMCOURSE_HUB_COURSE_DIR": str(base / "course"),
        "LLMCOURSE_HUB_EXCHANGE": str(base / "exchange"),
        "LLMCOURSE_HUB_GRADER_BIN": str(VENV_BIN),
        "LLMCOURSE_HUB_INSTRUCTORS": ",".join(instructors),
        "LLMCOURSE_HUB_STUDENTS": ",".join(students),
        "LLMCOURSE_HUB_SPAWNER": "local",
        "LLMCOURSE_HUB_STUDENT_BIN": str(STUDENT_ENV / "bin"),
    }
    env.update({f"LLMCOURSE_HUB_{k.upper()}": v for k, v in extra.items()})
    return env


def copy_course(dest: Path, assignments: list[str]) -> None:
    """The instructor's course directory: this repository's nbgrader_config.py, source/ and release/."""
    dest.mkdir(mode=0o700)
    shutil.copy2(REPO / "nbgrader_config.py", dest / "nbgrader_config.py")
    for folder in ("source", "release"):
        for assignment in assignments:
            shutil.copytree(REPO / folder / assignment, dest / folder / assignment)


@contextmanager
def course_hub(instructors: list[str], students: list[str], assignments: list[str],
               timeout: float = 180, **settings: str) -> Iterator[Hub]:
    """JupyterHub with hub/jupyterhub_config.py, its course, exchange and state in a fresh folder.

    The folder is one every test user can pass through (pytest's own tmp_path is not: it sits in a
    folder only root may enter); the course and the hub's state inside it stay closed to them.
    """
    problems = missing_prerequisites()
    if problems:
        raise RuntimeError("the hub test needs: " + "; ".join(problems))
    base = Path(tempfile.mkdtemp(prefix="llmcourse-hub-"))
    base.chmod(0o755)
    copy_course(base / "course", assignments)
    (base / "exchange").mkdir(mode=0o777)
    password = secrets.token_urlsafe(12)
    config = base / "test_jupyterhub_config.py"
    config.write_text(
        "# The deployment's configuration, with a shared-password authenticator for the test users.\n"
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig({str(HUB_CONFIG)!r})  # noqa: F821\n"
        "c.JupyterHub.authenticator_class = 'shared-password'\n"
        f"c.SharedPasswordAuthenticator.user_password = {password!r}\n"
    )
    config.chmod(0o600)
    port = free_port()
    # Nothing another test put in this process's environment (extra check modules, paths) reaches the hub.
    inherited = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LLMCOURSE_EXTRA_CHECKS")}
    env = {**inherited, **settings_env(base, instructors, students, port, **settings),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"}
    log = base / "hub.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(VENV_BIN / "jupyterhub"), "-f", str(config)], cwd=base, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    hub = Hub(base=f"http://127.0.0.1:{port}", password=password, log=log, proc=proc, root=base)
    try:
        wait_for_http(f"{hub.base}/hub/api/", proc, timeout, log)
        # The formgrader service answers (with a redirect to log in) once its Jupyter server is up.
        wait_for_http(f"{hub.base}/services/llmcourse/", proc, timeout, log, ok=(200, 302))
        yield hub
    finally:
        hub.killed = stop_tree(proc, grace=60)
        if os.environ.get("LLMCOURSE_KEEP_HUB"):
            print(f"hub folder kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
