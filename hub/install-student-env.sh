#!/bin/sh
# Installs what a student's server needs into the Python environment of PYTHON: the student wheel of
# this repository (llmcourse, never grader/), JupyterLab with nbgrader's student extensions, JupyterHub's
# single-user server, the course's assets, and nbgrader's student configuration.
#
#   hub/install-student-env.sh PYTHON STUDENT_WHEEL ASSETS_DIR CONSTRAINTS
#
# The image (hub/Dockerfile) runs it with the system Python; `make hub-env` runs it into a virtual
# environment for the hub test. Build the wheel with: LLMCOURSE_WHEEL=student pip wheel --no-deps .
set -eu
PYTHON=$1 WHEEL=$2 ASSETS=$3 CONSTRAINTS=$4
case $PYTHON in /*) ;; */*) PYTHON=$(pwd)/$PYTHON ;; *) PYTHON=$(command -v "$PYTHON") ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)

case "$(basename "$WHEEL")" in llmcourse-*.whl) ;; *) echo "not a llmcourse wheel: $WHEEL" >&2; exit 2 ;; esac
if "$PYTHON" -c 'import sys, zipfile; sys.exit(not any(n.startswith("grader/") for n in zipfile.ZipFile(sys.argv[1]).namelist()))' "$WHEEL"; then
  echo "$WHEEL contains grader/: build it with LLMCOURSE_WHEEL=student" >&2
  exit 2
fi

# torch first, on its own: its version decides the build (CUDA from PyPI in the image; a local CPU file here).
"$PYTHON" -m pip install --no-cache-dir -q -c "$CONSTRAINTS" torch
"$PYTHON" -m pip install --no-cache-dir -q -c "$CONSTRAINTS" "$WHEEL" jupyterhub
# The wheel's version rarely changes when its code does: put this build in, whatever was there before.
"$PYTHON" -m pip install --no-cache-dir -q --no-deps --force-reinstall "$WHEEL"

PREFIX=$("$PYTHON" -c 'import sys; print(sys.prefix)')
JUPYTER="$PREFIX/bin/jupyter"
# Students validate, fetch and submit; they neither grade nor author assignments.
"$JUPYTER" server extension disable --sys-prefix nbgrader.server_extensions.formgrader >/dev/null 2>&1
"$JUPYTER" server extension disable --sys-prefix nbgrader.server_extensions.course_list >/dev/null 2>&1
"$JUPYTER" labextension disable --level=sys_prefix @jupyter/nbgrader:formgrader >/dev/null 2>&1
"$JUPYTER" labextension disable --level=sys_prefix @jupyter/nbgrader:create-assignment >/dev/null 2>&1
"$JUPYTER" labextension disable --level=sys_prefix @jupyter/nbgrader:course-list >/dev/null 2>&1

# The course's models and data, where llmcourse.assets looks last: <prefix>/share/llmcourse/assets.
rm -rf "$PREFIX/share/llmcourse/assets"
mkdir -p "$PREFIX/share/llmcourse"
if [ -d "$ASSETS" ]; then
  cp -R "$ASSETS" "$PREFIX/share/llmcourse/assets"
  rm -rf "$PREFIX/share/llmcourse/assets/scripts" "$PREFIX/share/llmcourse/assets/logs"
else
  echo "note: no assets at $ASSETS yet; the student environment has no course models (make assets builds them)"
fi

mkdir -p "$PREFIX/etc/jupyter"
cp "$HERE/student/nbgrader_config.py" "$PREFIX/etc/jupyter/nbgrader_config.py"

# What must never be there: the grader, and the course's sources.
importable=$(cd / && "$PYTHON" -c 'import importlib.util as u; print(u.find_spec("llmcourse") is not None, u.find_spec("grader") is not None)')
if [ "$importable" != "True False" ]; then
  echo "the student environment must import llmcourse and not grader (found: $importable)" >&2
  exit 1
fi
echo "student environment ready in $PREFIX"
