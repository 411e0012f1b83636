"""The check API: the in-notebook report, and check verdicts turned into scores nbgrader understands."""
import nbformat
import pytest
from nbgrader.utils import determine_grade

from grader.preprocessors import check_calls, render_results
from llmcourse.checking import CheckResult, ExerciseResult


def graded_cell(outputs, points=4):
    cell = nbformat.v4.new_code_cell('check("00_basics/add")')
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "points": points, "grade_id": "c", "schema_version": 3}
    cell.outputs = outputs
    return cell


def result(*passed, points=(1, 3)):
    return ExerciseResult("00_basics/add", [CheckResult(f"c{i}", p, pts if p else 0, pts, "" if p else "wrong", "hint")
                                            for i, (p, pts) in enumerate(zip(passed, points))])


@pytest.mark.parametrize("passed, expected", [((True, True), 4), ((True, False), 1), ((False, True), 3), ((False, False), 0)])
def test_partial_credit_is_what_nbgrader_records(passed, expected):
    cell = graded_cell(render_results([result(*passed)], 4))
    assert determine_grade(cell)[0] == expected


def test_scores_scale_to_the_cells_points():
    cell = graded_cell(render_results([result(True, False)], 8), points=8)
    assert determine_grade(cell)[0] == 2


def test_an_exercise_whose_checks_could_not_run_scores_zero():
    cell = graded_cell(render_results([ExerciseResult("00_basics/add", error="no checks were found")], 4))
    assert determine_grade(cell)[0] == 0


def test_check_calls_are_read_from_the_cell_source():
    source = 'check("01_attention/softmax")\n### BEGIN HIDDEN TESTS\ncheck("01_attention/softmax", hidden=True)\n### END HIDDEN TESTS'
    assert check_calls(source) == [("01_attention/softmax", False), ("01_attention/softmax", True)]
    assert check_calls("print('no checks')") == [] and check_calls("def (") == []


def test_check_in_a_notebook_prints_a_report_with_hints(fixture_course, capsys):
    from llmcourse import check

    ns = {"add": lambda a, b: a - b}
    import __main__

    for k, v in ns.items():
        setattr(__main__, k, v)
    try:
        check("00_basics/add")
    finally:
        del __main__.add
    out = capsys.readouterr().out
    assert "[FAIL] add two vectors" in out and "Hint: Return a + b" in out


def test_check_with_a_bad_id_says_how_to_write_one(capsys):
    from llmcourse import check

    check("softmax")
    assert "needs an exercise id like '01_attention/softmax'" in capsys.readouterr().out


def test_check_fails_a_cell_under_nbgraders_validate_only(fixture_course, capsys, monkeypatch):
    import __main__

    from llmcourse import check
    from llmcourse.checking.notebook import ChecksDidNotPass

    __main__.add = lambda a, b: a - b
    try:
        check("00_basics/add")  # in JupyterLab a failing check only prints its report
        monkeypatch.setenv("NBGRADER_VALIDATING", "1")
        with pytest.raises(ChecksDidNotPass, match="add two vectors") as failed:
            check("00_basics/add")
        # Under Validate the cell's traceback is the report itself, which Validate shows (IPython asks the error).
        shown = failed.value._render_traceback_()
        assert shown[0].startswith("add: checks 0 of ") and any("Hint: Return a + b" in line for line in shown)
        assert "\n".join(shown) == str(failed.value)
        __main__.add = lambda a, b: a + b
        check("00_basics/add")  # a passing check never raises
    finally:
        del __main__.add


def test_a_test_cell_is_split_into_checks_for_the_grader_and_code_for_the_kernel():
    """check(...) statements run in the grader; any other statement runs in the student's kernel, as stock
    nbgrader runs a test cell; a check(...) inside other code is refused with its line."""
    from grader.cells import MixedCellError, test_cell_parts

    assert test_cell_parts("assert f(1) == 2\nassert f(2) == 4\n") == [("kernel", "assert f(1) == 2\nassert f(2) == 4\n")]
    assert test_cell_parts('check("a/f")\n### BEGIN HIDDEN TESTS\ncheck("a/f", hidden=True)\n### END HIDDEN TESTS') == [
        ("checks", 'check("a/f")\ncheck("a/f", hidden=True)\n')]
    assert test_cell_parts('x = f(3)\ncheck("a/f")\nassert x == 6\n') == [
        ("kernel", "x = f(3)\n"), ("checks", 'check("a/f")\n'), ("kernel", "assert x == 6\n")]
    assert test_cell_parts("assert f(1 ==") == [("kernel", "assert f(1 ==")]  # the kernel reports the SyntaxError
    with pytest.raises(MixedCellError, match="line 2: check\\(...\\) must be a statement of its own"):
        test_cell_parts('x = 1\nfor e in ["a/f"]:\n    check(e)\n')


def test_the_runner_keeps_exactly_the_exercises_checks_wherever_they_are_written(tmp_path, monkeypatch):
    """Checks of other exercises are left out before pytest makes items of them; a check written as a method of a
    class is found as one written as a function."""
    (tmp_path / "runner_probe_checks.py").write_text(
        "from llmcourse.checking import graded\n"
        "ASSIGNMENT = 'zz_probe'\n\n"
        "@graded('twice', points=1, hint='h')\n"
        "def test_twice_of_two(student):\n"
        "    assert student.twice(2) == 4\n\n"
        "class TestMore:\n"
        "    @graded('twice', points=2, hint='h')\n"
        "    def test_twice_of_zero(self, student):\n"
        "        assert student.twice(0) == 0\n\n"
        "@graded('half', points=5, hint='h')\n"
        "def test_half(student):\n"
        "    assert student.half(2) == 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from llmcourse.checking import local_student, run_checks

    result = run_checks("zz_probe/twice", local_student({"twice": lambda x: 2 * x}), visible=["runner_probe_checks"])
    assert not result.error, result.error
    assert sorted(c.name for c in result.checks) == ["twice of two", "twice of zero"]
    assert result.score == result.max_score == 3
