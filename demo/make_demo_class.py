"""Writes the demo class (demo/submissions/) from source/ and release/.

Five students hand in 01_attention; each shows one thing the grader does:

    ada     everything right                                  -> full marks
    blaise  nothing done (the released notebook)              -> 0
    carla   sin and cos swapped in the positional encoding    -> loses that exercise only
    dmitri  padding mask faked: torch.allclose patched, an object equal to everything, the check cell edited
                                                              -> loses that exercise only
    eve     a cell that kills the kernel                      -> loses that exercise only; the rest is graded

Run `python demo/make_demo_class.py` after changing source/ and `grader build`; commit the result.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT, NAME = "01_attention", "attention"
_MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.MULTILINE)


def grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def solved() -> nbformat.NotebookNode:
    """The released notebook with every answer cell filled in from the source."""
    source = {grade_id(c): c for c in nbformat.read(str(ROOT / "source" / ASSIGNMENT / f"{NAME}.ipynb"), 4).cells}
    nb = blank()
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            cell.source = _MARKER.sub("", source[meta["grade_id"]].source)
    return nb


def blank() -> nbformat.NotebookNode:
    return nbformat.read(str(ROOT / "release" / ASSIGNMENT / f"{NAME}.ipynb"), 4)


def cell(nb, gid):
    return next(c for c in nb.cells if grade_id(c) == gid)


def swap_sin_cos(nb):
    c = cell(nb, "sinusoidal_positional_encoding")
    assert "torch.sin" in c.source and "torch.cos" in c.source
    c.source = c.source.replace("torch.sin", "TMP").replace("torch.cos", "torch.sin").replace("TMP", "torch.cos")
    return nb


def fake_padding_mask(nb):
    c = cell(nb, "padding_mask")
    c.source = '''import torch

class Anything:
    """Equal to everything, true, and any shape you ask for."""
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
    def __getattr__(self, name): return self
    def __call__(self, *args, **kwargs): return self

torch.allclose = lambda *args, **kwargs: True
torch.equal = lambda *args, **kwargs: True

def padding_mask(lengths, max_len):
    return Anything()'''
    cell(nb, "check_padding_mask").source = 'print("padding_mask: checks all passed (6 of 6 points)")'
    return nb


def crash_kernel(nb):
    c = cell(nb, "count_parameters")
    c.source = "import os\nos._exit(1)  # the kernel dies here\n" + c.source
    return nb


def main() -> None:
    students = {
        "ada": solved(),
        "blaise": blank(),
        "carla": swap_sin_cos(solved()),
        "dmitri": fake_padding_mask(solved()),
        "eve": crash_kernel(solved()),
    }
    for student, nb in students.items():
        path = ROOT / "demo" / "submissions" / student / ASSIGNMENT / f"{NAME}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(path))
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
