"""Writing images people can look at: batches in [-1, 1] to PNG grids."""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> [0, 255] uint8, clipping anything out of range."""
    images = np.asarray(images, dtype=np.float32)
    return np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def make_grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """Tiles NHWC images into one HWC array, `columns` per row (default: square)."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be NHWC, got shape {images.shape}")
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, images.dtype)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = image
    return grid


def save_png_grid(images: np.ndarray, path: str, columns: int | None = None) -> str:
    """Saves a batch of [-1, 1] NHWC images as one PNG grid; returns the path."""
    grid = make_grid(to_uint8(images), columns)
    if grid.shape[-1] == 1:
        grid = grid[..., 0]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(grid).save(path)
    return path
