"""The tf.data pipeline and the T5 embedding cache, on a tiny shapes dataset."""

import os
import shutil

import jax
import numpy as np
import pytest
import tensorflow as tf

from imagen_jax.data import embedding_cache
from imagen_jax.data.pipeline import (InputIterator, PipelineConfig, make_dataset, preprocess,
                                      process_range)
from imagen_jax.data.shapes_builder import build_shapes_dataset
from imagen_jax.text import TextEncoder, Tokenizer, train_sentencepiece
from tests.text.helpers import build_hf_model, shape_captions

NUM_TRAIN = 48


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return build_shapes_dataset(str(tmp_path_factory.mktemp("tfds")), resolution=32,
                                num_train=NUM_TRAIN, num_test=8, seed=0)


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    """A local HF T5 directory (random weights) with a tokenizer for shape captions."""
    directory = tmp_path_factory.mktemp("t5")
    build_hf_model("gated-gelu").save_pretrained(directory)
    train_sentencepiece(shape_captions(300), str(directory / "spiece.model"), vocab_size=64)
    return str(directory)


def _take(ds, n):
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


@pytest.mark.parametrize("cfg, image_shape, lowres_shape", [
    (PipelineConfig(image_size=32, global_batch_size=8), (8, 32, 32, 3), None),
    (PipelineConfig(image_size=32, global_batch_size=8, lowres_size=8), (8, 32, 32, 3),
     (8, 8, 8, 3)),
    (PipelineConfig(image_size=32, global_batch_size=4, crop_size=16, lowres_size=8),
     (4, 16, 16, 3), (4, 4, 4, 3)),
], ids=["base", "sr", "sr-crop"])
def test_batches_have_stage_shapes_dtypes_and_ranges(shapes, cfg, image_shape, lowres_shape):
    batch = _take(make_dataset(shapes, "train", cfg), 1)[0]
    assert batch["images"].shape == image_shape and batch["images"].dtype == np.float32
    assert -1.0 <= batch["images"].min() < batch["images"].max() <= 1.0
    assert batch["caption"].dtype == object and batch["index"].dtype == np.int64
    if lowres_shape is None:
        assert "lowres" not in batch
    else:
        assert batch["lowres"].shape == lowres_shape
        # The low-res image is the same (cropped) image, downsampled.
        factor = image_shape[1] // lowres_shape[1]
        pooled = batch["images"].reshape(image_shape[0], lowres_shape[1], factor,
                                         lowres_shape[2], factor, 3).mean((2, 4))
        # (box-pooling reference vs the pipeline's triangle filter: close, not equal)
        assert np.abs(pooled - batch["lowres"]).mean() < 0.1


def test_non_square_images_are_resized_and_centre_cropped():
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 20:60] = 255  # a white centre band exactly as wide as the crop
    example = {"image": tf.io.encode_png(image), "caption": tf.constant("x"),
               "id": tf.constant("a"), "index": tf.constant(0, tf.int64)}
    out = preprocess(example, tf.constant(0, tf.int64), PipelineConfig(16, 1))
    assert out["images"].shape == (16, 16, 3)
    assert float(tf.reduce_min(out["images"][:, 2:-2])) > 0.9  # the centre band survives


def test_processes_read_disjoint_shards_covering_the_split(shapes):
    cfg = PipelineConfig(image_size=32, global_batch_size=8)
    seen = []
    for p in range(2):
        batches = _take(make_dataset(shapes, "train", cfg, process_index=p, process_count=2,
                                     repeat=False, shuffle=False), 100)
        assert all(b["images"].shape[0] == 4 for b in batches)  # local share of 8
        seen.append({i for b in batches for i in b["index"]})
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == set(range(NUM_TRAIN))
    assert process_range(NUM_TRAIN + 1, 1, 2) == (24, 48)  # the odd one out is dropped
    with pytest.raises(ValueError, match="not divisible by the process count"):
        make_dataset(shapes, "train", PipelineConfig(32, 7), process_index=0, process_count=2)


def test_stream_is_deterministic_given_the_seed(shapes):
    cfg = PipelineConfig(image_size=32, global_batch_size=8, random_crop=True, crop_size=16)
    a = _take(make_dataset(shapes, "train", cfg), 3)
    b = _take(make_dataset(shapes, "train", cfg), 3)
    c = _take(make_dataset(shapes, "train", PipelineConfig(32, 8, crop_size=16, seed=1)), 3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["images"], y["images"])
    assert any(not np.array_equal(x["index"], z["index"]) for x, z in zip(a, c))


