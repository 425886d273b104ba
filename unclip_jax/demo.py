r"""The unCLIP stack on the offline shapes set, end to end on a CPU: train CLIP, the
prior and the decoder (and optionally the 32 -> 64 upsampler), report CLIP's
zero-shot retrieval on the test split, sample the demo prompts, and score the
stack with ShapesBench.

    python -m unclip_jax.demo --workdir=runs/unclip_demo
    python -m unclip_jax.demo --workdir=runs/unclip_quick --quick     # smoke run

Writes, under WORKDIR: clip/, prior/, decoder/ (and upsampler/) runs;
samples/grid_*.png; shapesbench/ (final images, shapesbench.json; base_stage/ the
decoder's own 32 px samples); clip_retrieval.json; index.html, the page to open.
Running it again resumes: finished stages are not retrained.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Sequence

from absl import app, flags
import jax.numpy as jnp
import numpy as np

STAGE_ORDER = ("clip", "prior", "decoder", "upsampler")


def stage_configs(workdir: str, quick: bool, upsampler: bool, steps: dict[str, int]) -> dict:
    from configs import unclip_demo
    from imagen_jax.demo import apply_quick_settings

    data_dir = os.path.join(workdir, "tensorflow_datasets")
    configs = {}
    for name in STAGE_ORDER if upsampler else STAGE_ORDER[:3]:
        c = unclip_demo.get_config(name)
        if quick:
            apply_quick_settings(c)
        if steps.get(name):
            c.train.steps = steps[name]
        c.data.data_dir = data_dir
        if name in ("prior", "decoder"):
            c.clip.workdir = os.path.join(workdir, "clip")
        configs[name] = c
    return configs


def clip_retrieval(clip, config, workdir: str, num: int = 256) -> dict:
    """Zero-shot retrieval on the test split: for each image, is the most similar of
    `num` test captions its own (or one with the same text)? And the reverse."""
    from imagen_jax.data.datasets import builder_from_config
    import tensorflow_datasets as tfds

    builder = builder_from_config(config.data, workdir)
    ds = builder.as_dataset(split="test", shuffle_files=False).take(num)
    examples = list(tfds.as_numpy(ds))
    images = np.stack([ex["image"] for ex in examples]).astype(np.float32) / 127.5 - 1.0
    texts = [ex["caption"].decode("utf-8") for ex in examples]
    z_i = clip.encode_images(jnp.asarray(images))
    z_t, _, _ = clip.encode_prompts(texts)
    sim = np.asarray((z_i / jnp.linalg.norm(z_i, axis=-1, keepdims=True))
                     @ (z_t / jnp.linalg.norm(z_t, axis=-1, keepdims=True)).T)
    same = np.array([[a == b for b in texts] for a in texts])
    rows = np.arange(len(texts))
    image_to_text = same[rows, sim.argmax(1)]
    text_to_image = same[sim.argmax(0), rows]
    return {"n": len(texts), "image_to_text_top1": float(image_to_text.mean()),
            "text_to_image_top1": float(text_to_image.mean()),
            "chance": float(same.sum(1).mean() / len(texts))}


def generate_batched(pipe, prompts: Sequence[str], seed: int, batch: int = 48
                     ) -> list[np.ndarray]:
    """pipe.generate over fixed-size batches (one compilation), per stage."""
    from tqdm import tqdm

    from imagen_jax.sample_cascade import generate_in_batches

    with tqdm(total=-(-len(prompts) // batch), desc="unCLIP sampling", unit="batch") as bar:
        return generate_in_batches(pipe.generate, prompts, seed=seed, batch_size=batch,
                                   on_batch=lambda: bar.update(1))


def run_demo(workdir: str, *, quick: bool = False, upsampler: bool = True,
             steps: dict[str, int] | None = None, eval_prompts: int = 96, seed: int = 0) -> dict:
    from imagen_jax.demo import (demo_prompts, report_clip_score, save_demo_grids,
                                 score_base_and_final, train_stages, write_index)
    from imagen_jax.evaluate.shapesbench import shapesbench_prompts
    from unclip_jax.pipeline import load_pipeline

    start = time.perf_counter()
    configs = stage_configs(workdir, quick, upsampler, steps or {})
    workdirs = {}
    for name, config in configs.items():  # in order: the prior and decoder read CLIP
        workdirs.update(train_stages(workdir, {name: config}))
    pipe = load_pipeline(workdirs["decoder"], prior=workdirs["prior"],
                         upsamplers=[workdirs["upsampler"]] if upsampler else [])
    retrieval = clip_retrieval(pipe.clip, configs["clip"], workdirs["clip"])
    with open(os.path.join(workdir, "clip_retrieval.json"), "w", encoding="utf-8") as f:
        json.dump(retrieval, f, indent=1)
    print(f"[unclip demo] CLIP zero-shot retrieval on {retrieval['n']} test examples: "
          f"image->text {retrieval['image_to_text_top1']:.1%}, text->image "
          f"{retrieval['text_to_image_top1']:.1%} (chance {retrieval['chance']:.1%})")

    prompts = demo_prompts()
    grids = save_demo_grids(generate_batched(pipe, prompts, seed, batch=len(prompts)),
                            os.path.join(workdir, "samples"))
    print(f"[unclip demo] grids: {', '.join(grids)}", flush=True)

    test_prompts = shapesbench_prompts(min(eval_prompts, 24) if quick else eval_prompts)
    outputs = generate_batched(pipe, test_prompts, seed)
    scored = score_base_and_final(outputs, test_prompts, os.path.join(workdir, "shapesbench"),
                                  label="[unclip demo]", base_name="decoder",
                                  extra={"clip_retrieval": retrieval})
    clip_line = report_clip_score(pipe.clip, outputs[-1], test_prompts,
                                  os.path.join(workdir, "shapesbench"), workdirs["clip"],
                                  label="[unclip demo]")
    elapsed = time.perf_counter() - start
    steps = ", ".join(f"{name} {c.train.steps}" for name, c in configs.items())
    page = write_index(workdir, "imagen-jax demo: the tiny unCLIP stack", grids, scored, [
        f"Train steps: {steps}; seed {seed}; {elapsed:.0f} s.",
        f"CLIP zero-shot retrieval on {retrieval['n']} test examples: image->text "
        f"{retrieval['image_to_text_top1']:.1%}, text->image {retrieval['text_to_image_top1']:.1%}"
        f" (chance {retrieval['chance']:.1%}).", clip_line])
    print(f"[unclip demo] done in {elapsed:.0f} s. Open:\n[unclip demo]   {page}\n"
          + "".join(f"[unclip demo]   {g}\n" for g in grids), end="", flush=True)
    summary = scored[0]
    return {"summary": summary, "retrieval": retrieval, "workdirs": workdirs, "grids": grids}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from absl import logging

    from imagen_jax.train.validate import ConfigError

    logging.set_verbosity(logging.ERROR)  # as imagen_jax.demo: progress and results only
    f = flags.FLAGS
    steps = {name: getattr(f, f"{name}_steps") for name in STAGE_ORDER}
    try:
        run_demo(f.workdir, quick=f.quick, upsampler=f.upsampler, steps=steps,
                 eval_prompts=f.eval_prompts, seed=f.seed)
    except (ConfigError, ValueError, FileNotFoundError, FloatingPointError) as e:
        sys.exit(f"error: {e}")


def _define_flags() -> None:
    from imagen_jax.demo import define_demo_flags

    define_demo_flags("runs/unclip_demo")
    flags.DEFINE_bool("upsampler", True, "Also train and apply the 32 -> 64 upsampler.")
    for name in STAGE_ORDER:
        flags.DEFINE_integer(f"{name}_steps", None, f"{name} train steps (default: config).")


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    from imagen_jax.demo import quiet_native_logs
    print(f"[unclip demo] running on {quiet_native_logs()}", flush=True)
    _define_flags()
    app.run(main)
