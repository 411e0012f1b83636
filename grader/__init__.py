"""The instructor side of the course: the trusted grader, its hidden checks, and the `grader` command.

Never installed for students (see setup.py): its checks and reference solutions are the course's secrets.
"""
import sys

# jsonschema, which nbformat imports to validate notebooks, looks for the optional `rfc3987_syntax` package to
# check "iri" string formats; when it is installed (JupyterLab's jupyter-events brings it in), importing it
# compiles 39 grammars: about 1 s in every grading process, before any work. No schema the grader validates
# uses those formats (nbformat's and nbgrader's validators check no formats), so the grader's processes go
# without it. JupyterLab, in its own processes, is unaffected.
sys.modules.setdefault("rfc3987_syntax", None)
