r"""Train the stage a config selects.

    python -m imagen_jax.main --config=configs/imagen.py:tiny,base64 --workdir=/tmp/base64
    python -m imagen_jax.main --config=configs/imagen.py:paper,sr256 --workdir=$DIR \
        --config.train.steps=200 --config.mesh.fsdp=-1 --config.mesh.data=1

Running the same command again resumes from the workdir's latest checkpoint.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py:ARG).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, samples).")
flags.mark_flags_as_required(["config", "workdir"])

CONFIG_FILE = "config.json"


def save_config(config, workdir: str) -> str:
    """Writes the resolved config beside the checkpoints (the sampler rebuilds from it)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(config.to_json_best_effort(indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def load_config(workdir: str):
    """The config a run in `workdir` was trained with."""
    import ml_collections

    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir} a training workdir?")
    with open(path, encoding="utf-8") as f:
        return ml_collections.ConfigDict(json.load(f))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from imagen_jax.train.trainer import train
    from imagen_jax.train.validate import ConfigError

    config, workdir = _CONFIG.value, _WORKDIR.value
    try:
        save_config(config, workdir)
        state = train(config, workdir)
    except (ConfigError, FileNotFoundError, FloatingPointError) as e:
        sys.exit(f"error: {e}")
    print(f"trained {config.stage} to step {int(state.step)} in {workdir}")


if __name__ == "__main__":
    app.run(main)
