"""A grading kernel is sandboxed: no network, no secrets, an unprivileged user, limits, one kill for all."""
from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from grader.remote import run_code
from grader.sandbox import SandboxedKernelManager

pytestmark = pytest.mark.slow

PROBE = r'''
import os, socket, json, resource
r = {}
try:
    socket.create_connection(("127.0.0.1", 9), timeout=2); r["network"] = "reached"
except OSError as e:
    r["network"] = type(e).__name__
try:
    os.listdir(SECRET); r["secret"] = os.listdir(SECRET)
except OSError as e:
    r["secret"] = type(e).__name__
try:
    open(os.path.join(SECRET, "answer.txt")).read(); r["secret_file"] = "read"
except OSError as e:
    r["secret_file"] = type(e).__name__
try:
    open("/etc/llmcourse-sandbox-test", "w").write("x"); r["write_outside"] = "written"
except OSError as e:
    r["write_outside"] = type(e).__name__
open("mine.txt", "w").write("ok")
r["cwd_files"] = sorted(os.listdir("."))
r["uid"] = os.getuid()
r["mem"] = resource.getrlimit(resource.RLIMIT_AS)[0]
from IPython.display import publish_display_data
publish_display_data({"application/x-probe": json.dumps(r)})
'''


@pytest.fixture
def secret_dir(tmp_path):
    # Outside /tmp (which every kernel gets privately anyway) and world-readable: only the mount hides it.
    import tempfile

    artifacts = Path(__file__).parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    secret = Path(tempfile.mkdtemp(prefix="secret-", dir=artifacts))
    secret.chmod(0o755)
    (secret / "answer.txt").write_text("42")
    (secret / "answer.txt").chmod(0o644)
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "notebook.ipynb").write_text("{}")
    return secret, submission


async def _probe(secret: Path, submission: Path) -> dict:
    import json

    km = SandboxedKernelManager(hide_paths=[str(secret)], memory_limit=4 * 2**30)
    await km.start_kernel(cwd=str(submission))
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        status, payloads = await run_code(kc, f"SECRET = {str(secret)!r}\n" + PROBE, 60, "application/x-probe")
        assert status == "ok", status
        return {**json.loads(payloads[-1]), "refused": km.refused(), "pgid": km._pgid}
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


def test_kernel_has_no_network_no_secrets_and_its_own_scratch(secret_dir):
    secret, submission = secret_dir
    r = asyncio.run(_probe(secret, submission))
    assert r["network"] in ("OSError", "ConnectionRefusedError", "PermissionError") or "Unreachable" in r["network"]
    assert r["network"] != "reached"
    assert r["secret"] in ([], "PermissionError") and r["secret_file"] in ("FileNotFoundError", "PermissionError")
    assert r["write_outside"] in ("PermissionError", "OSError", "FileNotFoundError")
    assert [f for f in r["cwd_files"] if not f.startswith(".")] == ["mine.txt", "notebook.ipynb"]  # the submission + its own files
    assert not (submission / "mine.txt").exists()  # ... in its own scratch space, not the grader's disk
    if os.geteuid() == 0:
        assert r["uid"] >= 200000 and r["refused"] == []  # a user of its own, with no rights anywhere
    assert r["mem"] == 4 * 2**30


def test_stopping_the_kernel_kills_every_process_it_started_even_in_a_new_session(secret_dir):
    secret, submission = secret_dir
    # The kernel has a process-id namespace of its own: its pids mean nothing here, so the child is
    # found on the host by a token on its command line.
    token = f"llmcourse-stray-{uuid.uuid4().hex}"

    async def scenario():
        km = SandboxedKernelManager()
        await km.start_kernel(cwd=str(submission))
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        await run_code(kc, "import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', "
                           f"{token!r}], start_new_session=True)", 30)
        assert _host_processes(token), "the child did not start"
        kc.stop_channels()
        await km.shutdown_kernel(now=True)

    asyncio.run(scenario())
    assert _host_processes(token) == [], "a process started by the kernel outlived it"


def _host_processes(token: str) -> list[int]:
    """Live host processes with `token` on their command line."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if token.encode() not in f.read():
                        continue
                with open(f"/proc/{entry.name}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
            except OSError:
                continue
            found.append(int(entry.name))
    return found


def test_each_kernel_sees_one_gpu_and_no_address_space_limit_with_cuda():
    """GPU settings (checked without a GPU: they only shape the launch)."""
    a = SandboxedKernelManager(gpus=[3, 5], gpu_memory_fraction=0.25)
    b = SandboxedKernelManager(gpus=[3, 5])
    try:
        assert {a._gpu(), b._gpu()} == {3, 5}  # two kernels, two GPUs
        assert a._policy()["memory_bytes"] is None  # never RLIMIT_AS with CUDA: it breaks its mappings
    finally:
        for km in (a, b):
            km._release_uid()
            import shutil

            shutil.rmtree(km.sandbox_dir, ignore_errors=True)


def test_without_gpus_kernels_see_none_and_keep_the_memory_limit():
    km = SandboxedKernelManager(memory_limit=2**30)
    try:
        assert km._gpu() is None and km._policy()["memory_bytes"] == 2**30
    finally:
        km._release_uid()
        import shutil

        shutil.rmtree(km.sandbox_dir, ignore_errors=True)


def test_a_refused_protection_is_reported_and_the_others_still_hold(tmp_path):
    """Ask for something the OS refuses (a scratch tmpfs of an impossible size): it is named in the
    report, and the network namespace and the limits after it are still applied."""
    import json
    import subprocess
    import sys

    work = tmp_path / "work"
    work.mkdir()
    policy = {"workdir": str(work), "staging": str(tmp_path), "disk_bytes": "not-a-size", "no_network": True,
              "max_processes": 300, "file_bytes": 2**20}
    probe = ("import json, resource, socket\n"
             "from grader.sandbox_launch import apply\n"
             f"refused = apply(json.loads({json.dumps(json.dumps(policy))}))\n"
             "try:\n    socket.create_connection(('127.0.0.1', 9), timeout=1); net = 'reached'\n"
             "except OSError as e:\n    net = type(e).__name__\n"
             "print(json.dumps({'refused': refused, 'net': net, 'nproc': resource.getrlimit(resource.RLIMIT_NPROC)[0]}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if os.geteuid() == 0:
        assert any(r.startswith("scratch space") for r in result["refused"])
        assert result["net"] != "reached"
    assert result["nproc"] == 300
