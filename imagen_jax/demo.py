r"""The main job on a fresh machine: train the tiny Imagen cascade on the offline shapes
set, sample a fixed prompt list, and score the cascade with ShapesBench.

    python -m imagen_jax.demo --workdir=runs/demo          # the full demo (minutes)
    python -m imagen_jax.demo --workdir=runs/quick --quick # smoke run (~2 minutes)

Writes, under WORKDIR:
    base/, sr/           each stage's run: config.json, checkpoints/, TensorBoard events
    samples/grid_32.png  the fixed prompts at the base stage's 32 px (labelled)
    samples/grid_64.png  the same after super-resolution to 64 px
    shapesbench/         the test split's held-out prompts: images/, shapesbench.json
                         (final images); base_stage/ the same for the base stage alone
    index.html           the page to open: grids, tables, every prompt's image + marks
Running it again resumes: finished stages are not retrained.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Sequence

from absl import app, flags

# Shown in the grids: every colour and shape, counts, relations, and (marked *) the
# compositions the train split never contains.
DEMO_PROMPTS = (
    "a red circle", "a green square", "an orange triangle", "a purple circle",
    "a red triangle*", "a blue circle*", "a yellow square*", "two green circles",
    "three orange squares", "four purple triangles", "a red circle above a blue square",
    "a yellow triangle to the right of a green circle",
    "a green circle to the left of an orange square*", "a purple triangle above a red circle*",
    "a blue square below a yellow triangle*", "a blue triangle below a purple square",
)


def apply_quick_settings(config: Any) -> None:
    """A smoke run (--quick), the same for every stage of both demos: a few steps on a
    small generated set, a checkpoint at the end, few sampling steps."""
    config.train.steps = 20
    config.data.num_train = 500
    config.checkpoint.every_steps = 20
    config.log.every_steps = 10
    config.sample.steps = 10


def stage_configs(quick: bool, base_steps: int | None = None, sr_steps: int | None = None,
                  data_dir: str = "", seed: int | None = None) -> dict:
    """The two stages' configs; `seed` (default: the config's) seeds each stage's
    init, noise and data order."""
    from configs import imagen_demo

    configs = {name: imagen_demo.get_config(name) for name in ("base", "sr")}
    for name, steps in (("base", base_steps), ("sr", sr_steps)):
        c = configs[name]
        if quick:
            apply_quick_settings(c)
        if steps is not None:
            c.train.steps = steps
        if seed is not None:
            c.seed = seed
        c.data.data_dir = data_dir
    return configs


def train_stages(workdir: str, configs: dict) -> dict[str, str]:
    from imagen_jax.train.run_config import save_config
    from imagen_jax.train.trainer import train

    workdirs = {}
    for name, config in configs.items():
        stage_dir = os.path.join(workdir, name)
        start = time.perf_counter()
        save_config(config, stage_dir)
        train(config, stage_dir)
        print(f"[demo] {name}: {config.train.steps} steps in "
              f"{time.perf_counter() - start:.0f}s -> {stage_dir}", flush=True)
        workdirs[name] = stage_dir
    return workdirs


def demo_prompts() -> list[str]:
    """DEMO_PROMPTS without the held-out marks."""
    return [p.rstrip("*") for p in DEMO_PROMPTS]


def save_demo_grids(outputs: Sequence[Any], out_dir: str) -> list[str]:
    """One labelled grid per stage's images of `demo_prompts()`: grid_<side>.png."""
    from imagen_jax import image_io

    return [image_io.save_labelled_grid(images, list(DEMO_PROMPTS),
                                        os.path.join(out_dir, f"grid_{images.shape[1]}.png"),
                                        columns=4)
            for images in outputs]


def sample_grids(cascade, out_dir: str, seed: int) -> list[str]:
    """The fixed prompts through the cascade: one labelled grid per stage."""
    from imagen_jax.sample_cascade import generate

    prompts = demo_prompts()
    return save_demo_grids(generate(cascade, prompts, seed=seed, batch_size=len(prompts)),
                           out_dir)


