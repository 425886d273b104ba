"""Decoding a user's image file into upright, opaque 8-bit RGB, or saying why not.

The `image_text_folder` builder decodes every image once to check it and once more
to store it; `ImageDecodeError.reason` is the build report's category for an image
that fails (see `imagen_jax.data.build_report.IMAGE_CATEGORIES`).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageFile, ImageOps

# Leading bytes of the accepted formats. A file that starts with one but cannot be
# decoded is `corrupt` (a damaged image); one that does not is `not_image` (some
# other file with an image extension, e.g. an HTML error page saved as .jpg).
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


class ImageDecodeError(Exception):
    """An image file could not be turned into pixels; `reason` is its category."""

    def __init__(self, reason: str, path: str, detail: str):
        super().__init__(f"{path}: {reason} ({detail})")
        self.reason = reason


def load_rgb(path: str, max_side: int | None = None) -> np.ndarray:
    """Fully decodes an image file to uint8 RGB (H, W, 3), upright and opaque.

    Animated GIF/WebP files give their first frame.

    Raises:
        ImageDecodeError: `reason` is 'not_image', 'unreadable', 'corrupt' or 'too_large'.
    """
    return np.asarray(_downscale(decode_rgb(path), max_side), dtype=np.uint8)


def decode_rgb(path: str) -> Image.Image:
    """The full-size upright RGB image, or ImageDecodeError saying why not."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Something in this process switched it on; truncated files would then
        # come back partly grey and be stored as if they were fine.
        raise RuntimeError("image_text_folder needs PIL.ImageFile.LOAD_TRUNCATED_IMAGES "
                           "to be False so that truncated images are detected")
    _check_regular_file(path)
    try:
        with Image.open(path) as img:
            img.load()  # Only decoding everything finds truncated or damaged data.
            return _to_rgb(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError as e:
        raise ImageDecodeError("too_large", path, str(e)) from e
    except PermissionError as e:
        raise ImageDecodeError("unreadable", path, f"{type(e).__name__}: {e}") from e
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        # PIL cannot identify a damaged header either, so "broken image" and "no
        # image at all" are told apart by the file's first bytes.
        reason = "corrupt" if _has_image_signature(path) else "not_image"
        raise ImageDecodeError(reason, path, f"{type(e).__name__}: {e}") from e


def _check_regular_file(path: str) -> None:
    """ImageDecodeError('unreadable') unless `path` is (a symlink to) a regular file.

    os.walk lists FIFOs, sockets, devices and broken or looping symlinks among the
    files; opening a FIFO blocks until something writes to it, which would hang
    the build, so they are reported without being opened.
    """
    if not os.path.isfile(path):
        what = "a dangling or looping symlink" if os.path.islink(path) else "not a regular file"
        raise ImageDecodeError("unreadable", path, what)


def _has_image_signature(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head.startswith(_IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: alpha composited onto white, 16-bit scaled to 8-bit."""
    if img.mode in _SIXTEEN_BIT_MODES:
        # convert() clips I / I;16 values above 255 instead of rescaling them;
        # 65535 / 257 == 255 maps the full 16-bit range onto the 8-bit one.
        values = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        # Dropping alpha would reveal whatever colour transparent pixels happen to
        # store (often black); white is how the image looks on a page.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _downscale(img: Image.Image, max_side: int | None) -> Image.Image:
    """Shrinks (never enlarges) so that the longer side is at most `max_side`."""
    if max_side is None or max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = tuple(max(1, round(side * scale)) for side in img.size)
    return img.resize(size, Image.Resampling.LANCZOS)
