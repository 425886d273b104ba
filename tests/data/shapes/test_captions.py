"""shapes.captions: every caption says exactly what its scene holds, and parses back."""

from __future__ import annotations

import pytest

from imagen_jax.data import shapes
from imagen_jax.data.shapes import Scene, SceneObject


def test_captions_match_scenes(scenes):
    for scene in scenes:
        assert scene.caption == shapes.caption_for(scene)
        kind, described, relation = shapes.parse_caption(scene.caption)
        assert kind == scene.kind and relation == scene.relation
        assert list(described) == [(o.color, o.shape) for o in scene.objects]
        if scene.kind == "count":
            assert scene.caption.split()[0] == shapes.COUNT_WORDS[len(scene.objects)]
            assert len({(o.color, o.shape, o.size) for o in scene.objects}) == 1
        if scene.kind == "relation":
            assert (scene.objects[0].color, scene.objects[0].shape) != (
                scene.objects[1].color, scene.objects[1].shape)


def test_caption_examples():
    red = SceneObject("circle", "red", (0.2, 0.5), 0.2)
    orange = SceneObject("square", "orange", (0.8, 0.5), 0.2)
    assert shapes.caption_for(Scene((red,), "single", None, "")) == "a red circle"
    assert shapes.caption_for(Scene((orange, orange), "count", None, "")) == "two orange squares"
    relation = Scene((red, orange), "relation", "to the left of", "")
    assert shapes.caption_for(relation) == "a red circle to the left of an orange square"
    with pytest.raises(ValueError, match="caption"):
        shapes.parse_caption("a pink circle")
