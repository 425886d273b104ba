"""The tf.data input pipeline: TFDS examples -> per-process batches -> global jax.Arrays.

    builder.as_dataset(split[start:end])        this process's slice only
      (zip) cached text embeddings               same slice, same stored order
      repeat -> shuffle(seed) -> enumerate       the counter seeds per-example randomness
      map: decode, resize + centre/random crop, [optional flip], low-res image
      batch(local share of the global batch) -> prefetch
    InputIterator: numpy batch -> tokenise captions (host) -> global jax.Array per key

Everything random is stateless and seeded by (seed, element counter), so the stream
is a pure function of the seed, and `InputIterator.save/restore` (tf.data's own
iterator checkpoint) resumes at the exact next batch. Tokenisation runs on the host
after batching rather than inside tf.data, which keeps the graph free of Python ops
that tf.data cannot checkpoint.

Random horizontal flips are off by default: they turn "a circle to the left of a
square" into a false caption.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from imagen_jax.data.damaged_files import CorruptRecordFileError, damaged_file_error

# Keys that stay on the host as numpy (strings); everything else becomes a jax.Array.
HOST_KEYS = ("caption", "id")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What one stage's batches look like.

    image_size: side of the training images (64 for the base stage).
    lowres_size: side of the low-res conditioning image (SR stages), 0 for none;
      made by downsampling the same (cropped) image.
    crop_size: 0 for whole images; else random crops of this side from the image
      resized to image_size (SR1024 trains on 256 crops of 1024 images).
    random_crop: take a random (not centred) square from non-square images.
    random_flip: random left-right flips; breaks left/right captions, off by default.
    """

    image_size: int
    global_batch_size: int
    lowres_size: int = 0
    crop_size: int = 0
    random_crop: bool = False
    random_flip: bool = False
    shuffle_buffer: int = 10_000
    seed: int = 0

    def __post_init__(self):
        if self.image_size <= 0 or self.global_batch_size <= 0:
            raise ValueError("PipelineConfig.image_size and global_batch_size must be positive")
        side = self.crop_size or self.image_size
        if self.crop_size and self.crop_size > self.image_size:
            raise ValueError(f"PipelineConfig.crop_size {self.crop_size} exceeds image_size "
                             f"{self.image_size}")
        if self.lowres_size and (side % self.lowres_size or
                                 self.image_size % self.lowres_size):
            raise ValueError(f"PipelineConfig.lowres_size {self.lowres_size} does not divide "
                             f"the training image side {side}")

    @property
    def output_size(self) -> int:
        return self.crop_size or self.image_size

    @property
    def lowres_output_size(self) -> int:
        if not self.lowres_size:
            return 0
        return self.output_size * self.lowres_size // self.image_size


def process_range(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
    """[start, end) of this process's equal share; the remainder (< process_count) is
    dropped so every process yields the same number of batches (multi-host lockstep)."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    per_process = num_examples // process_count
    if per_process == 0:
        raise ValueError(f"{num_examples} examples cannot be split over {process_count} processes")
    return process_index * per_process, (process_index + 1) * per_process


def local_batch_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size % process_count:
        raise ValueError(f"global batch size {global_batch_size} is not divisible by the "
                         f"process count {process_count}")
    return global_batch_size // process_count


def _resize_shorter_side(image: tf.Tensor, size: int) -> tf.Tensor:
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(h, w)
    new = tf.cast(tf.math.ceil(tf.stack([h * scale, w * scale]) - 1e-4), tf.int32)
    new = tf.maximum(new, size)
    return tf.cond(tf.reduce_all(tf.equal(shape[:2], new)), lambda: image,
                   lambda: tf.image.resize(image, new, "bilinear", antialias=True))


def _square_crop(image: tf.Tensor, size: int, seed: tf.Tensor | None) -> tf.Tensor:
    """A size x size crop: random if seeded, else centred."""
    if seed is not None:
        return tf.image.stateless_random_crop(image, [size, size, 3], seed)
    shape = tf.shape(image)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    return image[top:top + size, left:left + size]


def preprocess(example: dict, counter: tf.Tensor, config: PipelineConfig) -> dict:
    """One example -> images in [-1, 1] at the stage's sizes, plus host metadata."""
    seeds = tf.random.experimental.stateless_split(
        tf.stack([tf.cast(config.seed, tf.int64), counter]), 3)
    image = example["image"]
    if image.dtype == tf.string:  # images are decoded here, after shuffling bytes
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
    image = tf.cast(image, tf.float32) / 127.5 - 1.0
    image = _resize_shorter_side(image, config.image_size)
    image = _square_crop(image, config.image_size, seeds[0] if config.random_crop else None)
    if config.crop_size:
        image = _square_crop(image, config.crop_size, seeds[1])
    if config.random_flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[2])
    image = tf.clip_by_value(image, -1.0, 1.0)
    out = {"images": tf.ensure_shape(image, [config.output_size, config.output_size, 3]),
           "caption": example["caption"], "id": example["id"], "index": example["index"]}
    if config.lowres_size:
        low = config.lowres_output_size
        out["lowres"] = tf.image.resize(image, [low, low], "bilinear", antialias=True)
    for key in ("text", "text_mask"):  # from the embedding cache, when zipped in
        if key in example:
            out[key] = example[key]
    return out


