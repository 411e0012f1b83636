"""Hostile and broken submissions of the fixture assignment 00_basics, and what grading each must give.

Every case is built in code from the fixture course's released notebook, with the hostile code where a
student would put it: in an answer cell, in a function a check calls, or in a cell of its own. The
fixture's exercises are add (4 points), scale (3) and mean_rows (3); unless a case is about an
exercise, that exercise is answered correctly, so the case shows what the hostile code costs (only its
own exercise) and what it gains (nothing).

    Case.build(ctx)  ->  a notebook (NotebookNode), raw file content (str or bytes) for basics.ipynb,
                         or Files({file name: notebook | str | bytes | Symlink}) for the whole folder
    Case.expected    ->  {exercise: points, or a Check that says what is required}

`ctx` is the batch's Context: the course being graded, the submissions folder, a token unique to the
run (marker files and every submission carry it), and a loopback port the grader's side listens on.
The hostile code only ever runs inside the grader's sandboxed kernels; the fork bomb is bounded twice
(by the sandbox's process limit, and by a loop limit of its own in case the sandbox failed), and the
network probe only tries an outside address once it has seen that the kernel has no interface but
loopback (so no packet can leave the machine even if the sandbox were broken).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import nbformat

ASSIGNMENT = "00_basics"
NOTEBOOK = "basics"
POINTS = {"add": 4.0, "scale": 3.0, "mean_rows": 3.0}
FULL = dict(POINTS)

CORRECT = {
    "add": "def add(a, b):\n    return a + b",
    "scale": "def scale(x, factor):\n    return x * factor",
    "mean_rows": "def mean_rows(x):\n    return x.mean(dim=-1)",
}


# -- what a case is -------------------------------------------------------------------------------------
@dataclass
class Context:
    course: Path  # the course copy being graded (outside /tmp: only the sandbox's hiding protects it)
    submissions: Path  # DIR/<student>/00_basics/basics.ipynb
    token: str  # unique to this run
    port: int  # the grader's host listens on 127.0.0.1:port; no kernel may reach it
    repo: Path  # this repository (the real course, its grader package)
    sandbox_base: Path  # where the grader puts its kernels' sandboxes on the host
    site_packages: Path  # the grader's own Python packages
    students: dict[str, str] = field(default_factory=dict)  # case name -> student id in the batch

    def marker(self, case: str) -> str:
        """The file name a case tries to create outside its sandbox (none may exist afterwards)."""
        return f"catalogue-{case}-{self.token}.txt"

    @property
    def pickle_marker(self) -> Path:
        """Created by the malicious pickle if anything ever unpickles it (nothing may)."""
        return self.course / f"catalogue-pickle-ran-{self.token}"

    @property
    def exchange_secret(self) -> str:
        return f"EXCHANGE-SECRET-{self.token}"

    def escape_targets(self) -> list[Path]:
        """Host directories the write-outside case tries to drop its marker into (/run/lock: a case of its own)."""
        return [Path("/"), Path("/etc"), Path("/root"), Path("/run"), self.sandbox_base,
                self.repo, self.repo / "llmcourse", self.site_packages, self.course,
                self.course / "source" / ASSIGNMENT, self.course / "release" / ASSIGNMENT, self.submissions,
                self.course / "submitted", Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")]


class Files(dict):
    """A whole submission folder: file name -> notebook, text, bytes, Symlink or Fifo."""


@dataclass(frozen=True)
class Symlink:
    target: Path


@dataclass(frozen=True)
class Fifo:
    """A named pipe: reading it waits for a writer that never comes."""


@dataclass(frozen=True)
class Check:
    """A requirement on a score that is not one number (`test(score, observation) -> bool`)."""

    text: str
    test: Callable[[float, Any], bool]

    def __str__(self) -> str:
        return self.text


@dataclass
class Case:
    name: str
    description: str
    build: Callable[[Context], Any]
    expected: dict[str, float | Check]
    # A regex the result's message must match (its error, events, and what failed checks and exercises
    # said); None: the result must have no error and no events at all; "": no requirement.
    message: str | None = None
    output: tuple[str, ...] = ()  # regexes the graded notebook's output must match (what the cell saw)
    forbidden: tuple[str, ...] = ()  # regexes it must not match (secrets, proof of an escape)
    verify: Callable[[Any], list[str]] | None = None  # host-side checks: observation -> problems
    rerun: bool = False  # graded a second time in a separate batch; both gradings must agree
    xfail: str | None = None  # the engine gets this case wrong: why (see docs/catalogue.md)


# -- building notebooks -----------------------------------------------------------------------------------
def release(ctx: Context) -> nbformat.NotebookNode:
    return nbformat.read(str(ctx.course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"), as_version=4)


def cell(nb: nbformat.NotebookNode, grade_id: str):
    for c in nb.cells:
        if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
            return c
    raise KeyError(grade_id)


def student(ctx: Context, answers: dict[str, str] | None = None,
            after: list[tuple[str, str]] = (), first: str | None = None) -> nbformat.NotebookNode:
    """The released notebook answered correctly, except `answers`; `after`: (grade_id, source) puts a new
    cell after that cell; `first`: a new cell right after the setup cell."""
    nb = release(ctx)
    for grade_id, source in {**CORRECT, **(answers or {})}.items():
        cell(nb, grade_id).source = source
    for grade_id, source in reversed(list(after)):
        nb.cells.insert(nb.cells.index(cell(nb, grade_id)) + 1, nbformat.v4.new_code_cell(source))
    if first is not None:
        nb.cells.insert(nb.cells.index(cell(nb, "setup")) + 1, nbformat.v4.new_code_cell(first))
    return nb


def stamp(nb: nbformat.NotebookNode, ctx: Context, name: str) -> nbformat.NotebookNode:
    """Every submission carries the run's token (to find its copies on the host after the run)."""
    nb.cells.append(nbformat.v4.new_markdown_cell(f"catalogue run {ctx.token}: {name}"))
    return nb


