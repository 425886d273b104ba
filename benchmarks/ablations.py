r"""Imagen's claims at toy scale, measured on the shapes domain with the demo cascade.

    python -m imagen_jax.demo --workdir=runs/demo          # trains the cascade first
    python benchmarks/ablations.py --demo_dir=runs/demo --out=docs/ablations.md

Three tables (ShapesBench on the test split's held-out prompts, plus weight-free
fidelity / diversity / artefact proxies from imagen_jax/evaluate/image_stats.py):
  1. guidance sweep w in {1, 3, 5, 8, 12} on the base stage (the paper's Fig. 4
     trade-off): accuracy vs diversity between two samples of a prompt and colour;
  2. thresholding at a high guidance weight: none, static, dynamic p in {99, 99.5,
     99.9}: saturated-pixel fraction and accuracy (the paper's Fig. 4 / App. E);
  3. the 32 -> 64 SR stage with and without noise-conditioning augmentation in
     training, both fed the *base model's own* samples (the paper's Sec. 2.5 and
     Fig. A.14): accuracy, sharpness and off-palette (artefact) pixels. The no-aug SR
     stage is trained here (same config, max_aug_level=0) unless it exists.
Each configuration samples the same prompts with the same seed. Writes the tables
as Markdown and JSON (with the machine and versions).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_DEMO_DIR = flags.DEFINE_string("demo_dir", "runs/demo", "imagen_jax.demo's workdir.")
_OUT = flags.DEFINE_string("out", "docs/ablations.md", "Markdown report (JSON next to it).")
_PROMPTS = flags.DEFINE_integer("prompts", 48, "Held-out test prompts (2 samples each).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (the same for every row).")
_HIGH_W = flags.DEFINE_float("high_guidance", 12.0, "Guidance weight of table 2.")


def _cascade(base_dir: str, sr_dir: str, base_over, sr_over):
    from imagen_jax.cascade import Cascade
    from imagen_jax.sample_cascade import load_stage

    base, sr = load_stage(base_dir, base_over), load_stage(sr_dir, sr_over)
    return Cascade(base.text_encoder, [base, sr])


def _measure(cascade, prompts: list[str], seed: int) -> dict:
    """Samples the cascade on prompts (each twice) and returns all the row's numbers."""
    from imagen_jax.evaluate import image_stats as stats
    from imagen_jax.evaluate.shapesbench import score_images
    from imagen_jax.image_io import to_uint8
    from imagen_jax.sample_cascade import generate

    doubled = [p for p in prompts for _ in range(2)]
    base, final = generate(cascade, doubled, seed=seed, batch_size=len(doubled))
    _, summary = score_images(list(to_uint8(final)), doubled)
    acc = lambda kind, cat: summary[kind][cat]["accuracy"] if kind in summary else float("nan")
    return {
        "single_colour_shape": acc("single", "colour_shape"),
        "relation": acc("relation", "relation"),
        "whole": acc("all", "whole"),
        "colour": acc("all", "colour"),
        "diversity_base": stats.pairwise_diversity(base, 2),
        "chroma_base": stats.mean_chroma(base),
        "saturated_base": stats.saturated_fraction(base),
        "sharpness": stats.sharpness(final),
        "off_palette": stats.off_palette_fraction(to_uint8(final)),
    }


def _ground_truth_row(prompts: list[str], size: int) -> dict:
    """The same statistics for renders of the prompts' test scenes (the reference)."""
    import numpy as np

    from imagen_jax.data.shapes import example_scene, render
    from imagen_jax.evaluate import image_stats as stats

    renders = np.stack([render(example_scene("test", i), size) for i in range(len(prompts))])
    floats = renders.astype(np.float32) / 127.5 - 1
    return {"sharpness": stats.sharpness(floats), "off_palette": stats.off_palette_fraction(renders),
            "saturated_base": stats.saturated_fraction(floats), "chroma_base": stats.mean_chroma(floats)}


def _train_noaug_sr(demo_dir: str) -> str:
    from configs import imagen_demo
    from imagen_jax.train.run_config import load_config, save_config
    from imagen_jax.train.trainer import train

    workdir = os.path.join(demo_dir, "sr_noaug")
    trained = load_config(os.path.join(demo_dir, "sr"))
    config = imagen_demo.get_config("sr")  # the demo's SR stage, as it was trained ...
    config.train.steps = trained.train.steps
    config.data.data_dir = trained.data.data_dir
    config.diffusion.max_aug_level = 0.0  # ... except for the augmentation
    save_config(config, workdir)
    train(config, workdir)
    return workdir