def make_dataset(builder: tfds.core.DatasetBuilder, split: str, config: PipelineConfig, *,
                 process_index: int = 0, process_count: int = 1,
                 embedding_cache: str | None = None, cache_signature: dict | None = None,
                 repeat: bool = True, shuffle: bool = True) -> tf.data.Dataset:
    """This process's batches of `split`, each holding its share of the global batch.

    With `embedding_cache`, cached T5 embeddings replace tokenisation; pass the
    `encoder_signature` of the encoder the training config names as `cache_signature`
    to refuse a cache written by another encoder.
    """
    num_examples = builder.info.splits[split].num_examples
    start, end = process_range(num_examples, process_index, process_count)
    batch = local_batch_size(config.global_batch_size, process_count)
    ds = builder.as_dataset(split=f"{split}[{start}:{end}]", shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()})
    if embedding_cache:
        from imagen_jax.data import embedding_cache as cache
        if cache_signature is not None:
            cache.check_cache(embedding_cache, cache_signature)
        ds = cache.join_cache(ds, cache.cache_dataset(embedding_cache, split, start, end))
    if repeat:
        ds = ds.repeat()
    if shuffle:
        ds = ds.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
    ds = ds.enumerate().map(lambda i, ex: preprocess(ex, i, config),
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.map_parallelization = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


class InputIterator(Iterator[dict]):
    """Local tf.data batches -> global jax.Arrays under `sharding`, with saveable state.

    With a tokenizer, captions are tokenised on the host into 'text_ids' and
    'text_mask' (unless the batch already carries cached 'text' embeddings).
    A truncated or corrupt record file raises `CorruptRecordFileError` naming it.
    """

    def __init__(self, dataset: tf.data.Dataset, sharding: jax.sharding.Sharding | None = None,
                 tokenizer: Any = None):
        self._dataset = dataset
        self._iterator = iter(dataset)
        self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)
        self._failure: CorruptRecordFileError | None = None  # raised by every next()
        self.sharding = sharding
        self.tokenizer = tokenizer

    def _to_global(self, value: np.ndarray) -> jax.Array:
        if self.sharding is None:
            return jax.numpy.asarray(value)
        return jax.make_array_from_process_local_data(self.sharding, value)

    def __next__(self) -> dict:
        if self._failure is None:
            try:
                batch = next(self._iterator)
            except tf.errors.DataLossError as e:  # names no file; raise one that does
                self._failure = damaged_file_error(e, self._dataset)
                # The iterator cannot go past the damage. Released here, with TF's error
                # (whose traceback holds it) not chained to ours, it prints its note
                # about a partly read cache (TFDS caches small datasets) now, before a
                # CLI prints our one-line error, instead of after it at exit.
                self._iterator = self._checkpoint = None
        if self._failure is not None:
            raise self._failure
        local = {k: v.numpy() for k, v in batch.items()}
        if self.tokenizer is not None and "text" not in local:
            captions = [c.decode("utf-8") for c in local["caption"]]
            tokens = self.tokenizer.encode(captions)
            local["text_ids"], local["text_mask"] = tokens.ids, tokens.mask
        return {k: (v if k in HOST_KEYS else self._to_global(v)) for k, v in local.items()}

    def save(self, path: str) -> str:
        """Writes the iterator position (tf.data checkpoint) under the prefix `path`."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return self._checkpoint.write(path)

    def restore(self, path: str) -> None:
        """Continues from a position written by `save` (same pipeline and seed)."""
        self._checkpoint.read(path).assert_consumed()
