"""Grading submissions with nbgrader's autograde, one sandboxed kernel each, several at a time.

    results = grade_class(course, "01_attention", submissions_dir, jobs=2)
    result = check_notebook(course, "my_attention.ipynb")      # a self-learner's full grade

Both go through nbgrader's own `autograde` (configured in nbgrader_config.py to use our
`RunChecks`), so what a self-learner sees is exactly what an instructor's grading gives.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import nbformat
from nbgrader.utils import determine_grade, is_grade

from .course import Course, CourseError, MachineryFailure
from .process_template import grading_context
from .cells import cell_results, check_calls, is_check_cell
from .submissions import SubmissionLimits, read_notebook, stage, without_duplicate_cells  # noqa: F401  (stage: distributed)


MAX_ATTEMPTS = 3
# Grading processes are replaced by fresh ones after this many submissions each (a second or two of imports),
# so that whatever memory grading leaves behind cannot pile up over a large class.
SUBMISSIONS_PER_PROCESS = 25
RETRY_BACKOFF = 2.0  # seconds before the first retry of a machinery failure; doubled for each later one


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
def results_from_notebook(nb: nbformat.NotebookNode, assignment: str, master: nbformat.NotebookNode) -> SubmissionResult:
    """Scores from an autograded notebook, laid out by the master (source) notebook's check cells. A test cell
    without check(...) calls (a stock nbgrader one) is one entry of its own, named by its grade_id."""
    result = SubmissionResult(assignment=assignment)
    graded = {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if is_grade(c)}
    for master_cell in master.cells:
        if not is_check_cell(master_cell):
            continue
        grade_id = master_cell.metadata["nbgrader"]["grade_id"]
        points = float(master_cell.metadata["nbgrader"].get("points", 0))
        result.max_score += points
        cell = graded.get(grade_id)
        if not check_calls(master_cell.source):
            # A stock nbgrader test cell (asserts): it ran in the student's kernel, and nbgrader's rule scores it.
            score = float(determine_grade(cell)[0] or 0) if cell is not None else 0.0
            result.score += score
            result.exercises.append({"id": f"{assignment}/{grade_id}", "score": score, "max_score": points,
                                     "checks": [], "test_cell": True,
                                     **({} if cell is not None else {"error": "its test cell is missing from the "
                                                                              "notebook"})})
            continue
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


def kernel_test_cells(course: Course, assignment: str) -> int:
    """How many test cells of the assignment run inside the student's kernel, as stock nbgrader
    runs them: a student's own code could patch what they use, unlike check(...) calls, graded from outside."""
    from .cells import MixedCellError, test_cell_parts

    count = 0
    folder = course.root / "source" / assignment
    for path in sorted(folder.glob("*.ipynb")) if folder.is_dir() else []:  # a report may outlive its source
        for cell in nbformat.read(str(path), as_version=4).cells:
            if is_check_cell(cell):
                try:
                    count += all(kind == "kernel" for kind, _ in test_cell_parts(cell.source))
                except MixedCellError:
                    pass  # refused when graded, so it runs nowhere
    return count


def kernel_test_cells_note(course: Course, assignment: str) -> str:
    """One sentence for the grading output and the class report, or "" when every test cell is a check(...) cell."""
    n = kernel_test_cells(course, assignment)
    if not n:
        return ""
    return (f"{n} test cell{'s' if n != 1 else ''} of {assignment} run{'s' if n == 1 else ''} inside the student's "
            f"kernel, as stock nbgrader runs them (sandboxed and time-limited, but code the student wrote could "
            f"patch what they use); only check(...) calls are graded from outside the kernel.")


def master_notebook(course: Course, assignment: str, name: str) -> nbformat.NotebookNode:
    return nbformat.read(str(course.root / "source" / assignment / f"{name}.ipynb"), as_version=4)


