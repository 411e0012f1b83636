"""benchmarks/gpu_check.sh: on a machine without a CUDA GPU it measures nothing and says so."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the script measures for real (minutes)")
def test_without_a_gpu_it_says_so_and_exits_0():
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("no GPU"), done.stdout
    assert not (REPO / "benchmarks" / "results" / "gpu_check.json").exists(), "no numbers may be written without a GPU"
