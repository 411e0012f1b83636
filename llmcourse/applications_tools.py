"""Course scaffolding for 06_applications: generation helpers, the encyclopedia's tools, and the result tables.

Nothing here is an exercise. The notebook's functions (retrieval, the ReAct loop, the safe calculator and
the program runner) are yours; these helpers only turn a model into the `model_fn` that `react` calls,
generate many answers at once, and draw the tables.

    ask = model_fn(model, tokenizer)            # prompt -> the model's new text (greedy)
    texts = generate_batch(model, tokenizer, prompts, max_new_tokens=16)
    lookup = Encyclopedia(facts)                # lookup("Vouthdath") -> its article, or KeyError

Stand-ins, for trying your code without a model: `ScriptedModel` answers from a script, `ToolBox` holds tools
that answer from tables, `WordTokenizer` makes one token per word. They, `model_fn` and `generate_batch` live in
llmcourse.in_kernel, because the checks run them in your kernel too; this module re-exports them.
"""
from __future__ import annotations

import re
import time
from typing import Sequence

from .in_kernel import ScriptedModel, ToolBox, WordTokenizer, generate_batch, model_fn

__all__ = ["model_fn", "generate_batch", "Encyclopedia", "words", "exact_match", "answer_number", "Timer",
           "table", "ScriptedModel", "ToolBox", "WordTokenizer"]


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
