"""Grading submissions with nbgrader's autograde, one sandboxed kernel each, several at a time.

    results = grade_class(course, "01_attention", submissions_dir, jobs=2)
    result = check_notebook(course, "my_attention.ipynb")      # a self-learner's full grade

Both go through nbgrader's own `autograde` (configured in nbgrader_config.py to use our
`RunChecks`), so what a self-learner sees is exactly what an instructor's grading gives.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import nbformat
from nbformat.reader import NotJSONError
from nbgrader.utils import determine_grade, is_grade

from .course import Course, CourseError
from .preprocessors import cell_results, check_calls, is_check_cell


MAX_ATTEMPTS = 3


@dataclass
class SubmissionResult:
    assignment: str
    score: float = 0.0
    max_score: float = 0.0
    exercises: list[dict[str, Any]] = field(default_factory=list)
    student: str | None = None
    notebook: str | None = None
    error: str = ""
    events: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Set when the grading machinery failed (database, queue, kernel start-up, disk), never the student's
    # code: the reason. The score then means nothing, nothing is recorded, and the next run grades it.
    not_graded: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["score"] = round(self.score, 4) if not self.not_graded else None
        if self.student is None:
            data.pop("student")
        else:
            data.pop("notebook")
        return data


# -- reading results ---------------------------------------------------------------------------------
def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read and validate a notebook, or raise CourseError with a sentence a person can act on."""
    try:
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
    except FileNotFoundError:
        raise CourseError(f"{path} does not exist") from None
    except (json.JSONDecodeError, NotJSONError, nbformat.ValidationError, UnicodeDecodeError, KeyError,
            AttributeError, TypeError) as exc:
        not_json = isinstance(exc, (json.JSONDecodeError, NotJSONError, UnicodeDecodeError))
        kind = "not valid JSON" if not_json else "not a valid notebook"
        raise CourseError(f"{path} is {kind} ({str(exc).splitlines()[0][:120]}); open it in Jupyter, "
                          f"save it, and try again") from None
    except Exception as exc:  # nbformat raises many things for broken files; all mean the same to a person
        raise CourseError(f"{path} could not be read as a notebook ({type(exc).__name__}); "
                          f"open it in Jupyter, save it, and try again") from None
    return nb


def results_from_notebook(nb: nbformat.NotebookNode, assignment: str, master: nbformat.NotebookNode) -> SubmissionResult:
    """Scores from an autograded notebook, laid out by the master (source) notebook's check cells."""
    result = SubmissionResult(assignment=assignment)
    graded = {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if is_grade(c)}
    for master_cell in master.cells:
        if not is_check_cell(master_cell):
            continue
        grade_id = master_cell.metadata["nbgrader"]["grade_id"]
        points = float(master_cell.metadata["nbgrader"].get("points", 0))
        result.max_score += points
        cell = graded.get(grade_id)
        exercises = cell_results(cell) if cell is not None else []
        if cell is not None and exercises:
            score, _ = determine_grade(cell)
            result.score += float(score or 0)
        else:
            why = ("its check cell is missing from the notebook" if cell is None
                   else "its checks did not run (see the notebook's output)")
            exercises = [{"id": ex, "score": 0.0, "max_score": points, "checks": [], "error": why}
                         for ex in dict.fromkeys(e for e, _ in check_calls(master_cell.source))]
        result.exercises.extend(exercises)
    grading = nb.metadata.get("llmcourse", {}).get("grading", {})
    result.events = list(grading.get("events", []))
    return result


def master_notebook(course: Course, assignment: str, name: str) -> nbformat.NotebookNode:
    return nbformat.read(str(course.root / "source" / assignment / f"{name}.ipynb"), as_version=4)


def require_readable_assets() -> None:
    """Graded kernels run as users of their own (when the grader runs as root): the course's models and
    data must be readable by everyone, or every check that loads one fails for a reason the student
    cannot see. Say so once, with the fix, instead."""
    if os.geteuid() != 0:
        return  # kernels run as this same user
    import stat

    from llmcourse.assets import assets_dir

    try:
        root = assets_dir()
    except Exception:  # no assets here: the checks that need them say so themselves
        return
    for folder, dirs, files in os.walk(root):
        for name in files + dirs:
            path = os.path.join(folder, name)
            mode = os.stat(path).st_mode
            needed = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
            if mode & needed != needed:
                raise CourseError(f"{path} cannot be read by the grading kernels, which run as other users: "
                                  f"run `chmod -R a+rX {root}` and grade again")


