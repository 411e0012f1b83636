"""Rebuild every course asset from seeds: data, tokenizer, the four models, the evaluation, the cards.

    python assets/scripts/build_all.py        (what `make assets` runs; about 70 minutes on 2 CPU cores)
    python assets/scripts/build_all.py --only course-t5     (retrain one model, then evaluate and write the cards)

Three models train in two processes side by side, one thread each: course-lm in one, course-mlm, course-t5
and then the scaling-law sweep of 07_deployment (20 small models, assets/data/scaling/runs.json) in the other.
(Tiny models gain little from a second thread, and a busy machine makes threads wait on each other; two
single-threaded processes use two cores fully.) Then course-lm-apps is fine-tuned
from course-lm with two threads. Step timings go to assets/build_info.json and into assets/MODELS.md. Last,
the grader's judge of 05_rlhf, fitted from course-lm and the preference data, is stored again
(grader/checks/rlhf_judge.pt).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from llmcourse.setup import threads_wanted

HERE = Path(__file__).resolve().parent
ASSETS = HERE.parent


def run(args: list[str], log: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    out = open(log, "w") if log else None
    return subprocess.Popen([sys.executable, str(HERE / args[0]), *args[1:]], env=env, stdout=out,
                            stderr=subprocess.STDOUT if out else None)


CPU_SECONDS: dict[str, float] = {}


def wait(proc: subprocess.Popen, what: str) -> None:
    """Wait for a step; note the CPU time it used (on a busy machine, wall time overstates the cost)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    CPU_SECONDS[what] = round(usage.ru_utime + usage.ru_stime, 1)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit status {proc.returncode}); see the messages above or its log.")


def store_judge() -> None:
    """The grader's judge of 05_rlhf is fitted from course-lm and the preference data: store it again."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if subprocess.run([sys.executable, "-m", "grader.checks.rlhf"], env=env, cwd=ASSETS.parent).returncode != 0:
        raise SystemExit("storing the judge of 05_rlhf (python -m grader.checks.rlhf) failed; see the messages above.")


SCRIPT_OF = {"course-lm": "train_lm.py", "course-mlm": "train_mlm.py", "course-t5": "train_t5.py",
             "course-lm-apps": "train_apps.py"}
# course-lm-apps is fine-tuned from course-lm once both cores are free: two threads (the same number on every
# build, so that a rebuild gives the same weights).
ARGS_OF = {"train_apps.py": ["--threads", "2"]}


def retrain(names: list[str]) -> None:
    """Retrain only some models (on the existing data and tokenizer), then evaluate and rewrite the cards.

    The timings of the retrained steps replace theirs in build_info.json; the other rows and the total
    stay those of the last full build, and "retrained" says which rows are newer.
    """
    info_path = ASSETS / "build_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {"seconds": {}, "cpu_seconds": {}}
    info.setdefault("cpu_seconds", {})
    info.setdefault("retrained", {})
    logs = ASSETS / "logs"
    logs.mkdir(exist_ok=True)
    for name in names:
        script = SCRIPT_OF[name]
        t = time.time()
        print(f"training {name} (log: assets/logs/{name}.log)", flush=True)
        wait(run([script, *ARGS_OF.get(script, [])], logs / f"{name}.log"), script)
        info["seconds"][script] = round(time.time() - t, 1)
        info["cpu_seconds"][script] = CPU_SECONDS[script]
        info["retrained"][script] = time.strftime("%Y-%m-%d %H:%M")
    t = time.time()
    wait(run(["evaluate.py"]), "evaluate.py")
    info["seconds"]["evaluate.py"] = round(time.time() - t, 1)
    info["cpu_seconds"]["evaluate.py"] = CPU_SECONDS["evaluate.py"]
    info["retrained"]["evaluate.py"] = time.strftime("%Y-%m-%d %H:%M")
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    wait(run(["make_cards.py"]), "make_cards.py")
    store_judge()


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="retrain only these models (comma-separated, e.g. course-t5), "
                    "then evaluate and rewrite the cards; the default rebuilds everything")
    args = ap.parse_args()
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in SCRIPT_OF]
        if unknown:
            raise SystemExit(f"unknown model(s) {unknown}: choose from {sorted(SCRIPT_OF)}")
        retrain(names)
        return
    timings: dict[str, float] = {}
    logs = ASSETS / "logs"
    logs.mkdir(exist_ok=True)
    start = time.time()
    for script in ("make_data.py", "train_tokenizer.py"):
        t = time.time()
        wait(run([script]), script)
        timings[script] = round(time.time() - t, 1)

    t = time.time()
    print("training course-lm (log: assets/logs/course-lm.log) and course-mlm, course-t5 (assets/logs/*.log)", flush=True)
    lm = run(["train_lm.py"], logs / "course-lm.log")
    mlm = run(["train_mlm.py"], logs / "course-mlm.log")
    wait(mlm, "train_mlm.py")
    timings["train_mlm.py"] = round(time.time() - t, 1)
    t5_start = time.time()
    t5 = run(["train_t5.py"], logs / "course-t5.log")
    wait(t5, "train_t5.py")
    timings["train_t5.py"] = round(time.time() - t5_start, 1)
    scaling_start = time.time()  # the scaling-law sweep of 07_deployment takes the second lane next
    print("training the scaling-law sweep (log: assets/logs/scaling.log)", flush=True)
    wait(run(["train_scaling.py"], logs / "scaling.log"), "train_scaling.py")
    timings["train_scaling.py"] = round(time.time() - scaling_start, 1)
    wait(lm, "train_lm.py")
    timings["train_lm.py"] = round(time.time() - t, 1)
    apps_start = time.time()
    print("fine-tuning course-lm-apps from course-lm (log: assets/logs/course-lm-apps.log)", flush=True)
    wait(run(["train_apps.py", *ARGS_OF["train_apps.py"]], logs / "course-lm-apps.log"), "train_apps.py")
    timings["train_apps.py"] = round(time.time() - apps_start, 1)
    print(f"models trained in {time.time() - t:.0f} s", flush=True)

    t = time.time()
    wait(run(["evaluate.py"]), "evaluate.py")
    timings["evaluate.py"] = round(time.time() - t, 1)
    timings["total"] = round(time.time() - start, 1)
    (ASSETS / "build_info.json").write_text(json.dumps({
        "seconds": timings, "cpu_seconds": CPU_SECONDS, "cpu_count": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "threads_per_process": threads_wanted(),
        "finished": time.strftime("%Y-%m-%d %H:%M"),
    }, indent=2) + "\n")
    wait(run(["make_cards.py"]), "make_cards.py")
    store_judge()
    print(f"all assets rebuilt in {timings['total'] / 60:.1f} minutes; see assets/MODELS.md", flush=True)


if __name__ == "__main__":
    main()
