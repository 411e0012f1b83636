"""The prompt formats that course-lm-apps was trained on: retrieval, ReAct with tools, and programs (PAL).

The training data (assets/scripts/appdata.py), the evaluation (assets/scripts/evaluate.py) and the
06_applications notebook all build their prompts from these, so the model always sees what it learned.
Every prompt is course-lm's instruction format (`llmcourse.assets.format_instruction`).

    retrieval    ### Instruction: RAG_INSTRUCTION / ### Input: "[1] passage" lines, then "Question: ..."
                 ### Response: " answer [n]" (n: the passage the answer came from)
    closed book  ### Instruction: CLOSED_BOOK_INSTRUCTION / ### Input: "Question: ..." / "answer"
    ReAct        ### Instruction: REACT_INSTRUCTION / ### Input: "Question: ..." / ### Response: a trace of
                 "Thought: ...", "Action: tool[argument]", "Observation: ..." lines, ending "Action: Finish[answer]"
    PAL          ### Instruction: PAL_INSTRUCTION / ### Input: the problem / ### Response: lines "name = expression",
                 the last one "answer = ..."
"""
from __future__ import annotations

import re

from llmcourse.assets import format_instruction

__all__ = ["RAG_INSTRUCTION", "CLOSED_BOOK_INSTRUCTION", "REACT_INSTRUCTION", "PAL_INSTRUCTION", "STEP_BY_STEP",
           "number_passages", "rag_text", "closed_book_prompt", "react_prompt", "pal_prompt", "cot_prompt",
           "split_citation", "trace_text"]

RAG_INSTRUCTION = "Answer the question using the passages. Cite the passage you used."
CLOSED_BOOK_INSTRUCTION = "Answer the question."
REACT_INSTRUCTION = "Answer the question. You can use the tools calculator[expression] and lookup[name]."
PAL_INSTRUCTION = "Write a program that solves the problem."
STEP_BY_STEP = "Solve the problem step by step."  # course-lm's chain-of-thought instruction


def number_passages(passages: list[str]) -> str:
    """ "[1] first passage\\n[2] second passage ..." (the passages as they are: no cleaning here)."""
    return "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, 1))


def rag_text(question: str, passages: list[str], answer: str | None = None, cite: int | None = None) -> str:
    """A retrieval prompt for trusted passages (training data); with `answer`, the response " answer [cite]".

    The answer starts with a space, as the same word does inside a passage, so that both are the same tokens:
    the model copies the word it read instead of spelling it anew."""
    prompt = format_instruction(RAG_INSTRUCTION, number_passages(passages) + f"\nQuestion: {question}")
    return prompt if answer is None else prompt + f" {answer} [{cite}]"


def closed_book_prompt(question: str) -> str:
    return format_instruction(CLOSED_BOOK_INSTRUCTION, f"Question: {question}")


def react_prompt(question: str) -> str:
    return format_instruction(REACT_INSTRUCTION, f"Question: {question}")


def pal_prompt(problem: str) -> str:
    return format_instruction(PAL_INSTRUCTION, problem)


def cot_prompt(problem: str) -> str:
    return format_instruction(STEP_BY_STEP, problem)


def split_citation(response: str) -> tuple[str, int | None]:
    """ "Balomar [2]" -> ("Balomar", 2); a response without a citation -> (the response, None)."""
    line = response.strip().split("\n", 1)[0].strip()
    m = re.match(r"^(.*?)\s*\[(\d+)\]\s*$", line)
    if m:
        return m.group(1).strip(), int(m.group(2))
    return line, None


def trace_text(steps: list[tuple[str, str, str, str | None]]) -> str:
    """A ReAct trace from (thought, tool, argument, observation) steps; the last step's tool is "Finish"."""
    lines = []
    for thought, tool, argument, observation in steps:
        lines.append(f"Thought: {thought}")
        lines.append(f"Action: {tool}[{argument}]")
        if observation is not None:
            lines.append(f"Observation: {observation}")
    return "\n".join(lines)
