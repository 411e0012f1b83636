"""The `grader` command: a thin layer over the library, one function per verb.

    grader build [--check] [--force] [ASSIGNMENT ...]
    grader check NOTEBOOK [--json]
    grader grade ASSIGNMENT --submissions DIR [--jobs N] [--student NAME ...] [--regrade [--yes]]
                 [--no-isolation | --broker URL [--gpu]] [--json]
    grader history ASSIGNMENT
    grader rollback ASSIGNMENT [--yes]
    grader worker --broker URL [--gpu] [--concurrency N]
    grader migrate-gradebook URL
    grader report ASSIGNMENT
    grader similarity ASSIGNMENT --submissions DIR [--threshold SHARE]
    grader export [--format csv|canvas|moodle] [--roster FILE] [--output FILE]
    grader demo [--jobs N]
"""
from __future__ import annotations

import argparse
import atexit
import csv
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _course(args):
    from .course import Course

    course = Course.find(args.course)
    note = foreign_checks_note(course.root)
    if note:
        print(f"grader: {note}", file=sys.stderr)
    return course


def foreign_checks_note(root: Path) -> str:
    """A warning when the course at `root` has check files of its own (a copy of this repository) that differ from
    those this grader imports (the checkout it was installed from): the grade would come from the other checks."""
    import grader.checks
    import llmcourse.checks

    differing = []
    for package in (grader.checks, llmcourse.checks):
        ours = Path(package.__file__).resolve().parent
        theirs = (root / Path(*package.__name__.split("."))).resolve()
        if theirs == ours or not theirs.is_dir():
            continue
        if _python_files(theirs) != _python_files(ours):
            differing.append((theirs, ours))
    if not differing:
        return ""
    theirs, ours = differing[0]
    return (f"the checks come from {ours}, where this grader is installed, not from the course's own {theirs}, which "
            f"differ. To grade with the course's checks, run the course's own grader (install it from {root}: "
            f"`pip install -e {root}`, or `make install` there)")


def _python_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.py"))}


def cmd_build(args) -> int:
    from .build import build, check_build, ships_checks

    course = _course(args)
    assignments = args.assignments or course.assignments()
    for a in assignments:
        course.require_assignment(a)
    if args.check:
        problems = check_build(course, assignments)
        for problem in problems:
            print(problem)
        if problems:
            print(f"{len(problems)} generated file(s) differ from what they are generated from.")
            return 1
        print(f"release/ and solutions/ match source/ for {', '.join(assignments)}.")
        if ships_checks(course):
            print("The student package's visible checks match grader/checks/.")
        return 0
    build(course, assignments, force=args.force)
    exchange = make_exchange(course)
    if exchange:
        print(f"exchange  {exchange} (nbgrader's exchange: release_assignment, the students' Assignments tab, "
              f"submit and collect go through it)")
    return 0


def make_exchange(course) -> Path | None:
    """Create the course's nbgrader exchange (c.Exchange.root) if it does not exist yet, with the permissions
    nbgrader gives it (everyone may read and write: students submit into it); the folder made, or None."""
    import os

    root = course.config().Exchange.root
    if not root or os.path.exists(root):
        return None
    try:
        os.makedirs(root)
        os.chmod(root, 0o777)
    except OSError as exc:
        print(f"grader build: nbgrader's exchange {root} could not be created ({exc.strerror}); create it by hand "
              f"(writable by every student) before releasing assignments", file=sys.stderr)
        return None
    return Path(root)


def cmd_check(args) -> int:
    from .grading import check_notebook, isolation_gaps

    gaps = isolation_gaps()
    if gaps:
        print(f"grader check: not protected: {gaps}. Grade only notebooks you trust this way.", file=sys.stderr)
    course = _course(args)
    path = Path(args.notebook)
    if not path.exists():
        raise _user_error(f"{path} does not exist")
    from .unsaved import unsaved_note

    note = unsaved_note(path)  # JupyterLab's kernel for this notebook did more than the file on disk holds
    if note:
        print(note, file=sys.stderr, flush=True)
    if sys.stderr.isatty():  # someone is waiting at a terminal: say what the wait is for, and how far it got
        print(f"Grading {path.name} as saved on disk, in a fresh sandboxed kernel, with every check, hidden ones "
              f"included; this takes about as long as running the notebook.", file=sys.stderr, flush=True)
        from . import preprocessors

        preprocessors.PROGRESS = _show_progress
    try:
        result = check_notebook(course, path)
    finally:
        if sys.stderr.isatty():
            preprocessors.PROGRESS = None
            print("\r\033[K", end="", file=sys.stderr, flush=True)
    from .cells import redacted_exercise

    # A self-learner sees each hidden check's verdict and hint, never the inputs or values it tried.
    result.exercises = [redacted_exercise(ex) for ex in result.exercises]
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(format_exercise_table(result))
    if result.not_graded:
        return 3
    return 0 if result.max_score > 0 and result.score >= result.max_score and not result.error else 1


