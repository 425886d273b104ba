"""Example i of a split: its scene (train and test apart by composition) and its dict.

Every example is sampled from a seed derived from (base seed, split, index), so
any example can be regenerated on its own and generation order does not matter.
Some compositions are held out of the train split entirely (`HELD_OUT_PAIRS`,
`HELD_OUT_RELATIONS`); the test split contains only scenes that use them, which
measures attribute binding and compositional generalisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imagen_jax.data.shapes.rendering import render
from imagen_jax.data.shapes.sampling import sample_scene
from imagen_jax.data.shapes.scene import Scene, scene_to_json

SPLITS = ("train", "test")

# One held-out colour per shape, each colour different, so the train split still
# shows every colour and every shape, just never in these combinations.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("blue", "circle"),
    ("yellow", "square"),
)

# (subject shape, relation, object shape). Each relation's converse phrasing of
# the same layout stays in train (e.g. "square to the right of circle"), so what
# is held out is the composition in words, not the geometry.
HELD_OUT_RELATIONS: tuple[tuple[str, str, str], ...] = (
    ("circle", "to the left of", "square"),
    ("triangle", "above", "circle"),
    ("square", "below", "triangle"),
)


def is_held_out(scene: Scene) -> bool:
    """Whether the scene uses a held-out (colour, shape) pair or relation triple."""
    if any((o.color, o.shape) in HELD_OUT_PAIRS for o in scene.objects):
        return True
    if scene.kind != "relation":
        return False
    triple = (scene.objects[0].shape, scene.relation, scene.objects[1].shape)
    return triple in HELD_OUT_RELATIONS


def example_rng(split: str, index: int, seed: int = 0) -> np.random.Generator:
    """The generator for example `index` of `split`: independent of every other example."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    for name, value in (("index", index), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return np.random.default_rng([int(seed), SPLITS.index(split), int(index)])


def example_scene(split: str, index: int, seed: int = 0) -> Scene:
    """The scene of example `index` of `split`; train never, test always held out."""
    rng = example_rng(split, index, seed)
    # The kind is drawn first (sample_scene with kind None), then the scene is
    # resampled until it is on the right side of the held-out line.
    if split == "train":
        return sample_scene(rng, None, lambda scene: not is_held_out(scene))
    return sample_scene(rng, None, is_held_out)


def generate_example(split: str, index: int, resolution: int, seed: int = 0) -> dict[str, Any]:
    """The example dict the `shapes_captions` TFDS builder yields for (split, index, seed).

    The scene does not depend on `resolution`, so the same (split, index, seed)
    at two resolutions is a consistent low/high-resolution pair.
    """
    scene = example_scene(split, index, seed)
    return {
        "image": render(scene, resolution),
        "caption": scene.caption,
        "id": f"{split}-{index:06d}",
        "index": int(index),
        "scene": scene_to_json(scene),
        "kind": scene.kind,
        "objects": {
            "shape": [o.shape for o in scene.objects],
            "color": [o.color for o in scene.objects],
            "center": np.asarray([o.center for o in scene.objects], np.float32).reshape(-1, 2),
            "size": np.asarray([o.size for o in scene.objects], np.float32),
        },
    }
