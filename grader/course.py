"""A course directory: where it is, its nbgrader configuration, its assignments.

    course = Course.find()            # walks up from the current directory
    course.assignments()              # ["01_attention", ...]
    api = course.api(release_directory=...)   # nbgrader's own Python API, configured for us
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader


# nbgrader runs the `alembic` command when it creates a gradebook: it must be found next to this Python
# even when the virtual environment is not activated (e.g. `.venv/bin/grader`).
_bin = os.path.dirname(sys.executable)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")


class CourseError(Exception):
    """A problem an instructor or student can fix; the message is one clear sentence."""


class MachineryFailure(Exception):
    """The grading machinery failed (gradebook, disk, kernel start-up): no fault of the submission."""


@dataclass(frozen=True)
class Course:
    root: Path

    @classmethod
    def find(cls, start: str | os.PathLike | None = None) -> "Course":
        here = Path(start or os.environ.get("LLMCOURSE_ROOT") or os.getcwd()).resolve()
        for candidate in (here, *here.parents):
            if (candidate / "nbgrader_config.py").is_file() and (candidate / "source").is_dir():
                return cls(candidate)
        raise CourseError(f"no course found at or above {here}: a course directory holds nbgrader_config.py and "
                          f"source/ (run this inside the course, or pass --course DIR)")

    def assignments(self) -> list[str]:
        return sorted(p.name for p in (self.root / "source").iterdir()
                      if p.is_dir() and any(p.glob("*.ipynb")))

    def require_assignment(self, assignment: str) -> Path:
        path = self.root / "source" / assignment
        if not path.is_dir() or not any(path.glob("*.ipynb")):
            known = ", ".join(self.assignments()) or "none"
            raise CourseError(f"there is no assignment {assignment!r} in {self.root / 'source'} (known: {known})")
        return path

    def source_notebooks(self, assignment: str) -> list[Path]:
        return sorted(self.require_assignment(assignment).glob("*.ipynb"))

    def config(self, **course_directory: str) -> Config:
        """nbgrader_config.py, with the course root fixed and any CourseDirectory overrides."""
        cfg = PyFileConfigLoader("nbgrader_config.py", path=str(self.root)).load_config()
        cfg.CourseDirectory.root = str(self.root)
        for key, value in course_directory.items():
            setattr(cfg.CourseDirectory, key, value)
        return cfg

    def api(self, config: Config | None = None, **course_directory: str):
        from nbgrader.apps import NbGraderAPI
        from nbgrader.coursedir import CourseDirectory

        cfg = config if config is not None else self.config(**course_directory)
        api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
        api.log.setLevel(logging.ERROR)
        return api