def score_shapesbench(images: Any, prompts: Sequence[str], out_dir: str, title: str,
                      extra: dict | None = None, note: str = "") -> Any:
    """Scores final images of ShapesBench `prompts`; writes them (PNGs + captions.jsonl
    under images/) and shapesbench.json (summary, per-prompt rows, `extra`); prints
    the table; returns a report_page.ScoredImages. Images below 64 px are enlarged
    (nearest) first: ShapesBench's detector is validated at 64 px."""
    from imagen_jax.evaluate.report_page import ScoredImages
    from imagen_jax.evaluate.shapesbench import format_table, score_images
    from imagen_jax.image_io import to_uint8
    from imagen_jax.sample_cascade import write_captioned_pngs

    side = images.shape[1]
    if side < 64:
        factor = 64 // side
        images = images.repeat(factor, 1).repeat(factor, 2)
    paths = write_captioned_pngs(images, prompts, os.path.join(out_dir, "images"))
    rows, summary = score_images(list(to_uint8(images)), prompts)
    with open(os.path.join(out_dir, "shapesbench.json"), "w", encoding="utf-8") as f:
        json.dump({"summary": summary, "rows": rows, **(extra or {})}, f, indent=1)
    table = format_table(summary, f"{title}, {len(prompts)} held-out test prompts "
                                  f"({side} px{', scored at 64' if side < 64 else ''})")
    print(table, flush=True)
    return ScoredImages(title, table, paths, rows, note, summary)


def colour_shape(summary: dict) -> float:
    """Single-object prompts' colour+shape accuracy, the number the demo tracks."""
    return summary["single"]["colour_shape"]["accuracy"] if "single" in summary else 0.0


