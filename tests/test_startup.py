"""What keeps the grader's start-up short, each shown to hold (benchmarks/startup.py measures the time itself).

- the command line and the class-grading process import no torch;
- a new gradebook gets nbgrader's schema and migration stamp from this process, the same as nbgrader's own;
- the warm-up imports what the checks import, never the check modules themselves (pytest must, to rewrite
  their asserts);
- grading processes are started early, recycled, and still lose nothing.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from grader.gradebook import make_schema, migration_head, open_gradebook
from grader.warmup import Warmup, checks_imports, imports_of


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(k for k, v in sys.modules.items() if v is not None)))"],
                         capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_command_line_and_the_class_grading_process_import_no_torch():
    loaded = _modules_after("import contextlib, io\nfrom grader.cli import main\n"
                            "with contextlib.redirect_stdout(io.StringIO()):\n"
                            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
                            "import grader.grading, grader.report, grader.cells")
    assert "torch" not in loaded and "transformers" not in loaded
    assert "grader.grading" in loaded
    # nor the 39 grammars of rfc3987_syntax, which jsonschema would load with nbformat's validator
    assert "rfc3987_syntax" not in loaded and "nbformat.validator" in _modules_after("import grader, nbformat.validator")


def test_the_student_package_still_offers_its_names():
    loaded = _modules_after("import llmcourse\nassert callable(llmcourse.check) and callable(llmcourse.notebook_setup)\n"
                            "from llmcourse import set_seed, get_device")
    assert "torch" in loaded  # loaded on first use
    # A graded kernel runs the setup cell but never calls check(): the check machinery (pytest) stays unloaded.
    assert "pytest" not in loaded and "llmcourse.checking" not in loaded
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import llmcourse

        llmcourse.nope  # noqa: B018


def _schema(path) -> tuple[list, list]:
    with sqlite3.connect(path) as conn:
        tables = sorted(r for r in conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"))
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    return tables, version


def test_a_new_gradebook_is_the_one_nbgrader_would_make(tmp_path, monkeypatch):
    from pathlib import Path

    from nbgrader.api import Gradebook

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}")
    theirs, ours = tmp_path / "theirs.db", tmp_path / "ours.db"
    Gradebook(f"sqlite:///{theirs}").close()  # nbgrader's own way: `alembic heads` in a new process
    with open_gradebook(f"sqlite:///{ours}") as gb:
        gb.update_or_create_student("ada")
    assert _schema(ours) == _schema(theirs)
    assert _schema(ours)[1] == [(migration_head(),)]
    # a gradebook with tables is left alone: the student is still there
    make_schema(f"sqlite:///{ours}")
    with open_gradebook(f"sqlite:///{ours}") as gb:
        assert [s.id for s in gb.students] == ["ada"]


def test_building_and_checking_a_new_course_never_starts_alembic(tmp_path, monkeypatch):
    """`grader build` and `grader check` on a course without a gradebook make its schema in this process; nbgrader's
    own way (`alembic heads` in a new Python process) cost every build 2.6 s."""
    import io
    from contextlib import redirect_stdout

    import nbgrader.api

    from grader.cli import main

    from .conftest import copy_fixture_course

    def no_alembic():
        raise AssertionError("nbgrader started `alembic` to stamp a new gradebook")

    monkeypatch.setattr(nbgrader.api, "get_alembic_version", no_alembic)
    course = copy_fixture_course(tmp_path / "course")
    with redirect_stdout(io.StringIO()):
        assert main(["--course", str(course), "build", "00_basics"]) == 0
        assert main(["--course", str(course), "check", str(course / "solutions" / "00_basics" / "basics.ipynb")]) == 0
    assert (course / "gradebook.db").is_file()


def test_warm_up_reads_the_checks_imports_without_importing_the_checks(tmp_path, monkeypatch):
    package = tmp_path / "warmpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "checks.py").write_text(
        "import json\nfrom collections import OrderedDict\nfrom . import sibling\n"
        "from llmcourse.checks import check_modules\n"
        "def later():\n    import warmpkg.heavy\n    from warmpkg.lazy import THING\n")
    (package / "heavy.py").write_text("LOADED = True\n")
    (package / "lazy.py").write_text("THING = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = imports_of("warmpkg.checks")
    assert ("json", ()) in found and ("collections", ("OrderedDict",)) in found
    assert ("warmpkg.heavy", ()) in found and ("warmpkg.lazy", ("THING",)) in found
    assert not any(name.startswith("llmcourse.checks") for name, _ in found)  # check modules: pytest's
    assert not any(name == "sibling" for name, _ in found)  # relative imports are the module's own
    assert imports_of("no.such.module") == []

    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
            "from grader.warmup import Warmup\nw = Warmup(['warmpkg.checks', 'missing.module']).start()\n"
            "w.grading_modules_ready()\nassert 'grader.remote' in sys.modules\nw.wait()\n"
            "assert 'warmpkg.heavy' in sys.modules and 'warmpkg.lazy' in sys.modules\n"
            "assert 'warmpkg.checks' not in sys.modules\n"
            "assert 'grader.remote' in sys.modules and 'llmcourse.checking.runner' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    Warmup([]).grading_modules_ready()  # never started: nothing to wait for
    Warmup([]).wait()


def test_warm_up_reads_the_imports_of_the_helpers_the_checks_share():
    """01_attention's checks build transformers' GPT-2 with helpers of llmcourse.checking.shared.attention, which
    import it inside their functions: the warm-up reads those imports too (and still imports no check module)."""
    found = checks_imports(["llmcourse.checks.attention", "grader.checks.attention"])
    assert any(name == "llmcourse.checking.shared.attention" for name, _ in found)
    assert any(name == "transformers" and "GPT2LMHeadModel" in attributes for name, attributes in found)
    assert not any(name.startswith(("llmcourse.checks", "grader.checks")) for name, _ in found)


def test_warm_up_reads_the_check_modules_an_assignment_gathers():
    """07_deployment's check modules gather two modules by topic: the warm-up reads what those import (the
    shared helpers, transformers' Llama), still importing no check module."""
    found = checks_imports(["llmcourse.checks.deployment", "grader.checks.deployment"])
    assert any(name == "llmcourse.checking.shared.deployment_eval" for name, _ in found)
    assert any(name == "transformers" for name, _ in found)
    assert not any(name.startswith(("llmcourse.checks", "grader.checks")) for name, _ in found)


