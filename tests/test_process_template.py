"""Grading processes forked from the grading-process template (grader/process_template.py).

A forked grading process must be what a spawned one is: the caller's environment and sys.path as they are when
it starts, multiprocessing's own start-up, exit codes and deaths seen by the pool. The template ends with its
caller, and pools spawn when it cannot serve. (Every class graded in the other tests runs on it too.)
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import select
import signal
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pytest

from grader import process_template
from grader.process_template import Template, grading_context

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fresh_template(monkeypatch):
    """This test's own template: started after what the test sets up, stopped after it."""
    monkeypatch.setattr(Template, "_instance", None)
    yield
    template = Template._instance
    if template is not None and template.process.poll() is None:
        template.process.kill()
        template.process.wait()


def what_a_grading_process_sees() -> dict:
    return {"variable": os.environ.get("LLMCOURSE_TEMPLATE_TEST"), "parent": os.getppid(), "path": list(sys.path),
            "preloaded": "nbgrader.converters" in sys.modules, "pid": os.getpid()}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_grading_process_is_a_fork_of_the_template_with_the_callers_environment_now(
        monkeypatch, tmp_path, fresh_template):
    template = Template.get()
    pid = template.ready()
    # Set after the template started: a grading process sees the caller as it is when the process starts.
    monkeypatch.setenv("LLMCOURSE_TEMPLATE_TEST", "set later")
    monkeypatch.syspath_prepend(str(tmp_path))
    with ProcessPoolExecutor(max_workers=1, mp_context=grading_context()) as pool:
        seen = pool.submit(what_a_grading_process_sees).result()
    assert seen["parent"] == pid and seen["pid"] != pid
    assert seen["preloaded"], "the grading process did not start from the template's imports"
    assert seen["variable"] == "set later"
    assert seen["path"][0] == str(tmp_path)


def test_exit_codes_and_deaths_reach_the_caller(fresh_template):
    context = grading_context()
    assert context.get_start_method() == "spawn" and context.Process is not multiprocessing.get_context("spawn").Process
    process = context.Process(target=sys.exit, args=(3,))
    process.start()
    process.join()
    assert process.exitcode == 3
    # A grading process killed mid-task (for memory, say) breaks its pool, as a spawned one's death does.
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        with pytest.raises(BrokenProcessPool):
            pool.submit(die).result()


def test_a_template_that_cannot_start_leaves_grading_processes_spawned(monkeypatch, fresh_template, caplog):
    real_popen = subprocess.Popen

    def broken(args, **kw):  # the template's Python fails at once
        return real_popen([sys.executable, "-c", "raise SystemExit(3)"], **{**kw, "pass_fds": ()})

    with monkeypatch.context() as patched, caplog.at_level(logging.WARNING, logger="grader"):
        patched.setattr(subprocess, "Popen", broken)  # the template starts through grader.kernel_fork.start_server
        context = grading_context()
    assert context.Process is multiprocessing.get_context("spawn").Process
    assert "spawned, not forked" in caplog.text
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        seen = pool.submit(what_a_grading_process_sees).result()
    assert seen["parent"] == os.getpid()
    # One that never became ready is not started again for every pool: the next pools spawn at once.
    failed = Template._instance
    assert grading_context().Process is multiprocessing.get_context("spawn").Process
    assert Template._instance is failed


def test_a_template_killed_after_it_served_is_started_again(fresh_template):
    first = Template.get()
    first.ready()
    first.process.kill()
    first.process.wait()
    context = grading_context()
    second = Template._instance
    assert second is not first and second.pid not in (None, first.pid)
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        assert pool.submit(what_a_grading_process_sees).result()["parent"] == second.pid


