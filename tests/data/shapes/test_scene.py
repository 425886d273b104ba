"""shapes.scene: the vocabulary, `Scene` and `SceneObject` validation, and the JSON form."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from imagen_jax.data import shapes
from imagen_jax.data.shapes import COLORS, Scene, SceneObject


def test_vocabulary():
    assert shapes.SHAPES == ("circle", "square", "triangle")
    assert shapes.RELATIONS == ("to the left of", "to the right of", "above", "below")
    assert len(COLORS) >= 6
    rgb = {name: np.array(value, float) for name, value in COLORS.items()}
    for a, b in itertools.combinations(rgb, 2):
        assert np.linalg.norm(rgb[a] - rgb[b]) > 90, (a, b)
    for name, value in rgb.items():
        assert np.linalg.norm(value - np.array(shapes.BACKGROUND, float)) > 150, name
    assert set(shapes.COUNT_WORDS) == {2, 3, 4}


def test_scene_json_round_trip(scenes):
    for scene in scenes[:100]:
        text = shapes.scene_to_json(scene)
        assert json.loads(text)["caption"] == scene.caption
        assert shapes.scene_from_json(text) == scene


@pytest.mark.parametrize("text", ["not json", "{}", '{"objects": [{"shape": "circle"}]}', "[1]"])
def test_scene_from_json_rejects_garbage(text):
    with pytest.raises(ValueError):
        shapes.scene_from_json(text)


def test_scene_validation():
    obj = SceneObject("circle", "red", (0.3, 0.3), 0.2)
    with pytest.raises(ValueError, match="shape"):
        SceneObject("hexagon", "red", (0.3, 0.3), 0.2)
    with pytest.raises(ValueError, match="color"):
        SceneObject("circle", "pink", (0.3, 0.3), 0.2)
    with pytest.raises(ValueError, match="center"):
        SceneObject("circle", "red", (1.3, 0.3), 0.2)
    with pytest.raises(ValueError, match="relation"):
        Scene((obj, obj), "relation", None, "")
    with pytest.raises(ValueError, match="kind"):
        Scene((obj,), "many", None, "")
