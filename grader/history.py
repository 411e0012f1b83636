"""Every grading run kept in the gradebook: what a regrade would change, and the way back.

Each run of `grader grade` records, for every student it graded, one row of the gradebook's table
`llmcourse_history`: the run, when, the version of the checks that graded it (a hash of the source notebooks,
the check modules and the grading engine: `distributed.course_fingerprint`), the student's result (every check's
verdict), and what nbgrader recorded for the submission (each cell's automatic score and points, the submission
time, the late penalty). The run's graded notebooks (only those) are kept under
reports/<assignment>/history/<run>/<student>/.

`grader grade --regrade` grades into a scratch gradebook first and prints each student's change (`changes`,
`format_changes`); only when the instructor agrees are the grades written (`adopt`). `grader history` lists the
runs; `grader rollback` puts back, for each student of the last run, what the run before it recorded
(`rollback`). Grades given by hand (the formgrader's manual scores) are never touched: a regrade or a rollback
changes the automatic scores only.
"""
from __future__ import annotations

import json
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .course import Course, CourseError

TABLE = "llmcourse_history"


def _table():
    from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, Text

    return Table(TABLE, MetaData(),
                 Column("id", Integer, primary_key=True, autoincrement=True),
                 Column("run", String(40), nullable=False, index=True),
                 Column("assignment", String(128), nullable=False, index=True),
                 Column("student", String(128), nullable=False),
                 Column("recorded_at", String(32), nullable=False),
                 Column("checks", String(64), nullable=False),
                 Column("kind", String(16), nullable=False),
                 Column("rolled_back", Boolean, nullable=False, default=False),
                 Column("result", Text, nullable=False),
                 Column("state", Text, nullable=False))


HISTORY = _table()


def _engine(course: Course):
    """The course's gradebook database, with the history table made once (under the schema lock)."""
    from sqlalchemy import create_engine

    from .gradebook import schema_lock

    url = course.config().CourseDirectory.db_url
    engine = create_engine(url)
    with schema_lock(url):
        HISTORY.create(engine, checkfirst=True)
    return engine


def stored_results(course: Course, assignment: str) -> dict[str, dict]:
    """grades.json's results by student (none before the first grading, or where it cannot be read)."""
    try:
        rows = json.loads((course.root / "reports" / assignment / "grades.json").read_text())
        return {r["student"]: r for r in rows if isinstance(r, dict) and r.get("student")}
    except (OSError, ValueError, TypeError):
        return {}


def new_run() -> str:
    """A run's name: when it started (UTC), and four hex digits that keep two runs of one second apart."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def checks_version(course: Course, assignment: str) -> str:
    from .distributed import course_fingerprint

    return course_fingerprint(course, assignment)[:12]


# -- what nbgrader recorded for a submission ----------------------------------------------------------
def submission_state(gb, assignment: str, student: str) -> dict[str, Any]:
    """What nbgrader's gradebook holds for a submission, as plain data: the submission time; per notebook, the
    late penalty, each grade cell's automatic score and points, and each automatic comment."""
    sub = gb.find_submission(assignment, student)
    notebooks = {}
    for nb in sub.notebooks:
        notebooks[nb.name] = {
            "late_penalty": nb.late_submission_penalty,
            "grades": {g.name: [g.auto_score, g.max_score, g.needs_manual_grade] for g in nb.grades},
            "comments": {c.name: c.auto_comment for c in nb.comments},
        }
    return {"timestamp": sub.timestamp.isoformat() if sub.timestamp else None, "notebooks": notebooks}


def apply_state(gb, assignment: str, student: str, state: dict[str, Any]) -> None:
    """Write `state` (from `submission_state`) into the gradebook for this submission, creating it if needed.
    Manual scores stay as they are; a cell a person graded no longer needs grading whatever the state says."""
    from nbgrader import utils
    from nbgrader.api import MissingEntry

    try:
        sub = gb.find_submission(assignment, student)
    except MissingEntry:
        sub = gb.add_submission(assignment, student)
    sub.timestamp = utils.parse_utc(state["timestamp"]) if state.get("timestamp") else None
    for name, nb_state in state["notebooks"].items():
        try:
            nb = gb.find_submission_notebook(name, assignment, student)
        except MissingEntry:
            continue  # a notebook the assignment no longer has
        nb.late_submission_penalty = nb_state.get("late_penalty")
        for cell, (auto, points, needs_manual) in nb_state["grades"].items():
            try:
                grade = gb.find_grade(cell, name, assignment, student)
            except MissingEntry:
                continue
            grade.auto_score = auto
            if points is not None and grade.cell.max_score != points:
                grade.cell.max_score = points
            grade.needs_manual_grade = bool(needs_manual) and grade.manual_score is None
        for cell, text in nb_state["comments"].items():
            try:
                gb.find_comment(cell, name, assignment, student).auto_comment = text
            except MissingEntry:
                continue
    gb.db.commit()


