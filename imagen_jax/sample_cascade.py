"""Sampling from trained stages: rebuild each stage from its workdir, load its (EMA)
weights from the latest checkpoint, and run the cascade. Used by `imagen_jax.sample`."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable, Sequence

import jax
import numpy as np

from imagen_jax import image_io
from imagen_jax.checks import check_aug_level, open_utf8
from imagen_jax.config_sections import SAMPLER_FIELDS, sampler_settings
from imagen_jax.cascade import Cascade, CascadeStage, StageSampling
from imagen_jax.diffusion import SamplerSettings, check_guidance
from imagen_jax.text.tokenizer import check_prompts


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

    def __post_init__(self) -> None:
        """Checks the given options at once, before any stage is loaded or compiled."""
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        settings = {k: v for k, v in given.items() if k not in ("guidance", "aug_level")}
        SamplerSettings(**settings)  # its defaults stand in for the options not given
        if "guidance" in given:
            check_guidance(self.guidance)
        if "aug_level" in given:
            check_aug_level(self.aug_level)


def stage_sampling(config: Any, overrides: Overrides) -> StageSampling:
    """How a stage samples: its config.sample, with the options given replacing it."""
    s = config.sample
    settings = sampler_settings(s, config.diffusion.prediction,
                                **{name: getattr(overrides, name) for name in SAMPLER_FIELDS})
    pick = lambda name: s[name] if getattr(overrides, name) is None else getattr(overrides, name)
    return StageSampling(settings=settings, guidance=pick("guidance"),
                         aug_level=pick("aug_level"))


def load_stage(workdir: str, overrides: Overrides, ema: bool = True,
               step: int | None = None) -> CascadeStage:
    """A trained stage from its workdir (config.json + checkpoints + text encoder), at
    its latest checkpoint or at `step`."""
    from imagen_jax.text.from_config import text_encoder_from_config
    from imagen_jax.train.trained import load_trained_stage

    config, stage, params = load_trained_stage(workdir, ema=ema, step=step)
    encoder = text_encoder_from_config(config.text, workdir)
    return CascadeStage(stage, params, stage_sampling(config, overrides), text_encoder=encoder)


def read_prompts_file(path: str) -> list[str]:
    """The non-blank lines of a UTF-8 text file (a byte-order mark is tolerated), stripped."""
    with open_utf8(path, what="the prompts file") as f:
        return [line.strip() for line in f if line.strip()]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:48] or "empty"


def load_cascade(workdirs: Sequence[str], overrides: Overrides = Overrides(),
                 ema: bool = True) -> Cascade:
    """The cascade of trained stages in `workdirs`, base first."""
    if not workdirs:
        raise ValueError("no workdirs given: name the base stage's first, then each SR stage's")
    stages = [load_stage(w, overrides, ema) for w in workdirs]
    return Cascade(stages[0].text_encoder, stages)


def generate_in_batches(generate_fn: Callable[[list[str], jax.Array], Sequence[Any]],
                        prompts: Sequence[str], *, seed: int, batch_size: int,
                        on_batch: Callable[[], None] | None = None) -> list[np.ndarray]:
    """`generate_fn(prompts, key) -> images per stage`, over batches of `batch_size`;
    returns each stage's images for all prompts, in order.

    Batch i uses the key fold_in(PRNGKey(seed), i), in every sampler of both
    families: the same seed and batch size give the same images. With more than one
    batch the last is padded to `batch_size` (repeating its last prompt) so that the
    samplers compile once.
    """
    per_stage: list[list[np.ndarray]] | None = None
    for index, start in enumerate(range(0, len(prompts), batch_size)):
        chunk = list(prompts[start:start + batch_size])
        padded = chunk + [chunk[-1]] * (batch_size - len(chunk)) if len(prompts) > batch_size \
            else chunk
        outputs = generate_fn(padded, jax.random.fold_in(jax.random.PRNGKey(seed), index))
        if per_stage is None:
            per_stage = [[] for _ in outputs]
        for images, out in zip(outputs, per_stage):
            out.append(np.asarray(jax.device_get(images))[:len(chunk)])
        if on_batch is not None:
            on_batch()
    return [np.concatenate(chunks) for chunks in per_stage or []]


def generate(cascade: Cascade, prompts: Sequence[str], *, seed: int = 0, batch_size: int = 64,
             progress: Callable[[str], None] | None = None) -> list[np.ndarray]:
    """Every stage's images ([-1, 1], lowest resolution first) for `prompts`, in batches
    (`generate_in_batches`)."""
    prompts = check_prompts(prompts)  # a str is one prompt, not a list of characters
    if not prompts:
        raise ValueError("no prompts given")
    return generate_in_batches(lambda p, key: cascade(p, key, progress=progress), prompts,
                               seed=seed, batch_size=batch_size)


def write_captioned_pngs(images: np.ndarray, prompts: Sequence[str], out_dir: str) -> list[str]:
    """One PNG per image plus `captions.jsonl` naming each file's prompt (the format
    `image_text_folder` and `imagen_jax.evaluate.score_shapes --images_dir` read)."""
    os.makedirs(out_dir, exist_ok=True)
    paths, entries = [], []
    for i, (prompt, image) in enumerate(zip(prompts, images, strict=True)):
        name = f"{i:03d}_{_slug(prompt)}.png"
        paths.append(image_io.save_png(image, os.path.join(out_dir, name)))
        entries.append(json.dumps({"file": name, "caption": prompt}))
    with open(os.path.join(out_dir, "captions.jsonl"), "w", encoding="utf-8") as f:
        f.write("\n".join(entries) + "\n")
    return paths


def sample_to_files(workdirs: Sequence[str], prompts: Sequence[str], out_dir: str, *,
                    overrides: Overrides = Overrides(), seed: int = 0, ema: bool = True,
                    progress=None) -> list[str]:
    """Runs the cascade of `workdirs` (base first) and writes one PNG per prompt for the
    final stage (with captions.jsonl), each stage's labelled grid, and returns the
    written paths."""
    prompts = check_prompts(prompts)  # before any stage is loaded
    if not prompts:
        raise ValueError("no prompts given")
    cascade = load_cascade(workdirs, overrides, ema)
    outputs = cascade(prompts, jax.random.PRNGKey(seed), progress=progress)
    outputs = [np.asarray(jax.device_get(images)) for images in outputs]
    paths = write_captioned_pngs(outputs[-1], prompts, out_dir)
    for images in outputs:
        side = images.shape[1]
        paths.append(image_io.save_labelled_grid(images, prompts,
                                                 os.path.join(out_dir, f"grid_{side}.png")))
    return paths
