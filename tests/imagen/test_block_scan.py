"""`scan_blocks`: a level's identical res blocks run as one lax.scan. Same weights
(same names, same checkpoint) and the same function as the unrolled U-Net, with the
blocks compiled once per run."""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from imagen_jax.nn.unet import UNet, UNetConfig, init_unet

# base64's layout in small: ADM skips (every up block concatenates one), attention
# after every res block; and the Efficient U-Net's: one skip per level, attention
# after the last block only, a downsampling conv before the blocks.
BASE = UNetConfig(channels=(8, 16), num_res_blocks=(2, 2), strides=(1, 2),
                  attention=("none", "cross"), attention_per_res_block=True,
                  skip_connections="res_block", attention_head_dim=8, cond_dim=16,
                  text_dim=8, num_groups=4)
EFFICIENT = UNetConfig(channels=(8, 16), num_res_blocks=(2, 3), strides=(2, 2),
                       attention=("none", "cross"), attention_head_dim=8, cond_dim=16,
                       text_dim=8, num_groups=4, lowres_cond=True, noise_aug_cond=True,
                       remat=True)


def _inputs(config: UNetConfig, b: int = 2, side: int = 8):
    rng = np.random.default_rng(0)
    args = dict(z=jnp.asarray(rng.normal(size=(b, side, side, 3)), jnp.float32),
                logsnr=jnp.asarray([-2.0, 3.0][:b], jnp.float32),
                text=jnp.asarray(rng.normal(size=(b, 5, config.text_dim)), jnp.float32),
                text_mask=jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]][:b], bool))
    if config.lowres_cond:
        args["lowres"] = jnp.asarray(rng.normal(size=(b, side // 4, side // 4, 3)), jnp.float32)
        args["aug_logsnr"] = jnp.asarray([1.0, 0.5][:b], jnp.float32)
    return args


def _init(config: UNetConfig, seed: int = 1, side: int = 8):
    return nn.unbox(jax.jit(lambda k: init_unet(config, k, side, text_len=5))(
        jax.random.PRNGKey(seed)))["params"]


@functools.lru_cache(maxsize=None)
def _params(config: UNetConfig):
    variables = {"params": _init(config)}
    # Give every zero-initialised output conv weights, so that every block matters.
    leaves, tree = jax.tree.flatten(nn.unbox(variables)["params"])
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])


def _apply(config, params, inputs):
    return UNet(config).apply({"params": params}, **inputs)


def _loss_and_grad(config, params, inputs):
    """((mean square output, output), gradient), jitted: one compile per variant."""
    def loss(p):
        out = _apply(config, p, inputs)
        return jnp.mean(out ** 2), out
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


def test_scanned_equals_unrolled_forward_and_gradient():
    """ADM skips (one per up block, stacked into the scan) and attention in the body."""
    config = BASE
    params, inputs = _params(config), _inputs(config)
    scanned = dataclasses.replace(config, scan_blocks=True)
    (l_unrolled, out_u), g_unrolled = _loss_and_grad(config, params, inputs)
    (l_scanned, out_s), g_scanned = _loss_and_grad(scanned, params, inputs)
    np.testing.assert_allclose(float(l_scanned), float(l_unrolled), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out_s), np.asarray(out_u), rtol=1e-4, atol=1e-5)
    flat_u = jax.tree_util.tree_leaves_with_path(g_unrolled)
    flat_s = dict(jax.tree_util.tree_leaves_with_path(g_scanned))
    for path, g in flat_u:
        np.testing.assert_allclose(np.asarray(flat_s[path]), np.asarray(g), rtol=1e-4,
                                   atol=1e-6, err_msg=jax.tree_util.keystr(path))
    # The scanned blocks' own weights get gradients (the scan is not a detour).
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_scanned["down_1_res_1"])) > 0


def test_scanned_equals_unrolled_efficient_unet():
    """One skip per level (the first up block runs unrolled), a downsampling conv
    before the blocks, attention after the last block only, rematerialised blocks."""
    params, inputs = _params(EFFICIENT), _inputs(EFFICIENT)
    forward = lambda cfg: jax.jit(lambda p: _apply(cfg, p, inputs))(params)  # noqa: E731
    np.testing.assert_allclose(
        np.asarray(forward(dataclasses.replace(EFFICIENT, scan_blocks=True))),
        np.asarray(forward(EFFICIENT)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config", [BASE, EFFICIENT], ids=["base64-like", "efficient"])
def test_the_scan_compiles_each_run_of_blocks_once(config):
    params, inputs = _params(config), _inputs(config)
    text = lambda cfg: str(jax.make_jaxpr(lambda p: _apply(cfg, p, inputs))(params))  # noqa
    unrolled, scanned = text(config), text(dataclasses.replace(config, scan_blocks=True))
    assert "scan[" not in unrolled and scanned.count("scan[") >= 2
    # Fewer convolutions in the program: each run's block appears once.
    assert scanned.count("conv_general_dilated") < unrolled.count("conv_general_dilated")


def test_same_weights_and_the_same_checkpoint(tmp_path):
    """init builds the same tree with or without scanning, so a checkpoint written by
    one restores into the other, which computes the same images."""
    scanned = dataclasses.replace(BASE, scan_blocks=True)
    a, b = _init(BASE), _init(scanned)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    params = _params(BASE)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "unrolled", params)
    checkpointer.wait_until_finished()
    target = jax.eval_shape(lambda: nn.unbox(init_unet(scanned, jax.random.PRNGKey(0), 8,
                                                       text_len=5))["params"])
    restored = checkpointer.restore(tmp_path / "unrolled", target)
    inputs = _inputs(BASE)
    forward = lambda cfg, p: jax.jit(lambda q: _apply(cfg, q, inputs))(p)  # noqa: E731
    np.testing.assert_allclose(np.asarray(forward(scanned, restored)),
                               np.asarray(forward(BASE, params)), rtol=1e-4, atol=1e-5)
