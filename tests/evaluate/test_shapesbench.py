"""ShapesBench must recognise what the renderer drew, and nothing in noise."""

import numpy as np
import pytest

from imagen_jax.data.shapes import SceneObject, Scene, example_scene, render
from imagen_jax.evaluate import shapesbench as sb

N = 300  # test-split scenes; ~100 per kind


@pytest.fixture(scope="module")
def test_scenes():
    return [example_scene("test", i) for i in range(N)]


@pytest.mark.parametrize("resolution", [64, 128])
def test_ground_truth_renders_score_at_least_98_percent(test_scenes, resolution):
    images = [render(s, resolution) for s in test_scenes]
    _, summary = sb.score_images(images, [s.caption for s in test_scenes])
    for kind in ("all", "single", "count", "relation"):
        for category in sb.CATEGORIES:
            if category in summary[kind]:
                assert summary[kind][category]["accuracy"] >= 0.98, (kind, category, summary[kind])
    assert summary["relation"]["relation"]["n"] > 50


def test_mismatched_ground_truth_is_near_chance(test_scenes):
    """Real renders scored against another scene's caption: the in-domain chance level."""
    images = [render(s, 64) for s in test_scenes]
    prompts = [s.caption for s in test_scenes[1:] + test_scenes[:1]]
    _, summary = sb.score_images(images, prompts)
    assert summary["all"]["whole"]["accuracy"] < 0.12
    assert summary["relation"]["relation"]["accuracy"] < 0.1
    # Colour agreement by chance is about the chance two scenes share their colours.
    assert 0.05 < summary["single"]["colour"]["accuracy"] < 0.4


@pytest.mark.parametrize("noise", ["uniform", "blurred"])
def test_pure_noise_scores_at_chance_or_below(test_scenes, noise):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 64, 64, 3)).astype(np.float32)
    if noise == "blurred":  # blobs of one colour, the hardest noise for a segmenter
        from scipy import ndimage
        images = ndimage.gaussian_filter(images, sigma=(0, 2, 2, 0))
        images = (images - images.mean()) / images.std() * 120 + 128
    images = np.clip(images, 0, 255).astype(np.uint8)
    mismatched = [render(s, 64) for s in test_scenes]
    prompts = [s.caption for s in test_scenes]
    _, noise_summary = sb.score_images(list(images), prompts)
    _, chance = sb.score_images(mismatched, prompts[1:] + prompts[:1])
    for category, margin in [("colour", 0.05), ("shape", 0.05), ("colour_shape", 0.02),
                             ("relation", 0.02), ("whole", 0.02)]:
        assert (noise_summary["all"][category]["accuracy"]
                <= chance["all"][category]["accuracy"] + margin), category


def test_small_perturbations_keep_ground_truth_scoring(test_scenes):
    """Generated images are never exact: pixel noise and a slight blur must not matter."""
    from scipy import ndimage
    rng = np.random.default_rng(1)
    images = []
    for s in test_scenes[:150]:
        x = ndimage.gaussian_filter(render(s, 64).astype(np.float32), sigma=(0.6, 0.6, 0))
        images.append(np.clip(x + rng.normal(0, 12, x.shape), 0, 255).astype(np.uint8))
    _, summary = sb.score_images(images, [s.caption for s in test_scenes[:150]])
    assert summary["all"]["whole"]["accuracy"] >= 0.95


def _scene(*objects, kind="relation", relation="to the left of", caption=""):
    return Scene(tuple(objects), kind, relation, caption)


def test_wrong_colour_shape_count_and_relation_are_each_caught():
    left = SceneObject("circle", "red", (0.25, 0.5), 0.3)
    right = SceneObject("square", "blue", (0.75, 0.5), 0.3)
    image = render(_scene(left, right), 64)
    ok = sb.score_image(image, "a red circle to the left of a blue square")
    assert ok["whole"] and ok["relation"] and ok["count"]
    assert not sb.score_image(image, "a red circle to the right of a blue square")["relation"]
    assert not sb.score_image(image, "a red circle above a blue square")["relation"]
    swapped = sb.score_image(image, "a blue circle to the left of a red square")
    assert swapped["colour"] and swapped["shape"] and not swapped["colour_shape"]
    assert not sb.score_image(image, "a red circle")["count"]
    assert not sb.score_image(image, "a green circle to the left of a blue square")["colour"]
    assert not sb.score_image(image, "a red triangle to the left of a blue square")["shape"]


def test_shape_classifier_on_ideal_masks():
    for shape in ("circle", "square", "triangle"):
        obj = SceneObject(shape, "green", (0.5, 0.5), 0.5)
        found = sb.detect_objects(render(Scene((obj,), "single", None, ""), 64))
        assert [(o.color, o.shape) for o in found] == [("green", shape)]
        assert found[0].iou > 0.85
    assert sb.classify_shape(np.eye(12, dtype=bool))[0] == "unknown"


def test_wilson_interval():
    assert sb.wilson_interval(0, 10)[0] == 0.0
    assert sb.wilson_interval(10, 10)[1] == pytest.approx(1.0)
    low, high = sb.wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)


def test_bad_inputs_fail_with_a_clear_message():
    with pytest.raises(ValueError, match="not a shapes caption"):
        sb.score_image(np.zeros((8, 8, 3), np.uint8), "a dog")
    with pytest.raises(ValueError, match=r"image must be \[H, W, 3\]"):
        sb.detect_objects(np.zeros((8, 8), np.uint8))
