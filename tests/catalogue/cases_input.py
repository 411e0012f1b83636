"""Submissions whose files or fields are not what a notebook's should be: each scores 0 with a sentence that
names the file and the fix, and never stops, hangs or crashes the batch."""
from __future__ import annotations

import json

import nbformat

from .cases import ASSIGNMENT, NOTEBOOK, Case, Fifo, Files, Symlink, student

NOTHING = {"add": 0, "scale": 0, "mean_rows": 0}


def _with_nbgrader_field(ctx, grade_id: str, key: str, value):
    """The reference answers, with one cell's nbgrader metadata (or one field of it) replaced: raw JSON,
    since nbformat would not write such a notebook."""
    data = json.loads(nbformat.writes(student(ctx)))
    target = next(c for c in data["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)
    if key == "nbgrader":
        target["metadata"]["nbgrader"] = value
    else:
        target["metadata"]["nbgrader"][key] = value
    return json.dumps(data, indent=1)


def b_metadata_string(ctx):
    return _with_nbgrader_field(ctx, "add", "nbgrader", "solution")


def b_points_string(ctx):
    return _with_nbgrader_field(ctx, "check_scale", "points", "300")


def b_fifo(ctx):
    return Files({f"{NOTEBOOK}.ipynb": Fifo(), "notes.txt": "my notes\n"})


def b_notebook_link(ctx):
    return Files({f"{NOTEBOOK}.ipynb": Symlink(ctx.course / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb")})


INPUT_CASES = [
    Case("nbgrader_metadata_string", "The add answer cell's nbgrader metadata is the string 'solution', not a "
                                     "mapping (this used to stop the whole batch with AttributeError).",
         b_metadata_string, NOTHING,
         message=r"basics\.ipynb is not a valid notebook \(cell \d+'s nbgrader metadata is a str, not a mapping\); "
                 r"copy your answers into a fresh copy of the released notebook"),
    Case("nbgrader_points_string", "The scale check cell's points are the string '300'.",
         b_points_string, NOTHING, message=r"cell \d+'s nbgrader points is a str"),
    Case("notebook_fifo", "basics.ipynb is a named pipe (FIFO): opening it to read would wait forever "
                          "(this used to hang the batch).",
         b_fifo, NOTHING, message=r"basics\.ipynb is a named pipe \(FIFO\), not a notebook file: submit the notebook itself"),
    Case("notebook_symlink", "basics.ipynb is a symbolic link to the course's source notebook (the reference solution).",
         b_notebook_link, NOTHING, message=r"basics\.ipynb is a symbolic link, not a notebook file"),
]
