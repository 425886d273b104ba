"""Helpers for the `image_text_folder` tests: small, deliberately messy source folders,
and what a build holds (examples, and a snapshot to prove a source folder untouched)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

# Images in the main folder that survive every check, with their stripped captions.
GOOD_CAPTIONS = {
    "good_red.jpg": "a red rectangle",
    "good_blue.png": "a blue rectangle — ünïcode",
    "nested/deeper/Upper.JPG": "green, in a subfolder",
    "gray.png": "grey",
    "gray16.png": "sixteen-bit grey",
    "rgba.png": "red, transparent, half-transparent black",
    "palette.gif": "palette green",
    "cmyk.jpg": "cyan in CMYK",
    "rotated.jpg": "rotated by EXIF",
}
NO_CAPTION = ("no_caption.png", "empty_caption.png")


def save_image(image: Image.Image, path: Path, caption: str | None = None,
               **save_kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save_kwargs)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")


def solid(color: tuple[int, int, int], size: tuple[int, int] = (80, 80)) -> Image.Image:
    return Image.new("RGB", size, color)


def _write_bytes(path: Path, data: bytes, caption: str) -> None:
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(caption, encoding="utf-8")


def _jpeg_bytes(rng: np.random.Generator) -> bytes:
    noise = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)  # noise: no tiny JPEG
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root (hidden ones too) with size, mtime and content hash."""
    state = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        state[path.relative_to(root).as_posix()] = (path.is_dir(), stat.st_size,
                                                    stat.st_mtime_ns, digest)
    return state


def read_examples(builder: tfds.core.DatasetBuilder, split: str = "train") -> dict[str, dict]:
    """Examples of a split keyed by id, as numpy, with text decoded."""
    examples = {}
    for ex in tfds.as_numpy(builder.as_dataset(split=split)):
        ex = dict(ex, id=ex["id"].decode("utf-8"), caption=ex["caption"].decode("utf-8"))
        examples[ex["id"]] = ex
    return examples


def make_main_folder(root: Path) -> None:
    """Sidecar captions; every kind of problem the builder must count."""
    rng = np.random.default_rng(0)
    save_image(solid((200, 30, 30), (96, 72)), root / "good_red.jpg", "a red rectangle\n",
               quality=95)
    save_image(solid((20, 40, 220), (80, 64)), root / "good_blue.png",
               "  a blue rectangle — ünïcode \n")
    save_image(solid((30, 200, 30), (72, 72)), root / "nested/deeper/Upper.JPG",
               "green, in a subfolder", format="JPEG", quality=95)
    save_image(Image.new("L", (80, 80), 100), root / "gray.png", "grey")
    # 32896 / 257 == 128: the 16-bit range maps onto the 8-bit one.
    save_image(Image.fromarray(np.full((64, 80), 32896, np.uint16)), root / "gray16.png",
               "sixteen-bit grey")
    rgba = np.zeros((80, 90, 4), np.uint8)
    rgba[:, :30] = (255, 0, 0, 255)  # opaque red
    rgba[:, 30:60] = (0, 0, 255, 0)  # fully transparent "blue": must become white
    rgba[:, 60:] = (0, 0, 0, 128)  # half-transparent black: mid grey over white
    save_image(Image.fromarray(rgba), root / "rgba.png", "red, transparent, half-transparent black")
    palette = solid((10, 200, 10)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    save_image(palette, root / "palette.gif", "palette green")
    save_image(Image.new("CMYK", (80, 80), (255, 0, 0, 0)), root / "cmyk.jpg", "cyan in CMYK",
               quality=95)
    # Stored 96 wide x 64 high, dark left half; EXIF 6 = "rotate 90 clockwise to view".
    stored = np.zeros((64, 96, 3), np.uint8)
    stored[:, 48:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    save_image(Image.fromarray(stored), root / "rotated.jpg", "rotated by EXIF", exif=exif,
               quality=95)

    _write_bytes(root / "corrupt.png", b"\x89PNG\r\n\x1a\n" + rng.bytes(2000), "corrupt png")
    jpeg = _jpeg_bytes(rng)
    _write_bytes(root / "truncated.jpg", jpeg[: len(jpeg) // 2], "half a jpeg")
    _write_bytes(root / "notes.jpg", b"this is a text file, not a picture\n" * 5, "text")
    _write_bytes(root / "noise.webp", rng.bytes(3000), "random bytes, no image header")
    save_image(solid((0, 0, 0), (32, 48)), root / "tiny.png", "too small")
    save_image(solid((0, 0, 0)), root / "no_caption.png")
    save_image(solid((255, 255, 0)), root / "empty_caption.png", "  \n\t ")
    # Not images: ignored, not counted.
    (root / ".DS_Store").write_bytes(rng.bytes(64))
    (root / "README.md").write_text("scraped from somewhere\n")
    (root / "orphan.txt").write_text("a sidecar without an image")


def make_index_folder(root: Path) -> None:
    """captions.jsonl and captions.csv over sidecars, with bad and stale entries."""
    for name in ("a.png", "sub/b.png", "c.png", "d.png", "e.png"):
        save_image(solid((90, 90, 90)), root / name)
    (root / "a.txt").write_text("sidecar a, shadowed by the jsonl")
    (root / "c.txt").write_text("sidecar c, shadowed by the csv")
    (root / "e.txt").write_text("sidecar e")
    (root / "captions.jsonl").write_text("\n".join([
        '{"file": "a.png", "caption": "  jsonl caption for a  "}',
        '{"image": "sub/b.png", "caption": "b via the image key"}',
        '{"file": "./d.png", "caption": "   "}',
        '{"file": "gone.png", "caption": "the file does not exist"}',
        "this line is not json",
        '{"caption": "no file key"}',
        '{"file": "a.png", "caption": "a second entry for a"}',
        "",
        '{"file": "../outside.png", "caption": "outside source_dir"}',
    ]) + "\n", encoding="utf-8")
    (root / "captions.csv").write_text(
        'file,caption\nsub/b.png,"csv b, shadowed by the jsonl"\nc.png,csv c\n', encoding="utf-8")


def make_csv_folder(root: Path) -> None:
    for name in ("x.png", "y/z.png", "w.png"):
        save_image(solid((40, 40, 40)), root / name)
    (root / "w.txt").write_text("sidecar w, shadowed by the csv")
    (root / "captions.csv").write_text(
        "file,caption\n"
        'x.png,"a caption, with a comma"\n'
        'y/z.png,"she said ""hi""\nover two lines"\n'
        "w.png,csv w\n"
        "missing.png,no such file\n", encoding="utf-8")
