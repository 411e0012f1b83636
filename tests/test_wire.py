"""The data format between kernel and grader: round trips, limits, and no code ever runs on read."""
import ast
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from llmcourse import wire
from llmcourse.agent import Agent, _may_import
from llmcourse.checking.handle import StudentRaised, local_student


def roundtrip(value):
    return wire.loads(wire.dumps(value))


def test_data_round_trips():
    value = {"t": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([True, False]), "i": 3, "f": 0.5,
             "nan": float("nan"), "s": "text", "l": [1, (2, 3)], "none": None, "dt": torch.float64,
             "np": np.ones(2), "keys": {1: "int key"}, "__dunder__": 1}
    out = roundtrip(value)
    assert torch.equal(out["t"], value["t"]) and out["t"].dtype == torch.float32
    assert torch.equal(out["b"], value["b"])
    assert out["i"] == 3 and out["f"] == 0.5 and out["s"] == "text" and out["none"] is None
    assert out["l"] == [1, (2, 3)] and out["dt"] is torch.float64 and out["keys"] == {1: "int key"}
    assert np.isnan(out["nan"]) and isinstance(out["np"], np.ndarray) and out["__dunder__"] == 1


def test_tensor_subclasses_and_parameters_arrive_as_plain_tensors():
    class Sneaky(torch.Tensor):
        def __eq__(self, other):
            return True

    p = torch.nn.Parameter(torch.ones(2))
    s = torch.ones(2).as_subclass(Sneaky)
    out = roundtrip([p, s])
    assert all(type(t) is torch.Tensor and not t.requires_grad for t in out)


def test_objects_that_are_not_data_need_a_reference():
    with pytest.raises(wire.NotData):
        wire.dumps(object())
    refs = []
    blob = wire.dumps({"m": torch.nn.Linear(2, 2)}, make_ref=lambda o: refs.append(o) or wire.Ref(7, "Linear"))
    assert wire.loads(blob) == {"m": wire.Ref(7, "Linear")}


def test_a_pickle_is_rejected_not_loaded():
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle ran')",))

    with pytest.raises(wire.WireError):
        wire.loads(pickle.dumps(Boom()))
    with pytest.raises(wire.WireError):
        wire.loads(b"\x00" * 16)


def test_limits_hold_in_both_directions(monkeypatch):
    deep = []
    for _ in range(wire.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(wire.WireError, match="nested"):
        wire.dumps(deep)
    monkeypatch.setattr(wire, "MAX_BYTES", 1000)
    with pytest.raises(wire.WireError, match="limit"):
        wire.dumps(torch.zeros(1000))


def test_the_agent_reports_errors_as_data():
    def broken(x):
        raise ValueError("shapes do not match")

    agent = Agent({"broken": broken})
    ask = lambda **req: wire.loads(agent.handle(wire.dumps(req)))  # noqa: E731
    fn = ask(op="name", name="broken")["value"]
    reply = ask(op="call", target=fn, args=[1])
    assert reply == {"ok": False, "kind": "exception", "type": "ValueError", "message": "shapes do not match",
                     "where": reply["where"]}
    assert ask(op="name", name="missing") == {"ok": False, "kind": "missing", "name": "missing"}
    assert not ask(op="import", path="os.system")["ok"]  # checks may not reach outside the libraries


def test_checks_construct_only_from_the_libraries_and_the_kernel_helpers():
    """The agent builds objects for a check from torch, transformers and a few more, and from the course's code
    only llmcourse.in_kernel and llmcourse.assets: notebook scaffolding is out of a check's reach."""
    agent = Agent({})
    ask = lambda **req: wire.loads(agent.handle(wire.dumps(req)))  # noqa: E731
    for path in ("llmcourse.lora_tools.measure", "llmcourse.setup.set_seed", "llmcourse.applications_tools.table",
                 "llmcourse.in_kernel", "llmcourse.in_kernel._id_list", "llmcourse.agent.Agent", "os.system",
                 "llmcourse.in_kernel_x.call_each"):
        reply = ask(op="import", path=path)
        assert not reply["ok"] and reply["type"] == "PermissionError", path
        assert repr(path) in reply["message"] and "llmcourse.in_kernel" in reply["message"], reply["message"]

    student = local_student({"add": lambda a, b: a + b})
    layer = student.construct("torch.nn.Linear", 2, 1)
    assert student.construct("llmcourse.in_kernel.requires_grad_flags", layer) == {"weight": True, "bias": True}
    assert student.construct("llmcourse.in_kernel.call_each", student.add, [([1, 2], {})]) == [3]
    assert ask(op="import", path="llmcourse.assets.load_tokenizer")["ok"]
    with pytest.raises(StudentRaised, match="PermissionError.*llmcourse.in_kernel"):
        student.construct("llmcourse.lora_tools.measure")


def test_every_path_a_check_constructs_from_is_allowed():
    """Each literal path given to student.construct in the checks passes the agent's rule (a refused one would
    only show when that check runs)."""
    root = Path(__file__).resolve().parents[1]
    files = [*(root / "llmcourse" / "checks").glob("*.py"), *(root / "llmcourse" / "checking").rglob("*.py"),
             *(root / "grader" / "checks").glob("*.py")]
    paths = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "construct"
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                paths.add(node.args[0].value)
    assert "llmcourse.in_kernel.ForwardCounter" in paths and "llmcourse.assets.load_model" in paths
    refused = sorted(p for p in paths if not _may_import(*p.rpartition(".")[::2]))
    assert not refused, refused
