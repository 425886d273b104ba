"""Bad input fails at once with a ValueError that names the argument."""

import pytest

from imagen_jax.diffusion import SamplerSettings, get_schedule


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_steps_must_be_a_positive_integer(steps):
    with pytest.raises(ValueError, match="^steps must be a positive integer"):
        SamplerSettings(steps=steps)


@pytest.mark.parametrize("eta", [-0.1, 1.01, 7.0])
def test_eta_must_be_in_unit_interval(eta):
    with pytest.raises(ValueError, match=r"^eta must be in \[0, 1\]"):
        SamplerSettings(eta=eta)


@pytest.mark.parametrize("percentile", [0.0, -1.0, 100.01])
def test_percentile_must_be_in_half_open_range(percentile):
    with pytest.raises(ValueError, match=r"^percentile must be in \(0, 100\]"):
        SamplerSettings(threshold="dynamic", percentile=percentile)


@pytest.mark.parametrize("field, value, message", [
    ("sampler", "euler", "unknown sampler 'euler'"),
    ("prediction", "score", "unknown prediction 'score'"),
    ("threshold", "hard", "unknown threshold 'hard'"),
])
def test_unknown_names(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplerSettings(**{field: value})


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule name 'sigmoid'"):
        get_schedule("sigmoid")


def test_good_settings_pass():
    s = SamplerSettings(sampler="ddpm", steps=1, eta=1.0, threshold="dynamic", percentile=100.0)
    assert s.steps == 1
