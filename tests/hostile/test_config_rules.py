"""Every rule of imagen_jax.train.validate: a valid tiny config, one field broken, the
one-line ConfigError naming it."""

from __future__ import annotations

import pytest

from configs import imagen
from imagen_jax.train.validate import ConfigError, validate_config
from tests.hostile.helpers import NAN, refused, unclip_config


def _set(path: str, value):
    def mutate(config):
        *parents, leaf = path.split(".")
        node = config
        for name in parents:
            node = node[name]
        node[leaf] = value
    return mutate


def _both(*mutations):
    def mutate(config):
        for m in mutations:
            m(config)
    return mutate


# (stage, mutation, message): every rule of imagen_jax.train.validate, with 8 devices
# on one process, or on PROCESSES[id].
CONFIG_RULES = [
    pytest.param("imagen.base64", _set("stage", "imagen.sr512"), r"^config\.stage: unknown stage",
                 id="stage"),
    pytest.param("imagen.base64", _set("mesh.model", 2), r"^config\.mesh: .*unknown axes",
                 id="mesh-axis-name"),
    pytest.param("imagen.base64", _set("mesh.fsdp", 0), r"^config\.mesh: .*fsdp=0 must be",
                 id="mesh-axis-size"),
    pytest.param("imagen.base64", _set("mesh.fsdp", -1), r"^config\.mesh: .*only one axis",
                 id="mesh-two-fills"),
    pytest.param("imagen.base64", _set("mesh.tensor", 3), r"^config\.mesh: .*cannot fill",
                 id="mesh-fill"),
    pytest.param("imagen.base64", _both(_set("mesh.data", 4), _set("mesh.tensor", 4)),
                 r"^config\.mesh: .*needs 16 devices, have 8", id="mesh-size"),
    pytest.param("imagen.base64", _set("train.batch_size", 12),
                 r"^config\.train\.batch_size 12 is not divisible by the data-parallel size 8",
                 id="batch-vs-mesh"),
    pytest.param("imagen.base64", _set("train.batch_size", 8),
                 r"^config\.train\.batch_size 8 is not divisible by the 3 processes$",
                 id="batch-vs-3-processes"),
    pytest.param("imagen.base64", _set("train.batch_size", 0),
                 r"^config\.train\.batch_size 0 is not divisible", id="batch-zero"),
    pytest.param("imagen.base64", _set("train.steps", 0),
                 r"^config\.train\.steps must be positive, got 0$", id="train-steps"),
    pytest.param("imagen.base64", _set("train.nonfinite", "ignore"),
                 r"^config\.train\.nonfinite must be 'error' or 'skip'", id="nonfinite"),
    pytest.param("imagen.base64", _set("train.learning_rate", NAN),
                 r"^config\.train\.learning_rate must be a finite number > 0, got nan$",
                 id="nan-learning-rate"),
    pytest.param("imagen.base64", _set("train.learning_rate", -1e-4),
                 r"^config\.train\.learning_rate must be", id="negative-learning-rate"),
    pytest.param("imagen.base64", _set("train.ema_decay", 1.0),
                 r"^config\.train\.ema_decay must be in \[0, 1\), got 1\.0$", id="ema-decay"),
    pytest.param("imagen.base64", _set("train.warmup_steps", -1),
                 r"^config\.train\.warmup_steps must be an int >= 0", id="warmup"),
    pytest.param("imagen.base64", _set("log.every_steps", 0),
                 r"^config\.log\.every_steps must be an int >= 1, got 0$", id="log-every"),
    pytest.param("imagen.base64", _set("log.sample_every_steps", -5),
                 r"^config\.log\.sample_every_steps must be an int >= 0", id="sample-every"),
    pytest.param("imagen.base64", _set("sample.guidance", NAN),
                 r"^config\.sample: guidance must be a finite number", id="sample-guidance"),
    pytest.param("imagen.base64", _set("sample.steps", 0),
                 r"^config\.sample: steps must be a positive integer", id="sample-steps"),
    pytest.param("imagen.base64", _set("sample.percentile", 120.0),
                 r"^config\.sample: percentile must be in", id="sample-percentile"),
    pytest.param("imagen.sr256", _set("sample.aug_level", 2.0),
                 r"^config\.sample: aug_level must be", id="sample-aug-level"),
    pytest.param("imagen.base64", _set("text.random_t5.d_model", 64),
                 r"^config\.text\.random_t5\.d_model 64 != config\.model\.text_dim",
                 id="t5-width"),
    pytest.param("imagen.base64", _set("data.resolution", 8),
                 r"^config\.data\.resolution 8 is below config\.image_size", id="resolution"),
    pytest.param("imagen.sr256", _set("lowres_size", 12),
                 r"^config\.lowres_size 12 does not divide config\.image_size", id="sr-factor"),
    pytest.param("imagen.sr256", _set("diffusion.train_crop", 10),
                 r"^config\.diffusion\.train_crop 10 must be at most image_size and divisible",
                 id="train-crop"),
    pytest.param("unclip.prior", _set("clip.checkpoint", "/also/set"),
                 r"^config\.clip: set exactly one of clip\.workdir", id="clip-source"),
    pytest.param("unclip.prior", _set("clip.text_width", 48),
                 r"^config\.model\.text_dim \d+ != config\.clip\.text_width 48", id="clip-width"),
    pytest.param("unclip.prior", _set("clip.embed_dim", 48),
                 r"^config\.model\.embed_dim \d+ != config\.clip\.embed_dim 48", id="embed-dim"),
    pytest.param("unclip.prior", _set("sample.best_of", 0),
                 r"^config\.sample\.best_of must be at least 1, got 0$", id="best-of"),
    pytest.param("unclip.decoder64", _both(_set("caption.layers", 1), _set("caption.width", 48)),
                 r"^config\.caption\.width 48 != config\.model\.text_dim", id="caption-width"),
    pytest.param("unclip.clip", _set("text.max_length", 999),
                 r"^config\.text\.max_length 999 exceeds config\.model\.max_length",
                 id="clip-max-length"),
]


PROCESSES = {"batch-vs-3-processes": 3}


def _stage_config(stage: str):
    family, name = stage.split(".")
    return imagen.get_config(f"tiny,{name}") if family == "imagen" else unclip_config(name)


@pytest.mark.parametrize("stage, mutate, match", CONFIG_RULES)
def test_config_rules(request, stage, mutate, match):
    processes = PROCESSES.get(request.node.callspec.id, 1)
    config = _stage_config(stage)
    config.train.batch_size = 24  # divisible by the 8 devices and by the 3 processes
    validate_config(config, device_count=8, process_count=processes)  # valid as it stands
    mutate(config)
    refused(ConfigError, match, validate_config, config, device_count=8,
            process_count=processes)
