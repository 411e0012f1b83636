"""Imports that grading needs, made in the background while a submission's kernel starts.

A grading process spends its first seconds importing: torch and the check machinery, then, at the first check
cell, whatever the assignment's checks import (transformers' GPT-2 for 01_attention, say). Meanwhile it mostly
waits: for the sandboxed kernel to start, then for the student's cells to run. `Warmup` does those imports in a
thread during that wait, so the kernel's start and the grader's imports overlap (they run on different cores).

What the checks import is read from their source (every `import` statement, those inside functions
included), never by importing the check modules themselves: pytest must be the one to import them, to
rewrite their asserts. The helpers both kinds of checks share (`llmcourse.checking.shared`) are read the
same way, since much of what the checks need (transformers' models, say) is imported inside them. A failed warm-up import changes nothing: the grader imports the module again when
it needs it, and reports what goes wrong then.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import threading

# What every grading process needs, in the order it needs it: the kernel transport (which imports torch),
# then the runner of the checks (pytest).
GRADING_MODULES = ("grader.remote", "llmcourse.checking.runner", "llmcourse.checking.notebook")
# Packages whose modules are check modules: never imported here (see above).
CHECK_PACKAGES = ("llmcourse.checks", "grader.checks")
# The package of the helpers that an assignment's visible and hidden checks share: what they import counts too.
SHARED_HELPERS = "llmcourse.checking.shared"


def imports_of(module_name: str, keep_checks: bool = False) -> list[tuple[str, tuple[str, ...]]]:
    """(module, names) for every absolute import in a module's source, without importing it (check modules
    left out, unless `keep_checks`)."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return []
    try:
        with open(spec.origin, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, ValueError):
        return []
    found: list[tuple[str, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, tuple(a.name for a in node.names if a.name != "*")))
    return [(name, names) for name, names in found
            if (keep_checks or not name.startswith(CHECK_PACKAGES)) and name != "__future__"]


def checks_imports(check_modules: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """`imports_of` these check modules, of the check modules they gather (07_deployment's are two by topic), and
    of the shared helpers they import (and those import), in order."""
    found: list[tuple[str, tuple[str, ...]]] = []
    todo, read = list(check_modules), set(check_modules)
    while todo:
        for name, attributes in imports_of(todo.pop(0), keep_checks=True):
            if name.startswith(CHECK_PACKAGES):  # read, never imported here: pytest imports check modules
                if name not in read:
                    read.add(name)
                    todo.append(name)
                continue
            found.append((name, attributes))
            if name.startswith(SHARED_HELPERS) and name not in read:
                read.add(name)
                todo.append(name)
    return found


class Warmup:
    """`Warmup(["llmcourse.checks.attention", "grader.checks.attention"]).start()`, then
    `.grading_modules_ready()` before the grader talks to the kernel and `.wait()` before the first check runs."""

    def __init__(self, check_modules: list[str]):
        self.check_modules = [m for m in dict.fromkeys(check_modules) if m]
        self._thread: threading.Thread | None = None
        self._grading_modules = threading.Event()  # set once GRADING_MODULES are imported (or failed to)

    def start(self) -> "Warmup":
        self._thread = threading.Thread(target=self._run, name="grader-warmup", daemon=True)
        self._thread.start()
        return self

    def grading_modules_ready(self) -> None:
        """Wait until the kernel transport and the runner are imported, so that the caller imports nothing of
        its own while this thread imports (two threads importing modules that import each other can each be
        handed the other's half-made module)."""
        if self._thread is not None:
            self._grading_modules.wait()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        try:
            for name in GRADING_MODULES:
                self._load(name, ())
        finally:
            self._grading_modules.set()
        try:
            wanted = dict.fromkeys(checks_imports(self.check_modules))
        except Exception:  # noqa: BLE001  (Python 3.11's ast.parse can fail in a thread while another parses)
            return
        for name, attributes in wanted:
            self._load(name, attributes)

    @staticmethod
    def _load(name: str, attributes: tuple[str, ...]) -> None:
        try:
            module = importlib.import_module(name)
            for attribute in attributes:  # lazy packages (transformers) load a class's module on access
                getattr(module, attribute, None)
        except BaseException:  # noqa: BLE001  (only a head start: the grader imports it again if needed)
            pass
