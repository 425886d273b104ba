r"""Sampling settings of a trained demo cascade: ShapesBench of the base stage's own
samples and of the final images, and where the background ends up.

    python -m imagen_jax.demo --workdir=runs/demo
    python benchmarks/sampler_sweep.py --demo_dir=runs/demo --out=docs/sampler_sweep.md

Each row samples the same held-out test prompts with the same seed under one setting
(thresholding, guidance, steps, the SR stage's noise-augmentation level); the rest is
each stage's config. "median pixel" is the median channel value of the images in
[-1, 1]: the shapes set's background is 240/255 = 0.88 and covers most of every
image, so the median is the background's level. It shows what dynamic thresholding
does here: x0 / s with s the 99.5th percentile of |x0|, which a guided prediction's
overshooting object pixels set above 1, darkens the whole image, background included.
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
_OUT = flags.DEFINE_string("out", "docs/sampler_sweep.md", "Markdown (JSON next to it).")
_PROMPTS = flags.DEFINE_integer("prompts", 256, "Held-out test prompts (the test split "
                                "has 256).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (the same for every row).")

# (name, base stage overrides, SR stage overrides): the imagen_demo defaults before and
# after this sweep, then one change at a time from the new default.
SETTINGS = (
    ("dynamic p99.5, base w 5, SR w 3 (the earlier demo)",
     dict(threshold="dynamic", guidance=5.0), dict(threshold="dynamic", guidance=3.0)),
    ("dynamic base w 5, static SR", dict(threshold="dynamic", guidance=5.0),
     dict(threshold="static", guidance=3.0)),
    ("static, base w 5", dict(threshold="static", guidance=5.0),
     dict(threshold="static", guidance=3.0)),
    ("static, base w 8 (the demo now)", dict(threshold="static", guidance=8.0),
     dict(threshold="static", guidance=3.0)),
    ("static, base w 12", dict(threshold="static", guidance=12.0),
     dict(threshold="static", guidance=3.0)),
    ("static, base w 8, 50 base steps", dict(threshold="static", guidance=8.0, steps=50),
     dict(threshold="static", guidance=3.0)),
    ("static, base w 8, SR aug level 0.1", dict(threshold="static", guidance=8.0),
     dict(threshold="static", guidance=3.0, aug_level=0.1)),
    ("static, base w 8, SR w 1", dict(threshold="static", guidance=8.0),
     dict(threshold="static", guidance=1.0)),
)
def measure(demo_dir: str, prompts: list[str], seed: int) -> list[dict]:
    from imagen_jax.cascade import Cascade
    from imagen_jax.sample_cascade import Overrides, generate, load_stage

    rows = []
    for name, base_over, sr_over in SETTINGS:
        start = time.perf_counter()
        base = load_stage(os.path.join(demo_dir, "base"), Overrides(**base_over))
        sr = load_stage(os.path.join(demo_dir, "sr"), Overrides(**sr_over))
        base_images, final = generate(Cascade(base.text_encoder, [base, sr]), prompts,
                                      seed=seed, batch_size=min(48, len(prompts)))
        row = {"setting": name, "base": scores(base_images, prompts),
               "final": scores(final, prompts),
               "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def markdown(rows: list[dict], header: str) -> str:
    cols = [f"{kind}: {cat}" for kind, cat in COLUMNS]
    lines = [header, "", "| setting | images | " + " | ".join(cols) + " | median pixel |",
             "| --- | --- | " + " | ".join("---:" for _ in cols) + " | ---: |"]
    for row in rows:
        for which in ("base", "final"):
            r = row[which]
            label = "base stage (32 px)" if which == "base" else "final (64 px)"
            lines.append(f"| {row['setting'] if which == 'base' else ''} | {label} | "
                         + " | ".join(pct(r[c]) for c in cols)
                         + f" | {r['median pixel']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    import jax

    from imagen_jax.evaluate.shapesbench import shapesbench_prompts

    prompts = shapesbench_prompts(_PROMPTS.value, split="test")
    start = time.perf_counter()
    rows = measure(_DEMO_DIR.value, prompts, _SEED.value)
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs; python "
               f"{platform.python_version()}, jax {jax.__version__} "
               f"({jax.devices()[0].platform})")
    n_single = rows[0]["final"]["n single"]
    header = (
        "# Sampling settings of the demo cascade (benchmarks/sampler_sweep.py)\n\n"
        f"Measured by `python benchmarks/sampler_sweep.py --demo_dir={_DEMO_DIR.value}` on "
        f"{machine}; {len(prompts)} held-out test prompts ({n_single} single-object), "
        f"seed {_SEED.value}, {time.perf_counter() - start:.0f} s. Base-stage images are "
        "scored enlarged 2x (nearest). The shapes set's background is 0.88 in [-1, 1].")
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, "w", encoding="utf-8") as f:
        f.write(markdown(rows, header))
    with open(os.path.splitext(_OUT.value)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"machine": machine, "demo_dir": _DEMO_DIR.value, "prompts": len(prompts),
                   "seed": _SEED.value, "rows": rows}, f, indent=1)
    print(markdown(rows, header))


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()
    app.run(main)
