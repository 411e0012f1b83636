"""nbgrader configuration for this course: our grading plugs in here, nbgrader does the rest."""
import os

c = get_config()  # noqa: F821  (provided by nbgrader when it loads this file)

here = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else os.getcwd()

c.CourseDirectory.course_id = "llmcourse"
c.CourseDirectory.root = here
# Notebooks only; data files an assignment needs live in the student package's assets.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.egg-info"]
# A busy SQLite gradebook waits for its lock instead of failing when several graders write at once.
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(here, "gradebook.db") + "?timeout=120"
c.Exchange.root = os.path.join(here, "exchange")

# Autograde: our RunChecks replaces nbgrader's Execute (same job: run the notebook; but checks run
# in the grader, student code in a sandboxed kernel). The rest is nbgrader's own list.
# SanitizeNotebook right after it: the graded notebook (shown in the formgrader, and the source of
# feedback) keeps no script, event handler or widget from a student's notebook.
c.Autograde.autograde_preprocessors = [
    "grader.preprocessors.RunChecks",
    "grader.sanitize.SanitizeNotebook",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]

# Feedback shows checks' names and hints, and the messages of visible checks only; never the hidden part
# of a check cell, nor the instructor's full results that the graded notebook carries. It is sanitised
# again, and its HTML cleaned, for notebooks graded before the graded notebook itself was sanitised.
c.GenerateFeedback.preprocessors = [
    "grader.preprocessors.StripHiddenChecks",
    "grader.sanitize.SanitizeNotebook",
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
c.HTMLExporter.sanitize_html = True

# Limits for each submission's sandboxed kernel.
c.RunChecks.timeout = 180  # seconds per cell
c.RunChecks.notebook_timeout = 1200  # seconds per notebook
c.RunChecks.check_timeout = 60  # seconds for one answer to a check
c.RunChecks.max_cell_output = 2 * 2**20  # bytes of kernel messages per cell (outputs, metadata, widgets)
c.RunChecks.max_notebook_output = 8 * 2**20  # and per notebook: the graded notebook never grows past it
c.SandboxedKernelManager.memory_limit = 6 * 2**30
c.SandboxedKernelManager.disk_limit = 512 * 2**20
# What a kernel must never see: the secrets, the gradebook, other students' work, and the grader's own
# code wherever it is installed.
from grader.sandbox import course_secrets  # noqa: E402

c.SandboxedKernelManager.hide_paths = course_secrets(here)
