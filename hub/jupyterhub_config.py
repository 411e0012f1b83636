"""JupyterHub for the course's shared GPU hub (docs/hub.md is the admin's guide).

Students work in JupyterLab, in servers built from hub/Dockerfile (the student package and the course's
assets; never grader/ or source/). Instructors grade in nbgrader's formgrader, a hub service running in
the course directory with this repository's nbgrader_config.py, so autograding goes through the
course's own sandboxed grader. Releases, submissions and feedback travel through nbgrader's exchange,
a folder shared by every server.

    jupyterhub -f hub/jupyterhub_config.py        # settings: LLMCOURSE_HUB_* (hub/llmcourse_hub.py)

Authentication: JupyterHub's default (PAM: the host's Unix accounts). To use the university's single
sign-on, load this file from your own and set the authenticator there:

    c = get_config()
    load_subconfig("/opt/llmcourse/hub/jupyterhub_config.py")
    c.JupyterHub.authenticator_class = "generic-oauth"    # and its settings
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llmcourse_hub as course  # noqa: E402

c = get_config()  # noqa: F821  (provided by JupyterHub when it loads this file)
settings = course.Settings.from_env()

# -- the hub, its proxy and its state ----------------------------------------------------------------------
c.JupyterHub.ip = settings.ip
c.JupyterHub.port = settings.port
c.JupyterHub.hub_ip = settings.hub_ip
c.JupyterHub.hub_port = settings.hub_port
state = Path(settings.state_dir)
state.mkdir(parents=True, exist_ok=True, mode=0o700)
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
c.ConfigurableHTTPProxy.command = course.proxy_command()
c.ConfigurableHTTPProxy.pid_file = str(state / "jupyterhub-proxy.pid")

# -- who is who: two groups, and the role that lets instructors into the formgrader ------------------------
c.Authenticator.allowed_users = set(settings.instructors) | set(settings.students)
c.Authenticator.admin_users = set(settings.admins)
c.JupyterHub.load_groups = {
    "instructors": {"users": settings.instructors},
    "students": {"users": settings.students},
    # The names nbgrader's course list looks for (formgrade-<course>, nbgrader-<course>).
    f"formgrade-{course.COURSE_ID}": {"users": settings.instructors},
    f"nbgrader-{course.COURSE_ID}": {"users": settings.students},
}
c.JupyterHub.load_roles = [
    {
        "name": "llmcourse-instructor",
        "description": "Grade in the formgrader; see the class list and who is running a server.",
        "scopes": [f"access:services!service={course.COURSE_ID}", "read:users", "read:groups", "list:users",
                   "read:services", "list:services"],
        "groups": ["instructors"],
    },
]

# -- nbgrader: the exchange, and the formgrader as a service -----------------------------------------------
course.prepare_exchange(settings)
c.JupyterHub.services = [course.formgrader_service(settings)]

# -- stopping idle servers: an idle server still holds its container, its memory and its GPU place ----------
culler = course.idle_culler(settings)
if culler:
    service, role = culler
    c.JupyterHub.services.append(service)
    c.JupyterHub.load_roles.append(role)

# -- each user's server ------------------------------------------------------------------------------------
c.Spawner.default_url = "/lab"
c.Spawner.mem_limit = settings.mem_limit
c.Spawner.cpu_limit = settings.cpu_limit
c.Spawner.http_timeout = 120
c.Spawner.start_timeout = 300
c.Spawner.environment = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
    "LLMCOURSE_EXCHANGE": settings.exchange,  # read by the students' nbgrader_config.py (hub/student/)
}
# An idle kernel still holds its GPU memory: stop kernels nobody used for an hour. A kernel with a notebook
# open in a browser tab is kept (cull_connected is off); the idle-culler service above stops whole servers.
c.Spawner.args = [f"--MappingKernelManager.cull_idle_timeout={settings.kernel_idle_timeout}",
                  "--MappingKernelManager.cull_interval=300"]


def _hub_app():
    from jupyterhub.app import JupyterHub

    return JupyterHub.instance()


c.Spawner.pre_spawn_hook = course.make_pre_spawn_hook(settings, _hub_app)

if settings.spawner == "docker":
    from dockerspawner import DockerSpawner

    c.JupyterHub.spawner_class = course.with_gpu_state(DockerSpawner)
    c.DockerSpawner.image = settings.image
    c.DockerSpawner.network_name = settings.docker_network
    c.DockerSpawner.remove = True  # a server's container goes when it stops; the home volume stays
    c.DockerSpawner.notebook_dir = "/home/jovyan"
    c.DockerSpawner.volumes = {
        "llmcourse-home-{username}": "/home/jovyan",
        settings.exchange: settings.exchange,
    }
    # The container starts as root only to take the user's own uid (hub/start-singleuser.sh), then drops it.
    c.DockerSpawner.extra_create_kwargs = {"user": "root"}
    c.DockerSpawner.extra_host_config = {"pids_limit": 1024}
    # Servers run in containers on their own network: the hub's API listens on that network's gateway, and
    # the proxy reaches each server at its address there.
    if settings.hub_ip in ("127.0.0.1", "localhost"):
        raise ValueError("with the docker spawner, set LLMCOURSE_HUB_HUB_IP to the gateway of the network "
                         f"{settings.docker_network!r} (docs/hub.md), which containers can reach")
    c.DockerSpawner.use_internal_ip = True
else:
    from jupyterhub.spawner import LocalProcessSpawner

    # Local Unix accounts; the student environment must be the image's (hub/install-student-env.sh).
    c.JupyterHub.spawner_class = course.with_gpu_state(LocalProcessSpawner)
    if settings.student_bin:
        c.Spawner.cmd = [str(Path(settings.student_bin) / "jupyterhub-singleuser")]
        c.Spawner.environment["PATH"] = f"{settings.student_bin}:/usr/local/bin:/usr/bin:/bin"
    c.Spawner.notebook_dir = "~"
