"""The 06_applications checks, run in-process against the notebook's own code, wrong code and other right code.

- The reference solution (the source notebook's cells) earns every point, and each exercise's checks are
  worth exactly the points of its check cell.
- Every exercise has plausible wrong implementations (mutants); each must lose points in its exercise, and the
  visible checks alone (what a student sees before grading) must catch at least 9 in 10 of them.
- No check of an exercise notices anything wrong in an exercise it does not use (each mutant, and the exercise
  unimplemented, in turn).
- Every exercise has alternative correct implementations; they earn full marks, in their exercise and in
  every exercise that builds on it.
- Junk (code that returns no right answer) earns nothing.

The notebook's defining cells run once (loading a tokenizer takes a second); each variant then gets a copy of that
namespace in which the solution cells are defined again, so that the notebook's other functions pick the variant
up exactly as they would in a student's kernel. No mutant may hang: the checks send an evaluator harmless inputs
that a careless one gets wrong before any input that would keep it busy.
"""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
import torch

from tests.exercises import Assignment
from tests.notebooks import is_check_cell

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "source" / "06_applications" / "applications.ipynb"

DEPENDS_ON = {
    "chunk_text": set(),
    "bm25_scores": set(),
    "embed": set(),
    "top_k": set(),
    "build_rag_prompt": set(),
    "parse_action": set(),
    "react": {"parse_action"},
    "safe_eval": set(),
    "run_program": {"safe_eval"},
}

A = Assignment("06_applications", DEPENDS_ON)
EXERCISES = A.exercises
namespace_with, score = A.namespace_with, A.score


def test_dependencies_are_what_the_notebook_calls():
    A.assert_dependencies_match_the_notebook()


@pytest.fixture(scope="module", autouse=True)
def reference_results():
    yield from A.reference_results()


@pytest.mark.parametrize("exercise", EXERCISES)
def test_reference_solution_gets_full_marks(reference_results, exercise):
    A.assert_full_marks(reference_results[exercise])


def test_check_points_match_the_notebook(reference_results):
    A.assert_points_match_the_notebook(reference_results)


def test_reference_module_agrees_with_the_notebook():
    """grader.reference.applications (used by the hidden checks) and the notebook's solution give the same answers."""
    import grader.reference.applications as ref
    from grader.checks.applications import (ACTION_CASES, AFTER_OBSERVATION_CASES, BAD_PROGRAMS, BOMBS, OTHER_SYNTAX,
                                            PROGRAM_CASES, random_expressions)

    ns = namespace_with()
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


# -- wrong implementations --------------------------------------------------------------------------

GUARD = '''    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens >= 1 and 0 <= overlap < max_tokens")
'''