ACCURACY = [("single_colour_shape", "single: colour+shape", ".1%"),
            ("relation", "relation", ".1%"), ("whole", "whole prompt", ".1%")]


def main(argv):
    del argv
    from tqdm import tqdm

    from imagen_jax.evaluate.report import environment, markdown_table, write_report
    from imagen_jax.evaluate.shapesbench import shapesbench_prompts
    from imagen_jax.sample_cascade import Overrides

    demo, seed = _DEMO_DIR.value, _SEED.value
    base_dir, sr_dir = os.path.join(demo, "base"), os.path.join(demo, "sr")
    for d in (base_dir, sr_dir):
        if not os.path.isdir(os.path.join(d, "checkpoints")):
            sys.exit(f"error: no trained stage in {d}; run `python -m imagen_jax.demo "
                     f"--workdir={demo}` first")
    prompts = shapesbench_prompts(_PROMPTS.value)
    start = time.perf_counter()
    sr_noaug = os.path.join(demo, "sr_noaug")
    if not os.path.isdir(os.path.join(sr_noaug, "checkpoints")):
        print("[ablations] training the SR stage without noise-conditioning augmentation")
        sr_noaug = _train_noaug_sr(demo)

    w_high = _HIGH_W.value
    plan = [("guidance", f"w = {w:g}", Overrides(guidance=w), Overrides(), sr_dir)
            for w in (1.0, 3.0, 5.0, 8.0, 12.0)]
    plan += [("threshold", "none", Overrides(guidance=w_high, threshold="none"), Overrides(), sr_dir),
             ("threshold", "static", Overrides(guidance=w_high, threshold="static"), Overrides(),
              sr_dir)]
    plan += [("threshold", f"dynamic p = {p:g}",
              Overrides(guidance=w_high, threshold="dynamic", percentile=p), Overrides(), sr_dir)
             for p in (99.0, 99.5, 99.9)]
    plan += [("noise_aug", "SR trained with aug, sampled at aug 0", Overrides(),
              Overrides(aug_level=0.0), sr_dir),
             ("noise_aug", "SR trained with aug, sampled at aug 0.1", Overrides(),
              Overrides(aug_level=0.1), sr_dir),
             ("noise_aug", "SR trained without aug", Overrides(), Overrides(aug_level=0.0),
              sr_noaug)]
    results: dict[str, list] = {"guidance": [], "threshold": [], "noise_aug": []}
    for table, name, base_over, sr_over, sr in tqdm(plan, desc="ablations", unit="row"):
        row = _measure(_cascade(base_dir, sr, base_over, sr_over), prompts, seed)
        row["settings"] = {"base": dataclasses.asdict(base_over), "sr": dataclasses.asdict(sr_over)}
        results[table].append((name, row))
    truth = _ground_truth_row(prompts, 64)
    results["noise_aug"].append(("ground-truth renders (reference)", truth))

    env = (f"{environment()}; {len(prompts)} held-out test prompts x 2 samples, seed {seed}; "
           f"{time.perf_counter() - start:.0f}s")
    report = [
        "# Imagen's claims at toy scale (shapes domain)", "",
        f"Measured by `python benchmarks/ablations.py --demo_dir={demo}` on {env}.",
        "Accuracy is ShapesBench on the final 64 px images; diversity, colour (chroma) and "
        "saturation are of the base stage's 32 px samples.", "",
        "## 1. Guidance weight (base stage; dynamic thresholding p = 99.5)", "",
        markdown_table(results["guidance"], ACCURACY + [
            ("diversity_base", "diversity (RMS between 2 samples)", ".3f"),
            ("chroma_base", "chroma", ".3f"), ("saturated_base", "saturated px", ".2%")]), "",
        f"## 2. Thresholding at w = {w_high:g} (base stage)", "",
        markdown_table(results["threshold"], ACCURACY + [
            ("saturated_base", "saturated px", ".2%"), ("chroma_base", "chroma", ".3f"),
            ("diversity_base", "diversity", ".3f")]), "",
        "## 3. Noise-conditioning augmentation (SR 32 -> 64 fed the base model's samples)", "",
        markdown_table(results["noise_aug"], ACCURACY + [
            ("sharpness", "sharpness (mean abs Laplacian)", ".4f"),
            ("off_palette", "off-palette px", ".2%")]), "",
    ]
    write_report(_OUT.value, report, {"environment": env, "results": results})

if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    app.run(main)
