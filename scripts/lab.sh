#!/usr/bin/env bash
# Set up from scratch (if needed) and open JupyterLab with jupyter_cancel on the demo notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/jupyter lab --notebook-dir=notebooks --ServerApp.port_retries=0 "$@"
