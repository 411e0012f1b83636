"""Hostile submissions about what a kernel sends back and what students see (added to the catalogue's CASES).

- floods that used to pass the output limit: output metadata, display updates that rewrite earlier outputs,
  widget (comm) messages that the grader kept in memory;
- a hidden check's data (the inputs it tried, what it expected, the student's exception text) must reach
  neither the graded notebook's outputs nor the feedback, while `grader grade --json` keeps it for the
  instructor;
- scripts in outputs, markdown and attachments must not run in the formgrader or in feedback.
"""
from __future__ import annotations

import json

import nbformat

from tests.active_html import active_content

from .cases import ASSIGNMENT, FULL, NOTEBOOK, Case, student, v_flood_is_capped

def feedback_page(obs) -> str:
    """The case's feedback, as nbgrader's own `generate_feedback` writes it for the graded notebook."""
    from grader.course import Course

    course = Course(obs.run.ctx.course)
    outcome = course.api().generate_feedback(ASSIGNMENT, obs.student, force=True)
    if not outcome.get("success"):
        raise AssertionError(f"generate_feedback failed: {outcome.get('error') or outcome.get('log')}")
    return (obs.run.ctx.course / "feedback" / obs.student / ASSIGNMENT / f"{NOTEBOOK}.html").read_text()


def graded_notebook(obs) -> dict:
    return json.loads((obs.run.ctx.course / "autograded" / obs.student / ASSIGNMENT / f"{NOTEBOOK}.ipynb").read_text())


# -- the hostile code -----------------------------------------------------------------------------------
METADATA_FLOOD = '''from IPython.display import display

def add(a, b):
    return a + b

for _ in range(10):  # 10 MB of output metadata behind one character of output
    display({"text/plain": "x"}, metadata={"junk": "m" * 1_000_000}, raw=True)
'''

DISPLAY_UPDATE_FLOOD = '''from IPython.display import clear_output, display, update_display

def scale(x, factor):
    return x * factor

for _ in range(20):
    display("small", display_id="flood")
for _ in range(3):  # each would rewrite the 20 outputs above: 60 MB
    update_display({"text/plain": "u" * 1_000_000}, display_id="flood", raw=True)
'''

CLEAR_AND_DISPLAY_FLOOD = '''from IPython.display import clear_output, display

clear_output()
for _ in range(3):  # a new output with a used display id rewrites every earlier one, in every cell
    display({"text/plain": "v" * 1_000_000}, display_id="flood", raw=True)
'''

# What ipywidgets does: a comm per widget, and its state in messages; here 100 MB of it.
COMM_FLOOD = '''from comm import create_comm

def mean_rows(x):
    return x.mean(dim=-1)

state = {"_model_module": "@jupyter-widgets/controls", "_model_name": "TextModel"}
print("CATALOGUE comm: sending", flush=True)
for i in range(100):
    comm = create_comm(target_name="jupyter.widget", data={"state": state, "buffer_paths": []})
    comm.send({"method": "update", "state": {"value": "w" * 1_000_000}, "buffer_paths": [["b"]]},
              buffers=[b"b" * 10_000])
'''

# Right on the visible check's inputs, an exception naming the hidden check's inputs everywhere else.
LEAK_HIDDEN_INPUTS = '''import torch

def scale(x, factor):
    if x.dtype == torch.float64:
        raise ValueError(f"LEAKED-INPUT {x.tolist()} factor={factor}")
    return x * factor
'''

SCRIPTS = '''from IPython.display import HTML, Javascript, Markdown, SVG, display

def add(a, b):
    return a + b

display(HTML('<b>bold</b><script>window.PWNED = 1</script><img src=x onerror="window.PWNED = 2">'))
display(Javascript("window.PWNED = 3"))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" onload="window.PWNED = 4"></svg>'))
display(Markdown("[click](javascript:window.PWNED=5) <img src=x onerror=window.PWNED=6>"))
display({"text/html": "<iframe srcdoc=\\"<script>parent.PWNED=7</script>\\"></iframe>", "text/plain": "frame"}, raw=True)
'''


def b_metadata_flood(ctx):
    return student(ctx, {"add": METADATA_FLOOD})


