"""Chooses the packages of a wheel.

The student wheel (what a JupyterHub image installs) must never contain the grader, whose hidden
checks and reference solutions are the course's secrets:

    LLMCOURSE_WHEEL=student pip wheel --no-deps -w dist .
"""
import os

from setuptools import find_packages, setup

if os.environ.get("LLMCOURSE_WHEEL") == "student":
    packages = find_packages(include=["llmcourse", "llmcourse.*"])
else:
    packages = find_packages(include=["llmcourse", "llmcourse.*", "grader", "grader.*"])

# The full install's grader carries its stored judge of 05_rlhf (grader/checks/rlhf.py: JUDGE_FILE).
setup(packages=packages, package_data={} if os.environ.get("LLMCOURSE_WHEEL") == "student" else
      {"grader.checks": ["rlhf_judge.pt"]})
