r"""Sample images and write them as PNGs.

From trained stages (each --workdir a run of `imagen_jax.main`, base stage first;
EMA weights of the latest checkpoint; every option defaults to the stage's config):

    python -m imagen_jax.sample --workdir=/tmp/base64 --workdir=/tmp/sr256 \
        --prompts="a red circle" --prompts="two blue squares" --out_dir=outputs/run
    python -m imagen_jax.sample --workdir=/tmp/base64 --prompts_file=prompts.txt \
        --steps=100 --guidance=5 --threshold=dynamic --aug_level=0.2 --batch_size=32

Negative prompts, a fast solver, image-to-image, inpainting and upsampling a given
image (the image and mask apply to every prompt; PNGs are named by prompt, so use a
new --out_dir per edit):

    python -m imagen_jax.sample --workdir=/tmp/base64 --prompts="a red circle" \
        --negative_prompt="a blue square" --sampler=dpmpp_2m --steps=20
    python -m imagen_jax.sample --workdir=/tmp/base64 --prompts="a red circle" \
        --init_image=photo.png --strength=0.6
    python -m imagen_jax.sample --workdir=/tmp/base64 --prompts="a red circle" \
        --inpaint_image=photo.png --inpaint_mask=mask.png --resample_rounds=3
    python -m imagen_jax.sample --workdir=/tmp/sr256 --lowres_image=small.png --aug_level=0.1

Prompts are sampled --batch_size at a time (a progress bar counts them), and each
batch's PNGs are written as it finishes: OUT_DIR/00042_a_red_circle.png (the prompt's
index and text) with OUT_DIR/captions.jsonl listing every PNG written. A killed run
keeps what it wrote; run the same command again and it skips the prompts whose PNG
exists ("skipping N prompts already written"; --overwrite samples them again). Each
stage's labelled grid holds at most --prompts_per_grid prompts: grid_<side>.png when
one grid holds them all, else one grid_<side>_<first prompt's index>.png per page.
--out_dir is checked (a directory that exists or can be created, and is writable)
before any stage is loaded.

Without --workdir it runs the smoke path: an *untrained* tiny conv denoiser through
the real sampler (classifier-free guidance, thresholding), so the pipeline is seen
working in seconds; those images are structured noise, as expected.

    python -m imagen_jax.sample --out=outputs/smoke.png
"""

from __future__ import annotations

import os
from typing import Any
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from imagen_jax import image_io
from imagen_jax.diffusion import (SamplerSettings, check_guidance, classifier_free_guidance,
                                  get_schedule, sample)
from imagen_jax.nn.tiny_convnet import TinyConvDenoiser

_OUT = flags.DEFINE_string("out", "outputs/smoke.png", "Where to write the PNG grid.")
_BATCH = flags.DEFINE_integer("batch", 4, "Number of images.")
_SIZE = flags.DEFINE_integer("size", 32, "Image side in pixels.")
_STEPS = flags.DEFINE_integer("steps", 25, "Sampling steps.")
_SAMPLER = flags.DEFINE_string("sampler", "ddim", "'ddim', 'ddpm' or 'dpmpp_2m' (DPM-Solver++ "
                               "2M: good images in 10-20 steps).")
_ETA = flags.DEFINE_float("eta", 0.0, "DDIM eta in [0, 1].")
_GUIDANCE = flags.DEFINE_float("guidance", 3.0, "CFG weight w (1 = no guidance).")
_THRESHOLD = flags.DEFINE_string("threshold", "dynamic", "'none', 'static' or 'dynamic'.")
_PERCENTILE = flags.DEFINE_float("percentile", 99.5, "Dynamic thresholding percentile.")
_SCHEDULE = flags.DEFINE_string("schedule", "cosine", "Noise schedule name.")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed for weights, conditioning and noise.")
_PROGRESS_PNG = flags.DEFINE_bool(
    "progress_png", True, "Also write <out>_progress.png: the x0 estimate over the steps.")