# -- one submission ------------------------------------------------------------------------------------
def _course_config(course: Course, hide: Iterable[str] = (), **dirs: str):
    cfg = course.config(**dirs)
    hidden = list(cfg.SandboxedKernelManager.get("hide_paths", []))
    cfg.SandboxedKernelManager.hide_paths = hidden + [str(p) for p in hide]
    return cfg


def _autograde(course_root: str, assignment: str, student: str, dirs: dict[str, str], hide: list[str]) -> dict:
    """Worker: nbgrader autograde of one student's submission (runs in its own process)."""
    import warnings

    warnings.filterwarnings("ignore")  # library chatter (SQLAlchemy, traitlets) is not for the instructor
    course = Course(Path(course_root))
    cfg = _course_config(course, hide, **dirs)
    api = course.api(config=cfg)
    started = time.monotonic()
    outcome = api.autograde(assignment, student, force=True, create=True)
    return {"success": bool(outcome.get("success")), "error": outcome.get("error") or "",
            "log": outcome.get("log") or "", "seconds": time.monotonic() - started}


def _collect(course: Course, assignment: str, student: str, autograded: Path, expected: list[str],
             submitted: list[str], problems: dict[str, str], outcome: dict) -> SubmissionResult:
    result = SubmissionResult(assignment=assignment, student=student, seconds=round(outcome.get("seconds", 0), 2))
    errors = []
    for name in expected:
        master = master_notebook(course, assignment, name)
        path = autograded / student / assignment / f"{name}.ipynb"
        if name in problems:
            part = results_from_notebook(nbformat.v4.new_notebook(), assignment, master)
            errors.append(problems[name])
        elif path.exists() and outcome.get("success"):
            part = results_from_notebook(nbformat.read(str(path), as_version=4), assignment, master)
        else:
            part = results_from_notebook(nbformat.v4.new_notebook(), assignment, master)
            if name not in submitted:
                others = [n for n in submitted if n not in expected]
                extra = f" (found {', '.join(o + '.ipynb' for o in others)})" if others else ""
                errors.append(f"no notebook named {name}.ipynb was submitted{extra}")
            else:
                errors.append(f"{name}.ipynb could not be graded: {_last_line(outcome.get('error') or outcome.get('log'))}")
        result.score += part.score
        result.max_score += part.max_score
        result.exercises.extend(part.exercises)
        result.events.extend(part.events)
    result.error = "; ".join(errors)
    return result


def _last_line(text: str | None) -> str:
    lines = [l for l in (text or "").strip().splitlines() if l.strip()]
    return lines[-1][:300] if lines else "nbgrader reported a failure"


# -- a class -------------------------------------------------------------------------------------------
def find_submissions(submissions: Path, assignment: str) -> list[str]:
    if not submissions.is_dir():
        raise CourseError(f"the submissions directory {submissions} does not exist")
    students = sorted(p.name for p in submissions.iterdir() if (p / assignment).is_dir())
    if not students:
        raise CourseError(f"{submissions} holds no submissions of {assignment}: expected "
                          f"{submissions}/<student>/{assignment}/<notebook>.ipynb")
    return students


def prepare_gradebook(course: Course, assignment: str, dirs: dict[str, str]) -> None:
    """Register the assignment's master copy in the gradebook (nbgrader's generate_assignment).

    The student version it writes goes to a scratch directory: release/ is only written by `build`.
    """
    with tempfile.TemporaryDirectory(prefix="grader-release-") as scratch:
        api = course.api(config=_course_config(course, **dirs, release_directory=scratch))
        outcome = api.generate_assignment(assignment, force=True, create=True)
    if not outcome.get("success"):
        raise CourseError(f"nbgrader could not register {assignment}: {_last_line(outcome.get('error') or outcome.get('log'))}")


def stage(submission: Path, dest: Path, expected: list[str]) -> tuple[list[str], dict[str, str]]:
    """Copy a submission for nbgrader, leaving out notebooks that cannot be read (they score 0)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    problems: dict[str, str] = {}
    names = []
    for entry in sorted(submission.iterdir()):
        if entry.is_symlink():
            continue
        if entry.suffix == ".ipynb":
            names.append(entry.stem)
            if entry.stem in expected:
                try:
                    nb = read_notebook(entry)
                except CourseError as exc:
                    problems[entry.stem] = str(exc)
                    continue
                nbformat.write(without_duplicate_cells(nb), str(dest / entry.name))
                continue
        if entry.is_file():
            shutil.copy2(entry, dest / entry.name)
    return names, problems


def without_duplicate_cells(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop copies of graded cells (same grade id): a copied check cell goes, a copied answer cell
    becomes an ordinary cell. nbgrader would otherwise reject the whole notebook."""
    seen: set[str] = set()
    cells = []
    for cell in nb.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id is not None and grade_id in seen:
            if is_check_cell(cell):
                continue
            cell.metadata.pop("nbgrader", None)
        elif grade_id is not None:
            seen.add(grade_id)
        cells.append(cell)
    nb.cells = cells
    return nb


