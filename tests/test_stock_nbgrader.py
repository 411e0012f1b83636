"""An instructor's own nbgrader assignment, written with stock features only, grades as stock nbgrader grades it.

Its test cells are plain asserts (one returns a number, nbgrader's partial credit; one has hidden tests); it has a
manually graded answer, a task and a data file next to the notebook. Four students hand it in, one after the due
date and one with a locked test cell edited. It is graded twice: by stock nbgrader (its own preprocessors, in a
course of its own) and by `grader grade` with this course's configuration. Every cell's score must be the same,
and so must the late penalties and, once a person has graded the written answer and the task, the final scores.
`nbgrader export`, `grades.csv`, `generate_feedback` and `release_feedback` then work on this course's side.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbgrader.api import Gradebook

from grader.cli import main
from grader.course import Course

from .basics_class import CORRECT, student_notebook
from .conftest import copy_fixture_course, forget_fixture_checks

pytestmark = pytest.mark.slow

ASSIGNMENT, NAME = "00_plain", "plain"


def _cell(kind: str, source: str, **nbgrader) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
    if nbgrader:
        cell.metadata["nbgrader"] = {"schema_version": 3, "locked": False, "solution": False, "grade": False,
                                     "task": False, **nbgrader}
    return cell


def plain_assignment() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        _cell("markdown", "# Squares\n\nWrite `square(x)`."),
        _cell("code", "DATA = [int(line) for line in open('numbers.txt')]", grade_id="setup", locked=True),
        _cell("code", "def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION",
              grade_id="square", solution=True),
        _cell("code", "assert square(3) == 9", grade_id="test_small", grade=True, locked=True, points=2),
        _cell("code", "assert square(-2) == 4\n### BEGIN HIDDEN TESTS\nassert square(0.5) == 0.25\n"
                      "### END HIDDEN TESTS", grade_id="test_hidden", grade=True, locked=True, points=3),
        _cell("code", "sum(square(n) == n * n for n in DATA) / len(DATA) * 4", grade_id="test_partial", grade=True,
              locked=True, points=4),
        _cell("markdown", "Why is a square never negative?\n\nYOUR ANSWER HERE", grade_id="why", solution=True,
              grade=True, points=2),
        _cell("markdown", "Plot a few squares (graded by hand).", grade_id="task_plot", task=True, locked=True, points=1),
    ]
    return nb


ANSWERS = {
    "alice": "def square(x):\n    return x ** 2",
    "bob": "def square(x):\n    return 10 if x == 3 else x * x",  # test_small fails; partial: 3 of 4
    "carol": "def square(x):\n    return abs(x) * x",  # negative numbers wrong: test_hidden fails
    "dave": "def square(x):\n    return x + x",  # wrong, and dave edits the locked test_small to `assert True`
}
DUE = "2026-03-01 12:00:00 UTC"
HANDED_IN = {"alice": "2026-02-28 10:00:00.000000 UTC", "bob": "2026-03-01 11:59:00.000000 UTC",
             "carol": "2026-03-01 12:30:00.000000 UTC", "dave": "2026-02-27 09:00:00.000000 UTC"}  # carol is late


def cell_scores(db_url: str, students) -> dict:
    """(automatic score, whether it waits for a person, points) of every graded cell of every student."""
    with Gradebook(db_url) as gb:
        return {(s, g.name): (g.auto_score, g.needs_manual_grade, g.max_score) for s in students
                for g in gb.find_submission_notebook(NAME, ASSIGNMENT, s).grades}


def submissions(release: nbformat.NotebookNode, root):
    for student, answer in ANSWERS.items():
        nb = nbformat.from_dict(json.loads(json.dumps(release)))
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == "square":
                cell.source = answer
            if cell.metadata.get("nbgrader", {}).get("grade_id") == "why" and student == "alice":
                cell.source = "A square is a number times itself: two negatives make a positive."
            if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_small" and student == "dave":
                cell.source = "assert True"  # a locked cell edited: nbgrader grades the instructor's version
        folder = root / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, str(folder / f"{NAME}.ipynb"))
        (folder / "numbers.txt").write_text("1\n2\n3\n4\n")
        (folder / "timestamp.txt").write_text(HANDED_IN[student])  # as `nbgrader submit` writes them
        (folder / "submission_secret.txt").write_text(f"secret-of-{student}")
    return root


def hand_grades(db_url: str) -> None:
    """What a person does in the formgrader: points for alice's written answer and her task."""
    with Gradebook(db_url) as gb:
        gb.find_grade("why", NAME, ASSIGNMENT, "alice").manual_score = 1.5
        gb.find_grade("task_plot", NAME, ASSIGNMENT, "alice").manual_score = 1
        gb.db.commit()


