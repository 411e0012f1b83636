"""Helpers for tests that use a course notebook's own code in-process (milliseconds, no kernel)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat

_MAGIC = re.compile(r"^\s*[%!].*$", re.MULTILINE)
_SOLUTION_MARKERS = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$", re.MULTILINE)


def is_check_cell(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.cell_type == "code" and meta.get("grade", False) and not meta.get("solution", False)


def code_cells(path: str | Path, skip_tags: tuple[str, ...] = ("demo",)) -> list[tuple[int, Any]]:
    """The notebook's code cells that define things: no check cells, no cells tagged `demo`."""
    nb = nbformat.read(str(path), as_version=4)
    cells = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or is_check_cell(cell):
            continue
        if set(cell.get("metadata", {}).get("tags", [])) & set(skip_tags):
            continue
        cells.append((i, cell))
    return cells


def notebook_namespace(path: str | Path, skip_tags: tuple[str, ...] = ("demo",)) -> dict[str, Any]:
    """Run a notebook's defining cells in a fresh namespace (magics removed) and return it."""
    namespace: dict[str, Any] = {"__name__": "__notebook__"}
    for index, cell in code_cells(path, skip_tags):
        source = _SOLUTION_MARKERS.sub("", _MAGIC.sub("", cell.source))
        exec(compile(source, f"<{Path(path).name} cell {index}>", "exec"), namespace)
    return namespace