def check_cell_notes(course: Course, assignment: str, folder: Path, names: list[str], expected: list[str],
                     problems: dict[str, str]) -> list[str]:
    """Notes on the staged notebooks in `folder` (each readable expected one) whose check cells differ from the
    released ones."""
    return [note for name in names if name in expected and name not in problems
            for note in check_cell_changes(folder / f"{name}.ipynb", master_notebook(course, assignment, name), name)]


def check_cell_changes(submitted: Path, master: nbformat.NotebookNode, name: str) -> list[str]:
    """Notes for the instructor on the check cells of a submitted notebook that differ from the released ones
    (edited, or deleted). Grading restores them from the master copy, so they cost or earn nothing; a student
    who changed them may have misunderstood something, or tried something."""
    from .build import _HIDDEN
    from .cells import is_check_cell

    try:
        nb = nbformat.read(str(submitted), as_version=4)
    except Exception:  # an unreadable notebook has its own problem sentence
        return []
    released = {c.metadata["nbgrader"]["grade_id"]: _HIDDEN.sub("", c.source).strip()
                for c in master.cells if is_check_cell(c)}
    theirs = {c.get("metadata", {}).get("nbgrader", {}).get("grade_id"): (c.get("source") or "").strip()
              for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade")}
    edited = [g for g, source in released.items() if g in theirs and theirs[g] != source]
    deleted = [g for g in released if g not in theirs]
    notes = []
    if edited:
        notes.append(f"{name}.ipynb: check cell(s) {', '.join(edited)} edited (grading used the released ones)")
    if deleted:
        notes.append(f"{name}.ipynb: check cell(s) {', '.join(deleted)} deleted (grading restored them)")
    return notes


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


# -- isolation -------------------------------------------------------------------------------------------
def isolation_gaps() -> str:
    """What the sandbox cannot protect in this process, in words ("" when it can protect everything).

    Only root can give each kernel a user of its own; under one shared user a kernel can read another
    kernel's work folder and connection key, and signal the grader itself."""
    if not sys.platform.startswith("linux"):
        return ("this is not Linux, so kernels get no namespaces and no users of their own: a notebook's code runs "
                "as your user, can read what you can read, reach the network, and signal the grader")
    if os.geteuid() == 0:
        return ""
    return ("the grader is not running as root, so every kernel runs as your own user: a notebook's code can "
            "read the files your user can read, other kernels' work folders and connection keys included, "
            "and can signal the grader")


# -- one submission ------------------------------------------------------------------------------------
def _course_config(course: Course, hide: Iterable[str] = (), **dirs: str):
    cfg = course.config(**dirs)
    hidden = list(cfg.SandboxedKernelManager.get("hide_paths", []))
    cfg.SandboxedKernelManager.hide_paths = hidden + [str(p) for p in hide]
    return cfg


@dataclass(frozen=True)
class Workspace:
    """Where one autograde reads and writes, over the course's own settings: CourseDirectory overrides
    (submitted_directory, autograded_directory, db_url, ...), and more paths its kernels must not see (other
    students' submissions, say)."""

    dirs: dict[str, str] = field(default_factory=dict)
    hide: tuple[str, ...] = ()


@dataclass(frozen=True)
class Submission:
    """One student's submission as grading found it: the notebooks the assignment expects (names without
    .ipynb), those that were submitted, and why any of them cannot be graded (name -> a sentence)."""

    assignment: str
    student: str
    expected: list[str]
    submitted: list[str]
    problems: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. a notebook graded under the expected name


def autograde(course: Course, assignment: str, student: str, workspace: Workspace) -> dict:
    """nbgrader autograde of one student's submission, in a grading process of its own (a pool's, or a task
    queue worker's); what nbgrader said, as plain data: success, error, log, and the seconds it took."""
    import warnings

    warnings.filterwarnings("ignore")  # library chatter (SQLAlchemy, traitlets) is not for the instructor
    cfg = _course_config(course, workspace.hide, **workspace.dirs)
    api = course.api(config=cfg)
    started = time.monotonic()
    outcome = api.autograde(assignment, student, force=True, create=True)
    return {"success": bool(outcome.get("success")), "error": outcome.get("error") or "",
            "log": outcome.get("log") or "", "seconds": time.monotonic() - started}


def submission_result(course: Course, submission: Submission, outcome: dict, autograded: Path) -> SubmissionResult:
    """The grade of a submission from its autograde's `outcome` and the graded notebooks under `autograded`:
    each expected notebook that is missing, unreadable or ungraded scores zero, with a sentence saying why."""
    assignment, student = submission.assignment, submission.student
    result = SubmissionResult(assignment=assignment, student=student, seconds=round(outcome.get("seconds", 0), 2))
    errors = []
    for name in submission.expected:
        master = master_notebook(course, assignment, name)
        path = autograded / student / assignment / f"{name}.ipynb"
        if name in submission.problems:
            part = results_from_notebook(nbformat.v4.new_notebook(), assignment, master)
            errors.append(submission.problems[name])
        elif path.exists() and outcome.get("success"):
            part = results_from_notebook(nbformat.read(str(path), as_version=4), assignment, master)
        else:
            part = results_from_notebook(nbformat.v4.new_notebook(), assignment, master)
            if name not in submission.submitted:
                others = [n for n in submission.submitted if n not in submission.expected]
                extra = f" (found {', '.join(o + '.ipynb' for o in others)})" if others else ""
                errors.append(f"no notebook named {name}.ipynb was submitted{extra}")
            else:
                errors.append(f"{name}.ipynb could not be graded: {_last_line(outcome.get('error') or outcome.get('log'))}")
        result.score += part.score
        result.max_score += part.max_score
        result.exercises.extend(part.exercises)
        result.events.extend(part.events)
    result.error = "; ".join(errors)
    result.events.extend(submission.notes)
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
    from nbgrader.coursedir import CourseDirectory

    from .gradebook import set_up

    with tempfile.TemporaryDirectory(prefix="grader-release-") as scratch:
        cfg = _course_config(course, **dirs, release_directory=scratch)
        set_up(CourseDirectory(config=cfg).db_url, then="grade again")
        api = course.api(config=cfg)
        outcome = api.generate_assignment(assignment, force=True, create=True)
    if not outcome.get("success"):
        raise CourseError(f"nbgrader could not register {assignment}: {_last_line(outcome.get('error') or outcome.get('log'))}")


def grade_class(course: Course, assignment: str, submissions: Path, jobs: int = 1,
                progress: Callable[[SubmissionResult], None] | None = None,
                students: list[str] | None = None,
                meanwhile: Callable[[], None] | None = None,
                into: dict[str, str] | None = None) -> list[SubmissionResult]:
    """Autograde every submission of `assignment` under `submissions`, `jobs` at a time.

    `meanwhile`, if given, is called once in this process while the grading processes work (the command line
    loads what its class report needs then).

    `into`, if given, grades somewhere other than the course's gradebook and autograded/: its `db_url` and
    `autograded_directory` (an absolute path). A regrade is tried there first (`grader grade --regrade`).

    `submissions` is only read: each is copied into a private folder of this run, which nbgrader grades.
    """
    course.require_assignment(assignment)
    require_readable_assets()
    submissions = submissions.resolve()
    students = students or find_submissions(submissions, assignment)
    expected = [p.stem for p in course.source_notebooks(assignment)]
    # Never the course's submitted/: `nbgrader collect` puts the submissions there, and they are the
    # only copy. mkdtemp makes it 0700, owned by the grader.
    staging = Path(tempfile.mkdtemp(prefix="grader-staging-"))
    pool = _start_pool(jobs, len(students))  # its processes start (and import) while the gradebook is prepared
    try:
        dirs = {"submitted_directory": str(staging), **(into or {})}
        prepare_gradebook(course, assignment, dirs)
        if into and into.get("db_url"):
            copy_due_date(course, assignment, into["db_url"])
        register_students(course, students, (into or {}).get("db_url"))
        return _grade_staged(course, assignment, submissions, staging, students, expected, dirs, jobs, progress,
                             pool, meanwhile)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(staging, ignore_errors=True)


def copy_due_date(course: Course, assignment: str, db_url: str) -> None:
    """The course gradebook's due date of `assignment` in the gradebook at `db_url`, so that grading there gives
    the same late penalties."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(course.config().CourseDirectory.db_url) as gb:
        try:
            due = gb.find_assignment(assignment).duedate
        except MissingEntry:
            return
    if due is not None:
        with Gradebook(db_url) as gb:
            gb.update_or_create_assignment(assignment, duedate=due)


def register_students(course: Course, students: list[str], db_url: str | None = None) -> None:
    """Students are created up front, so parallel workers never race to create the same row."""
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with Gradebook(db_url or course.config().CourseDirectory.db_url) as gb:
            for student in students:
                gb.update_or_create_student(student)
    except SQLAlchemyError as exc:
        raise CourseError(f"the gradebook could not be written ({_first_line(exc)}): if another grading is "
                          f"running, wait for it to finish and grade again") from None


def _grade_staged(course: Course, assignment: str, submissions: Path, staging: Path, students: list[str],
                  expected: list[str], dirs: dict[str, str], jobs: int,
                  progress: Callable[[SubmissionResult], None] | None,
                  pool: ProcessPoolExecutor | None = None,
                  meanwhile: Callable[[], None] | None = None) -> list[SubmissionResult]:
    results: list[SubmissionResult] = []

    def done(result: SubmissionResult) -> None:
        results.append(result)
        if progress:
            progress(result)

    limits = SubmissionLimits.of(course)
    staged: dict[str, Submission] = {}
    for student in students:
        try:
            staged[student] = Submission(assignment, student, expected, *stage(
                submissions / student / assignment, staging / student / assignment, expected, limits))
            submission = staged[student]
            submission.notes.extend(check_cell_notes(course, assignment, staging / student / assignment,
                                                     submission.submitted, expected, submission.problems))
        except Exception as exc:  # never the student's doing (their files' problems are in `problems`)
            reason = str(exc) if isinstance(exc, MachineryFailure) else f"its files could not be copied ({_first_line(exc)})"
            done(_not_graded(course, assignment, student, reason))
    workspace = Workspace(dirs, hide=(str(submissions), str(staging)))
    pending = list(staged)
    attempts: dict[str, int] = {s: 0 for s in staged}
    retries = 0
    # Each pool of grading processes takes at most SUBMISSIONS_PER_PROCESS submissions per process; the rest
    # go to a fresh pool (what max_tasks_per_child would do, but that hangs the pool on Python 3.11).
    batch_size = max(1, jobs) * SUBMISSIONS_PER_PROCESS
    while pending:
        batch, pending = pending[:batch_size], pending[batch_size:]
        if any(attempts[s] for s in batch):  # a locked gradebook or a busy machine gets time to recover
            retries += 1
            time.sleep(RETRY_BACKOFF * 2 ** (retries - 1))
        # A grading process that dies (killed for memory, say) breaks the whole pool: the submissions it
        # left unfinished go to a fresh pool, up to MAX_ATTEMPTS times each. Nothing graded is lost.
        retry: list[str] = []
        pool = pool or _start_pool(jobs, len(batch))
        with pool:
            futures = {pool.submit(autograde, course, assignment, s, workspace): s for s in batch}
            if meanwhile is not None:
                _meanwhile, meanwhile = meanwhile, None
                try:
                    _meanwhile()
                except Exception:  # only a head start for what comes after grading
                    pass
            for future in as_completed(futures):
                student = futures[future]
                attempts[student] += 1
                try:
                    outcome = future.result()
                    failure = machinery_failure(outcome)
                except BrokenProcessPool:
                    failure = "the grading process died"
                except Exception as exc:  # one submission's failure never stops the batch
                    failure = f"the grading process failed ({type(exc).__name__}: {_first_line(exc)})"
                if failure and attempts[student] < MAX_ATTEMPTS:
                    retry.append(student)
                elif failure:
                    done(_not_graded(course, assignment, student, f"{failure} (tried {MAX_ATTEMPTS} times)"))
                else:
                    done(submission_result(course, staged[student], outcome,
                                           Path(dirs.get("autograded_directory") or course.root / "autograded")))
        pending, pool = retry + pending, None
    return sorted(results, key=lambda r: r.student or "")


def _start_pool(jobs: int, submissions: int) -> ProcessPoolExecutor:
    """The grading processes: each imports the grading machinery once, then grades submission after
    submission, each in a fresh sandboxed kernel (the kernel, not this process, is the isolation boundary).

    They are started at once (a process starts on the first task that finds no idle one), so that their
    imports overlap with whatever the caller does next."""
    workers = max(1, min(jobs, submissions))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=grading_context(), initializer=_worker_start)
    for _ in range(workers):
        pool.submit(_ready)
    return pool


def _worker_start() -> None:
    import atexit

    # A spawned process ends through sys.exit, whose teardown of torch and transformers takes over a second,
    # after its results are sent. It skips that: its last at-exit step ends the process at once.
    atexit.register(os._exit, 0)
    import nbgrader.converters  # noqa: F401
    import nbgrader.preprocessors  # noqa: F401

    from . import preprocessors  # noqa: F401


def _ready() -> None:
    """A task that does nothing: submitting it starts a grading process."""


# What nbgrader's log of a failed autograde says when the machinery failed, not the submission. Student
# code never fails autograde itself: its crashes and timeouts are caught cell by cell and cost points.
_MACHINERY_FAILURES = [
    ("database is locked", "the gradebook could not be written: another process kept it locked"),
    ("sqlalchemy.exc.OperationalError", "the gradebook could not be written"),
    ("No space left on device", "the grading machine's disk is full"),
    ("Disk quota exceeded", "the grading machine's disk quota is used up"),
    ("start_new_kernel", "the grading kernel could not start"),
    ("Kernel died before replying to kernel_info", "the grading kernel could not start"),
    ("KernelRestartFailed", "the grading kernel could not be restarted (after a crash or a time-out of the notebook's code)"),
]


def machinery_failure(outcome: dict) -> str:
    """Why an autograde outcome is a failure of the machinery ("" when it is a grade, good or bad)."""
    if outcome.get("success"):
        return ""
    text = f"{outcome.get('error') or ''}\n{outcome.get('log') or ''}"
    return next((reason for marker, reason in _MACHINERY_FAILURES if marker in text), "")


def _not_graded(course: Course, assignment: str, student: str, reason: str) -> SubmissionResult:
    """No score for this submission: none in the gradebook (an older one would read as this one's), none
    in autograded/; the next run grades it."""
    from nbgrader.api import Gradebook, MissingEntry

    shutil.rmtree(course.root / "autograded" / student / assignment, ignore_errors=True)
    try:
        with Gradebook(course.config().CourseDirectory.db_url) as gb:
            gb.remove_submission(assignment, student)
    except MissingEntry:
        pass
    except Exception:  # the gradebook is what failed: say what may be left in it
        reason += "; an earlier grade of it, if any, could not be removed from the gradebook"
    return SubmissionResult(assignment=assignment, student=student, not_graded=reason)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


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
        outcome = autograde(course, assignment, "self", Workspace(dirs))
        failure = machinery_failure(outcome)
        if failure:
            result = SubmissionResult(assignment=assignment, not_graded=failure)
        else:
            result = submission_result(course, Submission(assignment, "self", [name], [name]), outcome,
                                       root / "autograded")
    result.student = None
    result.notebook = str(path)
    return result
