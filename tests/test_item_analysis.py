"""Item analysis of the checks on a synthetic class (grades.json's results, written directly): twenty students of
graded ability and two blank submissions. A sound class flags nothing; with one check broken (one nobody can
pass, one everybody passes, blank work included, or one that passes wrong work and fails right work), exactly
that check is flagged, with its sentence, and no other.
"""
from __future__ import annotations

import html

import pytest

from grader import item_analysis
from grader.cells import NOT_WRITTEN

# exercise -> [(check, points, the ability from which a student passes it)]
EXERCISES = {
    "softmax": [("sums_to_one", 2, 0.2), ("stable", 1, 0.5), ("all_masked", 1, 0.7)],
    "attention": [("shapes", 1, 0.3), ("values", 2, 0.45), ("masked", 2, 0.6)],
    "positional": [("columns", 2, 0.35), ("odd_width", 1, 0.8)],
}
BROKEN = ("attention", "masked")


def result(student: str, ability: float | None, broken: str | None) -> dict:
    """A student's grades.json entry: checks pass from their ability up (None: a blank submission)."""
    exercises = []
    for name, checks in EXERCISES.items():
        results = []
        for check, points, needs in checks:
            passed = ability is not None and ability >= needs
            if (name, check) == BROKEN and broken:
                passed = {"never": False, "always": True, "inverted": ability is not None and ability < needs}[broken]
            message = "" if passed else (f"{name} {NOT_WRITTEN}" if ability is None else "wrong values")
            results.append({"name": check, "passed": passed, "points": points if passed else 0,
                            "max_points": points, "visible": True, "message": message, "hint": ""})
        score = sum(c["points"] for c in results)
        exercises.append({"id": f"01_attention/{name}", "score": score,
                          "max_score": sum(p for _, p, _ in checks), "checks": results})
    return {"student": student, "score": sum(ex["score"] for ex in exercises),
            "max_score": sum(ex["max_score"] for ex in exercises), "exercises": exercises}


def class_of(broken: str | None = None) -> list[dict]:
    students = [result(f"s{i:02d}", 0.05 + 0.9 * i / 19, broken) for i in range(20)]
    return students + [result("blank1", None, broken), result("blank2", None, broken)]


def flagged(results) -> dict[tuple[str, str], str]:
    return {(i.exercise, i.check): i.flag for i in item_analysis.analyse(results) if i.flag}


def test_a_sound_class_flags_nothing():
    items = item_analysis.analyse(class_of())
    assert flagged(class_of()) == {}
    checks = [i for i in items if i.check]
    assert len(checks) == sum(len(c) for c in EXERCISES.values())
    # Blank work is not attempted, so it is not counted; every check tells strong work from weak.
    assert all(i.attempts == 20 for i in checks)
    assert all(i.discrimination is not None and i.discrimination > 0.3 for i in checks), checks
    assert [i.difficulty for i in checks if i.exercise == "softmax"] == [0.8, 0.5, 0.3]


@pytest.mark.parametrize("broken, says", [
    ("never", "Nobody passes it"),
    ("always", "Everybody passes it, even 6 submissions that fail the exercise's other checks"),  # 2 blank, 4 weak
    ("inverted", "Those who pass it score lower on the rest of the assignment"),
])
def test_exactly_the_broken_check_is_flagged(broken, says):
    found = flagged(class_of(broken))
    assert list(found) == [BROKEN], found
    assert found[BROKEN].startswith(says), found[BROKEN]
    page = item_analysis.section_html(class_of(broken))
    assert page.count('class="flagged"') == 1 and html.escape(says) in page


def test_a_student_who_did_one_exercise_right_is_not_junk():
    """Five students who wrote only `attention`, and wrote it right: every check of it passes, and none is flagged."""
    one_exercise = []
    for n in range(5):
        r = result(f"only{n}", None, None)
        done = result(f"only{n}", 1.0, None)["exercises"][1]
        r["exercises"][1] = done
        r["score"] = done["score"]
        one_exercise.append(r)
    assert flagged(one_exercise) == {}
    assert [i.difficulty for i in item_analysis.analyse(one_exercise) if i.exercise == "attention"] == [1.0] * 4


def test_too_few_attempts_are_not_flagged():
    """Four attempts of a check nobody passes are noise, not a broken check (the page says how many it takes)."""
    few = [r for r in class_of("never") if r["student"] in ("s05", "s10", "s15", "s19")]
    assert flagged(few) == {}
    assert f"at least {item_analysis.MIN_ATTEMPTS} attempts" in item_analysis.section_html(few)


def test_point_biserial_is_pearsons_correlation():
    passed = [True, False, True, True, False, False, True]
    rest = [9.0, 2.0, 7.5, 4.0, 3.0, 5.0, 8.0]
    x = [float(p) for p in passed]
    mx, my = sum(x) / len(x), sum(rest) / len(rest)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, rest))
    pearson = cov / (sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in rest)) ** 0.5
    assert item_analysis.point_biserial(passed, rest) == pytest.approx(pearson, abs=1e-12)
    assert item_analysis.point_biserial([True, True], [1.0, 2.0]) is None
