"""`grader check` reminds the student to save when JupyterLab's kernel for the notebook did more than the file
on disk holds: the comparison itself, then a real `jupyter server` on 127.0.0.1 with a kernel for the notebook."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import requests

from grader.unsaved import kernel_activity, reminder, unsaved_note
from tests.services.lab import free_port, stop_tree, wait_for_http

REPO = Path(__file__).resolve().parents[1]
SAVED = datetime(2026, 12, 6, 21, 0, 0, tzinfo=timezone.utc)


def test_a_kernel_active_after_the_save_gets_a_reminder():
    note = reminder(SAVED, SAVED + timedelta(minutes=2), now=SAVED + timedelta(minutes=3))
    assert note.startswith("Your notebook has a running kernel that was active after the file was last saved "
                           "(3 min ago)") and "Ctrl+S" in note


def test_no_reminder_without_a_kernel_or_when_the_save_came_last():
    now = SAVED + timedelta(hours=2)
    assert reminder(SAVED, None, now) is None
    assert reminder(SAVED, SAVED - timedelta(minutes=5), now) is None  # ran, then saved
    assert reminder(SAVED, SAVED + timedelta(seconds=0.5), now) is None  # the save's own moment
    assert "(2 hours ago)" in reminder(SAVED, SAVED + timedelta(seconds=2), now)


def test_sessions_of_other_notebooks_and_servers_that_do_not_answer_are_left_out(tmp_path):
    notebook = tmp_path / "prompting.ipynb"
    notebook.write_text("{}")
    closed = {"port": free_port(), "token": "x", "root_dir": str(tmp_path)}  # nothing listens there
    assert kernel_activity(notebook, servers=[closed]) is None
    assert kernel_activity(notebook, servers=[{"secure": True, "port": 1, "root_dir": str(tmp_path)}]) is None


@contextmanager
def jupyter_server(root: Path, runtime: Path):
    """A real `jupyter server` serving `root` on 127.0.0.1, its runtime file in `runtime`; stopped on exit."""
    home = root.parent / "jupyter-home"
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_DATA_DIR": str(home / "data"), "IPYTHONDIR": str(home / "ipython")}
    log = home / "server.log"
    log.parent.mkdir(parents=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "jupyter"), "server", "--ServerApp.ip=127.0.0.1",
                                 f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--no-browser",
                                 f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}",
                                 *(["--allow-root"] if os.geteuid() == 0 else [])],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/api/status", proc, 120, log, headers={"Authorization": f"token {token}"})
        yield base, token
    finally:
        stop_tree(proc)


def test_grader_check_reminds_to_save_while_jupyterlabs_kernel_is_ahead(tmp_path, monkeypatch, capsys):
    root, runtime = tmp_path / "work", tmp_path / "runtime"
    root.mkdir()
    notebook, other = root / "prompting.ipynb", root / "other.ipynb"
    for path in (notebook, other):
        nbformat.write(nbformat.v4.new_notebook(), str(path))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    # grader check gives a server 1 s to answer (a reminder must not hold up grading); a busy test machine may need
    # longer, and how long it waits is not what this test is about.
    import grader.unsaved

    monkeypatch.setattr(grader.unsaved, "TIMEOUT_S", 120.0)
    with jupyter_server(root, runtime) as (base, token):
        # What JupyterLab does when it opens the notebook: a session, with a kernel of its own.
        started = requests.post(f"{base}/api/sessions", headers={"Authorization": f"token {token}"}, timeout=120,
                                json={"path": "prompting.ipynb", "name": "prompting.ipynb", "type": "notebook",
                                      "kernel": {"name": "python3"}})
        assert started.status_code == 201, started.text
        activity = kernel_activity(notebook)
        assert activity is not None and kernel_activity(other) is None

        # Saved long before the kernel was last active: the reminder.
        long_ago = time.time() - 3600
        os.utime(notebook, (long_ago, long_ago))
        note = unsaved_note(notebook)
        assert note is not None and "active after the file was last saved (1 hour ago)" in note, note

        # `grader check` says it before it grades (grading itself is not what this test is about).
        import grader.grading
        from grader.cli import _UserError, main

        def stop_before_grading(course, path):
            raise _UserError("grading starts here")

        monkeypatch.setattr(grader.grading, "check_notebook", stop_before_grading)
        assert main(["--course", str(REPO), "check", str(notebook)]) == 2
        err = capsys.readouterr().err
        assert err.index("Your notebook has a running kernel") < err.index("grading starts here"), err

        # Saved after everything the kernel did (a time past any activity it can have had): no reminder.
        later = max(activity.timestamp(), time.time()) + 3600
        os.utime(notebook, (later, later))
        assert unsaved_note(notebook) is None
    # No server any more: nothing, silently.
    os.utime(notebook, (long_ago, long_ago))
    assert unsaved_note(notebook) is None
