#!/usr/bin/env bash
# The main job: set up .venv if needed, then train the tiny cascade on the offline
# shapes set, sample it and score it (imagen_jax/demo.py). Flags go to imagen_jax.demo.
#   bash launch/demo.sh                     # -> runs/demo (grids, ShapesBench, TensorBoard)
#   bash launch/demo.sh --quick             # smoke run, ~2 minutes after the install
#   bash launch/demo.sh --workdir=runs/d2 --base_steps=4000
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash launch/setup_env.sh
exec .venv/bin/python -m imagen_jax.demo "$@"
