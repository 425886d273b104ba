r"""ShapesBench accuracy of the base stage against training time, from a run's checkpoints.

    python -m imagen_jax.demo --workdir=runs/demo --base_steps=5600   # keeps every checkpoint
    python benchmarks/learning_curve.py --workdir=runs/demo/base --out=docs/learning_curve.md

For every saved checkpoint of the base stage: sample the test split's held-out
prompts (EMA weights, the stage's sampling config), enlarge the 32 px samples 2x
(nearest neighbour, so no pixel changes) for the scorer, and score them. Training
minutes come from the run's TensorBoard events (wall time at each logged step,
compilation included, measured from the first logged step back to step 0 at the
same rate). Prints and writes a Markdown table and JSON, with the machine.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo/base", "The base stage's workdir.")
_OUT = flags.DEFINE_string("out", "docs/learning_curve.md", "Markdown (JSON next to it).")
_PROMPTS = flags.DEFINE_integer("prompts", 96, "Held-out test prompts.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_EVERY = flags.DEFINE_integer("every", 0, "Only checkpoints whose step is a multiple of this "
                              "(and the last); 0 = all.")


def minutes_by_step(workdir: str) -> dict[int, float]:
    """Training minutes at each logged step, from the loss scalars' wall times.

    Each events file is one (possibly resumed) run segment; segments are chained, so
    the time between a run stopping and its resumption does not count. A segment's
    start is extrapolated back from its first logged step at its own step rate.
    """
    from tensorboard.backend.event_processing import event_accumulator

    minutes: dict[int, float] = {}
    done_steps, done_minutes = 0, 0.0
    for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*")),
                       key=os.path.getmtime):
        acc = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
        acc.Reload()
        if "loss" not in acc.Tags().get("tensors", []):
            continue
        times = {e.step: e.wall_time for e in acc.Tensors("loss")}
        steps = sorted(times)
        if len(steps) < 2:
            continue
        rate = (times[steps[-1]] - times[steps[0]]) / (steps[-1] - steps[0])
        start = times[steps[0]] - (steps[0] - done_steps) * rate
        for step in steps:
            minutes[step] = done_minutes + (times[step] - start) / 60
        done_steps, done_minutes = steps[-1], minutes[steps[-1]]
    return minutes


def main(argv):
    del argv
    import jax
    import numpy as np
    from tqdm import tqdm

    from imagen_jax.cascade import Cascade
    from imagen_jax.evaluate.shapesbench import score_images, shapesbench_prompts
    from imagen_jax.image_io import to_uint8
    from imagen_jax.sample_cascade import Overrides, generate, load_stage
    from imagen_jax.train.checkpoint import checkpoint_steps

    workdir = _WORKDIR.value
    prompts = shapesbench_prompts(_PROMPTS.value)
    minutes = minutes_by_step(workdir)
    rows = []
    steps = checkpoint_steps(workdir)
    if _EVERY.value:
        steps = [s for s in steps if s % _EVERY.value == 0 or s == steps[-1]]
    for step in tqdm(steps, desc="checkpoints"):
        stage = load_stage(workdir, Overrides(), step=step)
        images = generate(Cascade(stage.text_encoder, [stage]), prompts, seed=_SEED.value,
                          batch_size=min(48, len(prompts)))[-1]
        big = [np.asarray(x).repeat(2, 0).repeat(2, 1) for x in to_uint8(images)]
        _, s = score_images(big, prompts)
        near = [m for st, m in minutes.items() if st <= step]
        acc = lambda kind, cat: s[kind][cat]["accuracy"] if kind in s else float("nan")
        rows.append({"step": step, "minutes": max(near) if near else None,
                     "single_colour": acc("single", "colour"),
                     "single_colour_shape": acc("single", "colour_shape"),
                     "count": acc("all", "count"), "count_prompts": acc("count", "count"),
                     "relation_objects": acc("relation", "colour_shape"),
                     "relation": acc("relation", "relation"),
                     "whole": acc("all", "whole"), "summary": s})
    env = (f"{platform.machine()}, {os.cpu_count()} CPUs; python {platform.python_version()}, "
           f"jax {jax.__version__} ({jax.devices()[0].platform}); {len(prompts)} held-out "
           f"test prompts, seed {_SEED.value}")
    lines = [f"# Base-stage learning curve ({workdir})", "",
             f"Measured by `python benchmarks/learning_curve.py --workdir={workdir}` on {env}.",
             "Minutes: training wall time (compilation included) from the run's TensorBoard "
             "events.", "",
             "Relation prompts' relation needs both objects drawn right first (the column "
             "before it).", "",
             "| step | train minutes | single: colour | single: colour+shape | "
             "count prompts: count | count (all prompts) | relation prompts: both objects "
             "right | relation | whole prompt |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        m = f"{r['minutes']:.1f}" if r["minutes"] is not None else "?"
        lines.append(f"| {r['step']} | {m} | {r['single_colour']:.1%} | "
                     f"{r['single_colour_shape']:.1%} | {r['count_prompts']:.1%} | "
                     f"{r['count']:.1%} | {r['relation_objects']:.1%} | {r['relation']:.1%} | "
                     f"{r['whole']:.1%} |")
    report = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, "w", encoding="utf-8") as f:
        f.write(report)
    with open(os.path.splitext(_OUT.value)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"environment": env, "rows": rows}, f, indent=1)
    print(report + f"wrote {_OUT.value}")


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    app.run(main)
