import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import imagen
from imagen_jax.cascade import Cascade, CascadeStage, StageSampling
from imagen_jax.diffusion import SamplerSettings
from imagen_jax.nn.t5 import T5Config
from imagen_jax.diffusion import drop_condition
from imagen_jax.stage_registry import build_stage
from imagen_jax.stages import random_crop, unbox
from imagen_jax.text import TextEncoder, Tokenizer, train_sentencepiece
from tests.text.helpers import shape_captions

FAST = SamplerSettings(steps=3, threshold="dynamic")


def _stage(name, **diffusion):
    config = imagen.get_config(f"tiny,{name}")
    config.diffusion.update(diffusion)
    return build_stage(config)


def _batch(stage, size=None, batch=4, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    size = size or stage.image_size
    return {"images": jax.random.uniform(k1, (batch, size, size, 3), minval=-1, maxval=1),
            "text": jax.random.normal(k2, (batch, 5, stage.unet.text_dim)),
            "text_mask": jnp.array([[1, 1, 1, 0, 0]] * batch, bool)}


def _train(stage, batch, steps=20):
    params = unbox(stage.init(jax.random.PRNGKey(0)))
    opt = optax.adam(2e-3)
    opt_state = opt.init(params)
    key = jax.random.PRNGKey(7)  # fixed: same t, noise and crops every step

    @jax.jit
    def step(params, opt_state):
        (loss, _), grads = jax.value_and_grad(stage.loss, has_aux=True)(params, batch, key)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    return params, losses


@pytest.mark.parametrize("name", ["base64", "sr256", "sr1024"])
def test_loss_decreases_on_a_fixed_tiny_batch(name):
    stage = _stage(name)
    _, losses = _train(stage, _batch(stage))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


def test_sr1024_trains_on_crops_and_samples_at_full_size():
    stage = _stage("sr1024")
    assert stage.train_crop == 32 and stage.image_size == 64
    params = unbox(stage.init(jax.random.PRNGKey(0)))
    # The loss sees a 32x32 crop of each 64x64 image (with its 8x8 low-res crop) ...
    loss, _ = stage.loss(params, _batch(stage), jax.random.PRNGKey(1))
    assert np.isfinite(float(loss))
    # ... and sampling runs the same weights at the full 64x64 from 16x16.
    batch = _batch(stage, batch=2)
    out = stage.sample(params, batch["text"], batch["text_mask"], jax.random.PRNGKey(2),
                       lowres=jnp.zeros((2, 16, 16, 3)), settings=FAST)
    assert out.shape == (2, 64, 64, 3)


def test_random_crop_takes_aligned_windows():
    images = jnp.arange(2 * 8 * 8 * 1, dtype=jnp.float32).reshape(2, 8, 8, 1)
    crops = random_crop(images, 4, jax.random.PRNGKey(0))
    assert crops.shape == (2, 4, 4, 1)
    for i in range(2):  # each crop is a contiguous window of its own image
        y, x = np.argwhere(np.asarray(images[i, :, :, 0]) == float(crops[i, 0, 0, 0]))[0]
        np.testing.assert_array_equal(crops[i], images[i, y:y + 4, x:x + 4])
    with pytest.raises(ValueError, match="crop size 9"):
        random_crop(images, 9, jax.random.PRNGKey(0))


def test_text_dropout_gives_the_null_condition():
    text = jnp.ones((1000, 3, 4))
    mask = jnp.ones((1000, 3), bool)
    dropped_cond = drop_condition({"text": text, "text_mask": mask}, jax.random.PRNGKey(0), 0.1)
    dropped_text, dropped_mask = dropped_cond["text"], dropped_cond["text_mask"]
    dropped = ~np.asarray(dropped_mask).any(axis=1)
    assert 0.07 < dropped.mean() < 0.13
    assert float(jnp.abs(dropped_text[dropped]).max()) == 0.0
    np.testing.assert_array_equal(dropped_text[~dropped], text[~dropped])
    # With p = 1 the loss equals the loss on explicitly null text.
    stage = _stage("base64", cond_drop_prob=1.0)
    params = unbox(stage.init(jax.random.PRNGKey(0)))
    batch = _batch(stage)
    null = dict(batch, text=jnp.zeros_like(batch["text"]),
                text_mask=jnp.zeros_like(batch["text_mask"]))
    a, _ = stage.loss(params, batch, jax.random.PRNGKey(3))
    b, _ = dataclasses.replace(stage, cond_drop_prob=0.0).loss(params, null,
                                                                jax.random.PRNGKey(3))
    assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_augmentation_level_at_sampling_reaches_the_model():
    stage = _stage("sr256")
    params, _ = _train(stage, _batch(stage), steps=5)
    batch = _batch(stage, batch=2)
    low = jax.random.uniform(jax.random.PRNGKey(5), (2, 8, 8, 3), minval=-1, maxval=1)
    run = lambda level: stage.sample(params, batch["text"], batch["text_mask"],
                                     jax.random.PRNGKey(2), lowres=low, aug_level=level,
                                     settings=FAST)
    assert float(jnp.abs(run(0.0) - run(0.3)).max()) > 1e-3
    # The corruption itself: level 0 keeps the image, level 1 replaces it by noise.
    kept, logsnr0 = stage.augment_lowres(low, 0.0, jax.random.PRNGKey(0))
    gone, logsnr1 = stage.augment_lowres(low, 1.0, jax.random.PRNGKey(0))
    np.testing.assert_allclose(kept, low, atol=5e-4)  # sigma(t=0) = exp(-10)
    noise = jax.random.normal(jax.random.PRNGKey(0), low.shape)
    np.testing.assert_allclose(gone, noise, atol=1e-4)
    assert float(logsnr0[0]) > 15 and float(logsnr1[0]) < -15
    with pytest.raises(ValueError, match="aug_level"):
        run(1.5)


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("spm") / "spiece.model"
    tokenizer = Tokenizer(train_sentencepiece(shape_captions(200), str(path), vocab_size=64),
                          max_length=8)
    config = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    return TextEncoder.random(config, tokenizer)


def test_cascade_produces_each_resolution_in_range(text_encoder):
    entries = []
    for name in ["base64", "sr256", "sr1024"]:
        stage = _stage(name)
        entries.append(CascadeStage(stage, unbox(stage.init(jax.random.PRNGKey(0))),
                                    StageSampling(settings=FAST, guidance=3.0, aug_level=0.1)))
    cascade = Cascade(text_encoder, entries)
    seen = []
    outputs = cascade(["two red circles above a blue square", ""], jax.random.PRNGKey(0),
                      progress=seen.append)
    # tiny sizes keep the paper's ratios: 16 -> x4 -> x4.
    assert [o.shape for o in outputs] == [(2, 16, 16, 3), (2, 64, 64, 3), (2, 256, 256, 3)]
    for images in outputs:
        assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0
        assert bool(jnp.isfinite(images).all())
    assert len(seen) == 3
    with pytest.raises(ValueError, match="first stage"):
        Cascade(text_encoder, entries[1:])


def test_sr_loss_uses_the_pipelines_lowres_when_given():
    stage = _stage("sr256")
    batch = _batch(stage)
    params, _ = _train(stage, batch, steps=3)  # a fresh U-Net's output layer is zero
    own, _ = stage.loss(params, batch, jax.random.PRNGKey(1))
    from imagen_jax.stages import downsample
    same = dict(batch, lowres=downsample(batch["images"], stage.scale))
    other = dict(batch, lowres=-same["lowres"])
    assert float(stage.loss(params, same, jax.random.PRNGKey(1))[0]) == pytest.approx(
        float(own), rel=1e-6)
    assert float(stage.loss(params, other, jax.random.PRNGKey(1))[0]) != pytest.approx(
        float(own), rel=1e-4)
