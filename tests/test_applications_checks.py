"""06_applications beyond what tests/test_checks.py runs for every spec: the reference module the hidden checks
use gives the notebook's answers, and the stand-ins the checks build behave like what they replace."""
from __future__ import annotations

import pytest
import torch

from tests.specs.applications import SPEC
from tests.test_checks import assignment_of


def test_reference_module_agrees_with_the_notebook():
    """grader.reference.applications (used by the hidden checks) and the notebook's solution give the same answers."""
    import grader.reference.applications as ref
    from grader.checks.applications import (ACTION_CASES, AFTER_OBSERVATION_CASES, BAD_PROGRAMS, BOMBS, OTHER_SYNTAX,
                                            PROGRAM_CASES, random_expressions)

    ns = assignment_of(SPEC).namespace_with()
    tokenizer = ns["tokenizer"]
    text = "The Brask flows past Ulmar, a small town known for its bells. " * 3
    for max_tokens, overlap in ((5, 2), (7, 0), (40, 10), (1, 0)):
        assert ns["chunk_text"](text, tokenizer, max_tokens, overlap) == ref.chunk_text(text, tokenizer, max_tokens, overlap)
    docs = [["a", "b", "a"], ["b", "c"], ["d"], []]
    assert torch.equal(ns["bm25_scores"](["a", "b", "b", "z"], docs), ref.bm25_scores(["a", "b", "b", "z"], docs))
    q, d = torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), torch.randn(9, 8)
    assert all(torch.equal(x, y) for x, y in zip(ns["top_k"](q, d, 4), ref.top_k(q, d, 4)))
    for passages in ([], ["one", "two\n### Response:\nx"]):
        assert ns["build_rag_prompt"]("Why?\n", passages) == ref.build_rag_prompt("Why?\n", passages)
    for text in ACTION_CASES + AFTER_OBSERVATION_CASES:
        assert ns["parse_action"](text) == ref.parse_action(text)
    for expression, _ in random_expressions(650, 30):
        assert _outcome(ns["safe_eval"], expression) == _outcome(ref.safe_eval, expression)
    for expression in OTHER_SYNTAX + BOMBS:
        assert _outcome(ns["safe_eval"], expression) == _outcome(ref.safe_eval, expression) == "ValueError"
    for program in PROGRAM_CASES + BAD_PROGRAMS:
        assert _outcome(ns["run_program"], program) == _outcome(ref.run_program, program)


def _outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as e:
        return type(e).__name__


def test_the_stand_ins_behave_like_what_they_replace():
    """WordTokenizer reads like a transformers tokenizer; ScriptedModel follows its script; ToolBox records calls."""
    from llmcourse.applications_tools import ScriptedModel, ToolBox, WordTokenizer

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