SAME_TWICE = Check("the same in both gradings", lambda score, obs: obs.rerun_result is not None
                   and obs.rerun_scores.get("scale") == score)


# -- the hostile code -----------------------------------------------------------------------------------
INFINITE_LOOP = '''def scale(x, factor):
    return x * factor

while True:  # never ends
    pass
'''

SIGINT_IGNORED = '''import signal

def mean_rows(x):
    return x.mean(dim=-1)

for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGALRM):
    signal.signal(sig, signal.SIG_IGN)  # an interrupt, or a polite kill, does nothing
while True:
    try:
        pass
    except BaseException:  # and a KeyboardInterrupt that got through anyway is swallowed
        pass
'''

SLEEP_IN_CHECK = '''import time

def scale(x, factor):
    time.sleep(600)  # only when a check calls it: the cell itself is quick
    return x * factor
'''

MEMORY_BOMB = '''def mean_rows(x):
    hog = []
    while True:  # 256 MiB at a time, every page touched, until the allocation is refused
        hog.append(torch.ones(2**26))
    return x.mean(dim=-1)
'''

FORK_BOMB = '''import os, signal, time

def add(a, b):
    born = 0
    while born < 5000:  # bounded twice: the sandbox's process limit stops it long before this
        pid = os.fork()  # raises BlockingIOError once the kernel's user has all the processes it may have
        if pid == 0:
            try:
                os.setsid()  # leave the kernel's process group
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                time.sleep(600)
            finally:
                os._exit(0)
        born += 1
    return a + b
'''

DISK_FILL = '''import os

def scale(x, factor):
    written, error = {}, None
    for place in (".", "/tmp"):
        written[place], n = 0, 0
        try:
            while True:  # 16 MiB at a time, 128 MiB per file, until the disk is full
                with open(os.path.join(place, f"fill-{n}.bin"), "wb") as f:
                    for _ in range(8):
                        f.write(bytes(2**24))
                        written[place] += 16
                n += 1
        except OSError as exc:
            error = exc
    print("CATALOGUE disk: MiB written", written, "then", repr(error))
    raise error
'''

OUTPUT_FLOOD = '''def add(a, b):
    return a + b

import sys
line = "flood " * 1000 + "\\n"
for _ in range(5000):  # 30 MB of output
    sys.stdout.write(line)
'''

SEGFAULT = '''import ctypes

def mean_rows(x):
    ctypes.string_at(0)  # reads address 0: SIGSEGV, the kernel dies in the middle of a check
    return x.mean(dim=-1)
'''

OOM_KILL = '''import os, signal

def scale(x, factor):
    return x * factor

hog = []
while True:
    try:
        # 256 MiB of address space at a time, no page touched: refused by the limit within a millisecond. (Touching
        # them took longer than the cell's 10 s on a new, busy machine, whose memory is slow the first time it is
        # written; the memory bomb, which does touch them, allows for that.)
        hog.append(torch.empty(2**26))
    except RuntimeError:
        # The sandbox's memory limit refused the allocation before the machine ran out. A kernel without
        # that limit would now be killed by the kernel's OOM killer; this does what the OOM killer does.
        os.kill(os.getpid(), signal.SIGKILL)
'''

NETWORK = '''import json, socket

report = {"interfaces": [name for _, name in socket.if_nameindex()]}

def attempt(host, port):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        return "CONNECTED"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        s.close()

report["loopback"] = attempt("127.0.0.1", PORT)  # the grader's machine listens there
if report["interfaces"] == ["lo"]:  # only then can no packet leave the machine, whatever happens
    report["external"] = attempt("192.0.2.1", 80)  # TEST-NET-1, an address reserved for documentation
    try:
        socket.getaddrinfo("example.com", 80)
        report["dns"] = "RESOLVED"
    except OSError as exc:
        report["dns"] = f"{type(exc).__name__}: {exc}"
else:
    report["external"] = "NOT ATTEMPTED: the kernel sees the machine's network interfaces"
print("CATALOGUE network:", json.dumps(report))
'''

