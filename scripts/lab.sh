#!/usr/bin/env bash
# Set up from scratch (if needed) and open JupyterLab with jupyter_cancel on the demo notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# (Port 8888, or the next free one: the URL printed below is the one to open.)
args=(--notebook-dir=notebooks --ServerApp.ip=127.0.0.1)
[ "$(id -u)" = 0 ] && args+=(--allow-root)
[ -z "${DISPLAY:-}" ] && args+=(--no-browser)  # headless: open the printed URL yourself
echo "Open the URL below; start with notebooks/00-walkthrough.ipynb. Ctrl+C twice stops the server."
exec .venv/bin/jupyter lab "${args[@]}" "$@"
