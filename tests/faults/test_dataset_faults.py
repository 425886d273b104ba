"""Faults of the data layer (issue #21): what a killed dataset build leaves is removed
by the next build, and a damaged TFRecord stops training with one line naming it."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from imagen_jax.data.damaged_files import CorruptRecordFileError
from imagen_jax.data.datasets import captions
from imagen_jax.data.pipeline import InputIterator, PipelineConfig, make_dataset
from imagen_jax.data.prepare import LOCK_FILE
from imagen_jax.data.shapes_builder import build_shapes_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The smallest shapes dataset: 8x8 images, 8 train and 1 test example (~0.3 s to build).
TINY = dict(resolution=8, num_train=8, num_test=1)
CONFIG_DIR = "shapes_captions/r8_n8_1_s0"  # build_shapes_dataset's name for TINY

# A build of TINY that hangs while generating its test split, i.e. after it wrote the
# train split's TFRecord into its `incomplete.*` directory: a build a kill interrupts.
HANGING_BUILD = textwrap.dedent("""
    import sys, time
    from imagen_jax.data import shapes, shapes_builder
    generate = shapes.generate_example
    def hang_on_test(split, *args):
        if split == "test":
            print("hanging", file=sys.__stdout__, flush=True)  # past prepare()'s capture
            time.sleep(3600)
        return generate(split, *args)
    shapes.generate_example = hang_on_test
    shapes_builder.build_shapes_dataset(sys.argv[1], resolution=8, num_train=8, num_test=1)
""")


def _leftovers(config_dir: str) -> list[str]:
    return [n for n in os.listdir(config_dir) if n.startswith("incomplete.")]


def _train_file(builder) -> str:
    [path] = [os.path.join(builder.data_dir, n) for n in os.listdir(builder.data_dir)
              if "-train.tfrecord" in n]
    return path


def _truncate(path: str, cut: int = 10) -> None:
    """Cuts the last bytes off, as a disk that filled up mid-write leaves a file."""
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - cut)


def test_killed_build_is_left_alone_while_alive_and_removed_by_the_next_build(
        tmp_path, caplog):
    """A real build, killed: its `incomplete.*` directory (holding the train TFRecord it
    wrote) is kept while the build is alive, and removed by the next build."""
    data_dir, config_dir = str(tmp_path), str(tmp_path / CONFIG_DIR)
    build = subprocess.Popen([sys.executable, "-c", HANGING_BUILD, data_dir], cwd=REPO,
                             stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=REPO))
    try:
        # (TFDS prints its own progress lines to stdout before it)
        assert "hanging\n" in iter(build.stdout.readline, ""), "the build did not hang"
        [leftover] = _leftovers(config_dir)
        assert any(".tfrecord" in n for n in os.listdir(os.path.join(config_dir, leftover)))

        caplog.set_level(logging.INFO)
        second = threading.Thread(
            target=build_shapes_dataset, args=(data_dir,), kwargs=TINY, daemon=True)
        second.start()
        second.join(timeout=2.0)
        # The live build holds the lock: the second waits, and removes nothing.
        assert second.is_alive()
        assert _leftovers(config_dir) == [leftover]
        assert "waiting for another process" in caplog.text
    finally:
        build.send_signal(signal.SIGKILL)
        build.wait()
    second.join(timeout=60)
    assert not second.is_alive()
    assert _leftovers(config_dir) == []
    removed = [r.getMessage() for r in caplog.records if "leftover" in r.getMessage()]
    assert removed == [f"removed 1 leftover(s) of an interrupted dataset build: "
                       f"{os.path.join(config_dir, leftover)}"]
    assert build_shapes_dataset(data_dir, **TINY).info.splits["train"].num_examples == 8


def test_leftover_of_a_previous_run_is_removed_and_the_data_kept(tmp_path):
    """Leftovers beside a finished build (a run killed before another one finished)
    go at the next call, which still reuses the finished data; other files stay."""
    builder = build_shapes_dataset(str(tmp_path), **TINY)
    config_dir = str(tmp_path / CONFIG_DIR)
    # What TFDS leaves when killed while writing a shard (file_utils.incomplete_dir,
    # py_utils.incomplete_files): a partial record file in a partial build directory.
    leftover = os.path.join(config_dir, "incomplete.Q7ZK2B_1.0.0")
    os.makedirs(leftover)
    with open(_train_file(builder), "rb") as src, open(os.path.join(
            leftover, "incomplete.0123456789abcdef0123456789abcdef.shapes_captions-train."
            "tfrecord-00000-of-00001"), "wb") as dst:
        dst.write(src.read()[:100])
    unrelated = os.path.join(config_dir, "incomplete.notes")
    open(unrelated, "w").close()

    again = build_shapes_dataset(str(tmp_path), **TINY)
    assert sorted(os.listdir(config_dir)) == sorted([LOCK_FILE, "1.0.0", "incomplete.notes"])
    assert again.info.splits["train"].num_examples == 8


@pytest.fixture
def truncated(tmp_path):
    """The tiny dataset, its train TFRecord truncated mid-record."""
    builder = build_shapes_dataset(str(tmp_path), **TINY)
    path = _train_file(builder)
    _truncate(path)
    return builder, path


def _assert_names_file(error: CorruptRecordFileError, path: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert f"dataset file {path} is truncated or corrupt (DataLossError: " in message
    assert message.endswith(f"; delete {os.path.dirname(path)} to rebuild it")
    assert isinstance(error, OSError)  # what entry points print as one line


def test_truncated_record_file_stops_the_input_iterator_naming_it(truncated):
    builder, path = truncated
    iterator = InputIterator(make_dataset(builder, "train", PipelineConfig(8, 2)))
    with pytest.raises(CorruptRecordFileError) as info:
        next(iterator)
    _assert_names_file(info.value, path)
    with pytest.raises(CorruptRecordFileError) as again:  # it cannot go past the damage
        next(iterator)
    assert again.value is info.value


def test_truncated_record_file_stops_reading_captions_naming_it(truncated):
    builder, path = truncated
    with pytest.raises(CorruptRecordFileError) as info:
        captions(builder)  # what trains the offline tokenizer, before the first batch
    _assert_names_file(info.value, path)