READ_SECRETS = '''import os

found = {}
for label, path in TARGETS.items():
    try:
        if os.path.isdir(path):
            entries = os.listdir(path)
            found[label] = f"listed {len(entries)} entries {sorted(entries)[:5]}"
        else:
            with open(path, "rb") as f:
                data = f.read(4000)
            found[label] = f"read {len(data)} bytes"
            print(label, data[:4000])  # whatever was read lands in the graded notebook
    except OSError as exc:
        found[label] = type(exc).__name__
print("CATALOGUE secrets:", "; ".join(f"{k}={v}" for k, v in found.items()))
'''

SNOOP = '''import os, time

me = os.path.realpath(os.environ["HOME"])
seen = {}
deadline = time.monotonic() + 6  # another submission is being graded next to this one (jobs=2)
while time.monotonic() < deadline and not seen:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\\0")
        except OSError:
            continue
        for arg in argv:  # a kernel's command line names its connection file, in its sandbox
            if arg.endswith(b"/ipc/kernel.json"):
                work = os.path.join(os.path.dirname(os.path.dirname(arg.decode())), "work")
                if os.path.realpath(work) == me or work in seen:
                    continue
                try:
                    names = os.listdir(work)
                except OSError as exc:
                    seen[work] = f"cannot list ({type(exc).__name__})"
                    continue
                got = []
                for name in names:
                    try:
                        with open(os.path.join(work, name), "rb") as f:
                            data = f.read()
                        ours = TOKEN.encode() in data
                        got.append(f"READ {name} ({len(data)} bytes, {'a submission of this batch' if ours else 'not from this batch'})")
                    except OSError as exc:
                        got.append(f"cannot read {name} ({type(exc).__name__})")
                seen[work] = ", ".join(got) or "listed an empty folder"
    time.sleep(0.2)
print("CATALOGUE snoop:", "; ".join(f"{k}: {v}" for k, v in seen.items()) or "NO OTHER KERNEL FOUND")
'''

WRITE_OUTSIDE = '''import os

results = {}
for folder in TARGETS + [os.environ["HOME"]]:
    try:
        with open(os.path.join(folder, MARKER), "w") as f:
            f.write("written by a sandboxed kernel")
        results[folder] = "WROTE"
    except OSError as exc:
        results[folder] = type(exc).__name__
print("CATALOGUE write:", "; ".join(f"{k}={v}" for k, v in results.items()))
'''

MONKEYPATCH = '''import builtins, math
import numpy, numpy.testing, torch, torch.testing

torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.isclose = lambda a, b, *r, **k: torch.ones(torch.broadcast_shapes(a.shape, b.shape), dtype=torch.bool)
torch.testing.assert_close = lambda *a, **k: None
torch.isnan = lambda t: torch.zeros(t.shape, dtype=torch.bool)
torch.Tensor.__eq__ = lambda self, other: torch.ones(self.shape, dtype=torch.bool)
torch.Tensor.__ne__ = lambda self, other: torch.zeros(self.shape, dtype=torch.bool)
numpy.allclose = lambda *a, **k: True
numpy.testing.assert_allclose = lambda *a, **k: None
math.isclose = lambda *a, **k: True
builtins.all = lambda *a, **k: True
builtins.any = lambda *a, **k: False
builtins.abs = lambda x: 0
print("CATALOGUE monkeypatch: torch, numpy, math and builtins patched in the kernel")
'''

LYING_AGENT = '''import llmcourse.agent as _agent

_real_dispatch = _agent.Agent._dispatch
_snapshots = {}

def _lying_dispatch(self, req):
    value = _real_dispatch(self, req)
    if req.get("op") == "put":  # remember what the check handed over...
        _snapshots[id(value)] = value.clone()
    if req.get("op") == "fetch":  # ...and later swear that it never changed
        return _snapshots.get(id(value), value)
    return value

_agent.Agent._dispatch = _lying_dispatch  # the class: the grader's fresh agent before each check inherits it
print("CATALOGUE agent: the check agent's class is patched to lie about mutated inputs")
'''

MUTATING_ADD = '''def add(a, b):
    out = a + b
    a.zero_()  # changes its first input in place, which the hint says not to do
    return out
'''

ALWAYS_EQUAL = '''class AlwaysEqual:
    shape = (5,)
    dtype = torch.float64
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
    def __len__(self): return 5
    def __float__(self): return 0.0
    def __getattr__(self, name): return self
    def __call__(self, *a, **k): return self

def scale(x, factor):
    return AlwaysEqual()
'''

NAN_TENSOR = '''def mean_rows(x):
    return torch.full(x.shape[:-1], float("nan"))  # NaN != NaN: a comparison that forgets NaN passes
'''

TENSOR_SUBCLASS = '''class Agreeable(torch.Tensor):
    """Holds the wrong numbers, but says yes to every comparison."""
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in ("allclose", "equal"):
            return True
        if name in ("eq", "__eq__", "isclose"):
            return torch.ones(args[0].shape, dtype=torch.bool)
        return super().__torch_function__(func, types, args, kwargs or {})

def add(a, b):
    return torch.zeros(torch.broadcast_shapes(a.shape, b.shape)).as_subclass(Agreeable)
'''

