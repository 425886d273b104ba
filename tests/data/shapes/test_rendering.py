"""shapes.rendering: object colours where the scene puts them, anti-aliased edges, exact
areas, and the same picture at every resolution."""

from __future__ import annotations

import numpy as np
import pytest

from imagen_jax.data import shapes
from imagen_jax.data.shapes import COLORS, Scene, SceneObject
from tests.data.shapes.helpers import sample_scenes


def _area_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    r = image.shape[0] // factor
    return image.astype(np.float64).reshape(r, factor, r, factor, 3).mean(axis=(1, 3))


def test_center_pixel_has_object_colour(scenes):
    resolution = 64
    for scene in scenes[:200]:
        image = shapes.render(scene, resolution).astype(int)
        for obj in scene.objects:
            x, y = (min(int(c * resolution), resolution - 1) for c in obj.center)
            assert np.abs(image[y, x] - COLORS[obj.color]).max() <= 2, (scene, obj)
        assert tuple(image[0, 0]) == shapes.BACKGROUND  # objects keep off the border


def test_render_across_resolutions_is_consistent():
    # Measured: mean |256->64 - 64| is ~0.15 on 0-255 (worst scene ~0.6); edges only.
    diffs = []
    for scene in sample_scenes(40, seed=3):
        high = _area_downsample(shapes.render(scene, 256), 4)
        low = shapes.render(scene, 64).astype(np.float64)
        diffs.append(np.abs(high - low).mean())
    assert max(diffs) < 1.5 and np.mean(diffs) < 0.5, diffs
    scene = sample_scenes(1, seed=4)[0]
    assert np.abs(_area_downsample(shapes.render(scene, 128), 4) - shapes.render(scene, 32)).mean() < 2.0


def test_render_is_anti_aliased():
    scene = Scene((SceneObject("circle", "blue", (0.5, 0.5), 0.5),), "single", None, "a blue circle")
    image = shapes.render(scene, 32).reshape(-1, 3)
    pure = {shapes.BACKGROUND, COLORS["blue"]}
    blended = [tuple(p) for p in image if tuple(p) not in pure]
    assert len(blended) > 20  # edge pixels take in-between colours


def test_render_shapes_have_expected_areas():
    for shape, fraction in (("circle", np.pi / 4), ("square", 1.0), ("triangle", 0.5)):
        scene = Scene((SceneObject(shape, "red", (0.5, 0.5), 0.5),), "single", None, "")
        image = shapes.render(scene, 128).astype(float)
        bg, red = np.array(shapes.BACKGROUND, float), np.array(COLORS["red"], float)
        coverage = ((image - bg) / (red - bg))[..., 0].sum() / 128**2
        assert abs(coverage - 0.25 * fraction) < 0.005, shape


@pytest.mark.parametrize("resolution", [0, -4, 32.0, "64", True])
def test_render_rejects_bad_resolution(resolution):
    with pytest.raises(ValueError, match="resolution"):
        shapes.render(sample_scenes(1)[0], resolution)
