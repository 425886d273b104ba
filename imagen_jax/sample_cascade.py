"""Sampling from trained stages: rebuild each stage from its workdir, load its (EMA)
weights from the latest checkpoint, and run the cascade. Used by `imagen_jax.sample`."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Sequence

import jax

from imagen_jax import image_io
from imagen_jax.cascade import Cascade, CascadeStage, StageSampling
from imagen_jax.diffusion import SamplerSettings
from imagen_jax.stages import stage_from_config
from imagen_jax.train.checkpoint import load_params


@dataclasses.dataclass(frozen=True)
class Overrides:
    """Sampling options given on the command line; None keeps each stage's config."""

    steps: int | None = None
    sampler: str | None = None
    eta: float | None = None
    guidance: float | None = None
    threshold: str | None = None
    percentile: float | None = None
    aug_level: float | None = None


def stage_sampling(config: Any, overrides: Overrides) -> StageSampling:
    s = config.sample
    pick = lambda name: getattr(overrides, name) if getattr(overrides, name) is not None \
        else s[name]
    settings = SamplerSettings(sampler=pick("sampler"), steps=pick("steps"), eta=pick("eta"),
                               threshold=pick("threshold"), percentile=pick("percentile"),
                               prediction=config.diffusion.prediction)
    return StageSampling(settings=settings, guidance=pick("guidance"),
                         aug_level=pick("aug_level"))


def load_stage(workdir: str, overrides: Overrides, ema: bool = True) -> CascadeStage:
    """A trained stage from its workdir (config.json + checkpoints + text encoder)."""
    from imagen_jax.train.run_config import load_config
    from imagen_jax.text.from_config import text_encoder_from_config

    config = load_config(workdir)
    stage = stage_from_config(config)
    boxed = jax.eval_shape(lambda: stage.init(jax.random.PRNGKey(0), config.text.max_length))
    abstract = jax.tree.map(lambda b: b.value, boxed["params"],
                            is_leaf=lambda x: hasattr(x, "names"))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    params = load_params(workdir, abstract, jax.tree.map(lambda _: device, abstract), ema=ema)
    encoder = text_encoder_from_config(config.text, workdir)
    return CascadeStage(stage, params, stage_sampling(config, overrides), text_encoder=encoder)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:48] or "empty"


def sample_to_files(workdirs: Sequence[str], prompts: Sequence[str], out_dir: str, *,
                    overrides: Overrides = Overrides(), seed: int = 0, ema: bool = True,
                    progress=None) -> list[str]:
    """Runs the cascade of `workdirs` (base first) and writes one PNG per prompt for the
    final stage, each stage's labelled grid, and returns the written paths."""
    if not prompts:
        raise ValueError("no prompts given")
    stages = [load_stage(w, overrides, ema) for w in workdirs]
    cascade = Cascade(stages[0].text_encoder, stages)
    outputs = cascade(list(prompts), jax.random.PRNGKey(seed), progress=progress)
    paths = []
    final = jax.device_get(outputs[-1])
    for i, (prompt, image) in enumerate(zip(prompts, final)):
        paths.append(image_io.save_png_grid(image[None], os.path.join(
            out_dir, f"{i:03d}_{_slug(prompt)}.png"), columns=1))
    for images in outputs:
        side = images.shape[1]
        paths.append(image_io.save_labelled_grid(jax.device_get(images), list(prompts),
                                                 os.path.join(out_dir, f"grid_{side}.png")))
    return paths
