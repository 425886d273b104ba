r"""Train the stage a config selects.

    python -m imagen_jax.main --config=configs/imagen.py:tiny,base64 --workdir=/tmp/base64
    python -m imagen_jax.main --config=configs/imagen.py:paper,sr256 --workdir=$DIR \
        --config.train.steps=200 --config.mesh.fsdp=-1 --config.mesh.data=1

Running the same command again resumes from the workdir's latest checkpoint.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py:ARG).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, samples).")
flags.mark_flags_as_required(["config", "workdir"])

def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from imagen_jax.train.run_config import save_config
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
