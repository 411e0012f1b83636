"""`grader report ASSIGNMENT`: one self-contained HTML page about a graded class.

It reads the gradebook (the scores nbgrader recorded, grades given by hand included) and grades.json (what
each check said), and shows the score histogram; per exercise, how many students got full marks, lost points,
or did not attempt it; pass rates per check and the most frequent failure hints (the class's common
misconceptions), both over attempted work only and counted in students; the submissions that timed out,
crashed or could not be read; item analysis of the checks (grader/item_analysis.py); the pairs of
submissions whose code is alike (grader/similarity.py); one row per student, linked to their graded notebook and
feedback; and the time grading took. A table of contents at the top links to each section.
"""
from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter, defaultdict
from pathlib import Path

from .cells import NOT_WRITTEN as _NOT_WRITTEN
from .course import Course, CourseError


def load_results(course: Course, assignment: str) -> list[dict]:
    path = course.root / "reports" / assignment / "grades.json"
    if not path.exists():
        raise CourseError(f"{assignment} has not been graded yet (no {path}): run `grader grade {assignment} "
                          f"--submissions DIR` first")
    return json.loads(path.read_text())


def gradebook_scores(course: Course, assignment: str) -> dict[str, float]:
    """Each student's score as the gradebook has it: hand grades included, late penalties taken off."""
    from nbgrader.api import Gradebook, MissingEntry

    from .gradebook import final_score

    scores = {}
    with Gradebook(course.config().CourseDirectory.db_url) as gb:
        try:
            for sub in gb.find_assignment(assignment).submissions:
                scores[sub.student.id] = final_score(sub)
        except MissingEntry:
            pass
    return scores




def exercise_state(ex: dict) -> str:
    """"full", "partial" (attempted, points lost) or "not attempted" (its function still raises
    NotImplementedError, as released: every failed check that says why says so). A function that is not defined
    is attempted work that did not run (a cell that timed out, a syntax error)."""
    if ex["score"] >= ex["max_score"]:
        return "full"
    failed = [c for c in ex.get("checks", []) if not c["passed"]]
    # grades.json keeps the messages of visible checks only (a hidden check's is redacted): those say it.
    said = [c.get("message", "") for c in failed if c.get("message") and c.get("visible", True)]
    if ex["score"] == 0 and said and all(_NOT_WRITTEN in m for m in said):
        return "not attempted"
    return "partial"


def _pts(ex: dict) -> str:
    return f"{ex['max_score'] - ex['score']:g}"


