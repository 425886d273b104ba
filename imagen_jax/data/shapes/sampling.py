"""Random shapes scenes whose captions are never ambiguous about the picture.

Layouts keep every object inside the image and apart from the others, and a
relation is only used when it is clearly true along its axis and clearly not
the other axis's relation (`relation_holds`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from imagen_jax.data.shapes.captions import caption_text
from imagen_jax.data.shapes.scene import (COLORS, COUNT_WORDS, KINDS, RELATIONS, SHAPES, Scene,
                                          SceneObject, relation_holds, separated)

# Object side/diameter (fraction of the image) by number of objects: fewer
# objects can be bigger, and 4 objects must still fit without overlapping.
SIZE_RANGES: dict[int, tuple[float, float]] = {
    1: (0.22, 0.42),
    2: (0.16, 0.30),
    3: (0.14, 0.26),
    4: (0.13, 0.22),
}
EDGE_MARGIN = 0.03  # min distance from an object's bounding square to the image border
MIN_GAP = 0.04  # min gap between the bounding squares of two objects, along some axis

_COLOR_NAMES = tuple(COLORS)
_MAX_TRIES = 10_000
_DECIMALS = 4  # positions and sizes are rounded so JSON stays short and exact


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return round(float(rng.uniform(low, high)), _DECIMALS)


def _place(rng: np.random.Generator, shape: str, color: str, size: float) -> SceneObject:
    """An object at a uniform position that keeps it `EDGE_MARGIN` inside the image."""
    low, high = EDGE_MARGIN + size / 2, 1.0 - EDGE_MARGIN - size / 2
    # Rounding moves a coordinate by < 1e-4, far less than the margin.
    x, y = _uniform(rng, low, high), _uniform(rng, low, high)
    return SceneObject(shape, color, (x, y), size)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _layout(rng: np.random.Generator, attributes: list[tuple[str, str, float]],
            ok: Callable[[tuple[SceneObject, ...]], bool]) -> tuple[SceneObject, ...]:
    """Positions for (shape, colour, size) objects, apart from each other, passing `ok`."""
    for _ in range(_MAX_TRIES):
        objects: list[SceneObject] = []
        for shape, color, size in attributes:
            candidate = _place(rng, shape, color, size)
            if all(separated(candidate, other, MIN_GAP) for other in objects):
                objects.append(candidate)
        if len(objects) == len(attributes) and ok(tuple(objects)):
            return tuple(objects)
    raise RuntimeError(f"no layout found for {attributes} in {_MAX_TRIES} tries")


def _sample_single(rng: np.random.Generator) -> Scene:
    size = _uniform(rng, *SIZE_RANGES[1])
    objects = _layout(rng, [(_pick(rng, SHAPES), _pick(rng, _COLOR_NAMES), size)], lambda _: True)
    return Scene(objects, "single", None, caption_text("single", objects, None))


def _sample_count(rng: np.random.Generator) -> Scene:
    count = int(rng.integers(min(COUNT_WORDS), max(COUNT_WORDS) + 1))
    shape, color = _pick(rng, SHAPES), _pick(rng, _COLOR_NAMES)
    size = _uniform(rng, *SIZE_RANGES[count])
    objects = _layout(rng, [(shape, color, size)] * count, lambda _: True)
    return Scene(objects, "count", None, caption_text("count", objects, None))


def _sample_relation(rng: np.random.Generator) -> Scene:
    relation = _pick(rng, RELATIONS)
    # Two different descriptions, so the caption says which object is which.
    while True:
        first = (_pick(rng, SHAPES), _pick(rng, _COLOR_NAMES))
        second = (_pick(rng, SHAPES), _pick(rng, _COLOR_NAMES))
        if first != second:
            break
    attributes = [(*first, _uniform(rng, *SIZE_RANGES[2])), (*second, _uniform(rng, *SIZE_RANGES[2]))]
    objects = _layout(rng, attributes, lambda objs: relation_holds(objs[0], objs[1], relation))
    return Scene(objects, "relation", relation, caption_text("relation", objects, relation))


_SAMPLERS: dict[str, Callable[[np.random.Generator], Scene]] = {
    "single": _sample_single,
    "count": _sample_count,
    "relation": _sample_relation,
}


def sample_scene(rng: np.random.Generator, kind: str | None = None,
                 allowed: Callable[[Scene], bool] | None = None) -> Scene:
    """A random scene of `kind` (drawn uniformly once if None), resampled until `allowed`.

    The kind is fixed before resampling, so a filter that rejects one kind more
    often than another does not change the mix of kinds.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    if kind is None:
        kind = _pick(rng, KINDS)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
    for _ in range(_MAX_TRIES):
        scene = _SAMPLERS[kind](rng)
        if allowed is None or allowed(scene):
            return scene
    raise ValueError(f"allowed rejected {_MAX_TRIES} scenes of kind {kind!r}")
