"""Similarity between submissions: which pairs of students wrote suspiciously similar code.

Only what students wrote is compared: the solution cells (nbgrader `solution: true`) of each submission, less the
starter code of the release notebook. Each cell is read with Python's own `tokenize`, and normalised so that what
a copier changes cheaply does not count: comments, docstrings, blank lines and layout are dropped; a name the
student binds (a variable, parameter, function, class or attribute they assign) becomes one placeholder, while the
names of libraries and their functions (`torch.sin`, `.transpose`) stay, since changing those changes the program;
literals stay, spelled one way (`1e4` and `10000.0`, '-inf' and "-inf" are the same).

The normalised tokens are cut into k-grams (every run of K tokens), hashed, and *winnowed* as MOSS does (Schleimer,
Wilkerson and Aiken, 2003): of every WINDOW consecutive hashes the smallest is kept as a fingerprint, so that any
run of K + WINDOW - 1 shared tokens is guaranteed to leave a shared fingerprint, while a submission keeps only
about a third of its hashes. A k-gram never spans two functions or classes (a `def` or `class` starts a new run),
so moving helper functions around, or writing the methods of a class in another order, leaves the fingerprints as
they were. A submission's fingerprints are a set, over all its exercises. The starter code is left out line by
line before any of this: a line that is, once normalised, a line of the starter code (in any exercise: a student may
move it) is not the student's.

A pair's score is the Jaccard index of the two sets (fingerprints in common / fingerprints of either), over the
whole submission: a copied notebook shares nearly everything, while a short exercise that has one obvious answer
(`sum(p.numel() for p in model.parameters())`) is diluted by the rest. A pair is listed when its score reaches the
threshold and the code they share is at least MIN_SHARED tokens long (about six lines) in each: two students who
both wrote the obvious one-liners are never listed.

Why not `copydetect` (0.5.0, MOSS-style winnowing with boilerplate exclusion)? It would install (pure Python; numpy,
matplotlib, jinja2, pygments and tqdm, no torch), but it tokenises with Pygments, which turns every name into the
same placeholder (so `torch.sin` and `torch.cos` look alike, and carla's swapped sine and cosine in the demo class
would vanish), and its k-grams run across function boundaries (so reordering functions changes the fingerprints);
its Detector reads files from folders and prints its progress with print() and tqdm, while here the code is in
notebook cells in memory (only its lower-level CodeFingerprint takes a file object). Winnowing over Python's own
tokens is short enough to write here.

A score is evidence for a person to look at, never a verdict: nothing here changes a grade.
"""
from __future__ import annotations

import ast
import hashlib
import html
import io
import json
import keyword
import tokenize
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from nbgrader.utils import is_solution

K = 10  # tokens per k-gram (a line is about 10); a function shorter than this is one fingerprint as a whole
WINDOW = 5  # winnowing window: a shared run of K + WINDOW - 1 = 14 tokens always leaves a shared fingerprint
THRESHOLD = 0.5  # the default score from which a pair is listed
MIN_SHARED = 60  # tokens of shared code, in each of the two, below which a pair is never listed (about 6 lines)
_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING,
         tokenize.ENDMARKER}


@dataclass
class Submission:
    """One student's code: their solution cells by exercise, and the normalised tokens and fingerprints of them."""
    student: str
    cells: dict[str, str]  # exercise (the cell's grade_id) -> the cell's source
    tokens: list[tuple[str, str, int]] = field(default_factory=list)  # (normalised text, exercise, line number)
    kgrams: list[tuple[int, int, int]] = field(default_factory=list)  # (hash, its first token, the token after it)
    fingerprints: set[int] = field(default_factory=set)


@dataclass
class Pair:
    a: Submission
    b: Submission
    score: float
    shared_tokens: int  # tokens of code the two share, the smaller of the two counts
    lines: dict[str, dict[str, set[int]]]  # student -> exercise -> the lines that match the other's code


