"""The config a run was trained with, saved beside its checkpoints (the sampler and
later evaluations rebuild the stage from it)."""

from __future__ import annotations

import json
import os

import ml_collections

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
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir} a training workdir?")
    with open(path, encoding="utf-8") as f:
        return ml_collections.ConfigDict(json.load(f))
