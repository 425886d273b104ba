"""What a shapes scene is: its vocabulary, the `Scene` type, its geometry and JSON form.

Positions are in normalised [0, 1]^2 image coordinates with y down, so one scene
renders at any resolution.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

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

RELATION_GAP = 0.08  # min gap between bounding squares along a relation's axis
# The offset across a relation's axis may be at most this fraction of the offset
# along it, so "left of" never looks like "above" (and two relations never hold).
RELATION_DOMINANCE = 0.5


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


# ----------------------------------------------------------------------------- geometry


def bounding_box(obj: SceneObject) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the object's bounding square."""
    (x, y), h = obj.center, obj.size / 2
    return x - h, y - h, x + h, y + h


def inside_image(obj: SceneObject, margin: float = 0.0) -> bool:
    """Whether the whole object lies inside the image, `margin` away from the border."""
    left, top, right, bottom = bounding_box(obj)
    return min(left, top) >= margin and max(right, bottom) <= 1.0 - margin


def separated(a: SceneObject, b: SceneObject, gap: float = 0.0) -> bool:
    """Whether the bounding squares are at least `gap` apart along x or y (no overlap)."""
    al, at, ar, ab = bounding_box(a)
    bl, bt, br, bb = bounding_box(b)
    return max(bl - ar, al - br, bt - ab, at - bb) >= gap


def relation_holds(subject: SceneObject, obj: SceneObject, relation: str) -> bool:
    """Whether "subject <relation> obj" is clearly true (y grows downward).

    Clearly: the bounding squares are `RELATION_GAP` apart along the relation's
    axis, and the centres are offset mostly along that axis, so no other relation
    holds at the same time.
    """
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
    sl, st, sr, sb = bounding_box(subject)
    ol, ot, orr, ob = bounding_box(obj)
    dx = obj.center[0] - subject.center[0]
    dy = obj.center[1] - subject.center[1]
    gap, along, across = {
        "to the left of": (ol - sr, dx, dy),
        "to the right of": (sl - orr, -dx, dy),
        "above": (ot - sb, dy, dx),
        "below": (st - ob, -dy, dx),
    }[relation]
    return gap >= RELATION_GAP and abs(across) <= RELATION_DOMINANCE * along


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
