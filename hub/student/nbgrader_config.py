"""nbgrader's configuration for students on the hub: which course, and where its exchange is.

Installed as <prefix>/etc/jupyter/nbgrader_config.py by hub/install-student-env.sh. The hub tells every
server where the exchange is (LLMCOURSE_EXCHANGE, set in hub/jupyterhub_config.py).
"""
import os

c = get_config()  # noqa: F821

c.CourseDirectory.course_id = "llmcourse"
c.Exchange.root = os.environ.get("LLMCOURSE_EXCHANGE", "/srv/nbgrader/exchange")
# Students fetch into their home folder (the server's root): ~/01_attention/attention.ipynb.
c.Exchange.assignment_dir = "."
