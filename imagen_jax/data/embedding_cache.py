"""A cache of frozen T5 embeddings, so training reads embeddings instead of captions.

With T5-XXL (4.6B parameters) encoding captions costs as much as a diffusion step,
and the encoder is frozen: run it once over a dataset and store the result. Layout:

    out_dir/cache_info.json                     encoder signature, dtype, shards
    out_dir/{split}-{k:05d}-of-{n:05d}.tfrecord  examples [k*shard_size, ...) of the split

Records follow the split's *stored* order (what `builder.as_dataset(split[a:b],
shuffle_files=False)` yields), carry the example's position and 'index', and keep
only the valid tokens (padding is restored on read), as bfloat16 or float16.

Writing is resumable: each shard is written to a temporary file and renamed when
complete, and a restart skips shards that exist. The signature of the encoder that
wrote the cache (its config.json fields, tokenizer and weight fingerprints, max
length) is recorded; `check_cache` refuses a cache made by a different encoder
than the one the training config names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Any

import ml_dtypes
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tqdm import tqdm

INFO_FILE = "cache_info.json"
DTYPES = {"bfloat16": (ml_dtypes.bfloat16, tf.bfloat16), "float16": (np.float16, tf.float16)}
_FINGERPRINT_BYTES = 1 << 20


def _sha256_file(path: str, limit: int | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if limit is None:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        else:  # size + head + tail: cheap, and differs between any two real checkpoints
            size = os.path.getsize(path)
            digest.update(str(size).encode())
            digest.update(f.read(limit))
            f.seek(max(0, size - limit))
            digest.update(f.read(limit))
    return digest.hexdigest()


def encoder_signature(checkpoint_dir: str, max_length: int) -> dict:
    """What identifies a text encoder, read from its local HF directory without
    loading any weights: config.json's architecture fields, the tokenizer file hash,
    a fingerprint of each safetensors file (size, first and last MiB) and max_length."""
    from imagen_jax.nn.t5 import T5Config

    with open(os.path.join(checkpoint_dir, "config.json"), encoding="utf-8") as f:
        config = T5Config.from_hf_dict(json.load(f))
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "dtype"}
    weights = sorted(n for n in os.listdir(checkpoint_dir) if n.endswith(".safetensors"))
    return {
        "t5_config": fields,
        "max_length": int(max_length),
        "tokenizer_sha256": _sha256_file(os.path.join(checkpoint_dir, "spiece.model")),
        "weights_fingerprint": {n: _sha256_file(os.path.join(checkpoint_dir, n),
                                                _FINGERPRINT_BYTES) for n in weights},
    }


def _differences(recorded: Any, wanted: Any, prefix: str = "") -> list[str]:
    if isinstance(recorded, dict) and isinstance(wanted, dict):
        out = []
        for key in sorted(set(recorded) | set(wanted)):
            out += _differences(recorded.get(key), wanted.get(key), f"{prefix}{key}.")
        return out
    return [] if recorded == wanted else [f"{prefix[:-1]}={recorded!r} (cache) vs {wanted!r}"]


def read_info(cache_dir: str) -> dict:
    path = os.path.join(cache_dir, INFO_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no embedding cache at {cache_dir} (missing {INFO_FILE})")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_info(cache_dir: str, info: dict) -> None:
    tmp = os.path.join(cache_dir, INFO_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(cache_dir, INFO_FILE))


def check_cache(cache_dir: str, signature: dict) -> dict:
    """Returns the cache info if it was written by the encoder `signature` describes;
    otherwise raises a ValueError listing every field that differs."""
    info = read_info(cache_dir)
    diffs = _differences(info["signature"], signature)
    if diffs:
        raise ValueError(f"embedding cache {cache_dir} was made by a different text encoder "
                         f"than the config names: {'; '.join(diffs)}")
    return info


def _shard_file(cache_dir: str, split: str, k: int, n: int) -> str:
    return os.path.join(cache_dir, f"{split}-{k:05d}-of-{n:05d}.tfrecord")


def _int_feature(v: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))


def _serialise(position: int, index: int, embedding: np.ndarray) -> bytes:
    feature = {"position": _int_feature(position), "index": _int_feature(index),
               "length": _int_feature(embedding.shape[0]),
               "embedding": tf.train.Feature(bytes_list=tf.train.BytesList(
                   value=[embedding.tobytes()]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_embedding_cache(builder: tfds.core.DatasetBuilder, split: str, encoder: Any,
                          signature: dict, cache_dir: str, *, dtype: str = "bfloat16",
                          batch_size: int = 64, shard_size: int = 4096,
                          show_progress: bool = True) -> dict:
    """Encodes every caption of `split` with `encoder` (a TextEncoder) into `cache_dir`.

    Resumable: complete shards are kept and skipped; call again after an interruption.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if batch_size <= 0 or shard_size <= 0:
        raise ValueError("batch_size and shard_size must be positive")
    os.makedirs(cache_dir, exist_ok=True)
    if os.path.exists(os.path.join(cache_dir, INFO_FILE)):
        info = check_cache(cache_dir, signature)
        if info["dtype"] != dtype or info["dim"] != encoder.dim:
            raise ValueError(f"embedding cache {cache_dir} holds dtype={info['dtype']}, "
                             f"dim={info['dim']}; asked for dtype={dtype}, dim={encoder.dim}")
    else:
        info = {"signature": signature, "dtype": dtype, "dim": encoder.dim, "splits": {}}
    num_examples = builder.info.splits[split].num_examples
    entry = info["splits"].get(split)
    if entry is None or entry["num_examples"] != num_examples:
        entry = {"num_examples": num_examples, "shard_size": shard_size, "complete": False}
    shard_size = entry["shard_size"]
    num_shards = math.ceil(num_examples / shard_size)
    entry["num_shards"] = num_shards
    info["splits"][split] = entry
    _write_info(cache_dir, info)

    np_dtype = DTYPES[dtype][0]
    bar = tqdm(total=num_examples, desc=f"embedding {split}", unit="caption",
               disable=not show_progress)
    for k in range(num_shards):
        start, end = k * shard_size, min((k + 1) * shard_size, num_examples)
        path = _shard_file(cache_dir, split, k, num_shards)
        if os.path.exists(path):  # written completely by an earlier run
            bar.update(end - start)
            continue
        ds = builder.as_dataset(split=f"{split}[{start}:{end}]", shuffle_files=False,
                                decoders={"image": tfds.decode.SkipDecoding()})
        ds = ds.map(lambda ex: {"caption": ex["caption"], "index": ex["index"]})
        tmp = path + ".tmp"
        position = start
        with tf.io.TFRecordWriter(tmp) as writer:
            for batch in tfds.as_numpy(ds.batch(batch_size)):
                captions = [c.decode("utf-8") for c in batch["caption"]]
                emb, mask = encoder(captions)
                emb, mask = np.asarray(emb), np.asarray(mask)
                for row in range(len(captions)):
                    valid = emb[row][mask[row]].astype(np_dtype)
                    writer.write(_serialise(position, batch["index"][row], valid))
                    position += 1
                bar.update(len(captions))
        if position != end:
            raise RuntimeError(f"shard {k} of {split}: read {position - start} examples, "
                               f"expected {end - start}")
        os.replace(tmp, path)
    bar.close()
    entry["complete"] = True
    _write_info(cache_dir, info)
    return info