_WORKDIRS = flags.DEFINE_multi_string("workdir", [], "Trained stage runs, base stage first.")
_PROMPTS = flags.DEFINE_multi_string("prompts", [], "Prompts (repeat the flag for more).")
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", None, "A file with one prompt per line.")
_OUT_DIR = flags.DEFINE_string("out_dir", "outputs/samples", "Where trained-stage PNGs go.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 16, "Trained stages: prompts sampled at once (memory grows with it, not "
    "with the prompt count).")
_PER_GRID = flags.DEFINE_integer(
    "prompts_per_grid", 64, "Trained stages: prompts per labelled grid (one grid per page; "
    "fewer where a grid would pass the image-size limit).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Trained stages: sample again the prompts whose PNG exists in "
    "--out_dir (by default they are skipped, so a rerun resumes).")
_AUG = flags.DEFINE_float("aug_level", None, "SR noise-augmentation level in [0, 1].")
_EMA = flags.DEFINE_bool("ema", True, "Use the EMA weights (else the raw params).")
_NEGATIVE = flags.DEFINE_string(
    "negative_prompt", None, "Trained stages: guide away from this prompt (every prompt, "
    "every stage) instead of from no prompt.")
_INIT_IMAGE = flags.DEFINE_string(
    "init_image", None, "Trained stages: image-to-image; the base stage starts from this "
    "image noised to --strength.")
_STRENGTH = flags.DEFINE_float(
    "strength", None, "Image-to-image noise level in (0, 1]: 1 ignores the image, small "
    "values keep it (default 1).")
_INPAINT_IMAGE = flags.DEFINE_string(
    "inpaint_image", None, "Trained stages: inpainting; the base stage keeps this image "
    "where --inpaint_mask is black.")
_INPAINT_MASK = flags.DEFINE_string(
    "inpaint_mask", None, "Inpainting mask image: white = generate, black = keep.")
_RESAMPLE = flags.DEFINE_integer(
    "resample_rounds", None, "Inpainting: RePaint rounds per step (1 = none; ddpm/ddim).")
_DTYPE = flags.DEFINE_enum(
    "dtype", None, ["float32", "bfloat16"], "Trained stages: sampling dtype (parameters "
    "and activations; default float32).")
_LOWRES_IMAGE = flags.DEFINE_string(
    "lowres_image", None, "Super-resolve this image with the SR stages given as --workdir "
    "(no base stage); --prompts are their captions (default: none).")

COND_DIM = 16


def smoke_sample(out: str, *, batch: int = 4, size: int = 32, settings: SamplerSettings,
                 guidance: float = 3.0, schedule_name: str = "cosine", seed: int = 0,
                 progress_png: bool = True, show_progress: bool = True) -> dict:
    """Samples `batch` images from a randomly initialised tiny model; writes PNGs."""
    if batch <= 0 or size <= 0:
        raise ValueError(f"batch and size must be positive, got batch={batch}, size={size}")
    check_guidance(guidance)
    schedule = get_schedule(schedule_name, resolution=size)
    model = TinyConvDenoiser()
    init_key, cond_key, sample_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    shape = (batch, size, size, 3)
    cond = jax.random.normal(cond_key, (batch, COND_DIM))
    params = model.init(init_key, jnp.zeros(shape), jnp.zeros((batch,)), cond)

    bar = tqdm(total=settings.steps, desc="sampling", unit="step", disable=not show_progress)

    def advance(done):
        bar.update(int(done) - bar.n)

    @jax.jit
    def run(params, cond, key):
        def model_fn(z, logsnr, c):
            return model.apply(params, z, logsnr, c)
        denoise_fn = classifier_free_guidance(model_fn, cond, jnp.zeros_like(cond), guidance)
        return sample(denoise_fn, schedule, shape, key, settings,
                      return_intermediates=progress_png, progress=advance)

    start = time.perf_counter()
    result = jax.block_until_ready(run(params, cond, sample_key))
    seconds = time.perf_counter() - start
    bar.close()
    images, trajectory = result if progress_png else (result, None)
    paths = [image_io.save_png_grid(np.asarray(images), out)]
    if trajectory is not None:
        # Eight evenly spaced x0 estimates of the first sample, left to right.
        frames = np.asarray(trajectory[np.linspace(0, settings.steps - 1, 8).astype(int), 0])
        root, ext = os.path.splitext(out)
        paths.append(image_io.save_png_grid(frames, f"{root}_progress{ext or '.png'}", columns=8))
    return {"paths": paths, "seconds": seconds,
            "min": float(images.min()), "max": float(images.max())}


def _explicit(flag) -> Any:
    """A flag's value only if it was given on the command line."""
    return flag.value if flags.FLAGS[flag.name].present else None


def _prompts() -> list[str]:
    from imagen_jax.sample_cascade import read_prompts_file

    prompts = list(_PROMPTS.value)
    if _PROMPTS_FILE.value:
        prompts += read_prompts_file(_PROMPTS_FILE.value)
    return prompts


def sample_trained() -> None:
    """The CLI's trained-stage path: every flag and --out_dir checked, then the cascade."""
    from imagen_jax.checks import check_output_dir, check_positive_int
    from imagen_jax.sample_cascade import ImageInputs, Overrides, sample_to_files

    overrides = Overrides(steps=_explicit(_STEPS), sampler=_explicit(_SAMPLER),
                          eta=_explicit(_ETA), guidance=_explicit(_GUIDANCE),
                          threshold=_explicit(_THRESHOLD), percentile=_explicit(_PERCENTILE),
                          aug_level=_AUG.value, strength=_STRENGTH.value,
                          resample_rounds=_RESAMPLE.value, dtype=_DTYPE.value)
    inputs = ImageInputs(negative_prompt=_NEGATIVE.value, init_image=_INIT_IMAGE.value,
                         inpaint_image=_INPAINT_IMAGE.value, inpaint_mask=_INPAINT_MASK.value,
                         lowres_image=_LOWRES_IMAGE.value)
    check_positive_int(_BATCH_SIZE.value, "--batch_size")
    check_positive_int(_PER_GRID.value, "--prompts_per_grid")
    # Here, named as the flag, before the prompts file is read or any stage loaded.
    check_output_dir(_OUT_DIR.value, "--out_dir")
    prompts = _prompts()
    if not prompts and inputs.lowres_image:
        prompts = [""]  # upsampling needs no caption
    paths = sample_to_files(_WORKDIRS.value, prompts, _OUT_DIR.value, overrides=overrides,
                            seed=_SEED.value, ema=_EMA.value, batch_size=_BATCH_SIZE.value,
                            per_grid=_PER_GRID.value, overwrite=_OVERWRITE.value,
                            inputs=inputs)
    grids = sum(os.path.basename(p).startswith("grid_") for p in paths)
    print(f"wrote {len(paths) - grids} PNGs and {grids} grid(s) for {len(prompts)} "
          f"prompt(s) to {_OUT_DIR.value}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _WORKDIRS.value:
        try:
            sample_trained()
        except (ValueError, FileNotFoundError) as e:
            sys.exit(f"error: {e}")
        return
    try:
        settings = SamplerSettings(sampler=_SAMPLER.value, steps=_STEPS.value, eta=_ETA.value,
                                   threshold=_THRESHOLD.value, percentile=_PERCENTILE.value)
        info = smoke_sample(_OUT.value, batch=_BATCH.value, size=_SIZE.value,
                            settings=settings, guidance=_GUIDANCE.value,
                            schedule_name=_SCHEDULE.value, seed=_SEED.value,
                            progress_png=_PROGRESS_PNG.value)
    except ValueError as e:  # bad flag values: one line, no traceback
        sys.exit(f"error: {e}")
    print(f"wrote {', '.join(info['paths'])} ({_BATCH.value} images, {settings.steps} "
          f"{settings.sampler} steps, {info['seconds']:.1f}s incl. compilation, "
          f"pixel range [{info['min']:.2f}, {info['max']:.2f}])")


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    app.run(main)
