"""build_report: a build counts every problem file under its category, lists them,
stores the report beside the data and logs a summary."""

from __future__ import annotations

import logging
import os

from imagen_jax.data.build_report import REPORT_FILENAME, read_build_report
from imagen_jax.data.image_text_folder import build_image_text_folder


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


def test_problems_are_logged(folders, snapshots, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        build_image_text_folder(folders["index"], tmp_path / "tfds")
    summary = [r.getMessage() for r in caplog.records if "image_text_folder" in r.getMessage()]
    assert any("kept 4 of 5 images" in m and "missing_file" in m for m in summary), summary
