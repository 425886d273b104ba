import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.nn.partitioning import unannotated_leaves
from imagen_jax.nn.unet import UNet, UNetConfig, count_params, init_unet

TINY = UNetConfig(channels=(16, 32), num_res_blocks=(1, 2), strides=(1, 2),
                  attention=("none", "self_cross"), attention_head_dim=16, cond_dim=32,
                  text_dim=12, num_groups=8)
TINY_SR = dataclasses.replace(TINY, strides=(2, 2), attention=("none", "cross"),
                              lowres_cond=True, noise_aug_cond=True)
TINY_ADM = dataclasses.replace(TINY, attention=("self_cross", "self_cross"),
                               attention_per_res_block=True, skip_connections="res_block")


def _randomised(variables, scale=0.1):
    """Init with every leaf perturbed: zero-initialised output layers would hide
    whether an input reaches the output."""
    params = nn.unbox(variables)["params"]
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(42), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])


def _text(batch=2, length=6, dim=12, valid=4, seed=1):
    text = jax.random.normal(jax.random.PRNGKey(seed), (batch, length, dim))
    mask = jnp.arange(length)[None, :] < valid
    return text, jnp.broadcast_to(mask, (batch, length))


@pytest.mark.parametrize("cfg, size", [(TINY, 16), (TINY, 32), (TINY_ADM, 16)])
def test_base_unet_output_shape(cfg, size):
    variables = init_unet(cfg, jax.random.PRNGKey(0), size)
    text, mask = _text()
    out = jax.jit(UNet(cfg).apply)(variables, jnp.ones((2, size, size, 3)), jnp.zeros(2),
                                   text, mask)
    assert out.shape == (2, size, size, 3) and out.dtype == jnp.float32


def test_sr_unet_is_fully_convolutional():
    # Initialised for 16x16 outputs, applied to 48x48 (3x the training size) from 12x12.
    variables = init_unet(TINY_SR, jax.random.PRNGKey(0), 16)
    text, mask = _text()
    out = jax.jit(UNet(TINY_SR).apply)(variables, jnp.ones((2, 48, 48, 3)), jnp.zeros(2),
                                       text, mask, jnp.ones((2, 12, 12, 3)), jnp.zeros(2))
    assert out.shape == (2, 48, 48, 3)


