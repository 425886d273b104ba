"""The ablations' fidelity / diversity / artefact proxies on images with known answers."""

import numpy as np
import pytest
from scipy import ndimage

from imagen_jax.data.shapes import example_scene, render
from imagen_jax.evaluate import image_stats as stats


def _renders(n=8, size=64):
    return np.stack([render(example_scene("test", i), size) for i in range(n)])


def test_saturated_fraction_and_chroma():
    x = np.zeros((2, 4, 4, 3), np.float32)
    x[0, :2] = 1.0  # a quarter of all values at +1
    assert stats.saturated_fraction(x) == pytest.approx(0.25)
    assert stats.mean_chroma(np.zeros((1, 2, 2, 3))) == 0.0
    red = np.broadcast_to(np.array([1.0, -1.0, -1.0]), (1, 2, 2, 3))
    assert stats.mean_chroma(red) == pytest.approx(2.0)


def test_diversity_is_zero_for_copies_and_grows_with_difference():
    a = _renders(4).astype(np.float32) / 127.5 - 1
    copies = np.repeat(a, 2, axis=0)
    assert stats.pairwise_diversity(copies, 2) == 0.0
    shifted = np.stack([a, -a], axis=1).reshape(-1, *a.shape[1:])
    assert stats.pairwise_diversity(shifted, 2) > 0.5
    with pytest.raises(ValueError, match="divisible by groups"):
        stats.pairwise_diversity(a[:3], 2)


def test_blur_lowers_sharpness_and_noise_raises_off_palette():
    gt = _renders()
    floats = gt.astype(np.float32) / 127.5 - 1
    blurred = ndimage.gaussian_filter(floats, sigma=(0, 1.5, 1.5, 0))
    assert stats.sharpness(blurred) < 0.6 * stats.sharpness(floats)
    noisy = np.clip(gt + np.random.default_rng(0).normal(0, 40, gt.shape), 0, 255).astype(np.uint8)
    assert stats.off_palette_fraction(gt) < 0.05
    assert stats.off_palette_fraction(noisy) > 3 * stats.off_palette_fraction(gt)