MUTANTS = {
    "chunk_text": {
        "drops the last window": f'''
def chunk_text(text, tokenizer, max_tokens, overlap):
{GUARD}    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    step = max_tokens - overlap
    return [tokenizer.decode(ids[s:s + max_tokens]) for s in range(0, len(ids) - max_tokens + 1, step)]
''',
        "ignores the overlap": f'''
def chunk_text(text, tokenizer, max_tokens, overlap):
{GUARD}    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(ids[s:s + max_tokens]) for s in range(0, len(ids), max_tokens)]
''',
        "a window too many at the end": f'''
def chunk_text(text, tokenizer, max_tokens, overlap):
{GUARD}    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    step = max_tokens - overlap
    return [tokenizer.decode(ids[s:s + max_tokens]) for s in range(0, len(ids), step)]
''',
        "special tokens kept": f'''
def chunk_text(text, tokenizer, max_tokens, overlap):
{GUARD}    ids = tokenizer(text)["input_ids"]
    chunks = []
    for start in range(0, len(ids), max_tokens - overlap):
        chunks.append(tokenizer.decode(ids[start:start + max_tokens]))
        if start + max_tokens >= len(ids):
            break
    return chunks
''',
        "windows of characters": f'''
def chunk_text(text, tokenizer, max_tokens, overlap):
{GUARD}    chunks = []
    for start in range(0, len(text), max_tokens - overlap):
        chunks.append(text[start:start + max_tokens])
        if start + max_tokens >= len(text):
            break
    return chunks
''',
    },
    "bm25_scores": {
        "classic IDF (can go negative)": '''
def bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75):
    lengths = torch.tensor([len(d) for d in docs_tokens], dtype=torch.float64)
    norm = k1 * (1 - b + b * lengths / lengths.mean())
    counts = [Counter(d) for d in docs_tokens]
    scores = torch.zeros(len(docs_tokens), dtype=torch.float64)
    for term in query_tokens:
        tf = torch.tensor([c[term] for c in counts], dtype=torch.float64)
        n = int((tf > 0).sum())
        scores += math.log((len(docs_tokens) - n + 0.5) / (n + 0.5)) * tf / (tf + norm)
    return scores
''',
        "no length normalisation": '''
def bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75):
    counts = [Counter(d) for d in docs_tokens]
    scores = torch.zeros(len(docs_tokens), dtype=torch.float64)
    for term in query_tokens:
        tf = torch.tensor([c[term] for c in counts], dtype=torch.float64)
        n = int((tf > 0).sum())
        scores += math.log(1 + (len(docs_tokens) - n + 0.5) / (n + 0.5)) * tf / (tf + k1)
    return scores
''',
        "length ratio upside down": '''
def bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75):
    lengths = torch.tensor([len(d) for d in docs_tokens], dtype=torch.float64)
    norm = k1 * (1 - b + b * lengths.mean() / lengths.clamp(min=1))
    counts = [Counter(d) for d in docs_tokens]
    scores = torch.zeros(len(docs_tokens), dtype=torch.float64)
    for term in query_tokens:
        tf = torch.tensor([c[term] for c in counts], dtype=torch.float64)
        n = int((tf > 0).sum())
        scores += math.log(1 + (len(docs_tokens) - n + 0.5) / (n + 0.5)) * tf / (tf + norm)
    return scores
''',
        "(k1 + 1) in the numerator": '''
def bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75):
    lengths = torch.tensor([len(d) for d in docs_tokens], dtype=torch.float64)
    norm = k1 * (1 - b + b * lengths / lengths.mean())
    counts = [Counter(d) for d in docs_tokens]
    scores = torch.zeros(len(docs_tokens), dtype=torch.float64)
    for term in query_tokens:
        tf = torch.tensor([c[term] for c in counts], dtype=torch.float64)
        n = int((tf > 0).sum())
        scores += math.log(1 + (len(docs_tokens) - n + 0.5) / (n + 0.5)) * tf * (k1 + 1) / (tf + norm)
    return scores
''',
        "repeated query words counted once": '''
def bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75):
    lengths = torch.tensor([len(d) for d in docs_tokens], dtype=torch.float64)
    norm = k1 * (1 - b + b * lengths / lengths.mean())
    counts = [Counter(d) for d in docs_tokens]
    scores = torch.zeros(len(docs_tokens), dtype=torch.float64)
    for term in set(query_tokens):
        tf = torch.tensor([c[term] for c in counts], dtype=torch.float64)
        n = int((tf > 0).sum())
        scores += math.log(1 + (len(docs_tokens) - n + 0.5) / (n + 0.5)) * tf / (tf + norm)
    return scores
''',
    },
    "embed": {
        "padding averaged too": '''
@torch.no_grad()
def embed(texts, model, tokenizer):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    return F.normalize(model(**enc, output_hidden_states=True).hidden_states[-1].mean(dim=1), dim=-1)
''',
        "first token only": '''
@torch.no_grad()
def embed(texts, model, tokenizer):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    return F.normalize(model(**enc, output_hidden_states=True).hidden_states[-1][:, 0], dim=-1)
''',
        "not normalised": '''
@torch.no_grad()
def embed(texts, model, tokenizer):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)
''',
        "normalised over the texts": '''
@torch.no_grad()
def embed(texts, model, tokenizer):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=0)
''',
        "the embedding layer's output": '''
@torch.no_grad()
def embed(texts, model, tokenizer):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    hidden = model(**enc, output_hidden_states=True).hidden_states[0]
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
''',
    },
    "top_k": {
        "dot product, not normalised": '''
def top_k(query_vecs, doc_vecs, k):
    scores, indices = torch.topk(query_vecs @ doc_vecs.T, min(k, doc_vecs.shape[0]), dim=-1)
    return scores, indices
''',
        "only the documents normalised": '''
def top_k(query_vecs, doc_vecs, k):
    scores, indices = torch.topk(query_vecs @ F.normalize(doc_vecs, dim=-1).T, min(k, doc_vecs.shape[0]), dim=-1)
    return scores, indices
''',
        "worst first": '''
def top_k(query_vecs, doc_vecs, k):
    sims = F.normalize(query_vecs, dim=-1) @ F.normalize(doc_vecs, dim=-1).T
    scores, indices = torch.topk(sims, min(k, doc_vecs.shape[0]), dim=-1, largest=False)
    return scores, indices
''',
        "k not clamped": '''
def top_k(query_vecs, doc_vecs, k):
    sims = F.normalize(query_vecs, dim=-1) @ F.normalize(doc_vecs, dim=-1).T
    scores, indices = torch.topk(sims, k, dim=-1)
    return scores, indices
''',
    },
    "build_rag_prompt": {
        "passages kept as they are": '''
def build_rag_prompt(question, passages):
    numbered = "\\n".join(f"[{i}] {p}" for i, p in enumerate(passages, 1))
    return format_instruction(RAG_INSTRUCTION, f"{numbered}\\nQuestion: {question}")
''',
        "numbered from 0": '''
def build_rag_prompt(question, passages):
    numbered = "\\n".join(f"[{i}] {' '.join(p.split())}" for i, p in enumerate(passages))
    return format_instruction(RAG_INSTRUCTION, f"{numbered}\\nQuestion: {' '.join(question.split())}")
''',
        "### removed instead of the newlines": '''
def build_rag_prompt(question, passages):
    numbered = "\\n".join(f"[{i}] {p.replace('###', '')}" for i, p in enumerate(passages, 1))
    return format_instruction(RAG_INSTRUCTION, f"{numbered}\\nQuestion: {question.replace('###', '')}")
''',
        "the question left as it is": '''
def build_rag_prompt(question, passages):
    numbered = "\\n".join(f"[{i}] {' '.join(p.split())}" for i, p in enumerate(passages, 1))
    return format_instruction(RAG_INSTRUCTION, f"{numbered}\\nQuestion: {question}")
''',
    },
    "parse_action": {
        "acts on lines after an observation": '''
def parse_action(text):
    for line in text.split("\\n"):
        m = re.match(r"^(?:Action:\\s*)?(\\w+)\\[(.*)\\]\\s*$", line.strip())
        if m and (line.strip().startswith("Action:") or m.group(1) == "Finish"):
            tool, argument = m.group(1), m.group(2).strip()
            return ("finish", argument) if tool.lower() == "finish" else (tool, argument)
    return None
''',
        "Finish kept capitalised": '''
def parse_action(text):
    for line in text.split("\\n"):
        if line.startswith("Observation:"):
            return None
        m = re.match(r"^(?:Action:\\s*)?(\\w+)\\[(.*)\\]\\s*$", line.strip())
        if m and (line.strip().startswith("Action:") or m.group(1) == "Finish"):
            return m.group(1), m.group(2).strip()
    return None
''',
        "the last action, not the first": '''
def parse_action(text):
    found = None
    for line in text.split("\\n"):
        if line.startswith("Observation:"):
            break
        m = re.match(r"^(?:Action:\\s*)?(\\w+)\\[(.*)\\]\\s*$", line.strip())
        if m and (line.strip().startswith("Action:") or m.group(1) == "Finish"):
            tool, argument = m.group(1), m.group(2).strip()
            found = ("finish", argument) if tool.lower() == "finish" else (tool, argument)
    return found
''',
        "an action anywhere in the text": '''
def parse_action(text):
    m = re.search(r"(?:Action:\\s*(\\w+)|(Finish))\\[(.*?)\\]", text)
    if m is None:
        return None
    tool = m.group(1) or m.group(2)
    return ("finish", m.group(3).strip()) if tool.lower() == "finish" else (tool, m.group(3).strip())
''',
        "bare Finish lines ignored": '''
def parse_action(text):
    for line in text.split("\\n"):
        if line.startswith("Observation:"):
            return None
        m = re.match(r"^Action:\\s*(\\w+)\\[(.*)\\]\\s*$", line.strip())
        if m:
            tool, argument = m.group(1), m.group(2).strip()
            return ("finish", argument) if tool.lower() == "finish" else (tool, argument)
    return None
''',
    },
    "react": {
        "a tool error stops the loop": '''
def react(model_fn, question, tools, max_steps=6):
    prompt, trace = react_prompt(question), []
    for _ in range(max_steps):
        text = model_fn(prompt).split("\\nObservation:")[0]
        action = parse_action(text)
        if action is None or action[0] == "finish":
            trace.append({"text": text, "tool": action and action[0], "argument": action and action[1],
                          "observation": None})
            return (action[1] if action else None), trace
        observation = str(tools[action[0]](action[1]))
        trace.append({"text": text, "tool": action[0], "argument": action[1], "observation": observation})
        prompt += text + f"\\nObservation: {observation}\\n"
    return None, trace
''',
        "no step limit": '''
def react(model_fn, question, tools, max_steps=6):
    prompt, trace = react_prompt(question), []
    while True:
        text = model_fn(prompt).split("\\nObservation:")[0]
        action = parse_action(text)
        if action is None or action[0] == "finish":
            trace.append({"text": text, "tool": action and action[0], "argument": action and action[1],
                          "observation": None})
            return (action[1] if action else None), trace
        try:
            observation = str(tools[action[0]](action[1]))
        except Exception as e:
            observation = f"Error: {e}"
        trace.append({"text": text, "tool": action[0], "argument": action[1], "observation": observation})
        prompt += text + f"\\nObservation: {observation}\\n"
''',
        "one call too many": '''
def react(model_fn, question, tools, max_steps=6):
    prompt, trace = react_prompt(question), []
    for _ in range(max_steps + 1):
        text = model_fn(prompt).split("\\nObservation:")[0]
        action = parse_action(text)
        if action is None or action[0] == "finish":
            trace.append({"text": text, "tool": action and action[0], "argument": action and action[1],
                          "observation": None})
            return (action[1] if action else None), trace
        try:
            observation = str(tools[action[0]](action[1]))
        except Exception as e:
            observation = f"Error: {e}"
        trace.append({"text": text, "tool": action[0], "argument": action[1], "observation": observation})
        prompt += text + f"\\nObservation: {observation}\\n"
    return None, trace
''',
        "the invented observation kept": '''
def react(model_fn, question, tools, max_steps=6):
    prompt, trace = react_prompt(question), []
    for _ in range(max_steps):
        text = model_fn(prompt)
        action = parse_action(text)
        if action is None or action[0] == "finish":
            trace.append({"text": text, "tool": action and action[0], "argument": action and action[1],
                          "observation": None})
            return (action[1] if action else None), trace
        try:
            observation = str(tools[action[0]](action[1]))
        except Exception as e:
            observation = f"Error: {e}"
        trace.append({"text": text, "tool": action[0], "argument": action[1], "observation": observation})
        prompt += text + f"\\nObservation: {observation}\\n"
    return None, trace
''',
        "the prompt never grows": '''
def react(model_fn, question, tools, max_steps=6):
    prompt, trace = react_prompt(question), []
    for _ in range(max_steps):
        text = model_fn(prompt).split("\\nObservation:")[0]
        action = parse_action(text)
        if action is None or action[0] == "finish":
            trace.append({"text": text, "tool": action and action[0], "argument": action and action[1],
                          "observation": None})
            return (action[1] if action else None), trace
        try:
            observation = str(tools[action[0]](action[1]))
        except Exception as e:
            observation = f"Error: {e}"
        trace.append({"text": text, "tool": action[0], "argument": action[1], "observation": observation})
    return None, trace
''',
        "an unknown tool raises": '''
def react(model_fn, question, tools, max_steps=6):
    prompt, trace = react_prompt(question), []
    for _ in range(max_steps):
        text = model_fn(prompt).split("\\nObservation:")[0]
        action = parse_action(text)
        if action is None or action[0] == "finish":
            trace.append({"text": text, "tool": action and action[0], "argument": action and action[1],
                          "observation": None})
            return (action[1] if action else None), trace
        tool = tools[action[0]]
        try:
            observation = str(tool(action[1]))
        except Exception as e:
            observation = f"Error: {e}"
        trace.append({"text": text, "tool": action[0], "argument": action[1], "observation": observation})
        prompt += text + f"\\nObservation: {observation}\\n"
    return None, trace
''',
    },
    "safe_eval": {
        "eval without builtins": '''
def safe_eval(expression):
    try:
        return eval(expression, {"__builtins__": {}})
    except (SyntaxError, ZeroDivisionError) as e:
        raise ValueError(str(e)) from None
''',
        "math's constants allowed": '''
_SOLUTION_SAFE_EVAL = safe_eval

def safe_eval(expression):
    for name in ("pi", "e", "tau"):
        expression = re.sub(rf"\\b{name}\\b", repr(getattr(math, name)), expression)
    return _SOLUTION_SAFE_EVAL(expression)
''',
        "bools accepted as numbers": '''
_SOLUTION_SAFE_EVAL = safe_eval

def safe_eval(expression):
    if isinstance(expression, str):
        expression = re.sub(r"\\bTrue\\b", "1", re.sub(r"\\bFalse\\b", "0", expression))
    return _SOLUTION_SAFE_EVAL(expression)
''',
        "result bound only (the power is computed first)": '''
def safe_eval(expression):
    if len(expression) > MAX_LENGTH:
        raise ValueError("too long")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(e.msg) from None
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}

    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            result = node.value
        elif isinstance(node, ast.BinOp) and type(node.op) in ops:
            try:
                result = ops[type(node.op)](value(node.left), value(node.right))
            except (ZeroDivisionError, OverflowError) as e:
                raise ValueError(str(e)) from None
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            result = value(node.operand) * (-1 if isinstance(node.op, ast.USub) else 1)
        else:
            raise ValueError("not arithmetic")
        if isinstance(result, complex) or not abs(result) <= MAX_ABS:
            raise ValueError("too large")
        return result

    return value(tree.body)
''',
        "no bounds at all": '''
def safe_eval(expression):
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(e.msg) from None
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}

    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            try:
                return ops[type(node.op)](value(node.left), value(node.right))
            except ZeroDivisionError:
                raise ValueError("division by zero") from None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            return value(node.operand) * (-1 if isinstance(node.op, ast.USub) else 1)
        raise ValueError("not arithmetic")

    return value(tree.body)
''',
        "division by zero not caught": '''
_SOLUTION_SAFE_EVAL = safe_eval

def safe_eval(expression):
    try:
        return _SOLUTION_SAFE_EVAL(expression)
    except ValueError as e:
        if "division by zero" in str(e):
            raise ZeroDivisionError("division by zero") from None
        raise
''',
        "no length bound": '''
MAX_LENGTH = 10 ** 9
''',
    },
    "run_program": {
        "eval of each line": '''
def run_program(program):
    variables = {}
    for line in program.split("\\n"):
        line = line.split("#", 1)[0].strip()
        if line:
            name, expression = line.split("=", 1)
            variables[name.strip()] = eval(expression, {"__builtins__": {}}, dict(variables))
    if "answer" not in variables:
        raise ValueError("no answer")
    return variables
''',
        "exec of the whole program": '''
def run_program(program):
    variables = {}
    exec(program, {"__builtins__": {}}, variables)
    if "answer" not in variables:
        raise ValueError("no answer")
    return variables
''',
        "values substituted without parentheses": '''
def run_program(program):
    variables = {}
    for line in program.split("\\n"):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z_]\\w*)\\s*=\\s*(.+)", line)
        if not m:
            raise ValueError(f"not an assignment: {line!r}")
        def substitute(match):
            if match.group(0) not in variables:
                raise ValueError(f"{match.group(0)} is not defined")
            return repr(variables[match.group(0)])
        variables[m.group(1)] = safe_eval(re.sub(r"\\b[A-Za-z_]\\w*\\b", substitute, m.group(2)))
    if "answer" not in variables:
        raise ValueError("no answer")
    return variables
''',
        "names replaced inside other names": '''
def run_program(program):
    variables = {}
    for line in program.split("\\n"):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z_]\\w*)\\s*=\\s*(.+)", line)
        if not m:
            raise ValueError(f"not an assignment: {line!r}")
        expression = m.group(2)
        for name, value in variables.items():
            expression = expression.replace(name, f"({value!r})")
        variables[m.group(1)] = safe_eval(expression)
    if "answer" not in variables:
        raise ValueError("no answer")
    return variables
''',
        "answer not required": '''
_SOLUTION_RUN_PROGRAM = run_program

def run_program(program):
    try:
        return _SOLUTION_RUN_PROGRAM(program)
    except ValueError as e:
        if "answer" in str(e):
            return _SOLUTION_RUN_PROGRAM(program + "\\nanswer = 0")
        raise
''',
        "only the answer returned": '''
_SOLUTION_RUN_PROGRAM = run_program

def run_program(program):
    return {"answer": _SOLUTION_RUN_PROGRAM(program)["answer"]}
''',
        "comment lines rejected": '''
_SOLUTION_RUN_PROGRAM = run_program

def run_program(program):
    if any(line.strip().startswith("#") for line in program.split("\\n")):
        raise ValueError("a line is not `name = expression`")
    return _SOLUTION_RUN_PROGRAM(program)
''',
    },
}

