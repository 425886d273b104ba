"""Procedural coloured-shape scenes with exact captions: a dataset that needs no download.

Every example is a `Scene` (shapes, colours, positions in normalised [0, 1]^2
coordinates, y down) sampled from a seed derived from (base seed, split, index),
so any example can be regenerated on its own and generation order does not
matter. The same scene renders at any resolution, which gives a text-to-image
cascade consistent low/high-resolution pairs: example i of the 64 px and of the
256 px data are the same scene.

Captions come in three kinds, each checkable against the scene:
  single    "a red circle", "an orange square"
  count     "three blue squares"            (2-4 identical objects)
  relation  "a green triangle to the left of a yellow circle"

Layouts keep every object inside the image and apart from the others, and a
relation is only used when it is clearly true along its axis and clearly not
the other axis's relation, so a caption is never ambiguous about the picture.

Some compositions are held out of the train split entirely (`HELD_OUT_PAIRS`,
`HELD_OUT_RELATIONS`); the test split contains only scenes that use them, which
measures attribute binding and compositional generalisation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Callable

import numpy as np

SHAPES = ("circle", "square", "triangle")

# Far apart from each other (pairwise RGB distance >= ~95) and from the
# background, so a colour is recognisable even at 32 px and in a centre pixel.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 35),
    "green": (30, 150, 50),
    "blue": (30, 70, 215),
    "yellow": (245, 215, 20),
    "purple": (135, 40, 175),
    "orange": (245, 125, 15),
}

BACKGROUND: tuple[int, int, int] = (240, 240, 240)

RELATIONS = ("to the left of", "to the right of", "above", "below")

KINDS = ("single", "count", "relation")

# Count captions use 2-4 identical objects ("a" covers one).
COUNT_WORDS: dict[int, str] = {2: "two", 3: "three", 4: "four"}

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
RELATION_GAP = 0.08  # min gap between bounding squares along a relation's axis
# The offset across a relation's axis may be at most this fraction of the offset
# along it, so "left of" never looks like "above" (and two relations never hold).
RELATION_DOMINANCE = 0.5
SUPERSAMPLE = 4  # sub-samples per pixel side for anti-aliasing (box filter)

_COLOR_NAMES = tuple(COLORS)
_MAX_TRIES = 10_000
_DECIMALS = 4  # positions and sizes are rounded so JSON stays short and exact


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One shape; it fits exactly in the axis-aligned square of side `size` at `center`."""

    shape: str
    color: str
    center: tuple[float, float]  # (x, y) in [0, 1], y down
    size: float  # side / diameter as a fraction of the image

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.color not in COLORS:
            raise ValueError(f"color must be one of {tuple(COLORS)}, got {self.color!r}")
        if len(self.center) != 2 or not all(0.0 <= float(c) <= 1.0 for c in self.center):
            raise ValueError(f"center must be (x, y) in [0, 1], got {self.center!r}")
        if not 0.0 < float(self.size) <= 1.0:
            raise ValueError(f"size must be in (0, 1], got {self.size!r}")


@dataclasses.dataclass(frozen=True)
class Scene:
    """A caption-able arrangement of objects; `relation` links objects[0] to objects[1]."""

    objects: tuple[SceneObject, ...]
    kind: str  # 'single' | 'count' | 'relation'
    relation: str | None  # for kind 'relation': objects[0] (subject) relation objects[1]
    caption: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        n = len(self.objects)
        expected = {"single": n == 1, "count": n in COUNT_WORDS, "relation": n == 2}
        if not expected[self.kind]:
            raise ValueError(f"objects: {n} objects do not fit kind {self.kind!r}")
        if (self.kind == "relation") != (self.relation is not None):
            raise ValueError(f"relation must be set exactly for kind 'relation', got {self.relation!r}")
        if self.relation is not None and self.relation not in RELATIONS:
            raise ValueError(f"relation must be one of {RELATIONS}, got {self.relation!r}")
        if self.kind == "count" and len({(o.shape, o.color) for o in self.objects}) != 1:
            raise ValueError("objects: a 'count' scene needs identical shape and colour")


# ----------------------------------------------------------------------------- captions


def _describe(color: str, shape: str) -> str:
    article = "an" if color[0] in "aeiou" else "a"  # "an orange square"
    return f"{article} {color} {shape}"


def _caption(kind: str, objects: tuple[SceneObject, ...], relation: str | None) -> str:
    first = objects[0]
    if kind == "single":
        return _describe(first.color, first.shape)
    if kind == "count":
        return f"{COUNT_WORDS[len(objects)]} {first.color} {first.shape}s"
    second = objects[1]
    return f"{_describe(first.color, first.shape)} {relation} {_describe(second.color, second.shape)}"


def caption_for(scene: Scene) -> str:
    """The caption a scene's content implies (what `Scene.caption` holds for sampled scenes)."""
    return _caption(scene.kind, scene.objects, scene.relation)


_WORD = r"(\w+)"
_OBJECT = rf"an? {_WORD} {_WORD}"
_COUNT_RE = re.compile(rf"^{_WORD} {_WORD} {_WORD}s$")
_RELATION_RE = re.compile(rf"^{_OBJECT} ({'|'.join(RELATIONS)}) {_OBJECT}$")
_SINGLE_RE = re.compile(rf"^{_OBJECT}$")


