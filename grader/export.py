"""`grader export`: the class's grades, one column per assignment, in a layout a learning platform imports.

Built from the gradebook, so grades given by hand in the formgrader are included, as `nbgrader export` includes
them. A student without a submission of an assignment gets a blank, never a 0 (a platform reads a blank as "not
handed in"). Formats:

- `csv`: `student`, then one column per assignment (its points), then `total`.
- `canvas`: the layout of Canvas's gradebook CSV (Grades > Import): `Student`, `ID`, `SIS User ID`, `SIS Login ID`,
  `Section`, then one column per assignment, and a `Points Possible` row. With `--roster`, the gradebook CSV that
  Canvas exported (Grades > Export), each nbgrader student is found by its `SIS Login ID` and the identity columns
  are Canvas's; an assignment whose name starts a roster column (`01_attention (1234)`) is written under that
  column, so Canvas updates that assignment instead of making a new one.
- `moodle`: the layout Moodle's grade import maps (Grades > Import > CSV file): `Username`, `Email address` (from
  the roster's `Email address` column, when given), then one column per assignment.

Vendors' documentation of these layouts: Canvas, "How do I import grades in the Gradebook?"
(https://community.canvaslms.com/t5/Instructor-Guide/How-do-I-import-grades-in-the-Gradebook/ta-p/807); Moodle,
"Grade import" (https://docs.moodle.org/en/Grade_import).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from .course import Course, CourseError

FORMATS = ("csv", "canvas", "moodle")
CANVAS_IDENTITY = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


@dataclass
class ClassGrades:
    """The gradebook's grades: assignments in order, their points possible, and each student's score per
    assignment (absent: no submission, or none graded)."""

    assignments: list[str]
    possible: dict[str, float]
    students: list[str]
    scores: dict[tuple[str, str], float] = field(default_factory=dict)


def class_grades(course: Course) -> ClassGrades:
    from nbgrader.api import Gradebook

    from .gradebook import final_score

    with Gradebook(course.config().CourseDirectory.db_url) as gb:
        assignments = sorted(a.name for a in gb.assignments)
        possible = {a.name: float(a.max_score) for a in gb.assignments}
        students = sorted(s.id for s in gb.students)
        scores = {}
        for assignment in gb.assignments:
            for sub in assignment.submissions:
                scores[(sub.student.id, assignment.name)] = final_score(sub)
    return ClassGrades(assignments, possible, students, scores)


def read_roster(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The roster's header and rows (a CSV a platform exported); a clear error for a file that is not one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CourseError(f"the roster {path} cannot be read ({exc}): give the CSV your platform exported") from None
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    if not header:
        raise CourseError(f"the roster {path} is empty: give the CSV your platform exported")
    return header, [row for row in reader if any((v or "").strip() for v in row.values())]


def export(course: Course, fmt: str, roster: Path | None = None) -> tuple[str, list[str]]:
    """The export's text and the warnings for the instructor (students found in only one of gradebook and roster)."""
    if fmt not in FORMATS:
        raise CourseError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    grades = class_grades(course)
    if not grades.assignments:
        raise CourseError("the gradebook holds no assignment yet: grade one first (`grader grade ASSIGNMENT ...`)")
    header, rows = read_roster(roster) if roster else ([], [])
    warnings: list[str] = []

    def score(student: str, assignment: str) -> str:
        value = grades.scores.get((student, assignment))
        return "" if value is None else f"{value:g}"

    out = io.StringIO()
    writer = csv.writer(out)
    if fmt == "csv":
        writer.writerow(["student", *grades.assignments, "total"])
        for student in grades.students:
            cells = [score(student, a) for a in grades.assignments]
            total = sum(grades.scores.get((student, a), 0.0) for a in grades.assignments)
            writer.writerow([student, *cells, f"{total:g}"])
        return out.getvalue(), warnings

    key = {"canvas": "SIS Login ID", "moodle": "Username"}[fmt]
    if roster and key not in header:
        raise CourseError(f"the roster {roster} has no {key!r} column, which names each student as nbgrader does "
                          f"(its columns: {', '.join(header[:8])})")
    # Rows without the key (Canvas's "Points Possible" row, a test student) name no student.
    by_id = {(row.get(key) or "").strip(): row for row in rows if (row.get(key) or "").strip()}
    students = sorted(set(grades.students) | set(by_id)) if roster else grades.students
    if roster:
        missing = [s for s in grades.students if s not in by_id]
        absent = [s for s in by_id if s not in grades.students]
        if missing:
            warnings.append(f"{len(missing)} student(s) of the gradebook are not in the roster, so the platform will "
                            f"not know them: {', '.join(missing[:10])}")
        if absent:
            warnings.append(f"{len(absent)} student(s) of the roster have no grade in the gradebook (blank): "
                            f"{', '.join(absent[:10])}")
    if fmt == "canvas":
        columns = [_canvas_column(a, header) for a in grades.assignments]
        writer.writerow([*CANVAS_IDENTITY, *columns])
        writer.writerow(["Points Possible", "", "", "", "", *(f"{grades.possible[a]:g}" for a in grades.assignments)])
        for student in students:
            row = by_id.get(student, {})
            identity = [row.get(c, "") for c in CANVAS_IDENTITY] if row else [student, "", "", student, ""]
            writer.writerow([*identity, *(score(student, a) for a in grades.assignments)])
    else:
        writer.writerow(["Username", "Email address", *grades.assignments])
        for student in students:
            email = by_id.get(student, {}).get("Email address", "")
            writer.writerow([student, email, *(score(student, a) for a in grades.assignments)])
    return out.getvalue(), warnings


def _canvas_column(assignment: str, roster_header: list[str]) -> str:
    """The roster's column for this assignment (`01_attention (1234)`: Canvas updates it), else its name (Canvas
    makes a new assignment)."""
    return next((h for h in roster_header if h == assignment or h.startswith(f"{assignment} (")), assignment)
