"""The kernel side of a check: runs what a check asks for on the student's objects, returns data.

A check never runs inside the student's kernel at grading time. It runs in the grader and asks this
agent, through `wire` messages, to look up a name, call a function, read an attribute and so on. The
agent answers with data (tensors, numbers, strings, lists, dicts) or, for anything else, a reference
number. The same agent serves the in-notebook checks, called in-process, so a check sees exactly the
same thing in JupyterLab and at grading time.

The agent is not trusted: a student can replace it. That is fine, because the grader only ever
receives data and compares it with expected values it computes itself.
"""
from __future__ import annotations

import importlib
import traceback
from typing import Any

from . import wire

isinstance, type, getattr, setattr, str = isinstance, type, getattr, setattr, str  # noqa: A001,PLW0127  (see wire)

# The grader talks to the agent over a Jupyter comm (a message channel beside code execution): a
# request skips IPython's cell machinery, so a round trip costs about a third of an execute request.
COMM_TARGET = "llmcourse.checks"
# What a check may construct or call by dotted path: anything from these libraries, and from the course's own
# code only its loaders (llmcourse.assets) and the helpers written for this (llmcourse.in_kernel). The rest of
# llmcourse is notebook scaffolding, which a check must not come to depend on.
_ALLOWED_IMPORT_ROOTS = ("torch", "transformers", "numpy", "math", "collections")
_ALLOWED_COURSE_MODULES = ("llmcourse.in_kernel", "llmcourse.assets")


class Agent:
    def __init__(self, namespace: dict[str, Any], wire_module: Any = None):
        self.namespace = namespace
        # The grader hands in a freshly loaded copy of `wire` (see BOOTSTRAP), out of reach of a cell
        # that patched the imported one.
        self.wire = wire_module or wire
        self.objects: dict[int, Any] = {}

    # -- references ---------------------------------------------------------------------------------
    def _ref(self, obj: Any) -> wire.Ref:
        key = id(obj)
        self.objects[key] = obj  # kept alive as long as the agent (one exercise's checks)
        return self.wire.Ref(key, _type_name(obj))

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, self.wire.Ref):
            if value.id not in self.objects:
                raise LookupError("a reference that this kernel does not know (was the kernel restarted?)")
            return self.objects[value.id]
        if isinstance(value, list):
            return [self._resolve(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._resolve(v) for v in value)
        if isinstance(value, dict):
            return {k: self._resolve(v) for k, v in value.items()}
        return value

    # -- requests -----------------------------------------------------------------------------------
    def handle(self, request: bytes) -> bytes:
        try:
            req = self.wire.loads(request)
            value = self._dispatch(req)
        except _Missing as exc:
            return self.wire.dumps({"ok": False, "kind": "missing", "name": exc.args[0]})
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # the student's code raised (even a library's panic): report it as data
            return self.wire.dumps({"ok": False, "kind": "exception", "type": type(exc).__name__,
                               "message": _short(str(exc)), "where": _where(exc)})
        try:
            if req.get("as_ref"):
                return self.wire.dumps({"ok": True, "value": self._ref(value)})
            return self.wire.dumps({"ok": True, "value": value}, make_ref=self._ref)
        except self.wire.WireError as exc:
            return self.wire.dumps({"ok": False, "kind": "too-large", "type": "WireError", "message": str(exc), "where": ""})
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            return self.wire.dumps({"ok": False, "kind": "exception", "type": type(exc).__name__,
                               "message": _short(str(exc)), "where": ""})

    def _dispatch(self, req: dict[str, Any]) -> Any:
        op = req["op"]
        if op == "name":
            name = req["name"]
            if name not in self.namespace:
                raise _Missing(name)
            return self.namespace[name]
        if op == "has":
            return req["name"] in self.namespace
        if op == "import":
            path = req["path"]
            module, _, attr = path.rpartition(".")
            if not _may_import(module, attr):
                raise PermissionError(
                    f"a check may construct or call only from {', '.join(_ALLOWED_IMPORT_ROOTS)}, or a public name "
                    f"of {' or '.join(_ALLOWED_COURSE_MODULES)}; not {path!r} (move a helper that checks run in the "
                    f"kernel into llmcourse.in_kernel)")
            return getattr(importlib.import_module(module), attr)
        if op == "put":
            return req["value"]
        target = self._resolve(req["target"])
        if op == "getattr":
            return getattr(target, req["attr"])
        if op == "setattr":
            setattr(target, req["attr"], self._resolve(req["value"]))
            return None
        if op == "getitem":
            return target[self._resolve(req["key"])]
        if op == "call":
            return target(*self._resolve(req.get("args", [])), **self._resolve(req.get("kwargs", {})))
        if op == "fetch":
            return target
        raise ValueError(f"unknown operation {op!r}")

    # -- the kernel-side entry point used at grading time ----------------------------------------------
    def open_comm(self, comm: Any, open_msg: Any = None) -> None:
        """Serve the grader's requests on `comm`: each message carries one request as a binary buffer,
        and the reply goes back the same way (bytes, never printed text or pickles)."""
        wire_module, handle = self.wire, self.handle

        def receive(msg: Any) -> None:
            buffers = msg.get("buffers") or []
            if len(buffers) == 1:
                reply = handle(bytes(buffers[0]))
            else:
                reply = wire_module.dumps({"ok": False, "kind": "exception", "type": "ValueError",
                                           "message": "a request must be one buffer", "where": ""})
            comm.send({"reply": True}, buffers=[reply])

        comm.on_msg(receive)
        comm.send({"ready": True})


def _may_import(module: str, attr: str) -> bool:
    if module.split(".")[0] in _ALLOWED_IMPORT_ROOTS:
        return True
    return module in _ALLOWED_COURSE_MODULES and not attr.startswith("_")


class _Missing(Exception):
    pass


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _short(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


def _where(exc: BaseException) -> str:
    """The student's own line that raised, e.g. 'line 7, in softmax: return x.exp() / s'."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if frame.filename.startswith("<ipython-input") or "ipykernel" in frame.filename or frame.filename.startswith("<"):
            return f"line {frame.lineno}, in {frame.name}: {(frame.line or '').strip()}"
    if frames:
        frame = frames[-1]
        return f"in {frame.name}: {(frame.line or '').strip()}"
    return ""


# Run by the grader in the kernel: at start, and again before each check cell. The agent and its wire
# format are loaded afresh from their files each time (never from the imported modules, which a cell
# may have patched). Reseeding makes a grade independent of how much randomness the cells before it
# used: the same notebook, graded twice, gets the same score even if its author never set a seed.
BOOTSTRAP = """
def _llmcourse_bootstrap():
    import importlib.util
    def fresh(name):
        spec = importlib.util.find_spec(name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    agent, wire, setup = fresh("llmcourse.agent"), fresh("llmcourse.wire"), fresh("llmcourse.setup")
    namespace = get_ipython().user_ns
    namespace["__llmcourse_agent__"] = served = agent.Agent(namespace, wire_module=wire)
    get_ipython().kernel.comm_manager.register_target(agent.COMM_TARGET, served.open_comm)
    setup.set_seed(0)
    setup.apply_gpu_memory_cap()
_llmcourse_bootstrap()
del _llmcourse_bootstrap
"""
