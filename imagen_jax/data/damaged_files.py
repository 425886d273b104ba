"""Naming the TFRecord file behind a tf.data DataLossError.

A truncated or corrupt TFRecord (a disk filled up, a copy cut short) makes tf.data
raise `tf.errors.DataLossError: truncated record at 2508` with no file name, in a
traceback of hundreds of lines. `damaged_file_error` turns it into one line that
names the file and the directory to delete:

    dataset file /data/shapes_captions/r64_n2000_64_s0/1.0.0/shapes_captions-train.
    tfrecord-00000-of-00001 is truncated or corrupt (DataLossError: truncated record
    at 2508' failed with Read less bytes than requested); delete
    /data/shapes_captions/r64_n2000_64_s0/1.0.0 to rebuild it

It costs nothing until the error: only then does it list the files the dataset
reads (from the dataset's own graph, so it covers the TFDS shards and the
embedding cache alike) and read each one's records to find the damaged one.
"""

from __future__ import annotations

import os
import re

import numpy as np
import tensorflow as tf


class CorruptRecordFileError(OSError):
    """A TFRecord file the input reads is truncated or corrupt; the message names it.

    An OSError, as the standard library's own unreadable-file errors are
    (gzip.BadGzipFile): entry points report it as one line.
    """


def damaged_file_error(error: tf.errors.DataLossError,
                       dataset: tf.data.Dataset) -> CorruptRecordFileError:
    """The one-line error to raise (`from error`) for `error`, met reading `dataset`."""
    files = record_files(dataset)
    for path in files:
        reason = read_error(path)
        if reason is not None:
            return CorruptRecordFileError(
                f"dataset file {path} is truncated or corrupt ({reason}); delete "
                f"{os.path.dirname(path)} to rebuild it")
    return CorruptRecordFileError(
        f"a dataset file is truncated or corrupt ({_describe(error)}); none of the "
        f"{len(files)} TFRecord files the input reads fails when read again alone")


def record_files(dataset: tf.data.Dataset) -> list[str]:
    """The existing TFRecord files named in `dataset`'s graph, in order; [] if the
    graph cannot be read."""
    try:
        # A private method, but the one tf.data's own checkpoints and tf.distribute
        # serialise a dataset with; the pipeline is serialisable for exactly that reason
        # (InputIterator.save). IGNORE: stateful ops need not be serialisable to be listed.
        serialized = dataset._as_serialized_graph(  # noqa: SLF001
            external_state_policy=tf.data.experimental.ExternalStatePolicy.IGNORE)
        graph = tf.compat.v1.GraphDef.FromString(serialized.numpy())
    except Exception:  # noqa: BLE001 -- on the error path, a vaguer message beats a new error
        return []
    nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
    names: dict[str, None] = {}  # ordered set
    for node in nodes:
        if node.op == "Const" and node.attr["dtype"].type == tf.string.as_datatype_enum:
            for value in tf.make_ndarray(node.attr["value"].tensor).ravel():
                name = value.decode("utf-8", "replace")
                # Only TFRecord-named files: a string that merely names some other file
                # must not be read as records and reported corrupt.
                if ".tfrecord" in os.path.basename(name) and tf.io.gfile.exists(name) \
                        and not tf.io.gfile.isdir(name):
                    names[name] = None
    return list(names)


def read_error(path: str) -> str | None:
    """Why reading every record of the TFRecord file `path` fails; None if it does not."""
    try:
        tf.data.TFRecordDataset(path).reduce(np.int64(0), lambda count, _: count + 1)
    except tf.errors.DataLossError as e:
        return _describe(e)
    return None


def _describe(error: tf.errors.OpError) -> str:
    """`DataLossError: truncated record at 2508...`, without TF's op and function names."""
    lines = error.message.strip().splitlines() or [""]
    message = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:.*$", "", lines[0]).strip()
    return f"{type(error).__name__}: {message}"
