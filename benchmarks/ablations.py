r"""Imagen's claims at toy scale, measured on the shapes domain with the demo cascade.

    python -m imagen_jax.demo --workdir=runs/demo          # trains the cascade first
    python benchmarks/ablations.py --demo_dir=runs/demo --out=docs/ablations.md

Three tables on the test split's prompts (--prompts scenes x --samples each: 256 x 2
puts ~170 images in every prompt kind, so every accuracy's 95% Wilson interval is
+-8 points or tighter), ShapesBench plus weight-free image statistics
(imagen_jax/evaluate/image_stats.py):
  1. guidance sweep w in {1, 3, 5, 8, 12} on the base stage's own samples (the
     paper's Fig. 4 trade-off): accuracy vs diversity between two samples and colour;
  2. thresholding at a high guidance weight (none, static, dynamic), base stage: with
     the measurements that explain the result (background level, pixels the scorer
     cannot name, shape fit of the detected objects);
  3. the 32 -> 64 SR stage with and without noise-conditioning augmentation in
     training, all fed the *same* base samples (the demo's settings; the paper's
     Sec. 2.5 and Fig. A.14): accuracy after SR, how many right base images SR turns
     wrong, fidelity to the low-res input, off-palette (artefact) pixels. The no-aug
     SR stage (same config, max_aug_level=0) and, with --sr_long_steps, the aug SR
     stage trained for longer are trained here unless they exist.
Every row samples the same prompts with the same seed. Writes Markdown and JSON
(with the machine and versions).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_DEMO_DIR = flags.DEFINE_string("demo_dir", "runs/demo", "imagen_jax.demo's workdir.")
_OUT = flags.DEFINE_string("out", "docs/ablations.md", "Markdown report (JSON next to it).")
_PROMPTS = flags.DEFINE_integer("prompts", 256, "Test-split scenes whose captions are sampled.")
_SAMPLES = flags.DEFINE_integer("samples", 2, "Samples per prompt (>= 2: diversity).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (the same for every row).")
_HIGH_W = flags.DEFINE_float("high_guidance", 12.0, "Guidance weight of table 2.")
_BATCH = flags.DEFINE_integer("batch", 128, "Sampling batch size.")
_SR_LONG = flags.DEFINE_integer("sr_long_steps", 0, "Also train the aug SR stage on to this "
                                "many steps (0 = skip that row).")


def _score(images, prompts: list[str]) -> tuple[list[dict], dict]:
    """ShapesBench rows and summary; 32 px images are enlarged (nearest) to 64 first."""
    from imagen_jax.evaluate.shapesbench import score_images
    from imagen_jax.image_io import to_uint8

    factor = max(1, 64 // images.shape[1])
    big = images.repeat(factor, 1).repeat(factor, 2)
    return score_images(list(to_uint8(big)), prompts)


def _accuracies(summary: dict) -> dict:
    def acc(kind: str, cat: str) -> tuple[float, list[float]]:
        entry = summary.get(kind, {}).get(cat)
        return (entry["accuracy"], entry["ci95"]) if entry else (float("nan"), [])
    out = {}
    for key, kind, cat in (("single_colour_shape", "single", "colour_shape"),
                           ("count", "count", "count"), ("relation", "relation", "relation"),
                           ("whole", "all", "whole")):
        out[key], out[key + "_ci95"] = acc(kind, cat)
    out["n_single"] = summary.get("single", {}).get("n", 0)
    return out


def _scorer_view(images) -> dict:
    """What the scorer sees: the background level, pixels it names no colour, shape fit."""
    import numpy as np

    from imagen_jax.evaluate.shapesbench import detect_objects, segment
    from imagen_jax.image_io import to_uint8

    pixels = to_uint8(images)
    unlabelled = float(np.mean([np.mean(segment(p) == -1) for p in pixels]))
    ious = [o.iou for p in pixels for o in detect_objects(p)[:4]]
    return {"background": float(np.median(np.asarray(images, np.float32))),
            "unlabelled": unlabelled, "mean_iou": float(np.mean(ious)) if ious else 0.0}


def _base_row(base_entry, text, prompts: list[str], seed: int, batch: int, samples: int):
    """Samples the base stage; returns (images, the row's numbers)."""
    from imagen_jax.evaluate import image_stats as stats

    images = _sample_stage(base_entry, text, None, seed, batch)
    rows, summary = _score(images, prompts)
    row = {**_accuracies(summary), **_scorer_view(images),
           "diversity": stats.pairwise_diversity(images, samples),
           "chroma": stats.mean_chroma(images), "saturated": stats.saturated_fraction(images)}
    return images, rows, row


def _sample_stage(entry, text, lowres, seed: int, batch: int):
    """One stage over all prompts in batches (fold_in(seed, batch index) keys)."""
    import jax
    import numpy as np

    embeddings, mask = text
    out = []
    for index, start in enumerate(range(0, len(embeddings), batch)):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), index)
        sl = slice(start, start + batch)
        kwargs = dict(settings=entry.sampling.settings, guidance=entry.sampling.guidance)
        if lowres is not None:
            kwargs.update(lowres=lowres[sl], aug_level=entry.sampling.aug_level)
        out.append(np.asarray(entry.stage.sample(entry.params, embeddings[sl], mask[sl], key,
                                                 **kwargs)))
    return np.concatenate(out)


