"""TextEncoder: shapes, zeroed padding, the null condition, and that it stays frozen."""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.nn.t5 import T5Config, T5Encoder
from imagen_jax.text import TextEncoder, Tokenizer

from tests.text.helpers import hf_last_hidden_state

MAX_LEN = 16
CONFIG = T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                  feed_forward_proj="gated-gelu")


@pytest.fixture(scope="module")
def encoder(spiece_path):
    return TextEncoder.random(CONFIG, Tokenizer(spiece_path, MAX_LEN), seed=0)


def test_shapes_dtype_and_zeroed_padding(encoder):
    emb, mask = encoder(["a red circle above two blue squares", "one star", ""])
    assert emb.shape == (3, MAX_LEN, 32) and emb.dtype == jnp.float32
    assert mask.shape == (3, MAX_LEN) and mask.dtype == jnp.bool_
    emb, mask = np.asarray(emb), np.asarray(mask)
    assert (emb[~mask] == 0.0).all()  # exactly zero, not merely small
    assert (np.abs(emb[mask]).sum(-1) > 0).all()
    assert encoder.dim == 32 and encoder.max_length == MAX_LEN


def test_empty_prompt_is_all_zero(encoder):
    emb, mask = encoder("")
    assert emb.shape == (1, MAX_LEN, 32)
    assert not np.asarray(mask).any() and (np.asarray(emb) == 0.0).all()


def test_padded_token_ids_do_not_matter(encoder):
    batch = encoder.tokenizer.encode(["two green triangles", "one star"])
    base = np.asarray(encoder.apply(encoder.params, batch.ids, batch.mask))
    scrambled = np.where(batch.mask, batch.ids, 7)
    np.testing.assert_array_equal(
        np.asarray(encoder.apply(encoder.params, scrambled, batch.mask)), base)


def test_prompt_content_matters(encoder):
    emb, _ = encoder(["one red star", "one blue star"])
    assert np.abs(np.asarray(emb[0] - emb[1])).max() > 1e-4


def test_encoder_is_frozen(encoder):
    batch = encoder.tokenizer.encode(["three purple hexagons"])

    def loss(params):
        return jnp.sum(encoder.apply(params, batch.ids, batch.mask) ** 2)

    assert float(loss(encoder.params)) > 0
    grads = jax.grad(loss)(encoder.params)
    leaves = jax.tree_util.tree_leaves(grads)
    assert len(leaves) == len(jax.tree_util.tree_leaves(encoder.params))
    assert all(not np.asarray(g).any() for g in leaves)


def test_tokenizer_larger_than_vocab_is_rejected(spiece_path):
    small = T5Config(vocab_size=8, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match="pieces but the T5 encoder embeds only 8"):
        TextEncoder.random(small, Tokenizer(spiece_path, MAX_LEN))


def test_from_pretrained_matches_transformers(hf_checkpoints, spiece_path, tmp_path):
    model, directory = hf_checkpoints["relu"]
    shutil.copytree(directory, tmp_path / "t5")
    shutil.copy(spiece_path, tmp_path / "t5" / "spiece.model")
    encoder = TextEncoder.from_pretrained(tmp_path / "t5", max_length=MAX_LEN)
    emb, mask = encoder(["four yellow squares below a black circle", "one star", ""])
    batch = encoder.tokenizer.encode(["four yellow squares below a black circle", "one star",
                                      ""])
    expected = hf_last_hidden_state(model, batch.ids[:2].astype(np.int64), batch.mask[:2])
    expected = np.where(batch.mask[:2, :, None], expected, 0.0)
    assert float(np.abs(np.asarray(emb[:2]) - expected).max()) <= 1e-4
    assert not np.asarray(emb[2]).any()
    assert isinstance(encoder.config, T5Config) and T5Encoder(encoder.config)
