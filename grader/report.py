"""`grader report ASSIGNMENT`: one self-contained HTML page about a graded class.

It reads the gradebook (the scores nbgrader recorded) and the graded notebooks (what each check
said), and shows the score histogram, pass rates per exercise and per check, the most frequent
failure hints (the class's common misconceptions), the submissions that timed out, crashed or
could not be read, and the time grading took.
"""
from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter, defaultdict
from pathlib import Path

from .course import Course, CourseError


def load_results(course: Course, assignment: str) -> list[dict]:
    path = course.root / "reports" / assignment / "grades.json"
    if not path.exists():
        raise CourseError(f"{assignment} has not been graded yet (no {path}): run `grader grade {assignment} "
                          f"--submissions DIR` first")
    return json.loads(path.read_text())


def gradebook_scores(course: Course, assignment: str) -> dict[str, float]:
    from nbgrader.api import Gradebook, MissingEntry

    scores = {}
    with Gradebook(course.config().CourseDirectory.db_url) as gb:
        try:
            for sub in gb.find_assignment(assignment).submissions:
                scores[sub.student.id] = float(sub.score)
        except MissingEntry:
            pass
    return scores


def _figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def build_report(course: Course, assignment: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = load_results(course, assignment)
    # A submission the machinery could not grade has no score: it is listed, never counted as a 0.
    not_graded = [r for r in everything if r.get("not_graded")]
    results = [r for r in everything if not r.get("not_graded")]
    book = gradebook_scores(course, assignment)
    scores = [book.get(r["student"], r["score"]) for r in results]
    max_score = max((r["max_score"] for r in results), default=0)

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(scores, bins=min(20, max(5, len(scores))), range=(0, max_score or 1), color="#4c72b0", edgecolor="white")
    ax.set_title(f"{assignment}: scores of {len(scores)} submissions")
    ax.set_xlabel("score (points)")
    ax.set_ylabel("submissions")
    histogram = _figure_png(fig)
    plt.close(fig)

    exercise_pass: dict[str, list[bool]] = defaultdict(list)
    check_pass: dict[tuple[str, str], list[bool]] = defaultdict(list)
    hints: Counter = Counter()
    for r in results:
        for ex in r["exercises"]:
            name = ex["id"].split("/", 1)[-1]
            exercise_pass[name].append(ex["score"] >= ex["max_score"])
            for c in ex.get("checks", []):
                check_pass[(name, c["name"])].append(c["passed"])
                if not c["passed"] and c.get("hint"):
                    hints[(name, c["hint"])] += 1

    names = list(exercise_pass)
    rates = [100 * sum(v) / len(v) for v in exercise_pass.values()]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1))
    ax.barh(names[::-1], rates[::-1], color="#55a868")
    ax.set_xlim(0, 100)
    ax.set_title("full marks per exercise")
    ax.set_xlabel("% of submissions")
    ax.set_ylabel("exercise")
    pass_rates = _figure_png(fig)
    plt.close(fig)

    flagged = [r for r in results if r.get("error") or r.get("events") or r.get("not_graded")]
    seconds = [r.get("seconds", 0) for r in results]
    total_seconds = sum(seconds)

    def table(header, rows):
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    check_rows = [(ex, check, f"{100 * sum(v) / len(v):.0f}%", len(v)) for (ex, check), v in check_pass.items()]
    hint_rows = [(count, ex, hint) for (ex, hint), count in hints.most_common(15)]
    flag_rows = [(r["student"], f"{r['score']:g}", r.get("error") or "; ".join(r.get("events", []))) for r in flagged]
    flag_rows += [(r["student"], "not graded", f"the grading machinery failed ({r['not_graded']}); grade again to "
                                              f"grade it") for r in not_graded]
    mean = sum(scores) / len(scores) if scores else 0
    from .grading import kernel_test_cells_note

    note = kernel_test_cells_note(course, assignment)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(assignment)} report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}th{{background:#f3f3f3}}</style></head><body>
<h1>{html.escape(assignment)}: class report</h1>
<p>{len(results)} submissions graded{f", {len(not_graded)} not graded (see below)" if not_graded else ""}, mean score {mean:.1f} of {max_score:g}; grading took {total_seconds:.0f} s of kernel time
(median {sorted(seconds)[len(seconds) // 2] if seconds else 0:.1f} s per submission).</p>
{f"<p><b>Note:</b> {html.escape(note)}</p>" if note else ""}
<img alt="score histogram" src="data:image/png;base64,{histogram}">
<h2>Exercises</h2><img alt="pass rates" src="data:image/png;base64,{pass_rates}">
<h2>Checks</h2>{table(["exercise", "check", "passed", "submissions"], check_rows)}
<h2>Most frequent hints (common misconceptions)</h2>{table(["students", "exercise", "hint"], hint_rows) if hint_rows else "<p>None: every check passed.</p>"}
<h2>Submissions that need a look</h2>{table(["student", "score", "what happened"], flag_rows) if flag_rows else "<p>None timed out, crashed or was unreadable.</p>"}
</body></html>"""
    out = course.root / "reports" / assignment / "report.html"
    out.write_text(page)
    return out
