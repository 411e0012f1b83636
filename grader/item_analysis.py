"""Item analysis of the checks, as exam tools report it for questions: how hard each check and exercise is, how well
it tells strong work from weak, and which checks look broken.

Over the attempted work of a class (`exercise_state(ex) != "not attempted"`), for each check and each exercise:
- difficulty: the share of attempts that pass (for an exercise: that get full marks);
- discrimination: the point-biserial correlation between passing (1 or 0) and the rest of the score (the student's
  automatic total less the points of that check, or of that exercise). It is Pearson's correlation where one of the
  two is a yes/no; a good check has it positive: those who pass it do better elsewhere too.

A check is flagged, with a sentence, when it has at least MIN_ATTEMPTS attempts and
- nobody passes it;
- everybody passes it, junk included: some who pass it fail the exercise's other checks and score nothing in every
  other exercise (a blank notebook, or one that returns junk; a student who did only this exercise, and did it
  right, is not junk);
- its discrimination is below NEGATIVE, with at least MIN_FOR_DISCRIMINATION attempts, MIN_EACH_SIDE of them
  passing and as many failing (with fewer, one unusual student makes the correlation).
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass

from .report import exercise_state

MIN_ATTEMPTS = 5
MIN_FOR_DISCRIMINATION = 10
MIN_EACH_SIDE = 3
NEGATIVE = -0.2


@dataclass
class Item:
    exercise: str
    check: str  # "" for the exercise as a whole
    attempts: int
    difficulty: float  # share passing
    discrimination: float | None  # None where it is undefined (all pass, all fail, or the rest of the score is flat)
    flag: str = ""


def point_biserial(passed: list[bool], rest: list[float]) -> float | None:
    n = len(passed)
    hits = sum(passed)
    if n < 2 or hits in (0, n):
        return None
    mean = sum(rest) / n
    sd = math.sqrt(sum((y - mean) ** 2 for y in rest) / n)
    if sd == 0:
        return None
    mean_pass = sum(y for y, p in zip(rest, passed) if p) / hits
    mean_fail = sum(y for y, p in zip(rest, passed) if not p) / (n - hits)
    share = hits / n
    return (mean_pass - mean_fail) / sd * math.sqrt(share * (1 - share))


def _name(ex: dict) -> str:
    return ex["id"].split("/", 1)[-1]


def analyse(results: list[dict]) -> list[Item]:
    """An Item per exercise, each followed by an Item per check of it, in the order grades.json has them."""
    graded = [r for r in results if not r.get("not_graded")]
    order: list[str] = []
    # exercise -> [(student's total, exercise's result, whether everything else scored nothing)]
    attempts: dict[str, list[tuple[float, dict, bool]]] = {}
    for r in graded:
        states = {_name(ex): (exercise_state(ex), ex) for ex in r.get("exercises", [])}
        for name, (state, ex) in states.items():
            if name not in attempts:
                order.append(name)
                attempts[name] = []
            if state == "not attempted":
                continue
            nothing_else = all(s == "not attempted" or other["score"] == 0
                               for n, (s, other) in states.items() if n != name)
            attempts[name].append((r.get("score", 0), ex, nothing_else))
    items = []
    for name in order:
        rows = attempts[name]
        full = [ex["score"] >= ex["max_score"] for _, ex, _ in rows]
        items.append(Item(name, "", len(rows), sum(full) / len(rows) if rows else 0.0,
                          point_biserial(full, [total - ex["score"] for total, ex, _ in rows])))
        checks = list(dict.fromkeys(c["name"] for _, ex, _ in rows for c in ex.get("checks", [])))
        for check in checks:
            passed, rest, junk = [], [], 0
            for total, ex, nothing_else in rows:
                c = next((c for c in ex.get("checks", []) if c["name"] == check), None)
                if c is None:
                    continue
                passed.append(bool(c["passed"]))
                rest.append(total - c.get("points", 0))
                others_failed = any(not o["passed"] for o in ex.get("checks", []) if o["name"] != check)
                junk += bool(c["passed"] and nothing_else and others_failed)
            item = Item(name, check, len(passed), sum(passed) / len(passed) if passed else 0.0,
                        point_biserial(passed, rest))
            item.flag = _flag(item, sum(passed), junk)
            items.append(item)
    return items


def _flag(item: Item, hits: int, junk: int) -> str:
    n = item.attempts
    if n < MIN_ATTEMPTS:
        return ""
    if hits == 0:
        return (f"Nobody passes it ({n} attempts). Check that it can be passed: `grader check` on the reference "
                f"solution should give it full points.")
    if hits == n and junk:
        return (f"Everybody passes it, even {junk} submission{'s' * (junk != 1)} that fail{'s' * (junk == 1)} the "
                f"exercise's other checks and score{'s' * (junk == 1)} nothing in any other exercise (blank or junk "
                f"work): it may pass without testing anything.")
    r = item.discrimination
    if (r is not None and r < NEGATIVE and n >= MIN_FOR_DISCRIMINATION
            and min(hits, n - hits) >= MIN_EACH_SIDE):
        return (f"Those who pass it score lower on the rest of the assignment than those who fail it "
                f"(discrimination {r:+.2f}): it may reward a wrong answer, or reject a right one.")
    return ""


def section_html(results: list[dict]) -> str:
    items = analyse(results)
    flagged = [i for i in items if i.flag]
    rows = ""
    for i in items:
        r = "" if i.discrimination is None else f"{i.discrimination:+.2f}"
        what = "<b>whole exercise</b> (full marks)" if not i.check else html.escape(i.check)
        style = ' class="flagged"' if i.flag else ""
        rows += (f"<tr{style}><td>{html.escape(i.exercise)}</td><td>{what}</td><td>{i.attempts}</td>"
                 f"<td>{100 * i.difficulty:.0f}%</td><td>{r}</td><td>{html.escape(i.flag)}</td></tr>")
    listed = "".join(f"<li><b>{html.escape(i.exercise)}, {html.escape(i.check)}</b>: {html.escape(i.flag)}</li>"
                     for i in flagged)
    return f"""<h2 id="item-analysis">Item analysis of the checks</h2>
<p>How each check and exercise behaves over the attempted work of this class (automatic scores; grades given by
hand are not included). <b>Difficulty</b> is the share of attempts that pass (for an exercise: that get full
marks). <b>Discrimination</b> is the point-biserial correlation between passing and the rest of the score: the
correlation between passing (1) or failing (0) and the student's total less what this check (or exercise) gave.
Near +1, those who pass it do better elsewhere, as a good check should; near 0, it says nothing about the rest;
below 0, those who pass it do worse elsewhere. It is blank where everybody passes or everybody fails.</p>
<p>A check is flagged when it has at least {MIN_ATTEMPTS} attempts (fewer is noise) and nobody passes it; or
everybody passes it, even a submission that fails the exercise's other checks and scores nothing in any other
exercise (blank or junk work); or its discrimination is below
{NEGATIVE:g} with at least {MIN_FOR_DISCRIMINATION} attempts, {MIN_EACH_SIDE} or more of them passing and as many
failing.</p>
{f"<p>Checks that look broken:</p><ul>{listed}</ul>" if flagged else "<p>No check looks broken.</p>"}
<table><tr><th>exercise</th><th>check</th><th>attempts</th><th>difficulty (passed)</th><th>discrimination</th>
<th>why it is flagged</th></tr>{rows}</table>"""
