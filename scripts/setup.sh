#!/usr/bin/env bash
# Create .venv (if needed) and install jupyter_cancel with its test and lab extras into it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# Builds the labextension too (hatch-jupyter-builder runs jlpm install + build:prod).
PATH="$PWD/.venv/bin:$PATH" .venv/bin/python -m pip install --quiet -e ".[test,lab]"
# Kernels in other languages for the foreign-kernel tests (IRkernel comes from Debian, see test.sh).
.venv/bin/python -m bash_kernel.install --sys-prefix >/dev/null
.venv/bin/jupyter labextension list 2>&1 | grep -q "jupyter-cancel.*OK" || { echo "labextension not installed"; exit 1; }
