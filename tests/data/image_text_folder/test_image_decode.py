"""image_decode through the builder: every stored image is upright, opaque 8-bit RGB,
whatever its mode, and `max_side` downscales it."""

from __future__ import annotations

import numpy as np

from tests.data.image_text_folder.helpers import GOOD_CAPTIONS, read_examples


def test_colours_are_converted_to_rgb(skip_build):
    images = {k: ex["image"].astype(int) for k, ex in read_examples(skip_build).items()}
    np.testing.assert_array_equal(images["good_blue.png"][0, 0], (20, 40, 220))  # lossless
    np.testing.assert_allclose(images["good_red.jpg"][36, 48], (200, 30, 30), atol=8)
    np.testing.assert_allclose(images["nested/deeper/Upper.JPG"][36, 36], (30, 200, 30), atol=8)
    np.testing.assert_array_equal(images["gray.png"][5, 5], (100, 100, 100))
    np.testing.assert_array_equal(np.unique(images["gray16.png"]), [128])  # scaled, not clipped
    rgba = images["rgba.png"]
    np.testing.assert_array_equal(rgba[40, 15], (255, 0, 0))
    np.testing.assert_array_equal(rgba[40, 45], (255, 255, 255))  # transparent -> white
    np.testing.assert_allclose(rgba[40, 75], (127, 127, 127), atol=1)  # alpha 128 over white
    np.testing.assert_allclose(images["palette.gif"][5, 5], (10, 200, 10), atol=2)
    np.testing.assert_allclose(images["cmyk.jpg"][40, 40], (0, 255, 255), atol=12)


def test_exif_orientation_is_applied(skip_build):
    rotated = read_examples(skip_build)["rotated.jpg"]["image"].astype(int)
    assert rotated.shape == (96, 64, 3)  # stored 96x64 landscape, viewed as portrait
    assert rotated[10, 32].max() < 30 and rotated[85, 32].min() > 225  # dark half on top


def test_max_side_downscales_but_min_size_uses_the_original(max_side_build):
    examples = read_examples(max_side_build)
    assert set(examples) == set(GOOD_CAPTIONS)  # 80x80 images are kept though stored 40x40
    assert examples["good_red.jpg"]["image"].shape == (30, 40, 3)
    assert all(max(ex["image"].shape[:2]) <= 40 for ex in examples.values())
