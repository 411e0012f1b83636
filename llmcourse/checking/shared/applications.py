"""What the 06_applications checks, visible and hidden, both use: each exercise's hint, the course tokenizers
and course-mlm, how each kind of answer is read (chunks, scores, embeddings, actions, ReAct runs, numbers,
variables), and the stand-ins of llmcourse.in_kernel that the checks build in the kernel.

The checks (grader.checks.applications) import these helpers from here, and so does the students' copy of the visible
checks (llmcourse.checks.applications), with which this module ships.
"""
from __future__ import annotations

import functools
import math
import re

import torch

from llmcourse.applications_formats import RAG_INSTRUCTION, react_prompt
from llmcourse.assets import format_instruction
from llmcourse.checking import StudentRaised, expect, expect_close, expect_tensor, fail


# -- the hints an exercise's visible and hidden checks share ---------------------------------------

CHUNK_HINT = ("Tokenize once (add_special_tokens=False); windows of max_tokens ids start every max_tokens - overlap "
              "tokens; the last window is the first that reaches the end; decode each window.")


EMBED_HINT = ("Tokenize the texts together with padding=True, run the model with output_hidden_states=True, average "
              "hidden_states[-1] over the positions where attention_mask is 1, then F.normalize(..., dim=-1).")


TOP_K_HINT = ("Normalise the rows of both matrices (F.normalize(x, dim=-1)), take q @ d.T, then torch.topk(..., "
              "min(k, n_docs), dim=-1): scores and indices, best first.")


RAG_HINT = ("Number the passages '[1] ...', '[2] ...', one per line, then 'Question: ...', inside "
            "format_instruction(RAG_INSTRUCTION, ...); turn every newline in a passage or the question into a space.")


PARSE_HINT = ("Go through the lines in order: stop (None) at a line that starts with 'Observation:'; a line 'Action: "
              "tool[argument]' gives (tool, argument), 'Finish[answer]' or 'Action: Finish[answer]' gives "
              "('finish', answer).")


REACT_HINT = ("Start from react_prompt(question); each step: text = model_fn(prompt) cut at '\\nObservation:', "
              "parse_action(text), run the tool, append text + '\\nObservation: <result>\\n' to the prompt; stop at "
              "Finish, at a text without an action, or after max_steps calls.")


SAFE_HINT = ("Parse with ast.parse(expression, mode='eval') and walk the tree yourself: numbers (int, float), "
             "BinOp with + - * / // % **, UnaryOp with + -; anything else raises ValueError.")


PROGRAM_HINT = ("For each line (comments and blank lines skipped): match 'name = expression', replace each name by "
                "'(' + repr(its value) + ')', evaluate with safe_eval and store; raise ValueError if `answer` is never "
                "set.")


# -- tokenizers and models, here and in the kernel -------------------------------------------------

def student_tokenizer(student, name: str):
    """A course tokenizer built in the student's kernel (the same files as the checker's own)."""
    return student.construct("llmcourse.assets.load_tokenizer", name)


@functools.lru_cache(maxsize=None)
def course_tokenizer(name: str):
    from llmcourse.assets import load_tokenizer

    return load_tokenizer(name)


@functools.lru_cache(maxsize=1)
def course_mlm():
    """The checker's own course-mlm (never the student's object)."""
    from llmcourse.assets import load_model

    return load_model("course-mlm").eval()


# -- how answers are read --------------------------------------------------------------------------

def expect_str_list(got, what: str, hint: str) -> list[str]:
    if not isinstance(got, list) or not all(isinstance(s, str) for s in got):
        fail(f"{what} should return a list of strings, but it returned {_shown(got)}.", hint)
    return got


def _shown(value) -> str:
    if isinstance(value, LongInteger):
        return repr(value)
    if value is None:
        return "None (did the function forget to `return`?)"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 30:
        return f"an integer of {len(str(abs(value)))} digits"
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, (str, int, float, list, tuple, dict)):
        text = repr(value)
        return text if len(text) <= 300 else text[:300] + " ..."
    return f"a {getattr(value, 'type_name', type(value).__name__)}"


