"""Course scaffolding for 06_applications: generation helpers, the encyclopedia's tools, and the result tables.

Nothing here is an exercise. The notebook's functions (retrieval, the ReAct loop, the safe calculator and
the program runner) are yours; these helpers only turn a model into the `model_fn` that `react` calls,
generate many answers at once, and draw the tables.

    ask = model_fn(model, tokenizer)            # prompt -> the model's new text (greedy)
    texts = generate_batch(model, tokenizer, prompts, max_new_tokens=16)
    lookup = Encyclopedia(facts)                # lookup("Vouthdath") -> its article, or KeyError

Stand-ins, for trying your code without a model (the checks use them too): `ScriptedModel` answers from a
script, `ToolBox` holds tools that answer from tables, `WordTokenizer` makes one token per word.
"""
from __future__ import annotations

import operator
import re
import time
from typing import Callable, Sequence

import torch

__all__ = ["model_fn", "generate_batch", "Encyclopedia", "words", "exact_match", "answer_number", "Timer",
           "table", "ScriptedModel", "ToolBox", "WordTokenizer", "Calculator", "calculator_tools", "course_model_fn"]

STOP = "\nObservation:"


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 32, batch_size: int = 32,
                   first_line: bool = False) -> list[str]:
    """Greedy new text for every prompt (left-padded batches); with `first_line`, only up to the first newline."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[i:i + batch_size]), return_tensors="pt", padding=True,
                            add_special_tokens=False).to(model.device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            for row in out[:, enc["input_ids"].shape[1]:]:
                text = tokenizer.decode(row, skip_special_tokens=True)
                texts.append(text.split("\n")[0].strip() if first_line else text)
    finally:
        tokenizer.padding_side = side
    return texts


def model_fn(model, tokenizer, max_new_tokens: int = 48, counter: list | None = None) -> Callable[[str], str]:
    """A function prompt -> the model's greedy new text, stopped once it starts to invent an observation.

    `counter`, if given, gets one entry per call (the number of calls is the cost of an agent)."""

    def call(prompt: str) -> str:
        if counter is not None:
            counter.append(1)
        text = generate_batch(model, tokenizer, [prompt], max_new_tokens)[0]
        return text.split(STOP)[0] + (STOP if STOP in text else "")

    return call


class Encoding(dict):
    """What WordTokenizer(text) returns: a dict that also reads as attributes (enc["input_ids"], enc.input_ids)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class WordTokenizer:
    """A tokenizer for worked examples: one token per word (split on whitespace); decode joins with spaces.

    Like BERT-style tokenizers, it adds <s> and </s> around the text unless add_special_tokens=False.
    """

    bos_token, eos_token = "<s>", "</s>"
    bos_token_id, eos_token_id = 0, 1

    def __init__(self):
        self.words = ["<s>", "</s>"]
        self.ids = {"<s>": 0, "</s>": 1}

    def tokenize(self, text, **kwargs):
        return text.split()

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self.convert_tokens_to_ids([tokens])[0]
        ids = []
        for token in tokens:
            if token not in self.ids:  # a new word gets the next id
                self.ids[token] = len(self.words)
                self.words.append(token)
            ids.append(self.ids[token])
        return ids

    def convert_ids_to_tokens(self, ids, skip_special_tokens=False):
        ids = _id_list(ids)
        return [self.words[i] for i in ids if not (skip_special_tokens and i < 2)]

    def convert_tokens_to_string(self, tokens):
        return " ".join(tokens)

    def encode(self, text, add_special_tokens=True, **kwargs):
        ids = self.convert_tokens_to_ids(self.tokenize(text))
        return [0, *ids, 1] if add_special_tokens else ids

    def __call__(self, text, add_special_tokens=True, return_tensors=None, **kwargs):
        ids = self.encode(text, add_special_tokens)
        if return_tensors == "pt":
            return Encoding(input_ids=torch.tensor([ids], dtype=torch.long), attention_mask=torch.ones(1, len(ids),
                                                                                                       dtype=torch.long))
        return Encoding(input_ids=ids, attention_mask=[1] * len(ids))

    def decode(self, ids, skip_special_tokens=False, **kwargs):
        return " ".join(self.convert_ids_to_tokens(ids, skip_special_tokens))

    def batch_decode(self, sequences, skip_special_tokens=False, **kwargs):
        return [self.decode(s, skip_special_tokens) for s in sequences]

    def __len__(self):
        return len(self.words)


def _id_list(ids) -> list[int]:
    if isinstance(ids, torch.Tensor):
        ids = ids.reshape(-1).tolist()
    return [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]


