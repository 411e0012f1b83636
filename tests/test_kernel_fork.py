"""Grading kernels forked from the grading process's kernel forker (grader/kernel_fork.py).

A forked kernel must be what an exec'd one is, sandbox included (tests/test_sandbox.py and the catalogue run
on forked kernels), with torch already imported; it must hold nothing of the grading process; and grading must
go on, exec'ing kernels, when the forker cannot serve.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest

from grader import kernel_fork
from grader.kernel_fork import ForkerUnavailable, KernelForker
from grader.remote import run_code
from grader.sandbox import SandboxedKernelManager

pytestmark = pytest.mark.slow

REPORT = r'''
import json, os, random, sys
def _fd_targets():
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return out
_grader_loaded = "grader" in sys.modules
try:
    import grader
    _grader = "imported"
except Exception as e:
    _grader = type(e).__name__
_report = {
    "torch_at_start": "torch" in sys.modules,
    "pyplot_at_start": "matplotlib.pyplot" in sys.modules,
    "environ": dict(os.environ),
    "proc_environ": open("/proc/self/environ", "rb").read().decode(errors="replace"),
    "cmdline": open("/proc/self/cmdline", "rb").read().split(b"\0")[:3],
    "fds": _fd_targets(),
    "grader": _grader,
    "grader_loaded": _grader_loaded,
    "random": random.random(),
    "hash": hash("llmcourse"),
    "uid": os.getuid(),
}
_report["cmdline"] = [p.decode() for p in _report["cmdline"]]
import hashlib, io, matplotlib, matplotlib.pyplot as plt
_fig, _ax = plt.subplots()
_ax.plot([1, 3, 2])
_ax.set_title("a figure")
_png = io.BytesIO()
_fig.savefig(_png, format="png")
plt.close(_fig)
_report["plot"] = [matplotlib.get_backend(), matplotlib.rcParams["figure.dpi"], hashlib.sha256(_png.getvalue()).hexdigest()]
from IPython.display import publish_display_data
publish_display_data({"application/x-report": json.dumps(_report)})
'''


async def _report(tmp_path, **config) -> tuple[dict, SandboxedKernelManager]:
    submission = tmp_path / "submission"
    submission.mkdir(exist_ok=True)
    # What grading hides (grader.sandbox.course_secrets): here, the grader's own code.
    km = SandboxedKernelManager(hide_paths=[os.path.dirname(kernel_fork.__file__)], **config)
    await km.start_kernel(cwd=str(submission))
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        status, payloads = await run_code(kc, REPORT, 120, "application/x-report")
        assert status == "ok", status
        return json.loads(payloads[-1]), km
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


@pytest.fixture
def fresh_forkers(monkeypatch):
    """This test's own forkers: started after what the test sets up, stopped after it."""
    monkeypatch.setattr(KernelForker, "_instances", {})
    yield KernelForker._instances
    for forker in KernelForker._instances.values():
        forker.process.kill()
        forker.process.wait()


def test_a_kernel_is_forked_with_torch_imported_and_holds_nothing_of_the_grading_process(
        tmp_path, monkeypatch, fresh_forkers):
    monkeypatch.setenv("GRADER_DATABASE_PASSWORD", "hunter2")  # in the grading process when its forker starts
    report, _ = asyncio.run(_report(tmp_path))
    assert report["torch_at_start"], "the kernel was not forked from the warm forker"
    [forker] = fresh_forkers.values()
    assert forker.pid is not None and forker.process.poll() is None
    assert "hunter2" not in json.dumps(report["environ"]) and "hunter2" not in report["proc_environ"]
    assert report["environ"]["HOME"].endswith("/work")  # the kernel's own environment, not the forker's
    # ps and the grader's tools see a kernel, not a forker: the command line is the exec'd one.
    assert report["cmdline"] == [sys.executable, "-m", "ipykernel_launcher"]
    # No descriptor of the forker (its socket to the grading process) reaches the kernel.
    forker_sockets = {os.readlink(f"/proc/{forker.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{forker.pid}/fd")
                      if os.readlink(f"/proc/{forker.pid}/fd/{fd}").startswith("socket:")}
    assert forker_sockets and not forker_sockets & set(report["fds"])
    # The grader's code stays out of reach: not loaded, and hidden (the forker's launcher code is dropped).
    assert not report["grader_loaded"] and report["grader"] in ("ModuleNotFoundError", "PermissionError")
    if os.geteuid() == 0:
        assert report["uid"] >= 200000


def test_forked_kernels_are_seeded_afresh_and_hash_as_an_execd_one(tmp_path, fresh_forkers):
    first, _ = asyncio.run(_report(tmp_path))
    second, _ = asyncio.run(_report(tmp_path))
    execd, _ = asyncio.run(_report(tmp_path, fork_kernels=False))
    assert first["torch_at_start"] and second["torch_at_start"] and not execd["torch_at_start"]
    assert first["random"] != second["random"]  # each fork its own random state, as each new process
    assert first["hash"] == second["hash"] == execd["hash"]  # PYTHONHASHSEED=0 in both: set orders agree
    assert execd["cmdline"] == first["cmdline"]
    # matplotlib is preloaded too, with the kernel's inline backend: the same figure, byte for byte.
    assert first["pyplot_at_start"] and not execd["pyplot_at_start"]
    assert first["plot"] == execd["plot"] and first["plot"][0] == "module://matplotlib_inline.backend_inline"
    assert execd["grader"] == first["grader"]


