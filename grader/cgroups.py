"""Each grading kernel's own control group: one budget of memory, processes and disk throughput for all its
processes together, and one kill that reaches every one of them.

Per-process limits (RLIMIT_AS) are easy to sidestep: three children each hold just under the limit, and the
pages of a tmpfs count against no process at all. A cgroup counts every process of the kernel and the tmpfs
pages they write. The grader (root) creates the group before the kernel starts and removes it once the kernel
is gone; the launcher joins it while it is still root, so every process the kernel ever starts is in it, and
none can leave (moving a process to another group needs root).

cgroup v2 is used where the grader's own group offers the memory and pids controllers; otherwise v1 (one
hierarchy per controller: memory, pids, freezer, blkio). Groups are made below the grader's own group, so
that whatever limits the grader itself runs under still apply to its kernels.
"""
from __future__ import annotations

import os
import signal
import time

PARENT = "llmcourse-grader"  # one folder below the grader's own group holds its kernels' groups
V1_CONTROLLERS = ("memory", "pids", "freezer", "blkio")


def read_mounts(text: str) -> list[tuple[str, str, set[str]]]:
    """(mount point, filesystem type, options) of every cgroup mount in a /proc/self/mounts text."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
            found.append((fields[1].replace("\\040", " "), fields[2], set(fields[3].split(","))))
    return found


def read_membership(text: str) -> dict[str, str]:
    """Controller -> this process's group path, from a /proc/self/cgroup text ("" is the v2 hierarchy)."""
    paths = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths[""] = path
        for name in controllers.split(","):
            paths[name] = path
    return paths


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    # O_NOFOLLOW: a cgroup file is never a link, and root writes nowhere else.
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


