"""ShapesBench columns the sampling benchmarks (sampler_sweep.py, fast_solver.py)
report for a set of images: one row of accuracies per prompt kind, and the median
pixel (the shapes set's background level). A module without flags, so that both
scripts can import it."""

from __future__ import annotations

COLUMNS = (("single", "colour"), ("single", "colour_shape"), ("count", "count"),
           ("relation", "relation"), ("all", "whole"))


def scores(images, prompts: list[str]) -> dict:
    import numpy as np

    from imagen_jax.evaluate.shapesbench import score_images
    from imagen_jax.image_io import to_uint8

    if images.shape[1] < 64:  # the scorer's detector is validated at 64 px
        factor = 64 // images.shape[1]
        images = images.repeat(factor, 1).repeat(factor, 2)
    _, summary = score_images(list(to_uint8(images)), prompts)
    row = {f"{kind}: {cat}": (summary[kind][cat]["accuracy"] if kind in summary else None)
           for kind, cat in COLUMNS}
    row["median pixel"] = float(np.median(images))
    row["n single"] = summary.get("single", {}).get("n", 0)
    return row


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