def test_a_gradebook_that_cannot_be_set_up_is_one_clear_sentence(fixture_course):
    from grader.course import Course, CourseError
    from grader.grading import prepare_gradebook

    with pytest.raises(CourseError, match="the gradebook could not be set up .*then grade again"):
        prepare_gradebook(Course(fixture_course), "00_basics", {"db_url": "sqlite:////nonexistent/folder/gradebook.db"})


def test_grading_processes_are_recycled_and_grades_are_unchanged(fixture_course, tmp_path, monkeypatch):
    """One submission per grading process: every submission still gets its grade."""
    import grader.grading as grading
    from grader.course import Course
    from tests.conftest import cell_by_id, copy_fixture_course, read, write_submission

    monkeypatch.setattr(grading, "SUBMISSIONS_PER_PROCESS", 1)
    course = copy_fixture_course(tmp_path / "course")  # graded in a copy: the shared one stays as it is
    release = fixture_course / "release" / "00_basics" / "basics.ipynb"
    for i, answer in enumerate(["def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b",
                                "def add(a, b):\n    return a + b"]):
        nb = read(release)
        cell_by_id(nb, "add").source = answer
        write_submission(tmp_path / "subs", f"s{i}", nb)
    warmed = []
    results = grading.grade_class(Course(course), "00_basics", tmp_path / "subs", jobs=2,
                                  meanwhile=lambda: warmed.append(True))
    add = {r.student: next(e["score"] for e in r.exercises if e["id"].endswith("/add")) for r in results}
    assert add["s0"] == add["s2"] > 0 and add["s1"] == 0
    assert not any(r.not_graded for r in results)
    assert warmed == [True]  # called once, while the processes graded
