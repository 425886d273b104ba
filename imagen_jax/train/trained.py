"""A trained stage back from its workdir, for any stage family.

`load_trained_stage(workdir)` rebuilds the stage from the run's config.json (through
the stage registry, which imports the stage's family by name) and loads its (EMA)
parameters onto one device.
"""

from __future__ import annotations

from typing import Any

import jax

from imagen_jax.stage_registry import build_stage


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
    stage = build_stage(config)
    abstract = abstract_params(stage, config.text.max_length)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    params = load_params(workdir, abstract, jax.tree.map(lambda _: device, abstract), ema=ema,
                         step=step)
    return config, stage, params
