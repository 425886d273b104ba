"""A trained stage back from its workdir, for any stage family.

`stage_family(config)` names the module that builds a config's stage (imagen_jax
or unclip_jax, imported lazily so imagen_jax does not depend on unclip_jax);
`load_trained_stage(workdir)` rebuilds the stage from the run's config.json and
loads its (EMA) parameters onto one device.
"""

from __future__ import annotations

import importlib
from typing import Any

import jax

STAGE_FAMILIES = {"imagen": "imagen_jax.stages", "unclip": "unclip_jax.stages"}


def stage_family(config: Any) -> Any:
    """The module with `stage_from_config` and `conditioner_from_config` for config.stage."""
    family = config.stage.split(".")[0]
    if family not in STAGE_FAMILIES:
        raise ValueError(f"config.stage: unknown stage family {family!r} in {config.stage!r}; "
                         f"known: {sorted(STAGE_FAMILIES)}")
    return importlib.import_module(STAGE_FAMILIES[family])


def abstract_params(stage: Any, text_len: int) -> Any:
    """ShapeDtypeStructs of a stage's (unboxed) params, from an abstract init."""
    boxed = jax.eval_shape(lambda: stage.init(jax.random.PRNGKey(0), text_len))
    return jax.tree.map(lambda b: b.value if hasattr(b, "names") else b, boxed["params"],
                        is_leaf=lambda x: hasattr(x, "names"))


def load_trained_stage(workdir: str, *, ema: bool = True, step: int | None = None
                       ) -> tuple[Any, Any, Any]:
    """(config, stage, params) of the run in `workdir`, at its latest checkpoint or `step`."""
    from imagen_jax.train.checkpoint import load_params
    from imagen_jax.train.run_config import load_config

    config = load_config(workdir)
    stage = stage_family(config).stage_from_config(config)
    abstract = abstract_params(stage, config.text.max_length)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    params = load_params(workdir, abstract, jax.tree.map(lambda _: device, abstract), ema=ema,
                         step=step)
    return config, stage, params
