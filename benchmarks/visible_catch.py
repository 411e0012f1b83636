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


def caught_by_visible(result) -> bool:
    return any(c.visible and not c.passed and not c.message.startswith("This check counts once") for c in result.checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "visible_catch.md")
    args = parser.parse_args()

    import torch

    from tests.specs import all_specs
    from tests.test_checks import assignment_of

    torch.set_num_threads(1)
    rows, missed_all, started = [], [], time.monotonic()
    for spec in all_specs():
        A = assignment_of(spec)
        quizzes = {e for e in spec.exercises if A.defined_name(e) is None and e not in A.trained}
        counted = [c for c in spec.cases if c.kind == "mutant" and not c.slow and c.exercise not in quizzes]
        missed = [c for c in counted if not caught_by_visible(
            A.mutant_result(c.exercise, c.name, c.source(A.defined_name(c.exercise))))]
        left_out = sum(1 for c in spec.cases if c.kind == "mutant") - len(counted)
        rows.append((spec.assignment, len(counted), len(counted) - len(missed), left_out))
        missed_all += [f"{spec.assignment} {c.exercise}: {c.name}" for c in missed]
        print(f"{spec.assignment}: {len(counted) - len(missed)} of {len(counted)}", flush=True)

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
