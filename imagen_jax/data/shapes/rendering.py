"""Shapes scenes as anti-aliased pixels, at any resolution."""

from __future__ import annotations

import math

import numpy as np

from imagen_jax.data.shapes.scene import BACKGROUND, COLORS, Scene, SceneObject, bounding_box

SUPERSAMPLE = 4  # sub-samples per pixel side for anti-aliasing (box filter)


def _inside(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, half: float) -> np.ndarray:
    """Boolean mask of sample points (x row, y column) inside the shape."""
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    # Triangle, apex up: apex at the top middle, base along the bottom edge of the
    # bounding square, so its half-width grows from 0 to `half` over its height.
    return (dy <= half) & (np.abs(dx) <= (dy + half) / 2)


def _coverage(obj: SceneObject, resolution: int) -> tuple[slice, slice, np.ndarray]:
    """Fraction of each pixel the object covers, over its pixel bounding box only."""
    left, top, right, bottom = bounding_box(obj)
    x0, y0 = (max(0, math.floor(v * resolution)) for v in (left, top))
    x1, y1 = (min(resolution, math.ceil(v * resolution)) for v in (right, bottom))
    s = SUPERSAMPLE
    xs = (np.arange(x0 * s, x1 * s, dtype=np.float32) + 0.5) / (resolution * s)
    ys = (np.arange(y0 * s, y1 * s, dtype=np.float32) + 0.5) / (resolution * s)
    mask = _inside(obj.shape, xs[None, :], ys[:, None], *obj.center, obj.size / 2)
    coverage = mask.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3), dtype=np.float32)
    return slice(y0, y1), slice(x0, x1), coverage


def render(scene: Scene, resolution: int) -> np.ndarray:
    """The scene as uint8 [resolution, resolution, 3], anti-aliased by supersampling.

    Each pixel averages SUPERSAMPLE^2 point samples (a box filter), so rendering
    at 4R and area-downsampling by 4 is close to rendering at R.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    resolution = int(resolution)
    canvas = np.empty((resolution, resolution, 3), np.float32)
    canvas[...] = BACKGROUND
    for obj in scene.objects:
        rows, cols, alpha = _coverage(obj, resolution)
        alpha = alpha[..., None]
        color = np.asarray(COLORS[obj.color], np.float32)
        canvas[rows, cols] = canvas[rows, cols] * (1.0 - alpha) + color * alpha
    return np.round(canvas).astype(np.uint8)
