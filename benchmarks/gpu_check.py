"""On a CUDA machine: every solution notebook on the GPU, then one class graded 8 at a time on one GPU.

    python benchmarks/gpu_check.py [--assignment 05_rlhf] [--students 16] [--jobs 8] [--skip-notebooks]

Part 1 runs each notebook in solutions/ top to bottom in a kernel that sees GPU 0 and records its wall
time and its peak GPU memory twice: what torch allocated (`torch.cuda.max_memory_allocated`, read by a
cell added at the end) and what the driver saw for the kernel's processes (`nvidia-smi`, sampled every
0.2 s; it includes the CUDA context, about 0.5 GB). The budget (DESIGN.md) is under 2 GB per notebook.

Part 2 grades a class of copies of one assignment's solution notebook with `grader grade --jobs 8`,
every kernel on the same GPU with `SandboxedKernelManager.gpu_memory_fraction = 1 / jobs`, and records
the wall time, the grades (each copy must get full marks) and the GPU's peak memory while grading.
It must run as root, as grading does. Results: benchmarks/results/gpu_check.{json,md}.

Without a CUDA GPU it says so and exits 0: there is nothing to measure, and no number is made up.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))

PEAK_CELL = ("import json as _j, torch as _t\n"
             "print('GPU-PEAK ' + _j.dumps({'allocated': _t.cuda.max_memory_allocated(), "
             "'reserved': _t.cuda.max_memory_reserved(), 'used_cuda': _t.cuda.is_initialized()}))")


class GpuSampler:
    """Peak memory the driver reports, for some processes (by pid) or for the whole GPU."""

    def __init__(self, pids=None):
        self.pids = pids  # a callable returning the pids to count, or None for the whole GPU
        self.peak_mib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(0.2):
            self.peak_mib = max(self.peak_mib, self.sample())

    def sample(self) -> int:
        if self.pids is None:
            out = _smi("--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0")
            return int(out.split()[0]) if out.strip() else 0
        wanted = set(self.pids())
        total = 0
        for line in _smi("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits").splitlines():
            pid, _, used = line.partition(",")
            if pid.strip().isdigit() and int(pid) in wanted:
                total += int(used.strip() or 0)
        return total


def _smi(*args: str) -> str:
    try:
        return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def run_notebook(path: Path) -> dict:
    import nbformat
    import psutil
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0", "HF_HUB_OFFLINE": "1"}
        km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(scratch, "k"))
        client = NotebookClient(nb, km=km, timeout=900, resources={"metadata": {"path": scratch}})

        def pids():
            try:
                proc = psutil.Process(km.provisioner.pid)
                return [proc.pid] + [c.pid for c in proc.children(recursive=True)]
            except (psutil.Error, AttributeError):
                return []

        started = time.perf_counter()
        error = ""
        with GpuSampler(pids) as sampler:
            try:
                client.execute(env=env)
            except Exception as exc:  # report the notebook that failed, measure the others
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            finally:
                seconds = time.perf_counter() - started
                if km.has_kernel:
                    km.shutdown_kernel(now=True)
    peak = {}
    for output in nb.cells[-1].get("outputs", []):
        text = output.get("text", "")
        if text.startswith("GPU-PEAK "):
            peak = json.loads(text.split(" ", 1)[1])
    return {"notebook": str(path.relative_to(REPO)), "seconds": round(seconds, 1),
            "torch_peak_mib": round(peak.get("allocated", 0) / 2**20), "torch_reserved_mib": round(peak.get("reserved", 0) / 2**20),
            "driver_peak_mib": sampler.peak_mib, "used_cuda": bool(peak.get("used_cuda")), "error": error}


def grade_class_on_gpu(assignment: str, students: int, jobs: int) -> dict:
    from grader.cli import main

    if os.geteuid() != 0:
        return {"error": "class grading needs root (the sandbox creates users and namespaces); run this as root"}
    solution = next((REPO / "solutions" / assignment).glob("*.ipynb"))
    base = Path(tempfile.mkdtemp(prefix="gpu-check-", dir="/run"))
    try:
        course = base / "course"
        course.mkdir()
        shutil.copy2(REPO / "nbgrader_config.py", course)
        shutil.copytree(REPO / "source", course / "source")
        with open(course / "nbgrader_config.py", "a") as f:
            f.write(f"\nc.SandboxedKernelManager.gpu_memory_fraction = {1 / jobs!r}\n")
        for i in range(students):
            folder = base / "submissions" / f"student{i:02d}" / assignment
            folder.mkdir(parents=True)
            shutil.copy2(solution, folder / solution.name)
        base.chmod(0o755)
        out = io.StringIO()
        started = time.perf_counter()
        with GpuSampler() as sampler, contextlib.redirect_stdout(out):
            code = main(["--course", str(course), "grade", assignment, "--submissions", str(base / "submissions"),
                         "--jobs", str(jobs), "--json"])
        seconds = time.perf_counter() - started
        results = json.loads(out.getvalue()) if code in (0, 3) else []
        full = sum(1 for r in results if r.get("score") is not None and r["score"] >= r["max_score"] > 0)
        return {"assignment": assignment, "students": students, "jobs": jobs, "gpu_memory_fraction": 1 / jobs,
                "exit_code": code, "seconds": round(seconds, 1), "seconds_per_submission": round(seconds / students, 2),
                "full_marks": full, "gpu_peak_mib": sampler.peak_mib,
                "problems": sorted({r.get("not_graded") or r.get("error") for r in results} - {"", None})}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", default="05_rlhf", help="the assignment whose class is graded")
    parser.add_argument("--students", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--skip-notebooks", action="store_true")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no GPU: this check needs a CUDA GPU and a CUDA build of torch; nothing was measured.")
        return 0
    gpu = torch.cuda.get_device_name(0)
    total_mib = torch.cuda.get_device_properties(0).total_memory // 2**20
    notebooks = [] if args.skip_notebooks else [run_notebook(p) for p in sorted((REPO / "solutions").glob("*/*.ipynb"))]
    for row in notebooks:
        print(f"{row['notebook']}: {row['seconds']} s, torch peak {row['torch_peak_mib']} MiB, "
              f"driver peak {row['driver_peak_mib']} MiB {row['error']}", flush=True)
    grading = grade_class_on_gpu(args.assignment, args.students, args.jobs)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "gpu": gpu,
            "gpu_memory_mib": total_mib, "torch": torch.__version__, "cpus": os.cpu_count()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gpu_check.json").write_text(json.dumps({"machine": meta, "notebooks": notebooks, "grading": grading}, indent=2))
    lines = ["# The course on a GPU", "", f"{meta['date']}, {gpu} ({total_mib} MiB), torch {meta['torch']}, "
             f"{meta['cpus']} CPUs. Budget: under 2 GB of GPU memory per notebook.", "",
             "| what | wall s | torch peak (MiB) | driver peak (MiB) | within 2 GB | notes |", "|---|---|---|---|---|---|"]
    for r in notebooks:
        ok = "yes" if r["driver_peak_mib"] < 2048 and not r["error"] else "NO"
        note = r["error"] or ("" if r["used_cuda"] else "did not use CUDA")
        lines.append(f"| {r['notebook']} | {r['seconds']} | {r['torch_peak_mib']} | {r['driver_peak_mib']} | {ok} | {note} |")
    if "error" in grading:
        lines.append(f"| class grading | | | | | {grading['error']} |")
    else:
        lines.append(f"| class of {grading['students']} × {grading['assignment']}, --jobs {grading['jobs']}, "
                     f"fraction {grading['gpu_memory_fraction']:.3f} | {grading['seconds']} | | {grading['gpu_peak_mib']} (whole GPU) | | "
                     f"{grading['full_marks']} of {grading['students']} full marks; "
                     f"{grading['seconds_per_submission']} s per submission; exit {grading['exit_code']}"
                     f"{'; ' + '; '.join(grading['problems']) if grading['problems'] else ''} |")
    (RESULTS / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
