"""The fixture course uses the real course's configuration, rooted here."""
import os
from pathlib import Path

import grader
from grader.sandbox import course_secrets

_main = Path(grader.__file__).resolve().parents[1] / "nbgrader_config.py"
exec(compile(_main.read_text(), str(_main), "exec"), {"get_config": get_config, "__file__": __file__})  # noqa: F821
# The fixture's cells are tiny: short limits keep the timeout tests quick.
c = get_config()  # noqa: F821
c.RunChecks.timeout = 10
c.RunChecks.check_timeout = 5
# The fixture's checks, and the real course's secrets next to it, are off limits to its kernels too.
_repo = _main.parent
c.SandboxedKernelManager.hide_paths = list(c.SandboxedKernelManager.hide_paths) + [
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixture_checks"),
] + course_secrets(_repo)
