"""06_applications beyond what tests/test_checks.py runs for every spec: the stand-ins the checks build behave like
what they replace."""
from __future__ import annotations

import pytest
import torch


def test_the_stand_ins_behave_like_what_they_replace():
    """WordTokenizer reads like a transformers tokenizer; ScriptedModel follows its script; ToolBox records calls."""
    from llmcourse.in_kernel import ScriptedModel, ToolBox, WordTokenizer

    tok = WordTokenizer()
    ids = tok("a b a", add_special_tokens=False)["input_ids"]
    assert ids == [2, 3, 2] and tok("a b a").input_ids == [0, 2, 3, 2, 1] and tok.encode("b") == [0, 3, 1]
    assert tok.decode(ids) == "a b a" and tok.decode(torch.tensor([0, 2, 1]), skip_special_tokens=True) == "a"
    assert tok("a b", return_tensors="pt", add_special_tokens=False).input_ids.tolist() == [[2, 3]]
    model = ScriptedModel(["Action: lookup[x]", "Action: Finish[{observation}]"])
    assert model("p") == "Action: lookup[x]" and model("p\nObservation: 42\n") == "Action: Finish[42]"
    assert model("again") == "Action: Finish[]" and model.prompts == ["p", "p\nObservation: 42\n", "again"]
    tools = ToolBox({"lookup": {"x": 1}}, {"down": "broken"})
    assert tools["lookup"]("x") == 1 and sorted(tools) == ["down", "lookup"]
    with pytest.raises(KeyError):
        tools["lookup"]("y")
    with pytest.raises(RuntimeError):
        tools["down"]("z")
    assert tools.calls == [("lookup", "x"), ("lookup", "y"), ("down", "z")]