def test_iterator_restore_continues_with_the_identical_next_batch(shapes, tmp_path):
    cfg = PipelineConfig(image_size=32, global_batch_size=8, crop_size=16)
    first = InputIterator(make_dataset(shapes, "train", cfg))
    for _ in range(7):  # past the end of the first epoch (6 batches)
        next(first)
    prefix = first.save(str(tmp_path / "iter" / "state"))
    expected = [next(first) for _ in range(3)]
    second = InputIterator(make_dataset(shapes, "train", cfg))
    second.restore(prefix)
    for want in expected:
        got = next(second)
        np.testing.assert_array_equal(np.asarray(got["images"]), np.asarray(want["images"]))
        np.testing.assert_array_equal(got["caption"], want["caption"])


def test_iterator_makes_global_arrays_and_tokenises(shapes, t5_dir):
    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    tokenizer = Tokenizer(os.path.join(t5_dir, "spiece.model"), max_length=12)
    it = InputIterator(make_dataset(shapes, "train", PipelineConfig(32, 8)), sharding, tokenizer)
    batch = next(it)
    assert isinstance(batch["images"], jax.Array) and batch["images"].sharding == sharding
    assert batch["text_ids"].shape == (8, 12) and batch["text_mask"].dtype == bool
    assert isinstance(batch["caption"], np.ndarray)  # host-only


def _direct(encoder, captions):
    emb, mask = encoder(list(captions))
    return np.asarray(emb), np.asarray(mask)


# Rounding to the stored dtype is off by at most half a unit in the last place:
# 2^-8 relative for bfloat16 (7 stored mantissa bits), 2^-11 for float16 (10 bits).
HALF_ULP = {"bfloat16": 2.0**-8, "float16": 2.0**-11}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cache_round_trip_equals_direct_encoding(shapes, t5_dir, tmp_path, dtype):
    encoder = TextEncoder.from_pretrained(t5_dir, max_length=12)
    signature = embedding_cache.encoder_signature(t5_dir, 12)
    cache = str(tmp_path / "cache")
    embedding_cache.write_embedding_cache(shapes, "train", encoder, signature, cache,
                                          dtype=dtype, batch_size=5, shard_size=20,
                                          show_progress=False)
    cfg = PipelineConfig(image_size=32, global_batch_size=8)
    batches = _take(make_dataset(shapes, "train", cfg, embedding_cache=cache,
                                 cache_signature=signature, repeat=False), 100)
    assert sum(len(b["index"]) for b in batches) == NUM_TRAIN
    for b in batches:
        emb, mask = _direct(encoder, [c.decode() for c in b["caption"]])
        np.testing.assert_array_equal(b["text_mask"], mask)
        # (the encoder's float32 output itself varies ~1e-7 with batch composition)
        np.testing.assert_allclose(b["text"], emb, rtol=HALF_ULP[dtype] * 1.01, atol=1e-6)
        assert np.all(b["text"][~mask] == 0)
    # Two processes read their own slice of the cache.
    half = _take(make_dataset(shapes, "train", cfg, process_index=1, process_count=2,
                              embedding_cache=cache, repeat=False, shuffle=False), 100)
    assert {i for b in half for i in b["index"]} == {
        i for b in _take(make_dataset(shapes, "train", cfg, process_index=1, process_count=2,
                                      repeat=False, shuffle=False), 100) for i in b["index"]}


def test_cache_resumes_after_interruption_and_refuses_other_encoders(shapes, t5_dir, tmp_path):
    encoder = TextEncoder.from_pretrained(t5_dir, max_length=12)
    signature = embedding_cache.encoder_signature(t5_dir, 12)
    cache = str(tmp_path / "cache")
    kwargs = dict(batch_size=8, shard_size=16, show_progress=False)
    embedding_cache.write_embedding_cache(shapes, "train", encoder, signature, cache, **kwargs)
    shards = sorted(f for f in os.listdir(cache) if f.endswith(".tfrecord"))
    assert len(shards) == 3
    kept = os.path.join(cache, shards[0])
    mtime = os.stat(kept).st_mtime_ns
    reference = open(os.path.join(cache, shards[2]), "rb").read()
    # An interrupted run: the last shard never got renamed into place.
    shutil.move(os.path.join(cache, shards[2]), os.path.join(cache, shards[2] + ".tmp"))
    with pytest.raises(ValueError, match="no complete split"):
        info = embedding_cache.read_info(cache)
        info["splits"]["train"]["complete"] = False
        embedding_cache._write_info(cache, info)
        embedding_cache.cache_dataset(cache, "train", 0, NUM_TRAIN)
    embedding_cache.write_embedding_cache(shapes, "train", encoder, signature, cache, **kwargs)
    assert os.stat(kept).st_mtime_ns == mtime  # finished shards are not redone
    assert open(os.path.join(cache, shards[2]), "rb").read() == reference
    # A config naming another encoder (here: another max_length) is refused.
    other = embedding_cache.encoder_signature(t5_dir, 16)
    with pytest.raises(ValueError, match=r"different text encoder.*max_length=12 \(cache\) vs 16"):
        make_dataset(shapes, "train", PipelineConfig(32, 8), embedding_cache=cache,
                     cache_signature=other)
