"""Reference solutions of 06_applications, used by the hidden checks (never shipped to students).

Conventions (the notebook states them the same way):
- chunks are windows of token ids from `tokenizer(text, add_special_tokens=False)`, decoded; a window starts every
  `max_tokens - overlap` tokens, and the last window is the first one that reaches the end of the text;
- BM25 is the Lucene variant (the one `bm25s.BM25(method="lucene")` computes): a non-negative IDF and no (k1 + 1)
  factor; every query token counts, repeated ones as often as they appear;
- an embedding is the mean of the last hidden states over the attention mask's tokens, L2-normalised;
- a ReAct step cuts the model's text at its first "\\nObservation:" and appends the real one as
  "\\nObservation: ...\\n"; a tool's error becomes an observation that starts with "Error:".
"""
from __future__ import annotations

import ast
import math
import operator
import re
from collections import Counter

import torch
import torch.nn.functional as F

from llmcourse.applications_formats import RAG_INSTRUCTION, react_prompt
from llmcourse.assets import format_instruction


def chunk_text(text, tokenizer, max_tokens, overlap):
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError(f"need max_tokens >= 1 and 0 <= overlap < max_tokens, got {max_tokens} and {overlap}")
    return [tokenizer.decode(window) for window in token_windows(
        tokenizer(text, add_special_tokens=False)["input_ids"], max_tokens, overlap)]


def token_windows(ids, max_tokens, overlap):
    """The windows of token ids that chunk_text decodes."""
    step = max_tokens - overlap
    windows = []
    for start in range(0, len(ids), step):
        windows.append(list(ids[start:start + max_tokens]))
        if start + max_tokens >= len(ids):  # this window reached the end of the text
            break
    return windows


def bm25_scores(query_tokens, docs_tokens, k1=1.5, b=0.75):
    n_docs = len(docs_tokens)
    lengths = torch.tensor([len(doc) for doc in docs_tokens], dtype=torch.float64)
    norm = k1 * (1 - b + b * lengths / lengths.mean())  # (n_docs,)
    counts = [Counter(doc) for doc in docs_tokens]
    scores = torch.zeros(n_docs, dtype=torch.float64)
    for term in query_tokens:
        tf = torch.tensor([c[term] for c in counts], dtype=torch.float64)  # (n_docs,)
        n = int((tf > 0).sum())
        scores += idf(n_docs, n) * tf / (tf + norm)
    return scores


def idf(n_docs, n):
    """Lucene's IDF: never negative, even for a word in every document."""
    return math.log(1 + (n_docs - n + 0.5) / (n + 0.5))


@torch.no_grad()
def embed(texts, model, tokenizer):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True).to(model.device)
    hidden = model(**enc, output_hidden_states=True).hidden_states[-1]  # (n, L, d)
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (n, L, 1)
    mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1)  # (n, d)
    return F.normalize(mean, dim=-1)


def top_k(query_vecs, doc_vecs, k):
    q = F.normalize(query_vecs, dim=-1)
    d = F.normalize(doc_vecs, dim=-1)
    scores, indices = torch.topk(q @ d.T, min(k, d.shape[0]), dim=-1)  # (n_queries, k) each
    return scores, indices


def one_line(text):
    return " ".join(text.split())


def build_rag_prompt(question, passages):
    numbered = "\n".join(f"[{i}] {one_line(p)}" for i, p in enumerate(passages, 1))
    return format_instruction(RAG_INSTRUCTION, f"{numbered}\nQuestion: {one_line(question)}")


_ACTION = re.compile(r"^(?:Action:\s*)?(\w+)\[(.*)\]\s*$")


def parse_action(text):
    for line in text.split("\n"):
        if line.startswith("Observation:"):
            return None  # whatever follows was not written as an action of this step
        m = _ACTION.match(line.strip())
        if m and (line.strip().startswith("Action:") or m.group(1) == "Finish"):
            tool, argument = m.group(1), m.group(2).strip()
            return ("finish", argument) if tool.lower() == "finish" else (tool, argument)
    return None


def react(model_fn, question, tools, max_steps=6):
    prompt = react_prompt(question)
    trace = []
    for _ in range(max_steps):
        text = model_fn(prompt).split("\nObservation:")[0]  # the model may invent an observation: drop it
        action = parse_action(text)
        if action is None:
            trace.append({"text": text, "tool": None, "argument": None, "observation": None})
            return None, trace
        tool, argument = action
        if tool == "finish":
            trace.append({"text": text, "tool": "finish", "argument": argument, "observation": None})
            return argument, trace
        if tool not in tools:
            observation = f"Error: unknown tool {tool!r}; the tools are {', '.join(sorted(tools))}"
        else:
            try:
                observation = str(tools[tool](argument))
            except Exception as e:
                observation = f"Error: {type(e).__name__}: {e}"
        observation = " ".join(observation.split())
        trace.append({"text": text, "tool": tool, "argument": argument, "observation": observation})
        prompt += text.rstrip() + f"\nObservation: {observation}\n"
    return None, trace


MAX_LENGTH = 200  # characters
MAX_EXPONENT = 100  # for **
MAX_ABS = 10 ** 30  # any intermediate value
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def safe_eval(expression):
    if not isinstance(expression, str):
        raise ValueError("the expression must be a string")
    if len(expression) > MAX_LENGTH:
        raise ValueError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not an arithmetic expression: {e.msg}") from None
    return _value(tree.body)


def _value(node):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        result = node.value
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:  # before computing it
            raise ValueError(f"the exponent {right} is larger than {MAX_EXPONENT}")
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ValueError("division by zero") from None
        except OverflowError:
            raise ValueError("the result is too large") from None
    elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        result = _UNARY[type(node.op)](_value(node.operand))
    else:
        raise ValueError(f"{type(node).__name__} is not allowed: only numbers, + - * / // % ** and parentheses")
    if isinstance(result, complex) or not abs(result) <= MAX_ABS:  # also catches inf and nan
        raise ValueError("the result is too large (or not a real number)")
    return result


def run_program(program):
    variables = {}
    for number, line in enumerate(program.split("\n"), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z_]\w*)\s*=\s*(.+)", line)
        if not m:
            raise ValueError(f"line {number} is not of the form `name = expression`: {line!r}")
        name, expression = m.groups()

        def substitute(match):
            if match.group(0) not in variables:
                raise ValueError(f"line {number}: {match.group(0)!r} is not defined above")
            return f"({variables[match.group(0)]!r})"

        variables[name] = safe_eval(re.sub(r"\b[A-Za-z_]\w*\b", substitute, expression))
    if "answer" not in variables:
        raise ValueError("the program never assigns `answer`")
    return variables