def parse_caption(caption: str) -> tuple[str, tuple[tuple[str, str], ...], str | None]:
    """Caption -> (kind, ((colour, shape) per object, in scene order), relation).

    The inverse of `caption_for` up to positions and sizes; evaluation uses it to
    score what a caption asked for without keeping the scene around.
    """
    if match := _RELATION_RE.match(caption):
        c1, s1, relation, c2, s2 = match.groups()
        parsed = ("relation", ((c1, s1), (c2, s2)), relation)
    elif match := _SINGLE_RE.match(caption):
        parsed = ("single", (match.groups(),), None)
    elif (match := _COUNT_RE.match(caption)) and match.group(1) in COUNT_WORDS.values():
        word, color, shape = match.groups()
        count = {w: n for n, w in COUNT_WORDS.items()}[word]
        parsed = ("count", ((color, shape),) * count, None)
    else:
        raise ValueError(f"caption is not a shapes caption: {caption!r}")
    if not all(color in COLORS and shape in SHAPES for color, shape in parsed[1]):
        raise ValueError(f"caption names an unknown colour or shape: {caption!r}")
    return parsed


# ----------------------------------------------------------------------------- geometry


def _box(obj: SceneObject) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the object's bounding square."""
    (x, y), h = obj.center, obj.size / 2
    return x - h, y - h, x + h, y + h


def inside_image(obj: SceneObject, margin: float = 0.0) -> bool:
    """Whether the whole object lies inside the image, `margin` away from the border."""
    left, top, right, bottom = _box(obj)
    return min(left, top) >= margin and max(right, bottom) <= 1.0 - margin


def separated(a: SceneObject, b: SceneObject, gap: float = 0.0) -> bool:
    """Whether the bounding squares are at least `gap` apart along x or y (no overlap)."""
    al, at, ar, ab = _box(a)
    bl, bt, br, bb = _box(b)
    return max(bl - ar, al - br, bt - ab, at - bb) >= gap


def relation_holds(subject: SceneObject, obj: SceneObject, relation: str) -> bool:
    """Whether "subject <relation> obj" is clearly true (y grows downward).

    Clearly: the bounding squares are `RELATION_GAP` apart along the relation's
    axis, and the centres are offset mostly along that axis, so no other relation
    holds at the same time.
    """
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
    sl, st, sr, sb = _box(subject)
    ol, ot, orr, ob = _box(obj)
    dx = obj.center[0] - subject.center[0]
    dy = obj.center[1] - subject.center[1]
    gap, along, across = {
        "to the left of": (ol - sr, dx, dy),
        "to the right of": (sl - orr, -dx, dy),
        "above": (ot - sb, dy, dx),
        "below": (st - ob, -dy, dx),
    }[relation]
    return gap >= RELATION_GAP and abs(across) <= RELATION_DOMINANCE * along


def is_held_out(scene: Scene) -> bool:
    """Whether the scene uses a held-out (colour, shape) pair or relation triple."""
    if any((o.color, o.shape) in HELD_OUT_PAIRS for o in scene.objects):
        return True
    if scene.kind != "relation":
        return False
    triple = (scene.objects[0].shape, scene.relation, scene.objects[1].shape)
    return triple in HELD_OUT_RELATIONS


# ----------------------------------------------------------------------------- sampling


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
    return Scene(objects, "single", None, _caption("single", objects, None))


def _sample_count(rng: np.random.Generator) -> Scene:
    count = int(rng.integers(min(COUNT_WORDS), max(COUNT_WORDS) + 1))
    shape, color = _pick(rng, SHAPES), _pick(rng, _COLOR_NAMES)
    size = _uniform(rng, *SIZE_RANGES[count])
    objects = _layout(rng, [(shape, color, size)] * count, lambda _: True)
    return Scene(objects, "count", None, _caption("count", objects, None))


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
    return Scene(objects, "relation", relation, _caption("relation", objects, relation))


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


# ----------------------------------------------------------------------------- rendering


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
    left, top, right, bottom = _box(obj)
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


# ----------------------------------------------------------------------------- serialisation


def scene_to_json(scene: Scene) -> str:
    """Compact, key-sorted JSON: equal scenes give equal strings."""
    payload = {
        "kind": scene.kind,
        "relation": scene.relation,
        "caption": scene.caption,
        "objects": [
            {"shape": o.shape, "color": o.color, "center": list(o.center), "size": o.size}
            for o in scene.objects
        ],
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _object_from_dict(entry: Any) -> SceneObject:
    x, y = entry["center"]
    return SceneObject(str(entry["shape"]), str(entry["color"]), (float(x), float(y)), float(entry["size"]))


def scene_from_json(s: str) -> Scene:
    """Inverse of `scene_to_json`."""
    try:
        payload = json.loads(s)
        objects = tuple(_object_from_dict(entry) for entry in payload["objects"])
        return Scene(objects, payload["kind"], payload["relation"], payload["caption"])
    except (TypeError, KeyError) as error:
        raise ValueError(f"s is not a scene JSON string: {error!r}") from error


# ----------------------------------------------------------------------------- examples


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
    kind = _pick(rng, KINDS)
    if split == "train":
        return sample_scene(rng, kind, lambda scene: not is_held_out(scene))
    return sample_scene(rng, kind, is_held_out)


def generate_example(split: str, index: int, resolution: int, seed: int = 0) -> dict:
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