MUTANT_CASES = [pytest.param(exercise, name, source, id=f"{exercise}: {name}")
                for exercise, mutants in MUTANTS.items() for name, source in mutants.items()]


def test_every_exercise_has_three_mutants():
    assert set(MUTANTS) == set(EXERCISES)
    assert all(len(m) >= 3 for m in MUTANTS.values())


SPECIFIC_HINTS = [  # (exercise, mutant, words that the hint of some failing check must contain)
    ("chunk_text", "drops the last window", "last window is missing"),
    ("chunk_text", "a window too many at the end", "extra windows"),
    ("chunk_text", "special tokens kept", "add_special_tokens=False"),
    ("chunk_text", "windows of characters", "characters"),
    ("bm25_scores", "classic IDF (can go negative)", "never goes negative"),
    ("bm25_scores", "(k1 + 1) in the numerator", "(k1 + 1)"),
    ("bm25_scores", "no length normalisation", "length"),
    ("bm25_scores", "length ratio upside down", "upside down"),
    ("bm25_scores", "repeated query words counted once", "repeated"),
    ("embed", "padding averaged too", "padd"),
    ("embed", "first token only", "first token"),
    ("embed", "not normalised", "normalise"),
    ("embed", "normalised over the texts", "dim=-1"),
    ("embed", "the embedding layer's output", "hidden_states[-1]"),
    ("top_k", "dot product, not normalised", "Normalise both"),
    ("top_k", "only the documents normalised", "Normalise the queries"),
    ("top_k", "worst first", "best first"),
    ("top_k", "k not clamped", "min(k, n_docs)"),
    ("build_rag_prompt", "passages kept as they are", "newline"),
    ("build_rag_prompt", "numbered from 0", "from 1"),
    ("parse_action", "acts on lines after an observation", "Observation:"),
    ("parse_action", "Finish kept capitalised", "whatever its capitalisation"),
    ("react", "a tool error stops the loop", "Error: ..."),
    ("react", "no step limit", "max_steps"),
    ("react", "one call too many", "max_steps"),
    ("react", "the invented observation kept", "cut it off"),
    ("safe_eval", "bools accepted as numbers", "bool"),
    ("safe_eval", "result bound only (the power is computed first)", "exponent"),
    ("safe_eval", "division by zero not caught", "ZeroDivisionError"),
    ("run_program", "values substituted without parentheses", "parentheses"),
    ("run_program", "names replaced inside other names", "whole names"),
]
EXPECTED_HINT = {(exercise, mutant): words for exercise, mutant, words in SPECIFIC_HINTS}


