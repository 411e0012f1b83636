"""Puts a kernel in its sandbox, then becomes the kernel (exec).

    python -m grader.sandbox_launch POLICY_JSON -- python -m ipykernel_launcher -f conn.json

Run as root, in this order: a new session (so one kill reaches every process the kernel starts),
new mount and network namespaces, private size-capped scratch space, the course's secret paths
hidden, an unprivileged user, resource limits. Each step the OS refuses is written to the report
file and skipped; the steps after it still apply. Nothing here imports torch or the course.
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 4096, 16384, 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {target}")


def apply(policy: dict) -> list[str]:
    """Apply the policy to this process; return the list of steps the OS refused."""
    refused: list[str] = []

    def step(name: str, fn) -> bool:
        try:
            fn()
            return True
        except Exception as exc:  # each refusal is reported, never fatal
            refused.append(f"{name}: {exc}")
            return False

    step("new session", lambda: os.getpid() == os.getsid(0) or os.setsid())
    is_root = os.geteuid() == 0
    flags = CLONE_NEWNS | (CLONE_NEWNET if policy.get("no_network", True) else 0)
    if not is_root:
        flags |= CLONE_NEWUSER
    namespaces = step("mount and network namespaces", lambda: _check(_libc.unshare(flags), "unshare"))
    if namespaces and not is_root:
        uid, gid = policy["real_uid"], policy["real_gid"]
        step("user namespace maps", lambda: _write_maps(uid, gid))
    if namespaces:
        step("private mounts", lambda: _mount("none", "/", None, MS_REC | MS_PRIVATE))
    uid = policy.get("uid") if is_root else None
    work = policy["workdir"]
    if namespaces:
        step("scratch space for the submission", lambda: _tmpfs_keep(work, policy["disk_bytes"], uid))
        # Every world-writable place gets a private copy, so kernels cannot leave files for each other.
        for scratch in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/dev/mqueue"):
            # The course itself may live under /tmp (a CI checkout, say): keep what the kernel needs.
            keep = [p for p in policy.get("expose", []) if _under(p, scratch)]
            step(f"private {scratch}", lambda s=scratch, k=keep: _private_scratch(s, policy["disk_bytes"], uid, k,
                                                                                  policy["staging"]))
        for path in policy.get("hide", []):
            step(f"hide {path}", lambda p=path: _hide(p))
        if uid is not None:
            for path in policy.get("expose", []):
                step(f"make {path} reachable for the kernel's user", lambda p=path: _expose(p, uid, policy["staging"]))
    if uid is not None:
        def drop():
            os.setgroups([])
            os.setgid(policy.get("gid", uid))
            os.setuid(uid)
        step("unprivileged user", drop)
    limits = {
        "memory limit": (resource.RLIMIT_AS, policy.get("memory_bytes")),
        "process limit": (resource.RLIMIT_NPROC, policy.get("max_processes")),
        "file size limit": (resource.RLIMIT_FSIZE, policy.get("file_bytes")),
        "CPU time limit": (resource.RLIMIT_CPU, policy.get("cpu_seconds")),
        "no core dumps": (resource.RLIMIT_CORE, 0),
    }
    for name, (which, value) in limits.items():
        if value is not None:
            step(name, lambda w=which, v=value: resource.setrlimit(w, (int(v), int(v))))
    os.chdir(work)
    return refused


def _write_maps(uid: int, gid: int) -> None:
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def _tmpfs(path: str, size: int, uid: int | None, mode: int = 0o700) -> None:
    if not os.path.isdir(path) or os.path.islink(path):
        return
    _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(size)},mode={mode:o}")
    if uid is not None:
        os.chown(path, uid, uid)


def _under(path: str, parent: str) -> bool:
    return os.path.realpath(path).startswith(parent.rstrip("/") + "/")


def _private_scratch(path: str, size: int, uid: int | None, keep: list[str], staging: str) -> None:
    """A fresh tmpfs over `path`, with the directories in `keep` bound back into it."""
    aside = []
    for i, kept in enumerate(keep):
        target = os.path.join(staging, f"keep-{os.path.basename(path)}-{i}")
        os.makedirs(target)
        _mount(kept, target, None, MS_BIND | MS_REC)
        aside.append((target, kept))
    _tmpfs(path, size, uid, mode=0o1777)
    for target, kept in aside:
        os.makedirs(kept, exist_ok=True)
        _mount(target, kept, None, MS_BIND | MS_REC)


def _tmpfs_keep(path: str, size: int, uid: int | None) -> None:
    """Replace `path` by a size-capped tmpfs holding the same files (so a full disk is the sandbox's own)."""
    staged = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                staged[os.path.relpath(full, path)] = f.read()
    _tmpfs(path, size, uid)
    for rel, data in staged.items():
        dest = os.path.join(path, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as f:
            f.write(data)
    if uid is not None:
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), uid, uid)


def _blocked_ancestor(path: str, uid: int) -> str | None:
    """The highest directory above `path` that `uid` may not pass through (mode without o+x)."""
    current = "/"
    for part in os.path.abspath(path).strip("/").split("/")[:-1]:
        current = os.path.join(current, part)
        st = os.stat(current)
        if st.st_uid != uid and not st.st_mode & 0o001:
            return current
    return None


def _expose(path: str, uid: int, staging: str) -> None:
    """Let the kernel's user reach `path` (e.g. a Python under /root): hide what surrounds it instead.

    `path` is bound aside, a tmpfs replaces its closed ancestor, and `path` is bound back inside it,
    so the kernel sees the interpreter and nothing else of that ancestor.
    """
    path = os.path.realpath(path)
    blocked = _blocked_ancestor(path, uid)
    if blocked is None:
        return
    aside = os.path.join(staging, str(len(os.listdir(staging))))
    os.makedirs(aside)
    _mount(path, aside, None, MS_BIND | MS_REC)
    if not os.path.ismount(blocked) or os.stat(blocked).st_mode & 0o777 != 0o755:
        _mount("tmpfs", blocked, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
    os.makedirs(path, exist_ok=True)
    _mount(aside, path, None, MS_BIND | MS_REC)


def _hide(path: str) -> None:
    if os.path.isdir(path):
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,mode=000")
    elif os.path.exists(path):
        _mount("/dev/null", path, None, MS_BIND)


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python -m grader.sandbox_launch POLICY_JSON -- COMMAND...\n")
        raise SystemExit(2)
    policy = json.loads(argv[0])
    refused = apply(policy)
    report = policy.get("report")
    if report:
        try:
            with open(report, "w") as f:
                json.dump(refused, f)
        except OSError:
            pass
    command = argv[2:]
    os.execvpe(command[0], command, os.environ)


if __name__ == "__main__":
    main(sys.argv[1:])
