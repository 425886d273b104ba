"""Hostile images for unCLIP's variations, inversion and edits: malformed arrays and
files that are not (or are too large to be) images."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from imagen_jax import image_io
from tests.hostile.helpers import refused


IMAGES = r"^images must be a non-empty \[batch, height, width, 3\] array, got shape "

REJECTED_IMAGE_ARRAYS = [
    pytest.param((2, 16, 16, 1), IMAGES + r"\(2, 16, 16, 1\)$", id="one-channel"),
    pytest.param((2, 16, 16, 4), IMAGES + r"\(2, 16, 16, 4\)$", id="four-channels"),
    pytest.param((3, 16, 16), IMAGES + r"\(3, 16, 16\)$", id="channels-first-or-no-batch"),
    pytest.param((1, 3, 16, 16), IMAGES + r"\(1, 3, 16, 16\)$", id="NCHW"),
    pytest.param((0, 16, 16, 3), IMAGES + r"\(0, 16, 16, 3\)$", id="empty-batch"),
    pytest.param((1, 0, 16, 3), IMAGES + r"\(1, 0, 16, 3\)$", id="zero-height"),
]


@pytest.mark.parametrize("shape, match", REJECTED_IMAGE_ARRAYS)
def test_variations_refuse_malformed_images(weightless_pipeline, shape, match):
    refused(ValueError, match, weightless_pipeline.variations, np.zeros(shape, np.float32), 2,
            None)


def test_inversion_and_edits_refuse_malformed_images(weightless_pipeline):
    gray = np.zeros((1, 16, 16, 1), np.float32)
    refused(ValueError, IMAGES, weightless_pipeline.invert, gray)
    refused(ValueError, IMAGES, weightless_pipeline.interpolate, gray[0], gray[0], 3, None)
    refused(ValueError, IMAGES, weightless_pipeline.text_diff, gray[0], "a", "b", [0.1], None)
    refused(ValueError, r"^num must be a positive int \(variations per image\), got 0$",
            weightless_pipeline.variations, np.zeros((1, 16, 16, 3), np.float32), 0, None)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data): what a bomb looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                               0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


REJECTED_IMAGE_FILES = [
    pytest.param(b"<html>404 not found</html>", ValueError,
                 r"x\.png: not a readable image \(cannot identify image file", id="html-as-png"),
    pytest.param(bytes(range(256)) * 4, ValueError, r"x\.png: not a readable image",
                 id="random-bytes"),
    pytest.param(b"", ValueError, r"x\.png: not a readable image", id="empty-file"),
    pytest.param(_png_header(0, 16), ValueError, r"x\.png: not a readable image",
                 id="zero-width"),
    pytest.param(_png_header(10_000, 10_000), ValueError,
                 r"x\.png: image too large \(10000x10000 pixels, more than 89478485\)$",
                 id="huge-dimensions"),
    pytest.param(_png_header(100_000, 100_000), ValueError,
                 r"x\.png: image too large \(Image size \(10000000000 pixels\) exceeds",
                 id="decompression-bomb"),
    pytest.param(_png_header(16, 16), ValueError, r"x\.png: not a readable image",
                 id="header-without-pixels"),
]


@pytest.mark.parametrize("data, exc_type, match", REJECTED_IMAGE_FILES)
def test_image_files_for_variations(tmp_path, data, exc_type, match):
    (tmp_path / "x.png").write_bytes(data)
    refused(exc_type, match, image_io.load_image, str(tmp_path / "x.png"), 16)


def test_image_paths_and_sizes(tmp_path):
    refused(FileNotFoundError, "^image not found: .*missing.png$", image_io.load_image,
            str(tmp_path / "missing.png"))
    refused(FileNotFoundError, "^image not found", image_io.load_image, str(tmp_path))
    from PIL import Image

    Image.new("LA", (20, 12), (128, 200)).save(tmp_path / "gray-alpha.png")
    refused(ValueError, "^size must be a positive int or None, got 0$", image_io.load_image,
            str(tmp_path / "gray-alpha.png"), 0)
    # Accepted: any PIL mode becomes RGB, centre-cropped to a square and resized.
    pixels = image_io.load_image(str(tmp_path / "gray-alpha.png"), 16)
    assert pixels.shape == (16, 16, 3) and np.allclose(pixels, 128 / 127.5 - 1.0, atol=1e-6)
