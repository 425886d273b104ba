"""Hostile dataset folders: symlink loops, FIFOs, unreadable files and caption indexes
in another encoding, reported (or counted) without hanging the build."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from imagen_jax.data.build_report import read_build_report
from imagen_jax.data.folder_captions import captioned_images
from imagen_jax.data.image_decode import ImageDecodeError, load_rgb
from imagen_jax.data.image_text_folder import build_image_text_folder
from tests.hostile.helpers import refused


@contextlib.contextmanager
def _no_hang(seconds: int = 10):
    """Turns a hang (e.g. opening a FIFO) into a test failure instead of a stuck suite."""
    def fail(*_):
        raise AssertionError(f"hung for {seconds} s")
    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _good_png(path, caption: str | None = "one red square"):
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(path)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption)


UNREADABLE_FILES = [
    pytest.param(lambda p: os.symlink(p.name, p), "a dangling or looping symlink",
                 id="symlink-loop"),
    pytest.param(lambda p: os.symlink(p.parent / "gone.png", p), "a dangling or looping symlink",
                 id="dangling-symlink"),
    pytest.param(os.mkfifo, "not a regular file", id="fifo"),
]


@pytest.mark.parametrize("make, detail", UNREADABLE_FILES)
def test_unreadable_image_files_are_reported_without_hanging(tmp_path, make, detail):
    path = tmp_path / "x.png"
    make(path)
    with _no_hang():
        error = refused(ImageDecodeError, rf"x\.png: unreadable \({detail}\)$", load_rgb,
                        str(path))
    assert error.reason == "unreadable"


def test_permission_denied_image(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root, which reads a chmod 000 file anyway (the FIFO and "
                    "symlink cases above cover unreadable files)")
    path = tmp_path / "x.png"
    _good_png(path)
    path.chmod(0)
    error = refused(ImageDecodeError, r"x\.png: unreadable \(PermissionError", load_rgb,
                    str(path))
    assert error.reason == "unreadable"


def test_folder_walk_survives_loops_fifos_and_odd_names(tmp_path):
    _good_png(tmp_path / "a.png")
    _good_png(tmp_path / "b.png", caption=None)
    os.mkfifo(tmp_path / "b.txt")  # a sidecar that would block whoever opened it
    os.symlink(".", tmp_path / "loop")  # a directory cycle: not followed
    os.symlink(tmp_path, tmp_path / "sub")
    (tmp_path / "photo.jpg").mkdir()  # a directory named like an image: walked into
    _good_png(tmp_path / "photo.jpg" / "c.png")
    with _no_hang():
        captions = captioned_images(str(tmp_path))
    assert captions == {"a.png": "one red square", "photo.jpg/c.png": "one red square"}


@pytest.mark.parametrize("name, content, match", [
    pytest.param("captions.jsonl", b'{"file": "a.png", "caption": "caf\xe9"}\n',
                 r"captions\.jsonl: not UTF-8 text \(invalid continuation byte\); save it as",
                 id="jsonl-latin1"),
    pytest.param("captions.csv", b"file,caption\na.png,\xff\xfe red\n",
                 r"captions\.csv: not UTF-8 text \(invalid start byte\); save it as UTF-8$",
                 id="csv-not-utf8"),
])
def test_caption_index_in_another_encoding(tmp_path, name, content, match):
    _good_png(tmp_path / "a.png", caption=None)
    (tmp_path / name).write_bytes(content)
    refused(ValueError, match, captioned_images, str(tmp_path))


def test_source_dir_that_is_not_a_folder(tmp_path):
    refused(FileNotFoundError, r"source_dir '.*missing' does not exist$", captioned_images,
            str(tmp_path / "missing"))
    _good_png(tmp_path / "a.png")
    refused(NotADirectoryError, r"source_dir '.*a\.png' is not a directory$", captioned_images,
            str(tmp_path / "a.png"))


def test_build_counts_unreadable_files_and_finishes(tmp_path):
    """The whole build, end to end: the hostile entries are counted, not fatal."""
    source = tmp_path / "source"
    source.mkdir()
    _good_png(source / "a.png")
    os.symlink("loop.png", source / "loop.png")
    os.mkfifo(source / "fifo.jpg")
    os.symlink(".", source / "again")
    with _no_hang(60):
        builder = build_image_text_folder(source, tmp_path / "data", min_size=8)
    report = read_build_report(builder)
    assert report["counts"]["good"] == 1 and report["counts"]["unreadable"] == 2
    assert sorted(report["problem_files"]["unreadable"]) == ["fifo.jpg", "loop.png"]