@pytest.mark.parametrize("cfg", [TINY, TINY_SR, TINY_ADM], ids=["base", "sr", "adm"])
def test_every_parameter_has_logical_axis_names(cfg):
    variables = jax.eval_shape(lambda: init_unet(cfg, jax.random.PRNGKey(0), 16))
    assert unannotated_leaves(variables) == []
    names = {n for leaf in jax.tree.leaves(
        variables, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
        for n in leaf.names}
    assert {"conv_in", "conv_out", "heads", "kv", "embed", "text_embed"} <= names


@pytest.mark.parametrize("cfg", [TINY, TINY_SR, TINY_ADM], ids=["base", "sr", "adm"])
def test_text_changes_output_but_masked_tokens_do_not(cfg):
    params = _randomised(init_unet(cfg, jax.random.PRNGKey(0), 16))
    text, mask = _text(valid=4)
    z = jax.random.normal(jax.random.PRNGKey(3), (2, 16, 16, 3))
    extra = ((jax.random.normal(jax.random.PRNGKey(4), (2, 4, 4, 3)), jnp.zeros(2))
             if cfg.lowres_cond else ())
    run = jax.jit(lambda t, m: UNet(cfg).apply({"params": params}, z, jnp.full((2,), 1.0),
                                               t, m, *extra))
    base = run(text, mask)
    # Masked-out positions (4 and 5) can hold anything.
    garbage = text.at[:, 4:].set(100.0 * jax.random.normal(jax.random.PRNGKey(5), (2, 2, 12)))
    np.testing.assert_allclose(run(garbage, mask), base, atol=1e-5)
    # A valid token does matter.
    changed = text.at[:, 1].set(jax.random.normal(jax.random.PRNGKey(6), (2, 12)))
    assert float(jnp.abs(run(changed, mask) - base).max()) > 1e-3
    # An all-masked (empty) prompt gives finite output: the null token is attended.
    assert bool(jnp.isfinite(run(text, jnp.zeros_like(mask))).all())


@pytest.mark.parametrize("positions", [False, True])
def test_word_order_reaches_the_model_only_with_text_positions(positions):
    # Cross-attention and the attention pool read the text as a set: without position
    # codes, reordering the valid tokens changes nothing (to float32 rounding); with
    # them (the offline demo's random T5, docs/text_tokens.md) order is visible.
    cfg = dataclasses.replace(TINY, text_positions=positions)
    params = _randomised(init_unet(cfg, jax.random.PRNGKey(0), 16))
    text, mask = _text(valid=4)
    z = jax.random.normal(jax.random.PRNGKey(3), (2, 16, 16, 3))
    run = jax.jit(lambda t: UNet(cfg).apply({"params": params}, z, jnp.full((2,), 1.0), t, mask))
    reordered = text[:, jnp.array([2, 0, 3, 1, 4, 5])]
    difference = float(jnp.abs(run(reordered) - run(text)).max())
    assert (difference > 1e-3) if positions else (difference < 1e-4)


def test_noise_augmentation_level_reaches_the_model():
    params = _randomised(init_unet(TINY_SR, jax.random.PRNGKey(0), 16))
    text, mask = _text()
    z = jax.random.normal(jax.random.PRNGKey(3), (2, 16, 16, 3))
    low = jax.random.normal(jax.random.PRNGKey(4), (2, 4, 4, 3))
    run = jax.jit(lambda aug: UNet(TINY_SR).apply({"params": params}, z, jnp.zeros(2), text,
                                                  mask, low, aug))
    assert float(jnp.abs(run(jnp.full((2,), 5.0)) - run(jnp.full((2,), -5.0))).max()) > 1e-3
    grad = jax.grad(lambda a: run(a).sum())(jnp.zeros(2))
    assert np.all(np.abs(np.asarray(grad)) > 0)
    # ... and so does the low-res image.
    other = jax.jit(UNet(TINY_SR).apply)({"params": params}, z, jnp.zeros(2), text, mask,
                                         low + 1.0, jnp.zeros(2))
    assert float(jnp.abs(other - run(jnp.zeros(2))).max()) > 1e-3


def test_remat_and_bfloat16_compute_match_float32():
    params = _randomised(init_unet(TINY, jax.random.PRNGKey(0), 16))
    text, mask = _text()
    z = jax.random.normal(jax.random.PRNGKey(3), (2, 16, 16, 3))
    ref = jax.jit(UNet(TINY).apply)({"params": params}, z, jnp.zeros(2), text, mask)
    remat = jax.jit(UNet(dataclasses.replace(TINY, remat=True)).apply)(
        {"params": params}, z, jnp.zeros(2), text, mask)
    np.testing.assert_allclose(remat, ref, atol=1e-5)
    bf16 = jax.jit(UNet(dataclasses.replace(TINY, dtype="bfloat16")).apply)(
        {"params": params}, z, jnp.zeros(2), text, mask)
    assert bf16.dtype == jnp.float32
    assert float(jnp.abs(bf16 - ref).max()) < 0.05 * float(jnp.abs(ref).max()) + 0.05


def test_dropout_is_active_only_in_training():
    cfg = dataclasses.replace(TINY, dropout=0.5)
    params = _randomised(init_unet(cfg, jax.random.PRNGKey(0), 16))
    text, mask = _text()
    z = jnp.ones((2, 16, 16, 3))
    run = jax.jit(lambda det, k: UNet(cfg).apply({"params": params}, z, jnp.zeros(2), text,
                                                 mask, deterministic=det, rngs={"dropout": k}),
                  static_argnums=0)
    k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    np.testing.assert_array_equal(run(True, k1), run(True, k2))
    assert float(jnp.abs(run(False, k1) - run(False, k2)).max()) > 1e-4


@pytest.mark.parametrize("field, value, message", [
    ("strides", (1,), "UNetConfig.strides has 1 entries"),
    ("attention", ("none", "global"), "unknown mode 'global'"),
    ("skip_connections", "dense", "skip_connections"),
])
def test_bad_config_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **{field: value})


def test_image_size_must_divide():
    variables = init_unet(TINY_SR, jax.random.PRNGKey(0), 16)
    text, mask = _text()
    with pytest.raises(ValueError, match="not divisible"):
        UNet(TINY_SR).apply(variables, jnp.ones((1, 18, 18, 3)), jnp.zeros(1), text[:1],
                            mask[:1], jnp.ones((1, 4, 4, 3)), jnp.zeros(1))


def test_count_params_matches_materialised_init():
    variables = init_unet(TINY, jax.random.PRNGKey(0), 16)
    n = sum(x.size for x in jax.tree.leaves(nn.unbox(variables)))
    assert count_params(TINY, 16) == n
