r"""DDIM against DPM-Solver++(2M) at few steps, and bfloat16 sampling, on a trained demo
cascade: ShapesBench of the base stage's own samples and of the final images.

    python -m imagen_jax.demo --workdir=runs/demo
    python benchmarks/fast_solver.py --demo_dir=runs/demo --out=docs/fast_solver.md

Every row samples the same held-out test prompts with the same seed; the sampler and
step count apply to both stages (guidance, thresholding and the rest stay each
stage's config). The bfloat16 rows cast both stages' parameters and activations
(`--dtype=bfloat16` of imagen_jax.sample) and are compared pixel by pixel with the
float32 images of the same setting. Seconds are the whole row, compilation included;
"warm s / batch" times one more batch of 48 prompts after it.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shapes_scores import COLUMNS, pct, scores  # noqa: E402  (benchmarks/ on the path)

_DEMO_DIR = flags.DEFINE_string("demo_dir", "runs/demo", "imagen_jax.demo's workdir.")
_SR = flags.DEFINE_string("sr", "sr", "The SR stage's workdir under --demo_dir.")
_OUT = flags.DEFINE_string("out", "docs/fast_solver.md", "Markdown (JSON next to it).")
_PROMPTS = flags.DEFINE_integer("prompts", 256, "Held-out test prompts.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (the same for every row).")

SOLVER_ROWS = tuple((sampler, steps) for steps in (10, 20, 50)
                    for sampler in ("ddim", "dpmpp_2m"))
DTYPE_ROWS = (("dpmpp_2m", 20),)  # float32 from SOLVER_ROWS against bfloat16
BATCH = 48


def _cascade(demo_dir: str, sr: str, **overrides):
    from imagen_jax.sample_cascade import Overrides, load_cascade
    return load_cascade([os.path.join(demo_dir, "base"), os.path.join(demo_dir, sr)],
                        Overrides(**overrides))


def _run(cascade, prompts: list[str], seed: int) -> tuple[list, float, float]:
    """(each stage's images, seconds incl. compilation, seconds of one warm batch)."""
    import jax

    from imagen_jax.sample_cascade import generate

    start = time.perf_counter()
    outputs = generate(cascade, prompts, seed=seed, batch_size=BATCH)
    total = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(cascade(prompts[:BATCH], jax.random.PRNGKey(seed + 1)))
    return outputs, total, time.perf_counter() - start


def measure(demo_dir: str, sr: str, prompts: list[str], seed: int) -> tuple[list, list]:
    import numpy as np

    rows, float32 = [], {}
    for sampler, steps in SOLVER_ROWS:
        outputs, seconds, warm = _run(_cascade(demo_dir, sr, sampler=sampler, steps=steps),
                                      prompts, seed)
        float32[(sampler, steps)] = outputs[-1]
        row = {"sampler": sampler, "steps": steps, "base": scores(outputs[0], prompts),
               "final": scores(outputs[-1], prompts), "seconds": round(seconds, 1),
               "warm_seconds_per_batch": round(warm, 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    dtype_rows = []
    for sampler, steps in DTYPE_ROWS:
        outputs, seconds, warm = _run(_cascade(demo_dir, sr, sampler=sampler, steps=steps,
                                               dtype="bfloat16"), prompts, seed)
        diff = np.abs(np.asarray(outputs[-1]) - np.asarray(float32[(sampler, steps)]))
        ref = next(r for r in rows if (r["sampler"], r["steps"]) == (sampler, steps))
        row = {"sampler": sampler, "steps": steps, "dtype": "bfloat16",
               "final": scores(outputs[-1], prompts), "seconds": round(seconds, 1),
               "warm_seconds_per_batch": round(warm, 2),
               "float32_warm_seconds_per_batch": ref["warm_seconds_per_batch"],
               "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
               "pixels_off_by_more_than_0.1": float((diff > 0.1).mean())}
        print(json.dumps(row), flush=True)
        dtype_rows.append(row)
    return rows, dtype_rows


def markdown(rows: list[dict], dtype_rows: list[dict], header: str) -> str:
    cols = [f"{kind}: {cat}" for kind, cat in COLUMNS]
    lines = [header, "", "| sampler | steps | images | " + " | ".join(cols)
             + " | s (incl. compile) | warm s / batch of 48 |",
             "| --- | ---: | --- | " + " | ".join("---:" for _ in cols) + " | ---: | ---: |"]
    for row in rows:
        for which in ("base", "final"):
            r = row[which]
            first = which == "base"
            lines.append(f"| {row['sampler'] if first else ''} | "
                         f"{row['steps'] if first else ''} | "
                         f"{'base stage (32 px)' if first else 'final (64 px)'} | "
                         + " | ".join(pct(r[c]) for c in cols)
                         + (f" | {row['seconds']} | {row['warm_seconds_per_batch']} |"
                            if first else " | | |"))
    lines += ["", "bfloat16 sampling against float32 (final images in [-1, 1]):", "",
              "| sampler | steps | max abs diff | mean abs diff | pixels off by > 0.1 | "
              "single: colour_shape | warm s / batch, bf16 vs f32 |",
              "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in dtype_rows:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['max_abs_diff']:.3f} | "
                     f"{r['mean_abs_diff']:.4f} | {100 * r['pixels_off_by_more_than_0.1']:.2f}% | "
                     f"{pct(r['final']['single: colour_shape'])} | "
                     f"{r['warm_seconds_per_batch']} vs {r['float32_warm_seconds_per_batch']} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    import jax

    from imagen_jax.evaluate.shapesbench import shapesbench_prompts

    prompts = shapesbench_prompts(_PROMPTS.value, split="test")
    start = time.perf_counter()
    rows, dtype_rows = measure(_DEMO_DIR.value, _SR.value, prompts, _SEED.value)
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs; python "
               f"{platform.python_version()}, jax {jax.__version__} "
               f"({jax.devices()[0].platform})")
    n_single = rows[0]["final"]["n single"]
    header = (
        "# DDIM vs DPM-Solver++(2M), and bfloat16 sampling (benchmarks/fast_solver.py)\n\n"
        f"Measured by `python benchmarks/fast_solver.py --demo_dir={_DEMO_DIR.value} "
        f"--sr={_SR.value}` on {machine}; {len(prompts)} held-out test prompts ({n_single} "
        f"single-object), seed {_SEED.value}, {time.perf_counter() - start:.0f} s. The "
        "sampler and steps apply to both stages. Base-stage images are scored enlarged "
        "2x (nearest).")
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, "w", encoding="utf-8") as f:
        f.write(markdown(rows, dtype_rows, header))
    with open(os.path.splitext(_OUT.value)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"machine": machine, "demo_dir": _DEMO_DIR.value, "sr": _SR.value,
                   "prompts": len(prompts), "seed": _SEED.value, "rows": rows,
                   "dtype_rows": dtype_rows}, f, indent=1)
    print(markdown(rows, dtype_rows, header))


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()
    app.run(main)
