r"""Input-pipeline throughput: images/s delivered by tf.data alone (no model).

    python benchmarks/input_pipeline.py --resolution=64 --batch=256 --batches=100

Builds (once) a shapes_captions dataset in --data_dir, then times the pipeline the
base stage trains from (decode, resize/crop, batch, prefetch) after a warm-up.
Prints the measurement with the machine and library versions. Target: >= 500
images/s at 64x64 on a 2-core machine.
"""

from __future__ import annotations

import os
import platform
import time

from absl import app, flags
import tensorflow as tf

from imagen_jax.data.pipeline import PipelineConfig, make_dataset
from imagen_jax.data.shapes_builder import build_shapes_dataset

_DATA_DIR = flags.DEFINE_string("data_dir", "/tmp/imagen_jax_bench_tfds", "TFDS data dir.")
_RES = flags.DEFINE_integer("resolution", 64, "Image side.")
_NUM = flags.DEFINE_integer("num_train", 4096, "Examples to generate (once).")
_BATCH = flags.DEFINE_integer("batch", 256, "Batch size.")
_BATCHES = flags.DEFINE_integer("batches", 100, "Timed batches.")
_WARMUP = flags.DEFINE_integer("warmup", 10, "Untimed batches first.")
_LOWRES = flags.DEFINE_integer("lowres", 0, "Also make a low-res image of this side (SR).")


def main(argv):
    del argv
    start = time.perf_counter()
    builder = build_shapes_dataset(_DATA_DIR.value, resolution=_RES.value,
                                   num_train=_NUM.value, num_test=64)
    print(f"dataset ready in {time.perf_counter() - start:.1f}s "
          f"({builder.info.splits['train'].num_examples} train examples at {builder.data_dir})")
    config = PipelineConfig(image_size=_RES.value, global_batch_size=_BATCH.value,
                            lowres_size=_LOWRES.value)
    iterator = iter(make_dataset(builder, "train", config))
    for _ in range(_WARMUP.value):
        next(iterator)
    start = time.perf_counter()
    for _ in range(_BATCHES.value):
        batch = next(iterator)
    elapsed = time.perf_counter() - start
    images = _BATCHES.value * _BATCH.value
    print(f"input pipeline: {images / elapsed:,.0f} images/s at {_RES.value}x{_RES.value} "
          f"(batch {_BATCH.value}, {_BATCHES.value} batches in {elapsed:.2f}s, "
          f"last batch {tuple(batch['images'].shape)})")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; "
          f"python {platform.python_version()}, tensorflow {tf.__version__}")


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    app.run(main)
