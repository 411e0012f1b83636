"""Every bad input gets one clear sentence and a non-zero exit, never a traceback."""
import pytest

from grader.cli import main


def run(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


def test_unknown_notebook(fixture_course, capsys):
    code, err = run(capsys, "--course", str(fixture_course), "check", "nowhere.ipynb")
    assert code == 2 and "nowhere.ipynb does not exist" in err and "Traceback" not in err


def test_corrupt_notebook(fixture_course, tmp_path, capsys):
    bad = tmp_path / "basics.ipynb"
    bad.write_text("{ not json")
    code, err = run(capsys, "--course", str(fixture_course), "check", str(bad))
    assert code == 2 and "is not valid JSON" in err and "Traceback" not in err


def test_empty_notebook_file(fixture_course, tmp_path, capsys):
    bad = tmp_path / "basics.ipynb"
    bad.write_text("")
    code, err = run(capsys, "--course", str(fixture_course), "check", str(bad))
    assert code == 2 and "basics.ipynb" in err and "Traceback" not in err


def test_notebook_of_another_course(fixture_course, tmp_path, capsys):
    import nbformat

    other = tmp_path / "essay.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")]), str(other))
    code, err = run(capsys, "--course", str(fixture_course), "check", str(other))
    assert code == 2 and "is not a notebook of this course" in err


def test_missing_submissions_directory(fixture_course, capsys):
    code, err = run(capsys, "--course", str(fixture_course), "grade", "00_basics", "--submissions", "/no/such/dir")
    assert code == 2 and "/no/such/dir does not exist" in err


def test_submissions_without_this_assignment(fixture_course, tmp_path, capsys):
    (tmp_path / "ada" / "99_other").mkdir(parents=True)
    code, err = run(capsys, "--course", str(fixture_course), "grade", "00_basics", "--submissions", str(tmp_path))
    assert code == 2 and "holds no submissions of 00_basics" in err


def test_unknown_assignment(fixture_course, tmp_path, capsys):
    code, err = run(capsys, "--course", str(fixture_course), "grade", "07_nope", "--submissions", str(tmp_path))
    assert code == 2 and "there is no assignment '07_nope'" in err and "00_basics" in err


def test_not_inside_a_course(tmp_path, capsys):
    code, err = run(capsys, "--course", str(tmp_path), "build")
    assert code == 2 and "no course found" in err


@pytest.mark.parametrize("jobs", ["0", "two"])
def test_bad_jobs_value(fixture_course, capsys, jobs):
    with pytest.raises(SystemExit) as exc:
        main(["--course", str(fixture_course), "grade", "00_basics", "--submissions", ".", "--jobs", jobs])
    assert exc.value.code == 2


def test_gpu_without_a_queue(fixture_course, capsys):
    code, err = run(capsys, "--course", str(fixture_course), "grade", "00_basics", "--submissions",
                    str(fixture_course / "source"), "--gpu")
    assert code == 2 and "--gpu sends work to GPU workers, so it needs --broker too" in err


def test_queue_with_a_sqlite_gradebook(fixture_course, tmp_path, capsys):
    (tmp_path / "ada" / "00_basics").mkdir(parents=True)
    code, err = run(capsys, "--course", str(fixture_course), "grade", "00_basics", "--submissions", str(tmp_path),
                    "--broker", "redis://127.0.0.1:1/0")
    assert code == 2 and "needs the gradebook on PostgreSQL" in err and "migrate-gradebook" in err
    code, err = run(capsys, "--course", str(fixture_course), "worker", "--broker", "redis://127.0.0.1:1/0")
    assert code == 2 and "needs the gradebook on PostgreSQL" in err


def test_unreachable_queue(fixture_course, tmp_path, capsys):
    course = tmp_path / "course"
    import shutil

    shutil.copytree(fixture_course, course)
    with open(course / "nbgrader_config.py", "a") as f:
        f.write("\nc.CourseDirectory.db_url = 'postgresql+psycopg://grader@127.0.0.1:1/gradebook'\n")
    (tmp_path / "subs" / "ada" / "00_basics").mkdir(parents=True)
    code, err = run(capsys, "--course", str(course), "grade", "00_basics", "--submissions", str(tmp_path / "subs"),
                    "--broker", "redis://127.0.0.1:1/0")
    assert code == 2 and "the task queue at redis://127.0.0.1:1/0 cannot be reached" in err and "Traceback" not in err


