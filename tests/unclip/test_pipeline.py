"""The unCLIP pipeline and its latent operations, on tiny stages with random weights
(the operations are exact or geometric properties, true of any weights)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import unclip
from imagen_jax.diffusion import SamplerSettings
from imagen_jax.text.tokenizer import Tokenizer, train_sentencepiece
from unclip_jax.clip import normalize
from unclip_jax.conditioning import FrozenCLIP
from unclip_jax.latents import slerp
from unclip_jax.pipeline import TrainedStage, UnclipPipeline
from imagen_jax.stage_registry import build_stage
from tests.stage_helpers import random_params
from tests.text.helpers import shape_captions


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    spm = str(tmp_path_factory.mktemp("spm") / "spiece.model")
    train_sentencepiece(shape_captions(200), spm, vocab_size=64)
    tokenizer = Tokenizer(spm, 16)
    # The stages the pipeline runs (the 256 -> 1024 upsampler is not one of them).
    stages = {name: build_stage(_config(name))
              for name in ("clip", "prior", "decoder64", "upsample256")}
    key = jax.random.PRNGKey(0)
    params = {name: random_params(stage, jax.random.fold_in(key, i), 16)
              for i, (name, stage) in enumerate(stages.items())}
    clip = FrozenCLIP(stages["clip"].clip, params["clip"], tokenizer)
    steps = SamplerSettings(sampler="ddim", steps=8)
    return UnclipPipeline(
        clip, TrainedStage(stages["prior"], params["prior"], SamplerSettings(sampler="ddpm", steps=8)),
        TrainedStage(stages["decoder64"], params["decoder64"], steps, guidance=2.0),
        [TrainedStage(stages["upsample256"], params["upsample256"], steps)])


def _config(name):
    c = unclip.get_config(f"tiny,{name}")
    c.clip.workdir = "/unused"
    return c


def test_slerp_endpoints_and_midpoint():
    a, b = jax.random.normal(jax.random.PRNGKey(1), (2, 32))
    np.testing.assert_allclose(slerp(a, b, 0.0), normalize(a), atol=1e-6)
    np.testing.assert_allclose(slerp(a, b, 1.0), normalize(b), atol=1e-6)
    mid = slerp(a, b, 0.5)
    assert abs(float(jnp.linalg.norm(mid)) - 1) < 1e-5
    np.testing.assert_allclose(float(mid @ normalize(a)), float(mid @ normalize(b)), atol=1e-6)
    np.testing.assert_allclose(slerp(a, a, 0.3), normalize(a), atol=1e-6)  # parallel inputs


def test_text_diff_moves_the_embedding_toward_the_target_caption(pipeline):
    image = jnp.zeros((16, 16, 3)).at[4:12, 4:12, 0].set(1.0)
    thetas = [0.0, 0.25, 0.5, 0.75]
    outputs, edited = pipeline.text_diff(image, "one red square", "two blue circles", thetas,
                                         jax.random.PRNGKey(2), steps=20)
    z_t, _, _ = pipeline.clip.encode_prompts(["two blue circles"])
    cos = np.asarray(edited @ normalize(z_t)[0])
    assert np.all(np.diff(cos) > 0), cos
    assert outputs[0].shape == (4, 16, 16, 3) and outputs[1].shape == (4, 64, 64, 3)


def test_ddim_inversion_round_trip(pipeline):
    """invert -> decode from x_T gives the image back, up to the ODE's discretisation
    error, which shrinks with the step count (first order: ~1/steps)."""
    images = jax.random.uniform(jax.random.PRNGKey(3), (4, 16, 16, 3), minval=-0.8, maxval=0.8)
    errors = {}
    for steps in (20, 200):  # 20: the step count of the edit tests below (compiled once)
        x_t, z_i = pipeline.invert(images, steps=steps)
        back = pipeline.reconstruct(x_t, z_i, steps=steps)
        errors[steps] = float(jnp.max(jnp.abs(back - images)))
    assert errors[200] < 0.03 and errors[200] < 0.5 * errors[20], errors
    # x_T looks like noise, and other noise decodes the same embedding to another image.
    assert 0.3 < float(jnp.std(x_t)) < 1.5
    other = pipeline.reconstruct(jax.random.normal(jax.random.PRNGKey(4), x_t.shape), z_i,
                                 steps=200)
    assert float(jnp.max(jnp.abs(other - images))) > 0.5


def test_generate_variations_interpolate_shapes(pipeline):
    # Batches of 4 throughout (as the other tests): one compilation per stage.
    key = jax.random.PRNGKey(5)
    out = pipeline.generate(["one red square", "two blue circles", "a green star",
                             "three red circles"], key)
    assert [o.shape for o in out] == [(4, 16, 16, 3), (4, 64, 64, 3)]
    assert all(bool(jnp.all(jnp.isfinite(o))) for o in out)
    var = pipeline.variations(out[0][:2], 2, key)
    assert var[0].shape == (4, 16, 16, 3)
    assert float(jnp.max(jnp.abs(var[0][0] - var[0][1]))) > 1e-3  # fresh noise per variation
    for noise in ("fixed", "slerp"):
        frames = pipeline.interpolate(out[0][0], out[0][1], 4, key, noise=noise)
        assert frames[0].shape == (4, 16, 16, 3)
    with pytest.raises(ValueError, match="noise must be one of"):
        pipeline.interpolate(out[0][0], out[0][1], 4, key, noise="warp")


def test_trainer_previews_of_the_unclip_stages(pipeline):
    """The trainer's periodic samples (`Stage.preview` on a batch the frozen CLIP
    prepared, as trainer.write_samples does): the decoder reconstructs the batch's
    images from their CLIP embeddings, the upsampler upsamples them downsampled; CLIP
    and the prior make no images."""
    clip, decoder, upsampler = pipeline.clip, pipeline.decoder, pipeline.upsamplers[0]
    key = jax.random.PRNGKey(5)
    side = decoder.stage.image_size
    tokens = clip.tokenizer.encode(["a red circle", "two blue squares"])
    raw = {"images": jax.random.uniform(key, (2, side, side, 3), minval=-1.0, maxval=1.0),
           "text_ids": jnp.asarray(tokens.ids), "text_mask": jnp.asarray(tokens.mask)}
    batch = jax.jit(clip.prepare)(clip.params, raw)
    assert set(batch) >= set(decoder.stage.batch_keys)
    sample = _config("decoder64").sample
    sample.steps = 4
    images = decoder.stage.preview(decoder.params, batch, key, sample)
    assert images.shape == (2, side, side, 3) and bool(jnp.isfinite(images).all())
    big = upsampler.stage.image_size
    up_sample = _config("upsample256").sample
    up_sample.steps = 4
    hires = jax.random.uniform(key, (2, big, big, 3), minval=-1.0, maxval=1.0)
    upsampled = upsampler.stage.preview(upsampler.params, {"images": hires}, key, up_sample)
    assert upsampled.shape == (2, big, big, 3) and bool(jnp.isfinite(upsampled).all())
    assert pipeline.prior.stage.preview(pipeline.prior.params, batch, key, sample) is None
    assert build_stage(_config("clip")).preview(None, raw, key, sample) is None


def test_negative_prompts_prior_and_decoder(pipeline):
    """'' as every negative prompt is today's output bit for bit; the prompt itself as
    the negative prompt gives the unguided prior (w = 1) and, in the decoder, moves the
    output; a length mismatch is one clear error."""
    prompts = ["one red square", "two blue circles", "a green star", "three red circles"]
    key = jax.random.PRNGKey(6)
    today = pipeline.generate(prompts, key)
    null = pipeline.generate(prompts, key, negative_prompts=[""] * 4)
    for a, b in zip(today, null):
        np.testing.assert_array_equal(a, b)
    moved = pipeline.generate(prompts, key, negative_prompts=["a blue star"] * 4)
    assert float(jnp.abs(moved[0] - today[0]).max()) > 1e-3
    with pytest.raises(ValueError, match="one per prompt"):
        pipeline.generate(prompts, key, negative_prompts=["x"])
    # The prior alone: negative = prompt is the w = 1 result at any guidance.
    p = pipeline.prior
    z_t, states, mask = pipeline.clip.encode_prompts(prompts)
    run = lambda w, **neg: p.stage.sample(p.params, states, mask, z_t, key,  # noqa: E731
                                          settings=p.settings, guidance=w, **neg)
    np.testing.assert_allclose(run(4.0, negative_text=states, negative_mask=mask,
                                   negative_text_embed=z_t), run(1.0), atol=1e-5)
    assert float(jnp.abs(run(4.0) - run(1.0)).max()) > 1e-3


def test_variations_and_text_diffs_decode_the_inverted_latent(pipeline):
    """The paper's edits: a text diff at theta = 0 decodes the image's own (z_i, x_T)
    and so reconstructs it within the inversion error; variations with DDIM eta > 0 from
    the same latent stay nearer the image than fresh-noise decodings, and differ."""
    images = jax.random.uniform(jax.random.PRNGKey(3), (4, 16, 16, 3), minval=-0.8, maxval=0.8)
    steps = 20
    x_t, z_i = pipeline.invert(images[:1], steps=steps)
    inversion_error = float(jnp.max(jnp.abs(pipeline.reconstruct(x_t, z_i, steps=steps)
                                            - images[:1])))
    outputs, _ = pipeline.text_diff(images[0], "one red square", "two blue circles",
                                    [0.0, 0.3, 0.6, 0.9], jax.random.PRNGKey(2), steps=steps)
    err0 = float(jnp.max(jnp.abs(outputs[0][0] - images[0])))
    assert err0 <= inversion_error + 1e-4, (err0, inversion_error)
    assert float(jnp.max(jnp.abs(outputs[0][3] - images[0]))) > err0 + 0.05
    fresh, _ = pipeline.text_diff(images[0], "one red square", "two blue circles",
                                  [0.0, 0.3, 0.6, 0.9], jax.random.PRNGKey(2), noise="fresh")
    assert float(jnp.max(jnp.abs(fresh[0][0] - images[0]))) > 0.5
    var = pipeline.variations(images[:2], 2, jax.random.PRNGKey(8), eta=0.5, steps=steps)[0]
    new = pipeline.variations(images[:2], 2, jax.random.PRNGKey(8), noise="fresh")[0]
    near = float(jnp.mean(jnp.abs(var - jnp.repeat(images[:2], 2, axis=0))))
    far = float(jnp.mean(jnp.abs(new - jnp.repeat(images[:2], 2, axis=0))))
    assert near < far and float(jnp.max(jnp.abs(var[0] - var[1]))) > 1e-3, (near, far)
    with pytest.raises(ValueError, match="eta must be in"):
        pipeline.variations(images[:2], 2, jax.random.PRNGKey(8), eta=0.0)


def test_decoder_inpainting_and_image_to_image(pipeline):
    """The decoder's edits (DALL-E 2's product edits): inpainting keeps the unmasked
    pixels exactly; image-to-image at strength 1 is the plain decoding of the same key."""
    images = jax.random.uniform(jax.random.PRNGKey(3), (4, 16, 16, 3), minval=-0.8, maxval=0.8)
    z_i = pipeline.image_embeds_from_images(images)
    hole = jnp.zeros((4, 16, 16)).at[:, 4:12, 4:12].set(1.0)
    key = jax.random.PRNGKey(9)
    out = pipeline.decode(z_i, key, upsample=False, inpaint_image=images, inpaint_mask=hole)[0]
    keep = np.asarray(hole) == 0
    np.testing.assert_array_equal(np.asarray(out)[keep], np.asarray(images)[keep])
    assert float(jnp.abs(out - images)[hole == 1].mean()) > 0.05
    plain = pipeline.decode(z_i, key, upsample=False)[0]
    same = pipeline.decode(z_i, key, upsample=False, init_image=images)[0]
    np.testing.assert_array_equal(same, plain)


def test_upsample_a_users_image(pipeline):
    """`generate upsample`'s path: a user's 16 px images through the upsampler."""
    images = jax.random.uniform(jax.random.PRNGKey(3), (4, 16, 16, 3), minval=-0.8, maxval=0.8)
    out = pipeline.upsample(images, jax.random.PRNGKey(1), aug_level=0.1)
    assert [o.shape for o in out] == [(4, 64, 64, 3)] and bool(jnp.isfinite(out[0]).all())
    with pytest.raises(ValueError, match="aug_level"):
        pipeline.upsample(images, jax.random.PRNGKey(1), aug_level=2.0)