def _show_progress(cells_run: int, cells: int, checked: int, exercises: int) -> None:
    """One line at the terminal, rewritten in place: `running your notebook: cell 12 of 40; 3 of 11 exercises
    checked`."""
    print(f"\r\033[Krunning your notebook: cell {min(cells_run + 1, cells)} of {cells}; {checked} of {exercises} "
          f"exercise{'s' if exercises != 1 else ''} checked", end="", file=sys.stderr, flush=True)


def cmd_grade(args) -> int:
    from tqdm import tqdm

    from .grading import find_submissions, grade_class, isolation_gaps, kernel_test_cells_note

    broker = getattr(args, "broker", None)
    gaps = isolation_gaps()
    if gaps and not broker:
        if not args.no_isolation:
            raise _user_error(f"refusing to grade a class: {gaps}. Run `grader grade` as root (e.g. with sudo), "
                              f"which gives every kernel a user of its own; or, to grade anyway with that gap, "
                              f"pass --no-isolation")
        print(f"grader grade: --no-isolation: {gaps}.", file=sys.stderr)
    if getattr(args, "gpu", False) and not broker:
        raise _user_error("--gpu sends work to GPU workers, so it needs --broker too")
    regrade = getattr(args, "regrade", False)
    if regrade and broker:
        raise _user_error("--regrade tries the new grades on this machine before writing them, so it cannot go "
                          "through --broker: regrade with --jobs N here, or grade through the queue and use "
                          "`grader rollback` if the change was wrong")
    if getattr(args, "yes", False) and not regrade:
        raise _user_error("--yes answers --regrade's question, so it needs --regrade too")
    if regrade and not args.yes and not _interactive():
        raise _user_error("--regrade asks before it writes the new grades, and there is no terminal to ask at: add "
                          "--yes to write them without asking")
    course = _course(args)
    course.require_assignment(args.assignment)
    from .build import points_disagreements

    disagreements = points_disagreements(course, args.assignment)
    if disagreements:
        raise _user_error(f"refusing to grade {args.assignment}: its check cells' points and its checks disagree ("
                          f"{'; '.join(disagreements)}). Run `grader build {args.assignment}`, which sets each check "
                          f"cell's points from its checks, then grade again")
    submissions = Path(args.submissions)
    students = find_submissions(submissions, args.assignment)
    chosen = getattr(args, "student", None)
    if chosen:
        unknown = [s for s in chosen if s not in students]
        if unknown:
            raise _user_error(f"no submission of {args.assignment} for {', '.join(unknown)} in {submissions} (there "
                              f"are {len(students)}: {', '.join(students[:8])}{', ...' if len(students) > 8 else ''})")
        students = [s for s in students if s in chosen]
    from . import history

    before = history.stored_results(course, args.assignment)
    not_graded_students: list[str] = []
    bar = tqdm(total=len(students), desc=f"{'trying' if regrade else 'grading'} {args.assignment}",
               unit="submission", disable=args.json or None, file=sys.stderr)
    trial = Path(tempfile.mkdtemp(prefix="grader-regrade-")) if regrade else None
    try:
        into = {"db_url": f"sqlite:///{trial / 'gradebook.db'}?timeout=120",
                "autograded_directory": str(trial / "autograded")} if trial else None
        if broker:
            from .distributed import grade_class_distributed

            results = grade_class_distributed(course, args.assignment, submissions, broker, gpu=args.gpu,
                                              progress=lambda r: bar.update(1), students=students)
        else:
            results = grade_class(course, args.assignment, submissions, jobs=args.jobs,
                                  progress=lambda r: bar.update(1), students=students, meanwhile=_load_report_tools,
                                  into=into)
        bar.close()
        graded = {r.student: r.to_json() for r in results if not r.not_graded}
        found = history.changes(before, graded)
        if regrade:
            out = sys.stderr if args.json else sys.stdout
            print(history.format_changes(f"Regrading {args.assignment} with its checks as they are now", found),
                  file=out)
            failed = [r.student for r in results if r.not_graded]
            if failed:
                print(f"Not graded, so their grades stay as they are (the grading machinery failed; run the same "
                      f"command again for them): {', '.join(failed)}", file=out)
            if not graded:
                return 3
            if not args.yes and not _confirm(f"Write the new grades of {len(graded)} student"
                                             f"{'s' * (len(graded) != 1)} to the gradebook?"):
                print("Nothing was written: the gradebook, the reports and the graded notebooks are as they were.",
                      file=out)
                return 0
            history.adopt(course, args.assignment, into["db_url"], trial / "autograded", list(graded))
            results = [r for r in results if not r.not_graded]
            if failed:  # their earlier grades stay; the exit status still says that some are not graded
                not_graded_students = failed
    finally:
        if trial is not None:
            shutil.rmtree(trial, ignore_errors=True)
    from .similarity import remember

    remember(course.root, args.assignment, submissions)  # for the report's similarity section
    run = history.new_run()
    try:
        history.record(course, args.assignment, results, run, kind="regrade" if regrade else "grade")
    except Exception as exc:  # the grades are written; only the way back is missing
        run = ""
        print(f"grader grade: the grades are written, but this run could not be added to the history, so `grader "
              f"rollback` cannot undo it ({type(exc).__name__}: {str(exc)[:200]})", file=sys.stderr)
    report_dir = write_class_files(course, args.assignment, results)
    from .report import build_report

    report = build_report(course, args.assignment)
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        print(format_class_table(args.assignment, results))
        if not regrade and any(c.before is not None and (c.delta or c.checks) for c in found):
            print("\n" + history.format_changes("Changes since the last grading", found))
        print(f"\nGrades are in the gradebook ({_gradebook_name(course)}); "
              f"a copy is in {report_dir / 'grades.csv'} and {report_dir / 'grades.json'}.")
        if run:
            print(f"This grading is run {run} in `grader history {args.assignment}`; `grader rollback "
                  f"{args.assignment}` puts back the grades it replaced.")
        print(f"Graded notebooks: {course.root / 'autograded'}/<student>/{args.assignment}/")
        print(f"Class report: {report}")
        note = kernel_test_cells_note(course, args.assignment)
        if note:
            print(f"Note: {note}")
    # Exit status 3: some submissions are not graded (the machinery failed); running again grades them.
    return 3 if not_graded_students or any(r.not_graded for r in results) else 0


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _confirm(question: str) -> bool:
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_history(args) -> int:
    from .history import runs

    course = _course(args)
    course.require_assignment(args.assignment)
    found = runs(course, args.assignment)
    if not found:
        print(f"{args.assignment} has no grading on record yet.")
        return 0
    live = [r.run for r in found if not r.rolled_back]
    rows = [("run", "recorded", "kind", "checks", "students", "mean", "")]
    for r in found:
        status = "rolled back" if r.rolled_back else ("latest" if live and r.run == live[-1] else "")
        rows.append((r.run, r.recorded_at, r.kind, r.checks, str(len(r.results)), f"{r.mean:.1f}", status))
    print(f"{args.assignment}: {len(found)} grading run{'s' * (len(found) != 1)}, oldest first (checks: the version "
          f"of the notebooks, checks and grader that graded it)\n" + _table(rows))
    return 0


