"""The data format between kernel and grader: round trips, limits, and no code ever runs on read."""
import pickle

import numpy as np
import pytest
import torch

from llmcourse import wire
from llmcourse.agent import Agent


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