def test_migrating_the_gradebook_into_itself_or_nowhere(fixture_course, capsys):
    url = f"sqlite:///{fixture_course / 'gradebook.db'}"
    code, err = run(capsys, "--course", str(fixture_course), "migrate-gradebook", url)
    assert code == 2 and "already is that database" in err
    code, err = run(capsys, "--course", str(fixture_course), "migrate-gradebook", "not a url")
    assert code == 2 and "is not a database URL" in err


def test_models_the_kernels_cannot_read(fixture_course, tmp_path, capsys, monkeypatch):
    import os

    if os.geteuid() != 0:
        pytest.skip("kernels run as this user unless the grader runs as root")
    import llmcourse.assets

    assets = tmp_path / "assets"
    (assets / "models").mkdir(parents=True)
    (assets / "models" / "model.safetensors").write_bytes(b"weights")
    (assets / "models" / "model.safetensors").chmod(0o600)
    monkeypatch.setattr(llmcourse.assets, "assets_dir", lambda: assets)
    code, err = run(capsys, "--course", str(fixture_course), "check",
                    str(fixture_course / "source" / "00_basics" / "basics.ipynb"))
    assert code == 2 and "cannot be read by the grading kernels" in err and f"chmod -R a+rX {assets}" in err


def test_grading_a_class_without_root_is_refused_with_the_way_out(fixture_course, tmp_path, capsys, monkeypatch):
    import os
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("the refusal is about Linux's per-kernel users")
    (tmp_path / "ada" / "00_basics").mkdir(parents=True)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, err = run(capsys, "--course", str(fixture_course), "grade", "00_basics", "--submissions", str(tmp_path))
    assert code == 2 and "refusing to grade a class" in err and "not running as root" in err
    assert "as root" in err and "--no-isolation" in err and "Traceback" not in err
    # With the flag it goes on (and stops here only because the folder holds no notebook to grade).
    code, err = run(capsys, "--course", str(fixture_course), "grade", "00_basics", "--submissions", "/no/such/dir",
                    "--no-isolation")
    assert code == 2 and "/no/such/dir does not exist" in err and err.count("not running as root") == 1


def test_no_isolation_says_what_it_gives_up():
    from grader.cli import parser

    text = " ".join(parser()._subparsers._group_actions[0].choices["grade"].format_help().split())
    assert "--no-isolation" in text and "other kernels' work folders and connection keys" in text


def test_checking_without_root_says_once_what_is_not_protected(fixture_course, tmp_path, capsys, monkeypatch):
    import os
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("the warning is about Linux's per-kernel users")
    bad = tmp_path / "basics.ipynb"
    bad.write_text("{ not json")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, err = run(capsys, "--course", str(fixture_course), "check", str(bad))
    assert code == 2 and "is not valid JSON" in err  # a self-learner's check still runs
    assert err.count("not protected:") == 1 and "connection keys" in err


def test_course_given_after_the_command(fixture_course, capsys):
    """`grader check NB --course DIR`, the order people type, works as `grader --course DIR check NB` does."""
    code, err = run(capsys, "check", "nowhere.ipynb", "--course", str(fixture_course))
    assert code == 2 and "nowhere.ipynb does not exist" in err and "Traceback" not in err
    code, err = run(capsys, "--course", "/no/such/course", "check", "nowhere.ipynb", "--course", str(fixture_course))
    assert code == 2 and "nowhere.ipynb does not exist" in err  # the one after the command wins


def test_grade_refuses_a_check_cell_whose_points_disagree_with_its_checks(fixture_course, tmp_path, capsys):
    import shutil

    import nbformat

    from .conftest import cell_by_id, copy_fixture_course

    course = copy_fixture_course(tmp_path / "course")
    path = course / "source" / "00_basics" / "basics.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    cell_by_id(nb, "check_add").metadata["nbgrader"]["points"] = 5  # its checks declare 4
    nbformat.write(nb, str(path))
    submissions = tmp_path / "submissions" / "ada" / "00_basics"
    submissions.mkdir(parents=True)
    shutil.copy(path, submissions / "basics.ipynb")
    code, err = run(capsys, "--course", str(course), "grade", "00_basics", "--submissions", str(tmp_path / "submissions"))
    assert code == 2 and "Traceback" not in err
    assert ("refusing to grade 00_basics: its check cells' points and its checks disagree (basics.ipynb: check cell "
            "'check_add' is worth 5 points, but its checks add up to 4)") in err
    assert "grader build 00_basics" in err and not (course / "autograded").exists()


