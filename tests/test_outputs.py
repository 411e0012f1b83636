"""What a kernel sends back is bounded, what students see never shows a hidden check's data, and no
script from a student's notebook survives into the graded notebook or its feedback.

Fast: the preprocessors run on notebooks and hand-made kernel messages, with no kernel.
"""
from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionComplete

from grader.preprocessors import (CHECK_DETAILS_MIME, RESULT_MIME, RunChecks, StripHiddenChecks, cell_results,
                                  redacted_result, render_results)
from grader.sanitize import SanitizeNotebook
from llmcourse.checking import CheckResult, ExerciseResult
from llmcourse.checking.notebook import format_report
from tests.active_html import active_content

CELL_CAP = 64 * 2**10
NOTEBOOK_CAP = 256 * 2**10


def client(cells: int = 3) -> RunChecks:
    """A RunChecks with small budgets on a notebook of empty code cells, as `preprocess` sets it up."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"cell {i}", metadata={"execution": {}})
                                         for i in range(cells)])
    run = RunChecks(max_cell_output=CELL_CAP, max_notebook_output=NOTEBOOK_CAP)
    NotebookClient.__init__(run, nb)
    run.clear_before_next_output = False  # as execute_cell leaves it
    return run


def message(kind: str, content: dict, metadata: dict | None = None, buffers: list[bytes] = ()) -> dict:
    return {"msg_type": kind, "header": {"msg_type": kind, "msg_id": "m"}, "parent_header": {"msg_id": "p"},
            "metadata": metadata or {}, "content": content, "buffers": list(buffers)}


def display(text: str, display_id: str | None = None, kind: str = "display_data", metadata: dict | None = None) -> dict:
    content = {"data": {"text/plain": text}, "metadata": metadata or {}}
    if display_id:
        content["transient"] = {"display_id": display_id}
    return message(kind, content)


def send(run: RunChecks, index: int, msg: dict) -> None:
    run.process_message(msg, run.nb.cells[index], index)


def size(run: RunChecks) -> int:
    return len(json.dumps(run.nb))


def notes(cell) -> list[str]:
    return [o.text for o in cell.outputs if o.output_type == "stream" and o.text.startswith("\n[the grader")]


# -- output limits ---------------------------------------------------------------------------------------
def test_output_metadata_counts_against_the_cell_budget():
    run = client()
    send(run, 0, display("x", metadata={"junk": "m" * 2**20}))
    assert size(run) < CELL_CAP
    assert notes(run.nb.cells[0]) == [f"\n[the grader kept the first {CELL_CAP:,} bytes of this cell's output and "
                                      f"dropped the rest]\n"]


def test_buffers_and_message_metadata_count_too():
    run = client()
    send(run, 0, message("display_data", {"data": {"text/plain": "x"}, "metadata": {}}, metadata={"m": "x" * CELL_CAP}))
    send(run, 1, message("display_data", {"data": {"text/plain": "x"}, "metadata": {}}, buffers=[b"b" * CELL_CAP]))
    assert all(notes(c) for c in run.nb.cells[:2])


def test_display_updates_cannot_grow_earlier_outputs_past_the_budget():
    run = client()
    for _ in range(100):
        send(run, 0, display("small", display_id="d"))
    for _ in range(20):  # each would rewrite the 100 outputs above
        send(run, 1, display("u" * 30_000, display_id="d", kind="update_display_data"))
    assert size(run) < NOTEBOOK_CAP
    assert notes(run.nb.cells[1])


def test_a_new_display_with_a_used_display_id_counts_every_output_it_rewrites():
    run = client()
    for _ in range(100):
        send(run, 0, display("small", display_id="d"))
    send(run, 1, message("clear_output", {"wait": False}))
    send(run, 1, display("u" * 30_000, display_id="d"))  # rewrites cell 0's outputs, not only its own
    assert size(run) < NOTEBOOK_CAP
    assert all(o.data["text/plain"] == "small" for o in run.nb.cells[0].outputs if o.output_type == "display_data")


def test_the_notebook_budget_bounds_the_graded_notebook_whatever_each_cell_does():
    run = client(cells=20)
    for index in range(20):
        for _ in range(3):
            send(run, index, message("stream", {"name": "stdout", "text": "s" * 20_000}))
    assert size(run) < NOTEBOOK_CAP + 20 * 200
    dropped = [index for index, cell in enumerate(run.nb.cells) if notes(cell)]
    assert dropped and dropped == list(range(dropped[0], 20))
    assert "the notebook's output had reached the limit of 262,144 bytes" in notes(run.nb.cells[-1])[0]


def test_one_flooding_cell_does_not_silence_the_cells_after_it():
    run = client()
    for _ in range(20):
        send(run, 0, message("stream", {"name": "stdout", "text": "s" * 100_000}))
    send(run, 1, message("stream", {"name": "stdout", "text": "still here"}))
    assert notes(run.nb.cells[0]) and run.nb.cells[1].outputs[0].text == "still here"


def test_comm_messages_leave_no_state_in_the_grader():
    run = client()
    opened = {"comm_id": "w", "target_name": "jupyter.widget", "data": {"state": {
        "_model_module": "@jupyter-widgets/output", "_model_name": "OutputModel", "outputs": []}, "buffer_paths": []}}
    send(run, 0, message("comm_open", opened))
    for i in range(30):
        send(run, 0, message("comm_msg", {"comm_id": f"c{i}", "data": {"state": {"value": "v" * 1000},
                                                                      "buffer_paths": [["b"]]}}, buffers=[b"x" * 1000]))
    assert run.widget_state == {} and run.widget_buffers == {} and run.comm_objects == {}


def test_the_end_of_a_cell_is_seen_after_its_budget_is_spent():
    run = client()
    send(run, 0, message("stream", {"name": "stdout", "text": "s" * 2 * CELL_CAP}))
    with pytest.raises(CellExecutionComplete):
        send(run, 0, message("status", {"execution_state": "idle", "junk": "j" * CELL_CAP}))


def test_a_forged_message_is_dropped_with_a_note_and_grading_goes_on():
    run = client()
    send(run, 0, message("display_data", {"transient": {"display_id": ["not", "a", "string"]}}))
    send(run, 0, message("execute_result", {"data": "not a bundle"}))
    assert notes(run.nb.cells[0]) == ["\n[the grader dropped a message from the kernel that is not a valid output]\n"]


# -- hidden checks ---------------------------------------------------------------------------------------
SECRET = "softmax([5.0, -3.0]) gave [0.5, 0.5], expected [0.9997, 0.0003]"


def mixed_result() -> ExerciseResult:
    return ExerciseResult("01_attention/softmax", [
        CheckResult("sums to one", False, 0, 1, "softmax(x) does not sum to 1 along dim", "Normalise along dim.",
                    visible=True),
        CheckResult("softmax edge cases", False, 0, 2, SECRET, "Subtract the maximum first.", visible=False),
        CheckResult("leaves its input unchanged", True, 1, 1, visible=False),
    ])


def test_a_check_cell_shows_hidden_checks_as_pass_or_fail_and_hint_only():
    outputs = render_results([mixed_result()], 4)
    shown = json.dumps([{k: v for k, v in o.get("data", {}).items() if k != CHECK_DETAILS_MIME} for o in outputs]
                       + [o.get("evalue", "") for o in outputs])
    assert "0.9997" not in shown and "5.0, -3.0" not in shown
    text = outputs[0].data["text/plain"]
    assert "[FAIL] softmax edge cases (2 pt)" in text and "Hint: Subtract the maximum first." in text
    assert "softmax(x) does not sum to 1 along dim" in text  # a visible check keeps its message


def test_the_instructor_reads_the_full_results_and_a_student_tool_the_redacted_ones():
    cell = nbformat.v4.new_code_cell()
    cell.outputs = render_results([mixed_result()], 4)
    full = cell_results(cell)[0]["checks"]
    redacted = cell_results(cell, redacted=True)[0]["checks"]
    assert full[1]["message"] == SECRET
    assert "0.9997" not in json.dumps(redacted) and redacted[1]["hint"] == "Subtract the maximum first."
    assert redacted[0]["message"] == full[0]["message"] and redacted[2]["message"] == ""
    assert "0.9997" not in json.dumps(redacted_result({"student": "s", "exercises": cell_results(cell)}))


def test_feedback_drops_the_instructors_results_and_redacts_notebooks_graded_before():
    cell = nbformat.v4.new_code_cell('check("01_attention/softmax")\n### BEGIN HIDDEN TESTS\n'
                                     'check("01_attention/softmax", hidden=True)\n### END HIDDEN TESTS')
    old_style = nbformat.v4.new_output("display_data", data={
        "text/plain": f"softmax: checks 1 of 3 passed\n         {SECRET}",
        RESULT_MIME: {"exercises": [mixed_result().to_json()]}})
    cell.outputs = render_results([mixed_result()], 4) + [old_style]
    nb = nbformat.v4.new_notebook(cells=[cell])
    StripHiddenChecks()(nb, {})
    assert "0.9997" not in json.dumps(nb) and "hidden=True" not in cell.source
    assert "Hint: Subtract the maximum first." in cell.outputs[-1].data["text/plain"]


def test_a_student_writing_the_hidden_tests_delimiter_still_gets_feedback():
    """Why StripHiddenChecks and not nbgrader's ClearHiddenTests: that one raises on these cells of a student's."""
    from nbgrader.preprocessors import ClearHiddenTests

    solution = {"grade": False, "solution": True, "locked": False, "grade_id": "s", "schema_version": 3}

    def notebook(source):
        return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source, metadata={"nbgrader": solution})])

    for source in ("x = 1  # BEGIN HIDDEN TESTS\ny = 2",
                   "print('### BEGIN HIDDEN TESTS')\n### END HIDDEN TESTS\nz = 3"):
        with pytest.raises(RuntimeError):
            ClearHiddenTests()(notebook(source), {})
        nb, _ = StripHiddenChecks()(notebook(source), {})
        assert nb.cells[0].source.splitlines()[0] == source.splitlines()[0]


def test_format_report_never_prints_a_hidden_checks_message():
    text = format_report(mixed_result())
    assert SECRET not in text and "[FAIL] softmax edge cases" in text and "Normalise along dim." in text


# -- scripts in outputs ----------------------------------------------------------------------------------
HOSTILE_HTML = '<b>bold</b><script>window.PWNED = 1</script><img src=x onerror="window.PWNED = 2">'


def hostile_notebook() -> nbformat.NotebookNode:
    code = nbformat.v4.new_code_cell("display(...)")
    code.outputs = [
        nbformat.v4.new_output("display_data", data={"text/html": HOSTILE_HTML, "text/plain": "<HTML>"},
                               metadata={"text/html": {"isolated": True}}),
        nbformat.v4.new_output("display_data", data={"text/latex": r"$\href{javascript:window.PWNED=12}{x}$",
                                                     "text/plain": "latex"}),
        nbformat.v4.new_output("display_data", data={"application/javascript": "window.PWNED = 3",
                                                     "image/svg+xml": "<svg onload='window.PWNED = 4'/>",
                                                     "text/markdown": "[click](javascript:window.PWNED=5)"}),
    ]

    markdown = nbformat.v4.new_markdown_cell("# Notes\n<script>window.PWNED = 6</script>\n![i](attachment:a.png)")
    markdown.attachments = {"a.png": {"image/png": '" onerror="window.PWNED = 7', "text/html": "<script>x</script>"},
                            "b.png": {"image/png": "iVBORw0KGgo="}}
    raw = nbformat.v4.new_raw_cell("<script>window.PWNED = 8</script>")
    math = nbformat.v4.new_markdown_cell(r"Math: $\href{javascript:window.PWNED=13}{x}$ and $x \le y$")
    checks = nbformat.v4.new_code_cell('check("00_basics/add")')
    checks.outputs = render_results([mixed_result()], 4)
    nb = nbformat.v4.new_notebook(cells=[code, markdown, raw, checks, math])
    code.outputs.append(nbformat.NotebookNode(output_type="execute_result", execution_count=1, metadata={},
                                              data={"text/html": {"not": "a string"}}))
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"x": "<script>"}}}
    return nb


def test_the_sanitised_notebook_keeps_no_script_and_keeps_the_results():
    nb, _ = SanitizeNotebook()(hostile_notebook(), {})  # as nbgrader calls it
    text = json.dumps([[c.get("outputs", []), c.get("attachments", {})] for c in nb.cells] + [nb.metadata])
    for danger in ("<script", "<img", "<svg", "application/javascript", "isolated", "widgets"):
        assert danger not in text, danger
    assert nb.cells[0].outputs[0].data["text/html"].startswith("<b>bold</b>&lt;script&gt;")
    assert nb.cells[1].source.startswith("[the grader shows this cell as text")
    assert nb.cells[1].attachments["b.png"] == {"image/png": "iVBORw0KGgo="}
    assert nb.cells[3].outputs[0].data.keys() >= {RESULT_MIME, CHECK_DETAILS_MIME, "text/plain"}
    assert "text/latex" not in nb.cells[0].outputs[1].data and nb.cells[4].source.startswith("[the grader shows")


@pytest.mark.parametrize("sanitize_html", [False, True])
def test_no_script_runs_in_the_sanitised_notebooks_html(sanitize_html):
    from nbconvert import HTMLExporter

    assert active_content(HTMLExporter(template_name="classic").from_notebook_node(hostile_notebook())[0])
    nb, _ = SanitizeNotebook()(hostile_notebook(), {})  # as nbgrader calls it
    page, _ = HTMLExporter(template_name="classic", sanitize_html=sanitize_html).from_notebook_node(nb)
    assert active_content(page) == [] and "PWNED" in page


def test_the_class_report_shows_hostile_text_as_text(tmp_path):
    from grader.course import Course
    from grader.report import build_report

    (tmp_path / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.db_url = 'sqlite:///{tmp_path / 'gradebook.db'}'\n")
    script = '<script>window.PWNED = 1</script><img src=x onerror="window.PWNED = 2">'
    results = [{"student": f"s{script}", "score": 1, "max_score": 4, "error": f"found {script}.ipynb",
                "events": [script], "exercises": [{"id": f"00_basics/add{script}", "score": 1, "max_score": 4,
                                                   "checks": [{"name": script, "passed": False, "points": 0,
                                                               "max_points": 3, "message": script, "hint": script,
                                                               "visible": False}]}]}]
    (tmp_path / "reports" / "00_basics").mkdir(parents=True)
    (tmp_path / "reports" / "00_basics" / "grades.json").write_text(json.dumps(results))
    page = build_report(Course(tmp_path), "00_basics").read_text()
    assert active_content(page) == [] and "<script" not in page and "&lt;script&gt;" in page


COMM_FLOOD = '''from comm import create_comm

state = {"_model_module": "@jupyter-widgets/controls", "_model_name": "TextModel"}
for i in range(100):
    comm = create_comm(target_name="jupyter.widget", data={"state": state, "buffer_paths": []})
    comm.send({"method": "update", "state": {"value": "w" * 1_000_000}, "buffer_paths": [["b"]]}, buffers=[b"b" * 10_000])
'''


def grade_traced(source: str, folder):
    """Grade a cell of `source` then `print('after')` in a real sandboxed kernel: the notebook, the
    preprocessor, and the most memory the grader's Python held meanwhile."""
    import tracemalloc

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source), nbformat.v4.new_code_cell("print('after')")])
    run = RunChecks(timeout=120)
    tracemalloc.start()
    try:
        run.preprocess(nb, {"metadata": {"path": str(folder)}})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return nb, run, peak


