"""How many of each assignment's known mistakes a student sees before grading.

For every wrong implementation in tests/specs/ (the mutants), the visible checks alone (what `check(...)` runs
in the student's notebook) are run against it: a mutant is caught when some visible check fails by itself, not
merely because a main check of the exercise failed first. Quizzes are left out (a visible check of their answers
would give them away), and so are mutants that retrain a model (slow; their checks are the same as the fast
ones').

    python benchmarks/visible_catch.py [--out benchmarks/results/visible_catch.md]

The course's rule, which tests/test_checks.py enforces, is at least 9 in 10 for every assignment.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "visible_catch.md")
    args = parser.parse_args()

    import torch

    from tests.exercises import Assignment
    from tests.specs import all_specs

    torch.set_num_threads(1)
    rows, missed_all, started = [], [], time.monotonic()
    for spec in all_specs():
        A = Assignment.of(spec)
        counted = {e: {n: c.source(A.defined_name(e)) for n, c in by_name.items() if not c.slow}
                   for e, by_name in spec.of("mutant").items() if e not in A.quizzes()}
        n = sum(len(m) for m in counted.values())
        missed = A.visible_misses(counted)  # as tests/test_checks.py counts them
        left_out = sum(1 for c in spec.cases if c.kind == "mutant") - n
        rows.append((spec.assignment, n, n - len(missed), left_out))
        missed_all += [f"{spec.assignment} {m}" for m in missed]
        print(f"{spec.assignment}: {n - len(missed)} of {n}", flush=True)

    lines = ["# The mistakes a student sees before grading", "",
             "Written by `python benchmarks/visible_catch.py`: for each assignment, the wrong implementations of "
             "tests/specs/ that its visible checks alone catch. Quizzes and mistakes that retrain a model are left "
             "out (last column).", "",
             "| assignment | mistakes counted | caught by the visible checks | share | left out |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {n} | {k} | {k / n:.0%} | {o} |" for a, n, k, o in rows]
    total, caught = sum(r[1] for r in rows), sum(r[2] for r in rows)
    lines += [f"| all | {total} | {caught} | {caught / total:.0%} | {sum(r[3] for r in rows)} |", ""]
    lines += ["Missed by the visible checks (the hidden ones catch them):", ""]
    lines += [f"- {m}" for m in missed_all] or ["- none"]
    lines += ["", f"{time.monotonic() - started:.0f} s on {torch.get_num_threads()} thread(s)."]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