def test_the_points_read_from_check_files_are_the_points_their_checks_declare():
    """The grading command reads each check file's points from its text (no imports); `grader build` imports the
    modules. For every assignment of the course, the two agree exactly."""
    from pathlib import Path

    from grader.build import _declared_points, _points_in_source
    from grader.course import Course
    from llmcourse.checks import check_modules

    course = Course(Path(__file__).resolve().parents[1])
    assignments = sorted(p.name for p in (course.root / "source").iterdir() if p.is_dir())
    assert len(assignments) >= 8
    for assignment in assignments:
        for visible_run, module in zip((True, False), check_modules(assignment)):
            static = _points_in_source(module)
            assert static, module
            for (exercise, run_kind), points in static.items():
                if run_kind == visible_run:
                    assert _declared_points(exercise, module, visible=visible_run) == points, (module, exercise)


def test_a_course_with_other_checks_than_the_graders_is_named_loudly(fixture_course, tmp_path, capsys):
    """A copy of the repository with edited checks, graded by a grader installed elsewhere, would be graded with
    the installed grader's checks: grader says so on every command."""
    import shutil
    from pathlib import Path

    import grader.checks

    from grader.cli import foreign_checks_note

    repo_checks = Path(grader.checks.__file__).resolve().parent
    assert foreign_checks_note(repo_checks.parents[1]) == ""  # the repository itself
    course = tmp_path / "course"
    shutil.copytree(fixture_course, course, ignore=shutil.ignore_patterns("__pycache__"))
    assert foreign_checks_note(course) == ""  # a course without check files of its own
    shutil.copytree(repo_checks, course / "grader" / "checks", ignore=shutil.ignore_patterns("__pycache__"))
    assert foreign_checks_note(course) == ""  # the same checks
    edited = course / "grader" / "checks" / "attention.py"
    edited.write_text(edited.read_text().replace("points=2", "points=3", 1))
    note = foreign_checks_note(course)
    assert note.startswith(f"the checks come from {repo_checks}, where this grader is installed, not from the "
                           f"course's own {course / 'grader' / 'checks'}, which differ")
    code, err = run(capsys, "--course", str(course), "check", "nowhere.ipynb")
    assert code == 2 and f"grader: {note}" in err


def test_regrade_options_that_cannot_work(fixture_course, tmp_path, capsys, monkeypatch):
    subs = tmp_path / "subs"
    (subs / "ada" / "00_basics").mkdir(parents=True)
    grade = ("--course", str(fixture_course), "grade", "00_basics", "--submissions", str(subs))
    code, err = run(capsys, *grade, "--regrade", "--broker", "redis://localhost:1/0")
    assert code == 2 and "cannot go through --broker" in err and "grader rollback" in err
    code, err = run(capsys, *grade, "--yes")
    assert code == 2 and "--yes answers --regrade's question" in err
    monkeypatch.setattr("grader.cli._interactive", lambda: False)
    code, err = run(capsys, *grade, "--regrade")
    assert code == 2 and "add --yes" in err
    code, err = run(capsys, "--course", str(fixture_course), "rollback", "00_basics")
    assert code == 2 and "add --yes" in err


def test_rollback_with_nothing_on_record(tmp_path, capsys):
    from .conftest import copy_fixture_course, forget_fixture_checks

    course = copy_fixture_course(tmp_path / "course")  # never graded
    try:
        code, err = run(capsys, "--course", str(course), "rollback", "00_basics", "--yes")
        assert code == 2 and "00_basics has no grading run on record to roll back" in err
        assert main(["--course", str(course), "history", "00_basics"]) == 0
        assert "00_basics has no grading on record yet." in capsys.readouterr().out
    finally:
        forget_fixture_checks(course)
