#!/usr/bin/env bash
# The PyTorch peer's own virtual environment (.venv-peer): imagen-pytorch's current
# release and a torch that this machine's pip takes from local disk. torchvision is
# imported by imagen-pytorch; PyPI's torchvision does not load beside the CPU-only
# torch wheel here, so the pair is torch 2.14.1 + torchvision 0.29.1 (a CUDA build of
# several GB, run on the CPU). Idempotent.
#   bash benchmarks/peer_env.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=.venv-peer
want="torch==2.14.1 torchvision==0.29.1 imagen-pytorch==2.1.0"
if [ -f "$venv/.installed" ] && [ "$(cat "$venv/.installed")" = "$want" ]; then
  exit 0
fi
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
echo "[peer] installing $want into $venv (first time: several minutes)"
if ! "$venv/bin/python" -m pip install $want >"$venv/pip-install.log" 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" "$venv/pip-install.log" | tail -30
  echo "[peer] pip install failed; full log in $venv/pip-install.log" >&2
  exit 1
fi
echo "$want" >"$venv/.installed"
echo "[peer] done"