@pytest.mark.parametrize("exercise, name, source", MUTANT_CASES)
def test_mutant_loses_points(exercise, name, source):
    A.assert_mutant_loses_points(exercise, name, source, EXPECTED_HINT.get((exercise, name)))


def test_specific_hints_refer_to_real_mutants():
    assert all(mutant in MUTANTS[exercise] for exercise, mutant, _ in SPECIFIC_HINTS)


def test_visible_checks_catch_nine_in_ten_mutants():
    A.assert_visible_checks_catch_nine_in_ten(MUTANTS)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_an_exercise_keeps_its_points_when_what_it_does_not_use_is_broken(exercise):
    # Every exercise `exercise` does not use is made unimplemented, then given each of its mutants in turn (all of
    # them broken at once, which asks the same question as one at a time).
    A.assert_spared_by_what_it_does_not_use(
        exercise, {e: [("not implemented", A.not_implemented(e)), *MUTANTS[e].items()] for e in EXERCISES})


# -- junk: no right answer, no points ----------------------------------------------------------------
@pytest.mark.parametrize("exercise, what, source", [pytest.param(*case, id=f"{case[0]}: {case[1]}")
                                                     for case in A.junk_cases()])
def test_junk_scores_nothing(exercise, what, source):
    """A function that returns junk or raises earns no check's points, side properties (inputs unchanged, shape,
    errors raised) included."""
    A.assert_junk_scores_nothing(exercise, what, source)