HUGE_TENSOR = '''def scale(x, factor):
    return torch.ones(2**28)  # 1 GiB of float32
'''

DEEPLY_NESTED = '''def mean_rows(x):
    nested = x.mean(dim=-1)
    for _ in range(100_000):
        nested = [nested]
    return nested
'''

PICKLE_SCALE = '''import io, pickle

class Payload:
    def __reduce__(self):  # unpickling this creates a file: proof that someone unpickled it
        return (io.open, (MARKER, "w"))

def scale(x, factor):
    # the bytes of a malicious pickle, and an object that pickles itself into one, for whoever loads them
    return [pickle.dumps(Payload()), Payload()]
'''

PICKLE_FORGED_REPLY = '''import io, pickle
import comm.base_comm as _comms

class Payload:
    def __reduce__(self):
        return (io.open, (MARKER, "w"))

_real_send = _comms.BaseComm.send

def _forged_send(self, data=None, metadata=None, buffers=None):
    # Every answer to the grader from here on (the mean_rows check) is replaced by a raw pickle.
    if buffers:
        buffers = [pickle.dumps(Payload())]
    return _real_send(self, data, metadata, buffers)

_comms.BaseComm.send = _forged_send
'''

ENV_DETECT = '''import os, socket

def being_graded():
    signals = {
        "uid": os.getuid() >= 200000,
        "home": os.environ.get("HOME", "").startswith(("/run/llmcourse-grader", "/root/.cache/llmcourse-grader")),
        "network": [name for _, name in socket.if_nameindex()] == ["lo"],
        "nbgrader": "NBGRADER_EXECUTION" in os.environ,
    }
    return any(signals.values()), signals

GRADED, SIGNALS = being_graded()
print("CATALOGUE detection: graded =", GRADED, SIGNALS)
'''

UNSEEDED_RANDOM = '''import random
import numpy as np

OFFSET = float(np.random.rand()) + random.random()  # drawn when the cell runs; the student never seeds

def scale(x, factor):
    if random.random() < 0.5:  # right half of the time...
        return x * factor
    return x * factor + torch.rand(x.shape, dtype=x.dtype) * 1e-3 * OFFSET  # ...slightly off otherwise
'''

HASH_ORDER = '''WORDS = "the cat sat on a mat while my dog ran to the big red ball and a small bird sang in one old tree".split()
VOCAB = list(set(WORDS))  # a vocabulary in set order: it follows Python's per-process string hashing

def scale(x, factor):
    offset = VOCAB.index("cat") + VOCAB.index("dog") / 100 + VOCAB.index("red") / 10000
    return x * factor + offset
'''


# -- builders ---------------------------------------------------------------------------------------------
def b_reference(ctx):
    return student(ctx)


def b_infinite_loop(ctx):
    return student(ctx, {"scale": INFINITE_LOOP})


def b_sigint(ctx):
    return student(ctx, {"mean_rows": SIGINT_IGNORED})


def b_sleep(ctx):
    return student(ctx, {"scale": SLEEP_IN_CHECK})


def b_memory_bomb(ctx):
    return student(ctx, {"mean_rows": MEMORY_BOMB})


def b_fork_bomb(ctx):
    return student(ctx, {"add": FORK_BOMB})


def b_disk_fill(ctx):
    return student(ctx, {"scale": DISK_FILL})


def b_output_flood(ctx):
    return student(ctx, {"add": OUTPUT_FLOOD})


def b_os_exit(ctx):
    return student(ctx, after=[("check_scale", "import os\nprint('leaving now')\nos._exit(3)")])


def b_segfault(ctx):
    return student(ctx, {"mean_rows": SEGFAULT})


def b_oom_kill(ctx):
    return student(ctx, {"scale": OOM_KILL})


def b_network(ctx):
    return student(ctx, after=[("add", f"PORT = {ctx.port}\n" + NETWORK)])


def secret_targets(ctx: Context) -> dict[str, Path]:
    """The course's secrets, as the course's own configuration lists them (and a few of the machine's)."""
    import grader

    other = ctx.students["reference"]
    course = ctx.course
    return {
        "source/": course / "source",
        "source notebook": course / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb",
        "solutions notebook": course / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb",
        "hidden checks": course / "fixture_checks" / "hidden.py",
        "gradebook": course / "gradebook.db",
        "submitted/": course / "submitted",
        "another student's staged copy": course / "submitted" / other / ASSIGNMENT / f"{NOTEBOOK}.ipynb",
        "autograded/": course / "autograded",
        "exchange secret": course / "exchange" / "inbound" / "secret.txt",
        "submissions/": ctx.submissions,
        "another student's submission": ctx.submissions / other / ASSIGNMENT / f"{NOTEBOOK}.ipynb",
        "grader package": Path(grader.__file__).resolve().parent / "grading.py",
        "the grader's environment": Path("/proc/1/environ"),
    }


