"""`grader build`: release/ (student notebooks, by nbgrader) and solutions/ (executed) from source/.

release/NN/x.ipynb is nbgrader's generate_assignment output: solutions replaced by stubs, hidden
checks removed. solutions/NN/x.ipynb is the source with the solution markers and hidden checks
removed, executed top to bottom so that it carries its outputs and plots. Executing takes minutes,
so a solution is re-executed only when its source changed (a hash in its metadata says which
source it came from) or when asked to.

`--check` writes nothing: it regenerates into a scratch directory and names every committed file
that differs from what source/ gives (for solutions, the cells; outputs vary from run to run).

A check cell's points are derived, never typed: each check declares its own (`@graded(points=...)`), and
`grader build` writes each check cell's sum into its source notebook before generating anything.

For the course in this repository, `grader build` also copies the visible checks of each check file
(`grader/checks/<name>.py`) into the student package (`llmcourse/checks/<name>.py`); see `grader.shipping`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.util import run_sync

from .course import Course, CourseError
from .cells import check_calls, is_check_cell

_SOLUTION_MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.MULTILINE)
_HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS[ \t]*\n?", re.MULTILINE | re.DOTALL)


@dataclass
class BuildProblem:
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class PointsChange:
    path: Path
    grade_id: str
    written: float  # what the notebook says
    derived: float  # what its checks add up to


def derive_points(course: Course, assignment: str) -> list[PointsChange]:
    """Each check cell whose points differ from its checks' points (the checks are the source of truth).

    A check cell is worth what the checks it calls declare (`@graded(points=...)`), visible and hidden: a
    maintainer sets points on checks only, and `grader build` writes the cells' sums. A test cell without check(...)
    calls (a stock nbgrader test cell, with asserts) keeps the points its author gave it. A cell whose checks add
    up to nothing names an exercise no check module has (a typo), which is an error."""
    from llmcourse.checks import check_modules

    changes = []
    for path in course.source_notebooks(assignment):
        nb = nbformat.read(str(path), as_version=4)
        for cell in nb.cells:
            if not is_check_cell(cell):
                continue
            grade_id = cell.metadata["nbgrader"]["grade_id"]
            points = float(cell.metadata["nbgrader"].get("points", 0))
            if not check_calls(cell.source):
                continue  # a stock nbgrader test cell: worth what its author typed
            total = 0.0
            for exercise, hidden in check_calls(cell.source):
                visible_module, hidden_module = check_modules(exercise.split("/", 1)[0])
                total += _declared_points(exercise, hidden_module, visible=False) if hidden else \
                    _declared_points(exercise, visible_module, visible=True)
            if total <= 0:
                raise CourseError(f"{path}: check cell {grade_id!r} calls no check that exists (its checks add up to "
                                  f"0 points): is each exercise in its check(...) calls spelled as in the check modules")
            if abs(total - points) > 1e-9:
                changes.append(PointsChange(path, grade_id, points, total))
    return changes


def write_points(changes: list[PointsChange]) -> None:
    """Set each check cell's points to its checks' sum, in its source notebook."""
    for path in dict.fromkeys(c.path for c in changes):
        nb = nbformat.read(str(path), as_version=4)
        derived = {c.grade_id: c.derived for c in changes if c.path == path}
        for cell in nb.cells:
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if is_check_cell(cell) and grade_id in derived:
                value = derived[grade_id]
                cell.metadata["nbgrader"]["points"] = int(value) if float(value).is_integer() else value
        nbformat.write(nb, str(path))


def _declared_points(exercise: str, module_name: str, visible: bool) -> float:
    """The points of the exercise's checks in the module: all of them in the visible module; in the hidden one,
    those not marked visible (the assignment's check file holds both kinds, and a visible check runs from the
    student package's copy)."""
    import importlib

    from llmcourse.checking import is_visible

    assignment, _, name = exercise.partition("/")
    module = importlib.import_module(module_name)
    total = 0.0
    for obj in vars(module).values():
        if not visible and is_visible(obj):
            continue
        for mark in getattr(obj, "pytestmark", []):
            if mark.name == "graded" and mark.kwargs.get("exercise") == name and getattr(module, "ASSIGNMENT", None) == assignment:
                total += mark.kwargs["points"]
    return total


def points_disagreements(course: Course, assignment: str) -> list[str]:
    """Check cells of the assignment's source notebooks whose points differ from what their checks declare, each
    as a sentence; read from the check files' text (their `@graded(..., points=N)` decorators), so that the grading
    command, which never imports torch, can refuse such a course before it grades anyone.

    A check module whose decorators are not plain literals (points computed at import) cannot be read this way:
    its cells are left to `grader build --check`, which imports it."""
    from llmcourse.checks import check_modules

    declared: dict[str, dict | None] = {}
    problems = []
    for path in course.source_notebooks(assignment):
        nb = nbformat.read(str(path), as_version=4)
        for cell in nb.cells:
            if not is_check_cell(cell) or not check_calls(cell.source):
                continue
            total = 0.0
            for exercise, hidden in check_calls(cell.source):
                module = check_modules(exercise.split("/", 1)[0])[1 if hidden else 0]
                if module not in declared:
                    declared[module] = _points_in_source(module)
                if declared[module] is None:
                    break
                total += declared[module].get((exercise, not hidden), 0.0)
            else:
                points = float(cell.metadata["nbgrader"].get("points", 0) or 0)
                if abs(total - points) > 1e-9:
                    problems.append(f"{path.name}: check cell {cell.metadata['nbgrader']['grade_id']!r} is worth "
                                    f"{points:g} points, but its checks add up to {total:g}")
    return problems


def _points_in_source(module_name: str) -> dict[tuple[str, bool], float] | None:
    """{(exercise id, counted in a visible run): points} of a check module, read from its source without importing
    it; None when that cannot be done exactly. A visible run (`check(...)`) counts every check of the student
    package's module; a hidden run counts the check file's checks not marked @visible."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec(module_name)
        tree = ast.parse(Path(spec.origin).read_text()) if spec and spec.origin else None
    except (ImportError, OSError, SyntaxError, ValueError):
        return None
    if tree is None:
        return None
    assignment = next((node.value.value for node in tree.body if isinstance(node, ast.Assign)
                       and [getattr(t, "id", None) for t in node.targets] == ["ASSIGNMENT"]
                       and isinstance(node.value, ast.Constant)), None)
    totals: dict[tuple[str, bool], float] = {}
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        names = [d.func if isinstance(d, ast.Call) else d for d in node.decorator_list]
        names = [n.id if isinstance(n, ast.Name) else getattr(n, "attr", None) for n in names]
        is_visible = "visible" in names
        for decorator in node.decorator_list:
            if not (isinstance(decorator, ast.Call) and (getattr(decorator.func, "id", None) == "graded"
                                                         or getattr(decorator.func, "attr", None) == "graded")):
                continue
            exercise = decorator.args[0] if decorator.args else next(
                (k.value for k in decorator.keywords if k.arg == "exercise"), None)
            points = next((k.value for k in decorator.keywords if k.arg == "points"), None)
            if points is None and len(decorator.args) > 1:
                points = decorator.args[1]
            if not (isinstance(exercise, ast.Constant) and isinstance(points, ast.Constant)
                    and isinstance(assignment, str)):
                return None
            for visible_run in (True, False):
                if visible_run or not is_visible:
                    key = (f"{assignment}/{exercise.value}", visible_run)
                    totals[key] = totals.get(key, 0.0) + float(points.value)
    if totals:
        return totals
    # A module that gathers its checks from others (`import grader.checks.x as _x`, 07's hidden checks): theirs.
    parts = [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names
             if alias.name.rsplit(".", 1)[0] == module_name.rsplit(".", 1)[0]]
    for part in parts:
        found = _points_in_source(part)
        if found is None:
            return None
        for key, value in found.items():
            totals[key] = totals.get(key, 0.0) + value
    return totals or None


# -- release -------------------------------------------------------------------------------------------
def build_release(course: Course, assignment: str, out_root: Path) -> list[Path]:
    """nbgrader generate_assignment of `assignment` into out_root/assignment; registers it in the gradebook."""
    from .gradebook import set_up

    api = course.api(release_directory=str(out_root))
    # A new gradebook's schema made here: nbgrader's own way starts a Python process (2.6 s every build).
    set_up(api.coursedir.db_url, then="build again")
    outcome = api.generate_assignment(assignment, force=True, create=True)
    if not outcome.get("success"):
        log = (outcome.get("error") or outcome.get("log") or "").strip().splitlines()
        raise CourseError(f"nbgrader could not generate the student version of {assignment}: "
                          f"{log[-1] if log else 'no details'}")
    return sorted((out_root / assignment).glob("*.ipynb"))


# -- solutions -----------------------------------------------------------------------------------------
def solution_notebook(source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The source notebook as a self-learner should see it: solutions in, markers and hidden checks out."""
    nb = copy.deepcopy(source)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = _HIDDEN.sub("", _SOLUTION_MARKER.sub("", cell.source)).rstrip("\n")
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.setdefault("llmcourse", {})["source_sha256"] = source_hash(source)
    nb.metadata["llmcourse"]["code_sha256"] = code_hash(source)
    assets = assets_hash()
    if assets:
        nb.metadata["llmcourse"]["assets_sha256"] = assets
    return nb


def assets_hash() -> str | None:
    """What else the executed outputs depend on: the course's models, tokenizer and data sets, by the hashes of
    their manifest (assets/manifest.json); None where no assets are found."""
    from llmcourse.assets import AssetError, assets_dir

    try:
        manifest = json.loads((assets_dir() / "manifest.json").read_text())
    except (AssetError, OSError, ValueError):
        return None
    files = manifest.get("sha256") if isinstance(manifest, dict) else None
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest() if files else None


def _assets_changed(stamps: dict, today: str | None) -> bool:
    """Whether a solution was executed with other assets than today's (`assets_hash()`; a solution stamped before
    solutions recorded them is taken as executed with today's)."""
    return "assets_sha256" in stamps and stamps["assets_sha256"] != today


def source_hash(nb: nbformat.NotebookNode) -> str:
    cells = [[c.cell_type, c.source, c.get("metadata", {}).get("tags", [])] for c in nb.cells]
    return hashlib.sha256(json.dumps(cells, sort_keys=True).encode()).hexdigest()


def code_hash(nb: nbformat.NotebookNode) -> str:
    """What the executed outputs depend on: the code cells, in order, with their tags (the prose is left out)."""
    cells = [[c.source, c.get("metadata", {}).get("tags", [])] for c in nb.cells if c.cell_type == "code"]
    return hashlib.sha256(json.dumps(cells, sort_keys=True).encode()).hexdigest()


def execute(nb: nbformat.NotebookNode, workdir: Path, timeout: int = 600) -> float:
    from jupyter_client.manager import AsyncKernelManager

    started = time.monotonic()
    # Unix sockets, not TCP: nothing listens on the network (and the kernel has no reason to warn).
    km = AsyncKernelManager(kernel_name="python3", transport="ipc", ip=str(workdir / "kernel-ipc"),
                            connection_file=str(workdir / "kernel.json"))
    # No timing metadata: a rebuild then changes solutions/ only where an output changed, not in every cell.
    client = NotebookClient(nb, km=km, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    finally:
        if km.has_kernel:  # a kernel manager we pass in is ours to stop
            run_sync(km.shutdown_kernel)(now=True)
    return time.monotonic() - started


def build_solution(course: Course, source_path: Path, dest: Path, force: bool = False) -> tuple[str, float]:
    """Write the executed solution; returns (what was done, seconds): "executed", "up to date", or "prose updated"
    (only markdown changed: the new prose with the outputs already there, so a one-sentence edit rewrites one
    sentence of solutions/, not every output and timestamp)."""
    source = nbformat.read(str(source_path), as_version=4)
    nb = solution_notebook(source)
    if not force and dest.exists():
        current = nbformat.read(str(dest), as_version=4)
        stamps = current.metadata.get("llmcourse", {})
        assets = nb.metadata["llmcourse"].get("assets_sha256")
        if _assets_changed(stamps, assets):
            pass  # the models or data changed since it ran: its outputs are stale, whatever its source
        elif stamps.get("source_sha256") == source_hash(source):
            if ("code_sha256" not in stamps or any("execution" in c.get("metadata", {}) for c in current.cells)
                    or stamps.get("assets_sha256") != assets):
                # Built before solutions recorded their code's and assets' hashes and left out timing: brought
                # up to that now.
                stamps["code_sha256"] = code_hash(source)
                if assets:
                    stamps["assets_sha256"] = assets
                for cell in current.cells:
                    cell.get("metadata", {}).pop("execution", None)
                nbformat.write(current, str(dest))
            return "up to date", 0.0
        elif stamps.get("code_sha256") == code_hash(source):
            ran = [c for c in current.cells if c.cell_type == "code"]
            for cell, old in zip((c for c in nb.cells if c.cell_type == "code"), ran):
                cell.outputs, cell.execution_count = old.outputs, old.execution_count
            for key, value in current.metadata.items():  # the kernel's language info, say
                nb.metadata.setdefault(key, value)
            nbformat.write(nb, str(dest))
            return "prose updated", 0.0
    dest.parent.mkdir(parents=True, exist_ok=True)
    extras = extra_files(source_path.parent)
    with tempfile.TemporaryDirectory(prefix="grader-solution-") as scratch:
        for relative in extras:  # the notebook runs beside its data files, as a student's copy does
            (Path(scratch) / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source_path.parent / relative, Path(scratch) / relative)
        seconds = execute(nb, Path(scratch))
    without_progress_widgets(nb)
    for relative in extras:  # ... and so can a self-learner's run of the solution
        (dest.parent / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source_path.parent / relative, dest.parent / relative)
    nbformat.write(nb, str(dest))
    return "executed", seconds


_WIDGET = "application/vnd.jupyter.widget-view+json"


def without_progress_widgets(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop the outputs that show a live widget (a progress bar): a saved notebook keeps only the widget's first
    frame as text ("0%| 0/200"), which tells a reader of the executed solution something false."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if _WIDGET not in o.get("data", {})]
    nb.metadata.pop("widgets", None)
    return nb


def extra_files(folder: Path) -> list[Path]:
    """The files of an assignment's source folder besides its notebooks (data a notebook reads), relative to it,
    as nbgrader copies them into the release and into each submission's graded folder."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.suffix != ".ipynb"
                  and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(folder).parts))


# -- checking committed files --------------------------------------------------------------------------
def _cells(nb: nbformat.NotebookNode, with_outputs: bool) -> list:
    out = []
    for c in nb.cells:
        item = [c.cell_type, c.source, c.get("metadata", {}).get("nbgrader", {})]
        if with_outputs and c.cell_type == "code":
            item.append(c.get("outputs", []))
        out.append(item)
    return out


def ships_checks(course: Course) -> bool:
    """Whether `course` is this repository's own course, whose visible checks `grader build` copies into the student
    package (an instructor's own course keeps its check modules wherever LLMCOURSE_EXTRA_CHECKS says)."""
    from . import shipping

    return shipping.CHECKS.parent.parent.resolve() == course.root.resolve()


def check_build(course: Course, assignments: list[str]) -> list[BuildProblem]:
    problems: list[BuildProblem] = []
    if ships_checks(course):
        from . import shipping

        problems += [BuildProblem(path, reason) for path, reason in shipping.stale()]
    for assignment in assignments:
        problems += [BuildProblem(c.path, f"check cell {c.grade_id!r} is worth {c.written:g} points, but its checks "
                                          f"add up to {c.derived:g}: run `grader build`, which writes their sum")
                     for c in derive_points(course, assignment)]
        with tempfile.TemporaryDirectory(prefix="grader-build-check-") as scratch:
            for fresh in build_release(course, assignment, Path(scratch)):
                committed = course.root / "release" / assignment / fresh.name
                if not committed.exists():
                    problems.append(BuildProblem(committed, "missing: run `grader build`"))
                    continue
                a = nbformat.read(str(committed), as_version=4)
                b = nbformat.read(str(fresh), as_version=4)
                if _cells(a, True) != _cells(b, True):
                    problems.append(BuildProblem(committed, "differs from what source/ generates: run `grader build`"))
        for source_path in course.source_notebooks(assignment):
            committed = course.root / "solutions" / assignment / source_path.name
            if not committed.exists():
                problems.append(BuildProblem(committed, "missing: run `grader build`"))
                continue
            expected = solution_notebook(nbformat.read(str(source_path), as_version=4))
            current = nbformat.read(str(committed), as_version=4)
            if _cells(current, False) != _cells(expected, False):
                problems.append(BuildProblem(committed, "is out of date with source/: run `grader build`"))
            elif _assets_changed(current.metadata.get("llmcourse", {}),
                                 expected.metadata["llmcourse"].get("assets_sha256")):
                problems.append(BuildProblem(committed, "was executed with other models or data sets than those in "
                                                        "assets/ now: run `grader build`, which executes it again"))
    return problems


def build(course: Course, assignments: list[str], force: bool = False, log=print) -> None:
    if ships_checks(course):
        from . import shipping

        for path in shipping.write():
            log(f"checks    {path.relative_to(course.root)} (the visible checks of grader/checks/{path.name})")
    for assignment in assignments:
        changes = derive_points(course, assignment)
        write_points(changes)
        for c in changes:
            log(f"points    {c.path.relative_to(course.root)}: check cell {c.grade_id!r} is now worth {c.derived:g} "
                f"(its checks' points; it said {c.written:g})")
        for path in build_release(course, assignment, course.root / "release"):
            log(f"release   {path.relative_to(course.root)}")
        for source_path in course.source_notebooks(assignment):
            dest = course.root / "solutions" / assignment / source_path.name
            done, seconds = build_solution(course, source_path, dest, force=force)
            state = f"executed in {seconds:.0f} s" if done == "executed" else done
            log(f"solution  {dest.relative_to(course.root)} ({state})")
