"""The course's JupyterHub policy, used by hub/jupyterhub_config.py: settings, GPU sharing, the exchange.

Every setting comes from an environment variable (LLMCOURSE_HUB_*), so that one configuration file
serves the production hub and the loopback test; docs/hub.md lists them. Nothing here imports
JupyterHub at module level: the pieces that need it take it as an argument.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

COURSE_ID = "llmcourse"  # must match c.CourseDirectory.course_id in nbgrader_config.py
HUB_DIR = Path(__file__).resolve().parent

# Measured: every solution notebook peaks under 2 GB of GPU memory (the course's design budget), and the
# CPU peak RSS of 01_attention is 577 MB (benchmarks/results/notebook_budget.md). A kernel's CUDA context
# adds about 0.5 GB that torch's allocator does not count, hence 2.5 GB per GPU kernel.
GPU_GB_PER_STUDENT = 2.5
GPU_HEADROOM = 0.9  # leave 10% of each card to the driver and to fragmentation


def students_per_gpu(gpu_memory_gb: float, per_student_gb: float = GPU_GB_PER_STUDENT,
                     headroom: float = GPU_HEADROOM) -> int:
    """How many students one GPU holds when each may reach the course's measured peak at the same time."""
    return max(1, math.floor(gpu_memory_gb * headroom / per_student_gb))


def _names(value: str) -> list[str]:
    """`a, b, c`, or `@/path/file` with one name per line (# comments allowed)."""
    value = value.strip()
    if value.startswith("@"):
        lines = Path(value[1:]).read_text().splitlines()
        return [n for n in (line.split("#", 1)[0].strip() for line in lines) if n]
    return [n.strip() for n in value.split(",") if n.strip()]


def _env(name: str, default: str) -> str:
    return os.environ.get(f"LLMCOURSE_HUB_{name}", default)


@dataclass
class Settings:
    """What an admin sets, each from LLMCOURSE_HUB_<NAME>; the defaults suit one GPU server."""

    ip: str = "0.0.0.0"                        # IP: where students reach the hub (put TLS in front)
    port: int = 8000                           # PORT
    hub_ip: str = "127.0.0.1"                  # HUB_IP: the hub's own API (0.0.0.0 with the docker spawner)
    hub_port: int = 8081                       # HUB_PORT
    state_dir: str = "/srv/jupyterhub"         # STATE_DIR: hub database, cookie secret, proxy token
    course_dir: str = "/srv/nbgrader/llmcourse"  # COURSE_DIR: a checkout of this repository (instructors only)
    exchange: str = "/srv/nbgrader/exchange"   # EXCHANGE: nbgrader's exchange, shared by every server
    grader_bin: str = ""                       # GRADER_BIN: bin/ of the Python that has `grader` (default: the hub's)
    formgrader_port: int = 9999                # FORMGRADER_PORT
    instructors: list[str] = field(default_factory=list)  # INSTRUCTORS: "a,b" or "@file"
    students: list[str] = field(default_factory=list)     # STUDENTS: "a,b" or "@file"
    admins: list[str] = field(default_factory=list)       # ADMINS: hub admins (default: none)
    spawner: str = "docker"                    # SPAWNER: "docker" (production) or "local" (Unix users, processes)
    image: str = "llmcourse-student:latest"    # IMAGE: built from hub/Dockerfile (docker spawner)
    docker_network: str = "llmcourse-hub"      # DOCKER_NETWORK: the network the hub and the servers share
    student_bin: str = ""                      # STUDENT_BIN: bin/ of the student environment (local spawner)
    mem_limit: str = "4G"                      # MEM_LIMIT: per user
    cpu_limit: float = 2.0                     # CPU_LIMIT: per user (the course's budgets are measured on 2 cores)
    gpus: list[str] = field(default_factory=list)  # GPUS: "0,1,2,3"; empty: a CPU-only hub
    gpu_memory_gb: float = 80.0                # GPU_MEMORY_GB: memory of one GPU
    per_gpu: int = 0                           # STUDENTS_PER_GPU: 0 = from GPU_MEMORY_GB and the measured peak
    kernel_idle_timeout: int = 3600            # KERNEL_IDLE_TIMEOUT: s before an idle kernel frees its GPU memory
    server_idle_timeout: int = 3600            # SERVER_IDLE_TIMEOUT: s before an idle server stops (0: never)
    server_max_age: int = 0                    # SERVER_MAX_AGE: s after which a server stops even if used (0: never)
    uid_base: int = 20000                      # UID_BASE: container uid = UID_BASE + hub user id (docker spawner)

    @classmethod
    def from_env(cls) -> "Settings":
        d = cls()
        s = cls(
            ip=_env("IP", d.ip), port=int(_env("PORT", str(d.port))),
            hub_ip=_env("HUB_IP", d.hub_ip), hub_port=int(_env("HUB_PORT", str(d.hub_port))),
            state_dir=_env("STATE_DIR", d.state_dir), course_dir=_env("COURSE_DIR", d.course_dir),
            exchange=_env("EXCHANGE", d.exchange), grader_bin=_env("GRADER_BIN", d.grader_bin),
            formgrader_port=int(_env("FORMGRADER_PORT", str(d.formgrader_port))),
            instructors=_names(_env("INSTRUCTORS", "")), students=_names(_env("STUDENTS", "")),
            admins=_names(_env("ADMINS", "")),
            spawner=_env("SPAWNER", d.spawner), image=_env("IMAGE", d.image),
            docker_network=_env("DOCKER_NETWORK", d.docker_network), student_bin=_env("STUDENT_BIN", d.student_bin),
            mem_limit=_env("MEM_LIMIT", d.mem_limit), cpu_limit=float(_env("CPU_LIMIT", str(d.cpu_limit))),
            gpus=_names(_env("GPUS", "")), gpu_memory_gb=float(_env("GPU_MEMORY_GB", str(d.gpu_memory_gb))),
            per_gpu=int(_env("STUDENTS_PER_GPU", "0")),
            kernel_idle_timeout=int(_env("KERNEL_IDLE_TIMEOUT", str(d.kernel_idle_timeout))),
            server_idle_timeout=int(_env("SERVER_IDLE_TIMEOUT", str(d.server_idle_timeout))),
            server_max_age=int(_env("SERVER_MAX_AGE", str(d.server_max_age))),
            uid_base=int(_env("UID_BASE", str(d.uid_base))),
        )
        if s.spawner not in ("docker", "local"):
            raise ValueError(f"LLMCOURSE_HUB_SPAWNER must be 'docker' or 'local', not {s.spawner!r}")
        overlap = set(s.instructors) & set(s.students)
        if overlap:
            raise ValueError(f"these users are both instructors and students: {', '.join(sorted(overlap))}")
        return s

    @property
    def students_per_gpu(self) -> int:
        return self.per_gpu or students_per_gpu(self.gpu_memory_gb)


