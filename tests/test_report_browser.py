"""The class report in a real browser: Debian's headless Chromium opens reports/<assignment>/report.html.

A small class of the fixture course is graded (full marks, points lost, a syntax error, exercises not attempted,
one notebook under another name, a file that is not a notebook), two students get feedback pages, and the
report is opened from disk as an instructor opens it. `grader similarity` runs on the class plus a student who copied
another's longer answer. Nothing may go wrong in the console; the per-student table
shows every student with the score grades.json has, and each of its links opens a file that exists (a feedback
page without errors of its own); the exercise states count what grades.json says.

Screenshots of the page and of each section are kept as artefacts (tests/artifacts/screenshots/, or
LLMCOURSE_SCREENSHOTS). With LLMCOURSE_DOC_SCREENSHOTS=1 the sections' screenshots are also copied to
docs/screenshots/report-<section>.png, for the documentation (a normal run leaves tracked files alone).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest

from grader.cli import main
from grader.report import exercise_state

from .basics_class import CORRECT, student_notebook
from .conftest import copy_fixture_course, write_submission
from .services.lab import chromium_page, screenshots_dir

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DOC_SCREENSHOTS = os.environ.get("LLMCOURSE_DOC_SCREENSHOTS") == "1"
ASSIGNMENT = "00_basics"
FEEDBACK_FOR = ("ada", "one_wrong")  # students whose feedback pages are generated (and linked from the report)
# The report's sections, by their heading: what each screenshot is called.
SECTIONS = {
    "exercises": "Exercises",
    "hints": "Most frequent hints (common misconceptions)",
    "needs-a-look": "Submissions that need a look",
    "students": "Students",
    "item-analysis": "Item analysis of the checks",
    "similarity": "Similar submissions",
}
# A longer answer of `add`, with helpers, and a copy of it: names changed, helpers in another order.
LONG_ADD = '''def same_shape(a, b):
    """Both shapes, checked to be equal."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    return a.shape


def elementwise(op, a, b):
    same_shape(a, b)
    out = torch.empty_like(a)
    flat_a, flat_b, flat_out = a.reshape(-1), b.reshape(-1), out.view(-1)
    for i in range(flat_a.numel()):
        flat_out[i] = op(flat_a[i], flat_b[i])
    return out


def add(a, b):
    return elementwise(lambda x, y: x + y, a, b)
'''
COPIED_ADD = '''def add(a, b):
    return apply_pairwise(lambda u, v: u + v, a, b)


def apply_pairwise(fn, a, b):
    check_shapes(a, b)  # same shapes only
    result = torch.empty_like(a)
    xs, ys, rs = a.reshape(-1), b.reshape(-1), result.view(-1)
    for j in range(xs.numel()):
        rs[j] = fn(xs[j], ys[j])
    return result


