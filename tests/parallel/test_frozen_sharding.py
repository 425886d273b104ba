"""The frozen encoders (T5, CLIP) on a mesh: placed from their logical axis names, so
under FSDP each of 8 devices stores about 1/8 of the weights, with outputs equal to
the unsharded encoder's; and loaded in the config's dtype."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from imagen_jax.nn.t5 import T5Config
from imagen_jax.parallel.mesh import make_mesh
from imagen_jax.parallel.rules import DEFAULT_RULES
from imagen_jax.parallel.sharding import batch_sharding
from imagen_jax.text.encoder import TextEncoder
from imagen_jax.train.sharded import place_frozen
from unclip_jax.clip import CLIPConfig
from unclip_jax.conditioning import FrozenCLIP

LENGTH = 16
T5_SMALL = T5Config(vocab_size=128, d_model=64, d_kv=8, d_ff=128, num_layers=2, num_heads=8,
                    feed_forward_proj="gated-gelu")


def _tokenizer(vocab: int = 128) -> types.SimpleNamespace:
    # Only the sizes are read when an encoder is built; these tests feed ids directly.
    return types.SimpleNamespace(vocab_size=vocab, max_length=LENGTH)


def _bytes_on_device(tree, device) -> int:
    total = 0
    for leaf in jax.tree.leaves(tree):
        total += sum(s.data.nbytes for s in leaf.addressable_shards if s.device == device)
    return total


def _total_bytes(tree) -> int:
    return sum(leaf.nbytes for leaf in jax.tree.leaves(tree))


def _ids(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 128, size=(batch, LENGTH)).astype(np.int32)
    lengths = rng.integers(1, LENGTH + 1, size=batch)
    mask = np.arange(LENGTH)[None] < lengths[:, None]
    return np.where(mask, ids, 0), mask


@pytest.fixture(scope="module")
def fsdp8():
    return make_mesh({"data": 1, "fsdp": 8, "tensor": 1})


def test_t5_fsdp_stores_an_eighth_per_device_and_encodes_like_one_device(fsdp8):
    encoder = TextEncoder.random(T5_SMALL, _tokenizer(), seed=3)
    params, shardings = place_frozen(encoder, fsdp8, DEFAULT_RULES)
    total = _total_bytes(encoder.params)
    per_device = [_bytes_on_device(params, d) for d in fsdp8.devices.flat]
    # The norm scales and relative-position table are replicated by the rules: a few %.
    assert max(per_device) <= 1.1 * total / 8, (per_device, total)
    assert max(per_device) < total / 4

    ids, mask = _ids(8)
    sh = batch_sharding(fsdp8, 2, DEFAULT_RULES)
    batch = {"text_ids": jax.device_put(ids, sh), "text_mask": jax.device_put(mask, sh)}
    sharded = jax.jit(encoder.prepare)(params, batch)["text"]
    expected = encoder.apply(encoder.params, ids, mask)
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_the_residual_hint_makes_fsdp_gather_weights_not_all_reduce_activations(fsdp8):
    # Without it XLA carries T5's activations split along 'embed' (as its embedding
    # table is) and all-reduces partial sums after every matmul: 21 GiB per chip per
    # step for T5-XXL on a v4-8 (imagen_jax/parallel/activations.py).
    from imagen_jax.parallel import analysis
    from imagen_jax.parallel.activations import activation_sharding, shard_residual

    encoder = TextEncoder.random(T5_SMALL, _tokenizer(), seed=3)
    params, _ = place_frozen(encoder, fsdp8, DEFAULT_RULES)
    ids, mask = _ids(8)
    sh = batch_sharding(fsdp8, 2, DEFAULT_RULES)
    batch = {"text_ids": jax.device_put(ids, sh), "text_mask": jax.device_put(mask, sh)}

    def hinted(p, b):
        with activation_sharding(fsdp8, DEFAULT_RULES):
            return encoder.prepare(p, b)

    def all_reduces(fn) -> int:
        hlo = jax.jit(fn).lower(params, batch).compile().as_text()
        return analysis.collective_bytes(hlo, 8)["all-reduce"].count

    assert all_reduces(encoder.prepare) > 0  # the fault the hint exists for
    assert all_reduces(hinted) == 0
    got = jax.jit(hinted)(params, batch)["text"]
    np.testing.assert_allclose(np.asarray(got), np.asarray(encoder.apply(encoder.params, ids,
                                                                        mask)),
                               rtol=1e-5, atol=1e-5)
    x = jnp.ones((8, 4))
    assert shard_residual(x) is x  # outside the context: the identity


def test_clip_fsdp_stores_an_eighth_per_device_and_encodes_like_one_device(fsdp8):
    config = CLIPConfig(embed_dim=64, vision_width=64, vision_heads=8, text_width=64,
                        text_heads=8)
    from unclip_jax.clip import CLIP
    images = jnp.zeros((1, 32, 32, 3))
    ids, mask = _ids(8)
    variables = CLIP(config).init(jax.random.PRNGKey(0), images, jnp.asarray(ids[:1]),
                                  jnp.asarray(mask[:1]))
    frozen = FrozenCLIP(config, jax.device_get(jax.tree.map(
        lambda x: x.unbox() if hasattr(x, "unbox") else x, variables["params"],
        is_leaf=lambda x: hasattr(x, "unbox"))), _tokenizer())
    params, _ = place_frozen(frozen, fsdp8, DEFAULT_RULES)
    total = _total_bytes(frozen.params)
    assert max(_bytes_on_device(params, d) for d in fsdp8.devices.flat) <= 1.15 * total / 8

    pixels = np.random.default_rng(1).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    sh = batch_sharding(fsdp8, None, DEFAULT_RULES)
    batch = {k: jax.device_put(v, sh) for k, v in
             dict(images=pixels, text_ids=ids, text_mask=mask).items()}
    got = jax.jit(frozen.prepare)(params, batch)
    want = frozen.prepare(frozen.params, dict(images=pixels, text_ids=ids, text_mask=mask))
    for key in ("image_embed", "text_embed", "text"):
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), rtol=1e-5,
                                   atol=1e-5, err_msg=key)


def test_no_conditioner_places_nothing(fsdp8):
    assert place_frozen(None, fsdp8, DEFAULT_RULES) == (None, None)


def test_text_encoder_from_config_loads_in_the_config_dtype(tmp_path):
    from imagen_jax.text.from_config import text_encoder_from_config

    text = ml_collections.ConfigDict(dict(
        checkpoint="", max_length=LENGTH, vocab_size=64, seed=0, dtype="bfloat16",
        random_t5=dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                       num_heads=4, feed_forward_proj="gated-gelu")))
    colours, shapes = ["red", "green", "blue", "yellow"], ["circle", "square", "triangle"]
    captions = lambda: [f"a {c} {s} on the {side}" for c in colours for s in shapes
                        for side in ("left", "right", "top", "bottom")] * 4
    encoder = text_encoder_from_config(text, str(tmp_path), captions)
    assert {x.dtype for x in jax.tree.leaves(encoder.params)} == {jnp.dtype(jnp.bfloat16)}
    emb, mask = encoder(["a red circle on the left"])
    assert emb.dtype == jnp.float32 and bool(jnp.isfinite(emb).all())


@pytest.mark.parametrize("family", ["imagen", "unclip"])
def test_a_frozen_dtype_outside_the_list_is_refused(family):
    from imagen_jax.stage_registry import lookup
    from configs import imagen, unclip

    if family == "imagen":
        config = imagen.get_config("tiny,base64")
        config.text.dtype = "float16"
        field = "config.text.dtype"
    else:
        config = unclip.get_config("tiny,prior")
        config.clip.workdir = "/somewhere"
        config.clip.dtype = "int8"
        field = "config.clip.dtype"
    with pytest.raises(ValueError, match=field):
        lookup(config.stage).check_config(config)


def test_with_the_embedding_cache_the_encoder_is_not_loaded(tmp_path):
    """Cached T5 embeddings: no encoder is built, so no T5 weights reach any device
    (the named checkpoint does not even exist here; loading it would fail)."""
    from configs import imagen
    from imagen_jax.stage_registry import lookup

    config = imagen.get_config("tiny,base64")
    config.text.checkpoint = str(tmp_path / "no-such-t5")
    config.data.embedding_cache = str(tmp_path / "cache")
    spec = lookup(config.stage)
    assert spec.conditioner(config, str(tmp_path), lambda: []) is None
    assert spec.weightless_conditioner(config) is None