def cmd_rollback(args) -> int:
    from .history import checks_version, format_changes, plan_rollback, rollback
    from .report import build_report

    course = _course(args)
    course.require_assignment(args.assignment)
    if not args.yes and not _interactive():
        raise _user_error("rollback asks before it changes any grade, and there is no terminal to ask at: add --yes "
                          "to roll back without asking")
    plan = plan_rollback(course, args.assignment)
    print(format_changes(f"Rolling back run {plan.run.run} ({plan.run.kind}, {plan.run.recorded_at}, checks "
                         f"{plan.run.checks})", plan.changes()))
    if plan.kept:
        print(f"Graded for the first time in that run, so there is no earlier grade to go back to (kept): "
              f"{', '.join(plan.kept)}")
    versions = sorted({earlier.checks for earlier, _ in plan.restored.values()})
    if not plan.restored:
        print("Nothing to roll back.")
        return 0
    if not args.yes and not _confirm("Put these grades back?"):
        print("Nothing was changed.")
        return 0
    rollback(course, plan)
    write_grades_csv(course, args.assignment)
    report = build_report(course, args.assignment)
    print(f"Rolled back: {len(plan.restored)} student{'s' * (len(plan.restored) != 1)} have the grades of checks "
          f"{', '.join(versions)} again. Class report: {report}")
    stale = [s for s in plan.restored if (course.root / "feedback" / s / args.assignment).exists()]
    if stale:
        print(f"The feedback pages of {len(stale)} of them were made before the rollback: run `nbgrader "
              f"generate_feedback {args.assignment} --force` before releasing feedback.")
    now = checks_version(course, args.assignment)
    if now not in versions:
        print(f"The course's checks have changed since those grades (they are now {now}): put them back as they "
              f"were before grading again, or the next grading uses the new ones.")
    return 0