# -- other correct implementations ------------------------------------------------------------------

ALTERNATIVES = {
    "chunk_text": {
        "a while loop": f'''
def chunk_text(text, tokenizer, max_tokens, overlap):
{GUARD}    ids = tokenizer.encode(text, add_special_tokens=False)
    chunks, start = [], 0
    while start < len(ids):
        end = min(start + max_tokens, len(ids))
        chunks.append(tokenizer.decode(ids[start:end]))
        if end == len(ids):
            break
        start = end - overlap
    return chunks
''',
        "the number of windows first, then batch_decode": f'''
def chunk_text(text, tokenizer, max_tokens, overlap):
{GUARD}    ids = tokenizer(text, add_special_tokens=False).input_ids
    if not ids:
        return []
    step = max_tokens - overlap
    count = 1 if len(ids) <= max_tokens else 1 + math.ceil((len(ids) - max_tokens) / step)
    return tokenizer.batch_decode([ids[i * step:i * step + max_tokens] for i in range(count)])
''',
        "a tensor of ids": f'''
def chunk_text(text, tokenizer, max_tokens, overlap):
{GUARD}    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    starts = list(range(0, max(len(ids) - overlap, 0), max_tokens - overlap))
    starts = [s for i, s in enumerate(starts) if i == 0 or starts[i - 1] + max_tokens < len(ids)]
    return [tokenizer.decode(ids[s:s + max_tokens]) for s in starts]
''',
    },
    "bm25_scores": {
        "plain Python floats (a float32 tensor)": '''
def bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75):
    N = len(docs_tokens)
    avgdl = sum(len(d) for d in docs_tokens) / N
    df = Counter(t for d in docs_tokens for t in set(d))
    scores = []
    for d in docs_tokens:
        tf = Counter(d)
        s = 0.0
        for t in query_tokens:
            idf = math.log(1 + (N - df[t] + 0.5) / (df[t] + 0.5))
            s += idf * tf[t] / (tf[t] + k1 * (1 - b + b * len(d) / avgdl))
        scores.append(s)
    return torch.tensor(scores)
''',
        "a term-document matrix": '''
def bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75):
    vocab = {t: i for i, t in enumerate(dict.fromkeys(t for d in docs_tokens for t in d))}
    tf = torch.zeros(len(docs_tokens), len(vocab) + 1, dtype=torch.float64)  # the last column: unknown words
    for i, d in enumerate(docs_tokens):
        for t in d:
            tf[i, vocab[t]] += 1
    n = (tf > 0).sum(0)
    idf = torch.log(1 + (len(docs_tokens) - n + 0.5) / (n + 0.5))
    lengths = tf.sum(1, keepdim=True)
    per_term = idf * tf / (tf + k1 * (1 - b + b * lengths / lengths.mean()))
    columns = torch.tensor([vocab.get(t, len(vocab)) for t in query_tokens], dtype=torch.long)
    return per_term[:, columns].sum(1)
''',
    },
    "embed": {
        "einsum, then normalise the sum": '''
@torch.no_grad()
def embed(texts, model, tokenizer):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                   output_hidden_states=True).hidden_states[-1]
    summed = torch.einsum("nld,nl->nd", hidden, enc["attention_mask"].float())
    return summed / summed.norm(dim=-1, keepdim=True)
''',
        "one text at a time": '''
def embed(texts, model, tokenizer):
    rows = []
    for text in texts:
        with torch.no_grad():
            out = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True)
        rows.append(out.hidden_states[-1][0].mean(dim=0))
    return F.normalize(torch.stack(rows), dim=-1)
''',
        "the base model's last_hidden_state": '''
@torch.no_grad()
def embed(texts, model, tokenizer):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    hidden = model.base_model(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].to(hidden.dtype)
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), p=2, dim=1)
''',
    },
    "top_k": {
        "einsum and argsort": '''
def top_k(query_vecs, doc_vecs, k):
    q = query_vecs / query_vecs.norm(dim=-1, keepdim=True)
    d = doc_vecs / doc_vecs.norm(dim=-1, keepdim=True)
    sims = torch.einsum("qd,nd->qn", q, d)
    order = sims.argsort(dim=-1, descending=True)[:, :k]
    return sims.gather(-1, order), order
''',
        "float64 and sort": '''
def top_k(query_vecs, doc_vecs, k):
    sims = F.normalize(query_vecs.double(), dim=-1) @ F.normalize(doc_vecs.double(), dim=-1).T
    scores, indices = sims.sort(dim=-1, descending=True)
    k = min(k, doc_vecs.shape[0])
    return scores[:, :k].float(), indices[:, :k]
''',
        "a plain tuple from topk": '''
def top_k(query_vecs, doc_vecs, k):
    sims = F.cosine_similarity(query_vecs[:, None, :], doc_vecs[None, :, :], dim=-1)
    scores, indices = sims.topk(min(k, len(doc_vecs)))
    return scores, indices
''',
    },
    "build_rag_prompt": {
        "a regular expression, then rag_text": '''
from llmcourse.applications_formats import rag_text as _rag_text

def build_rag_prompt(question, passages):
    def clean(text):
        return re.sub(r"\\s*[\\r\\n]+\\s*", " ", text).strip()
    return _rag_text(clean(question), [clean(p) for p in passages])
''',
        "the template written out": '''
def build_rag_prompt(question, passages):
    lines = [f"[{i + 1}] " + p.replace("\\r", " ").replace("\\n", " ").strip() for i, p in enumerate(passages)]
    lines.append("Question: " + question.replace("\\r", " ").replace("\\n", " ").strip())
    return "### Instruction:\\n" + RAG_INSTRUCTION + "\\n\\n### Input:\\n" + "\\n".join(lines) + "\\n\\n### Response:\\n"
''',
    },
    "parse_action": {
        "string methods, no regular expression": '''
def parse_action(text):
    for line in text.split("\\n"):
        if line.startswith("Observation:"):
            return None
        line = line.strip()
        if line.startswith("Action:"):
            body = line[len("Action:"):].strip()
        elif line.startswith("Finish["):
            body = line
        else:
            continue
        tool, bracket, argument = body.partition("[")
        if not bracket or not body.endswith("]") or not tool.isidentifier():
            continue
        argument = argument[:-1].strip()
        return ("finish", argument) if tool.lower() == "finish" else (tool, argument)
    return None
''',
        "one multiline regular expression": '''
_LINE = re.compile(r"^(?:(Observation:).*|Action:[ \\t]*(\\w+)\\[(.*)\\]|(Finish)\\[(.*)\\])[ \\t]*$", re.MULTILINE)

def parse_action(text):
    for m in _LINE.finditer(text):
        if m.group(1):
            return None
        tool, argument = (m.group(2), m.group(3)) if m.group(2) else (m.group(4), m.group(5))
        return ("finish", argument.strip()) if tool.lower() == "finish" else (tool, argument.strip())
    return None
''',
    },
    "react": {
        "a while loop and a list of prompt parts": '''
def react(model_fn, question, tools, max_steps=6):
    parts, trace, steps = [react_prompt(question)], [], 0
    while steps < max_steps:
        steps += 1
        text = model_fn("".join(parts))
        cut = text.find("\\nObservation:")
        if cut != -1:
            text = text[:cut]
        action = parse_action(text)
        step = {"text": text, "tool": None, "argument": None, "observation": None}
        trace.append(step)
        if action is None:
            return None, trace
        step["tool"], step["argument"] = action
        if action[0] == "finish":
            return action[1], trace
        tool = tools.get(action[0])
        try:
            if tool is None:
                raise KeyError(f"there is no tool called {action[0]}")
            observation = f"{tool(action[1])}"
        except Exception as error:
            observation = f"Error: {error}"
        step["observation"] = observation
        parts.append(f"{text}\\nObservation: {observation}\\n")
    return None, trace
''',
        "partition and early returns": '''
def react(model_fn, question, tools, max_steps=6):
    prompt, trace = react_prompt(question), []
    for _ in range(max_steps):
        text, _, _ = model_fn(prompt).partition("\\nObservation:")
        action = parse_action(text)
        tool, argument = action if action else (None, None)
        if tool is None or tool == "finish":
            trace.append(dict(text=text, tool=tool, argument=argument, observation=None))
            return argument, trace
        if tool in tools:
            try:
                observation = str(tools[tool](argument))
            except Exception as error:
                observation = f"Error: {type(error).__name__}: {error}"
        else:
            observation = f"Error: no tool named {tool}"
        trace.append(dict(text=text, tool=tool, argument=argument, observation=observation))
        prompt = f"{prompt}{text}\\nObservation: {observation}\\n"
    return None, trace
''',
    },
    "safe_eval": {
        "match statements, a size estimate and other bounds": '''
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}

def safe_eval(expression):
    if not isinstance(expression, str) or len(expression) > 1000:
        raise ValueError("give a string of at most 1000 characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as error:
        raise ValueError(f"cannot parse this: {type(error).__name__}") from None
    return _calculate(tree.body)

def _calculate(node):
    match node:
        case ast.Constant(value=v) if type(v) in (int, float):
            result = v
        case ast.UnaryOp(op=ast.USub(), operand=x):
            result = -_calculate(x)
        case ast.UnaryOp(op=ast.UAdd(), operand=x):
            result = +_calculate(x)
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _OPS:
            a, b = _calculate(left), _calculate(right)
            if isinstance(op, ast.Pow) and (abs(b) > 1000 or (abs(a) > 1 and b * math.log10(abs(a)) > 300)):
                raise ValueError("this power is too large")
            try:
                result = _OPS[type(op)](a, b)
            except (ZeroDivisionError, OverflowError) as error:
                raise ValueError(str(error)) from None
        case _:
            raise ValueError(f"{type(node).__name__} is not arithmetic")
    if isinstance(result, complex) or not abs(result) <= 1e300:
        raise ValueError("the result is too large or not real")
    return result
''',
        "an explicit stack, floats everywhere": '''
_FLOAT_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}

def safe_eval(expression):
    if len(expression) > 500:
        raise ValueError("the expression is too long")
    try:
        root = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError as error:
        raise ValueError(f"syntax error: {error.msg}") from None
    values, todo = [], [(root, False)]
    while todo:  # post-order: a node's operands are computed before the node
        node, ready = todo.pop()
        if isinstance(node, ast.Constant):
            if type(node.value) not in (int, float) or not abs(node.value) <= 1e20:
                raise ValueError(f"{node.value!r} is not a number of at most 1e20")
            values.append(float(node.value))
        elif isinstance(node, ast.UnaryOp) and type(node.op) in (ast.UAdd, ast.USub):
            if not ready:
                todo += [(node, True), (node.operand, False)]
                continue
            values.append(-values.pop() if isinstance(node.op, ast.USub) else values.pop())
        elif isinstance(node, ast.BinOp) and type(node.op) in _FLOAT_OPS:
            if not ready:
                todo += [(node, True), (node.right, False), (node.left, False)]
                continue
            b, a = values.pop(), values.pop()
            if isinstance(node.op, ast.Pow) and abs(b) > 64:
                raise ValueError("the exponent is larger than 64")
            try:
                values.append(_FLOAT_OPS[type(node.op)](a, b))
            except (ZeroDivisionError, OverflowError) as error:
                raise ValueError(str(error)) from None
        else:
            raise ValueError(f"{type(node).__name__} is not allowed")
        if isinstance(values[-1], complex) or not abs(values[-1]) <= 1e20:
            raise ValueError("a value is larger than 1e20 (or not a real number)")
    return values[0]
''',
    },
    "run_program": {
        "ast for the shape, names replaced at their columns": '''
def run_program(program):
    variables = {}
    for number, raw in enumerate(program.split("\\n"), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            body = ast.parse(line).body
        except SyntaxError:
            raise ValueError(f"line {number} is not Python") from None
        if (len(body) != 1 or not isinstance(body[0], ast.Assign) or len(body[0].targets) != 1
                or not isinstance(body[0].targets[0], ast.Name)):
            raise ValueError(f"line {number} is not `name = expression`")
        value = body[0].value
        text = line
        for node in sorted((n for n in ast.walk(value) if isinstance(n, ast.Name)), key=lambda n: -n.col_offset):
            if node.id not in variables:
                raise ValueError(f"line {number}: {node.id} is not defined")
            text = text[:node.col_offset] + f"({variables[node.id]!r})" + text[node.end_col_offset:]
        variables[body[0].targets[0].id] = safe_eval(text[value.col_offset:])
    if "answer" not in variables:
        raise ValueError("the program never sets answer")
    return variables
''',
        "the tokenize module for names": '''
import io as _io
import tokenize as _tokenize

def run_program(program):
    variables = {}
    for line in program.splitlines():
        line = line.partition("#")[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z_]\\w*)\\s*=\\s*(.+)", line)
        if m is None:
            raise ValueError(f"not an assignment: {line}")
        parts = []
        try:
            for token in _tokenize.generate_tokens(_io.StringIO(m.group(2)).readline):
                if token.type == _tokenize.NAME:
                    if token.string not in variables:
                        raise ValueError(f"{token.string} is used before it is set")
                    parts.append(f"({variables[token.string]!r})")
                else:
                    parts.append(token.string)
        except _tokenize.TokenError as error:
            raise ValueError(str(error)) from None
        variables[m.group(1)] = safe_eval(" ".join(parts).strip())
    if "answer" not in variables:
        raise ValueError("answer is never set")
    return variables
''',
    },
}

