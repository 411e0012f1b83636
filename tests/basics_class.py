"""Students' notebooks of the fixture course's 00_basics, made from its release: the reference answers, and
a notebook with some exercises answered (the others left as released)."""
from __future__ import annotations

from pathlib import Path

import nbformat

from .conftest import cell_by_id, read

CORRECT = {
    "add": 'def add(a, b):\n    return a + b',
    "scale": 'def scale(x, factor):\n    return x * factor',
    "mean_rows": 'def mean_rows(x):\n    return x.mean(dim=-1)',
}


def student_notebook(course: Path, answers: dict[str, str], extra_cells: list[tuple[int, str]] = ()):
    """The released notebook with some exercises answered (others left as released)."""
    nb = read(course / "release" / "00_basics" / "basics.ipynb")
    for grade_id, source in answers.items():
        cell_by_id(nb, grade_id).source = source
    for index, source in sorted(extra_cells, reverse=True):
        nb.cells.insert(index, nbformat.v4.new_code_cell(source))
    return nb