def _load_report_tools() -> None:
    """The class report's plotting library, loaded while the grading processes work (half a second saved)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def _gradebook_name(course) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(course.config().CourseDirectory.db_url)
    return url.database if url.drivername.startswith("sqlite") else url.render_as_string(hide_password=True)


def cmd_worker(args) -> int:
    from .distributed import run_worker

    course = _course(args)
    print(f"grader worker: taking {'GPU ' if args.gpu else ''}grading work from {args.broker} for the course in "
          f"{course.root} (Ctrl-C stops it; work it had started goes back to the queue)", flush=True)
    run_worker(course, args.broker, gpu=args.gpu, concurrency=args.concurrency, name=args.name)
    return 0


def cmd_migrate_gradebook(args) -> int:
    from .gradebook import migrate_gradebook

    course = _course(args)
    counts = migrate_gradebook(course, args.url)
    copied = ", ".join(f"{n} {t}" for t, n in counts.items() if n)
    print(f"Copied the gradebook ({copied or 'empty'}).")
    print("To use it, put this line in nbgrader_config.py (the old gradebook is left as it was):")
    print(f"    c.CourseDirectory.db_url = {args.url!r}")
    return 0


def cmd_report(args) -> int:
    from .report import build_report

    course = _course(args)
    course.require_assignment(args.assignment)
    report = build_report(course, args.assignment)
    print(f"Grades (with any graded by hand since): {write_grades_csv(course, args.assignment)}")
    print(f"Class report: {report}")
    return 0


def cmd_similarity(args) -> int:
    from . import similarity

    course = _course(args)
    course.require_assignment(args.assignment)
    submissions = Path(args.submissions)
    if not submissions.is_dir():
        raise _user_error(f"the submissions directory {submissions} does not exist")
    if not 0 <= args.threshold <= 1:
        raise _user_error(f"--threshold is a share of fingerprints in common, from 0 to 1 (0.5 is half), not "
                          f"{args.threshold:g}")
    subs = similarity.read_class(submissions, args.assignment, course.root / "release" / args.assignment)
    if not subs:
        raise _user_error(f"{submissions} holds no submissions of {args.assignment}: expected "
                          f"{submissions}/<student>/{args.assignment}/<notebook>.ipynb")
    pairs = similarity.compare(subs, args.threshold)
    similarity.remember(course.root, args.assignment, submissions, args.threshold)
    print(f"{args.assignment}: {len(subs)} submissions compared; {len(pairs)} pair{'s' * (len(pairs) != 1)} from a "
          f"score of {args.threshold:.0%} (the share of code fingerprints the two have in common). This is evidence "
          f"for a person to look at, not a verdict: no grade changes.")
    if pairs:
        print(_table([("rank", "students", "score", "shared tokens")] +
                     [(n, f"{p.a.student} and {p.b.student}", f"{100 * p.score:.1f}%", p.shared_tokens)
                      for n, p in enumerate(pairs, 1)]))
    if (course.root / "reports" / args.assignment / "grades.json").exists():
        from .report import build_report

        print(f"Side by side, with the matching lines highlighted: {build_report(course, args.assignment)}#similarity")
    else:
        print(f"Once the class is graded (`grader grade {args.assignment} --submissions {submissions}`), the class "
              f"report shows each pair side by side.")
    return 0


def cmd_export(args) -> int:
    from .export import export

    course = _course(args)
    roster = Path(args.roster) if args.roster else None
    if roster is not None and not roster.is_file():
        raise _user_error(f"the roster {roster} does not exist")
    text, warnings = export(course, args.format, roster)
    for warning in warnings:
        print(f"grader export: {warning}", file=sys.stderr)
    if args.output:
        Path(args.output).write_text(text)
        print(f"Grades ({args.format}): {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_demo(args) -> int:
    course = _course(args)
    demo = course.root / "demo" / "submissions"
    if not demo.is_dir():
        raise _user_error(f"the demo class is missing ({demo})")
    assignment = sorted({p.name for s in demo.iterdir() if s.is_dir() for p in s.iterdir() if p.is_dir()})[0]
    print(f"Grading the demo class: {len(list(demo.iterdir()))} submissions of {assignment} "
          f"({args.jobs} at a time, each in its own sandboxed kernel)...")
    # The demo class is the course's own notebooks: trusted, so it runs without root too.
    args.assignment, args.submissions, args.json, args.no_isolation = assignment, str(demo), False, True
    args.student = None
    return cmd_grade(args)


# -- output --------------------------------------------------------------------------------------------
def format_exercise_table(result) -> str:
    from .cells import NOT_WRITTEN as _NOT_WRITTEN

    rows = [("exercise", "points", "result")]
    hints = []
    for ex in result.exercises:
        name = ex["id"].split("/", 1)[-1]
        failed = [c for c in ex.get("checks", []) if not c["passed"]]
        unfinished = next((c["message"] for c in failed if _NOT_WRITTEN in c["message"]), None)
        status = "ok" if not failed and not ex.get("error") else (
            ex.get("error") or ("not written yet" if unfinished else f"{len(failed)} check(s) failed"))
        rows.append((name, f"{ex['score']:g} / {ex['max_score']:g}", status))
        if unfinished:  # one line for an exercise still to do, not one per check that waits for it
            what = unfinished[:unfinished.index(_NOT_WRITTEN) + len(_NOT_WRITTEN)]
            hints.append(f"- {name}: {what}; its {len(failed)} failing check(s) will say more once it is written.")
            continue
        for c in failed:
            hints.append(f"- {name}, {c['name']}: {c['message']}" + (f"\n    Hint: {c['hint']}" if c.get("hint") else ""))
    if getattr(result, "not_graded", ""):
        return (f"Not graded: {result.not_graded}.\nThis is a problem of the grading machinery, not of your "
                f"notebook: run the same command again.")
    lines = [_table(rows), "", f"Total: {result.score:g} / {result.max_score:g}"]
    if result.error:
        lines.append(f"Problem: {result.error}")
    if hints:
        lines += ["", "What to look at:"] + hints
    elif result.max_score and result.score >= result.max_score:
        lines.append("Full marks: every check, hidden ones included, passed.")
    return "\n".join(lines)


def format_class_table(assignment: str, results) -> str:
    rows = [("student", "score", "%", "lost points in", "notes")]
    for r in results:
        if r.not_graded:
            rows.append((r.student, "not graded", "", "", r.not_graded[:80]))
            continue
        lost = [ex["id"].split("/", 1)[-1] for ex in r.exercises if ex["score"] < ex["max_score"]]
        pct = 100 * r.score / r.max_score if r.max_score else 0
        notes = r.error or "; ".join(r.events)
        rows.append((r.student, f"{r.score:g} / {r.max_score:g}", f"{pct:.0f}",
                     ", ".join(lost) if len(lost) <= 4 else f"{len(lost)} exercises", notes[:80]))
    graded = [r for r in results if not r.not_graded]
    mean = sum(r.score for r in graded) / len(graded) if graded else 0
    missing = len(results) - len(graded)
    note = (f"; {missing} not graded because the grading machinery failed (run the same command again to "
            f"grade them)") if missing else ""
    return f"{assignment}: {len(results)} submissions, mean {mean:.1f}{note}\n" + _table(rows)


def _table(rows) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_class_files(course, assignment: str, results) -> Path:
    """grades.json and grades.csv of the whole class: this run's results, and the earlier results of the
    students it did not grade (`--student`), so that grading some students never drops the others."""
    out = course.root / "reports" / assignment
    out.mkdir(parents=True, exist_ok=True)
    from .cells import redacted_result

    # grades.json may be shared with students: hidden checks appear as verdicts and hints only. The
    # instructor's full results are in `grader grade --json` and in each graded notebook.
    fresh = [redacted_result(r.to_json()) for r in results]
    graded_now = {r["student"] for r in fresh}
    from .history import stored_results

    earlier = [r for student, r in stored_results(course, assignment).items() if student not in graded_now]
    path = out / "grades.json"
    merged = sorted(earlier + fresh, key=lambda r: r.get("student") or "")
    path.write_text(json.dumps(merged, indent=2))
    write_grades_csv(course, assignment)
    return out


def write_grades_csv(course, assignment: str) -> Path:
    """grades.csv from grades.json and the gradebook: a student's score is the gradebook's (manual grades
    included, as `nbgrader export` says); the exercise columns are the automatic grading's."""
    from .report import gradebook_scores, load_results

    results = load_results(course, assignment)
    book = gradebook_scores(course, assignment)
    exercise_ids = list(dict.fromkeys(ex["id"] for r in results for ex in r.get("exercises", [])))
    path = course.root / "reports" / assignment / "grades.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "score", "max_score", *exercise_ids, "error"])
        for r in results:
            if r.get("not_graded"):
                writer.writerow([r["student"], "not graded", "", *("" for _ in exercise_ids), r["not_graded"]])
                continue
            by_id = {ex["id"]: ex["score"] for ex in r.get("exercises", [])}
            score = book.get(r["student"], r["score"])
            writer.writerow([r["student"], f"{score:g}", f"{r['max_score']:g}",
                             *(f"{by_id.get(e, 0):g}" for e in exercise_ids), r.get("error", "")])
    return path


