"""A whole class on the course's JupyterHub, for real: release, fetch, submit, collect, autograde, feedback.

JupyterHub runs hub/jupyterhub_config.py on 127.0.0.1 with configurable-http-proxy (from npm), a
shared-password authenticator, and local processes as spawners; the users are Unix accounts this test
creates and removes. The instructor works through the formgrader service's API, the students through
their own servers' APIs (what the JupyterLab extension calls), each with their own login and token.
Grading goes through the course's nbgrader_config.py: our RunChecks, in sandboxed kernels, as root.
"""
from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from playwright.sync_api import expect

from tests.services.hub import REPO, course_hub, processes_of, unix_users
from tests.services.lab import chromium_page, screenshots_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="it creates Unix users and runs their servers as them: needs root"),
]

ASSIGNMENT, NOTEBOOK, COURSE = "01_attention", "attention.ipynb", "llmcourse"
SOLUTION_MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.MULTILINE)


def solutions(source: Path) -> dict[str, str]:
    """grade_id -> the instructor's solution for every solution cell, markers stripped."""
    nb = nbformat.read(str(source), as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: SOLUTION_MARKER.sub("", c.source)
            for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")}


def max_points(source: Path) -> float:
    nb = nbformat.read(str(source), as_version=4)
    return sum(float(c.metadata["nbgrader"].get("points", 0)) for c in nb.cells
               if c.metadata.get("nbgrader", {}).get("grade"))


def server_environ(uid: int) -> dict[str, str]:
    """The environment of the user's single-user server process."""
    for p in processes_of({uid}):
        try:
            if any("jupyterhub-singleuser" in part for part in p.cmdline()):
                return p.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise AssertionError(f"no jupyterhub-singleuser process runs as uid {uid}")


def ok(response, what: str) -> dict | list:
    assert response.status_code == 200, f"{what}: HTTP {response.status_code} {response.text[:500]}"
    body = response.json()
    if isinstance(body, dict) and "success" in body:
        assert body["success"], f"{what} failed: {body.get('value') or body.get('error') or body.get('log')}"
    return body


def test_class_round_trip_on_the_hub():
    started = time.monotonic()
    tag = secrets.token_hex(2)
    teacher, alice, bob = f"ht{tag}-teacher", f"ht{tag}-alice", f"ht{tag}-bob"
    source = REPO / "source" / ASSIGNMENT / NOTEBOOK
    total = max_points(source)
    assert total > 0

    with unix_users([teacher, alice, bob]) as accounts:
        uids = {a.pw_uid for a in accounts.values()}
        with course_hub(instructors=[teacher], students=[alice, bob], assignments=[ASSIGNMENT],
                        gpus="0", students_per_gpu="1") as hub:
            play_the_round(hub, accounts, teacher, alice, bob, tag)
        # The hub stopped everything it started: the proxy, the formgrader, the students' servers.
        assert hub.killed == [], f"still running after the hub stopped: {hub.killed}"
        assert not processes_of(uids), [p.cmdline() for p in processes_of(uids)]
    print(f"hub round trip: {time.monotonic() - started:.0f} s")


def play_the_round(hub, accounts, teacher: str, alice: str, bob: str, tag: str) -> None:
    source = REPO / "source" / ASSIGNMENT / NOTEBOOK
    total = max_points(source)
    root = hub.root
    # Logins go through the authenticator: known users in, strangers out.
    instructor, ada, ben = hub.login(teacher), hub.login(alice), hub.login(bob)
    with pytest.raises(PermissionError):
        hub.login(f"ht{tag}-mallory")
    with pytest.raises(PermissionError):
        hub.login(alice, password="not the password")

    # Only instructors reach the formgrader.
    assert ada.get("formgrader", "status", allow_redirects=False).status_code == 403
    assert ok(instructor.get("formgrader", "status"), "formgrader status")["status"] is True

    # The instructor enters the class list, generates the assignment from source/, and releases it.
    for student, first in ((alice, "Alice"), (bob, "Bob")):
        r = instructor.put("formgrader", f"student/{student}", json={"first_name": first, "last_name": "Student"})
        assert r.status_code == 200 and r.json()["id"] == student, r.text
    ok(instructor.post("formgrader", f"assignment/{ASSIGNMENT}/assign", timeout=180), "generate")
    ok(instructor.post("formgrader", f"assignment/{ASSIGNMENT}/release"), "release")
    assert (root / "exchange" / COURSE / "outbound" / ASSIGNMENT / NOTEBOOK).is_file()

    # Each student gets a server of their own: their uid, the per-user limits, and the GPU policy
    # (one GPU, one student per GPU in this test: the first to start gets it, the second runs on the CPU).
    ada.start_server()
    ben.start_server()
    env_a, env_b = server_environ(accounts[alice].pw_uid), server_environ(accounts[bob].pw_uid)
    for env in (env_a, env_b):
        assert env["MEM_LIMIT"] == str(4 * 2**30) and float(env["CPU_LIMIT"]) == 2.0
        assert env["LLMCOURSE_EXCHANGE"] == str(root / "exchange")
        assert env["HF_HUB_OFFLINE"] == "1"
    assert (env_a["CUDA_VISIBLE_DEVICES"], env_a["LLMCOURSE_GPU_MEMORY_FRACTION"]) == ("0", "1.0000")
    assert env_b["CUDA_VISIBLE_DEVICES"] == "" and "LLMCOURSE_GPU_MEMORY_FRACTION" not in env_b

    # Both fetch it (into their home folders, as themselves) ...
    for student in (ada, ben):
        listed = ok(student.get("user", "assignments", params={"course_id": COURSE}), "list")["value"]
        assert [(a["assignment_id"], a["status"]) for a in listed] == [(ASSIGNMENT, "released")]
        fetched = ok(student.post("user", "assignments/fetch",
                                  json={"course_id": COURSE, "assignment_id": ASSIGNMENT}), "fetch")["value"]
        assert [(a["assignment_id"], a["status"]) for a in fetched] == [(ASSIGNMENT, "fetched")]
        path = Path(accounts[student.name].pw_dir) / ASSIGNMENT / NOTEBOOK
        assert path.stat().st_uid == accounts[student.name].pw_uid

    # ... one solves every exercise, through the Jupyter contents API, the other changes nothing ...
    answers = solutions(source)
    model = ok(ada.get("user", f"api/contents/{ASSIGNMENT}/{NOTEBOOK}"), "read notebook")
    cells = model["content"]["cells"]
    solved = 0
    for cell in cells:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if cell["metadata"].get("nbgrader", {}).get("solution") and grade_id in answers:
            cell["source"] = answers[grade_id]
            solved += 1
    assert solved == len(answers) > 0
    r = ada.put("user", f"api/contents/{ASSIGNMENT}/{NOTEBOOK}",
                json={"type": "notebook", "format": "json", "content": model["content"]})
    assert r.status_code == 200, r.text

    # ... and both submit.
    for student in (ada, ben):
        submitted = ok(student.post("user", "assignments/submit",
                                    json={"course_id": COURSE, "assignment_id": ASSIGNMENT}), "submit")["value"]
        assert any(a["status"] == "submitted" for a in submitted)

    # The instructor collects and autogrades each submission through the formgrader.
    ok(instructor.post("formgrader", f"assignment/{ASSIGNMENT}/collect"), "collect")
    for student in (alice, bob):
        assert (root / "course" / "submitted" / student / ASSIGNMENT / NOTEBOOK).is_file()
        ok(instructor.post("formgrader", f"submission/{ASSIGNMENT}/{student}/autograde", timeout=600),
           f"autograde {student}")

    # The gradebook: full marks for the solution, nothing for the untouched notebook.
    rows = ok(instructor.get("formgrader", f"submissions/{ASSIGNMENT}"), "gradebook")
    scores = {row["student"]: (row["score"], row["max_score"]) for row in rows}
    assert scores == {alice: (total, total), bob: (0.0, total)}, scores
    # Graded by the course's RunChecks, in a sandboxed kernel (it records what the OS refused, if anything).
    graded = nbformat.read(str(root / "course" / "autograded" / alice / ASSIGNMENT / NOTEBOOK), as_version=4)
    assert "grading" in graded.metadata.get("llmcourse", {})

    # Feedback: generated, released, and fetched by each student into their own folder.
    ok(instructor.post("formgrader", f"assignment/{ASSIGNMENT}/generate_feedback", timeout=300), "feedback")
    ok(instructor.post("formgrader", f"assignment/{ASSIGNMENT}/release_feedback"), "release feedback")
    for student, score in ((ada, total), (ben, 0.0)):
        ok(student.post("user", "assignments/fetch_feedback",
                        json={"course_id": COURSE, "assignment_id": ASSIGNMENT}), "fetch feedback")
        home = Path(accounts[student.name].pw_dir)
        pages = list((home / ASSIGNMENT / "feedback").glob(f"*/{NOTEBOOK.replace('.ipynb', '.html')}"))
        assert len(pages) == 1, pages
        assert pages[0].stat().st_uid == accounts[student.name].pw_uid
        html = pages[0].read_text()
        assert re.search(rf"Score: {score:g}(\.0)? / {total:g}", html), re.findall(r"Score:[^<]*", html)
        assert "hidden=True" not in html and "HIDDEN TESTS" not in html  # feedback never shows hidden checks

    # The same gradebook in the instructor's browser: the hub's login page, then the formgrader (through
    # the hub's OAuth), which lists each student's overall score.
    with chromium_page() as page:
        page.goto(f"{hub.base}/hub/login?next=/services/llmcourse/formgrader/manage_students")
        page.fill("#username_input", teacher)
        page.fill("#password_input", hub.password)
        page.click("#login_submit")
        for student, score in ((alice, total), (bob, 0.0)):
            row = page.locator("tr", has_text=student)
            expect(row.locator("td.score")).to_have_text(f"{score:g} / {total:g}", timeout=60_000)
        page.screenshot(path=str(screenshots_dir() / "hub-formgrader-students.png"))