def solution_cells(notebooks: list[Path]) -> dict[str, str]:
    """The solution cells of a submission's notebooks, by grade_id (a notebook that cannot be read has none)."""
    from .submissions import read_notebook

    cells: dict[str, str] = {}
    for path in notebooks:
        try:  # never through a link, never a pipe (it would wait forever), at most a submission's size
            nb = read_notebook(path)
        except Exception:  # a malformed notebook: grading reports it; there is nothing here to compare
            continue
        for n, cell in enumerate(nb.get("cells", [])):
            if cell.get("cell_type") == "code" and is_solution(cell):
                grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or f"{path.stem}:{n}"
                cells[grade_id] = cells.get(grade_id, "") + cell.get("source", "")
    return cells


def _bound_names(sources: list[str]) -> tuple[set[str], set[str]]:
    """The names a student chose: what they assign, define, import as, or take as a parameter or loop variable;
    and the attributes they assign (`self.q_proj = ...`)."""
    names: set[str] = set()
    attributes: set[str] = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                attributes.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias) and node.asname:
                names.add(node.asname)
    return names - {"self", "cls"}, attributes


def _keyword_arguments(source: str) -> set[tuple[int, int]]:
    """Where the keyword arguments of calls are (`dim=` in `x.sum(dim=d)`): the callee's names, kept as written."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {(node.lineno, node.col_offset) for node in ast.walk(tree) if isinstance(node, ast.keyword) and node.arg}


def _raw_tokens(source: str) -> list[tokenize.TokenInfo]:
    tokens = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            tokens.append(tok)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # code that does not tokenise to the end: what came before still counts
    return tokens


def _literal(text: str) -> str:
    try:
        return repr(ast.literal_eval(text))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return "S" if text[-1:] in "\"'" else text  # an f-string: its text is the student's, its names too


def _code_tokens(source: str, names: tuple[set[str], set[str]]) -> list[tuple[str, int, bool]]:
    """A cell's code as (normalised text, line, whether a function or class starts there): no comments, layout,
    docstrings or trailing commas; the names the student chose are "V"."""
    raw = _raw_tokens(source)
    keywords = _keyword_arguments(source)
    code = []
    previous, after_dot = tokenize.NEWLINE, False
    for i, tok in enumerate(raw):
        starts_statement = previous in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL)
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            previous = tok.type
        if tok.type in _SKIP:
            continue
        following = next((t for t in raw[i + 1:] if t.type not in _SKIP), None)
        if tok.type == tokenize.STRING and starts_statement and (following is None or following.start[0] > tok.end[0]
                                                                  or following.string == ";"):
            continue  # a docstring, or a string standing alone: prose, not code
        if tok.string == "," and following is not None and following.string in ")]}":
            continue  # a trailing comma is layout
        if tok.type == tokenize.NAME:
            chosen = (tok.string in names[after_dot] and not keyword.iskeyword(tok.string)
                      and tok.start not in keywords)
            text = "V" if chosen else tok.string
        elif tok.type in (tokenize.NUMBER, tokenize.STRING):
            text = _literal(tok.string)
        else:
            text = tok.string
        after_dot = tok.string == "."
        code.append((text, tok.start[0], starts_statement and tok.string in ("def", "class", "@", "async")))
    return code


def _lines(code: list[tuple[str, int, bool]]) -> dict[int, str]:
    lines: dict[int, list[str]] = {}
    for text, line, _ in code:
        lines.setdefault(line, []).append(text)
    return {line: " ".join(texts) for line, texts in lines.items()}


def _normalise(sub: Submission, starter: dict[str, str], names: tuple[set[str], set[str]]) -> list[int]:
    """Fill sub.tokens and sub.kgrams, leaving out each line that is, once normalised, a line of the starter code;
    return the function (a number) that each token is part of."""
    chunk_of: list[int] = []
    chunk = 0
    given = {text for source in starter.values() for text in _lines(_code_tokens(source, names)).values()}
    for exercise, source in sub.cells.items():
        chunk += 1
        code = _code_tokens(source, names)
        starter_lines = {line for line, text in _lines(code).items() if text in given}
        for text, line, starts_function in code:
            if starts_function:
                chunk += 1  # a function or class: k-grams stay inside it, so its place does not matter
            if line not in starter_lines:
                sub.tokens.append((text, exercise, line))
                chunk_of.append(chunk)
    texts = [t for t, _, _ in sub.tokens]
    start = 0
    for end in range(1, len(texts) + 1):
        if end < len(texts) and chunk_of[end] == chunk_of[start]:
            continue
        # A function (or a few statements) shorter than a k-gram is one fingerprint as a whole.
        for i in range(start, max(start + 1, end - K + 1)):
            digest = hashlib.blake2b("\x1f".join(texts[i:min(i + K, end)]).encode(), digest_size=8).digest()
            sub.kgrams.append((int.from_bytes(digest, "big"), i, min(i + K, end)))
        start = end
    return chunk_of


def _winnow(kgrams: list[tuple[int, int, int]], chunk_of: list[int]) -> set[int]:
    """The smallest hash of every WINDOW consecutive k-grams of a function (one shorter than that keeps its
    smallest). Windows stay inside a function too, so that its neighbours never change what it keeps."""
    runs: dict[int, list[int]] = {}
    for h, start, _ in kgrams:
        runs.setdefault(chunk_of[start], []).append(h)
    kept = set()
    for hashes in runs.values():
        kept.update(min(hashes[i:i + WINDOW]) for i in range(max(1, len(hashes) - WINDOW + 1)))
    return kept


def fingerprint(student: str, cells: dict[str, str], starter: dict[str, str]) -> Submission:
    sub = Submission(student, cells)
    chunk_of = _normalise(sub, starter, _bound_names(list(cells.values()) + list(starter.values())))
    sub.fingerprints = _winnow(sub.kgrams, chunk_of)
    return sub


def read_class(submissions: Path, assignment: str, release: Path) -> list[Submission]:
    """Every submission of DIR/<student>/<assignment>/*.ipynb, fingerprinted, the release's starter code left out."""
    starter = solution_cells(sorted(release.glob("*.ipynb")))
    students = sorted(p.name for p in submissions.iterdir()
                      if not p.is_symlink() and (p / assignment).is_dir() and not (p / assignment).is_symlink()
                      ) if submissions.is_dir() else []
    return [fingerprint(s, solution_cells(sorted((submissions / s / assignment).glob("*.ipynb"))), starter)
            for s in students]


def _matching(sub: Submission, shared: set[int]) -> tuple[int, dict[str, set[int]]]:
    """How many of sub's tokens lie in a k-gram the other submission has too, and the lines they are on."""
    covered: set[int] = set()
    for h, start, end in sub.kgrams:
        if h in shared:
            covered.update(range(start, end))
    lines: dict[str, set[int]] = {}
    for i in covered:
        _, exercise, line = sub.tokens[i]
        lines.setdefault(exercise, set()).add(line)
    return len(covered), lines


def compare(subs: list[Submission], threshold: float = THRESHOLD) -> list[Pair]:
    """The pairs scoring at least `threshold` and sharing at least MIN_SHARED tokens, highest score first."""
    pairs = []
    for a, b in combinations(subs, 2):
        union = a.fingerprints | b.fingerprints
        if not union:
            continue
        score = len(a.fingerprints & b.fingerprints) / len(union)
        if score < threshold or score == 0:
            continue
        shared = {h for h, _, _ in a.kgrams} & {h for h, _, _ in b.kgrams}
        n_a, lines_a = _matching(a, shared)
        n_b, lines_b = _matching(b, shared)
        if min(n_a, n_b) >= MIN_SHARED:
            pairs.append(Pair(a, b, score, min(n_a, n_b), {a.student: lines_a, b.student: lines_b}))
    return sorted(pairs, key=lambda p: (-p.score, -p.shared_tokens, p.a.student, p.b.student))


# -- where the report finds the class ----------------------------------------------------------------------
def settings_path(course_root: Path, assignment: str) -> Path:
    return course_root / "reports" / assignment / "similarity.json"


def remember(course_root: Path, assignment: str, submissions: Path, threshold: float | None = None) -> None:
    """Note the submissions folder (and a threshold, if one is given) for the class report's similarity section."""
    path = settings_path(course_root, assignment)
    settings = recalled(course_root, assignment)
    settings["submissions"] = str(submissions.resolve())
    if threshold is not None:
        settings["threshold"] = threshold
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))


def recalled(course_root: Path, assignment: str) -> dict:
    try:
        settings = json.loads(settings_path(course_root, assignment).read_text())
        return settings if isinstance(settings, dict) else {}
    except (OSError, ValueError):
        return {}


# -- the class report's section ----------------------------------------------------------------------------
SIDE_BY_SIDE = 20  # pairs shown side by side; the table lists them all


def _code(source: str, marked: set[int]) -> str:
    lines = source.splitlines() or [""]
    return "\n".join(f"<mark>{html.escape(line) or ' '}</mark>" if n in marked else html.escape(line)
                     for n, line in enumerate(lines, 1))


def section_html(course_root: Path, assignment: str) -> str:
    settings = recalled(course_root, assignment)
    threshold = float(settings.get("threshold", THRESHOLD))
    head = '<h2 id="similarity">Similar submissions</h2>'
    about = f"""<p>Pairs of students whose code is alike. This is evidence for a person, not a verdict: it never
changes a grade, and two students may have worked together as allowed, or both followed the same lecture. Only what
students wrote is compared (the solution cells, less the starter code), with names, comments and layout set aside.
Each submission's code is cut into runs of {K} tokens (a token is a word, number or symbol of Python); <i>winnowing</i>
keeps a fixed sample of those runs as the submission's fingerprints (the smallest hash of every {WINDOW} in a row), so
that any shared stretch of {K + WINDOW - 1} tokens or more is found, whatever order the functions are in. The
<b>score</b> is the share of fingerprints the two have in common, of all the fingerprints of either. A pair is listed
from a score of {threshold:.0%} when its shared code is at least {MIN_SHARED} tokens (about six lines) long.</p>"""
    where = settings.get("submissions")
    if not where:
        return (f"{head}<p>Not computed: the report does not know where the submissions are. Run "
                f"<code>grader similarity {html.escape(assignment)} --submissions DIR</code> (grading with "
                f"<code>grader grade</code> notes the folder too).</p>")
    folder = Path(where)
    if not folder.is_dir():
        return (f"{head}<p>Not computed: the submissions folder {html.escape(where)} is not there any more. Run "
                f"<code>grader similarity {html.escape(assignment)} --submissions DIR</code> with its new place.</p>")
    subs = read_class(folder, assignment, course_root / "release" / assignment)
    pairs = compare(subs, threshold)
    if not pairs:
        return f"{head}{about}<p>No pair of the {len(subs)} submissions in {html.escape(where)} reaches it.</p>"
    rows = "".join(f'<tr><td>{n}</td><td><a href="#pair-{n}">{html.escape(p.a.student)} and '
                   f'{html.escape(p.b.student)}</a></td><td>{100 * p.score:.1f}%</td><td>{p.shared_tokens}</td></tr>'
                   for n, p in enumerate(pairs, 1))
    shown = ""
    for n, p in enumerate(pairs[:SIDE_BY_SIDE], 1):
        a, b = p.a.student, p.b.student
        exercises = [e for e in dict.fromkeys([*p.a.cells, *p.b.cells]) if p.lines[a].get(e) or p.lines[b].get(e)]
        shown += f'<h3 id="pair-{n}">{html.escape(a)} and {html.escape(b)}: {100 * p.score:.1f}%</h3>'
        for e in exercises:
            shown += (f'<p class="exercise">{html.escape(e)}</p><div class="side">'
                      f'<div><b>{html.escape(a)}</b><pre>{_code(p.a.cells.get(e, ""), p.lines[a].get(e, set()))}</pre></div>'
                      f'<div><b>{html.escape(b)}</b><pre>{_code(p.b.cells.get(e, ""), p.lines[b].get(e, set()))}</pre></div>'
                      f'</div>')
    more = (f"<p>The first {SIDE_BY_SIDE} pairs are shown side by side; raise the threshold "
            f"(<code>grader similarity --threshold</code>) to see fewer.</p>") if len(pairs) > SIDE_BY_SIDE else ""
    return f"""{head}{about}<p>{len(subs)} submissions in {html.escape(where)}; {len(pairs)} pair{'s' * (len(pairs) != 1)}
listed. Highlighted lines hold code the other student's submission has too.</p>
<table><tr><th>rank</th><th>students</th><th>score</th><th>shared tokens</th></tr>{rows}</table>{more}{shown}"""