def cache_dataset(cache_dir: str, split: str, start: int, end: int) -> tf.data.Dataset:
    """Cached embeddings for stored positions [start, end) of `split`, in order:
    {'position', 'index', 'text' [max_length, dim] float32, 'text_mask' [max_length]}."""
    info = read_info(cache_dir)
    entry = info["splits"].get(split)
    if entry is None or not entry["complete"]:
        raise ValueError(f"embedding cache {cache_dir} has no complete split {split!r}; "
                         "run the cache command (again) to finish it")
    shard_size, num_shards = entry["shard_size"], entry["num_shards"]
    files = [_shard_file(cache_dir, split, k, num_shards)
             for k in range(start // shard_size, math.ceil(end / shard_size))]
    max_length, dim = info["signature"]["max_length"], info["dim"]
    tf_dtype = DTYPES[info["dtype"]][1]
    spec = {"position": tf.io.FixedLenFeature([], tf.int64),
            "index": tf.io.FixedLenFeature([], tf.int64),
            "length": tf.io.FixedLenFeature([], tf.int64),
            "embedding": tf.io.FixedLenFeature([], tf.string)}

    def decode(record):
        ex = tf.io.parse_single_example(record, spec)
        emb = tf.reshape(tf.io.decode_raw(ex["embedding"], tf_dtype), [-1, dim])
        emb = tf.pad(tf.cast(emb, tf.float32), [[0, max_length - ex["length"]], [0, 0]])
        mask = tf.range(max_length, dtype=tf.int64) < ex["length"]
        return {"position": ex["position"], "index": ex["index"],
                "text": tf.ensure_shape(emb, [max_length, dim]), "text_mask": mask}

    ds = tf.data.TFRecordDataset(files).map(decode)
    return ds.filter(lambda ex: (ex["position"] >= start) & (ex["position"] < end))


def join_cache(examples: tf.data.Dataset, cache: tf.data.Dataset) -> tf.data.Dataset:
    """Zips dataset examples with their cached embeddings (same slice, same order),
    checking that every pair refers to the same example."""

    def merge(ex, cached):
        check = tf.debugging.assert_equal(ex["index"], cached["index"],
                                          message="embedding cache out of step with dataset")
        with tf.control_dependencies([check]):
            return dict(ex, text=tf.identity(cached["text"]), text_mask=cached["text_mask"])

    return tf.data.Dataset.zip(examples, cache).map(merge)
