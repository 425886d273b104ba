"""Negative prompts, image-to-image and inpainting through Imagen's stages and cascade
(tiny random stages: what is checked is the guidance and editing arithmetic, which
does not need a trained model)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import imagen
from imagen_jax.cascade import Cascade, CascadeStage, StageSampling
from imagen_jax.diffusion import SamplerSettings
from imagen_jax.stage_registry import build_stage
from tests.stage_helpers import random_params

SETTINGS = SamplerSettings(steps=4, threshold="static")


@pytest.fixture(scope="module")
def base():
    stage = build_stage(imagen.get_config("tiny,base64"))
    return stage, random_params(stage, jax.random.PRNGKey(0))


def _text(stage, seed, batch=2, length=5):
    text = jax.random.normal(jax.random.PRNGKey(seed), (batch, length, stage.unet.text_dim))
    return text, jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]][:batch], bool)


def test_negative_prompt_equal_to_the_prompt_is_unguided(base):
    """uncond = cond makes w * cond + (1 - w) * uncond = cond at any w: the w = 1 result."""
    stage, params = base
    text, mask = _text(stage, 1)
    key = jax.random.PRNGKey(2)
    unguided = stage.sample(params, text, mask, key, settings=SETTINGS, guidance=1.0)
    same = stage.sample(params, text, mask, key, settings=SETTINGS, guidance=7.0,
                        negative_text=text, negative_mask=mask)
    np.testing.assert_allclose(same, unguided, atol=1e-5)
    guided = stage.sample(params, text, mask, key, settings=SETTINGS, guidance=7.0)
    assert float(jnp.abs(guided - unguided).max()) > 1e-2  # guidance does act here


def test_null_negative_prompt_is_todays_output_bit_for_bit(base):
    stage, params = base
    text, mask = _text(stage, 1)
    key = jax.random.PRNGKey(2)
    today = stage.sample(params, text, mask, key, settings=SETTINGS, guidance=5.0)
    null = stage.sample(params, text, mask, key, settings=SETTINGS, guidance=5.0,
                        negative_text=jnp.zeros_like(text), negative_mask=jnp.zeros_like(mask))
    np.testing.assert_array_equal(null, today)
    other, other_mask = _text(stage, 9)
    moved = stage.sample(params, text, mask, key, settings=SETTINGS, guidance=5.0,
                         negative_text=other, negative_mask=other_mask)
    assert float(jnp.abs(moved - today).max()) > 1e-3
    with pytest.raises(ValueError, match="negative_text has shape"):
        stage.sample(params, text, mask, key, settings=SETTINGS, negative_text=other[:, :3],
                     negative_mask=other_mask[:, :3])


def test_cascade_negative_prompts(base):
    """Through the cascade's own encoder: '' as the negative prompt is today's output bit
    for bit; the prompt itself as the negative prompt is the unguided output."""
    stage, params = base
    encoder = _tiny_encoder()
    prompts = ["a red circle", "two blue squares"]
    cascade = lambda w: Cascade(encoder, [CascadeStage(stage, params, StageSampling(  # noqa
        settings=SETTINGS, guidance=w))])
    key = jax.random.PRNGKey(4)
    today = cascade(5.0)(prompts, key)[0]
    np.testing.assert_array_equal(cascade(5.0)(prompts, key, negative_prompts=["", ""])[0],
                                  today)
    np.testing.assert_allclose(cascade(5.0)(prompts, key, negative_prompts=prompts)[0],
                               cascade(1.0)(prompts, key)[0], atol=1e-5)
    with pytest.raises(ValueError, match="negative prompt"):
        cascade(5.0)(prompts, key, negative_prompts=["x"])


def _tiny_encoder():
    import tempfile

    from imagen_jax.nn.t5 import T5Config
    from imagen_jax.text import TextEncoder, Tokenizer, train_sentencepiece
    from tests.text.helpers import shape_captions

    path = tempfile.mkdtemp() + "/spiece.model"
    tokenizer = Tokenizer(train_sentencepiece(shape_captions(200), path, vocab_size=64),
                          max_length=8)
    config = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    return TextEncoder.random(config, tokenizer)


def test_image_to_image(base):
    """strength 1 is text-to-image from the same noise, bit for bit; a small strength
    stays near the input image, and the steps run are round(strength * steps)."""
    stage, params = base
    text, mask = _text(stage, 1)
    key = jax.random.PRNGKey(2)
    s = stage.image_size
    image = jnp.tile(jnp.linspace(-0.8, 0.8, s)[None, :, None, None], (2, 1, s, 3))
    t2i = stage.sample(params, text, mask, key, settings=SETTINGS)
    full = stage.sample(params, text, mask, key, settings=SETTINGS, init_image=image)
    np.testing.assert_array_equal(full, t2i)
    near = stage.sample(params, text, mask, key, init_image=image,
                        settings=dataclasses.replace(SETTINGS, steps=20, strength=0.1))
    far = stage.sample(params, text, mask, key, init_image=image,
                       settings=dataclasses.replace(SETTINGS, steps=20, strength=0.9))
    err = lambda x: float(jnp.abs(x - image).mean())  # noqa: E731
    assert err(near) < 0.5 * err(far), (err(near), err(far))
    with pytest.raises(ValueError, match="init_image has shape"):
        stage.sample(params, text, mask, key, settings=SETTINGS, init_image=image[:, :4])


@pytest.mark.parametrize("rounds", [1, 3])
def test_inpainting_keeps_the_unmasked_pixels(base, rounds):
    stage, params = base
    text, mask = _text(stage, 1)
    s = stage.image_size
    image = jax.random.uniform(jax.random.PRNGKey(7), (2, s, s, 3), minval=-1, maxval=1)
    hole = jnp.zeros((2, s, s)).at[:, s // 4: 3 * s // 4, s // 4: 3 * s // 4].set(1.0)
    out = stage.sample(params, text, mask, jax.random.PRNGKey(3), inpaint_image=image,
                       inpaint_mask=hole,
                       settings=dataclasses.replace(SETTINGS, resample_rounds=rounds))
    keep = np.asarray(hole) == 0
    np.testing.assert_array_equal(np.asarray(out)[keep], np.asarray(image)[keep])
    # The hole is generated, not copied.
    assert float(jnp.abs(out - image)[hole == 1].mean()) > 0.1
    with pytest.raises(ValueError, match="inpaint_mask"):
        stage.sample(params, text, mask, jax.random.PRNGKey(3), inpaint_image=image,
                     settings=SETTINGS)


def test_sr_stage_edits_and_negative_prompt():
    stage = build_stage(imagen.get_config("tiny,sr256"))
    params = random_params(stage, jax.random.PRNGKey(0))
    text, mask = _text(stage, 1)
    low = jax.random.uniform(jax.random.PRNGKey(5), (2, 8, 8, 3), minval=-1, maxval=1)
    key = jax.random.PRNGKey(2)
    run = lambda **kw: stage.sample(params, text, mask, key, lowres=low,  # noqa: E731
                                    settings=SETTINGS, **kw)
    np.testing.assert_allclose(run(guidance=6.0, negative_text=text, negative_mask=mask),
                               run(guidance=1.0), atol=1e-5)
    image = jnp.zeros((2, 32, 32, 3))
    hole = jnp.zeros((2, 32, 32)).at[:, :16].set(1.0)
    out = run(inpaint_image=image, inpaint_mask=hole)
    np.testing.assert_array_equal(np.asarray(out)[:, 16:], 0.0)