def test_the_template_and_the_forker_parent_end_with_their_caller(tmp_path):
    caller = subprocess.run(
        [sys.executable, "-c", "import os\n"
                               "from grader.process_template import Template, _kernel_forker\n"
                               "from grader.kernel_fork import ForkerParent\n"
                               "print(Template.get().ready())\n"
                               "env, sock = _kernel_forker()\n"
                               "print(ForkerParent._instances[tuple(sorted(env.items()))].process.pid)\n"
                               "print(sock.recv(1 << 16).decode())  # its forker says it is ready\n"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert caller.returncode == 0, caller.stderr
    template, parent, forker_ready = caller.stdout.split("\n")[:3]
    forker = json.loads(forker_ready)["ready"]
    for what, pid in (("template", int(template)), ("forker parent", int(parent)), ("kernel forker", forker)):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # already gone
        try:
            # An event, not a deadline: the pidfd is readable when the process has ended. The backstop only ends a
            # test whose process never ends.
            assert select.select([pidfd], [], [], 120)[0], f"the {what} {pid} outlived its caller"
        finally:
            os.close(pidfd)


def test_a_python_without_what_the_template_uses_spawns(monkeypatch, fresh_template, caplog):
    from multiprocessing import spawn

    process_template._popen_class.cache_clear()
    try:
        with monkeypatch.context() as patched, caplog.at_level(logging.WARNING, logger="grader"):
            patched.delattr(spawn, "_main")  # as on a Python whose multiprocessing moved it
            context = grading_context()
    finally:
        process_template._popen_class.cache_clear()
    assert context.Process is multiprocessing.get_context("spawn").Process
    assert "spawned, not forked" in caplog.text and "_main" in caplog.text
    assert Template._instance is None  # no template started for nothing


# -- kernel forkers: forked by the program's forker parent -------------------------------------------------
# These use this program's template as it is (a forker parent is started by the caller, not by the template).
@pytest.fixture
def fresh_forker_parents(monkeypatch):
    """This test's own forker parents, stopped after it."""
    from grader.kernel_fork import ForkerParent

    monkeypatch.setattr(ForkerParent, "_instances", {})
    yield ForkerParent._instances
    for parent in list(ForkerParent._instances.values()):
        parent.stop()


def kernel_forker_of_this_process(threads: int = 0) -> dict:
    """Start (or take) this grading process's kernel forker, as its first kernel would; what it is."""
    import psutil

    from grader.kernel_fork import KernelForker, forker_environment
    from grader.sandbox import kernel_threads

    forker = KernelForker.for_environment(forker_environment(kernel_threads(threads)))
    process = psutil.Process(forker.pid)
    return {"pid": forker.pid, "parent": process.ppid(), "own": forker.process is not None,
            "command": process.cmdline(), "grading_process": os.getpid()}


def test_grading_processes_get_kernel_forkers_forked_by_one_parent(fresh_forker_parents):
    import psutil

    with ProcessPoolExecutor(max_workers=1, mp_context=grading_context()) as pool:
        first = pool.submit(kernel_forker_of_this_process).result()
    with ProcessPoolExecutor(max_workers=1, mp_context=grading_context()) as pool:
        second = pool.submit(kernel_forker_of_this_process).result()
        assert psutil.pid_exists(second["pid"])
        (parent,) = fresh_forker_parents.values()
        assert first["parent"] == second["parent"] == parent.process.pid  # started once, by this program
        assert not first["own"] and not second["own"]
        assert first["pid"] != second["pid"] and first["grading_process"] != second["grading_process"]
        assert second["command"][1:3] == ["-m", "grader.kernel_fork"] and "--parent" not in second["command"]
        forker = psutil.Process(second["pid"])
    # Each forker serves one grading process and ends with it (an event: its socket closes).
    forker.wait(timeout=60)  # raises if it outlives its grading process by a minute
    assert not forker.is_running()
    assert parent.process.poll() is None


def test_a_grading_process_whose_kernels_get_other_settings_starts_its_own_forker(fresh_forker_parents):
    other = 1 if (os.cpu_count() or 1) > 1 else 2  # a thread count other than the default's
    with ProcessPoolExecutor(max_workers=1, mp_context=grading_context()) as pool:
        seen = pool.submit(kernel_forker_of_this_process, other).result()
    assert seen["own"] and seen["parent"] == seen["grading_process"]


def test_a_forker_parent_that_dies_at_once_leaves_each_grading_process_its_own_forker(
        monkeypatch, fresh_forker_parents, caplog):
    from grader import kernel_fork

    real_popen = subprocess.Popen

    def exits_at_once(args, **kw):
        if "--parent" in args:
            args = [sys.executable, "-c", "pass"]
        return real_popen(args, **kw)

    monkeypatch.setattr(kernel_fork.subprocess, "Popen", exits_at_once)
    with caplog.at_level(logging.WARNING, logger="grader"):
        for _ in range(2):  # its request is refused, or taken and never served: either way, the process's own forker
            with ProcessPoolExecutor(max_workers=1, mp_context=grading_context()) as pool:
                seen = pool.submit(kernel_forker_of_this_process).result()
            assert seen["own"] and seen["parent"] == seen["grading_process"]
    assert len(fresh_forker_parents) == 1, "a parent that never became ready was started again"
    assert "kernel forkers of their own" in caplog.text
