"""Dataset builders by config. Importing this module also registers the project's
TFDS builders by name: `shapes_captions` (offline synthetic shapes) and
`image_text_folder` (your images with captions)."""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf
import tensorflow_datasets as tfds

from imagen_jax.data import image_text_folder, shapes_builder
from imagen_jax.data.damaged_files import damaged_file_error

DATASETS = ("shapes_captions", "image_text_folder")


def data_dir_for(data: Any, workdir: str) -> str:
    """config.data.data_dir, or a tensorflow_datasets folder beside the workdir."""
    return data.data_dir or os.path.join(os.path.dirname(os.path.abspath(workdir)),
                                         "tensorflow_datasets")


def builder_from_config(data: Any, workdir: str) -> tfds.core.DatasetBuilder:
    """The prepared builder `config.data` names (generated or scanned on first use)."""
    data_dir = data_dir_for(data, workdir)
    if data.name == "shapes_captions":
        return shapes_builder.build_shapes_dataset(
            data_dir, resolution=data.resolution, num_train=data.num_train,
            num_test=data.num_test, seed=data.get("dataset_seed", 0))
    if data.name == "image_text_folder":
        if not data.source_dir:
            raise ValueError("config.data.source_dir must name your image folder for "
                             "data.name='image_text_folder'")
        return image_text_folder.build_image_text_folder(data.source_dir, data_dir)
    raise ValueError(f"config.data.name: unknown dataset {data.name!r}; expected one of "
                     f"{DATASETS}")


def captions(builder: tfds.core.DatasetBuilder, split: str = "train",
             limit: int = 20_000) -> list[str]:
    """Up to `limit` captions of a split (e.g. to train an offline tokenizer).

    Raises CorruptRecordFileError, naming the file, if a record file is damaged.
    """
    # One pass: nothing to gain from TFDS caching a small split in memory, and a pass
    # a damaged file cuts short would leave TF's note on the partly read cache printed
    # after the one-line error, when the interpreter exits.
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()},
                            read_config=tfds.ReadConfig(try_autocache=False))
    ds = ds.map(lambda ex: ex["caption"]).take(limit)
    try:
        return [c.decode("utf-8") for c in tfds.as_numpy(ds)]
    except tf.errors.DataLossError as e:  # names no file; raise one that does
        raise damaged_file_error(e, ds) from e
