#!/usr/bin/env bash
# Creates ./.venv and installs the project into it (editable), with optional extras.
# Idempotent: a second run with an unchanged setup.py costs nothing.
#   bash launch/setup_env.sh          # runtime only
#   bash launch/setup_env.sh test     # + test dependencies
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python --version 2>&1)"
  "$python" -m venv .venv
fi

stamp=".venv/.installed${extras:+-$extras}"
want="$(sha256sum setup.py | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "[setup] installing imagen-jax${extras:+[$extras]} into .venv (first time: a few minutes)"
log=.venv/pip-install.log
if ! .venv/bin/python -m pip install -e ".${extras:+[$extras]}" >"$log" 2>&1; then
  # This machine's pip config names optional local indexes; their absence is noise.
  grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -40
  echo "[setup] pip install failed; full log in $log" >&2
  exit 1
fi
echo "$want" >"$stamp"
echo "[setup] done"
