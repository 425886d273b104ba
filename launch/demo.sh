#!/usr/bin/env bash
# The main job: set up .venv if needed, then sample. Extra flags go to imagen_jax.sample.
#   bash launch/demo.sh                       # -> outputs/smoke.png (+ _progress.png)
#   bash launch/demo.sh --steps=50 --sampler=ddpm
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash launch/setup_env.sh
exec .venv/bin/python -m imagen_jax.sample "$@"
