"""The `image_text_folder` builder on small, deliberately messy folders.

Each folder is built once per setting (module-scoped fixtures): TFDS builds cost
about a second each on two CPU cores, the first one more while TensorFlow warms up.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from imagen_jax.data.build_report import REPORT_FILENAME, read_build_report
from imagen_jax.data.image_text_folder import (
    ImageTextFolder,
    ImageTextFolderConfig,
    build_image_text_folder,
)

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


# --------------------------------------------------------------------------- helpers


def _save(image: Image.Image, path: Path, caption: str | None = None, **save_kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save_kwargs)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")


def _solid(color: tuple[int, int, int], size: tuple[int, int] = (80, 80)) -> Image.Image:
    return Image.new("RGB", size, color)


def _write_bytes(path: Path, data: bytes, caption: str) -> None:
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(caption, encoding="utf-8")


def _jpeg_bytes(rng: np.random.Generator) -> bytes:
    noise = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)  # noise: no tiny JPEG
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root (hidden ones too) with size, mtime and content hash."""
    state = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        state[path.relative_to(root).as_posix()] = (path.is_dir(), stat.st_size,
                                                    stat.st_mtime_ns, digest)
    return state


def _examples(builder: tfds.core.DatasetBuilder, split: str = "train") -> dict[str, dict]:
    """Examples of a split keyed by id, as numpy, with text decoded."""
    examples = {}
    for ex in tfds.as_numpy(builder.as_dataset(split=split)):
        ex = dict(ex, id=ex["id"].decode("utf-8"), caption=ex["caption"].decode("utf-8"))
        examples[ex["id"]] = ex
    return examples


