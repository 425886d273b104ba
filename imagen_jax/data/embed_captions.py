r"""Encode a dataset's captions once with the frozen T5 encoder and cache them.

    python -m imagen_jax.data.embed_captions --dataset=shapes_captions/64 \
        --data_dir=~/tensorflow_datasets --split=train \
        --text_checkpoint=/models/t5-v1_1-xxl --max_length=128 --out=/data/t5xxl_cache

Interrupted? Run the same command again: finished shards are kept. Training then
reads the cache with `--config.data.embedding_cache=/data/t5xxl_cache`, and refuses
it if the config names a different encoder.
"""

from __future__ import annotations

import sys

from absl import app, flags
import jax.numpy as jnp
import tensorflow_datasets as tfds

from imagen_jax.data import embedding_cache

_DATASET = flags.DEFINE_string("dataset", "shapes_captions/64", "TFDS name[/config].")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (prepared dataset).")
_SPLIT = flags.DEFINE_string("split", "train", "Split to encode.")
_CHECKPOINT = flags.DEFINE_string("text_checkpoint", None,
                                  "Local HF T5 directory: config.json, safetensors, spiece.model.")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 128, "Tokens per caption.")
_OUT = flags.DEFINE_string("out", None, "Cache directory.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", sorted(embedding_cache.DTYPES), "Stored dtype.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Captions per encoder call.")
_ENCODER_DTYPE = flags.DEFINE_enum(
    "encoder_dtype", "bfloat16", ["bfloat16", "float32"],
    "The encoder's params and compute dtype (bfloat16: T5-XXL in 8.9 GiB, as it trains).")


def main(argv):
    del argv
    # Registers our builders with TFDS so that tfds.builder finds them by name.
    from imagen_jax.data import datasets  # noqa: F401
    from imagen_jax.text import TextEncoder

    missing = [f.name for f in (_CHECKPOINT, _OUT) if not f.value]
    if missing:
        sys.exit(f"error: --{' and --'.join(missing)} required")
    try:
        builder = tfds.builder(_DATASET.value, data_dir=_DATA_DIR.value)
        signature = embedding_cache.encoder_signature(_CHECKPOINT.value, _MAX_LENGTH.value)
        encoder = TextEncoder.from_pretrained(_CHECKPOINT.value, max_length=_MAX_LENGTH.value,
                                              dtype=jnp.dtype(_ENCODER_DTYPE.value))
        info = embedding_cache.write_embedding_cache(
            builder, _SPLIT.value, encoder, signature, _OUT.value, dtype=_DTYPE.value,
            batch_size=_BATCH.value)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    entry = info["splits"][_SPLIT.value]
    print(f"cached {entry['num_examples']} captions of {_DATASET.value}:{_SPLIT.value} in "
          f"{entry['num_shards']} shard(s) at {_OUT.value} ({info['dtype']}, dim {info['dim']})")


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    app.run(main)