def _links(course: Course, assignment: str, student: str) -> list[tuple[str, str]]:
    """Links, relative to reports/<assignment>/, to the student's graded notebooks and feedback pages."""
    links = []
    for folder, label, suffix in (("autograded", "graded", ".ipynb"), ("feedback", "feedback", ".html")):
        found = sorted((course.root / folder / student / assignment).glob(f"*{suffix}"))
        links += [(f"{label} {p.name}", f"../../{folder}/{student}/{assignment}/{p.name}") for p in found]
    return links


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

    # An exercise still raising NotImplementedError was not attempted: it is counted apart,
    # and its failures are not misconceptions.
    status: dict[tuple[str, str], str] = {}  # (student, exercise) -> "full", "partial", "not attempted"
    check_pass: dict[tuple[str, str], list[bool]] = defaultdict(list)
    hint_students: dict[tuple[str, str], set] = defaultdict(set)
    for r in results:
        for ex in r["exercises"]:
            name = ex["id"].split("/", 1)[-1]
            state = exercise_state(ex)
            status[(r["student"], name)] = state
            if state == "not attempted":
                continue
            for c in ex.get("checks", []):
                check_pass[(name, c["name"])].append(c["passed"])
                if not c["passed"] and c.get("hint"):
                    hint_students[(name, c["hint"])].add(r["student"])

    names = list(dict.fromkeys(name for _, name in status))
    counts = {name: Counter(state for (_, n), state in status.items() if n == name) for name in names}
    n = max(len(results), 1)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1.2))
    left = [0.0] * len(names)
    for state, colour in (("full", "#55a868"), ("partial", "#dd8452"), ("not attempted", "#c8c8c8")):
        widths = [100 * counts[name][state] / n for name in names[::-1]]
        ax.barh(names[::-1], widths, left=left, color=colour, label=state if state != "full" else "full marks")
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlim(0, 100)
    ax.set_title("each exercise: full marks, points lost, not attempted")
    ax.set_xlabel("% of submissions")
    ax.set_ylabel("exercise")
    ax.legend(loc="lower right", fontsize=8)
    pass_rates = _figure_png(fig)
    plt.close(fig)

    flagged = [r for r in results if r.get("error") or r.get("events") or r.get("not_graded")]
    seconds = [r.get("seconds", 0) for r in results]
    total_seconds = sum(seconds)

    def links_table(header, rows):
        """A table whose last column holds (text, relative link) pairs."""
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = ""
        for *cells, links in rows:
            anchors = ", ".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a>' for text, href in links)
            body += "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + f"<td>{anchors}</td></tr>"
        return f"<table><tr>{head}</tr>{body}</table>"

    def table(header, rows):
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    exercise_rows = [(name, counts[name]["full"], counts[name]["partial"], counts[name]["not attempted"])
                     for name in names]
    check_rows = [(ex, check, f"{100 * sum(v) / len(v):.0f}%", len(v)) for (ex, check), v in check_pass.items()]
    ranked = sorted(hint_students.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:15]
    hint_rows = [(len(students), ex, hint) for (ex, hint), students in ranked]
    flag_rows = [(r["student"], f"{r['score']:g}", r.get("error") or "; ".join(r.get("events", []))) for r in flagged]
    student_rows = []
    for r in sorted(everything, key=lambda r: r.get("student") or ""):
        links = _links(course, assignment, r["student"])
        if r.get("not_graded"):
            student_rows.append((r["student"], "not graded", "", links))
            continue
        lost = [f"{name} ({'not attempted' if status.get((r['student'], name)) == 'not attempted' else 'lost ' + _pts(ex)})"
                for ex in r["exercises"] if ex["score"] < ex["max_score"]
                for name in [ex["id"].split("/", 1)[-1]]]
        if r.get("error") and not any(ex.get("checks") for ex in r["exercises"]):
            lost = ["nothing could be graded (see the submissions that need a look)"]
        student_rows.append((r["student"], f"{book.get(r['student'], r['score']):g} / {r['max_score']:g}",
                             ", ".join(lost) or "full marks", links))
    flag_rows += [(r["student"], "not graded", f"the grading machinery failed ({r['not_graded']}); grade again to "
                                              f"grade it") for r in not_graded]
    mean = sum(scores) / len(scores) if scores else 0
    from .grading import kernel_test_cells_note

    note = kernel_test_cells_note(course, assignment)
    from . import item_analysis as items, similarity as alike

    item_analysis = items.section_html(results)
    similarity = alike.section_html(course.root, assignment)
    contents = " ".join(f'<a href="#{anchor}">{title}</a>' for anchor, title in (
        ("exercises", "Exercises"), ("checks", "Checks"), ("hints", "Common misconceptions"),
        ("item-analysis", "Item analysis"), ("needs-a-look", "Submissions that need a look"),
        ("similarity", "Similar submissions"), ("students", "Students")))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(assignment)} report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}th{{background:#f3f3f3}}
nav a{{margin-right:.8em}}tr.flagged td{{background:#fff1e6}}.side{{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:1em}}
.side pre{{background:#f7f7f7;padding:.5em;line-height:1.45;overflow-x:auto;font-size:.8em;margin:.3em 0}}mark{{background:#ffe08a}}
.exercise{{margin:.8em 0 0;font-weight:bold;color:#555}}</style></head><body>
<h1>{html.escape(assignment)}: class report</h1>
<nav>On this page: {contents}</nav>
<p>{len(results)} submissions graded{f", {len(not_graded)} not graded (see below)" if not_graded else ""}, mean score {mean:.1f} of {max_score:g}; grading took {total_seconds:.0f} s of kernel time
(median {sorted(seconds)[len(seconds) // 2] if seconds else 0:.1f} s per submission).</p>
{f"<p><b>Note:</b> {html.escape(note)}</p>" if note else ""}
<img alt="score histogram" src="data:image/png;base64,{histogram}">
<h2 id="exercises">Exercises</h2><img alt="pass rates" src="data:image/png;base64,{pass_rates}">
{table(["exercise", "full marks", "points lost", "not attempted"], exercise_rows)}
<p>Not attempted: the exercise still raises <code>NotImplementedError</code>, as released. The checks and
hints below count attempted work only.</p>
<h2 id="checks">Checks</h2>{table(["exercise", "check", "passed", "attempts"], check_rows)}
<h2 id="hints">Most frequent hints (common misconceptions)</h2>{table(["students", "exercise", "hint"], hint_rows) if hint_rows else "<p>None: every check of attempted work passed.</p>"}
{item_analysis}
<h2 id="needs-a-look">Submissions that need a look</h2>{table(["student", "score", "what happened"], flag_rows) if flag_rows else "<p>None timed out, crashed or was unreadable.</p>"}
{similarity}
<h2 id="students">Students</h2>{links_table(["student", "score", "points lost in", "graded notebook, feedback"], student_rows)}
</body></html>"""
    out = course.root / "reports" / assignment / "report.html"
    out.write_text(page)
    return out