def check_shapes(a, b):
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    return a.shape
'''


@pytest.fixture(scope="module")
def graded_report(tmp_path_factory):
    """(report.html, {student: grades.json's result}): a class of six graded in a course of its own."""
    course = copy_fixture_course(tmp_path_factory.mktemp("report-course") / "course")
    assert main(["--course", str(course), "build"]) == 0
    subs = tmp_path_factory.mktemp("report-submissions")
    write_submission(subs, "ada", student_notebook(course, CORRECT))
    write_submission(subs, "one_wrong", student_notebook(course, {**CORRECT, "scale": "def scale(x, factor):\n"
                                                                                      "    return x + factor"}))
    write_submission(subs, "syntax", student_notebook(course, {**CORRECT, "scale": "def scale(x, factor)\n"
                                                                                   "    return x * factor"}))
    write_submission(subs, "started", student_notebook(course, {"add": CORRECT["add"]}))
    write_submission(subs, "misnamed", student_notebook(course, CORRECT), name="basics (1)")
    write_submission(subs, "corrupt", '{"cells": [ this is not json')
    assert main(["--course", str(course), "grade", ASSIGNMENT, "--submissions", str(subs), "--jobs", "2"]) == 0

    # Similarity over the class and two more notebooks (not graded: similarity needs none).
    alike = tmp_path_factory.mktemp("similarity-submissions")
    shutil.copytree(subs, alike, dirs_exist_ok=True)
    write_submission(alike, "lee", student_notebook(course, {**CORRECT, "add": LONG_ADD}))
    write_submission(alike, "lee_copy", student_notebook(course, {**CORRECT, "add": COPIED_ADD}))
    assert main(["--course", str(course), "similarity", ASSIGNMENT, "--submissions", str(alike)]) == 0

    from grader.course import Course

    api = Course(course).api()
    for student in FEEDBACK_FOR:
        outcome = api.generate_feedback(ASSIGNMENT, student)
        assert outcome["success"], outcome.get("log")
    assert main(["--course", str(course), "report", ASSIGNMENT]) == 0  # the report again, now with feedback
    reports = course / "reports" / ASSIGNMENT
    results = {r["student"]: r for r in json.loads((reports / "grades.json").read_text())}
    assert set(results) == {"ada", "one_wrong", "syntax", "started", "misnamed", "corrupt"}
    return reports / "report.html", results


# What a feedback page may ask of the network: nbconvert's template loads MathJax from a CDN to typeset math.
FEEDBACK_REMOTE = re.compile(r"https://cdnjs\.cloudflare\.com/ajax/libs/mathjax/[^?]+/latest\.js(\?.*)?")


class Watched:
    """A page's console errors and uncaught exceptions, collected from before it opens."""

    def __init__(self, page):
        self.errors: list[str] = []
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(f"console: {msg.text}"))
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))


def answer_remote_requests(context) -> list[str]:
    """Answer every http(s) request of the browser with an empty 200 and list its URL.

    The pages are files on disk, opened with no network: a request that goes out is noted here (and asserted
    on), rather than failing as "Failed to load resource" in the console of a machine that is offline."""
    asked: list[str] = []

    def answer(route):
        asked.append(route.request.url)
        route.fulfill(status=200, body="", content_type="text/plain")

    context.route(re.compile(r"^https?://"), answer)
    return asked


def local_file(url: str) -> Path:
    """The file a file:// URL names (its #fragment left off)."""
    parsed = urlparse(urldefrag(url).url)
    assert parsed.scheme == "file", url
    return Path(unquote(parsed.path))


def section_box(page, heading: str) -> dict:
    """The page area of a section: its <h2> and everything after it up to the next <h2>."""
    box = page.evaluate("""heading => {
        const h2 = [...document.querySelectorAll('h2')].find(h => h.textContent.trim() === heading);
        if (!h2) return null;
        const rects = [h2.getBoundingClientRect()];
        for (let el = h2.nextElementSibling; el && el.tagName !== 'H2'; el = el.nextElementSibling)
            rects.push(el.getBoundingClientRect());
        const top = Math.min(...rects.map(r => r.top)), bottom = Math.max(...rects.map(r => r.bottom));
        const left = Math.min(...rects.map(r => r.left)), right = Math.max(...rects.map(r => r.right));
        const pad = 8;
        return {x: Math.max(0, left - pad + window.scrollX), y: Math.max(0, top - pad + window.scrollY),
                width: right - left + 2 * pad, height: bottom - top + 2 * pad};
    }""", heading)
    assert box, f"the report has no section {heading!r}"
    return box


def section_rows(page, heading: str) -> list[list[str]]:
    """The cells of the data rows of the table that follows a section's heading."""
    table = page.locator(f"xpath=//h2[normalize-space()={json.dumps(heading)}]/following-sibling::table[1]")
    return [row.locator("td").all_inner_texts() for row in table.locator("tr:has(td)").all()]


def test_report_opens_cleanly_and_every_student_link_resolves(graded_report):
    started = time.monotonic()
    report, results = graded_report
    shots = screenshots_dir()
    docs = REPO / "docs" / "screenshots"

    with chromium_page(viewport=(1200, 900)) as page:
        remote = answer_remote_requests(page.context)
        watched = Watched(page)
        page.goto(report.as_uri(), wait_until="load")
        page.get_by_role("heading", name=f"{ASSIGNMENT}: class report").wait_for()
        # Both figures are drawn (data: URLs that decode), not broken images.
        images = page.locator("img")
        assert images.count() == 2
        assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")

        # Links inside the page lead to elements that exist.
        for href in page.locator("a[href^='#']").evaluate_all("as => as.map(a => a.getAttribute('href'))"):
            assert href == "#" or page.locator(f"[id={json.dumps(href[1:])}], a[name={json.dumps(href[1:])}]").count(), \
                f"{href} leads nowhere in the report"

        # The per-student table: every student of grades.json, with its score, in name order.
        table = page.locator("#students + table")
        rows = table.locator("tr:has(td)")
        shown = {cells[0]: cells for cells in (row.locator("td").all_inner_texts() for row in rows.all())}
        assert list(shown) == sorted(results)
        for student, r in results.items():
            want = "not graded" if r.get("not_graded") else f"{r['score']:g} / {r['max_score']:g}"
            assert shown[student][1] == want, (student, shown[student])
        assert shown["ada"][2] == "full marks"
        assert "scale (lost 3)" in shown["one_wrong"][2]
        assert "scale (not attempted)" in shown["started"][2] and "mean_rows (not attempted)" in shown["started"][2]

        # Every link in it opens a file that exists: each graded student's notebook, and the feedback pages made.
        hrefs = [urljoin(report.as_uri(), href)
                 for href in table.locator("a[href]").evaluate_all("as => as.map(a => a.getAttribute('href'))")]
        linked = [local_file(url) for url in hrefs]
        missing = [str(p) for p in linked if not p.is_file()]
        assert not missing, f"the report links to files that do not exist: {missing}"
        graded = [s for s, r in results.items() if not r.get("error") and not r.get("not_graded")]
        assert {p.parts[-3] for p in linked if p.suffix == ".ipynb"} == set(graded)
        assert sorted(p.parts[-3] for p in linked if p.suffix == ".html") == sorted(FEEDBACK_FOR)

        # The sections, drawn as they are: the whole page, then each section.
        page.screenshot(path=str(shots / "report-page.png"), full_page=True)
        boxes = {name: section_box(page, heading) for name, heading in SECTIONS.items()}
        for name, box in boxes.items():
            page.screenshot(path=str(shots / f"report-{name}.png"), clip=box, full_page=True)

        # Each section has content. The exercise states count what grades.json says, in students.
        graded_results = [r for r in results.values() if not r.get("not_graded")]
        states = Counter((ex["id"].split("/", 1)[-1], exercise_state(ex)) for r in graded_results
                         for ex in r["exercises"])
        exercise_rows = section_rows(page, SECTIONS["exercises"])
        assert [row[0] for row in exercise_rows] == ["add", "scale", "mean_rows"]
        for name, full, partial, not_attempted in exercise_rows:
            assert (int(full), int(partial), int(not_attempted)) == \
                (states[name, "full"], states[name, "partial"], states[name, "not attempted"]), name
        assert int(exercise_rows[1][3]) >= 1 and int(exercise_rows[1][2]) >= 2  # started; one_wrong and syntax
        hints = section_rows(page, SECTIONS["hints"])
        assert hints and all(1 <= int(n) <= len(graded_results) for n, _, _ in hints), hints
        assert any(ex == "scale" and "Multiply every entry by the factor" in hint for _, ex, hint in hints), hints
        flagged = {row[0]: row[2] for row in section_rows(page, SECTIONS["needs-a-look"])}
        assert "not valid JSON" in flagged["corrupt"]
        assert "syntax error" in flagged["syntax"]
        assert "basics (1).ipynb was graded as basics.ipynb" in flagged["misnamed"]
        assert "ada" not in flagged and "one_wrong" not in flagged

        # The table of contents leads to every section, the new ones included.
        contents = page.locator("nav a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
        assert contents == ["#exercises", "#checks", "#hints", "#item-analysis", "#needs-a-look", "#similarity",
                            "#students"], contents
        for anchor in ("item-analysis", "similarity"):
            page.locator(f"nav a[href='#{anchor}']").click()
            assert page.evaluate("location.hash") == f"#{anchor}"
            assert -1 < page.evaluate(f"document.getElementById('{anchor}').getBoundingClientRect().top") < 900

        # Item analysis: a row per exercise and per check, as grader.item_analysis computes it from grades.json.
        from grader.item_analysis import analyse

        items = analyse(list(results.values()))
        shown = section_rows(page, SECTIONS["item-analysis"])
        assert [(row[0], row[1] if i.check else "", int(row[2]), row[3]) for row, i in zip(shown, items)] == \
            [(i.exercise, i.check, i.attempts, f"{100 * i.difficulty:.0f}%") for i in items]
        assert len(shown) == len(items) and "whole exercise (full marks)" in shown[0][1]
        assert page.get_by_text("point-biserial correlation", exact=False).count() == 1

        # Similarity: the copy first, and side by side, matching lines highlighted on both sides.
        pairs = section_rows(page, SECTIONS["similarity"])
        assert pairs[0][1] == "lee and lee_copy" and pairs[0][2] == "100.0%", pairs
        assert page.get_by_text("evidence for a person, not a verdict", exact=False).count() == 1
        side = page.locator("#pair-1 ~ div.side").first
        assert side.locator("pre").count() == 2
        assert all(side.locator("pre").nth(i).locator("mark").count() >= 10 for i in range(2))
        page.locator("a[href='#pair-1']").click()
        assert page.evaluate("location.hash") == "#pair-1"

        if DOC_SCREENSHOTS:
            docs.mkdir(parents=True, exist_ok=True)
            for name in SECTIONS:  # the sections (the whole page would only repeat them)
                shutil.copyfile(shots / f"report-{name}.png", docs / f"report-{name}.png")

        assert not watched.errors, watched.errors
        assert not remote, f"the report is not self-contained: it asked the network for {remote}"

        # Each feedback page opens without errors of its own, and needs nothing from the network but MathJax.
        for url in (u for u in hrefs if u.endswith(".html")):
            feedback = page.context.new_page()
            seen = Watched(feedback)
            feedback.goto(url, wait_until="load")
            feedback.get_by_text("scale", exact=False).first.wait_for()
            feedback.close()
            assert not seen.errors, f"{url}: {seen.errors}"
        assert all(FEEDBACK_REMOTE.fullmatch(u) for u in remote), remote

        # A click on a link takes the browser where the link says.
        link = table.locator("a", has_text="feedback basics.html").first
        target = urljoin(report.as_uri(), link.get_attribute("href"))
        with page.expect_navigation():
            link.click()
        assert page.url == target and local_file(page.url).parts[-3:] == (FEEDBACK_FOR[0], ASSIGNMENT, "basics.html")
        page.get_by_text("scale", exact=False).first.wait_for()

    assert not watched.errors, watched.errors
    print(f"report browser test: {time.monotonic() - started:.0f} s")
