"""End to end: `grader build`, `grader grade` and `grader check` on the fixture course.

One class of submissions is graded once (two at a time), and each test reads its own student's
result: the reference solution, a blank notebook, one wrong exercise, tampering, stderr noise, an
endless loop and a corrupt file.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from grader.cli import main

from .basics_class import CORRECT, student_notebook
from .conftest import cell_by_id, read, write_submission

pytestmark = pytest.mark.slow

POINTS = {"00_basics/add": 4.0, "00_basics/scale": 3.0, "00_basics/mean_rows": 3.0}


TAMPER_SETUP = '''
import builtins, torch, numpy.testing
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
numpy.testing.assert_allclose = lambda *a, **k: None
builtins.all = lambda *a, **k: True
builtins.abs = lambda x: 0
class AlwaysEqual:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
    def __getattr__(self, name): return self
    def __call__(self, *a, **k): return self
leaked = []
for secret in [GRADER_FILE, CHECKS_FILE]:
    try:
        leaked.append(open(secret).read()[:50])
    except Exception as exc:
        print("could not read", secret, type(exc).__name__)
print("LEAKED" if leaked else "NOTHING LEAKED")
'''


@pytest.fixture(scope="module")
def graded_class(fixture_course, tmp_path_factory):
    course = fixture_course
    subs = tmp_path_factory.mktemp("submissions")
    write_submission(subs, "ada", student_notebook(course, CORRECT))
    write_submission(subs, "blank", read(course / "release" / "00_basics" / "basics.ipynb"))
    write_submission(subs, "one_wrong", student_notebook(course, {**CORRECT, "scale": "def scale(x, factor):\n    return x + factor"}))

    import grader

    grader_file = Path(grader.__file__).resolve()
    checks_file = course / "fixture_checks" / "hidden.py"
    tamper = student_notebook(course, {
        "add": CORRECT["add"],
        "scale": "def scale(x, factor):\n    return AlwaysEqual()",
        "mean_rows": "def mean_rows(x):\n    return torch.zeros(())",
    }, extra_cells=[(2, f"GRADER_FILE = {str(grader_file)!r}\nCHECKS_FILE = {str(checks_file)!r}\n" + TAMPER_SETUP)])
    cell_by_id(tamper, "check_scale").source = 'print("scale: all checks passed (3 of 3 points)")'
    tamper.cells.remove(cell_by_id(tamper, "check_mean_rows"))
    write_submission(subs, "tamper", tamper)

    noisy = student_notebook(course, {**CORRECT, "add": "import sys, warnings\nwarnings.warn('a warning on stderr')\n"
                                                        "sys.stderr.write('more noise on stderr\\n')\n" + CORRECT["add"]})
    write_submission(subs, "noisy", noisy)
    loop = student_notebook(course, {**CORRECT, "scale": "def scale(x, factor):\n    return x * factor\nwhile True:\n    pass"})
    write_submission(subs, "loop", loop)
    write_submission(subs, "syntax", student_notebook(course, {**CORRECT, "scale": "def scale(x, factor)\n    return x * factor"}))
    write_submission(subs, "corrupt", '{"cells": [ this is not json')

    out = tmp_path_factory.mktemp("out") / "grades.json"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["--course", str(course), "grade", "00_basics", "--submissions", str(subs), "--jobs", "2", "--json"])
    assert code == 0
    out.write_text(buffer.getvalue())
    results = json.loads(buffer.getvalue())
    return {r["student"]: r for r in results}, course


def by_exercise(result: dict) -> dict[str, float]:
    return {ex["id"]: ex["score"] for ex in result["exercises"]}


def test_json_has_the_documented_shape(graded_class):
    results, _ = graded_class
    r = results["ada"]
    assert {"assignment", "student", "score", "max_score", "exercises"} <= set(r)
    ex = r["exercises"][0]
    assert {"id", "score", "max_score", "checks"} <= set(ex)
    assert {"name", "passed", "points", "message"} <= set(ex["checks"][0])


def test_reference_solution_gets_full_marks(graded_class):
    results, _ = graded_class
    assert results["ada"]["score"] == results["ada"]["max_score"] == 10
    assert by_exercise(results["ada"]) == POINTS


def test_blank_release_scores_zero_on_every_graded_cell(graded_class):
    results, course = graded_class
    assert results["blank"]["score"] == 0
    assert all(v == 0 for v in by_exercise(results["blank"]).values())
    from nbgrader.api import Gradebook

    from grader.course import Course

    with Gradebook(Course(course).config().CourseDirectory.db_url) as gb:
        sub = gb.find_submission("00_basics", "blank")
        assert sub.score == 0 and sub.max_score == 10
        assert gb.find_submission("00_basics", "ada").score == 10


def test_one_wrong_exercise_loses_exactly_its_points(graded_class):
    results, _ = graded_class
    assert by_exercise(results["one_wrong"]) == {**POINTS, "00_basics/scale": 0.0}
    failed = [c for ex in results["one_wrong"]["exercises"] for c in ex["checks"] if not c["passed"]]
    assert failed and all(c["hint"] for c in failed)


def test_tampering_earns_nothing(graded_class):
    results, course = graded_class
    scores = by_exercise(results["tamper"])
    assert scores["00_basics/add"] == 4  # a correct exercise stays correct despite the patched torch
    assert scores["00_basics/scale"] == 0  # always-equal object, edited check cell
    assert scores["00_basics/mean_rows"] == 0  # deleted check cell
    graded = read(course / "autograded" / "tamper" / "00_basics" / "basics.ipynb")
    printed = "".join(o.get("text", "") for c in graded.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "NOTHING LEAKED" in printed and "LEAKED\n" not in printed.replace("NOTHING LEAKED", "")
    # The instructor is told: the grade table's notes and the report's "needs a look" show the events.
    assert results["tamper"]["events"][:2] == [
        "basics.ipynb: check cell(s) check_scale edited (grading used the released ones)",
        "basics.ipynb: check cell(s) check_mean_rows deleted (grading restored them)"]
    assert not any("check cell" in e for r in results.values() if r["student"] != "tamper" for e in r["events"])


def test_stderr_noise_costs_nothing(graded_class):
    results, _ = graded_class
    assert results["noisy"]["score"] == 10


def test_endless_loop_times_out_and_later_exercises_are_graded(graded_class):
    results, _ = graded_class
    scores = by_exercise(results["loop"])
    assert scores["00_basics/add"] == 4 and scores["00_basics/mean_rows"] == 3
    assert scores["00_basics/scale"] == 0  # its definition came before the loop, but the cell never finished
    assert any("timed out" in e for e in results["loop"]["events"])


def test_a_syntax_error_is_named_as_one(graded_class):
    results, _ = graded_class
    syntax = results["syntax"]
    assert by_exercise(syntax) == {**POINTS, "00_basics/scale": 0.0}
    assert [e for e in syntax["events"] if "syntax error" in e] == \
        [e for e in syntax["events"] if re.fullmatch(r"cell \d+: a syntax error \(SyntaxError: .+\), so nothing in that cell ran", e)] != []
    scale = next(ex for ex in syntax["exercises"] if ex["id"] == "00_basics/scale")
    failed = [c for c in scale["checks"] if not c["passed"] and c["visible"]]
    assert failed and all(c["message"].startswith("Your answer cell, cell ") and "has a syntax error" in c["message"]
                          for c in failed), failed


def test_corrupt_notebook_is_reported_and_the_batch_goes_on(graded_class):
    results, _ = graded_class
    assert results["corrupt"]["score"] == 0
    assert "not valid JSON" in results["corrupt"]["error"]
    assert len(results) == 8


def test_grader_check_on_the_source_reports_full_marks_as_json(fixture_course, capsys):
    code = main(["--course", str(fixture_course), "check", str(fixture_course / "source" / "00_basics" / "basics.ipynb"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["score"] == data["max_score"] == 10
    assert data["notebook"].endswith("basics.ipynb") and data["assignment"] == "00_basics"


def test_grader_check_says_how_far_it_got(fixture_course, capsys, monkeypatch):
    """At a terminal, `grader check` rewrites one line as it goes: the cell it runs, the exercises checked."""
    from grader.cli import _show_progress

    seen = []
    monkeypatch.setattr("grader.preprocessors.PROGRESS", lambda *counts: seen.append(counts))
    assert main(["--course", str(fixture_course), "check", str(fixture_course / "source" / "00_basics" / "basics.ipynb")]) == 0
    cells, exercises = seen[0][1], seen[0][3]
    assert seen[0] == (0, cells, 0, exercises) and exercises == 3 and cells > exercises
    assert all(a[0] <= b[0] and a[2] <= b[2] for a, b in zip(seen, seen[1:])), seen
    assert seen[-1][0] >= cells - 1 and seen[-1][2] == exercises, seen
    capsys.readouterr()
    _show_progress(12, 40, 3, 11)
    assert capsys.readouterr().err.endswith("running your notebook: cell 13 of 40; 3 of 11 exercises checked")


def test_grader_check_on_the_release_names_each_unwritten_exercise_once(fixture_course, capsys):
    code = main(["--course", str(fixture_course), "check", str(fixture_course / "release" / "00_basics" / "basics.ipynb")])
    out = capsys.readouterr().out
    assert code == 1
    assert "Total: 0 / 10" in out and out.count("not written yet") == 3
    todo = out.split("What to look at:")[1].strip().splitlines()
    assert [line.split(":")[0] for line in todo] == ["- add", "- scale", "- mean_rows"], out
    assert all("is not implemented yet" in line and "failing check(s) will say more" in line for line in todo), out


def test_grader_check_lists_every_failing_check_with_its_hint(fixture_course, tmp_path, capsys):
    """Once an exercise is written, each of its failing checks is listed with its hint: two bugs, one round."""
    nb = nbformat.read(str(fixture_course / "source" / "00_basics" / "basics.ipynb"), as_version=4)
    for cell in nb.cells:
        if "def add(" in cell.source:
            cell.source = "def add(a, b):\n    return a - b\n"
    path = tmp_path / "basics.ipynb"
    nbformat.write(nb, str(path))
    assert main(["--course", str(fixture_course), "check", str(path)]) == 1
    out = capsys.readouterr().out
    failing = [line for line in out.split("What to look at:")[1].splitlines() if line.startswith("- add, ")]
    assert len(failing) >= 2 and out.count("Hint:") >= 2 and "not written yet" not in out, out


def test_build_check_passes_then_names_a_stale_file(fixture_course, capsys):
    assert main(["--course", str(fixture_course), "build", "--check"]) == 0
    release = fixture_course / "release" / "00_basics" / "basics.ipynb"
    original = release.read_text()
    try:
        nb = read(release)
        nb.cells[0].source += "\nstale"
        nbformat.write(nb, str(release))
        assert main(["--course", str(fixture_course), "build", "--check"]) == 1
        assert str(release) in capsys.readouterr().out
    finally:
        release.write_text(original)


def test_build_writes_each_check_cells_points_from_its_checks(tmp_path, capsys):
    """Points are set on checks only: a check cell worth the wrong amount is named by --check, then corrected by
    build; a cell whose checks do not exist stops the build with the reason."""
    from .conftest import copy_fixture_course

    course = copy_fixture_course(tmp_path / "course")
    source = course / "source" / "00_basics" / "basics.ipynb"
    nb = read(source)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") and "check(" in c.source)
    right = cell.metadata["nbgrader"]["points"]
    cell.metadata["nbgrader"]["points"] = right + 5
    nbformat.write(nb, str(source))
    grade_id = cell.metadata["nbgrader"]["grade_id"]

    assert main(["--course", str(course), "build", "--check"]) == 1
    out = capsys.readouterr().out
    assert f"check cell {grade_id!r} is worth {right + 5:g} points, but its checks add up to {right:g}" in out

    assert not (course / "exchange").exists()
    assert main(["--course", str(course), "build"]) == 0
    out = capsys.readouterr().out
    assert f"check cell {grade_id!r} is now worth {right:g}" in out
    # nbgrader's exchange is made too, as nbgrader makes it (everyone may write: students submit into it)
    assert f"exchange  {course / 'exchange'}" in out and (course / "exchange").stat().st_mode & 0o777 == 0o777
    assert next(c for c in read(source).cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id) \
        .metadata["nbgrader"]["points"] == right
    assert main(["--course", str(course), "build", "--check"]) == 0

    nb = read(source)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    cell.source = cell.source.replace("00_basics/", "00_basics/no_such_")
    nbformat.write(nb, str(source))
    capsys.readouterr()
    assert main(["--course", str(course), "build"]) == 2
    assert "calls no check that exists" in capsys.readouterr().err


def test_feedback_shows_hints_but_never_hidden_checks(graded_class):
    results, course = graded_class
    from grader.course import Course

    api = Course(course).api()
    outcome = api.generate_feedback("00_basics", "one_wrong")
    assert outcome["success"], outcome.get("log")
    html = (course / "feedback" / "one_wrong" / "00_basics" / "basics.html").read_text()
    assert "Hint:" in html and "scale" in html
    assert "HIDDEN TESTS" not in html and "hidden=True" not in html


def test_report_is_a_self_contained_page(graded_class):
    _, course = graded_class
    page = (course / "reports" / "00_basics" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "corrupt" in page and "not valid JSON" in page  # the unreadable submission is listed
    assert "Multiply every entry by the factor" in page  # a frequent hint
    assert "timed out" in page  # the endless loop


def test_report_counts_students_and_keeps_unattempted_work_apart(graded_class):
    import re

    from grader.report import exercise_state

    results, course = graded_class
    page = (course / "reports" / "00_basics" / "report.html").read_text()
    # The blank notebook attempted nothing: each exercise counts it as not attempted, not as wrong.
    blank = results["blank"]
    assert [exercise_state(ex) for ex in blank["exercises"]] == ["not attempted"] * 3
    assert [exercise_state(ex) for ex in results["one_wrong"]["exercises"]] == ["full", "partial", "full"]
    loop_scale = next(ex for ex in results["loop"]["exercises"] if ex["id"] == "00_basics/scale")
    assert exercise_state(loop_scale) == "partial"  # written, but its cell never finished: attempted
    row = re.search(r"<tr><td>scale</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td></tr>", page)
    assert row, page
    full, partial, not_attempted = map(int, row.groups())
    assert not_attempted == sum(exercise_state(ex) == "not attempted" for r in results.values()
                                for ex in r["exercises"] if ex["id"] == "00_basics/scale") >= 1
    assert full + partial + not_attempted == sum(1 for r in results.values() if r["exercises"] and not r["not_graded"])
    # Hints count students, among attempted work: the blank notebook's "not implemented" is no misconception.
    hints = re.findall(r"<tr><td>(\d+)</td><td>(\w+)</td><td>([^<]*)</td></tr>", page.split("common misconceptions")[1])
    assert hints and all(int(n) <= len(results) for n, _, _ in hints)
    # One row per student, linked to the graded notebook.
    students = page.split('id="students"')[1]
    assert all(f"<td>{name}</td>" in students for name in results)
    assert '<a href="../../autograded/ada/00_basics/basics.ipynb">graded basics.ipynb</a>' in students
    assert (course / "reports" / "00_basics" / "../../autograded/ada/00_basics/basics.ipynb").resolve().is_file()


def test_a_prose_change_rewrites_only_the_prose_of_the_solution(tmp_path, capsys):
    """Rebuilding after a markdown edit keeps the executed outputs (no new run, no timestamps): solutions/ changes
    where the source did. A code edit runs the notebook again."""
    from grader.build import build_solution
    from grader.course import Course

    from .conftest import copy_fixture_course

    course = copy_fixture_course(tmp_path / "course")
    source = course / "source" / "00_basics" / "basics.ipynb"
    dest = tmp_path / "solutions" / "basics.ipynb"
    assert build_solution(Course(course), source, dest)[0] == "executed"
    before = read(dest)
    assert before.cells and not any("execution" in c.metadata for c in before.cells)  # no timing recorded
    assert build_solution(Course(course), source, dest)[0] == "up to date"

    nb = read(source)
    prose = next(c for c in nb.cells if c.cell_type == "markdown")
    prose.source += "\n\nOne more sentence."
    nbformat.write(nb, str(source))
    assert build_solution(Course(course), source, dest) == ("prose updated", 0.0)
    after = read(dest)
    changed = [i for i, (a, b) in enumerate(zip(before.cells, after.cells)) if a != b]
    assert changed == [nb.cells.index(prose)] and after.cells[changed[0]].source.endswith("One more sentence.")
    assert [c.outputs for c in after.cells if c.cell_type == "code"] == \
           [c.outputs for c in before.cells if c.cell_type == "code"]

    code = next(c for c in nb.cells if c.cell_type == "code" and "print(" in c.source)
    code.source += "\nprint('and a new line')"
    nbformat.write(nb, str(source))
    assert build_solution(Course(course), source, dest)[0] == "executed"
    assert any("and a new line" in o.get("text", "") for c in read(dest).cells if c.cell_type == "code"
               for o in c.outputs)


def test_new_models_or_data_make_the_solution_stale(tmp_path, monkeypatch):
    """A solution records the assets it ran with (the hash of assets/manifest.json): after the models or data sets
    change, `grader build --check` says so and `grader build` executes it again, even with its source unchanged."""
    import json
    import shutil

    from grader import build as B
    from grader.course import Course
    from llmcourse.assets import assets_dir

    from .conftest import copy_fixture_course

    assets = tmp_path / "assets"
    (assets / "models").mkdir(parents=True)
    manifest = json.loads((assets_dir() / "manifest.json").read_text())
    (assets / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("LLMCOURSE_ASSETS", str(assets))
    course = copy_fixture_course(tmp_path / "course")
    shutil.rmtree(course / "solutions", ignore_errors=True)
    assert B.check_build(Course(course), ["00_basics"])  # no solution yet
    B.build(Course(course), ["00_basics"], log=lambda line: None)
    dest = course / "solutions" / "00_basics" / "basics.ipynb"
    stamp = read(dest).metadata["llmcourse"]["assets_sha256"]
    assert stamp == B.assets_hash() and B.check_build(Course(course), ["00_basics"]) == []
    assert B.build_solution(Course(course), course / "source" / "00_basics" / "basics.ipynb", dest)[0] == "up to date"

    manifest["sha256"]["models/course-lm/model.safetensors"] = "0" * 64  # a retrained model
    (assets / "manifest.json").write_text(json.dumps(manifest))
    problems = B.check_build(Course(course), ["00_basics"])
    assert [p.path for p in problems] == [dest] and "other models or data sets" in problems[0].message
    assert B.build_solution(Course(course), course / "source" / "00_basics" / "basics.ipynb", dest)[0] == "executed"
    assert read(dest).metadata["llmcourse"]["assets_sha256"] not in (stamp, None)
    assert B.check_build(Course(course), ["00_basics"]) == []

    # A solution built before solutions recorded their assets is taken as built with today's, and stamped.
    nb = read(dest)
    del nb.metadata["llmcourse"]["assets_sha256"]
    nbformat.write(nb, str(dest))
    assert B.check_build(Course(course), ["00_basics"]) == []
    assert B.build_solution(Course(course), course / "source" / "00_basics" / "basics.ipynb", dest)[0] == "up to date"
    assert read(dest).metadata["llmcourse"]["assets_sha256"] == B.assets_hash()


def test_grading_some_students_again_keeps_the_others_and_manual_grades_reach_grades_csv(tmp_path, capsys):
    """`grader grade --student NAME` grades that student again and leaves everyone else's grades as they were, in
    grades.json, grades.csv and the report; a grade changed by hand in the gradebook reaches grades.csv with
    `grader report`, and `grader export` in each of its layouts."""
    import csv

    from nbgrader.api import Gradebook

    from .conftest import copy_fixture_course

    course = copy_fixture_course(tmp_path / "course")
    assert main(["--course", str(course), "build"]) == 0
    subs = tmp_path / "submissions"
    write_submission(subs, "ada", student_notebook(course, CORRECT))
    write_submission(subs, "bo", student_notebook(course, {"add": CORRECT["add"]}))
    capsys.readouterr()
    assert main(["--course", str(course), "grade", "00_basics", "--submissions", str(subs), "--jobs", "2"]) == 0

    write_submission(subs, "bo", student_notebook(course, CORRECT))  # bo hands in a corrected notebook
    capsys.readouterr()
    assert main(["--course", str(course), "grade", "00_basics", "--submissions", str(subs), "--student", "bo",
                 "--json"]) == 0
    assert [r["student"] for r in json.loads(capsys.readouterr().out)] == ["bo"]
    reports = course / "reports" / "00_basics"
    stored = {r["student"]: r["score"] for r in json.loads((reports / "grades.json").read_text())}
    assert stored == {"ada": 10, "bo": 10}
    assert "2 submissions graded, mean score 10.0 of 10" in (reports / "report.html").read_text()

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:  # what the formgrader's manual grading does
        grade = gb.find_grade("check_scale", "basics", "00_basics", "ada")
        grade.manual_score = 1
        gb.db.commit()
    assert main(["--course", str(course), "report", "00_basics"]) == 0
    with open(reports / "grades.csv") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert rows["ada"]["score"] == "8" and rows["bo"]["score"] == "10"  # 10 - 3 + 1, as nbgrader export says

    # Exports for a platform, from the gradebook: a student without a submission and an assignment not handed in
    # yet are blanks, not zeros.
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        gb.update_or_create_student("cy")
        gb.update_or_create_assignment("00_later")
    capsys.readouterr()
    assert main(["--course", str(course), "export"]) == 0
    assert capsys.readouterr().out.splitlines() == ["student,00_basics,00_later,total", "ada,8,,8", "bo,10,,10",
                                                     "cy,,,0"]
    roster = tmp_path / "canvas.csv"
    roster.write_text("Student,ID,SIS User ID,SIS Login ID,Section,00_basics (77)\n"
                      "    Points Possible,,,,,10\n"
                      "\"Lovelace, Ada\",101,s-ada,ada,Group A,\n\"Bo, Bo\",102,s-bo,bo,Group B,\n"
                      "\"Dee, Dee\",103,s-dee,dee,Group B,\n")
    assert main(["--course", str(course), "export", "--format", "canvas", "--roster", str(roster)]) == 0
    out, err = capsys.readouterr()
    assert list(csv.reader(out.splitlines())) == [
        ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "00_basics (77)", "00_later"],
        ["Points Possible", "", "", "", "", "10", "0"],
        ["Lovelace, Ada", "101", "s-ada", "ada", "Group A", "8", ""],
        ["Bo, Bo", "102", "s-bo", "bo", "Group B", "10", ""],
        ["cy", "", "", "cy", "", "", ""],
        ["Dee, Dee", "103", "s-dee", "dee", "Group B", "", ""],
    ]
    assert "not in the roster" in err and "cy" in err and "no grade in the gradebook" in err and "dee" in err
    moodle = tmp_path / "moodle.csv"
    moodle.write_text("Username,Email address\nada,ada@example.org\n")
    assert main(["--course", str(course), "export", "--format", "moodle", "--roster", str(moodle)]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["Username,Email address,00_basics,00_later",
                                                         "ada,ada@example.org,8,"]
    assert main(["--course", str(course), "export", "--format", "canvas", "--roster", str(moodle)]) == 2
    assert "has no 'SIS Login ID' column" in capsys.readouterr().err

    assert main(["--course", str(course), "grade", "00_basics", "--submissions", str(subs), "--student", "cy"]) == 2
    assert "no submission of 00_basics for cy" in capsys.readouterr().err
