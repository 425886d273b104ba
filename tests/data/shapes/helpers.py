"""Helpers for the shapes tests: sampled scenes, and held-out membership worked out
again here from the scene numbers (not with the module's `is_held_out`), so a bug
there cannot hide itself."""

from __future__ import annotations

import numpy as np

from imagen_jax.data import shapes
from imagen_jax.data.shapes import Scene


def sample_scenes(n: int, seed: int = 0) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [shapes.sample_scene(rng) for _ in range(n)]


def uses_held_out(scene: Scene) -> bool:
    pairs = {(o.color, o.shape) for o in scene.objects}
    if pairs & set(shapes.HELD_OUT_PAIRS):
        return True
    return scene.kind == "relation" and (
        (scene.objects[0].shape, scene.relation, scene.objects[1].shape) in shapes.HELD_OUT_RELATIONS)