def shapesbench(cascade, out_dir: str, num_prompts: int, seed: int,
                clip_dir: str | None = None) -> tuple[list, str]:
    """The held-out prompts through the cascade, scored twice: the base stage's own
    samples (under out_dir/base_stage) and the final images (under out_dir); and the
    final images' CLIP score under the CLIP in `clip_dir` (when it exists). Returns
    (scored, the CLIP score's line)."""
    from tqdm import tqdm

    from imagen_jax.evaluate.shapesbench import shapesbench_prompts
    from imagen_jax.sample_cascade import generate

    prompts = shapesbench_prompts(num_prompts, split="test")
    batch = min(48, len(prompts))
    with tqdm(total=-(-len(prompts) // batch) * len(cascade.stages), desc="ShapesBench "
              "sampling", unit="stage batch") as bar:
        outputs = generate(cascade, prompts, seed=seed, batch_size=batch,
                           progress=lambda _: bar.update(1))
    scored = score_base_and_final(outputs, prompts, out_dir)
    if clip_dir and os.path.isfile(os.path.join(clip_dir, "config.json")):
        from imagen_jax.evaluate.clip_score import load_clip_for_scoring
        line = report_clip_score(load_clip_for_scoring(clip_dir), outputs[-1], prompts,
                                 out_dir, clip_dir)
    else:
        line = (f"CLIP score: not measured (no CLIP at {clip_dir or '--clip_dir'}; "
                "python -m unclip_jax.demo trains one)")
        print(f"[demo] {line}", flush=True)
    return scored, line


def report_clip_score(clip: Any, images: Any, prompts: Sequence[str], out_dir: str,
                      clip_name: str, label: str = "[demo]") -> str:
    """The final images' CLIP score (imagen_jax.evaluate.clip_score): printed, written
    to out_dir/clip_score.json, and returned as one line for index.html."""
    import numpy as np

    from imagen_jax.evaluate.clip_score import clip_score

    result = clip_score(clip, np.asarray(images), prompts)
    result["clip"] = clip_name
    with open(os.path.join(out_dir, "clip_score.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    line = (f"CLIP score of the final images ({result['n']} prompts, CLIP {clip_name}): "
            f"mean cosine {result['clip_score']:.4f}")
    print(f"{label} {line}", flush=True)
    return line


def score_base_and_final(outputs: Sequence[Any], prompts: Sequence[str], out_dir: str, *,
                         label: str = "[demo]", base_name: str = "base stage",
                         extra: dict | None = None) -> list:
    """Scores the first stage's own samples (under out_dir/base_stage) and the final
    images (under out_dir), prints both tables and one line comparing them; returns
    [final, base] report_page.ScoredImages (only [final] for a one-stage cascade)."""
    final = None
    scored = []
    if len(outputs) > 1:
        scored.append(score_shapesbench(
            outputs[0], prompts, os.path.join(out_dir, "base_stage"),
            f"ShapesBench, {base_name} alone", extra=extra,
            note=f"The {base_name}'s own samples, before super-resolution."))
    final = score_shapesbench(outputs[-1], prompts, out_dir, "ShapesBench, final images",
                              extra=extra, note="What the whole cascade draws.")
    if scored:
        print(f"{label} single-object colour+shape: {base_name} "
              f"{colour_shape(scored[0].summary):.1%}, final {colour_shape(final.summary):.1%}",
              flush=True)
    return [final, *scored]


def write_index(workdir: str, title: str, grids: Sequence[str], scored: Sequence[Any],
                lines: Sequence[str] = ()) -> str:
    """WORKDIR/index.html (imagen_jax/evaluate/report_page.py): the page to open."""
    from imagen_jax.evaluate.report_page import ReportPage, write

    captions = [f"{os.path.basename(g)}: the fixed prompts (* = held out of training)"
                for g in grids]
    return write(ReportPage(title, list(zip(captions, grids)), list(scored), list(lines)),
                 os.path.join(workdir, "index.html"))


def run_demo(workdir: str, *, quick: bool = False, base_steps: int | None = None,
             sr_steps: int | None = None, eval_prompts: int = 96, seed: int = 0,
             clip_dir: str | None = None) -> dict:
    from imagen_jax.sample_cascade import load_cascade

    start = time.perf_counter()
    configs = stage_configs(quick, base_steps, sr_steps,
                            data_dir=os.path.join(workdir, "tensorflow_datasets"), seed=seed)
    workdirs = train_stages(workdir, configs)
    cascade = load_cascade([workdirs["base"], workdirs["sr"]])
    grids = sample_grids(cascade, os.path.join(workdir, "samples"), seed)
    scored, clip_line = shapesbench(cascade, os.path.join(workdir, "shapesbench"),
                                    min(eval_prompts, 24) if quick else eval_prompts, seed,
                                    clip_dir)
    elapsed = time.perf_counter() - start
    page = write_index(workdir, "imagen-jax demo: the tiny Imagen cascade", grids, scored, [
        f"Base stage {configs['base'].train.steps} steps, SR stage "
        f"{configs['sr'].train.steps} steps, seed {seed}, {elapsed:.0f} s.", clip_line])
    print(f"[demo] done in {elapsed:.0f} s. Open:\n"
          f"[demo]   {page}  (grids, ShapesBench, every prompt's image with its marks)\n"
          + "".join(f"[demo]   {g}\n" for g in grids)
          + f"[demo]   tensorboard --logdir={workdir}", flush=True)
    return {"grids": grids, "summary": scored[0].summary, "base_summary": scored[1].summary,
            "workdirs": workdirs, "index": page}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from absl import logging

    from imagen_jax.train.validate import ConfigError

    # Progress bars and the demo's own lines say what happens; Orbax's and TFDS's
    # warnings about their own options would bury them (TensorBoard and the workdirs
    # keep the details; errors still print).
    logging.set_verbosity(logging.ERROR)
    f = flags.FLAGS
    try:
        run_demo(f.workdir, quick=f.quick, base_steps=f.base_steps, sr_steps=f.sr_steps,
                 eval_prompts=f.eval_prompts, seed=f.seed, clip_dir=f.clip_dir)
    except (ConfigError, ValueError, FileNotFoundError, FloatingPointError) as e:
        sys.exit(f"error: {e}")


def define_demo_flags(default_workdir: str) -> None:
    """The flags both demos take (each adds its stages' step counts). Defined only
    when run as a program: unclip_jax.demo imports this module."""
    flags.DEFINE_string("workdir", default_workdir, "Where the demo writes everything.")
    flags.DEFINE_bool("quick", False, "A smoke run: a few steps per stage, few prompts.")
    flags.DEFINE_integer("eval_prompts", 96, "ShapesBench prompts (test split).")
    flags.DEFINE_integer("seed", 0, "Seeds every stage's init, noise and data order, and "
                         "the sampling.")


def _define_flags() -> None:
    define_demo_flags("runs/demo")
    flags.DEFINE_integer("base_steps", None, "Base-stage train steps (default: "
                         "configs/imagen_demo.py).")
    flags.DEFINE_integer("sr_steps", None, "SR-stage train steps (default: config).")
    flags.DEFINE_string("clip_dir", os.path.join("runs", "unclip_demo", "clip"),
                        "CLIP for the CLIP score (an unclip.clip run or a Hugging Face "
                        "CLIPModel directory); skipped where there is none.")


def quiet_native_logs() -> str:
    """Loads TensorFlow and starts JAX's backend with the process's stderr pointed at
    /dev/null, and returns what JAX runs on ("1 x cpu"): their C++ start-up lines (the
    oneDNN and CPU-feature notices, "All log messages before absl::InitializeLog() ...",
    libtpu's search for TPU metadata where it is installed without a TPU) are not for
    a demo's reader, and TensorFlow 2.21 prints them whatever TF_CPP_MIN_LOG_LEVEL
    says. A failure still raises, after stderr is back. Call after XLA_FLAGS is set."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        import jax
        import tensorflow

        del tensorflow  # loaded here for its start-up lines only
        devices = jax.devices()
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return f"{len(devices)} x {devices[0].platform}"


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    print(f"[demo] running on {quiet_native_logs()}", flush=True)
    _define_flags()
    app.run(main)