def chunk_hint(got: list[str], expected: list[str], special: tuple[str, ...] = ()) -> str:
    """The likely mistake behind a wrong list of chunks."""
    if special and got and any(got[0].startswith(s) or got[-1].endswith(s) for s in special):
        return "Tokenize with add_special_tokens=False: chunks hold the text's own tokens, without <s> or </s>."
    if special and all(c == c.strip() for c in expected) and any(c != c.strip() for c in got):
        return "These look like windows of characters: count tokens (tokenizer(text, add_special_tokens=False))."
    if expected and got == expected[:-1]:
        return "The last window is missing: keep going until a window reaches the end of the text (it may be shorter)."
    if got[:len(expected)] == expected and len(got) > len(expected):
        return ("There are extra windows at the end: stop after the first window that reaches the end of the text "
                "(a window that holds only tokens of the one before adds nothing).")
    if len(got) < len(expected):
        return "Too few windows: a new window starts every max_tokens - overlap tokens, so that neighbours share `overlap`."
    if len(got) > len(expected):
        return "Too many windows: a new window starts every max_tokens - overlap tokens, not every overlap tokens."
    return "Windows of max_tokens token ids, starting every max_tokens - overlap tokens, each decoded with tokenizer.decode."


def expect_scores(got, expected: torch.Tensor, what: str, hint: str) -> None:
    got = expect_tensor(got, what, shape=tuple(expected.shape), hint=hint)
    expect(got.is_floating_point(), f"{what} has dtype {got.dtype}; scores are floats.", hint)
    if expected.min() >= 0 and bool((got < -1e-9).any()):
        fail(f"{what} has negative scores: {got.tolist()}.", "Use idf = log(1 + (N - n + 0.5) / (n + 0.5)): it never "
                                                             "goes negative, even for a word most documents have.")
    expect_close(got, expected, what, rtol=1e-4, atol=1e-6, hint=hint)


