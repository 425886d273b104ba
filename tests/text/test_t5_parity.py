"""T5Encoder + converter against transformers' PyTorch T5 built from random weights."""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.nn.partitioning import unannotated_leaves
from imagen_jax.nn.t5 import T5Config, T5Encoder, relative_position_buckets
from imagen_jax.text import load_t5_encoder

from tests.text.helpers import build_hf_model, hf_last_hidden_state, padded_batch

TOL = 1e-4


def _flax_hidden(directory, ids, mask, dtype=jnp.float32):
    config, params = load_t5_encoder(directory, dtype=dtype)
    out = T5Encoder(config).apply({"params": params}, jnp.asarray(ids, jnp.int32), mask)
    return config, params, np.asarray(out.astype(jnp.float32))


@pytest.mark.parametrize("variant", ["relu", "gated-gelu"])
def test_parity_with_transformers(hf_checkpoints, variant):
    model, directory = hf_checkpoints[variant]
    ids, mask = padded_batch()
    expected = hf_last_hidden_state(model, ids, mask)
    config, _, got = _flax_hidden(directory, ids, mask)
    assert config.feed_forward_proj == variant
    err = float(np.abs(got - expected).max())  # over all positions, padded ones included
    print(f"\nparity max abs err [{variant}] {err:.2e}")
    assert got.shape == expected.shape == (4, 20, 32)
    assert err <= TOL


def test_sharded_checkpoint_parity(hf_checkpoints, tmp_path):
    model, _ = hf_checkpoints["gated-gelu"]
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert not (tmp_path / "model.safetensors").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    ids, mask = padded_batch()
    _, _, got = _flax_hidden(tmp_path, ids, mask)
    err = float(np.abs(got - hf_last_hidden_state(model, ids, mask)).max())
    print(f"\nparity max abs err [sharded gated-gelu] {err:.2e}")
    assert err <= TOL


def test_encoder_of_full_conditional_generation_checkpoint(tmp_path):
    model = build_hf_model("relu", seed=1, full=True)
    model.save_pretrained(tmp_path)
    ids, mask = padded_batch(seed=1)
    _, params, got = _flax_hidden(tmp_path, ids, mask)
    err = float(np.abs(got - hf_last_hidden_state(model, ids, mask)).max())
    print(f"\nparity max abs err [T5ForConditionalGeneration encoder] {err:.2e}")
    assert err <= TOL
    assert not any("decoder" in k for k in params)


def test_bfloat16_load(hf_checkpoints):
    model, directory = hf_checkpoints["gated-gelu"]
    ids, mask = padded_batch()
    config, params, got = _flax_hidden(directory, ids, mask, dtype=jnp.bfloat16)
    assert jnp.dtype(config.dtype) == jnp.bfloat16
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    expected = hf_last_hidden_state(model, ids, mask)
    err = float(np.abs(got - expected).max())
    print(f"\nparity max abs err [bf16 params+compute vs fp32 torch] {err:.2e} "
          f"(|ref| max {np.abs(expected).max():.2f})")
    assert err <= 0.1 * max(1.0, float(np.abs(expected).max()))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.int32, "float64"])
def test_unsupported_param_dtype(hf_checkpoints, dtype):
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        load_t5_encoder(hf_checkpoints["relu"][1], dtype=dtype)


@pytest.mark.parametrize("variant", ["relu", "gated-gelu"])
def test_every_parameter_has_logical_axes(variant):
    config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                      feed_forward_proj=variant)
    ids = jnp.zeros((1, 8), jnp.int32)
    variables = jax.eval_shape(T5Encoder(config).init, jax.random.PRNGKey(0), ids, ids == 0)
    assert unannotated_leaves(variables) == []
    names = {jax.tree_util.keystr(p): leaf.names for p, leaf in
             jax.tree_util.tree_flatten_with_path(
                 variables, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]}
    assert names["['params']['token_embedder']['embedding']"] == ("vocab", "embed")
    assert names["['params']['relative_position_bias']['embedding']"] == (
        "relpos_buckets", "heads")
    assert names["['params']['layers_1']['attention']['out']['dense']['kernel']"] == (
        "heads", "kv", "embed")


def test_relative_position_buckets_match_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention
    import torch

    length = 300  # distances beyond max_distance land in the last bucket
    relative = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    for num_buckets, max_distance in [(32, 128), (32, 64), (8, 16), (64, 256)]:
        ours = relative_position_buckets(length, length, num_buckets, max_distance)
        theirs = T5Attention._relative_position_bucket(relative, True, num_buckets, max_distance)
        np.testing.assert_array_equal(ours, theirs.numpy())


def test_dropout_only_when_not_deterministic():
    config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
                      dropout_rate=0.5)
    ids, mask = padded_batch(vocab_size=64)

    @functools.partial(jax.jit, static_argnames=("rate", "deterministic"))
    def run(params, rate, deterministic, key):
        module = T5Encoder(dataclasses.replace(config, dropout_rate=rate))
        return module.apply({"params": params}, ids, mask, deterministic=deterministic,
                            rngs={"dropout": key})

    # rbg keys: the same test, a third of threefry's compile time on CPU.
    key = jax.random.key(1, impl="rbg")
    params = jax.jit(T5Encoder(config).init)(jax.random.PRNGKey(0), ids, mask)["params"]
    det = run(params, 0.5, True, key)
    np.testing.assert_array_equal(det, run(params, 0.5, True, jax.random.key(2, impl="rbg")))
    noisy = run(params, 0.5, False, key)
    assert np.abs(np.asarray(noisy - det)).max() > 1e-3
    np.testing.assert_allclose(run(params, 0.0, False, key), det, atol=1e-6)


def test_config_from_hf_dict_and_validation(hf_checkpoints):
    with open(os.path.join(hf_checkpoints["gated-gelu"][1], "config.json")) as f:
        hf = json.load(f)
    config = T5Config.from_hf_dict(hf)
    assert (config.d_model, config.num_layers, config.is_gated, config.activation) == (
        32, 2, True, "gelu_new")
    assert not T5Config.from_hf_dict({**hf, "feed_forward_proj": "relu"}).is_gated
    with pytest.raises(ValueError, match="gated-swiglu"):
        T5Config.from_hf_dict({**hf, "feed_forward_proj": "gated-swiglu"})
    with pytest.raises(ValueError, match="d_model"):
        T5Config.from_hf_dict({**hf, "d_model": 0})
    with pytest.raises(ValueError, match="num_heads"):
        T5Config.from_hf_dict({k: v for k, v in hf.items() if k != "num_heads"})


def test_encoder_input_validation():
    config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    module = T5Encoder(config)
    ids, mask = padded_batch(vocab_size=64)
    params = jax.jit(module.init)(jax.random.PRNGKey(0), ids, mask)["params"]
    with pytest.raises(ValueError, match="does not match"):
        module.apply({"params": params}, ids, mask[:, :5])
    with pytest.raises(TypeError, match="integers"):
        module.apply({"params": params}, ids.astype(np.float32), mask)
