"""Malformed, oversized and special submissions: each gets a sentence and 0, and the rest of the class is graded.

One class is graded once; each test reads its own student's result.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil

import nbformat
import pytest

from grader.cli import main
from grader.course import CourseError
from grader.submissions import SubmissionLimits, parse_notebook, stage

from .conftest import cell_by_id, read, write_submission

pytestmark = pytest.mark.slow

ANSWERS = {"add": "def add(a, b):\n    return a + b", "scale": "def scale(x, factor):\n    return x * factor",
           "mean_rows": "def mean_rows(x):\n    return x.mean(dim=-1)"}
LIMIT = 300_000  # bytes a submission may hold in this test's course
LISTING = ("import os\nprint('FILES', sorted(os.path.join(d, f)[2:] for d, _, fs in os.walk('.') for f in fs "
           "if not f.startswith('.')))")


def answered(course, **fields) -> dict:
    """The released notebook answered correctly, as raw JSON (to give fields types nbformat would refuse)."""
    nb = read(course / "release" / "00_basics" / "basics.ipynb")
    for grade_id, source in ANSWERS.items():
        cell_by_id(nb, grade_id).source = source
    return json.loads(nbformat.writes(nb))


def cell_of(data: dict, grade_id: str) -> dict:
    return next(c for c in data["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)


def malformed(course, grade_id: str, key: str, value) -> str:
    data = answered(course)
    if key == "nbgrader":
        cell_of(data, grade_id)["metadata"]["nbgrader"] = value
    elif key in ("id", "outputs"):
        cell_of(data, grade_id)[key] = value
    else:
        cell_of(data, grade_id)["metadata"]["nbgrader"][key] = value
    return json.dumps(data)


@pytest.fixture(scope="module")
def graded(fixture_course, tmp_path_factory):
    course = tmp_path_factory.mktemp("input") / "course"
    shutil.copytree(fixture_course, course, ignore=shutil.ignore_patterns("gradebook.db", "autograded", "submitted",
                                                                         "feedback", "reports"))
    with open(course / "nbgrader_config.py", "a") as f:
        f.write(f"\nc.Grading.max_submission_bytes = {LIMIT}\nc.Grading.max_submission_files = 20\n")
    subs = tmp_path_factory.mktemp("submissions")
    write_submission(subs, "a_good", json.dumps(answered(course)))
    write_submission(subs, "metadata_string", malformed(course, "add", "nbgrader", "grade me"))
    write_submission(subs, "points_string", malformed(course, "check_add", "points", "400"))
    write_submission(subs, "grade_id_number", malformed(course, "scale", "grade_id", 7))
    write_submission(subs, "solution_flag_list", malformed(course, "scale", "solution", ["yes"]))
    write_submission(subs, "outputs_not_a_list", malformed(course, "check_add", "outputs", "all passed"))

    fifo = subs / "fifo" / "00_basics" / "basics.ipynb"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)  # opening it for reading would wait forever for a writer
    link = subs / "link" / "00_basics" / "basics.ipynb"
    link.parent.mkdir(parents=True)
    link.symlink_to(course / "source" / "00_basics" / "basics.ipynb")  # the reference solution
    big = write_submission(subs, "too_big", json.dumps(answered(course))).parent
    (big / "data.bin").write_bytes(b"x" * LIMIT)
    many = write_submission(subs, "too_many_files", json.dumps(answered(course))).parent
    for i in range(25):
        (many / f"note{i}.txt").write_text("a note\n")

    data = answered(course)
    setup = cell_of(data, "add")
    setup["source"] = LISTING + "\n" + "".join(setup["source"])
    folder = write_submission(subs, "subfolders", json.dumps(data)).parent
    (folder / "data" / "deeper").mkdir(parents=True)
    (folder / "data" / "table.csv").write_text("a,b\n1,2\n")
    (folder / "data" / "deeper" / "notes.txt").write_text("notes\n")
    (folder / "data" / "secret.ipynb").symlink_to(course / "source" / "00_basics" / "basics.ipynb")
    os.mkfifo(folder / "data" / "pipe")

    # The assignment's one notebook under the name a browser gives a second download; then two wrong names.
    write_submission(subs, "misnamed", json.dumps(answered(course)), name="basics (1)")
    write_submission(subs, "two_misnamed", json.dumps(answered(course)), name="basics (1)")
    write_submission(subs, "two_misnamed", json.dumps(answered(course)), name="basics (2)")

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["--course", str(course), "grade", "00_basics", "--submissions", str(subs), "--jobs", "2", "--json"])
    return code, {r["student"]: r for r in json.loads(buffer.getvalue())}, course


def test_the_class_is_graded_despite_its_bad_submissions(graded):
    code, results, _ = graded
    assert code == 0
    assert len(results) == 13
    assert results["a_good"]["score"] == 10 and not results["a_good"]["error"]


@pytest.mark.parametrize("student, problem", [
    ("metadata_string", r"cell \d+'s nbgrader metadata is a str, not a mapping"),
    ("points_string", r"cell \d+'s nbgrader points is a str"),
    ("grade_id_number", r"cell \d+'s nbgrader grade_id is a int"),
    ("solution_flag_list", r"cell \d+'s nbgrader solution is a list"),
    ("outputs_not_a_list", r"(cell \d+'s outputs are not a list|is not a valid notebook)"),
    ("fifo", r"basics\.ipynb is a named pipe \(FIFO\), not a notebook file"),
    ("link", r"basics\.ipynb is a symbolic link, not a notebook file"),
    ("too_big", r"holds more than the 293 KB a submission may hold \(data\.bin is where it went over\)"),
    ("too_many_files", r"holds more than 20 files"),
])
def test_a_bad_submission_scores_zero_with_a_sentence(graded, student, problem):
    _, results, _ = graded
    result = results[student]
    assert result["score"] == 0 and not result["not_graded"]
    assert re.search(problem, result["error"]), result["error"]
    assert "Traceback" not in result["error"]


def test_a_single_misnamed_notebook_is_graded_under_its_name_with_a_note(graded):
    _, results, course = graded
    misnamed = results["misnamed"]
    assert misnamed["score"] == 10 and not misnamed["error"], misnamed
    assert misnamed["events"] == ["basics (1).ipynb was graded as basics.ipynb, the assignment's one notebook: "
                                  "name it basics.ipynb next time"]
    assert (course / "autograded" / "misnamed" / "00_basics" / "basics.ipynb").is_file()
    # Two candidates: which one the student meant is not for the grader to guess.
    two = results["two_misnamed"]
    assert two["score"] == 0 and not two["events"]
    assert two["error"] == "no notebook named basics.ipynb was submitted (found basics (1).ipynb, basics (2).ipynb)"


def test_subfolders_are_copied_without_links_or_special_files(graded):
    _, results, course = graded
    assert results["subfolders"]["score"] == 10, results["subfolders"]
    graded_nb = read(course / "autograded" / "subfolders" / "00_basics" / "basics.ipynb")
    printed = "".join(o.get("text", "") for c in graded_nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    listing = printed[printed.index("FILES"):].splitlines()[0]
    assert "data/table.csv" in listing and "data/deeper/notes.txt" in listing
    assert "secret.ipynb" not in listing and "pipe" not in listing


def test_staging_never_follows_a_link_or_blocks_on_a_pipe(tmp_path):
    submission = tmp_path / "in"
    submission.mkdir()
    os.mkfifo(submission / "basics.ipynb")
    (submission / "other.ipynb").symlink_to("/etc/passwd")
    names, problems, _ = stage(submission, tmp_path / "out", ["basics"], SubmissionLimits())
    assert names == [] and "named pipe" in problems["basics"]
    assert list((tmp_path / "out").iterdir()) == []


def test_parse_notebook_names_the_cell_and_the_fix(tmp_path):
    data = {"cells": [{"cell_type": "code", "id": "a", "metadata": {"nbgrader": "x"}, "source": "", "outputs": [],
                       "execution_count": None}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    with pytest.raises(CourseError) as exc:
        parse_notebook(json.dumps(data).encode(), tmp_path / "basics.ipynb")
    assert "cell 1's nbgrader metadata is a str" in str(exc.value) and "fresh copy of the released notebook" in str(exc.value)
