"""`scan_blocks`: a level's identical res blocks run as one lax.scan. Same weights
(same names, same checkpoint) and the same function as the unrolled U-Net, with the
blocks compiled once per run."""

from __future__ import annotations

import dataclasses

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
BASE = UNetConfig(channels=(16, 32), num_res_blocks=(3, 3), strides=(1, 2),
                  attention=("none", "self_cross"), attention_per_res_block=True,
                  skip_connections="res_block", attention_head_dim=8, cond_dim=32,
                  text_dim=24, num_groups=8)
EFFICIENT = UNetConfig(channels=(16, 32), num_res_blocks=(2, 4), strides=(2, 2),
                       attention=("none", "cross"), attention_head_dim=8, cond_dim=32,
                       text_dim=24, num_groups=8, lowres_cond=True, noise_aug_cond=True,
                       remat=True)


def _inputs(config: UNetConfig, b: int = 2, side: int = 16):
    rng = np.random.default_rng(0)
    args = dict(z=jnp.asarray(rng.normal(size=(b, side, side, 3)), jnp.float32),
                logsnr=jnp.asarray([-2.0, 3.0][:b], jnp.float32),
                text=jnp.asarray(rng.normal(size=(b, 5, config.text_dim)), jnp.float32),
                text_mask=jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]][:b], bool))
    if config.lowres_cond:
        args["lowres"] = jnp.asarray(rng.normal(size=(b, side // 4, side // 4, 3)), jnp.float32)
        args["aug_logsnr"] = jnp.asarray([1.0, 0.5][:b], jnp.float32)
    return args


def _params(config: UNetConfig, side: int = 16):
    variables = init_unet(config, jax.random.PRNGKey(1), side, text_len=5)
    # Give every zero-initialised output conv weights, so that every block matters.
    leaves, tree = jax.tree.flatten(nn.unbox(variables)["params"])
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])


def _apply(config, params, inputs):
    return UNet(config).apply({"params": params}, **inputs)


@pytest.mark.parametrize("config", [BASE, EFFICIENT], ids=["base64-like", "efficient"])
def test_scanned_equals_unrolled_forward_and_gradient(config):
    params, inputs = _params(config), _inputs(config)
    scanned = dataclasses.replace(config, scan_blocks=True)
    loss = lambda cfg: jax.jit(jax.value_and_grad(  # noqa: E731
        lambda p: jnp.mean(_apply(cfg, p, inputs) ** 2)))
    (l_unrolled, g_unrolled), (l_scanned, g_scanned) = loss(config)(params), loss(scanned)(params)
    np.testing.assert_allclose(float(l_scanned), float(l_unrolled), rtol=1e-5)
    out_u, out_s = _apply(config, params, inputs), _apply(scanned, params, inputs)
    np.testing.assert_allclose(np.asarray(out_s), np.asarray(out_u), rtol=1e-4, atol=1e-5)
    flat_u = jax.tree_util.tree_leaves_with_path(g_unrolled)
    flat_s = dict(jax.tree_util.tree_leaves_with_path(g_scanned))
    for path, g in flat_u:
        np.testing.assert_allclose(np.asarray(flat_s[path]), np.asarray(g), rtol=1e-4,
                                   atol=1e-6, err_msg=jax.tree_util.keystr(path))
    # The scanned blocks' own weights get gradients (the scan is not a detour).
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_scanned["down_1_res_2"])) > 0


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
    a = nn.unbox(init_unet(BASE, jax.random.PRNGKey(1), 16, text_len=5))["params"]
    b = nn.unbox(init_unet(scanned, jax.random.PRNGKey(1), 16, text_len=5))["params"]
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    params = _params(BASE)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "unrolled", params)
    checkpointer.wait_until_finished()
    target = jax.eval_shape(lambda: nn.unbox(init_unet(scanned, jax.random.PRNGKey(0), 16,
                                                       text_len=5))["params"])
    restored = checkpointer.restore(tmp_path / "unrolled", target)
    inputs = _inputs(BASE)
    np.testing.assert_allclose(np.asarray(_apply(scanned, restored, inputs)),
                               np.asarray(_apply(BASE, params, inputs)), rtol=1e-4, atol=1e-5)
