"""Writing images people can look at: batches in [-1, 1] to PNG grids."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np
from PIL import Image

# The most pixels `load_image` decodes: PIL's own decompression-bomb threshold
# (about 89 million, e.g. 9459 x 9459), past which PIL only warns up to twice that.
MAX_IMAGE_PIXELS = 89_478_485


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


def save_png(image: np.ndarray, path: str) -> str:
    """Saves one [-1, 1] HWC image as a PNG of exactly its size; returns the path.

    Written to a hidden temporary name beside `path` and renamed: a run killed mid-write
    leaves no truncated file under `path`, so a rerun that skips existing files never
    keeps a broken one.
    """
    pixels = to_uint8(image)
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    root, ext = os.path.splitext(name)
    partial = os.path.join(directory, f".{root}.partial{ext}")  # same extension, same format
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(partial)
    os.replace(partial, path)
    return path


def labelled_grid_size(count: int, side: int, columns: int | None = None,
                       label_height: int = 14, min_side: int = 128, pad: int = 2
                       ) -> tuple[int, int]:
    """(height, width) in pixels of `save_labelled_grid`'s grid of `count` images of
    side x side pixels, known before any image exists."""
    factor = max(1, -(-min_side // side))
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    return (rows * (side * factor + label_height + pad) + pad,
            columns * (side * factor + pad) + pad)


def max_grid_images(side: int, wanted: int, max_pixels: int | None = None) -> int:
    """The most images of side x side pixels, at most `wanted` (and at least 1), whose
    default (square) labelled grid stays within `max_pixels` (default
    MAX_IMAGE_PIXELS: the size `load_image` still reads back)."""
    max_pixels = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    count = wanted
    while count > 1 and math.prod(labelled_grid_size(count, side)) > max_pixels:
        count -= 1
    return count


def save_labelled_grid(images: np.ndarray, labels: list[str], path: str,
                       columns: int | None = None, label_height: int = 14,
                       min_side: int = 128) -> str:
    """Like save_png_grid, with each image's label (e.g. its prompt) written under it.

    Images smaller than `min_side` are enlarged (nearest neighbour, whole factors) so
    that the label has room and the pixels stay visible.
    """
    from PIL import ImageDraw

    images = to_uint8(images)
    if images.ndim == 4 and images.shape[1] == images.shape[2]:
        height, width = labelled_grid_size(len(images), images.shape[1], columns,
                                           label_height, min_side)
        if height * width > MAX_IMAGE_PIXELS:  # larger than this project reads back
            raise ValueError(f"{path}: a grid of {len(images)} images of {images.shape[1]} px "
                             f"would be {width}x{height} pixels, more than "
                             f"{MAX_IMAGE_PIXELS}; put fewer images in each grid")
    factor = max(1, -(-min_side // images.shape[2]))
    images = images.repeat(factor, axis=1).repeat(factor, axis=2)
    n, h, w, c = images.shape
    tiles = np.full((n, h + label_height, w, 3), 255, np.uint8)
    tiles[:, :h] = images if c == 3 else images[..., :1]
    tiles = list(tiles)
    for i, label in enumerate(labels):
        canvas = Image.fromarray(tiles[i])
        text = label if len(label) * 6 <= w else label[: max(w // 6 - 1, 1)] + "…"
        ImageDraw.Draw(canvas).text((2, h + 1), text, fill=(0, 0, 0))
        tiles[i] = np.asarray(canvas)
    grid = make_grid(np.stack(tiles), columns)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


def check_images(images: Any, channels: int = 3, name: str = "images") -> Any:
    """`images` unchanged if it is a non-empty [B, H, W, channels] batch; ValueError
    naming the shape otherwise. Checked before a model sees it: a wrong channel count
    or an empty axis otherwise fails deep inside a compiled convolution or resize."""
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) != 4 or shape[-1] != channels or 0 in shape:
        raise ValueError(f"{name} must be a non-empty [batch, height, width, {channels}] "
                         f"array, got shape {shape}")
    return images


def load_image(path: str, size: int | None = None, max_pixels: int = MAX_IMAGE_PIXELS
               ) -> np.ndarray:
    """An image file as HWC float32 in [-1, 1] (RGB), optionally resized to size x size
    (centre-cropped to a square first).

    The header's size is checked before any pixel is decoded: an image of more than
    `max_pixels` pixels (a decompression bomb, or just far larger than any model here
    reads) or with a zero side is refused with a ValueError.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    try:
        with warnings.catch_warnings():  # PIL warns past its limit; we refuse instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as im:
            width, height = im.size
            if width * height > max_pixels:
                raise ValueError(f"{path}: image too large ({width}x{height} pixels, more "
                                 f"than {max_pixels})")
            if not width or not height:
                raise ValueError(f"{path}: image is empty ({width}x{height} pixels)")
            im = im.convert("RGB")
            if size is not None:
                side = min(im.size)
                left, top = (im.width - side) // 2, (im.height - side) // 2
                im = im.crop((left, top, left + side, top + side))
                im = im.resize((size, size), Image.BICUBIC)
            pixels = np.asarray(im, np.float32)
    except Image.DecompressionBombError as e:  # PIL's check, in Image.open, comes first
        raise ValueError(f"{path}: image too large ({e})") from None
    except OSError as e:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{path}: not a readable image ({e})") from None
    return pixels / 127.5 - 1.0