def _make_main_folder(root: Path) -> None:
    """Sidecar captions; every kind of problem the builder must count."""
    rng = np.random.default_rng(0)
    _save(_solid((200, 30, 30), (96, 72)), root / "good_red.jpg", "a red rectangle\n", quality=95)
    _save(_solid((20, 40, 220), (80, 64)), root / "good_blue.png",
          "  a blue rectangle — ünïcode \n")
    _save(_solid((30, 200, 30), (72, 72)), root / "nested/deeper/Upper.JPG",
          "green, in a subfolder", format="JPEG", quality=95)
    _save(Image.new("L", (80, 80), 100), root / "gray.png", "grey")
    # 32896 / 257 == 128: the 16-bit range maps onto the 8-bit one.
    _save(Image.fromarray(np.full((64, 80), 32896, np.uint16)), root / "gray16.png",
          "sixteen-bit grey")
    rgba = np.zeros((80, 90, 4), np.uint8)
    rgba[:, :30] = (255, 0, 0, 255)  # opaque red
    rgba[:, 30:60] = (0, 0, 255, 0)  # fully transparent "blue": must become white
    rgba[:, 60:] = (0, 0, 0, 128)  # half-transparent black: mid grey over white
    _save(Image.fromarray(rgba), root / "rgba.png", "red, transparent, half-transparent black")
    palette = _solid((10, 200, 10)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    _save(palette, root / "palette.gif", "palette green")
    _save(Image.new("CMYK", (80, 80), (255, 0, 0, 0)), root / "cmyk.jpg", "cyan in CMYK",
          quality=95)
    # Stored 96 wide x 64 high, dark left half; EXIF 6 = "rotate 90 clockwise to view".
    stored = np.zeros((64, 96, 3), np.uint8)
    stored[:, 48:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(Image.fromarray(stored), root / "rotated.jpg", "rotated by EXIF", exif=exif, quality=95)

    _write_bytes(root / "corrupt.png", b"\x89PNG\r\n\x1a\n" + rng.bytes(2000), "corrupt png")
    jpeg = _jpeg_bytes(rng)
    _write_bytes(root / "truncated.jpg", jpeg[: len(jpeg) // 2], "half a jpeg")
    _write_bytes(root / "notes.jpg", b"this is a text file, not a picture\n" * 5, "text")
    _write_bytes(root / "noise.webp", rng.bytes(3000), "random bytes, no image header")
    _save(_solid((0, 0, 0), (32, 48)), root / "tiny.png", "too small")
    _save(_solid((0, 0, 0)), root / "no_caption.png")
    _save(_solid((255, 255, 0)), root / "empty_caption.png", "  \n\t ")
    # Not images: ignored, not counted.
    (root / ".DS_Store").write_bytes(rng.bytes(64))
    (root / "README.md").write_text("scraped from somewhere\n")
    (root / "orphan.txt").write_text("a sidecar without an image")


def _make_index_folder(root: Path) -> None:
    """captions.jsonl and captions.csv over sidecars, with bad and stale entries."""
    for name in ("a.png", "sub/b.png", "c.png", "d.png", "e.png"):
        _save(_solid((90, 90, 90)), root / name)
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


def _make_csv_folder(root: Path) -> None:
    for name in ("x.png", "y/z.png", "w.png"):
        _save(_solid((40, 40, 40)), root / name)
    (root / "w.txt").write_text("sidecar w, shadowed by the csv")
    (root / "captions.csv").write_text(
        "file,caption\n"
        'x.png,"a caption, with a comma"\n'
        'y/z.png,"she said ""hi""\nover two lines"\n'
        "w.png,csv w\n"
        "missing.png,no such file\n", encoding="utf-8")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    makers = {"main": _make_main_folder, "index": _make_index_folder, "csv": _make_csv_folder}
    for name, make in makers.items():
        (root / name).mkdir()
        make(root / name)
    return {name: root / name for name in makers}


@pytest.fixture(scope="module")
def snapshots(folders) -> dict[str, dict]:
    """Taken before any build (fixture order: every build fixture requests this)."""
    return {name: _snapshot(path) for name, path in folders.items()}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def skip_build(folders, snapshots, data_dir):
    return build_image_text_folder(folders["main"], data_dir)


@pytest.fixture(scope="module")
def unconditional_build(folders, snapshots, data_dir):
    return build_image_text_folder(folders["main"], data_dir, missing_caption="unconditional")


@pytest.fixture(scope="module")
def split_builds(folders, snapshots, tmp_path_factory):
    """The same split config built from scratch twice, into separate data dirs."""
    return [build_image_text_folder(folders["main"], tmp_path_factory.mktemp(f"split{i}"),
                                    test_fraction=0.5) for i in range(2)]


@pytest.fixture(scope="module")
def max_side_build(folders, snapshots, data_dir):
    return build_image_text_folder(folders["main"], data_dir, max_side=40)


@pytest.fixture(scope="module")
def index_build(folders, snapshots, data_dir):
    return build_image_text_folder(folders["index"], data_dir)


@pytest.fixture(scope="module")
def csv_build(folders, snapshots, data_dir):
    return build_image_text_folder(folders["csv"], data_dir)


# --------------------------------------------------------------------------- main folder


def test_report_counts_every_problem(skip_build):
    report = read_build_report(skip_build)
    assert report["counts"] == {
        "good": 9, "not_image": 2, "unreadable": 0, "corrupt": 2, "too_large": 0,
        "too_small": 1, "missing_caption": 1, "empty_caption": 1, "unconditional": 0,
        "missing_file": 0, "bad_caption_entry": 0, "duplicate_entry": 0, "shadowed_caption": 0,
    }
    assert report["num_images"] == 16
    assert report["splits"] == {"train": 9}
    problems = report["problem_files"]
    assert sorted(problems["corrupt"]) == ["corrupt.png", "truncated.jpg"]
    assert sorted(problems["not_image"]) == ["noise.webp", "notes.jpg"]
    assert problems["too_small"] == ["tiny.png"]
    assert problems["missing_caption"] == ["no_caption.png"]
    assert problems["empty_caption"] == ["empty_caption.png"]
    assert os.path.isfile(os.path.join(skip_build.data_dir, REPORT_FILENAME))


def test_examples_have_the_schema_and_captions(skip_build):
    examples = _examples(skip_build)
    assert {k: ex["caption"] for k, ex in examples.items()} == GOOD_CAPTIONS
    for ex in examples.values():
        assert ex["image"].dtype == np.uint8 and ex["image"].ndim == 3
        assert ex["image"].shape[-1] == 3
        assert ex["index"].dtype == np.int64
    assert [examples[k]["index"] for k in sorted(examples)] == list(range(len(examples)))
    assert examples["good_red.jpg"]["image"].shape == (72, 96, 3)
    assert examples["good_blue.png"]["image"].shape == (64, 80, 3)
    assert skip_build.info.features["image"].shape == (None, None, 3)


def test_colours_are_converted_to_rgb(skip_build):
    images = {k: ex["image"].astype(int) for k, ex in _examples(skip_build).items()}
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
    rotated = _examples(skip_build)["rotated.jpg"]["image"].astype(int)
    assert rotated.shape == (96, 64, 3)  # stored 96x64 landscape, viewed as portrait
    assert rotated[10, 32].max() < 30 and rotated[85, 32].min() > 225  # dark half on top


def test_unconditional_mode_keeps_uncaptioned_images_with_empty_caption(unconditional_build):
    report = read_build_report(unconditional_build)
    counts = report["counts"]
    assert (counts["good"], counts["unconditional"]) == (11, 2)
    assert (counts["missing_caption"], counts["empty_caption"]) == (1, 1)
    assert (counts["corrupt"], counts["not_image"], counts["too_small"]) == (2, 2, 1)
    assert report["num_images"] == 16
    captions = {k: ex["caption"] for k, ex in _examples(unconditional_build).items()}
    assert captions == {**GOOD_CAPTIONS, "no_caption.png": "", "empty_caption.png": ""}


def test_test_split_is_deterministic_disjoint_and_complete(split_builds):
    first, second = ({split: set(_examples(b, split)) for split in ("train", "test")}
                     for b in split_builds)
    assert first == second
    assert first["train"] and first["test"]
    assert not first["train"] & first["test"]
    assert first["train"] | first["test"] == set(GOOD_CAPTIONS)
    report = read_build_report(split_builds[0])
    assert report["splits"] == {"train": len(first["train"]), "test": len(first["test"])}
    for split in ("train", "test"):
        examples = _examples(split_builds[0], split)
        assert [examples[k]["index"] for k in sorted(examples)] == list(range(len(examples)))


def test_max_side_downscales_but_min_size_uses_the_original(max_side_build):
    examples = _examples(max_side_build)
    assert set(examples) == set(GOOD_CAPTIONS)  # 80x80 images are kept though stored 40x40
    assert examples["good_red.jpg"]["image"].shape == (30, 40, 3)
    assert all(max(ex["image"].shape[:2]) <= 40 for ex in examples.values())


def test_rebuilding_reuses_the_prepared_data(skip_build, folders, data_dir):
    again = build_image_text_folder(folders["main"], data_dir)
    assert again.data_dir == skip_build.data_dir
    assert read_build_report(again) == read_build_report(skip_build)


# --------------------------------------------------------------------------- index files


def test_jsonl_beats_csv_beats_sidecar(index_build):
    captions = {k: ex["caption"] for k, ex in _examples(index_build).items()}
    assert captions == {
        "a.png": "jsonl caption for a",
        "sub/b.png": "b via the image key",
        "c.png": "csv c",
        "e.png": "sidecar e",
    }
    counts = read_build_report(index_build)["counts"]
    assert counts["good"] == 4 and counts["empty_caption"] == 1  # d.png: blank jsonl caption
    assert counts["missing_file"] == 1  # gone.png
    assert counts["bad_caption_entry"] == 3  # not json, no file key, ../outside.png
    assert counts["duplicate_entry"] == 1  # second jsonl entry for a.png
    assert counts["shadowed_caption"] == 3  # a.txt, csv b, c.txt


def test_csv_quoting(csv_build):
    captions = {k: ex["caption"] for k, ex in _examples(csv_build).items()}
    assert captions == {
        "x.png": "a caption, with a comma",
        "y/z.png": 'she said "hi"\nover two lines',
        "w.png": "csv w",
    }
    counts = read_build_report(csv_build)["counts"]
    assert (counts["good"], counts["missing_file"], counts["shadowed_caption"]) == (3, 1, 1)


def test_csv_without_caption_column_is_an_error(tmp_path):
    source = tmp_path / "src"
    _save(_solid((1, 2, 3)), source / "a.png")
    (source / "captions.csv").write_text("path,text\na.png,hello\n")
    with pytest.raises(ValueError, match="'caption' column"):
        build_image_text_folder(source, tmp_path / "tfds")


def test_problems_are_logged(folders, snapshots, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        build_image_text_folder(folders["index"], tmp_path / "tfds")
    summary = [r.getMessage() for r in caplog.records if "image_text_folder" in r.getMessage()]
    assert any("kept 4 of 5 images" in m and "missing_file" in m for m in summary), summary


# --------------------------------------------------------------------------- config and errors


@pytest.mark.parametrize("field, value", [
    ("missing_caption", "drop"),
    ("min_size", 0),
    ("min_size", True),
    ("test_fraction", 1.0),
    ("test_fraction", -0.1),
    ("max_side", 0),
])
def test_bad_config_values_name_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"ImageTextFolderConfig.{field}"):
        ImageTextFolderConfig(source_dir=str(tmp_path), **{field: value})


def test_config_name_hashes_the_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "My Photos").mkdir()
    name = ImageTextFolderConfig(source_dir="My Photos").name
    assert name.startswith("my_photos_")
    assert ImageTextFolderConfig(source_dir=str(tmp_path / "My Photos")).name == name
    assert ImageTextFolderConfig(source_dir="My Photos", min_size=32).name != name
    assert ImageTextFolderConfig(source_dir="My Photos", name="mine").name == "mine"


def test_missing_source_dir_is_a_clear_error(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        build_image_text_folder(missing, tmp_path / "tfds")
    builder = ImageTextFolder(config=ImageTextFolderConfig(source_dir=str(missing)),
                              data_dir=str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        builder.download_and_prepare()


def test_split_that_would_be_empty_is_a_clear_error(tmp_path):
    source = tmp_path / "src"
    _save(_solid((1, 2, 3)), source / "a.png", "only one image")
    with pytest.raises(ValueError, match="split 'test' would be empty|split 'train' would be"):
        build_image_text_folder(source, tmp_path / "tfds", test_fraction=0.001)


# Last: every build of the module has run by now (pytest runs tests in file order).
def test_source_folders_are_untouched(folders, snapshots, skip_build, unconditional_build,
                                      split_builds, max_side_build, index_build, csv_build):
    for name, path in folders.items():
        assert _snapshot(path) == snapshots[name], name
