"""folder_captions through the builder: which caption each image gets from captions.jsonl,
captions.csv and sidecars, and what bad or stale entries count as."""

from __future__ import annotations

import pytest

from imagen_jax.data.build_report import read_build_report
from imagen_jax.data.image_text_folder import build_image_text_folder
from tests.data.image_text_folder.helpers import read_examples, save_image, solid


def test_jsonl_beats_csv_beats_sidecar(index_build):
    captions = {k: ex["caption"] for k, ex in read_examples(index_build).items()}
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
    captions = {k: ex["caption"] for k, ex in read_examples(csv_build).items()}
    assert captions == {
        "x.png": "a caption, with a comma",
        "y/z.png": 'she said "hi"\nover two lines',
        "w.png": "csv w",
    }
    counts = read_build_report(csv_build)["counts"]
    assert (counts["good"], counts["missing_file"], counts["shadowed_caption"]) == (3, 1, 1)


def test_csv_without_caption_column_is_an_error(tmp_path):
    source = tmp_path / "src"
    save_image(solid((1, 2, 3)), source / "a.png")
    (source / "captions.csv").write_text("path,text\na.png,hello\n")
    with pytest.raises(ValueError, match="'caption' column"):
        build_image_text_folder(source, tmp_path / "tfds")
