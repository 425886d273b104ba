"""Weight-free image statistics for the shapes domain: the fidelity, diversity and
artefact proxies the ablations (benchmarks/ablations.py) report next to ShapesBench.

Images are float [-1, 1] NHWC (what samplers return) unless said otherwise.
"""

from __future__ import annotations

import numpy as np

from imagen_jax.data.shapes import BACKGROUND, COLORS

_PALETTE = np.asarray([BACKGROUND] + list(COLORS.values()), np.float32)


def saturated_fraction(images: np.ndarray, level: float = 0.99) -> float:
    """Fraction of channel values at the range's ends (|x| >= level): the washed-out,
    over-saturated look high guidance weights give without thresholding."""
    return float(np.mean(np.abs(np.asarray(images, np.float32)) >= level))


def mean_chroma(images: np.ndarray) -> float:
    """Mean (max - min) over RGB per pixel, in [0, 2]: how colourful images are."""
    x = np.asarray(images, np.float32)
    return float(np.mean(x.max(-1) - x.min(-1)))


def pairwise_diversity(images: np.ndarray, groups: int) -> float:
    """Mean RMS pixel distance between samples of the same prompt.

    `images` holds `groups` consecutive samples per prompt ([p0, p0, p1, p1, ...] for
    groups=2). Zero means every sample of a prompt is the same image.
    """
    x = np.asarray(images, np.float32)
    if groups < 2 or len(x) % groups:
        raise ValueError(f"need >= 2 samples per prompt and len(images) divisible by "
                         f"groups, got {len(x)} images, groups={groups}")
    x = x.reshape(len(x) // groups, groups, -1)
    distances = [np.sqrt(np.mean((x[:, i] - x[:, j]) ** 2, axis=-1))
                 for i in range(groups) for j in range(i + 1, groups)]
    return float(np.mean(distances))


def sharpness(images: np.ndarray) -> float:
    """Mean absolute Laplacian of the luminance (higher = crisper edges)."""
    luminance = np.asarray(images, np.float32).mean(-1)
    lap = (-4 * luminance[:, 1:-1, 1:-1] + luminance[:, :-2, 1:-1] + luminance[:, 2:, 1:-1]
           + luminance[:, 1:-1, :-2] + luminance[:, 1:-1, 2:])
    return float(np.mean(np.abs(lap)))


def off_palette_fraction(images_uint8: np.ndarray, max_distance: float = 40.0) -> float:
    """Fraction of pixels (uint8 RGB) farther than `max_distance` from every palette
    colour and the background: blotches, speckle and colour noise. Ground truth is not
    zero (anti-aliased edges blend two colours); compare against it."""
    x = np.asarray(images_uint8, np.float32)
    distance = np.linalg.norm(x[..., None, :] - _PALETTE, axis=-1).min(-1)
    return float(np.mean(distance > max_distance))
