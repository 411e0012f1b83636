"""Whether a notebook has changes that are not saved yet: a running Jupyter server's kernel for it was active
after the file was last written.

`grader check NB` grades the file as saved on disk. A student who ran cells in JupyterLab and did not save would
see a grade for an older version; `unsaved_note(NB)` gives the line that reminds them, or None.

What it reads: the runtime files of the Jupyter servers running on this machine (`jpserver-*.json`, through
`jupyter_server.serverapp.list_running_servers`), then each server's `/api/sessions`, asked on 127.0.0.1 only,
with the server's own token and a short timeout. A kernel's `last_activity` moves with everything the kernel does
(running a cell, but also starting, or answering a completion), so the note says "active", not "ran code".
Anything that fails (no server, a server that does not answer, a file it cannot read) gives None, silently.
"""
from __future__ import annotations

import json
import os
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

TIMEOUT_S = 1.0  # per server: a server that is slower than this is left out
SLACK_S = 1.0  # activity within a second of the save is the save's own moment, not a change after it


def unsaved_note(notebook: Path, now: datetime | None = None) -> str | None:
    """The reminder to print before grading `notebook`, or None."""
    try:
        saved = datetime.fromtimestamp(Path(notebook).stat().st_mtime, tz=timezone.utc)
        activity = kernel_activity(Path(notebook))
    except Exception:  # noqa: BLE001  (a reminder must never stop the grading)
        return None
    return reminder(saved, activity, now or datetime.now(timezone.utc))


def reminder(saved: datetime, activity: datetime | None, now: datetime) -> str | None:
    """The reminder when the kernel was active after the file was saved (by more than SLACK_S), else None."""
    if activity is None or (activity - saved).total_seconds() <= SLACK_S:
        return None
    return (f"Your notebook has a running kernel that was active after the file was last saved "
            f"({_ago((now - saved).total_seconds())}): if you changed the notebook since, save it in JupyterLab "
            f"(Ctrl+S) first so that those changes are graded.")


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "min")):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 and unit != 'min' else ''} ago"
    return f"{seconds} s ago"


def kernel_activity(notebook: Path, servers: Iterable[dict] | None = None) -> datetime | None:
    """The latest `last_activity` of a kernel whose session is this notebook, over the running servers."""
    if servers is None:
        from jupyter_server.serverapp import list_running_servers

        servers = list_running_servers()
    target = os.path.realpath(notebook)
    latest = None
    for server in servers:
        try:
            sessions = _sessions(server)
        except Exception:  # noqa: BLE001  (a server that does not answer is left out)
            continue
        root = server.get("root_dir") or server.get("notebook_dir") or ""
        for session in sessions:
            path = session.get("path") or (session.get("notebook") or {}).get("path")
            stamp = (session.get("kernel") or {}).get("last_activity")
            if not path or not stamp or os.path.realpath(os.path.join(root, path)) != target:
                continue
            when = _parse_time(stamp)
            if latest is None or when > latest:
                latest = when
    return latest


def _sessions(server: dict) -> list[dict]:
    """GET /api/sessions of a server, on loopback, with its token (an https server is left out: its certificate
    would not name 127.0.0.1)."""
    if server.get("secure"):
        return []
    base = server.get("base_url") or "/"
    url = f"http://127.0.0.1:{int(server['port'])}{base.rstrip('/')}/api/sessions"
    request = urllib.request.Request(url, headers={"Authorization": f"token {server.get('token', '')}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    with opener.open(request, timeout=TIMEOUT_S) as response:
        sessions = json.loads(response.read().decode())
    return sessions if isinstance(sessions, list) else []


def _parse_time(stamp: str) -> datetime:
    """Jupyter's ISO 8601 times ('2026-12-06T21:50:01.123456Z'), as aware datetimes."""
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
