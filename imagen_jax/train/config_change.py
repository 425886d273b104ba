"""Resuming with a changed config is a decision, not an accident.

On resume the config the run was trained with (WORKDIR/config.json) is compared with
the new one, and every difference is printed, one line per field. Fields that
define what is being trained or what it is fed (the model, the data, the batch, the
diffusion objective, the frozen text encoder) cannot change mid-run: a restored input
iterator of another batch size crashes in TensorFlow, and a different objective
silently trains something else. They are refused in one line naming them, unless
`--resume_with_changes` says to keep the weights and optimiser state and start the
input pipeline afresh. Everything else (learning rate, steps, logging, checkpoints,
sampling, the mesh: a checkpoint restores onto any mesh) is accepted and said so.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from imagen_jax.config_sections import ConfigError
from imagen_jax.train.run_config import CONFIG_FILE

# Dotted prefixes of the fields that cannot change mid-run.
FIXED_FIELDS = ("stage", "variant", "model", "data", "text", "clip", "diffusion",
                "image_size", "lowres_size", "seed", "train.batch_size",
                "train.grad_accum_steps", "train.optimizer")


class ConfigChangeError(ConfigError):
    """A resume whose config changes a field that cannot change mid-run."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'train.learning_rate': 1e-4, ...} of a JSON-like nested dict."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def is_fixed(field: str) -> bool:
    return any(field == f or field.startswith(f + ".") for f in FIXED_FIELDS)


def config_changes(saved: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(field, saved value, new value) for every field that differs, sorted; a field
    only one side has is compared with None."""
    a, b = flatten(saved), flatten(new)
    return [(f, a.get(f), b.get(f)) for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)]


def check_resume_config(workdir: str, config: Any, *, allow_changes: bool,
                        quiet: bool = False) -> bool:
    """Compares `config` with the one `workdir`'s run was trained with and prints one
    line per difference on stderr (unless `quiet`: every process of a job checks, one
    prints). Raises ConfigChangeError for fields that cannot change mid-run unless
    `allow_changes`; returns whether such a field changed (the input pipeline must
    then start afresh)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return False
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    # Through JSON, as it was saved: tuples become lists on both sides.
    new = json.loads(config.to_json_best_effort())
    changes = config_changes(saved, new)
    fixed = [field for field, _, _ in changes if is_fixed(field)]
    if fixed and not allow_changes:
        shown = ", ".join(f"{f} ({_short(a)} -> {_short(b)})"
                          for f, a, b in changes if f in fixed[:4])
        more = f" and {len(fixed) - 4} more" if len(fixed) > 4 else ""
        raise ConfigChangeError(
            f"resuming {workdir} with a config that changes {shown}{more}: fields that cannot "
            "change mid-run; run the config it was trained with, train in another workdir, "
            "or pass --resume_with_changes to keep the weights and restart the input pipeline")
    for field, before, after in changes if not quiet else ():
        verdict = ("changed with --resume_with_changes (the input pipeline starts afresh)"
                   if is_fixed(field) else "accepted")
        print(f"resume: {field} {_short(before)} -> {_short(after)}: {verdict}",
              file=sys.stderr, flush=True)
    return bool(fixed)


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."