# -- the exchange ------------------------------------------------------------------------------------------
def prepare_exchange(settings: Settings, log=None) -> None:
    """Create the shared exchange, and make the course directory's `exchange` lead to it.

    nbgrader_config.py puts the exchange at <course>/exchange; on the hub that path is a link to the
    shared exchange, so every nbgrader command run in the course (formgrader or terminal) uses it, and
    the grading sandbox, which hides <course>/exchange, hides the shared one.
    """
    exchange = Path(settings.exchange)
    exchange.mkdir(parents=True, exist_ok=True)
    exchange.chmod(0o777)  # nbgrader's file permissions inside it keep students apart (inbound is write-only)
    course = Path(settings.course_dir)
    if not (course / "nbgrader_config.py").is_file():
        raise FileNotFoundError(f"{course} is not a course directory (no nbgrader_config.py): "
                                "set LLMCOURSE_HUB_COURSE_DIR to a checkout of the course repository")
    link = course / "exchange"
    if link.is_symlink() and os.path.realpath(link) == os.path.realpath(exchange):
        return
    if link.is_symlink() or (link.is_dir() and not any(link.iterdir())):
        link.unlink() if link.is_symlink() else link.rmdir()
    elif link.exists():
        raise FileExistsError(f"{link} exists and is not a link to {exchange}: move it away, then restart the hub")
    link.symlink_to(exchange, target_is_directory=True)
    if log is not None:
        log.info("llmcourse: %s -> %s", link, exchange)


# -- GPU sharing -------------------------------------------------------------------------------------------
def with_gpu_state(base):
    """`base` spawner class, remembering (in the hub's database) which GPU the server was given."""
    from traitlets import Unicode

    class GpuSharingSpawner(base):
        llmcourse_gpu = Unicode("", help="The GPU this server was given ('' for none); not configurable.")

        def get_state(self):
            state = super().get_state()
            if self.llmcourse_gpu:
                state["llmcourse_gpu"] = self.llmcourse_gpu
            return state

        def load_state(self, state):
            super().load_state(state)
            self.llmcourse_gpu = state.get("llmcourse_gpu", "")

        def clear_state(self):
            super().clear_state()
            self.llmcourse_gpu = ""

    GpuSharingSpawner.__name__ = f"GpuSharing{base.__name__}"
    return GpuSharingSpawner


def choose_gpu(gpus: list[str], per_gpu: int, in_use: Counter) -> str:
    """The least-used GPU with a free place (the first of equals), or '' when every GPU is full."""
    free = [g for g in gpus if in_use[g] < per_gpu]
    return min(free, key=lambda g: (in_use[g], gpus.index(g))) if free else ""


def gpus_in_use(app, spawner) -> Counter:
    """GPUs held by the servers that run or are starting, other than `spawner`'s own."""
    used: Counter = Counter()
    for user in list(app.users.values()):
        for other in user.spawners.values():
            gpu = getattr(other, "llmcourse_gpu", "")
            if other is not spawner and gpu and (other.active or other.pending):
                used[gpu] += 1
    return used


