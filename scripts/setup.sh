#!/usr/bin/env bash
# Create .venv (if needed) and install jupyter_cancel with its test and lab extras into it.
# Skipped when nothing it installs from changed since the last run (set JC_REINSTALL=1 to force).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Jupyter's and IPython's per-user folders point into a temporary one while setting up: the
# build's `jupyter` commands would write jupyter_core's `migrated` marker into ~/.jupyter, and
# bash_kernel's installer makes ~/.ipython (both seen on a fresh machine). Setting up must not
# touch the user's home.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export JUPYTER_CONFIG_DIR="$scratch/config" JUPYTER_DATA_DIR="$scratch/data" \
  JUPYTER_RUNTIME_DIR="$scratch/runtime" IPYTHONDIR="$scratch/ipython"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# The tests' R kernel spec (IRkernel from Debian comes without its system-wide one, see
# test.sh), copied at every run: test.sh may have installed R since the last set-up.
tk=.venv/test-kernels/share/jupyter/kernels
if [ -d /usr/lib/R/site-library/IRkernel/kernelspec ] && [ ! -f "$tk/ir/kernel.json" ]; then
  mkdir -p "$tk" && cp -r /usr/lib/R/site-library/IRkernel/kernelspec "$tk/ir"
fi
stamp=.venv/.jupyter-cancel-setup
sources=$(cat pyproject.toml pth/* labextension/package.json labextension/yarn.lock 2>/dev/null; find labextension/src labextension/style labextension/schema -type f -exec cat {} + 2>/dev/null)
want=$(printf '%s' "$sources" | sha256sum | cut -d' ' -f1)
if [ "${JC_REINSTALL:-}" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && [ -f jupyter_cancel/labextension/package.json ]; then
  echo "setup: .venv is up to date (JC_REINSTALL=1 reinstalls)"
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# Builds the labextension too (hatch-jupyter-builder runs jlpm install + build:prod).
PATH="$PWD/.venv/bin:$PATH" .venv/bin/python -m pip install --quiet -e ".[test,lab]"
# Kernels in other languages are for the foreign-kernel tests only: their specs live in a
# folder of their own that the tests add to JUPYTER_PATH, so the main job's Launcher shows
# only the kernels a user installed.
mkdir -p "$tk"
.venv/bin/python -m bash_kernel.install --prefix .venv/test-kernels >/dev/null
rm -rf .venv/share/jupyter/kernels/bash
for spec in xpython xpython-raw; do
  if [ -d ".venv/share/jupyter/kernels/$spec" ]; then
    rm -rf "${tk:?}/$spec"
    mv ".venv/share/jupyter/kernels/$spec" "$tk/$spec"
  fi
done
.venv/bin/jupyter labextension list 2>&1 | grep -q "jupyter-cancel.*OK" || { echo "labextension not installed"; exit 1; }
echo "$want" > "$stamp"