def final_scores(db_url: str) -> dict:
    """Each student's score as `nbgrader export` computes it: every cell's points (hand grades included), less the
    late penalty; and the penalty."""
    with Gradebook(db_url) as gb:
        return {s.student.id: (max(0.0, s.score - s.late_submission_penalty), s.late_submission_penalty)
                for s in gb.find_assignment(ASSIGNMENT).submissions}


def test_a_stock_assignment_grades_as_stock_nbgrader_grades_it(tmp_path, capsys):
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    # nbgrader runs the `alembic` command that lies next to this Python (grader.course puts it on PATH for good,
    # as here: a PATH restored after this test would take it away from the tests after it).
    if os.path.dirname(sys.executable) not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    # Stock nbgrader, in a course of its own with nothing of this course's configuration.
    stock = tmp_path / "stock"
    (stock / "source" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(plain_assignment(), str(stock / "source" / ASSIGNMENT / f"{NAME}.ipynb"))
    (stock / "source" / ASSIGNMENT / "numbers.txt").write_text("1\n2\n3\n4\n")
    config = Config()
    config.CourseDirectory.root = str(stock)
    config.CourseDirectory.db_url = f"sqlite:///{stock / 'gradebook.db'}"
    config.Execute.timeout = 60
    config.LateSubmissionPlugin.penalty_method = "zero"
    api = NbGraderAPI(config=config)
    assert api.generate_assignment(ASSIGNMENT)["success"]
    with Gradebook(config.CourseDirectory.db_url) as gb:
        gb.update_or_create_assignment(ASSIGNMENT, duedate=DUE)
    release = nbformat.read(str(stock / "release" / ASSIGNMENT / f"{NAME}.ipynb"), as_version=4)
    submissions(release, stock / "submitted")
    for student in ANSWERS:
        outcome = api.autograde(ASSIGNMENT, student)
        assert outcome["success"], outcome
    expected = cell_scores(config.CourseDirectory.db_url, ANSWERS)
    hand_grades(config.CourseDirectory.db_url)
    expected_final = final_scores(config.CourseDirectory.db_url)

    # This course's configuration, through `grader grade`, with the assignment beside the fixture's own.
    course = copy_fixture_course(tmp_path / "course")
    try:
        (course / "source" / ASSIGNMENT).mkdir(parents=True)
        shutil.copy(stock / "source" / ASSIGNMENT / f"{NAME}.ipynb", course / "source" / ASSIGNMENT)
        shutil.copy(stock / "source" / ASSIGNMENT / "numbers.txt", course / "source" / ASSIGNMENT)
        with open(course / "nbgrader_config.py", "a") as f:
            f.write("\nc.LateSubmissionPlugin.penalty_method = 'zero'\n")
        assert main(["--course", str(course), "build", ASSIGNMENT]) == 0
        db = f"sqlite:///{course / 'gradebook.db'}"
        with Gradebook(db) as gb:
            gb.update_or_create_assignment(ASSIGNMENT, duedate=DUE)
        ours = submissions(nbformat.read(str(course / "release" / ASSIGNMENT / f"{NAME}.ipynb"), as_version=4),
                           tmp_path / "handed_in")
        capsys.readouterr()
        assert main(["--course", str(course), "grade", ASSIGNMENT, "--submissions", str(ours), "--json"]) == 0
        results = json.loads(capsys.readouterr().out)
        totals = {r["student"]: (r["score"], r["max_score"]) for r in results}
        # Stock nbgrader only logs the edited locked cell; here the instructor is told, in the grade's notes.
        notes = {r["student"]: r["events"] for r in results}
        assert notes["dave"] == [f"{NAME}.ipynb: check cell(s) test_small edited (grading used the released ones)"]
        assert not notes["alice"], notes
        assert main(["--course", str(course), "grade", ASSIGNMENT, "--submissions", str(ours)]) == 0
        assert "Note: 3 test cells of 00_plain run inside the student's kernel" in capsys.readouterr().out
        assert "3 test cells of 00_plain run inside" in (course / "reports" / ASSIGNMENT / "report.html").read_text()
        graded = cell_scores(db, ANSWERS)
        hand_grades(db)
        assert final_scores(db) == expected_final
        # The rest of an nbgrader course: nbgrader's own export, and feedback generated and released.
        done = subprocess.run([sys.executable, "-m", "nbgrader", "export", "--to", str(tmp_path / "export.csv")],
                              cwd=course, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        with open(tmp_path / "export.csv") as f:
            exported = {r["student_id"]: float(r["score"]) for r in csv.DictReader(f) if r["assignment"] == ASSIGNMENT}
        assert exported == {s: score for s, (score, _) in expected_final.items()}
        assert main(["--course", str(course), "report", ASSIGNMENT]) == 0
        with open(course / "reports" / ASSIGNMENT / "grades.csv") as f:
            assert {r["student"]: float(r["score"]) for r in csv.DictReader(f)} == exported
        api = Course(course).api()
        assert api.generate_feedback(ASSIGNMENT)["success"]
        for student in ANSWERS:
            page = (course / "feedback" / student / ASSIGNMENT / f"{NAME}.html").read_text()
            assert "square(0.5)" not in page  # hidden tests stay hidden in feedback (stock nbgrader shows them)
        released = api.release_feedback(ASSIGNMENT)
        assert released["success"], released
        assert len(list((course / "exchange").rglob("*.html"))) == len(ANSWERS)
    finally:
        forget_fixture_checks(course)

    # The students differ, so the comparison can fail: each test cell scores differently for someone.
    assert expected[("alice", "test_small")] == (2, False, 2) and expected[("bob", "test_small")] == (0, False, 2)
    assert expected[("bob", "test_partial")] == (3, False, 4) and expected[("carol", "test_hidden")] == (0, False, 3)
    assert expected[("alice", "why")] == (None, True, 2) and expected[("bob", "why")] == (0, False, 2)  # blank: 0
    assert expected[("alice", "task_plot")] == (None, True, 1)
    assert expected[("dave", "test_small")] == (0, False, 2)  # the edited locked cell was graded as written
    assert expected_final == {"alice": (11.5, 0), "bob": (6, 0), "carol": (0, 6), "dave": (1, 0)}, expected_final
    assert graded == expected
    # What `grader grade` reports (its table, grades.csv, the class report) adds up the same automatic scores.
    assert totals == {s: (sum(expected[s, g][0] or 0 for g in ("test_small", "test_hidden", "test_partial")), 9.0)
                      for s in ANSWERS}, totals


def test_a_test_cell_can_mix_checks_and_statements(tmp_path, capsys):
    """A test cell may mix check(...) calls with other statements: the statements run in the student's kernel, in
    order, the checks in the grader, and the checks decide the points. A statement that raises gives the cell 0
    (as a stock test cell that raises), and says so; a value a statement returns is shown, not taken for partial
    credit."""
    course = copy_fixture_course(tmp_path / "course")
    try:
        path = course / "source" / "00_basics" / "basics.ipynb"
        nb = nbformat.read(str(path), as_version=4)
        cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
        cells["check_add"].source = "print('kernel says', add(2, 3))\n" + cells["check_add"].source
        cells["check_scale"].source += "\nassert type(scale(2, 3)) is int, 'scale keeps plain numbers plain'"
        cells["check_mean_rows"].source = "float(mean_rows(torch.ones(2, 4))[0]) / 10\n" + cells["check_mean_rows"].source
        nbformat.write(nb, str(path))
        assert main(["--course", str(course), "build", "00_basics"]) == 0
        # A student whose scale passes the checks (tensors) but not the cell's own assert (it makes a tensor of 2 * 3).
        student = tmp_path / "student.ipynb"
        nbformat.write(student_notebook(course, {**CORRECT, "scale": "def scale(x, factor):\n"
                                                                     "    return torch.mul(x, factor)"}), str(student))
        capsys.readouterr()
        main(["--course", str(course), "check", str(student), "--json"])
        data = json.loads(capsys.readouterr().out)
        scores = {ex["id"]: ex["score"] for ex in data["exercises"]}
        assert scores == {"00_basics/add": 4, "00_basics/scale": 0, "00_basics/mean_rows": 3}, scores
        assert data["score"] == 7
        scale = next(ex for ex in data["exercises"] if ex["id"] == "00_basics/scale")
        assert "the cell's own statements raised AssertionError: scale keeps plain numbers plain" in scale["error"]
        assert scale["max_score"] == 3
        graded = nbformat.read(str(course / "solutions" / "00_basics" / "basics.ipynb"), as_version=4)
        shown = [o.get("text", "") for c in graded.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "check_add"
                 for o in c.outputs]
        assert any("kernel says" in t for t in shown), shown
    finally:
        forget_fixture_checks(course)