# -- entry point ---------------------------------------------------------------------------------------
class _UserError(Exception):
    pass


def _user_error(message: str) -> "_UserError":
    return _UserError(message)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grader", description="Build, check and grade the course's notebooks.",
                                epilog="Exit status: 0 done (for check: full marks), 1 not full marks, 2 a problem "
                                       "to fix (the message says what), 3 some submissions not graded because the "
                                       "grading machinery failed (run the same command again), 4 an unexpected "
                                       "error, 130 interrupted.")
    course_help = "the course directory (default: found from the current directory)"
    debug_help = "show the full traceback of an unexpected error"
    p.add_argument("--course", help=course_help)
    p.add_argument("--debug", action="store_true", help=debug_help)
    # The same two options after the command (`grader check NB --course DIR`), as people type them; given there,
    # they win, and left out there, the ones before the command stand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--course", default=argparse.SUPPRESS, help=course_help)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    sub = p.add_subparsers(dest="verb", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    b = command("build", help="generate release/ and the executed solutions/ from source/")
    b.add_argument("assignments", nargs="*", help="assignments to build (default: all)")
    b.add_argument("--check", action="store_true", help="write nothing; fail if release/ or solutions/ are stale")
    b.add_argument("--force", action="store_true", help="re-execute solutions even if they are up to date")
    b.set_defaults(fn=cmd_build)
    c = command("check", help="grade one notebook with all checks, hidden ones included")
    c.add_argument("notebook")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(fn=cmd_check)
    g = command("grade", help="autograde a class's submissions into autograded/ and the gradebook")
    g.add_argument("assignment")
    g.add_argument("--submissions", required=True, help="DIR/<student>/<assignment>/<notebook>.ipynb")
    g.add_argument("--jobs", type=_positive, default=1, help="submissions graded at the same time")
    g.add_argument("--student", action="append", metavar="NAME",
                   help="grade only this student's submission (repeat for several); the others keep their grades")
    g.add_argument("--json", action="store_true", help="print the results as JSON")
    g.add_argument("--broker", help="grade on the workers behind this task queue (e.g. redis://host:6379/0) "
                                    "instead of on this machine")
    g.add_argument("--gpu", action="store_true", help="with --broker: send the work to GPU workers only")
    g.add_argument("--no-isolation", action="store_true",
                   help="grade without root: every kernel then runs as your user, so one submission's code can read "
                        "other kernels' work folders and connection keys and signal the grader (only for "
                        "submissions you trust)")
    g.add_argument("--regrade", action="store_true",
                   help="grade into a scratch copy first, print each student's change (who gains, who loses, in "
                        "which check) and ask before writing anything")
    g.add_argument("--yes", action="store_true", help="with --regrade: write the new grades without asking")
    g.set_defaults(fn=cmd_grade)
    h = command("history", help="list an assignment's grading runs (each can be rolled back)")
    h.add_argument("assignment")
    h.set_defaults(fn=cmd_history)
    rb = command("rollback", help="put back the grades that the last grading run of an assignment replaced")
    rb.add_argument("assignment")
    rb.add_argument("--yes", action="store_true", help="roll back without asking")
    rb.set_defaults(fn=cmd_rollback)
    w = command("worker", help="take grading work from a task queue (one per grading machine)")
    w.add_argument("--broker", required=True, help="the task queue's URL, e.g. redis://host:6379/0")
    w.add_argument("--gpu", action="store_true", help="take GPU work only (from `grader grade --gpu`)")
    w.add_argument("--concurrency", type=_positive, default=1, help="submissions graded at the same time")
    w.add_argument("--name", help="this worker's name in the queue (default: worker@hostname)")
    w.set_defaults(fn=cmd_worker)
    m = command("migrate-gradebook", help="copy the gradebook into an empty PostgreSQL database")
    m.add_argument("url", help="postgresql+psycopg://user:password@host:port/database")
    m.set_defaults(fn=cmd_migrate_gradebook)
    r = command("report", help="write an HTML report of a graded class")
    r.add_argument("assignment")
    r.set_defaults(fn=cmd_report)
    sim = command("similarity", help="rank the pairs of submissions whose code is alike (never changes a grade)")
    sim.add_argument("assignment")
    sim.add_argument("--submissions", required=True, help="DIR/<student>/<assignment>/<notebook>.ipynb")
    sim.add_argument("--threshold", type=float, default=0.5,
                     help="list pairs from this share of fingerprints in common (0 to 1, default 0.5); the class "
                          "report then uses it too")
    sim.set_defaults(fn=cmd_similarity)
    e = command("export", help="every student's grade in every assignment, from the gradebook (hand grades included)")
    e.add_argument("--format", choices=("csv", "canvas", "moodle"), default="csv",
                   help="csv (default), or the layout Canvas's or Moodle's grade import takes")
    e.add_argument("--roster", help="the platform's own export (Canvas: its gradebook CSV; Moodle: a CSV with "
                                    "Username and Email address), to match its students and columns")
    e.add_argument("--output", "-o", help="write to this file (default: print)")
    e.set_defaults(fn=cmd_export)
    d = command("demo", help="grade the bundled demo class")
    d.add_argument("--jobs", type=_positive, default=2)
    d.set_defaults(fn=cmd_demo)
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    from .course import CourseError

    args = parser().parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("traitlets").setLevel(logging.ERROR)
    try:
        return int(args.fn(args) or 0)
    except (CourseError, _UserError) as exc:
        print(f"grader {args.verb}: {exc}.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"grader {args.verb}: interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # our bug, not the user's: one sentence, the details on request
        if args.debug:
            raise
        print(f"grader {args.verb}: unexpected error ({type(exc).__name__}: {exc}); "
              f"rerun with --debug for the details and please report it.", file=sys.stderr)
        return 4  # not 3, which means "some submissions are not graded"


def run() -> None:
    """The `grader` command: main(), then an exit that skips the interpreter's teardown.

    Once torch and transformers are loaded, Python's own teardown (freeing every module and object one by
    one) takes 1 to 1.5 s, after the work is done and printed. Nothing is left for it to do: kernels are shut
    down, temporary folders removed and the gradebook closed by then, and the output is flushed here."""
    code = main()
    atexit._run_exitfuncs()  # what the libraries asked to run at exit (logging's flush among them) still runs
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said on it
            pass
    if "torch" in sys.modules:
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
