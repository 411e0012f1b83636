"""Reading a submission safely: what may be opened, how much, and which fields a notebook must have.

    names, problems, notes = stage(DIR/<student>/<assignment>, private_folder, ["attention"], limits)
    nb = read_notebook(path)          # CourseError with a sentence when it cannot be graded

Submissions are untrusted: a file may be a pipe that blocks forever, a link to the grader's secrets, or a
notebook whose fields have the wrong types. Only regular files are opened, never through a link, and a
submission's size is bounded before it is read. The submission itself is never changed.
"""
from __future__ import annotations

import errno
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import nbformat
from nbformat.reader import NotJSONError

from .course import Course, CourseError, MachineryFailure
from .cells import is_check_cell


class SubmissionTooLarge(CourseError):
    """A submission, or one of its files, is over SubmissionLimits."""


@dataclass(frozen=True)
class SubmissionLimits:
    """What one submission folder may hold, subfolders included, checked before anything is read.

    nbgrader_config.py may change them: `c.Grading.max_submission_bytes`, `c.Grading.max_submission_files`.
    """

    max_bytes: int = 64 * 2**20  # a notebook and its data files; more is a mistake, not homework
    max_files: int = 500

    @classmethod
    def of(cls, course: Course) -> "SubmissionLimits":
        cfg = course.config().Grading
        return cls(max_bytes=int(cfg.get("max_submission_bytes", cls.max_bytes)),
                   max_files=int(cfg.get("max_submission_files", cls.max_files)))


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_A_FILE = [(stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")]


def _kind(mode: int) -> str:
    return next((name for test, name in _NOT_A_FILE if test(mode)), "not a regular file")


def _read_regular(name: str, dir_fd: int | None, limit: int, shown: str) -> bytes:
    """The bytes of regular file `name` (in the folder `dir_fd`), at most `limit` of them, or CourseError."""
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise CourseError(f"{shown} does not exist") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise CourseError(f"{shown} is a symbolic link, not a notebook file: submit the notebook itself") from None
        if exc.errno in (errno.ENXIO, errno.EISDIR):  # a socket, a folder
            raise CourseError(f"{shown} is not a regular file: submit the notebook itself") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CourseError(f"{shown} is {_kind(info.st_mode)}, not a notebook file: submit the notebook itself")
        if info.st_size > limit:
            raise SubmissionTooLarge(f"{shown} is {_size(info.st_size)}, more than the {_size(limit)} a submission may hold: "
                              f"clear the notebook's large outputs (Edit > Clear Outputs of All Cells), save it, and "
                              f"submit it again")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:  # it grew while being read
            raise SubmissionTooLarge(f"{shown} is more than the {_size(limit)} a submission may hold")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _size(n: int) -> str:
    if n >= 2**20:
        return f"{n / 2**20:.1f} MB"
    return f"{n / 2**10:.0f} KB" if n >= 2**10 else f"{n} bytes"


def read_notebook(path: Path, limit: int = SubmissionLimits.max_bytes) -> nbformat.NotebookNode:
    """Read and validate a notebook, or raise CourseError with a sentence a person can act on."""
    return parse_notebook(_read_regular(str(path), None, limit, str(path)), path)


def parse_notebook(data: bytes, path: Path) -> nbformat.NotebookNode:
    """A notebook from a file's bytes, with every field the grader reads of the type it expects."""
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except (json.JSONDecodeError, NotJSONError, nbformat.ValidationError, UnicodeDecodeError, KeyError,
            AttributeError, TypeError) as exc:
        not_json = isinstance(exc, (json.JSONDecodeError, NotJSONError, UnicodeDecodeError))
        kind = "not valid JSON" if not_json else "not a valid notebook"
        raise CourseError(f"{path} is {kind} ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}); "
                          f"open it in Jupyter, save it, and try again") from None
    except Exception as exc:  # nbformat raises many things for broken files; all mean the same to a person
        raise CourseError(f"{path} could not be read as a notebook ({type(exc).__name__}); "
                          f"open it in Jupyter, save it, and try again") from None
    problem = malformed_field(nb)
    if problem:
        raise CourseError(f"{path} is not a valid notebook ({problem}); copy your answers into a fresh copy of the "
                          f"released notebook and submit that")
    return nb


# nbgrader's metadata of a cell, and the type each field must have (nbformat's schema leaves them free).
_NBGRADER_FIELDS = {"grade_id": (str,), "points": (int, float), "solution": (bool,), "grade": (bool,),
                    "locked": (bool,), "task": (bool,), "schema_version": (int,), "checksum": (str,),
                    "cell_type": (str,)}


def malformed_field(nb: Any) -> str:
    """The first field of the notebook whose type the grader cannot work with, in words ("" if none)."""
    if not isinstance(nb.get("metadata"), dict):
        return "its metadata is not a mapping"
    if not isinstance(nb.get("cells"), list):
        return "its cells are not a list"
    for n, cell in enumerate(nb["cells"], 1):
        where = f"cell {n}"
        if not isinstance(cell, dict):
            return f"{where} is not a mapping"
        if "id" in cell and not isinstance(cell["id"], str):
            return f"{where}'s id is not a string"
        source = cell.get("source", "")
        if not (isinstance(source, str) or (isinstance(source, list) and all(isinstance(s, str) for s in source))):
            return f"{where}'s source is not text"
        metadata = cell.get("metadata", {})
        if not isinstance(metadata, dict):
            return f"{where}'s metadata is not a mapping"
        if cell.get("cell_type") == "code":
            outputs = cell.get("outputs", [])
            if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
                return f"{where}'s outputs are not a list of outputs"
        if "nbgrader" not in metadata:
            continue
        grading = metadata["nbgrader"]
        if not isinstance(grading, dict):
            return f"{where}'s nbgrader metadata is a {type(grading).__name__}, not a mapping"
        for key, types in _NBGRADER_FIELDS.items():
            value = grading.get(key)
            if value is None:
                continue
            if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
                return f"{where}'s nbgrader {key} is a {type(value).__name__}"
            if isinstance(value, float) and not math.isfinite(value):
                return f"{where}'s nbgrader {key} is not a finite number"
    return ""


# -- a submission folder ------------------------------------------------------------------------------
class Staged(NamedTuple):
    """What `stage` copied: the notebooks' names (as graded), {name: why it cannot be graded}, and notes for the
    instructor and the student (a notebook graded under another name)."""

    names: list[str]
    problems: dict[str, str]
    notes: list[str]


def stage(submission: Path, dest: Path, expected: list[str],
          limits: SubmissionLimits = SubmissionLimits()) -> Staged:
    """Copy a submission into `dest` (a new folder) for nbgrader.

    The submission itself is only read, never changed. Copied: regular files, in subfolders too, within
    `limits`; left out: links and special files (pipes, sockets, devices). A notebook that cannot be read
    or is malformed is left out and has a problem (it scores 0). A disk that fails raises MachineryFailure.

    An assignment of one notebook, submitted as one notebook of another name (`attention (1).ipynb`, the name a
    browser gives a second download), is graded as that notebook, with a note that says so.
    """
    dest.mkdir(parents=True, mode=0o700)
    try:
        fd = os.open(submission, _DIR_FLAGS)
    except OSError:
        return [], {name: f"the submission folder {submission} cannot be opened (a link, or not a folder)"
                    for name in expected}
    try:
        files: dict[str, bytes] = {}
        problems: dict[str, str] = {}
        _read_folder(fd, "", files, problems, expected, limits, submission, [0])
        notes = _submission_time(fd, files)
    except CourseError as exc:
        return Staged([], {name: str(exc) for name in expected}, [])
    finally:
        os.close(fd)
    names = [n[:-len(".ipynb")] for n in files if "/" not in n and n.endswith(".ipynb")]
    if len(expected) == 1 and len(names) == 1 and names[0] != expected[0] and expected[0] not in problems:
        (wanted,), (found,) = expected, names
        files = {(f"{wanted}.ipynb" if n == f"{found}.ipynb" else n): data for n, data in files.items()}
        names = [wanted]
        notes.append(f"{found}.ipynb was graded as {wanted}.ipynb, the assignment's one notebook: name it "
                     f"{wanted}.ipynb next time")
    try:
        for name, data in files.items():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            stem = name[:-len(".ipynb")] if name.endswith(".ipynb") and "/" not in name else None
            if stem in expected:
                try:
                    nb = without_duplicate_cells(parse_notebook(data, submission / name))
                except CourseError as exc:
                    problems[stem] = str(exc)
                    continue
                data = nbformat.writes(nb).encode("utf-8")
            target.write_bytes(data)
    except OSError as exc:
        raise MachineryFailure(f"the submission could not be copied for grading ({exc.strerror or exc})") from None
    return Staged(names, problems, notes)


def _submission_time(fd: int, files: dict[str, bytes]) -> list[str]:
    """Make sure nbgrader finds when the work was handed in (timestamp.txt, as `nbgrader collect` writes it), so that
    a due date's late penalty applies: a submission without one gets the time its newest notebook was last written.
    A timestamp.txt nbgrader could not read (it would refuse the whole submission) is replaced the same way, with a
    note."""
    from datetime import datetime, timezone

    from nbgrader.utils import parse_utc

    notes = []
    given = files.get("timestamp.txt")
    if given is not None:
        try:
            text = given.decode("utf-8").strip()
            if text and len(text) < 100:
                parse_utc(text)
                return notes
        except (UnicodeDecodeError, ValueError, OverflowError):
            pass
        notes.append("its timestamp.txt could not be read as a time, so the submission time comes from the files")
    times = []
    for name in files:
        if "/" not in name and name.endswith(".ipynb"):
            try:
                times.append(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mtime)
            except OSError:
                pass
    if times:
        when = datetime.fromtimestamp(max(times), tz=timezone.utc)
        files["timestamp.txt"] = when.strftime("%Y-%m-%d %H:%M:%S.%f UTC").encode()
    else:
        files.pop("timestamp.txt", None)
    return notes


_MAX_DEPTH = 16  # folders in folders: deeper ones are left out


def _read_folder(fd: int, prefix: str, files: dict[str, bytes], problems: dict[str, str], expected: list[str],
                 limits: SubmissionLimits, shown: Path, seen: list[int]) -> None:
    """Read every regular file under the open folder `fd` into `files`, never following a link.

    `seen` counts every entry met (files, folders, links, pipes), so that no folder can keep the grader busy."""
    for entry in sorted(os.scandir(fd), key=lambda e: e.name):
        seen[0] += 1
        if seen[0] > limits.max_files:
            raise SubmissionTooLarge(f"the submission {shown} holds more than {limits.max_files} files: submit only "
                                     f"the notebook and the files it needs")
        relative = prefix + entry.name
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISDIR(mode):
            if relative.count("/") >= _MAX_DEPTH:
                continue
            try:
                child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
            except OSError:  # replaced by a link since it was listed
                continue
            try:
                _read_folder(child, relative + "/", files, problems, expected, limits, shown, seen)
            finally:
                os.close(child)
            continue
        budget = limits.max_bytes - sum(len(d) for d in files.values())
        try:
            files[relative] = _read_regular(entry.name, fd, budget, str(shown / relative))
        except SubmissionTooLarge:
            raise SubmissionTooLarge(f"the submission {shown} holds more than the {_size(limits.max_bytes)} a "
                                     f"submission may hold ({relative} is where it went over): submit only the "
                                     f"notebook and the files it needs, with large outputs cleared") from None
        except CourseError as exc:
            if not prefix and entry.name.endswith(".ipynb") and entry.name[:-len(".ipynb")] in expected:
                problems[entry.name[:-len(".ipynb")]] = str(exc)
            # other links and special files are left out: a link could point anywhere on the grader's disk


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
