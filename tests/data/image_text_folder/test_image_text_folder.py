"""The `image_text_folder` builder: its schema, modes, test split, reuse, config checks,
and that it never touches the source folder."""

from __future__ import annotations

import numpy as np
import pytest

from imagen_jax.data.build_report import read_build_report
from imagen_jax.data.image_text_folder import (
    ImageTextFolder,
    ImageTextFolderConfig,
    build_image_text_folder,
)
from tests.data.image_text_folder.helpers import (GOOD_CAPTIONS, read_examples, save_image,
                                                  snapshot, solid)

# --------------------------------------------------------------------------- main folder


def test_examples_have_the_schema_and_captions(skip_build):
    examples = read_examples(skip_build)
    assert {k: ex["caption"] for k, ex in examples.items()} == GOOD_CAPTIONS
    for ex in examples.values():
        assert ex["image"].dtype == np.uint8 and ex["image"].ndim == 3
        assert ex["image"].shape[-1] == 3
        assert ex["index"].dtype == np.int64
    assert [examples[k]["index"] for k in sorted(examples)] == list(range(len(examples)))
    assert examples["good_red.jpg"]["image"].shape == (72, 96, 3)
    assert examples["good_blue.png"]["image"].shape == (64, 80, 3)
    assert skip_build.info.features["image"].shape == (None, None, 3)


def test_unconditional_mode_keeps_uncaptioned_images_with_empty_caption(unconditional_build):
    report = read_build_report(unconditional_build)
    counts = report["counts"]
    assert (counts["good"], counts["unconditional"]) == (11, 2)
    assert (counts["missing_caption"], counts["empty_caption"]) == (1, 1)
    assert (counts["corrupt"], counts["not_image"], counts["too_small"]) == (2, 2, 1)
    assert report["num_images"] == 16
    captions = {k: ex["caption"] for k, ex in read_examples(unconditional_build).items()}
    assert captions == {**GOOD_CAPTIONS, "no_caption.png": "", "empty_caption.png": ""}


def test_test_split_is_deterministic_disjoint_and_complete(split_builds):
    first, second = ({split: set(read_examples(b, split)) for split in ("train", "test")}
                     for b in split_builds)
    assert first == second
    assert first["train"] and first["test"]
    assert not first["train"] & first["test"]
    assert first["train"] | first["test"] == set(GOOD_CAPTIONS)
    report = read_build_report(split_builds[0])
    assert report["splits"] == {"train": len(first["train"]), "test": len(first["test"])}
    for split in ("train", "test"):
        examples = read_examples(split_builds[0], split)
        assert [examples[k]["index"] for k in sorted(examples)] == list(range(len(examples)))


def test_rebuilding_reuses_the_prepared_data(skip_build, folders, data_dir):
    again = build_image_text_folder(folders["main"], data_dir)
    assert again.data_dir == skip_build.data_dir
    assert read_build_report(again) == read_build_report(skip_build)


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
    save_image(solid((1, 2, 3)), source / "a.png", "only one image")
    with pytest.raises(ValueError, match="split 'test' would be empty|split 'train' would be"):
        build_image_text_folder(source, tmp_path / "tfds", test_fraction=0.001)


# Last: pytest runs this folder's files in name order, this one last, so every build
# of the shared fixtures and of the tests here has run by now (under xdist, every one
# this worker ran: each worker builds from folders of its own).
def test_source_folders_are_untouched(folders, snapshots, skip_build, unconditional_build,
                                      split_builds, max_side_build, index_build, csv_build):
    for name, path in folders.items():
        assert snapshot(path) == snapshots[name], name
