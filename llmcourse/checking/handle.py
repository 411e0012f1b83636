"""The `student` handle: how a check reaches the student's code.

    out = student.softmax(x, dim=-1)          # look up a name, call it: data comes back
    mha = student.MultiHeadAttention(16, 4)   # a module stays in the kernel: a reference comes back
    mha.load_state_dict(weights)              # ... and can be used like the object itself
    y = mha(x)

A check is written once against this handle. Underneath, a *transport* carries `wire` messages to an
`Agent` that owns the student's namespace: in-process for the checks a student runs in JupyterLab and
for the repo's own tests, through the sandboxed kernel at grading time. Both paths encode and decode
every value, so a check sees copies of data, never the student's live objects.
"""
from __future__ import annotations

from typing import Any, Callable

from .. import wire
from ..agent import Agent


class StudentCodeError(Exception):
    """The student's code did not give an answer: it raised, was missing, or ran too long."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class MissingDefinition(StudentCodeError):
    def __init__(self, name: str):
        super().__init__(f"`{name}` is not defined. Run the cell that defines it (and the cells above it), "
                         f"then run this check again.")
        self.name = name


class StudentRaised(StudentCodeError):
    def __init__(self, what: str, type_name: str, message: str, where: str):
        text = f"{what} raised {type_name}: {message}" if message else f"{what} raised {type_name}"
        if type_name == "NotImplementedError" and not message:
            text = f"{what} is not implemented yet (it still raises NotImplementedError)"
        if where:
            text += f" ({where})"
        super().__init__(text)
        self.type_name = type_name


class StudentTimeout(StudentCodeError):
    pass


class Student:
    """The student's namespace, seen through a transport. Attribute access looks up a name."""

    def __init__(self, transport: Callable[[dict], Any]):
        object.__setattr__(self, "_transport", transport)

    def _request(self, what: str, **req: Any) -> Any:
        reply = self._transport(req)
        if not isinstance(reply, dict) or "ok" not in reply:
            raise StudentCodeError(f"{what} gave an answer the checker could not read")
        if reply["ok"]:
            value = reply.get("value")
            return RemoteObject(self, value, what) if isinstance(value, wire.Ref) else value
        if reply.get("kind") == "missing":
            raise MissingDefinition(str(reply.get("name")))
        if reply.get("kind") == "too-large":
            raise StudentCodeError(f"{what} returned too much data: {reply.get('message')}")
        raise StudentRaised(what, str(reply.get("type")), str(reply.get("message", "")), str(reply.get("where", "")))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._request(f"`{name}`", op="name", name=name)

    def has(self, name: str) -> bool:
        return bool(self._request("lookup", op="has", name=name))

    def construct(self, path: str, *args: Any, **kwargs: Any) -> Any:
        """Build an object from a library inside the student's kernel, e.g. a transformers model."""
        factory = self._request(path, op="import", path=path)
        return factory(*args, **kwargs)

    def put(self, value: Any) -> "RemoteObject":
        """Place data in the student's kernel and keep a reference (to see if a function mutates it)."""
        return self._request("put", op="put", value=value, as_ref=True)


class RemoteObject:
    """Stands for an object that lives with the student (a model, a function). Use it like the object."""

    __slots__ = ("_student", "_ref", "_what")

    def __init__(self, student: Student, ref: wire.Ref, what: str):
        object.__setattr__(self, "_student", student)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_what", what)

    @property
    def type_name(self) -> str:
        """The object's class as 'module.QualName', e.g. 'torch.nn.modules.linear.Linear'."""
        return self._ref.type_name

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._student._request(f"{self._what}.{name}", op="getattr", target=self._ref, attr=name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._student._request(f"{self._what}.{name} = ...", op="setattr", target=self._ref, attr=name,
                               value=_unwrap(value))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._student._request(f"{self._what}(...)" if not self._what.startswith("`") else
                                      f"{self._what[:-1]}(...)`", op="call", target=self._ref,
                                      args=_unwrap(list(args)), kwargs=_unwrap(kwargs))

    def __getitem__(self, key: Any) -> Any:
        return self._student._request(f"{self._what}[...]", op="getitem", target=self._ref, key=_unwrap(key))

    def fetch(self) -> Any:
        """The object's value as data (for a reference made by `put`)."""
        return self._student._request(self._what, op="fetch", target=self._ref)

    def __repr__(self) -> str:
        return f"<student object {self._what}: {self.type_name}>"


def _unwrap(value: Any) -> Any:
    if isinstance(value, RemoteObject):
        return value._ref
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_unwrap(v) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    return value


def local_student(namespace: dict[str, Any]) -> Student:
    """A handle on a namespace in this process (the notebook's, or one a test builds)."""
    agent = Agent(namespace)

    def transport(request: dict) -> Any:
        return wire.loads(agent.handle(wire.dumps(request)))

    return Student(transport)