def expect_embeddings(got, expected: torch.Tensor, texts: list[str], what: str) -> None:
    got = expect_tensor(got, what, shape=tuple(expected.shape), hint=EMBED_HINT)
    norms = got.detach().double().norm(dim=-1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
        fail(f"{what}: the rows have lengths {[round(float(n), 3) for n in norms]}, not 1.",
             "L2-normalise each row: F.normalize(mean, dim=-1) (dim=-1, the features, not dim=0).")
    longest = max(range(len(texts)), key=lambda i: len(texts[i]))
    rows_ok = [bool(torch.allclose(got[i].double(), expected[i].double(), atol=1e-4)) for i in range(len(texts))]
    if rows_ok[longest] and not all(rows_ok):
        fail(f"{what}: the longest text is right but a shorter one is not.",
             "The shorter texts are padded: average over the real tokens only (weight by attention_mask and divide "
             "by its sum), not over every position.")
    expect_close(got, expected, what, rtol=1e-4, atol=1e-4, hint=EMBED_HINT)


def pair_of(result, what: str, hint: str) -> tuple:
    """(scores, indices) from a tuple, a list or torch.topk's named tuple (which stays in the kernel)."""
    if isinstance(result, (tuple, list)):
        if len(result) != 2:
            fail(f"{what} should return 2 values (scores, indices), but it returned {len(result)}.", hint)
        return tuple(result)
    if getattr(result, "type_name", "").endswith("return_types.topk"):
        return result[0], result[1]
    fail(f"{what} should return a tuple (scores, indices), but it returned {_shown(result)}.", hint)


def rag_parts() -> tuple[str, str]:
    """The fixed text before and after the input block of a retrieval prompt."""
    before, after = format_instruction(RAG_INSTRUCTION, "\x00").split("\x00")
    return before, after


def expect_rag_prompt(got, question: str, passages: list[str], what: str, hint: str) -> None:
    """A retrieval prompt whose input block has exactly one "[i] ..." line per passage, then the question line,
    each holding the words of its passage (or question), so that no text can start a line of its own."""
    if not isinstance(got, str):
        fail(f"{what} returned {_shown(got)}, not a string.", hint)
    before, after = rag_parts()
    if not (got.startswith(before) and got.endswith(after) and len(got) >= len(before) + len(after)):
        fail(f"{what} is not in course-lm's instruction format: it should start with {before!r} and end with "
             f"{after!r}.", "Build the prompt with format_instruction(RAG_INSTRUCTION, ...), as rag_text does.")
    lines = got[len(before):len(got) - len(after)].split("\n")
    expected = [f"[{i}] {' '.join(p.split())}" for i, p in enumerate(passages, 1)]
    expected.append(f"Question: {' '.join(question.split())}")
    if len(lines) != len(expected):
        extra = next((line for line in lines if not re.match(r"^(\[\d+\] |Question: )", line)), None)
        fail(f"{what}: the input block has {len(lines)} lines, but {len(passages)} passages and the question make "
             f"{len(expected)}" + (f"; this line came from inside a passage: {extra!r}" if extra is not None else "")
             + ".", hint)
    for line, want in zip(lines, expected):
        words = line.split(" ", 1)
        got_line = words[0] + " " + " ".join(words[1].split()) if len(words) == 2 else line
        expect(got_line == want, f"{what}: the line {line!r} should read {want!r} (up to spaces).", hint)
    headings = [line for line in got.split("\n") if line.startswith("###")]
    expect(len(headings) == 3, f"{what} has {len(headings)} lines starting with ###, not 3: {headings}", hint)


def expect_action(got, expected, text: str, hint: str) -> None:
    what = f"parse_action({text!r})"
    if expected is not None and isinstance(got, list) and tuple(got) == expected:
        fail(f"{what} returned the list {got!r}; return a tuple {expected!r}.", "Return a tuple: (tool, argument).")
    if expected is not None and isinstance(got, tuple) and len(got) == 2 and got[0] == "Finish":
        fail(f"{what} returned {got!r}; the tool of a Finish line is 'finish', in lower case.",
             "Return ('finish', answer) for Finish[answer], whatever its capitalisation.")
    if expected is None and got is not None and "Observation:" in text:
        fail(f"{what} returned {got!r}, but that action comes after an 'Observation:' line: the model did not "
             f"write it as its action (a tool's text, or one the model invented, must never run).",
             "Stop at the first line that starts with 'Observation:' and return None if no action came before it.")
    shown = repr(got) if got is None or isinstance(got, (tuple, str)) else _shown(got)
    expect(got == expected, f"{what} returned {shown}, expected {expected!r}.", hint)


# -- ReAct runs ------------------------------------------------------------------------------------

def react_run(student, question: str, outputs: list[str], tables: dict, failing: dict | None = None, **kwargs):
    """The student's react on a scripted model and table tools built in their kernel: (result, prompts, calls)."""
    model = student.construct("llmcourse.in_kernel.ScriptedModel", outputs)
    tools = student.construct("llmcourse.in_kernel.ToolBox", tables, failing or {})
    result = student.react(model, question, tools, **kwargs)
    return result, list(model.prompts), [tuple(c) for c in tools.calls]


def expect_react_result(result, what: str, hint: str) -> tuple:
    if not isinstance(result, tuple) or len(result) != 2:
        fail(f"{what} should return a tuple (answer, trace), but it returned {_shown(result)}.", hint)
    answer, trace = result
    if not isinstance(trace, list) or not all(isinstance(step, dict) for step in trace):
        fail(f"{what}: the trace should be a list of dicts, but it is {_shown(trace)}.", hint)
    for step in trace:
        missing = {"text", "tool", "argument", "observation"} - set(step)
        expect(not missing, f"{what}: a step of the trace lacks the keys {sorted(missing)}.", hint)
    return answer, trace


def expect_prompts_grow(prompts: list[str], trace: list[dict], question: str, what: str, hint: str) -> None:
    """Call 1 sees react_prompt(question); each later call sees the prompt before, then the model's text, then
    "\\nObservation: <the step's observation>\\n"."""
    expect(len(prompts) == len(trace), f"{what} called model_fn {len(prompts)} times but its trace has {len(trace)} "
                                       f"steps: one step per call.", hint)
    expect(all(isinstance(step["text"], str) for step in trace), f"{what}: every step's text should be the model's "
                                                                 f"text, a string.", hint)
    expect(bool(prompts) and prompts[0] == react_prompt(question),
           f"{what}: the first prompt should be react_prompt(question), but model_fn got "
           f"{prompts[0] if prompts else None!r}.", "Start from prompt = react_prompt(question).")
    for i in range(1, len(prompts)):
        step = trace[i - 1]
        ends = [f"{text}\nObservation: {step['observation']}\n" for text in (step["text"], step["text"].rstrip())]
        added = prompts[i][len(prompts[i - 1]):]
        expect(prompts[i].startswith(prompts[i - 1]) and added in ends,
               f"{what}: after step {i}, model_fn should get the prompt before plus {ends[1]!r}, but what was added "
               f"is {added!r}." if prompts[i].startswith(prompts[i - 1]) else
               f"{what}: the prompt of call {i + 1} does not start with the prompt of call {i}: keep the whole history.",
               hint)


# -- safe_eval and run_program ---------------------------------------------------------------------

class LongInteger:
    """Stands for an answer that was an integer too long to send back (more than 4300 digits)."""

    def __repr__(self):
        return "an integer of more than 4300 digits"


def outcome(call, *args):
    """("value", v) or ("raised", exception type, its message) for one call of the student's function."""
    try:
        return ("value", call(*args))
    except StudentRaised as raised:
        text = str(raised)
        if raised.type_name == "ValueError" and "integer string conversion" in text:
            return ("value", LongInteger())  # Python refused to write the answer out: a value, not a refusal
        rest = text.split(f" raised {raised.type_name}", 1)[-1]
        message = re.sub(r" \((line \d+, )?in [\w<>]+: .*\)$", "", rest[2:]) if rest.startswith(": ") else ""
        return ("raised", raised.type_name, message)


def expect_refused(call, argument: str, what: str, hint: str) -> str:
    """The call must raise ValueError; returns its message. (How fast: the grader stops any answer that takes
    longer than its time limit, so a bomb that is computed before it is refused fails there; a deadline measured
    here, round trip included, would also fail correct code on a busy machine.)"""
    result = outcome(call, argument)
    shown = repr(argument) if len(argument) <= 60 else f"{argument[:24]!r} + ... ({len(argument)} characters)"
    if result[0] == "value":
        fail(f"{what}({shown}) returned {_shown(result[1])}; it should raise ValueError.", hint)
    if result[1] != "ValueError":
        fail(f"{what}({shown}) raised {result[1]} ({result[2] or 'no message'}); it should raise ValueError.", hint)
    return result[2]


def expect_number(got, expected, what: str, hint: str) -> None:
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        fail(f"{what} returned {_shown(got)}; it should return the number {expected!r}.", hint)
    if isinstance(expected, int) and isinstance(got, int):
        expect(got == expected, f"{what} returned {got!r}, expected {expected!r}.", hint)
    expect(math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12), f"{what} returned {got!r}, expected {expected!r}.",
           hint)


def expect_variables(got, expected: dict, what: str, hint: str) -> None:
    if not isinstance(got, dict):
        fail(f"{what} returned {_shown(got)}; it should return a dict of every variable, e.g. {expected!r}.", hint)
    if set(got) != set(expected):
        fail(f"{what} returned the variables {sorted(map(str, got))}, expected {sorted(expected)}.", hint)
    for name, value in expected.items():
        expect_number(got[name], value, f"{what}[{name!r}]", hint)
