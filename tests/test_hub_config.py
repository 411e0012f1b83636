"""hub/jupyterhub_config.py loaded as JupyterHub loads it, without starting a hub: what it configures.

The whole hub runs in tests/test_hub_roundtrip.py (slow, root); this checks in a second that idle servers,
not only idle kernels, are stopped, and that the configuration still loads where the culler is missing.
"""
from __future__ import annotations

import runpy
import sys

import pytest
from traitlets.config import Config

from tests.services.hub import HUB_CONFIG, REPO

sys.path.insert(0, str(REPO / "hub"))
import llmcourse_hub  # noqa: E402  (the module the configuration imports, so that a patch reaches it)


def load_config(tmp_path, monkeypatch, **settings: str) -> Config:
    """Run the configuration file on a fresh Config, with a course, an exchange and a proxy in tmp_path."""
    course = tmp_path / "course"
    course.mkdir()
    (course / "nbgrader_config.py").write_text("c = get_config()  # noqa: F821\n")
    proxy = tmp_path / "bin" / "configurable-http-proxy"  # found on PATH when hub/node_modules is absent
    proxy.parent.mkdir()
    proxy.write_text("#!/bin/sh\n")
    proxy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{proxy.parent}:/usr/bin:/bin")
    env = {"STATE_DIR": str(tmp_path / "state"), "COURSE_DIR": str(course), "EXCHANGE": str(tmp_path / "exchange"),
           "GRADER_BIN": str(tmp_path / "bin"), "SPAWNER": "local", "STUDENTS": "alice,bob", "INSTRUCTORS": "teacher",
           **settings}
    for name, value in env.items():
        monkeypatch.setenv(f"LLMCOURSE_HUB_{name}", value)
    c = Config()
    runpy.run_path(str(HUB_CONFIG), init_globals={"get_config": lambda: c})
    return c


def culler_of(c: Config) -> dict | None:
    found = [s for s in c.JupyterHub.services if s["name"] == llmcourse_hub.IDLE_CULLER]
    assert len(found) <= 1, found
    return found[0] if found else None


def test_idle_servers_are_stopped_after_an_hour(tmp_path, monkeypatch):
    monkeypatch.setattr(llmcourse_hub, "idle_culler_installed", lambda: True)
    c = load_config(tmp_path, monkeypatch)
    culler = culler_of(c)
    assert culler is not None, "no idle-culler service"
    assert culler["command"] == [sys.executable, "-m", "jupyterhub_idle_culler", "--timeout=3600",
                                 "--cull-every=300"]
    role = next(r for r in c.JupyterHub.load_roles if r.get("services") == [llmcourse_hub.IDLE_CULLER])
    # Enough to stop servers; never admin:users, which would let it remove the students themselves.
    assert sorted(role["scopes"]) == ["delete:servers", "list:users", "read:servers", "read:users:activity"]
    # Kernel culling stays as it was, and the formgrader is still the first service.
    assert "--MappingKernelManager.cull_idle_timeout=3600" in c.Spawner.args
    assert c.JupyterHub.services[0]["name"] == llmcourse_hub.COURSE_ID


def test_the_idle_timeout_and_max_age_are_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(llmcourse_hub, "idle_culler_installed", lambda: True)
    c = load_config(tmp_path, monkeypatch, SERVER_IDLE_TIMEOUT="1200", SERVER_MAX_AGE="43200")
    assert culler_of(c)["command"][3:] == ["--timeout=1200", "--cull-every=100", "--max-age=43200"]


@pytest.mark.parametrize("installed, timeout", [(True, "0"), (False, "3600")])
def test_no_culler_when_turned_off_or_missing(tmp_path, monkeypatch, capsys, installed, timeout):
    monkeypatch.setattr(llmcourse_hub, "idle_culler_installed", lambda: installed)
    c = load_config(tmp_path, monkeypatch, SERVER_IDLE_TIMEOUT=timeout)
    assert culler_of(c) is None
    assert not any(r.get("services") == [llmcourse_hub.IDLE_CULLER] for r in c.JupyterHub.load_roles)
    warned = "jupyterhub-idle-culler is not installed" in capsys.readouterr().err
    assert warned == (not installed)


def test_the_check_finds_the_package_on_the_path(tmp_path, monkeypatch):
    (tmp_path / "jupyterhub_idle_culler").mkdir()
    (tmp_path / "jupyterhub_idle_culler" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert llmcourse_hub.idle_culler_installed()