def b_display_update_flood(ctx):
    return student(ctx, {"scale": DISPLAY_UPDATE_FLOOD}, after=[("mean_rows", CLEAR_AND_DISPLAY_FLOOD)])


def b_comm_flood(ctx):
    return student(ctx, {"mean_rows": COMM_FLOOD})


def b_hidden_leak(ctx):
    return student(ctx, {"scale": LEAK_HIDDEN_INPUTS})


def b_scripts(ctx):
    nb = student(ctx, {"add": SCRIPTS})
    markdown = nbformat.v4.new_markdown_cell(
        "My notes <script>window.PWNED = 8</script> [x](javascript:window.PWNED=9) "
        "<img src=x onerror=window.PWNED=10> ![pic](attachment:pic.png)")
    markdown.attachments = {"pic.png": {"image/png": '" onerror="window.PWNED=11', "text/html": "<script>PWNED</script>"}}
    nb.cells.insert(2, markdown)
    return nb


# -- host-side verifications ------------------------------------------------------------------------------
def v_no_hidden_data_for_students(obs) -> list[str]:
    problems = []
    graded = graded_notebook(obs)
    shown = json.dumps([{k: v for k, v in out.get("data", {}).items() if k != "application/vnd.llmcourse.check-details+json"}
                        | {"text": out.get("text", ""), "evalue": out.get("evalue", "")}
                        for cell in graded["cells"] for out in cell.get("outputs", [])])
    for secret in ("LEAKED-INPUT [", "factor=-0.5", "in float64"):  # the student's own source has none of them
        if secret in shown:
            problems.append(f"the graded notebook's outputs show the hidden check's {secret!r}")
        if secret in feedback_page(obs):
            problems.append(f"the feedback shows the hidden check's {secret!r}")
    return problems


def v_no_script_runs(obs) -> list[str]:
    from nbconvert import HTMLExporter

    # The formgrader shows the graded notebook with nbconvert; here without any sanitising of its own.
    formgrader, _ = HTMLExporter(template_name="classic").from_notebook_node(
        nbformat.reads(json.dumps(graded_notebook(obs)), as_version=4))
    problems = [f"the graded notebook, as the formgrader shows it, runs {found}" for found in active_content(formgrader)]
    problems += [f"the feedback runs {found}" for found in active_content(feedback_page(obs))]
    report = obs.run.ctx.course / "reports" / ASSIGNMENT / "report.html"
    problems += [f"the class report runs {found}" for found in active_content(report.read_text())]
    return problems


NOTE = r"\[the grader kept the first 2,097,152 bytes of this cell's output and dropped the rest\]"
# The grade's notes say that a cell's output was cut, for the instructor.
CUT = r"cell \d+: output cut \(the grader kept the first 2,097,152 bytes"

OUTPUT_CASES: list[Case] = [
    Case("output_metadata_flood", "`add` is right; its cell shows one character ten times, each with 1 MB of "
                                  "output metadata.",
         b_metadata_flood, FULL, message=CUT, output=(NOTE,), verify=v_flood_is_capped),
    Case("display_update_flood", "20 outputs with one display id, then updates of 1 MB each (60 MB once "
                                 "rewritten), and a later cell that clears its output and displays 1 MB with the "
                                 "same id three times.",
         b_display_update_flood, FULL, message=CUT, output=(NOTE,), verify=v_flood_is_capped),
    Case("comm_flood", "100 widget comms, each sent 1 MB of state and a buffer, as ipywidgets would (100 MB that "
                       "nbclient would keep in the grader's memory).",
         b_comm_flood, FULL, message=CUT, output=(r"CATALOGUE comm: sending", NOTE), verify=v_flood_is_capped),
    Case("hidden_check_leak", "`scale` is right for the visible check and raises an exception naming its inputs "
                              "for the hidden one: students see the hint, the instructor the message.",
         b_hidden_leak, {**FULL, "scale": 1}, message=r"scale.*LEAKED-INPUT \[",
         forbidden=(r"LEAKED-INPUT \[", r"factor=-0\.5", r"in float64"), verify=v_no_hidden_data_for_students),
    Case("script_outputs", "HTML with <script> and onerror, JavaScript, SVG with onload, markdown with a "
                           "javascript: link, an iframe; a markdown cell with the same and a forged attachment.",
         b_scripts, FULL, verify=v_no_script_runs),
]