ALTERNATIVE_CASES = [pytest.param(exercise, name, source, id=f"{exercise}: {name}")
                     for exercise, alternatives in ALTERNATIVES.items() for name, source in alternatives.items()]


def test_every_exercise_has_two_alternatives():
    assert set(ALTERNATIVES) == set(EXERCISES)
    assert all(len(a) >= 2 for a in ALTERNATIVES.values())


@pytest.mark.parametrize("exercise, name, source", ALTERNATIVE_CASES)
def test_alternative_solution_gets_full_marks(exercise, name, source):
    A.assert_alternative_gets_full_marks(exercise, name, source)


# -- what ships to students -------------------------------------------------------------------------

def test_visible_checks_hold_no_reference_solution():
    import grader.reference.applications as reference

    solution_names = {name for name, obj in vars(reference).items()
                      if not name.startswith("_") and getattr(obj, "__module__", None) == reference.__name__}
    assert {"bm25_scores", "react", "safe_eval", "run_program"} <= solution_names
    path = ROOT / "llmcourse" / "checks" / "applications.py"
    tree = ast.parse(path.read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not any(name.split(".")[0] == "grader" for name in imported), imported
    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert not defined & solution_names, defined & solution_names


def test_check_cells_call_their_exercise():
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    solutions = {c.metadata["nbgrader"]["grade_id"] for c in code if c.metadata.get("nbgrader", {}).get("solution")}
    assert solutions == set(EXERCISES)
    for cell in code:
        if is_check_cell(cell):
            exercise = cell.metadata["nbgrader"]["grade_id"].removeprefix("check_")
            assert cell.source == (f'check("06_applications/{exercise}")\n### BEGIN HIDDEN TESTS\n'
                                   f'check("06_applications/{exercise}", hidden=True)\n### END HIDDEN TESTS')