def test_a_forker_that_cannot_start_or_dies_leaves_kernels_execd(tmp_path, monkeypatch, fresh_forkers):
    from grader import sandbox

    monkeypatch.setattr(sandbox, "_REPORTED", set())  # what the grading process logs once: this test's alone
    # Killed after serving one kernel: the next kernel is exec'd, with a launcher that watches this process.
    report, _ = asyncio.run(_report(tmp_path))
    assert report["torch_at_start"]
    [forker] = fresh_forkers.values()
    forker.process.send_signal(signal.SIGKILL)
    forker.process.wait()
    report, km = asyncio.run(_report(tmp_path))
    assert not report["torch_at_start"]
    assert any(item.startswith("kernels are exec'd, not forked") for item in sandbox._REPORTED)

    # One that cannot start at all (its Python fails at once): the same.
    monkeypatch.setattr(KernelForker, "_instances", {})
    real_popen = subprocess.Popen

    def broken(args, **kw):
        return real_popen([sys.executable, "-c", "raise SystemExit(3)"], **{**kw, "pass_fds": ()})

    monkeypatch.setattr(kernel_fork.subprocess, "Popen", broken)
    with pytest.raises(ForkerUnavailable, match="exited"):
        KernelForker.for_environment({"PATH": os.environ["PATH"]})
    report, _ = asyncio.run(_report(tmp_path))
    assert not report["torch_at_start"]


def test_a_forked_launcher_is_signalled_and_reaped_as_a_popen(tmp_path, fresh_forkers):
    """What jupyter_client does with its process: poll, signal, wait, exit codes (here of launchers that fail
    at once, and of one killed)."""
    env = kernel_fork.forker_environment(1)
    forker = KernelForker.for_environment(env)
    failing = forker.launch(["{}", "--", "true"], env, str(tmp_path))  # a policy without a workdir
    assert failing.wait() == 1 and failing.poll() == 1
    with contextlib.suppress(Exception):
        failing.kill()  # a process that has exited is never signalled (its pid may be another's by now)
    sleeper = forker.launch(["not-a-policy"], env, str(tmp_path))  # the usage message, exit 2
    assert sleeper.wait() == 2
    assert forker.process.poll() is None  # the forker outlives the launchers it forked


def test_a_launcher_never_takes_the_exit_of_an_earlier_one_with_its_pid(tmp_path):
    """Pids come round again (a fork bomb uses up thousands): a notice kept for an earlier launcher nobody
    waited for must not read as the exit of a new launcher that got the same pid. Here the test plays the
    forker: it reports a stale exit for pid P, then hands out P (a process that is alive) to a new launcher."""
    import socket
    import threading

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    forker = KernelForker.__new__(KernelForker)
    forker.sock, forker.lock, forker.exits, forker.pid, forker.failed = ours, threading.Lock(), {}, 1, ""
    forker.process = alive

    def play_forker():
        _, fds, _, _ = socket.recv_fds(theirs, 1 << 20, 3)
        for fd in fds:
            os.close(fd)
        theirs.send(json.dumps({"exited": alive.pid, "code": 1}).encode())
        theirs.send(json.dumps({"pid": alive.pid}).encode())

    player = threading.Thread(target=play_forker)
    player.start()
    try:
        launched = forker.launch(["@policy", "--", "true"], {}, str(tmp_path))
        player.join()
        assert launched.pid == alive.pid
        assert launched.poll() is None  # alive: the old notice was not its exit
        theirs.send(json.dumps({"exited": alive.pid, "code": 0}).encode())
        alive.kill()
        assert launched.wait() == 0  # its own notice
    finally:
        alive.kill()
        alive.wait()
        ours.close()
        theirs.close()


def test_a_forker_that_hangs_while_importing_is_given_up(monkeypatch, fresh_forkers):
    """A package that hangs on import would hang every grading process that waits for its forker: after the
    backstop the forker is stopped and kernels are exec'd."""
    monkeypatch.setattr(kernel_fork, "READY_BACKSTOP", 0.5)
    real_popen = subprocess.Popen

    def hanging(args, **kw):
        return real_popen([sys.executable, "-c", "import time; time.sleep(600)"], **kw)  # holds its socket, silent

    monkeypatch.setattr(kernel_fork.subprocess, "Popen", hanging)
    with pytest.raises(ForkerUnavailable, match="not ready after"):
        KernelForker.for_environment({"PATH": os.environ["PATH"]})
    [forker] = fresh_forkers.values()
    assert forker.process.wait() != 0  # stopped, not left running