class KernelCgroup:
    """The cgroup of one kernel. `create()` never raises: what the OS refuses is in `refused`."""

    def __init__(self, name: str, memory_bytes: int | None = None, max_pids: int | None = None,
                 io_bytes_per_second: int | None = None, io_device: int | None = None,
                 mounts: str | None = None, membership: str | None = None):
        self.name = name
        self.memory_bytes = memory_bytes
        self.max_pids = max_pids
        self.io_bytes_per_second = io_bytes_per_second
        self.io_device = io_device  # st_dev of the disk whose throughput is capped
        self._mounts = mounts
        self._membership = membership
        self.version: int | None = None
        self.dirs: dict[str, str] = {}  # controller ("" for v2) -> this kernel's group folder
        self.refused: list[str] = []

    # -- creating ------------------------------------------------------------------------------------------
    def create(self) -> None:
        try:
            mounts = read_mounts(self._mounts if self._mounts is not None else _read("/proc/self/mounts"))
            membership = read_membership(self._membership if self._membership is not None
                                         else _read("/proc/self/cgroup"))
        except OSError as exc:
            self.refused.append(f"a cgroup for the kernel: {exc}")
            return
        v2_problem = self._create_v2(mounts, membership)
        if v2_problem is None:
            return
        v1_problem = self._create_v1(mounts, membership)
        if v1_problem is not None:
            self.refused.append(f"a cgroup for the kernel (memory and process limits for all its processes "
                                f"together): {v2_problem}; {v1_problem}")

    def _create_v2(self, mounts, membership) -> str | None:
        """None when the kernel has a v2 group with memory and pids limits, else why not."""
        mount = next((m for m, fstype, _ in mounts if fstype == "cgroup2"), None)
        if mount is None or "" not in membership:
            return "no cgroup v2 hierarchy"
        base = os.path.normpath(mount + membership[""])
        try:
            available = set(_read(os.path.join(base, "cgroup.controllers")).split())
        except OSError as exc:
            return f"cgroup v2: {exc.strerror}"
        if not {"memory", "pids"} <= available:
            return "cgroup v2 offers no memory and pids controllers here"
        wanted = " ".join(f"+{c}" for c in ("memory", "pids", "io") if c in available)
        parent = os.path.join(base, PARENT)
        folder = os.path.join(parent, self.name)
        try:
            _write(os.path.join(base, "cgroup.subtree_control"), wanted)
            os.makedirs(parent, exist_ok=True)
            _write(os.path.join(parent, "cgroup.subtree_control"), wanted)
            os.mkdir(folder)
        except OSError as exc:
            return f"cgroup v2: {exc.strerror or exc}"
        self.version, self.dirs = 2, {"": folder}
        self._limit(folder, "memory.max", self.memory_bytes, "memory limit")
        self._limit(folder, "memory.swap.max", 0 if self.memory_bytes else None, None)
        self._limit(folder, "pids.max", self.max_pids, "process limit")
        if self.io_bytes_per_second and self.io_device:
            dev = f"{os.major(self.io_device)}:{os.minor(self.io_device)}"
            self._limit(folder, "io.max", f"{dev} rbps={self.io_bytes_per_second} wbps={self.io_bytes_per_second}",
                        "disk throughput limit")
        return None

    def _create_v1(self, mounts, membership) -> str | None:
        dirs = {}
        for controller in V1_CONTROLLERS:
            mount = next((m for m, fstype, opts in mounts if fstype == "cgroup" and controller in opts), None)
            if mount is None or controller not in membership:
                continue
            folder = os.path.join(os.path.normpath(mount + membership[controller]), PARENT, self.name)
            try:
                os.makedirs(os.path.dirname(folder), exist_ok=True)
                os.mkdir(folder)
            except OSError as exc:
                self.refused.append(f"a {controller} cgroup for the kernel: {exc.strerror or exc}")
                continue
            dirs[controller] = folder
        if "memory" not in dirs and "pids" not in dirs:
            for folder in dirs.values():
                os.rmdir(folder)
            return "no writable cgroup v1 memory or pids hierarchy"
        self.version, self.dirs = 1, dirs
        if "memory" in dirs:
            self._limit(dirs["memory"], "memory.limit_in_bytes", self.memory_bytes, "memory limit")
            if os.path.exists(os.path.join(dirs["memory"], "memory.memsw.limit_in_bytes")):
                self._limit(dirs["memory"], "memory.memsw.limit_in_bytes", self.memory_bytes, None)  # no way out by swap
        else:
            self.refused.append("a memory cgroup for the kernel: no memory hierarchy")
        if "pids" in dirs:
            self._limit(dirs["pids"], "pids.max", self.max_pids, "process limit")
        else:
            self.refused.append("a pids cgroup for the kernel: no pids hierarchy")
        if "blkio" in dirs and self.io_bytes_per_second and self.io_device:
            dev = f"{os.major(self.io_device)}:{os.minor(self.io_device)}"
            for direction in ("read", "write"):
                self._limit(dirs["blkio"], f"blkio.throttle.{direction}_bps_device",
                            f"{dev} {self.io_bytes_per_second}", "disk throughput limit")
        return None

    def _limit(self, folder: str, name: str, value, what: str | None) -> None:
        if value is None:
            return
        try:
            _write(os.path.join(folder, name), str(value))
        except OSError as exc:
            if what:  # a limit that only tightens another (swap) is not worth a report
                self.refused.append(f"the kernel cgroup's {what} ({name}): {exc.strerror or exc}")

    # -- using ---------------------------------------------------------------------------------------------
    def procs_files(self) -> list[str]:
        """The files the launcher writes its pid to, to join every hierarchy of the group."""
        return [os.path.join(folder, "cgroup.procs") for folder in self.dirs.values()]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for folder in self.dirs.values():
            try:
                found |= {int(p) for p in _read(os.path.join(folder, "cgroup.procs")).split()}
            except (OSError, ValueError):
                pass
        return found

    def kill(self) -> None:
        """SIGKILL every process of the group at once, so that none can fork past a kill."""
        if not self.dirs:
            return
        if self.version == 2 and os.path.exists(os.path.join(self.dirs[""], "cgroup.kill")):
            try:
                _write(os.path.join(self.dirs[""], "cgroup.kill"), "1")
                return
            except OSError:
                pass
        freeze = self._freezer()
        if freeze:
            freeze(True)
        try:
            for _ in range(100):  # without a freezer, children forked during a pass need another pass
                pids = self.pids()
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                if freeze:
                    break  # frozen processes cannot fork: one pass reached them all
        finally:
            if freeze:
                freeze(False)  # the pending SIGKILLs are delivered on thawing

    def _freezer(self):
        if self.version == 2:
            path = os.path.join(self.dirs[""], "cgroup.freeze")
            values = ("1", "0")
        elif "freezer" in self.dirs:
            path = os.path.join(self.dirs["freezer"], "freezer.state")
            values = ("FROZEN", "THAWED")
        else:
            return None
        if not os.path.exists(path):
            return None

        def freeze(on: bool) -> None:
            try:
                _write(path, values[0] if on else values[1])
            except OSError:
                pass
            if on and self.version == 1:
                # FREEZING until every task has stopped; a fork in flight finishes first, into the group.
                for _ in range(500):
                    try:
                        if _read(path).strip() != "FREEZING":
                            break
                    except OSError:
                        break
                    time.sleep(0.01)

        return freeze

    def wait_empty(self, timeout: float = 30.0) -> bool:
        """True once no process is left in the group (killed processes take a moment to go)."""
        deadline = time.monotonic() + timeout
        while self.pids():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def remove(self) -> None:
        """Kill what is left, then remove the group's folders (a group with processes cannot be removed)."""
        if not self.dirs:
            return
        self.kill()
        self.wait_empty()
        for folder in self.dirs.values():
            try:
                os.rmdir(folder)
            except OSError:
                pass
        self.dirs = {}
