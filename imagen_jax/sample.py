r"""Sample images and write them as a PNG grid.

For now this runs the smoke path: an *untrained* tiny conv denoiser, sampled with
classifier-free guidance and thresholding through the real sampler, so that the
whole pipeline (schedule -> guided denoiser -> jit-compiled sampler -> PNG) is
seen working in seconds on a CPU. The images are structured noise, as expected
from random weights.

    python -m imagen_jax.sample --out=outputs/smoke.png
    python -m imagen_jax.sample --sampler=ddpm --steps=100 --threshold=static
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from imagen_jax import image_io
from imagen_jax.diffusion import (SamplerSettings, classifier_free_guidance, get_schedule,
                                  sample)
from imagen_jax.nn.tiny_convnet import TinyConvDenoiser

_OUT = flags.DEFINE_string("out", "outputs/smoke.png", "Where to write the PNG grid.")
_BATCH = flags.DEFINE_integer("batch", 4, "Number of images.")
_SIZE = flags.DEFINE_integer("size", 32, "Image side in pixels.")
_STEPS = flags.DEFINE_integer("steps", 25, "Sampling steps.")
_SAMPLER = flags.DEFINE_string("sampler", "ddim", "'ddim' or 'ddpm'.")
_ETA = flags.DEFINE_float("eta", 0.0, "DDIM eta in [0, 1].")
_GUIDANCE = flags.DEFINE_float("guidance", 3.0, "CFG weight w (1 = no guidance).")
_THRESHOLD = flags.DEFINE_string("threshold", "dynamic", "'none', 'static' or 'dynamic'.")
_PERCENTILE = flags.DEFINE_float("percentile", 99.5, "Dynamic thresholding percentile.")
_SCHEDULE = flags.DEFINE_string("schedule", "cosine", "Noise schedule name.")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed for weights, conditioning and noise.")
_PROGRESS_PNG = flags.DEFINE_bool(
    "progress_png", True, "Also write <out>_progress.png: the x0 estimate over the steps.")

COND_DIM = 16


def smoke_sample(out: str, *, batch: int = 4, size: int = 32, settings: SamplerSettings,
                 guidance: float = 3.0, schedule_name: str = "cosine", seed: int = 0,
                 progress_png: bool = True, show_progress: bool = True) -> dict:
    """Samples `batch` images from a randomly initialised tiny model; writes PNGs."""
    if batch <= 0 or size <= 0:
        raise ValueError(f"batch and size must be positive, got batch={batch}, size={size}")
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
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
    app.run(main)