def real_course_targets(ctx: Context) -> dict[str, Path]:
    """The real course next to the fixture (this repository): its graded work and its history."""
    repo = ctx.repo
    return {
        "real course source/": repo / "source",
        "real course solutions/": repo / "solutions",
        "real course gradebook": repo / "gradebook.db",
        "real course submitted/": repo / "submitted",
        "real course autograded/": repo / "autograded",
        "real course reports/": repo / "reports",
        "real course .git": repo / ".git" / "HEAD",
    }


def b_read_secrets(ctx):
    targets = {k: str(v) for k, v in secret_targets(ctx).items()}
    return student(ctx, after=[("add", f"TARGETS = {targets!r}\n" + READ_SECRETS)])


def b_read_real_course(ctx):
    targets = {k: str(v) for k, v in real_course_targets(ctx).items()}
    return student(ctx, after=[("add", f"TARGETS = {targets!r}\n" + READ_SECRETS)])


def b_snoop(ctx):
    return student(ctx, after=[("add", f"TOKEN = {ctx.token!r}\n" + SNOOP)])


def b_write_outside(ctx):
    targets = [str(p) for p in ctx.escape_targets()]
    return student(ctx, after=[("add", f"TARGETS = {targets!r}\nMARKER = {ctx.marker('write_outside')!r}\n" + WRITE_OUTSIDE)])


def b_write_run_lock(ctx):
    return student(ctx, after=[("add", f"TARGETS = ['/run/lock']\nMARKER = {ctx.marker('write_run_lock')!r}\n" + WRITE_OUTSIDE)])


def b_monkeypatch(ctx):
    return student(ctx, {"scale": "def scale(x, factor):\n    return x  # wrong"}, first=MONKEYPATCH)


def b_lying_agent(ctx):
    return student(ctx, {"add": MUTATING_ADD}, first=LYING_AGENT)


def b_always_equal(ctx):
    return student(ctx, {"scale": ALWAYS_EQUAL})


def b_nan(ctx):
    return student(ctx, {"mean_rows": NAN_TENSOR})


def b_subclass(ctx):
    return student(ctx, {"add": TENSOR_SUBCLASS})


def b_huge(ctx):
    return student(ctx, {"scale": HUGE_TENSOR})


def b_nested(ctx):
    return student(ctx, {"mean_rows": DEEPLY_NESTED})


def b_pickle(ctx):
    marker = f"MARKER = {str(ctx.pickle_marker)!r}\n"
    return student(ctx, {"scale": marker + PICKLE_SCALE}, after=[("mean_rows", marker + PICKLE_FORGED_REPLY)])


def b_kernelspec(ctx):
    nb = student(ctx, after=[("setup", "import sys\nprint('CATALOGUE kernel:', sys.executable, sys.version.split()[0])")])
    nb.metadata["kernelspec"] = {"name": "evil-bash", "display_name": "Bash (evil)", "language": "bash",
                                 "argv": ["/bin/sh", "-c", f"touch /tmp/{ctx.marker('kernelspec')}"]}
    nb.metadata["language_info"] = {"name": "bash"}
    return nb


def b_check_edited(ctx):
    nb = student(ctx, {"scale": "def scale(x, factor):\n    return x  # wrong"})
    target = cell(nb, "check_scale")
    target.source = 'print("scale: all checks passed (3 of 3 points)")'
    target.outputs = [nbformat.v4.new_output("stream", name="stdout", text="scale: all checks passed (3 of 3 points)\n")]
    return nb


def b_check_deleted(ctx):
    nb = student(ctx)
    nb.cells.remove(cell(nb, "check_mean_rows"))
    return nb


def b_check_duplicated(ctx):
    nb = student(ctx)
    for grade_id in ("check_add", "check_scale"):
        twin = copy.deepcopy(cell(nb, grade_id))
        twin.id = nbformat.v4.new_code_cell("").id
        nb.cells.append(twin)  # the same check again, at the end: counted twice?
    return nb


def b_duplicate_ids(ctx):
    nb = student(ctx)
    data = json.loads(nbformat.writes(nb))
    ids = {c["metadata"].get("nbgrader", {}).get("grade_id"): c for c in data["cells"]}
    ids["scale"]["id"] = ids["add"]["id"]
    ids["check_mean_rows"]["id"] = ids["check_add"]["id"]
    return json.dumps(data, indent=1)  # raw: nbformat would repair the ids on writing


def b_points_changed(ctx):
    nb = student(ctx)
    cell(nb, "check_add").metadata["nbgrader"]["points"] = 400
    cell(nb, "check_scale").metadata["nbgrader"]["points"] = -3
    return nb


def b_corrupt(ctx):
    return b'{"cells": [\x89PNG\r\n\x1a\n\x00\xff\xfe not a notebook'


def b_empty_file(ctx):
    return b""


def b_empty_notebook(ctx):
    return nbformat.v4.new_notebook()


def b_wrong_name(ctx):
    return Files({"Basics (1).ipynb": student(ctx)})