def grade_class(course: Course, assignment: str, submissions: Path, jobs: int = 1,
                progress: Callable[[SubmissionResult], None] | None = None,
                students: list[str] | None = None) -> list[SubmissionResult]:
    """Autograde every submission of `assignment` under `submissions`, `jobs` at a time."""
    course.require_assignment(assignment)
    require_readable_assets()
    submissions = submissions.resolve()
    students = students or find_submissions(submissions, assignment)
    expected = [p.stem for p in course.source_notebooks(assignment)]
    staging = course.root / "submitted"
    dirs = {"submitted_directory": str(staging)}
    prepare_gradebook(course, assignment, dirs)
    # Students are created up front, so parallel workers never race to create the same row.
    from nbgrader.api import Gradebook

    with Gradebook(course.config().CourseDirectory.db_url) as gb:
        for student in students:
            gb.update_or_create_student(student)
    staged = {s: stage(submissions / s / assignment, staging / s / assignment, expected) for s in students}
    results: list[SubmissionResult] = []
    hide = [str(submissions)]
    pending = list(students)
    attempts: dict[str, int] = {s: 0 for s in students}
    while pending:
        # A grading process that dies (killed for memory, say) breaks the whole pool: the submissions it
        # left unfinished go to a fresh pool, up to MAX_ATTEMPTS times each. Nothing graded is lost.
        retry: list[str] = []
        with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=_spawn()) as pool:
            futures = {pool.submit(_autograde, str(course.root), assignment, s, dirs, hide): s for s in pending}
            for future in as_completed(futures):
                student = futures[future]
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    attempts[student] += 1
                    if attempts[student] < MAX_ATTEMPTS:
                        retry.append(student)
                        continue
                    outcome = {"success": False, "error": f"the grading process died {MAX_ATTEMPTS} times on this submission"}
                except Exception as exc:  # one submission's failure never stops the batch
                    outcome = {"success": False, "error": f"the grading process failed: {type(exc).__name__}: {exc}"}
                names, problems = staged[student]
                result = _collect(course, assignment, student, course.root / "autograded", expected, names, problems, outcome)
                results.append(result)
                if progress:
                    progress(result)
        pending = retry
    return sorted(results, key=lambda r: r.student or "")


def _spawn():
    import multiprocessing

    return multiprocessing.get_context("spawn")


# -- a self-learner's notebook ---------------------------------------------------------------------------
def identify_assignment(course: Course, nb: nbformat.NotebookNode, path: Path) -> tuple[str, str]:
    """(assignment, notebook name) for a notebook, from its check cells or else its file name."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            for exercise, _ in check_calls(cell.source):
                assignment = exercise.split("/", 1)[0]
                if assignment in course.assignments():
                    names = [p.stem for p in course.source_notebooks(assignment)]
                    return assignment, (path.stem if path.stem in names else names[0])
    for assignment in course.assignments():
        if path.stem in [p.stem for p in course.source_notebooks(assignment)]:
            return assignment, path.stem
    raise CourseError(f"{path} is not a notebook of this course: it has no check cells and its name matches no "
                      f"assignment ({', '.join(course.assignments())})")


def check_notebook(course: Course, path: Path) -> SubmissionResult:
    """Grade one notebook with every check, hidden ones included, as an instructor's grading would."""
    path = path.resolve()
    nb = read_notebook(path)
    assignment, name = identify_assignment(course, nb, path)
    require_readable_assets()
    with tempfile.TemporaryDirectory(prefix="grader-check-") as scratch:
        root = Path(scratch)
        dirs = {"submitted_directory": str(root / "submitted"), "autograded_directory": str(root / "autograded"),
                "feedback_directory": str(root / "feedback"),
                "db_url": "sqlite:///" + str(root / "gradebook.db")}
        prepare_gradebook(course, assignment, dirs)
        target = root / "submitted" / "self" / assignment
        target.mkdir(parents=True)
        nbformat.write(without_duplicate_cells(nb), str(target / f"{name}.ipynb"))
        outcome = _autograde(str(course.root), assignment, "self", dirs, [])
        result = _collect(course, assignment, "self", root / "autograded", [name], [name], {}, outcome)
    result.student = None
    result.notebook = str(path)
    return result