@pytest.mark.slow
def test_a_comm_flood_from_a_real_kernel_leaves_the_graders_memory_bounded(tmp_path):
    nb, run, peak = grade_traced(COMM_FLOOD, tmp_path)
    # 100 MB went by: no more than a few messages of it are held at once, and none of it is kept.
    assert run.widget_state == {} and run.widget_buffers == {}
    assert peak < 40 * 2**20, f"the grader held {peak / 2**20:.0f} MiB at its peak"
    assert notes(nb.cells[0]) and nb.cells[1].outputs[0].text == "after\n"
    assert len(json.dumps(nb)) < 2 * 2**20 + 10_000


# -- where grader/cli.py writes results ---------------------------------------------------------------------


def full_submission():
    from grader.grading import SubmissionResult

    exercise = mixed_result().to_json()
    return SubmissionResult(assignment="01_attention", score=exercise["score"], max_score=exercise["max_score"],
                            exercises=[exercise], student="ada")


def test_grades_json_keeps_hidden_messages_out(tmp_path):
    from grader.cli import write_class_files
    from grader.course import Course

    (tmp_path / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.db_url = 'sqlite:///{tmp_path / 'gradebook.db'}'\n")
    folder = write_class_files(Course(tmp_path), "01_attention", [full_submission()])
    grades = (folder / "grades.json").read_text()
    assert "Subtract the maximum first." in grades and "0.9997" not in grades


def test_grader_check_shows_a_self_learner_hidden_checks_as_pass_or_fail_and_hint(monkeypatch, capsys, tmp_path):
    import grader.grading
    from grader.cli import main

    notebook = tmp_path / "attention.ipynb"
    notebook.write_text("{}")
    result = full_submission()
    result.student, result.notebook = None, str(notebook)
    monkeypatch.setattr(grader.grading, "check_notebook", lambda course, path: result)
    for flags in ([], ["--json"]):
        main(["check", str(notebook), *flags])
        out = capsys.readouterr().out
        assert "Subtract the maximum first." in out and "0.9997" not in out


ONE_HUGE_MESSAGE = "import sys\nsys.stdout.write('x' * 300_000_000)\nsys.stdout.flush()"


@pytest.mark.slow
def test_one_huge_message_is_refused_before_the_grader_holds_it(tmp_path):
    nb, _, peak = grade_traced(ONE_HUGE_MESSAGE, tmp_path)
    # 300 MB in one message: ZeroMQ drops it on arrival, so the grader never holds it, and the next cell still runs.
    assert peak < 100 * 2**20, f"the grader held {peak / 2**20:.0f} MiB at its peak"
    assert nb.cells[1].outputs and nb.cells[1].outputs[0].text == "after\n"
    assert len(json.dumps(nb)) < 2 * 2**20 + 10_000


def test_format_report_colours_pass_and_fail_only_when_asked():
    """In a Jupyter kernel PASS is green and FAIL red (ANSI colours that JupyterLab renders); elsewhere, and in
    what the grader stores, the text is plain and otherwise the same."""
    from llmcourse.checking.notebook import _colour_shown

    plain, coloured = format_report(mixed_result()), format_report(mixed_result(), colour=True)
    assert "\x1b[" not in plain and "\x1b[31mFAIL\x1b[0m" in coloured
    assert coloured.replace("\x1b[32m", "").replace("\x1b[31m", "").replace("\x1b[0m", "") == plain
    assert not _colour_shown()  # pytest is no Jupyter kernel