# -- recording a run ----------------------------------------------------------------------------------
def history_dir(course: Course, assignment: str) -> Path:
    return course.root / "reports" / assignment / "history"


def record(course: Course, assignment: str, results, run: str, kind: str = "grade") -> None:
    """One row per student this run graded (machinery failures are not grades: they are not recorded), and a
    copy of each graded notebook folder."""
    from nbgrader.api import Gradebook, MissingEntry

    graded = [r for r in results if not r.not_graded and r.student]
    if not graded:
        return
    version, now = checks_version(course, assignment), time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    rows = []
    with Gradebook(course.config().CourseDirectory.db_url) as gb:
        for r in graded:
            try:
                state = submission_state(gb, assignment, r.student)
            except MissingEntry:
                continue
            rows.append({"run": run, "assignment": assignment, "student": r.student, "recorded_at": now,
                         "checks": version, "kind": kind, "rolled_back": False,
                         "result": json.dumps(r.to_json()), "state": json.dumps(state)})
    engine = _engine(course)
    try:
        with engine.begin() as conn:
            conn.execute(HISTORY.insert(), rows)
    finally:
        engine.dispose()
    for row in rows:
        _keep_notebooks(course, assignment, row["student"], run)


def _keep_notebooks(course: Course, assignment: str, student: str, run: str) -> None:
    """A copy of the student's graded notebooks (only those: whatever else the folder holds was the student's)."""
    _copy_notebooks(course.root / "autograded" / student / assignment, history_dir(course, assignment) / run / student)


def _copy_notebooks(source: Path, target: Path) -> int:
    """Copy the regular files `*.ipynb` directly in `source` into `target`; how many. A link, a pipe or a folder
    of that name is never followed nor read (a student's code may have placed it), and a folder that is not
    there copies nothing."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return 0
    copied = 0
    try:
        for entry in os.scandir(fd):
            if not entry.name.endswith(".ipynb") or not entry.is_file(follow_symlinks=False):
                continue
            try:
                file_fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
            except OSError:
                continue
            with os.fdopen(file_fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    continue
                data = f.read()
            target.mkdir(parents=True, exist_ok=True)
            (target / entry.name).write_bytes(data)
            copied += 1
    finally:
        os.close(fd)
    return copied


@dataclass
class Run:
    run: str
    recorded_at: str
    checks: str
    kind: str
    rolled_back: bool
    results: dict[str, dict] = field(default_factory=dict)  # student -> result (SubmissionResult.to_json())
    states: dict[str, dict] = field(default_factory=dict)   # student -> submission_state
    ids: dict[str, int] = field(default_factory=dict)       # student -> row id

    @property
    def mean(self) -> float:
        scores = [r.get("score") or 0 for r in self.results.values()]
        return sum(scores) / len(scores) if scores else 0.0


def runs(course: Course, assignment: str) -> list[Run]:
    """The assignment's grading runs, oldest first."""
    from sqlalchemy import select

    engine = _engine(course)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(HISTORY).where(HISTORY.c.assignment == assignment)
                                .order_by(HISTORY.c.id)).mappings().all()
    finally:
        engine.dispose()
    out: dict[str, Run] = {}
    for row in rows:
        run = out.setdefault(row["run"], Run(row["run"], row["recorded_at"], row["checks"], row["kind"],
                                             bool(row["rolled_back"])))
        run.results[row["student"]] = json.loads(row["result"])
        run.states[row["student"]] = json.loads(row["state"])
        run.ids[row["student"]] = row["id"]
    return list(out.values())


# -- what changes ----------------------------------------------------------------------------------
@dataclass
class Change:
    student: str
    before: float | None  # None: no earlier grade
    after: float
    checks: list[tuple[str, float]] = field(default_factory=list)  # ("exercise: check", points gained or lost)

    @property
    def delta(self) -> float:
        return self.after - (self.before or 0.0)


def _earned(result: dict) -> dict[str, float]:
    out = {}
    for ex in result.get("exercises", []):
        short = ex["id"].split("/", 1)[-1]
        if ex.get("checks"):
            for c in ex["checks"]:
                out[f"{short}: {c['name']}"] = float(c.get("points", 0) if c.get("passed") else 0)
        else:
            out[short] = float(ex.get("score", 0))
    return out


def changes(before: dict[str, dict], after: dict[str, dict]) -> list[Change]:
    """Each student of `after` (student -> result) against `before`: the score, and the checks whose points moved."""
    out = []
    for student, new in sorted(after.items()):
        old = before.get(student)
        if old is None or old.get("score") is None:
            out.append(Change(student, None, float(new.get("score") or 0)))
            continue
        a, b = _earned(old), _earned(new)
        moved = [(name, b.get(name, 0.0) - a.get(name, 0.0)) for name in dict.fromkeys([*a, *b])
                 if b.get(name, 0.0) != a.get(name, 0.0)]
        out.append(Change(student, float(old["score"]), float(new.get("score") or 0), moved))
    return out


