"""shapes.sampling: every kind is sampled, layouts fit, relations are true.

Geometry is checked here with its own arithmetic on the scene numbers, not with
the module's helpers, so a bug there cannot hide itself.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from imagen_jax.data import shapes
from imagen_jax.data.shapes import SceneObject


def _box(obj: SceneObject) -> tuple[float, float, float, float]:
    (x, y), h = obj.center, obj.size / 2
    return x - h, y - h, x + h, y + h


def test_all_kinds_and_relations_are_sampled(scenes):
    assert {s.kind for s in scenes} == set(shapes.KINDS)
    assert {s.relation for s in scenes if s.kind == "relation"} == set(shapes.RELATIONS)
    assert {len(s.objects) for s in scenes if s.kind == "count"} == {2, 3, 4}


def test_relations_are_geometrically_true_and_unambiguous(scenes):
    margin = 0.05  # between bounding squares, along the relation's axis
    for scene in (s for s in scenes if s.kind == "relation"):
        subject, obj = scene.objects
        sl, st, sr, sb = _box(subject)
        ol, ot, orr, ob = _box(obj)
        dx, dy = obj.center[0] - subject.center[0], obj.center[1] - subject.center[1]
        if scene.relation == "to the left of":
            assert sr + margin <= ol and abs(dy) < dx
        elif scene.relation == "to the right of":
            assert orr + margin <= sl and abs(dy) < -dx
        elif scene.relation == "above":  # y grows downward
            assert sb + margin <= ot and abs(dx) < dy
        else:
            assert ob + margin <= st and abs(dx) < -dy


def test_objects_are_inside_and_do_not_overlap(scenes):
    for scene in scenes:
        for obj in scene.objects:
            left, top, right, bottom = _box(obj)
            assert 0.0 < left and 0.0 < top and right < 1.0 and bottom < 1.0, scene
        for a, b in itertools.combinations(scene.objects, 2):
            al, at, ar, ab = _box(a)
            bl, bt, br, bb = _box(b)
            assert max(bl - ar, al - br, bt - ab, at - bb) > 0.0, scene


def test_sample_scene_kinds_and_filters():
    rng = np.random.default_rng(0)
    for kind in shapes.KINDS:
        assert shapes.sample_scene(rng, kind).kind == kind
    red = shapes.sample_scene(rng, "single", allowed=lambda s: s.objects[0].color == "red")
    assert red.objects[0].color == "red"
    with pytest.raises(ValueError, match="kind"):
        shapes.sample_scene(rng, "pair")
    with pytest.raises(ValueError, match="rng"):
        shapes.sample_scene(0)
    with pytest.raises(ValueError, match="allowed"):
        shapes.sample_scene(rng, "single", allowed=lambda s: False)
