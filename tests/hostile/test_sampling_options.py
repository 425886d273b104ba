"""Hostile sampling options (guidance, steps, percentile, aug_level, ...): refused at
every entry point that takes them, before any workdir is read or model run."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from configs import imagen
from imagen_jax.cascade import StageSampling
from imagen_jax.config_sections import sampler_settings
from imagen_jax.diffusion import SamplerSettings
from imagen_jax.sample import smoke_sample
from imagen_jax.sample_cascade import Overrides
from imagen_jax.stage_registry import build_stage
from tests.hostile.helpers import INF, NAN, refused, unclip_config
from unclip_jax.pipeline import TrainedStage, load_pipeline


GUIDANCE = r"^guidance must be a finite number >= 0 \(1 = no guidance, 0 = unconditional\)"
STEPS = r"^steps must be a positive integer"
PERCENTILE = r"^percentile must be in \(0, 100\]"
AUG_LEVEL = r"^aug_level must be a number in \[0, 1\]"

REJECTED_OPTIONS = [
    pytest.param(dict(guidance=-1.0), GUIDANCE + ", got -1.0$", id="negative-guidance"),
    pytest.param(dict(guidance=NAN), GUIDANCE + ", got nan$", id="nan-guidance"),
    pytest.param(dict(guidance=INF), GUIDANCE + ", got inf$", id="inf-guidance"),
    pytest.param(dict(guidance="5"), GUIDANCE + ", got '5'$", id="str-guidance"),
    pytest.param(dict(steps=0), STEPS + ", got 0$", id="zero-steps"),
    pytest.param(dict(steps=-10), STEPS + ", got -10$", id="negative-steps"),
    pytest.param(dict(steps=2.5), STEPS + ", got 2.5$", id="fractional-steps"),
    pytest.param(dict(percentile=0.0), PERCENTILE + ", got 0.0$", id="zero-percentile"),
    pytest.param(dict(percentile=100.5), PERCENTILE + ", got 100.5$", id="percentile-over-100"),
    pytest.param(dict(percentile=NAN), PERCENTILE + ", got nan$", id="nan-percentile"),
    pytest.param(dict(aug_level=-0.1), AUG_LEVEL + ", got -0.1$", id="negative-aug-level"),
    pytest.param(dict(aug_level=1.5), AUG_LEVEL + ", got 1.5$", id="aug-level-over-1"),
    pytest.param(dict(aug_level=NAN), AUG_LEVEL + ", got nan$", id="nan-aug-level"),
    pytest.param(dict(eta=NAN), r"^eta must be in \[0, 1\], got nan$", id="nan-eta"),
    pytest.param(dict(sampler="euler"), r"^unknown sampler 'euler'", id="unknown-sampler"),
    pytest.param(dict(threshold="hard"), r"^unknown threshold 'hard'", id="unknown-threshold"),
]


@pytest.mark.parametrize("options, match", REJECTED_OPTIONS)
def test_rejected_sampling_options(options, match):
    """`imagen_jax.sample`'s options, checked as given, before any workdir is read."""
    refused(ValueError, match, Overrides, **options)


@pytest.mark.parametrize("guidance", [-0.5, NAN], ids=["negative", "nan"])
def test_guidance_is_checked_at_every_sampling_entry(guidance, weightless_pipeline, tmp_path):
    refused(ValueError, GUIDANCE, StageSampling, guidance=guidance)
    refused(ValueError, GUIDANCE, smoke_sample, str(tmp_path / "x.png"),
            settings=SamplerSettings(steps=2), guidance=guidance)
    base = build_stage(imagen.get_config("tiny,base64"))  # built, never initialised
    text, mask = jnp.zeros((1, 4, base.unet.text_dim)), jnp.ones((1, 4), bool)
    refused(ValueError, GUIDANCE, base.sample, None, text, mask, None, guidance=guidance)
    decoder = weightless_pipeline.decoder.stage
    refused(ValueError, GUIDANCE, decoder.sample, None, text, mask, None,
            image_embed=jnp.zeros((1, decoder.embed_dim)), guidance=guidance)
    refused(ValueError, GUIDANCE, TrainedStage, decoder, None, SamplerSettings(), guidance)
    refused(ValueError, GUIDANCE, load_pipeline, str(tmp_path / "missing"),
            decoder_guidance=guidance)


def test_sr_aug_level_is_checked_before_sampling():
    sr = build_stage(imagen.get_config("tiny,sr256"))
    text, mask = jnp.zeros((1, 4, sr.unet.text_dim)), jnp.ones((1, 4), bool)
    refused(ValueError, AUG_LEVEL + ", got 1.01$", sr.sample, None, text, mask, None,
            lowres=jnp.zeros((1, 8, 8, 3)), aug_level=1.01)


def test_unclip_zero_steps_is_an_error_not_the_default(tmp_path):
    """It used to fall back silently to the config's steps (`steps or default`)."""
    refused(ValueError, STEPS + ", got 0$", sampler_settings, unclip_config("decoder64").sample,
            steps=0)
    refused(ValueError, STEPS + ", got 0$", load_pipeline, str(tmp_path / "missing"),
            decoder_steps=0)
    assert sampler_settings(unclip_config("decoder64").sample, steps=None).steps == 16