def format_changes(title: str, found: list[Change]) -> str:
    from .cli import _table

    moved = [c for c in found if c.before is None or c.delta or c.checks]
    gain = sum(1 for c in moved if c.before is not None and c.delta > 0)
    lose = sum(1 for c in moved if c.before is not None and c.delta < 0)
    new = sum(1 for c in moved if c.before is None)
    same = len(found) - len(moved)
    head = (f"{title}: {gain} student{'s' * (gain != 1)} gain{'s' * (gain == 1)}, {lose} lose{'s' * (lose == 1)}, "
            f"{new} graded for the first time, {same} unchanged.")
    if not moved:
        return head
    rows = [("student", "before", "after", "change", "checks that changed")]
    for c in sorted(moved, key=lambda c: (c.before is None, c.delta, c.student)):
        checks = "; ".join(f"{name} {pts:+g}" for name, pts in c.checks[:4])
        if len(c.checks) > 4:
            checks += f"; and {len(c.checks) - 4} more"
        rows.append((c.student, "-" if c.before is None else f"{c.before:g}", f"{c.after:g}",
                     "new" if c.before is None else f"{c.delta:+g}", checks))
    return head + "\n" + _table(rows)


# -- adopting a trial, rolling back ------------------------------------------------------------------
def adopt(course: Course, assignment: str, trial_db: str, trial_autograded: Path, students: list[str]) -> None:
    """Copy what a trial grading recorded for `students` (its gradebook, its graded notebooks) into the course."""
    from nbgrader.api import Gradebook

    from .grading import prepare_gradebook, register_students

    # The course's gradebook learns the assignment as it is now (a new cell, new points), as a grading would.
    prepare_gradebook(course, assignment, {})
    register_students(course, students)
    with Gradebook(trial_db) as src, Gradebook(course.config().CourseDirectory.db_url) as dst:
        for student in students:
            apply_state(dst, assignment, student, submission_state(src, assignment, student))
    for student in students:
        _replace_notebooks(course, assignment, student, trial_autograded / student / assignment)


def _replace_notebooks(course: Course, assignment: str, student: str, source: Path) -> None:
    """The student's graded notebooks in autograded/ become those in `source` (a trial's, or a kept run's)."""
    target = course.root / "autograded" / student / assignment
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        target.unlink()
    elif target.is_dir():
        for old in target.glob("*.ipynb"):
            if old.is_symlink() or old.is_file():
                old.unlink()
    _copy_notebooks(source, target)


@dataclass
class Rollback:
    run: Run
    restored: dict[str, tuple[Run, dict]]  # student -> (the run whose grade comes back, its result)
    kept: list[str]  # students graded for the first time in the run: nothing earlier to go back to

    def changes(self) -> list[Change]:
        return changes(self.run.results, {s: result for s, (_, result) in self.restored.items()})


def plan_rollback(course: Course, assignment: str) -> Rollback:
    """What `rollback` would do: the last run that is not rolled back, and each of its students' earlier grade."""
    history = runs(course, assignment)
    live = [r for r in history if not r.rolled_back]
    if not live:
        raise CourseError(f"{assignment} has no grading run on record to roll back (`grader history {assignment}` "
                          f"lists them)")
    last = live[-1]
    restored, kept = {}, []
    for student in last.results:
        earlier = [r for r in live[:-1] if student in r.results]
        if earlier:
            restored[student] = (earlier[-1], earlier[-1].results[student])
        else:
            kept.append(student)
    return Rollback(last, restored, kept)


def rollback(course: Course, plan: Rollback) -> None:
    """Put back, for each student of the plan's run, what the run before recorded: the gradebook's automatic
    scores, grades.json's entry, the graded notebooks. The rolled-back run stays on record, marked as such."""
    from nbgrader.api import Gradebook
    from sqlalchemy import update

    from .cells import redacted_result

    assignment = next(iter(plan.run.results.values()))["assignment"]
    with Gradebook(course.config().CourseDirectory.db_url) as gb:
        for student, (earlier, _) in plan.restored.items():
            apply_state(gb, assignment, student, earlier.states[student])
    stored = stored_results(course, assignment)
    for student, (earlier, result) in plan.restored.items():
        stored[student] = redacted_result(result)
        kept = history_dir(course, assignment) / earlier.run / student
        if kept.is_dir():
            _replace_notebooks(course, assignment, student, kept)
    path = course.root / "reports" / assignment / "grades.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([stored[s] for s in sorted(stored)], indent=2))
    engine = _engine(course)
    try:
        with engine.begin() as conn:
            conn.execute(update(HISTORY).where(HISTORY.c.id.in_(list(plan.run.ids.values())))
                         .values(rolled_back=True))
    finally:
        engine.dispose()