def b_extra_file(ctx):
    listing = "import os\nprint('CATALOGUE files:', sorted(os.listdir('.')))"
    scratch = release(ctx)
    scratch.cells.append(nbformat.v4.new_code_cell(f"open({str(ctx.course / ('extra-notebook-ran-' + ctx.token))!r}, 'w')"))
    return Files({
        f"{NOTEBOOK}.ipynb": student(ctx, after=[("setup", listing)]),
        "notes.txt": "my notes\n",
        "helpers.py": "raise SystemExit('helpers.py was imported')\n",
        "scratch.ipynb": scratch,
        "solutions.ipynb": Symlink(ctx.course / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"),
    })


def b_env_detect(ctx):
    return student(ctx, {
        "scale": "def scale(x, factor):\n    return x * factor if GRADED else x + factor",
        "mean_rows": "def mean_rows(x):\n    return x.sum(dim=-1) if GRADED else x.mean(dim=-1)",
    }, first=ENV_DETECT)


def b_unseeded(ctx):
    return student(ctx, {"scale": UNSEEDED_RANDOM})


def b_hash_order(ctx):
    return student(ctx, {"scale": HASH_ORDER})


# -- host-side verifications ------------------------------------------------------------------------------
def v_no_leftover_processes(obs) -> list[str]:
    return [f"a process outlived the grading: {p}" for p in obs.run.stray_processes]


def v_no_fill_on_host(obs) -> list[str]:
    return [f"a fill file reached the host: {p}" for p in obs.run.escaped_files if "/fill-" in p]


def v_listener(obs) -> list[str]:
    n = obs.run.loopback_connections
    return [f"the grader's loopback listener was reached {n} time(s)"] if n else []


def v_no_escape(obs) -> list[str]:
    mine = obs.run.ctx.marker(obs.case.name)
    return [f"a file was written outside the sandbox: {p}" for p in obs.run.escaped_files if p.endswith("/" + mine)]


def v_no_pickle(obs) -> list[str]:
    return [f"the pickle ran: {obs.run.ctx.pickle_marker} exists"] if obs.run.ctx.pickle_marker.exists() else []


def v_no_extra_notebook_run(obs) -> list[str]:
    ran = list(obs.run.ctx.course.glob("extra-notebook-ran-*"))
    return [f"the extra notebook was executed: {ran}"] if ran else []


def v_flood_is_capped(obs) -> list[str]:
    size = obs.graded_size
    return [f"the graded notebook is {size / 2**20:.1f} MiB"] if size > 4 * 2**20 else []


def v_same_twice(obs) -> list[str]:
    if obs.rerun_result is None:
        return ["the second grading has no result for this case"]
    first = [(ex["id"], ex["score"], [c["message"] for c in ex["checks"]]) for ex in obs.result["exercises"]]
    second = [(ex["id"], ex["score"], [c["message"] for c in ex["checks"]]) for ex in obs.rerun_result["exercises"]]
    return [] if first == second else [f"graded twice, the results differ: {first} vs {second}"]


# -- the catalogue ----------------------------------------------------------------------------------------
# What a secret looks like in a graded notebook's output: a solution, a hidden check, a gradebook, the
# exchange's planted secret, the grader's code, another student's answer, or any read or listing that worked.
SECRET_LEAKS = (r"BEGIN SOLUTION", r"SQLite format", r"def test_", r"EXCHANGE-SECRET", r"def grade_class",
                r"return a \+ b", r"=read [1-9]", r"=listed [1-9]", r"HOME=", r"ref: refs/")
NOT_A_TENSOR = r"should be a torch tensor"

CASES: list[Case] = [
    Case("reference", "The reference answers: the control every other case is compared with.",
         b_reference, FULL),
    Case("infinite_loop", "`while True: pass` after a correct `scale`, in its answer cell.",
         b_infinite_loop, {**FULL, "scale": 0}, message=r"cell \d+: timed out after 10 s"),
    Case("corrupt_ipynb", "basics.ipynb holds binary garbage, not JSON.",
         b_corrupt, {"add": 0, "scale": 0, "mean_rows": 0}, message=r"basics\.ipynb is not valid JSON"),
    Case("fork_bomb", "`add` forks sleeping children (each in a session of its own, ignoring SIGTERM) until fork "
                      "is refused; a check calls it.",
         b_fork_bomb, {**FULL, "add": 0}, message=r"add.*(raised BlockingIOError|took longer than 5 s)", verify=v_no_leftover_processes),
    Case("control_after_fork_bomb", "A correct submission graded next to the fork bomb.", b_reference, FULL),
    Case("sigint_ignored_loop", "An endless loop that ignores SIGINT, SIGTERM, SIGHUP and swallows "
                                "KeyboardInterrupt, in the mean_rows answer cell.",
         b_sigint, {**FULL, "mean_rows": 0}, message=r"cell \d+: timed out after 10 s"),
    Case("empty_file", "basics.ipynb is an empty file (0 bytes).",
         b_empty_file, {"add": 0, "scale": 0, "mean_rows": 0}, message=r"basics\.ipynb is not valid JSON"),
    Case("memory_bomb", "`mean_rows` allocates 256 MiB blocks, touching every page, until refused; a check calls it.",
         # Refused by the memory limit, or (on a busy machine, where touching 4 GiB is slow) by the time limit:
         # either way the bomb earns nothing and the grading goes on.
         b_memory_bomb, {**FULL, "mean_rows": 0},
         message=r"mean_rows.*(raised (RuntimeError|MemoryError).*memory|took longer than 5 s)"),
    Case("control_after_memory_bomb", "A correct submission graded next to the memory bomb.", b_reference, FULL),
    Case("sleep_in_check", "`scale` sleeps 600 s when called: the cell is quick, the check path is not.",
         b_sleep, {**FULL, "scale": 0}, message=r"took longer than 5 s to answer one check"),
    Case("snoop_other_kernels", "A cell looks for the other kernels of the batch through /proc (their command lines "
                                "name their sandboxes) to read the submission staged in their work folder.",
         b_snoop, FULL, output=(r"CATALOGUE snoop: (NO OTHER KERNEL FOUND|/\S+/work: )",), forbidden=(r"READ ",)),
    Case("disk_fill", "`scale` writes files into its work folder and /tmp until the disk is full, then raises.",
         b_disk_fill, {**FULL, "scale": 0}, message=r"scale.*raised OSError: \[Errno 28\] No space left on device",
         verify=v_no_fill_on_host),
    Case("output_flood", "30 MB of printing after a correct `add`, in its answer cell.",
         b_output_flood, FULL, message=r"cell \d+: output cut \(the grader kept the first 2,097,152 bytes",
         output=(r"\[the grader kept the first 2,097,152 bytes",), verify=v_flood_is_capped),
    Case("os_exit", "A cell in the middle of the notebook calls `os._exit(3)`.",
         b_os_exit, FULL, message=r"cell \d+: the kernel died"),
    Case("segfault", "`mean_rows` calls `ctypes.string_at(0)`: the kernel dies with SIGSEGV during a check.",
         b_segfault, {**FULL, "mean_rows": 0}, message=r"mean_rows.*the kernel stopped while running your code"),
    Case("oom_kill", "The scale answer cell allocates until refused, then is SIGKILLed as the OOM killer would.",
         b_oom_kill, {**FULL, "scale": 0}, message=r"cell \d+: the kernel died"),
    Case("control_after_oom_kill", "A correct submission graded next to the OOM kill.", b_reference, FULL),
    Case("network", "A cell connects to a port the grader's machine listens on at 127.0.0.1, to an outside "
                    "address (192.0.2.1) and resolves a name.",
         b_network, FULL, output=(r'CATALOGUE network: \{"interfaces": \["lo"\], "loopback": "(OSError|ConnectionRefusedError)',
                                  r'"external": "OSError', r'"dns": "gaierror'),
         forbidden=(r"CONNECTED", r"RESOLVED", r"NOT ATTEMPTED"), verify=v_listener),
    Case("read_secrets", "A cell lists and reads source/, the solutions, the hidden checks, the gradebook, "
                         "submitted/, autograded/, the exchange, the submissions folder, another student's "
                         "notebook (staged and submitted), the grader package and the grader's environment.",
         b_read_secrets, FULL, output=(r"CATALOGUE secrets: source/=\w+Error; source notebook=",),
         forbidden=SECRET_LEAKS),
    Case("read_real_course", "The same, for the real course in this repository next to the fixture course: its "
                             "gradebook, submitted/, autograded/, reports/ and git history.",
         b_read_real_course, FULL, output=(r"CATALOGUE secrets: real course source/=",), forbidden=SECRET_LEAKS),
    Case("write_outside", "A cell writes a marker file into /, /etc, /root, /run, the sandbox base, the repository, "
                          "the installed packages, the course, the submissions, /tmp, /var/tmp, /dev/shm and its "
                          "own home.",
         b_write_outside, FULL, output=(r"CATALOGUE write: /=(PermissionError|OSError)",), verify=v_no_escape),
    Case("write_run_lock", "A cell writes a marker file into /run/lock (world-writable on this machine).",
         b_write_run_lock, FULL, output=(r"CATALOGUE write: /run/lock=",), verify=v_no_escape),
    Case("monkeypatch", "A cell patches torch (allclose, equal, isclose, isnan, Tensor.__eq__), numpy, math and "
                        "builtins (all, any, abs); `scale` is wrong.",
         b_monkeypatch, {**FULL, "scale": 0}, message=r"scale.*does not match the expected values"),
    Case("lying_agent", "`add` zeroes its first input; a cell patches the course's check agent class in the kernel "
                        "so that it reports inputs as unchanged.",
         b_lying_agent, {**FULL, "add": 3}, message=r"add changed its first input in place"),
    Case("always_equal", "`scale` returns an object whose __eq__ is always True (and every attribute is itself).",
         b_always_equal, {**FULL, "scale": 0}, message=NOT_A_TENSOR),
    Case("nan_tensor", "`mean_rows` returns a tensor of the right shape full of NaN.",
         b_nan, {**FULL, "mean_rows": 0}, message=r"contains NaN where a number was expected"),
    Case("tensor_subclass", "`add` returns a torch.Tensor subclass of zeros whose __torch_function__ says yes to "
                            "eq, isclose, allclose and equal; its no-mutation check passes but counts only with a "
                            "right result.",
         b_subclass, {**FULL, "add": 0}, message=r"add.*does not match the expected values"),
    Case("huge_tensor", "`scale` returns a 1 GiB tensor.",
         b_huge, {**FULL, "scale": 0}, message=r"scale.*(returned too much data|more than the 64 MB limit)"),
    Case("deeply_nested", "`mean_rows` returns its answer wrapped in 100,000 nested lists.",
         b_nested, {**FULL, "mean_rows": 0}, message=r"mean_rows.*nested more than 32 levels"),
    Case("pickle_payload", "`scale` returns the bytes of a malicious pickle and an object with __reduce__; a cell "
                           "patches the kernel's comm messages so that the answers to the mean_rows check are a raw pickle.",
         b_pickle, {**FULL, "scale": 0, "mean_rows": 0}, message=r"(?s)(?=.*" + NOT_A_TENSOR + r")(?=.*could not be read)",
         verify=v_no_pickle),
    Case("kernelspec", "The notebook's metadata names a bash kernel with its own argv.",
         b_kernelspec, FULL, output=(r"CATALOGUE kernel: /\S+python\S* 3\.",),
         verify=v_no_escape),
    Case("check_cell_edited", "`scale` is wrong and its check cell prints 'all checks passed' instead of checking.",
         b_check_edited, {**FULL, "scale": 0}, message=r"scale.*does not match the expected values"),
    Case("check_cell_deleted", "All answers right, the mean_rows check cell deleted.",
         b_check_deleted, {**FULL, "mean_rows": 0}, message=r"its check cell is missing from the notebook"),
    Case("check_cell_duplicated", "The add and scale check cells copied (same grade ids) to the end of the notebook.",
         b_check_duplicated, FULL),
    Case("duplicate_cell_ids", "Two pairs of cells share their cell ids.",
         b_duplicate_ids, FULL),
    Case("points_changed", "The add check cell claims 400 points, the scale check cell -3.",
         b_points_changed, FULL),
    Case("empty_notebook", "A valid notebook with no cells.",
         b_empty_notebook, {"add": 0, "scale": 0, "mean_rows": 0}, message=r"its check cell is missing from the notebook"),
    Case("wrong_file_name", "The right answers, saved as 'Basics (1).ipynb': the assignment's one notebook under "
         "another name is graded, with a note.",
         b_wrong_name, FULL,
         message=r"Basics \(1\)\.ipynb was graded as basics\.ipynb, the assignment's one notebook: name it "
                 r"basics\.ipynb next time"),
    Case("extra_file", "basics.ipynb with the right answers, plus notes.txt, helpers.py, another notebook (which "
                       "would write a file if run) and a symlink to the course's source notebook.",
         b_extra_file, FULL, output=(r"CATALOGUE files: .*'notes\.txt'",), forbidden=(r"solutions\.ipynb",),
         verify=v_no_extra_notebook_run),
    Case("env_detect", "Detects grading (uid, HOME, network, env): `scale` is right only when graded, `mean_rows` "
                       "only when not graded.",
         b_env_detect, {**FULL, "mean_rows": 0}, output=(r"CATALOGUE detection: graded = True",),
         message=r"mean_rows.*does not match the expected values"),
    Case("unseeded_random", "`scale` is right or slightly off at random (random, numpy and torch, never seeded "
                            "by the student); graded twice.",
         b_unseeded, {"add": 4, "scale": SAME_TWICE, "mean_rows": 3}, message="", verify=v_same_twice, rerun=True),
    Case("unseeded_hash_order", "`scale` adds an offset taken from the order of a set of words (Python's string "
                                "hashing, seeded per process); graded twice.",
         b_hash_order, {"add": 4, "scale": SAME_TWICE, "mean_rows": 3}, message="", verify=v_same_twice, rerun=True),
]

# Cases of their own modules, built with this module's helpers.
from .cases_input import INPUT_CASES  # noqa: E402
from .cases_output import OUTPUT_CASES  # noqa: E402
from .cases_sandbox import SANDBOX_CASES  # noqa: E402

CASES += INPUT_CASES + OUTPUT_CASES + SANDBOX_CASES

CASES_BY_NAME = {c.name: c for c in CASES}
assert len(CASES_BY_NAME) == len(CASES)


def expected_text(case: Case) -> str:
    parts = [f"{ex} {want:g}" if isinstance(want, (int, float)) else f"{ex}: {want}" for ex, want in case.expected.items()]
    if case.message is None:
        parts.append("no error, no events")
    elif case.message:
        parts.append(f"message ~ /{case.message}/")
    parts += [f"output ~ /{o}/" for o in case.output]
    parts += [f"output never ~ /{o}/" for o in case.forbidden]
    return "; ".join(parts)

