"""Similarity between submissions, on synthetic classes of 01_attention made from its release notebook (no grading):
a copy with renamed variables and reordered helper functions is found, and so is a copy of that copy; notebooks
holding only the starter code are never paired; two students who each wrote the obvious answer of short exercises
are not listed, and neither is an independent solution of the long ones. The demo class with three planted copies
lists exactly the planted pairs at the top.
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import nbformat

from grader import similarity
from grader.cli import main

from .conftest import REPO, cell_by_id, read

ASSIGNMENT = "01_attention"
RELEASE = REPO / "release" / ASSIGNMENT

# One student's work, with helper functions of their own.
ORIGINAL = {
    "softmax": '''def row_peak(values, axis):
    """The largest entry of each slice, 0 where a slice is all -inf."""
    peak = values.amax(dim=axis, keepdim=True)
    return torch.where(torch.isinf(peak), torch.zeros_like(peak), peak)


def guarded_divide(numerator, denominator):
    return numerator / torch.where(denominator == 0, torch.ones_like(denominator), denominator)


def softmax(x, dim=-1):
    """Softmax of `x` along `dim`; safe for large values, and all zeros for a slice that is entirely -inf."""
    shifted = torch.exp(x - row_peak(x, dim))  # never overflows
    return guarded_divide(shifted, shifted.sum(dim=dim, keepdim=True))
''',
    "scaled_dot_product_attention": '''def scaled_dot_product_attention(q, k, v, mask=None):
    """Attention of queries q (..., Lq, d) over keys k (..., Lk, d) and values v (..., Lk, dv)."""
    dim = q.size(-1)
    logits = torch.matmul(q, k.transpose(-1, -2)) * dim ** -0.5
    if mask is not None:
        logits = logits.masked_fill(mask.logical_not(), -float("inf"))
    attn = softmax(logits, dim=-1)
    return torch.matmul(attn, v), attn
''',
    "sinusoidal_positional_encoding": '''def sinusoidal_positional_encoding(n_positions, d_model):
    dtype = torch.float64  # precise angles
    table = torch.zeros(n_positions, d_model, dtype=dtype)
    for pos in range(n_positions):
        for i in range(0, d_model, 2):
            rate = 1.0 / (10000 ** (i / d_model))
            table[pos, i] = math.sin(pos * rate)
            if i + 1 < d_model:
                table[pos, i + 1] = math.cos(pos * rate)
    return table.float()
''',
    "count_parameters": '''def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
''',
    # The starter's d_model is called width here: those lines are still the starter's.
    "multi_head_attention": '''class MultiHeadAttention(nn.Module):
    """n_heads attentions over d_model / n_heads dimensions each, then a linear layer that mixes them."""

    def __init__(self, width, n_heads, bias=True):
        super().__init__()
        assert width % n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads = n_heads
        self.d_head = width // n_heads
        self.last_weights = None  # (B, n_heads, Lq, Lk) of the latest forward, for plotting
        self.qkv = nn.ModuleList(nn.Linear(width, width, bias=bias) for _ in range(3))
        self.mix = nn.Linear(width, width, bias=bias)

    def forward(self, x, context=None, mask=None):
        """x (B, Lq, d_model), context (B, Lk, d_model) or None for self-attention -> (B, Lq, d_model)."""
        source = x if context is None else context
        heads = [proj(t).unflatten(-1, (self.n_heads, self.d_head)).transpose(1, 2)
                 for proj, t in zip(self.qkv, (x, source, source))]
        out, self.last_weights = scaled_dot_product_attention(*heads, mask)
        return self.mix(out.transpose(1, 2).flatten(2))
''',
}

# Another student's solutions of the same exercises, written without seeing the first.
INDEPENDENT = {
    "softmax": '''def softmax(x, dim=-1):
    m = torch.max(x, dim=dim, keepdim=True).values
    m = torch.nan_to_num(m, neginf=0.0)
    num = (x - m).exp()
    den = num.sum(dim, keepdim=True)
    den[den == 0] = 1.0
    return num / den
''',
    "scaled_dot_product_attention": '''def scaled_dot_product_attention(q, k, v, mask=None):
    s = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(k.shape[-1])
    if mask is not None:
        s = torch.where(mask, s, torch.full_like(s, float("-inf")))
    w = softmax(s)
    out = torch.einsum("...qk,...kd->...qd", w, v)
    return out, w
''',
    "sinusoidal_positional_encoding": '''def sinusoidal_positional_encoding(n_positions, d_model):
    i = torch.arange(0, d_model, 2).float()
    inv = torch.exp(-math.log(10000.0) * i / d_model)
    ang = torch.arange(n_positions).float().unsqueeze(1) * inv
    out = torch.empty(n_positions, d_model)
    out[:, 0::2] = ang.sin()
    out[:, 1::2] = ang.cos()[:, : d_model // 2]
    return out
''',
    "count_parameters": '''def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
''',
}

RENAMES = {"values": "t", "axis": "d", "peak": "biggest", "numerator": "top", "denominator": "bottom",
           "shifted": "ex", "row_peak": "max_per_row", "guarded_divide": "safe_div", "dim": "width",
           "logits": "scores", "attn": "probabilities", "table": "pe", "pos": "p", "rate": "freq",
           "dtype": "precision", "qkv": "projections", "mix": "output", "heads": "parts"}


def renamed(source: str, renames: dict[str, str]) -> str:
    """Names renamed as a copier renames them: everywhere, but for the keyword arguments of calls (`dim=` of
    torch's functions), which are not theirs to choose."""
    def line(text: str) -> str:
        word = r"\b\w+\b" if text.lstrip().startswith("def ") else r"\b\w+\b(?!=[^=])"
        return re.sub(word, lambda m: renames.get(m.group(0), m.group(0)), text)

    return "\n".join(line(text) for text in source.split("\n"))


def top_level_reversed(source: str) -> str:
    """The cell's functions in the opposite order."""
    blocks = re.split(r"\n(?=def )", source.strip("\n"))
    return "\n\n\n".join(reversed(blocks)) + "\n"


def reworded(source: str) -> str:
    """Other comments, no docstrings, and other line breaks: what a copier changes next."""
    source = re.sub(r'\s*""".*?"""', "", source, flags=re.S)
    source = re.sub(r"#.*", "# my own comment", source)
    return source.replace(", keepdim=True)", ",\n        keepdim=True,\n    )")


def notebook(answers: dict[str, str]) -> nbformat.NotebookNode:
    nb = read(RELEASE / "attention.ipynb")
    for grade_id, source in answers.items():
        cell_by_id(nb, grade_id).source = source
    return nb


def write_class(root: Path, students: dict[str, nbformat.NotebookNode]) -> Path:
    for student, nb in students.items():
        path = root / student / ASSIGNMENT / "attention.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(path))
    return root


def listed(root: Path, threshold: float = similarity.THRESHOLD) -> dict[frozenset, float]:
    pairs = similarity.compare(similarity.read_class(root, ASSIGNMENT, RELEASE), threshold)
    return {frozenset((p.a.student, p.b.student)): p.score for p in pairs}


def test_a_renamed_reordered_copy_and_a_copy_of_it_are_found(tmp_path):
    copy = {k: top_level_reversed(renamed(v, RENAMES)) for k, v in ORIGINAL.items()}
    copy_of_copy = {k: reworded(renamed(v, {"t": "inp", "biggest": "mx"})) for k, v in copy.items()}
    root = write_class(tmp_path, {"orig": notebook(ORIGINAL), "copier": notebook(copy),
                                  "second": notebook(copy_of_copy), "own": notebook(INDEPENDENT),
                                  "blank": notebook({})})
    started = time.perf_counter()
    found = listed(root)
    assert time.perf_counter() - started < 0.5
    assert set(found) == {frozenset(p) for p in (("orig", "copier"), ("orig", "second"), ("copier", "second"))}, found
    assert found[frozenset(("orig", "copier"))] == 1.0  # names and order are set aside entirely
    assert found[frozenset(("copier", "second"))] > 0.8

    # Side by side, what they wrote is highlighted, and the starter code (signature, docstring) is not.
    pair = next(p for p in similarity.compare(similarity.read_class(root, ASSIGNMENT, RELEASE))
                if {p.a.student, p.b.student} == {"orig", "copier"})
    marked = pair.lines["orig"]["scaled_dot_product_attention"]
    assert marked == set(range(3, 9)), marked
    marked = pair.lines["orig"]["multi_head_attention"]
    assert marked == {10, 11, 15, 16, 17, 18, 19}, marked


def test_starter_code_alone_is_never_paired(tmp_path):
    """Notebooks as released: as they are, with the starter code's comments, layout and a parameter's name changed,
    or with all of it moved into one cell (twice): none is paired, even at threshold 0."""
    touched = read(RELEASE / "attention.ipynb")
    for cell in touched.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            cell.source = re.sub(r"\bd_model\b(?! must)", "width", cell.source.replace("# YOUR CODE HERE", "# TODO: later")
                                 .replace("(", "( ")) + "\n\n"
    def moved() -> nbformat.NotebookNode:
        """All the starter code in the first exercise's cell, the others empty."""
        nb = read(RELEASE / "attention.ipynb")
        cells = [c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("solution")]
        cells[0].source = "\n\n".join(c.source for c in cells)
        for cell in cells[1:]:
            cell.source = ""
        return nb

    root = write_class(tmp_path, {"blank": read(RELEASE / "attention.ipynb"), "touched": touched,
                                  "moved": moved(), "moved_too": moved()})
    assert listed(root, threshold=0.0) == {}
    subs = similarity.read_class(root, ASSIGNMENT, RELEASE)
    assert all(not s.fingerprints for s in subs), [(s.student, len(s.fingerprints)) for s in subs]


def test_independent_solutions_are_not_listed(tmp_path):
    """Short exercises have one obvious answer: two students who both wrote it are not listed, even when every
    line they wrote is the same; nor is an independent solution of the longer exercises."""
    short = {
        "causal_mask": "def causal_mask(n):\n    return torch.tril(torch.ones(n, n, dtype=torch.bool))\n",
        "count_parameters": ORIGINAL["count_parameters"],
        "padding_mask": "def padding_mask(lengths, max_len):\n    return torch.arange(max_len) < lengths[:, None]\n",
    }
    other = {**short, "causal_mask": "def causal_mask(n):\n    return torch.ones(n, n).tril().bool()\n"}
    root = write_class(tmp_path, {"first": notebook(short), "second": notebook(other), "same": notebook(short),
                                  "orig": notebook(ORIGINAL), "own": notebook(INDEPENDENT)})
    assert listed(root) == {}
    assert listed(root, threshold=0.0) == {}  # the short answers: too little shared code to be evidence


def test_demo_class_lists_the_planted_copies_first(tmp_path, capsys):
    """The done-when check: the demo class plus three planted copies of carla's notebook and a second notebook as
    released. The planted pairs are exactly the top of the list; no notebook of starter code is in it.

    (The demo's ada, carla, dmitri and eve were all written from the reference solution by demo/make_demo_class.py,
    so they are alike too, and are listed below the planted copies.)"""
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(REPO / "nbgrader_config.py", course)
    for folder in ("source", "release"):
        shutil.copytree(REPO / folder / ASSIGNMENT, course / folder / ASSIGNMENT)
    subs = tmp_path / "submissions"
    shutil.copytree(REPO / "demo" / "submissions", subs)
    carla = read(subs / "carla" / ASSIGNMENT / "attention.ipynb")
    renames = {"top": "biggest", "e": "ex", "total": "denom", "scores": "logits", "weights": "probs",
               "position": "pos", "frequency": "freq", "angle": "theta", "pe": "enc", "q_proj": "query",
               "k_proj": "key", "v_proj": "value", "out_proj": "proj", "ln1": "norm1", "ln2": "norm2", "mlp": "ffn",
               "gpt": "base", "linear": "lin", "hf_block": "src", "block": "dst", "tok_emb": "token_table",
               "pos_emb": "position_table", "n": "length"}

    def planted(edit) -> nbformat.NotebookNode:
        nb = nbformat.from_dict(carla)
        for cell in nb.cells:
            if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
                cell.source = edit(cell.source)
        return nb

    def methods_swapped(source: str) -> str:
        """forward before __init__ in every class."""
        if "    def forward" not in source:
            return source
        head, forward = source.split("    def forward", 1)
        header, init = head.split("    def __init__", 1)
        return f"{header}    def forward{forward.rstrip()}\n\n    def __init__{init.rstrip()}\n"

    renamed_copy = planted(lambda s: renamed(s, renames))
    write_class(subs, {"renamed": renamed_copy, "reordered": planted(methods_swapped),
                       "blank_too": read(RELEASE / "attention.ipynb")})
    copy_of_copy = nbformat.from_dict(renamed_copy)
    for cell in copy_of_copy.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            cell.source = methods_swapped(reworded(cell.source))
    write_class(subs, {"copy_of_copy": copy_of_copy})

    started = time.perf_counter()
    assert main(["--course", str(course), "similarity", ASSIGNMENT, "--submissions", str(subs)]) == 0
    seconds = time.perf_counter() - started
    out = capsys.readouterr().out
    assert "not a verdict" in out

    section = similarity.section_html(course, ASSIGNMENT)
    rows = re.findall(r"<tr><td>(\d+)</td><td><a href=\"#pair-\1\">(\w+) and (\w+)</a></td><td>([\d.]+)%</td>", section)
    ranked = [(frozenset((a, b)), float(score)) for _, a, b, score in rows]
    group = ("carla", "renamed", "reordered", "copy_of_copy")
    planted_pairs = {frozenset((a, b)) for i, a in enumerate(group) for b in group[i + 1:]}
    assert {pair for pair, _ in ranked[:len(planted_pairs)]} == planted_pairs, ranked
    lowest_planted = min(score for _, score in ranked[:len(planted_pairs)])
    assert all(score < lowest_planted for _, score in ranked[len(planted_pairs):]), ranked
    assert not any({"blaise", "blank_too"} & pair for pair, _ in ranked), ranked
    assert "evidence for a person, not a verdict" in section and section.count("<mark>") > 100
    print(f"demo class + 4: {len(ranked)} pairs listed, planted {lowest_planted}%, next "
          f"{ranked[len(planted_pairs)][1]}%; grader similarity {seconds:.2f} s")


def test_links_and_pipes_in_the_submissions_are_never_read(tmp_path):
    """A pipe in place of a notebook would make a plain read wait forever; a link could show a file the student
    cannot read in the report's side-by-side view. Neither is read: the copy through a link is not compared."""
    import os

    root = write_class(tmp_path, {"orig": notebook(ORIGINAL)})
    secret = tmp_path / "elsewhere" / "attention.ipynb"
    secret.parent.mkdir()
    shutil.copy(root / "orig" / ASSIGNMENT / "attention.ipynb", secret)
    (root / "linker" / ASSIGNMENT).mkdir(parents=True)
    (root / "linker" / ASSIGNMENT / "attention.ipynb").symlink_to(secret)
    (root / "folder_linker").mkdir()
    (root / "folder_linker" / ASSIGNMENT).symlink_to(secret.parent)
    (root / "piper" / ASSIGNMENT).mkdir(parents=True)
    os.mkfifo(root / "piper" / ASSIGNMENT / "attention.ipynb")
    subs = {s.student: s for s in similarity.read_class(root, ASSIGNMENT, RELEASE)}
    assert set(subs) == {"orig", "linker", "piper"}
    assert not subs["linker"].fingerprints and not subs["piper"].fingerprints
    assert listed(root, threshold=0.0) == {}
