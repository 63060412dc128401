#!/usr/bin/env bash
# Set up from scratch (if needed) and run the whole test suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# The user's own Jupyter and IPython folders: the whole command, setting up included, leaves
# them byte for byte as they were (pytest checks its own part too, in tests/conftest.py).
home_print() {
  { find ~/.jupyter ~/.local/share/jupyter ~/.ipython -print -type f -exec sha256sum {} + 2>/dev/null || true; } \
    | sha256sum
}
home_before=$(home_print)
# The browser tests need Debian's Chromium (Playwright never downloads a browser here); the
# foreign-kernel tests an R kernel (Debian's IRkernel; CRAN is not needed); the Spark tests a
# Java runtime (Debian's 17).
missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -d /usr/lib/R/site-library/IRkernel/kernelspec ] || missing+=(r-cran-irkernel)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    for pkg in "${missing[@]}"; do  # chromium with its recommends (fonts), as before
      flags=(); [ "$pkg" = chromium ] || flags=(--no-install-recommends)
      # IRkernel without its system-wide kernel spec: installed for the tests, it must not
      # show in the main job's Launcher (setup.sh gives the tests their own copy).
      [ "$pkg" != r-cran-irkernel ] || flags+=(-o "DPkg::Options::=--path-exclude=/usr/share/jupyter/kernels/ir/*")
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${flags[@]}" "$pkg" >/dev/null
    done
  else
    echo "note: not root, cannot install ${missing[*]}: tests/ui, the R kernel or the Spark tests will be skipped" >&2
  fi
fi
bash scripts/setup.sh
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
.venv/bin/ruff check jupyter_cancel tests bench pth
.venv/bin/ruff format --check jupyter_cancel tests bench pth
.venv/bin/mypy  # strict, on jupyter_cancel/core (pyproject)
# The labextension: prettier + eslint (its node_modules come from the pip build's jlpm install).
(
  cd labextension
  export PATH="$PWD/../.venv/bin:$PATH"
  [ -d node_modules ] || jlpm install
  jlpm lint:check
)
rc=0
.venv/bin/python -m pytest -ra -p no:logging --durations=25 "$@" || rc=$?
if [ "$(home_print)" != "$home_before" ]; then
  echo "FAILED: the test command changed the user's Jupyter folders (~/.jupyter, ~/.local/share/jupyter, ~/.ipython)" >&2
  rc=1
fi
exit "$rc"