def _sr_row(sr_entry, text, base_images, base_rows, prompts, seed: int, batch: int) -> dict:
    import numpy as np

    from imagen_jax.evaluate import image_stats as stats
    from imagen_jax.image_io import to_uint8

    final = _sample_stage(sr_entry, text, base_images, seed + 1, batch)
    rows, summary = _score(final, prompts)
    single = [i for i, p in enumerate(prompts) if base_rows[i]["kind"] == "single"]
    lost = sum(base_rows[i]["colour_shape"] and not rows[i]["colour_shape"] for i in single)
    gained = sum(rows[i]["colour_shape"] and not base_rows[i]["colour_shape"] for i in single)
    # Fidelity: the SR output averaged back down to 32 px against the low-res input.
    b, s = final.shape[0], base_images.shape[1]
    down = final.reshape(b, s, final.shape[1] // s, s, final.shape[2] // s, 3).mean((2, 4))
    return {**_accuracies(summary), "lost": lost / max(len(single), 1),
            "gained": gained / max(len(single), 1),
            "fidelity_rms": float(np.sqrt(np.mean((down - base_images) ** 2))),
            "off_palette": stats.off_palette_fraction(to_uint8(final)),
            "sharpness": stats.sharpness(final)}


def _ground_truth_row(prompts: list[str], size: int) -> dict:
    """The same statistics for renders of the prompts' test scenes (the reference)."""
    import numpy as np

    from imagen_jax.data.shapes import example_scene, render
    from imagen_jax.evaluate import image_stats as stats

    renders = np.stack([render(example_scene("test", i), size) for i in range(len(prompts))])
    floats = renders.astype(np.float32) / 127.5 - 1
    return {"sharpness": stats.sharpness(floats), "off_palette": stats.off_palette_fraction(renders)}


def _train_sr_variant(demo_dir: str, name: str, max_aug_level: float | None = None,
                      steps: int | None = None) -> str:
    """The demo's SR stage as it was trained, except the augmentation (retrained from
    scratch) or the length (the trained stage copied and trained on)."""
    from imagen_jax.train.run_config import load_config, save_config
    from imagen_jax.train.trainer import train

    workdir = os.path.join(demo_dir, name)
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        return workdir
    trained_dir = os.path.join(demo_dir, "sr")
    config = load_config(trained_dir)
    if steps is not None:
        shutil.copytree(trained_dir, workdir)
        config.train.steps = steps
    if max_aug_level is not None:
        config.diffusion.max_aug_level = max_aug_level
    print(f"[ablations] training {workdir}", flush=True)
    save_config(config, workdir)
    train(config, workdir)
    return workdir


ACCURACY = [("single_colour_shape", "single: colour+shape", ".1%"), ("count", "count", ".1%"),
            ("relation", "relation", ".1%"), ("whole", "whole prompt", ".1%")]


def main(argv):
    del argv
    from tqdm import tqdm

    from imagen_jax.evaluate.report import environment, write_report
    from imagen_jax.evaluate.shapesbench import shapesbench_prompts
    from imagen_jax.sample_cascade import Overrides, load_stage, stage_sampling
    from imagen_jax.train.run_config import load_config

    demo, seed, batch, samples = _DEMO_DIR.value, _SEED.value, _BATCH.value, _SAMPLES.value
    base_dir, sr_dir = os.path.join(demo, "base"), os.path.join(demo, "sr")
    for d in (base_dir, sr_dir):
        if not os.path.isdir(os.path.join(d, "checkpoints")):
            sys.exit(f"error: no trained stage in {d}; run `python -m imagen_jax.demo "
                     f"--workdir={demo}` first")
    if samples < 2:
        sys.exit(f"error: --samples must be >= 2 (diversity compares samples), got {samples}")
    prompts = [p for p in shapesbench_prompts(_PROMPTS.value) for _ in range(samples)]
    start = time.perf_counter()
    sr_dirs = {"SR trained with aug (the demo's)": sr_dir,
               "SR trained without aug": _train_sr_variant(demo, "sr_noaug", max_aug_level=0.0)}
    if _SR_LONG.value:
        sr_dirs[f"SR trained with aug, {_SR_LONG.value} steps"] = _train_sr_variant(
            demo, f"sr_aug_{_SR_LONG.value}", steps=_SR_LONG.value)

    base_default, base_config = load_stage(base_dir, Overrides()), load_config(base_dir)
    text = base_default.text_encoder(prompts)
    w_demo, w_high = base_default.sampling.guidance, _HIGH_W.value
    base_plan = [("guidance", f"w = {w:g}", Overrides(guidance=w)) for w in (1.0, 3.0, 5.0, 8.0)]
    base_plan += [("guidance", f"w = {w_high:g}", Overrides(guidance=w_high))]
    base_plan += [("threshold", mode, Overrides(guidance=w_high, threshold=mode))
                  for mode in ("none", "static", "dynamic")]
    results: dict[str, list] = {"guidance": [], "threshold": [], "noise_aug": []}
    demo_base, done = None, {}
    for table, name, over in tqdm(base_plan, desc="ablations: base rows", unit="row"):
        entry = dataclasses.replace(base_default, sampling=stage_sampling(base_config, over))
        key = repr(entry.sampling)  # w = 12 static is in both tables: sampled once
        if key not in done:
            done[key] = _base_row(entry, text, prompts, seed, batch, samples)
        images, rows, row = done[key]
        row = {**row, "settings": dataclasses.asdict(over),
               "threshold_mode": entry.sampling.settings.threshold}
        results[table].append((name, row))
        if table == "guidance" and over.guidance == w_demo:
            demo_base = (images, rows, row)
    if demo_base is None:
        raise SystemExit(f"error: the demo's guidance w = {w_demo:g} is not in the sweep")

    base_images, base_rows, base_row = demo_base
    results["noise_aug"].append(("base stage's own samples (the SR input)", base_row))
    sr_plan = [(name, d, 0.0) for name, d in sr_dirs.items()]
    sr_plan.insert(1, ("SR trained with aug (the demo's), sampled at aug 0.25", sr_dir, 0.25))
    for name, d, aug in tqdm(sr_plan, desc="ablations: SR rows", unit="row"):
        entry = load_stage(d, Overrides(aug_level=aug))
        row = _sr_row(entry, text, base_images, base_rows, prompts, seed, batch)
        row["aug_level"] = aug
        results["noise_aug"].append((name, row))
    results["noise_aug"].append(("ground-truth renders (reference)",
                                 _ground_truth_row(prompts, 64)))

    env = (f"{environment()}; {len(prompts) // samples} test prompts x {samples} samples, seed "
           f"{seed}; {time.perf_counter() - start:.0f}s")
    write_report(_OUT.value, report_lines(demo, env, results, w_demo, w_high, samples),
                 {"environment": env, "results": results})


def report_lines(demo: str, env: str, results: dict, w_demo: float, w_high: float,
                 samples: int) -> list[str]:
    from imagen_jax.evaluate.report import markdown_table

    return [
        "# Imagen's claims at toy scale (shapes domain)", "",
        f"Measured by `python benchmarks/ablations.py --demo_dir={demo}` on {env}.",
        "Tables 1-2 score the base stage's own 32 px samples (enlarged 2x, nearest); table 3 "
        f"feeds one set of base samples (w = {w_demo:g}, the demo's settings) to each SR stage "
        "and scores the 64 px results. Every accuracy's 95% Wilson interval is in "
        "docs/ablations.json.", "",
        "## 1. Guidance weight (base stage, the demo's static thresholding)", "",
        markdown_table(results["guidance"], ACCURACY + [
            ("diversity", f"diversity (RMS between {samples} samples)", ".3f"),
            ("chroma", "chroma", ".3f"), ("saturated", "saturated px", ".2%")]), "",
        f"## 2. Thresholding at w = {w_high:g} (base stage)", "",
        markdown_table(results["threshold"], ACCURACY + [
            ("saturated", "saturated px", ".2%"), ("background", "median pixel", ".3f"),
            ("unlabelled", "px the scorer names no colour", ".1%"),
            ("mean_iou", "shape fit (IoU)", ".3f"), ("chroma", "chroma", ".3f")]), "",
        "## 3. Noise-conditioning augmentation (SR 32 -> 64 fed the base stage's samples)", "",
        markdown_table(results["noise_aug"], ACCURACY + [
            ("lost", "single: right at 32 px, wrong after SR", ".1%"),
            ("fidelity_rms", "RMS to the low-res input", ".3f"),
            ("off_palette", "off-palette px", ".2%"), ("sharpness", "sharpness", ".4f")]), "",
    ]


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    app.run(main)