class ScriptedModel:
    """A stand-in for a language model in the ReAct checks: call i returns the i-th text of the script (the last
    one again once the script runs out). "{observation}" in a text becomes the last observation in the prompt,
    so a script can answer with what a tool said. It keeps every prompt it was given."""

    def __init__(self, outputs, max_calls=40):
        self.outputs = list(outputs)
        self.max_calls = max_calls
        self.prompts = []

    def __call__(self, prompt):
        if not isinstance(prompt, str):
            raise TypeError(f"model_fn takes the prompt as one string, not {type(prompt).__name__}")
        self.prompts.append(prompt)
        if len(self.prompts) > self.max_calls:
            raise RuntimeError(f"model_fn was called {len(self.prompts)} times and never stopped: the loop must end "
                               f"after max_steps calls")
        text = self.outputs[min(len(self.prompts), len(self.outputs)) - 1]
        observations = re.findall(r"^Observation: (.*)$", prompt, flags=re.MULTILINE)
        return text.replace("{observation}", observations[-1] if observations else "")


class ToolBox(dict):
    """The tools of a ReAct check, {name: function}: each answers from its table (a KeyError for an argument the
    table lacks), or, for the `failing` ones, raises RuntimeError on every call. `calls` lists (tool, argument)."""

    def __init__(self, tables, failing=None):
        super().__init__()
        self.calls = []
        for name, table in tables.items():
            self[name] = self._lookup(name, dict(table))
        for name, message in (failing or {}).items():
            self[name] = self._broken(name, message)

    def _lookup(self, name, table):
        def tool(argument):
            self.calls.append((name, argument))
            if argument not in table:
                raise KeyError(f"{name} knows nothing about {argument!r}")
            return table[argument]
        return tool

    def _broken(self, name, message):
        def tool(argument):
            self.calls.append((name, argument))
            raise RuntimeError(message)
        return tool


def course_model_fn(name: str = "course-lm-apps", max_new_tokens: int = 48) -> Callable[[str], str]:
    """`model_fn` for a course model loaded here (the checks run a real ReAct loop in your kernel with it)."""
    from llmcourse.assets import load_model, load_tokenizer

    return model_fn(load_model(name), load_tokenizer(name), max_new_tokens)


class Calculator:
    """A stand-in calculator tool: exactly two numbers and one of + - * / ("13925 - 6366"); anything else is
    an error. (Your safe_eval does far more; the checks of `react` use this one so that they test only the loop.)"""

    _TWO_NUMBERS = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([-+*/])\s*(-?\d+(?:\.\d+)?)\s*$")

    def __call__(self, expression: str):
        m = self._TWO_NUMBERS.match(str(expression))
        if not m:
            raise ValueError(f"this calculator takes two numbers and one of + - * /, not {expression!r}")
        a, op, b = m.groups()
        x, y = (float(v) if "." in v else int(v) for v in (a, b))
        if op == "/" and y == 0:
            raise ValueError("division by zero")
        return {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op](x, y)


def calculator_tools() -> dict:
    """{"calculator": Calculator()}: the tools of the checks' end-to-end ReAct run."""
    return {"calculator": Calculator()}


class Encyclopedia:
    """The `lookup` tool: the article about a name. A name that matches none exactly gets the article of the
    closest name, if one is close enough (a model copies a long invented name with a letter or two wrong),
    and the reply says so; otherwise KeyError."""

    def __init__(self, rows: Sequence[dict]):
        self.articles = {self._key(r["name"]): r["passage"] for r in rows}

    @staticmethod
    def _key(name: str) -> str:
        return " ".join(name.lower().split())

    def __call__(self, name: str) -> str:
        import difflib

        key = self._key(name)
        if key in self.articles:
            return self.articles[key]
        close = difflib.get_close_matches(key, list(self.articles), n=1, cutoff=0.6)
        if not close:
            raise KeyError(f"no article is called {name.strip()!r}")
        return f"(closest name: {close[0].capitalize()}) {self.articles[close[0]]}"


_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens for retrieval: "The Quendril, 340 km." -> ["the", "quendril", "340", "km"]."""
    return _WORD.findall(text.lower())


def exact_match(predictions: Sequence[str | None], answers: Sequence[str]) -> float:
    """The share of predictions equal to their answer (after trimming spaces; None never matches)."""
    hits = sum(p is not None and str(p).strip() == str(a).strip() for p, a in zip(predictions, answers))
    return hits / max(1, len(answers))


def answer_number(text: str) -> str | None:
    """The number after the last "answer is" in a chain-of-thought answer, as text."""
    found = re.findall(r"answer is (-?\d+)", text)
    return found[-1] if found else None


class Timer:
    """with Timer() as t: ...; then t.seconds."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def table(rows: Sequence[dict], columns: Sequence[str] | None = None, floatfmt: str = "{:.2f}") -> str:
    """A plain-text table of dicts (one row each), for printing."""
    columns = list(columns or rows[0].keys())
    cells = [[floatfmt.format(r[c]) if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