def make_pre_spawn_hook(settings: Settings, get_app):
    """Before each server starts: its GPU (or none), its GPU memory share, and its uid in a container."""

    def pre_spawn_hook(spawner) -> None:
        env = dict(spawner.environment)
        gpu = ""
        if settings.gpus:
            gpu = choose_gpu(settings.gpus, settings.students_per_gpu, gpus_in_use(get_app(), spawner))
        spawner.llmcourse_gpu = gpu
        if gpu:
            # torch in the student's kernel caps itself at this share (llmcourse.notebook_setup applies it).
            env["LLMCOURSE_GPU_MEMORY_FRACTION"] = f"{1 / settings.students_per_gpu:.4f}"
        else:
            env.pop("LLMCOURSE_GPU_MEMORY_FRACTION", None)
            if settings.gpus:
                spawner.log.warning("llmcourse: every GPU has %d students; %s gets a CPU-only server",
                                    settings.students_per_gpu, spawner.user.name)
        if settings.spawner == "local":
            env["CUDA_VISIBLE_DEVICES"] = gpu  # '' hides every GPU
        else:
            # One GPU in the container, or none; its uid of its own, so that the exchange's permissions
            # keep students apart as they do for Unix accounts.
            device = {"driver": "nvidia", "device_ids": [gpu], "capabilities": [["gpu"]]}
            spawner.extra_host_config = {**spawner.extra_host_config, "device_requests": [device] if gpu else []}
            env["NB_UID"] = str(settings.uid_base + spawner.user.id)
        spawner.environment = env

    return pre_spawn_hook


def formgrader_service(settings: Settings) -> dict:
    """nbgrader's formgrader as a hub service: a Jupyter server in the course directory, for instructors.

    It runs as root because the grader gives every graded kernel a user, a mount namespace and a network
    namespace of its own (grader/sandbox.py); only the `instructors` group may reach it.
    """
    import sys

    bin_dir = Path(settings.grader_bin or Path(sys.executable).parent)
    home = Path(settings.state_dir) / "formgrader-home"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return {
        "name": COURSE_ID,
        "url": f"http://127.0.0.1:{settings.formgrader_port}",
        "command": [str(bin_dir / "jupyterhub-singleuser"), "--allow-root",
                    f"--ServerApp.root_dir={settings.course_dir}",
                    "--SingleUserNotebookApp.default_url=/formgrader"],
        "cwd": settings.course_dir,
        "environment": {
            "HOME": str(home),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "JUPYTERHUB_DISABLE_USER_CONFIG": "1",
        },
        "oauth_no_confirm": True,
        "timeout": 120,
    }


# -- stopping idle servers ---------------------------------------------------------------------------------
IDLE_CULLER = "idle-culler"
# What jupyterhub-idle-culler needs to see who is idle and stop their servers; never to remove a user.
IDLE_CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]


def idle_culler_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("jupyterhub_idle_culler") is not None


def idle_culler(settings: Settings) -> tuple[dict, dict] | None:
    """jupyterhub-idle-culler as a hub service, and its role: stops servers nobody used for a while.

    Kernel culling (c.Spawner.args) frees a kernel's memory but leaves the server, its container and its
    GPU place; this stops the whole server, which gives all three back. None when it is turned off
    (SERVER_IDLE_TIMEOUT=0) or not installed in the hub's Python (the `hub` extra installs it).
    """
    if settings.server_idle_timeout <= 0:
        return None
    if not idle_culler_installed():
        # Printed, not logged: JupyterHub sets up its logging after it has read this configuration.
        print(f"llmcourse: jupyterhub-idle-culler is not installed in {sys.executable}, so idle servers are "
              "never stopped: pip install -c constraints.txt -e '.[hub]' (or set LLMCOURSE_HUB_SERVER_IDLE_TIMEOUT=0 "
              "to silence this)", file=sys.stderr)
        return None
    # Look twelve times per timeout, at most every 5 minutes: a server stops within 5 minutes of its time.
    every = max(1, min(300, settings.server_idle_timeout // 12))
    command = [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={settings.server_idle_timeout}",
               f"--cull-every={every}"]
    if settings.server_max_age > 0:
        command.append(f"--max-age={settings.server_max_age}")
    service = {"name": IDLE_CULLER, "command": command}
    role = {"name": "llmcourse-idle-culler", "description": "Stop the servers nobody has used for a while.",
            "scopes": IDLE_CULLER_SCOPES, "services": [IDLE_CULLER]}
    return service, role


def proxy_command() -> list[str]:
    """configurable-http-proxy from hub/node_modules (`npm ci` in hub/), else the one on PATH."""
    local = HUB_DIR / "node_modules" / ".bin" / "configurable-http-proxy"
    if local.exists():
        return [str(local)]
    found = shutil.which("configurable-http-proxy")
    if not found:
        raise FileNotFoundError("configurable-http-proxy is missing: run `npm ci` in hub/ (make hub-env does)")
    return [found]
