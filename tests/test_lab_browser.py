"""A student's first exercise, in a real browser: JupyterLab as `make lab` starts it, Chromium from Debian.

The test opens release/01_attention (a copy), runs the setup cell, writes the `softmax` exercise,
runs its check cell and reads the verdict in the page; then writes a wrong answer and reads the hint;
then puts the right answer back, saves, and runs nbgrader's Validate from the notebook's toolbar, whose dialog
shows each failing check cell's report as the cell shows it.
Screenshots of each step are kept as artefacts (tests/artifacts/screenshots/, or LLMCOURSE_SCREENSHOTS).
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import expect

from tests.services.lab import chromium_page, lab_server, screenshots_dir

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "01_attention/attention.ipynb"
WRONG = "def softmax(x, dim=-1):\n    return torch.exp(x) / torch.exp(x).sum(dim=dim, keepdim=True)\n"


def cell_index(nb: nbformat.NotebookNode, grade_id: str) -> int:
    for i, cell in enumerate(nb.cells):
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return i
    raise KeyError(grade_id)


def solution(grade_id: str) -> str:
    """The instructor's solution from source/, without nbgrader's solution markers."""
    nb = nbformat.read(str(REPO / "source" / NOTEBOOK), as_version=4)
    text = nb.cells[cell_index(nb, grade_id)].source
    return "\n".join(line for line in text.splitlines() if not re.match(r"\s*### (BEGIN|END) SOLUTION", line))


@pytest.fixture
def course(tmp_path) -> Path:
    """What `make lab` serves: the course's nbgrader_config.py and release/, copied so the test can edit."""
    root = tmp_path / "course"
    root.mkdir()
    shutil.copy2(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    shutil.copytree(REPO / "release", root / "release")
    return root


def test_student_solves_softmax_in_jupyterlab(course):
    started = time.monotonic()
    shots = screenshots_dir()
    release = nbformat.read(str(course / "release" / NOTEBOOK), as_version=4)
    setup, answer, check = (cell_index(release, g) for g in ("setup", "softmax", "check_softmax"))
    assert release.cells[check].source.strip() == 'check("01_attention/softmax")'

    with lab_server(course) as lab, chromium_page() as page:
        page.goto(lab.url(f"lab/tree/{NOTEBOOK}"))
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=120_000)
        cells = page.locator(".jp-Notebook .jp-Cell")
        # Cells are drawn as the notebook loads: wait for ours, and make sure it is the one we mean.
        cells.nth(check).scroll_into_view_if_needed(timeout=60_000)
        expect(cells.nth(check).locator(".cm-content")).to_contain_text('check("01_attention/softmax")')

        def run(index: int) -> None:
            cells.nth(index).locator(".cm-content").click()
            page.keyboard.press("Shift+Enter")

        def write(index: int, code: str) -> None:
            cells.nth(index).locator(".cm-content").click()
            page.keyboard.press("Control+a")
            page.keyboard.insert_text(code)  # as typed: the editor's own auto-indent would mangle key by key

        def verdict(text: str):
            output = cells.nth(check).locator(".jp-OutputArea-output").filter(has_text=text)
            output.wait_for(timeout=120_000)
            cells.nth(check).scroll_into_view_if_needed()
            return output.inner_text()

        # The setup cell, then every cell down to the exercise (imports it needs).
        for index in range(setup, answer):
            if release.cells[index].cell_type == "code":
                run(index)

        # The right answer: the visible checks pass.
        write(answer, solution("softmax"))
        run(answer)
        run(check)
        report = verdict("softmax: checks all passed")
        page.screenshot(path=str(shots / "lab-check-passed.png"))
        assert re.search(r"softmax: checks all passed \((\d+) of \1 points\)", report), report
        assert "[FAIL]" not in report

        # A wrong answer (no max subtracted): one check fails, with its hint.
        write(answer, WRONG)
        run(answer)
        run(check)
        report = verdict("[FAIL]")
        page.screenshot(path=str(shots / "lab-check-hint.png"))
        assert re.search(r"softmax: checks \d+ of \d+ passed", report), report
        assert re.search(r"\[FAIL\] .+\n(\s+.+\n)*\s+Hint: \S", report), report  # the failed check, then its hint
        # FAIL in red and PASS in green: the report's ANSI colours, as JupyterLab renders them.
        output = cells.nth(check).locator(".jp-OutputArea-output")
        assert output.locator(".ansi-red-fg", has_text="FAIL").count() >= 1
        assert output.locator(".ansi-green-fg", has_text="PASS").count() >= 1

        # The right answer back, saved; then nbgrader's Validate runs the whole notebook on the server.
        write(answer, solution("softmax"))
        run(answer)
        run(check)
        verdict("softmax: checks all passed")
        page.keyboard.press("Control+s")
        page.locator(".jp-mod-dirty").first.wait_for(state="detached", timeout=30_000)
        saved = nbformat.read(str(course / "release" / NOTEBOOK), as_version=4)
        assert saved.cells[answer].source.strip() == solution("softmax").strip()

        page.locator("jp-button.validate-button").click()
        dialog = page.locator(".jp-Dialog")
        dialog.get_by_text("Validation Results").wait_for(timeout=240_000)
        dialog.locator(".jp-Dialog-body").wait_for()
        time.sleep(0.5)  # let the dialog finish drawing before the screenshot
        page.screenshot(path=str(shots / "lab-validate.png"))
        results = dialog.inner_text()
        # Each failed cell: its source, then its error, each in a <pre> of its own.
        shown = dialog.locator(".validation-failed .jp-RenderedText pre").all_inner_texts()

    assert lab.killed == [], f"still running after JupyterLab stopped: {lab.killed}"
    # Validate must tell the truth: softmax passes, the exercises still to do fail.
    assert "Success! Your notebook passes all the tests" not in results, \
        "Validate reports success although most exercises are not done: check() must fail the cell when validating"
    assert 'check("01_attention/scaled_dot_product_attention")' in results, results[:2000]
    assert 'check("01_attention/softmax")' not in results, results[:2000]
    # A failing check cell shows the report JupyterLab shows, first line first: no traceback, no exception name.
    errors = dict(zip(shown[0::2], shown[1::2]))
    error = errors['check("01_attention/scaled_dot_product_attention")']
    assert re.match(r"scaled_dot_product_attention: checks 0 of \d+ passed \(0 of \d+ points\)\n", error), error
    assert re.search(r"\[FAIL\] .+\n(\s+.+\n)*\s+Hint: \S", error), error
    assert "Traceback" not in error and "ChecksDidNotPass" not in error, error
    print(f"lab browser test: {time.monotonic() - started:.0f} s")
