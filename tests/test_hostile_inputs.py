"""Hostile inputs (issue #10): each bad input, where it enters the library, and the
one-line message it gets, raised before any model is built or compiled; the inputs
that are accepted instead, with what they become; and property-based tests
(hypothesis) of the tokenizers and the prompt path.

Sections: prompts, sampling options, images (variations / inversion), configs, Hugging
Face checkpoint directories, dataset folders, properties. Nothing here compiles a
model: every refusal happens in front of one (models are built without weights, or
stubbed), which is also what keeps this file fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import unicodedata
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from configs import imagen, unclip
from imagen_jax import image_io
from imagen_jax.cascade import StageSampling
from imagen_jax.data.build_report import read_build_report
from imagen_jax.data.folder_captions import captioned_images
from imagen_jax.data.image_decode import ImageDecodeError, load_rgb
from imagen_jax.data.image_text_folder import build_image_text_folder
from imagen_jax.diffusion import SamplerSettings
from imagen_jax.nn.t5 import T5Config
from imagen_jax.sample import smoke_sample
from imagen_jax.sample_cascade import Overrides, generate, read_prompts_file, sample_to_files
from imagen_jax.stages import stage_from_config as imagen_stage
from imagen_jax.text import load_t5_encoder
from imagen_jax.text.hf_tokenizer import HFTokenizer, tokenizer_from_dir
from imagen_jax.text.t5_convert import conversion_table
from imagen_jax.text.tokenizer import EOS_ID, PAD_ID, Tokenizer, check_prompts, train_sentencepiece
from imagen_jax.train.validate import ConfigError, validate_config
from tests.text.helpers import COLOURS, COUNTS, SHAPES, shape_captions
from unclip_jax.clip_convert import load_clip
from unclip_jax.conditioning import FrozenCLIP
from unclip_jax.pipeline import Loaded, UnclipPipeline, load_pipeline, settings_from_config
from unclip_jax.stages import stage_from_config as unclip_stage

MAX_LENGTH = 16
NAN, INF = float("nan"), float("inf")
WORDS = COLOURS + SHAPES + COUNTS


def refused(exc_type: type[Exception], match: str, call, *args, **kwargs) -> Exception:
    """Asserts `call(*args, **kwargs)` raises `exc_type` matching `match`, in one line."""
    with pytest.raises(exc_type, match=match) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value), f"a multi-line message: {info.value}"
    return info.value


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def spm(tmp_path_factory) -> Tokenizer:
    path = tmp_path_factory.mktemp("spm") / "spiece.model"
    return Tokenizer(train_sentencepiece(shape_captions(200), str(path), vocab_size=64),
                     MAX_LENGTH)


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory) -> HFTokenizer:
    """A word-level tokenizer.json with CLIP's layout: <s> ... </s>, built locally."""
    from tokenizers import Tokenizer as RustTokenizer, models, pre_tokenizers, processors

    words = ["<pad>", "<s>", "</s>", "<unk>"] + sorted(
        set(WORDS) | {w for caption in shape_captions(200) for w in caption.split()})
    tok = RustTokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    path = tmp_path_factory.mktemp("hf-tok") / "tokenizer.json"
    tok.save(str(path))
    return HFTokenizer(path, MAX_LENGTH)


@pytest.fixture(scope="module")
def spm_long(spm) -> Tokenizer:
    return Tokenizer(spm.model_path, 4 * MAX_LENGTH)


@pytest.fixture(scope="module", params=["sentencepiece", "tokenizer.json"])
def tokenizer(request, spm, hf_tokenizer):
    return spm if request.param == "sentencepiece" else hf_tokenizer


def _unclip_config(stage: str):
    c = unclip.get_config(f"tiny,{stage}")
    if stage in ("prior", "decoder64"):
        c.clip.workdir = "/unused"
    return c


@pytest.fixture(scope="module")
def weightless_pipeline(spm) -> UnclipPipeline:
    """An unCLIP pipeline whose models have no weights (params=None): any call that got
    as far as a model would fail, so each refusal below is shown to come first."""
    clip = FrozenCLIP(unclip_stage(_unclip_config("clip")).clip, None, spm)
    settings = SamplerSettings(steps=4)
    return UnclipPipeline(clip, Loaded(unclip_stage(_unclip_config("prior")), None, settings),
                          Loaded(unclip_stage(_unclip_config("decoder64")), None, settings))


class _Untouchable:
    """A stand-in for a model that must not be reached: any use is a test failure."""

    def __getattr__(self, name):
        raise AssertionError(f"the input reached the model (.{name}) before being checked")

    def __call__(self, *args, **kwargs):
        raise AssertionError("the input reached the model before being checked")


# --------------------------------------------------------------------------- prompts

REJECTED_PROMPTS = [
    pytest.param(None, TypeError, r"^prompts must be a str or a sequence of str, got NoneType$",
                 id="None"),
    pytest.param(7, TypeError, r"^prompts must be a str or a sequence of str, got int$",
                 id="int"),
    pytest.param(b"a red circle", TypeError, r"got bytes \(decode bytes to str first\)$",
                 id="bytes"),
    pytest.param(b"\xffred \xfe\xfd circle", TypeError,
                 r"got bytes \(decode bytes to str first\)$", id="invalid-utf8-bytes"),
    pytest.param(["a red circle", None], TypeError, r"^prompts\[1\] must be a str, got NoneType$",
                 id="list-with-None"),
    pytest.param(["ok", b"\xff\xfe"], TypeError,
                 r"^prompts\[1\] must be a str, got bytes \(decode bytes", id="list-with-bytes"),
    pytest.param(["ok", "ok", 3.5], TypeError, r"^prompts\[2\] must be a str, got float$",
                 id="list-with-float"),
    pytest.param([["nested"]], TypeError, r"^prompts\[0\] must be a str, got list$",
                 id="nested-list"),
    pytest.param({"prompt": "x"}, TypeError, r"got dict$", id="dict"),
    pytest.param(np.array(["a", "b"]), TypeError, r"got ndarray$", id="numpy-array"),
    # What Python makes of undecodable bytes on a command line (surrogateescape).
    pytest.param(["fine", "red \udcff circle"], ValueError,
                 r"^prompts\[1\] is not valid text: '\\udcff' at position 4 cannot be encoded",
                 id="lone-surrogate"),
]


@pytest.mark.parametrize("prompts, exc_type, match", REJECTED_PROMPTS)
def test_rejected_prompts(tokenizer, prompts, exc_type, match):
    refused(exc_type, match, tokenizer.encode, prompts)


@pytest.mark.parametrize("prompt", ["", "   ", "\t\n\r", "\x00\x1b\x7f\x85"],
                         ids=["empty", "spaces", "whitespace", "only-control-characters"])
def test_blank_prompt_is_the_null_condition(tokenizer, prompt):
    """Accepted: the unconditional prompt of classifier-free guidance (no tokens at all)."""
    batch = tokenizer.encode([prompt, "one red star"])
    assert not batch.mask[0].any() and (batch.ids[0] == tokenizer.encode("").ids[0]).all()
    assert batch.mask[1].any() and not batch.truncated.any()


def test_control_characters_count_as_spaces(tokenizer):
    """Accepted: a NUL, a bell or an escape is a word break, not an <unk> token."""
    dirty = tokenizer.encode("\x1bone\x00red\tcircle\x07")
    clean = tokenizer.encode("one red circle")
    np.testing.assert_array_equal(dirty.ids, clean.ids)
    np.testing.assert_array_equal(dirty.mask, clean.mask)


def test_ten_thousand_characters_are_truncated(tokenizer, caplog):
    """Accepted: cut to max_length tokens, the end token kept last, flagged and logged."""
    batch = tokenizer.encode(["one red circle " * 700, "two blue stars"])
    assert batch.ids.shape == (2, MAX_LENGTH)
    assert batch.truncated.tolist() == [True, False]
    assert batch.mask[0].all()
    assert "1 of 2 prompt(s) truncated to max_length=16" in caplog.text
    end = EOS_ID if isinstance(tokenizer, Tokenizer) else 2  # T5's EOS; </s> here
    assert batch.ids[0, -1] == end


def test_cascade_prompts_are_checked_before_the_models(tmp_path):
    refused(TypeError, r"^prompts\[1\] must be a str, got NoneType$",
            generate, _Untouchable(), ["a red circle", None])
    refused(ValueError, "^no prompts given$", generate, _Untouchable(), [])
    # Before the (nonexistent) workdir is read, too.
    refused(TypeError, r"^prompts\[0\] must be a str, got bytes",
            sample_to_files, [str(tmp_path / "missing")], [b"\xff"], str(tmp_path / "out"))


def test_a_str_prompt_is_one_prompt_not_characters():
    """Accepted: generate(cascade, "a red circle") is one image, not one per character."""
    seen = []

    def cascade(prompts, key, progress=None):
        seen.append(prompts)
        return [jnp.zeros((len(prompts), 4, 4, 3))]

    cascade.stages = [None]
    outputs = generate(cascade, "a red circle")
    assert seen == [["a red circle"]] and outputs[0].shape[0] == 1


def test_unclip_prompts_are_checked_before_clip(weightless_pipeline):
    refused(TypeError, r"^prompts\[1\] must be a str, got NoneType$",
            weightless_pipeline.generate, ["a red circle", None], jax.random.PRNGKey(0))
    refused(ValueError, r"^prompts\[0\] is not valid text",
            weightless_pipeline.generate, "\udcff", jax.random.PRNGKey(0))


def test_prompts_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("a red circle\n".encode("utf-8") + b"caf\xe9 au lait\n")  # Latin-1
    refused(ValueError, r"prompts.txt: not UTF-8 text \(invalid continuation byte\); save",
            read_prompts_file, str(path))
    path.write_bytes(b"\xef\xbb\xbfa red circle\n\n  two blue stars \n")  # UTF-8 with BOM
    assert read_prompts_file(str(path)) == ["a red circle", "two blue stars"]


# --------------------------------------------------------------------------- sampling options

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
    base = imagen_stage(imagen.get_config("tiny,base64"))  # built, never initialised
    text, mask = jnp.zeros((1, 4, base.unet.text_dim)), jnp.ones((1, 4), bool)
    refused(ValueError, GUIDANCE, base.sample, None, text, mask, None, guidance=guidance)
    decoder = weightless_pipeline.decoder.stage
    refused(ValueError, GUIDANCE, decoder.sample, None, text, mask, None,
            image_embed=jnp.zeros((1, decoder.embed_dim)), guidance=guidance)
    refused(ValueError, GUIDANCE, Loaded, decoder, None, SamplerSettings(), guidance)
    refused(ValueError, GUIDANCE, load_pipeline, str(tmp_path / "missing"),
            decoder_guidance=guidance)


def test_sr_aug_level_is_checked_before_sampling():
    sr = imagen_stage(imagen.get_config("tiny,sr256"))
    text, mask = jnp.zeros((1, 4, sr.unet.text_dim)), jnp.ones((1, 4), bool)
    refused(ValueError, AUG_LEVEL + ", got 1.01$", sr.sample, None, text, mask, None,
            lowres=jnp.zeros((1, 8, 8, 3)), aug_level=1.01)


def test_unclip_zero_steps_is_an_error_not_the_default(tmp_path):
    """It used to fall back silently to the config's steps (`steps or default`)."""
    refused(ValueError, STEPS + ", got 0$", settings_from_config, _unclip_config("decoder64"), 0)
    refused(ValueError, STEPS + ", got 0$", load_pipeline, str(tmp_path / "missing"),
            decoder_steps=0)
    assert settings_from_config(_unclip_config("decoder64"), None).steps == 16


# --------------------------------------------------------------------------- images

IMAGES = r"^images must be a non-empty \[batch, height, width, 3\] array, got shape "

REJECTED_IMAGE_ARRAYS = [
    pytest.param((2, 16, 16, 1), IMAGES + r"\(2, 16, 16, 1\)$", id="one-channel"),
    pytest.param((2, 16, 16, 4), IMAGES + r"\(2, 16, 16, 4\)$", id="four-channels"),
    pytest.param((3, 16, 16), IMAGES + r"\(3, 16, 16\)$", id="channels-first-or-no-batch"),
    pytest.param((1, 3, 16, 16), IMAGES + r"\(1, 3, 16, 16\)$", id="NCHW"),
    pytest.param((0, 16, 16, 3), IMAGES + r"\(0, 16, 16, 3\)$", id="empty-batch"),
    pytest.param((1, 0, 16, 3), IMAGES + r"\(1, 0, 16, 3\)$", id="zero-height"),
]


@pytest.mark.parametrize("shape, match", REJECTED_IMAGE_ARRAYS)
def test_variations_refuse_malformed_images(weightless_pipeline, shape, match):
    refused(ValueError, match, weightless_pipeline.variations, np.zeros(shape, np.float32), 2,
            None)


def test_inversion_and_edits_refuse_malformed_images(weightless_pipeline):
    gray = np.zeros((1, 16, 16, 1), np.float32)
    refused(ValueError, IMAGES, weightless_pipeline.invert, gray)
    refused(ValueError, IMAGES, weightless_pipeline.interpolate, gray[0], gray[0], 3, None)
    refused(ValueError, IMAGES, weightless_pipeline.text_diff, gray[0], "a", "b", [0.1], None)
    refused(ValueError, r"^num must be a positive int \(variations per image\), got 0$",
            weightless_pipeline.variations, np.zeros((1, 16, 16, 3), np.float32), 0, None)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data): what a bomb looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                               0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


REJECTED_IMAGE_FILES = [
    pytest.param(b"<html>404 not found</html>", ValueError,
                 r"x\.png: not a readable image \(cannot identify image file", id="html-as-png"),
    pytest.param(bytes(range(256)) * 4, ValueError, r"x\.png: not a readable image",
                 id="random-bytes"),
    pytest.param(b"", ValueError, r"x\.png: not a readable image", id="empty-file"),
    pytest.param(_png_header(0, 16), ValueError, r"x\.png: not a readable image",
                 id="zero-width"),
    pytest.param(_png_header(10_000, 10_000), ValueError,
                 r"x\.png: image too large \(10000x10000 pixels, more than 89478485\)$",
                 id="huge-dimensions"),
    pytest.param(_png_header(100_000, 100_000), ValueError,
                 r"x\.png: image too large \(Image size \(10000000000 pixels\) exceeds",
                 id="decompression-bomb"),
    pytest.param(_png_header(16, 16), ValueError, r"x\.png: not a readable image",
                 id="header-without-pixels"),
]


@pytest.mark.parametrize("data, exc_type, match", REJECTED_IMAGE_FILES)
def test_image_files_for_variations(tmp_path, data, exc_type, match):
    (tmp_path / "x.png").write_bytes(data)
    refused(exc_type, match, image_io.load_image, str(tmp_path / "x.png"), 16)


def test_image_paths_and_sizes(tmp_path):
    refused(FileNotFoundError, "^image not found: .*missing.png$", image_io.load_image,
            str(tmp_path / "missing.png"))
    refused(FileNotFoundError, "^image not found", image_io.load_image, str(tmp_path))
    from PIL import Image

    Image.new("LA", (20, 12), (128, 200)).save(tmp_path / "gray-alpha.png")
    refused(ValueError, "^size must be a positive int or None, got 0$", image_io.load_image,
            str(tmp_path / "gray-alpha.png"), 0)
    # Accepted: any PIL mode becomes RGB, centre-cropped to a square and resized.
    pixels = image_io.load_image(str(tmp_path / "gray-alpha.png"), 16)
    assert pixels.shape == (16, 16, 3) and np.allclose(pixels, 128 / 127.5 - 1.0, atol=1e-6)


# --------------------------------------------------------------------------- configs


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
    return imagen.get_config(f"tiny,{name}") if family == "imagen" else _unclip_config(name)


@pytest.mark.parametrize("stage, mutate, match", CONFIG_RULES)
def test_config_rules(request, stage, mutate, match):
    processes = PROCESSES.get(request.node.callspec.id, 1)
    config = _stage_config(stage)
    config.train.batch_size = 24  # divisible by the 8 devices and by the 3 processes
    validate_config(config, device_count=8, process_count=processes)  # valid as it stands
    mutate(config)
    refused(ConfigError, match, validate_config, config, device_count=8,
            process_count=processes)


# --------------------------------------------------------------------------- HF checkpoints

T5_SIZES = dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)


def _write_t5(directory, *, config=None, tensors=None):
    """A T5 encoder directory as `save_pretrained` lays it out (config.json with
    model_type 't5', model.safetensors under HF's tensor names and shapes), random
    weights; `tensors` edits the tensor dict before it is written."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    hf_config = {"model_type": "t5", "architectures": ["T5EncoderModel"],
                 "feed_forward_proj": "relu", **T5_SIZES}
    table = conversion_table(T5Config.from_hf_dict(hf_config))
    rng = np.random.default_rng(0)
    weights = {name: rng.standard_normal(shape).astype(np.float32)
               for name, shape, _ in table.values()}
    if tensors:
        tensors(weights)
    (directory / "config.json").write_text(json.dumps(config if config is not None
                                                      else hf_config))
    save_file(weights, str(directory / "model.safetensors"))
    return directory


# A config.json as transformers writes it for a BERT model.
BERT_CONFIG = {"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 32,
               "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64,
               "vocab_size": 128, "max_position_embeddings": 64, "type_vocab_size": 2}


def _pickle_only(d):
    (d / "model.safetensors").unlink()
    # Not even a valid pickle: a loader that tried to unpickle it would fail differently.
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04 not a pickle")


def _narrow_key(weights):
    name = "encoder.block.0.layer.0.SelfAttention.k.weight"
    weights[name] = weights[name][:, :16].copy()


REJECTED_CHECKPOINTS = [
    pytest.param(lambda d: (d / "config.json").unlink(), FileNotFoundError,
                 r"^config file not found: .*config\.json$", id="missing-config"),
    pytest.param(lambda d: (d / "model.safetensors").unlink(), FileNotFoundError,
                 r"has neither model\.safetensors nor model\.safetensors\.index\.json$",
                 id="missing-weights"),
    pytest.param(_pickle_only, ValueError,
                 r"holds only pickle-based weights \(pytorch_model\.bin\), which are refused "
                 r"because unpickling can run arbitrary code; convert them to safetensors",
                 id="pickle-bin-only"),
    pytest.param(lambda d: (d / "config.json").write_text(json.dumps(BERT_CONFIG)), ValueError,
                 r"config\.json: model_type 'bert' is not a 't5' / 'mt5' checkpoint$",
                 id="bert-config-as-t5"),
    pytest.param(lambda d: (d / "config.json").write_text(json.dumps({"d_model": 32})),
                 ValueError, r"config\.json: T5 config\.json lacks required key\(s\)",
                 id="config-without-model-type"),
    pytest.param(lambda d: _write_t5(d, tensors=_narrow_key), ValueError,
                 r"^encoder\.block\.0\.layer\.0\.SelfAttention\.k\.weight: expected shape "
                 r"\(32, 32\), found \(32, 16\)$", id="mismatched-shape"),
    pytest.param(lambda d: (d / "config.json").write_text("{'single': 'quotes'}"), ValueError,
                 r"config\.json: invalid JSON", id="config-not-json"),
    pytest.param(lambda d: (d / "config.json").write_text("[1, 2]"), ValueError,
                 r"config\.json: not a JSON object$", id="config-json-list"),
    pytest.param(lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 4), ValueError,
                 r"model\.safetensors: not a safetensors file", id="weights-truncated"),
    pytest.param(lambda d: (d / "model.safetensors").write_bytes(b"PK\x03\x04" + b"\0" * 60),
                 ValueError, r"model\.safetensors: safetensors header length \d+ exceeds the file",
                 id="weights-zip-archive"),
]


@pytest.mark.parametrize("damage, exc_type, match", REJECTED_CHECKPOINTS)
def test_t5_checkpoint_dirs(tmp_path, damage, exc_type, match):
    directory = _write_t5(tmp_path / "t5")
    damage(directory)
    refused(exc_type, match, load_t5_encoder, directory)


def test_checkpoint_dir_itself(tmp_path):
    refused(FileNotFoundError, r"^checkpoint directory not found: .*nowhere$", load_t5_encoder,
            tmp_path / "nowhere")
    refused(ValueError, r"^dtype must be float32 or bfloat16, got float16$", load_t5_encoder,
            _write_t5(tmp_path / "t5"), dtype="float16")


def test_t5_checkpoint_offered_as_clip(tmp_path):
    refused(ValueError, r"config\.json: model_type 't5' is not a 'clip' checkpoint$", load_clip,
            _write_t5(tmp_path / "t5"))


def test_safetensors_beside_a_pickle_is_read_and_the_pickle_never_opened(tmp_path):
    """Accepted: the safetensors file is used; the .bin (not even a pickle) is ignored."""
    directory = _write_t5(tmp_path / "t5")
    (directory / "pytorch_model.bin").write_bytes(b"\x80\x04 not a pickle")
    config, params = load_t5_encoder(directory)
    assert config.num_layers == 1 and params["token_embedder"]["embedding"].shape == (128, 32)


def test_tokenizer_files(tmp_path):
    refused(FileNotFoundError, r"has neither tokenizer\.json nor spiece\.model$",
            tokenizer_from_dir, tmp_path, MAX_LENGTH)
    (tmp_path / "spiece.model").write_bytes(b"\x80\x04 pickled?")
    refused(ValueError, r"spiece\.model: not a sentencepiece model", tokenizer_from_dir,
            tmp_path, MAX_LENGTH)
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0"}')
    refused(ValueError, r"tokenizer\.json: not a Hugging Face tokenizer\.json",
            tokenizer_from_dir, tmp_path, MAX_LENGTH)


# --------------------------------------------------------------------------- dataset folders


@contextlib.contextmanager
def _no_hang(seconds: int = 10):
    """Turns a hang (e.g. opening a FIFO) into a test failure instead of a stuck suite."""
    def fail(*_):
        raise AssertionError(f"hung for {seconds} s")
    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _good_png(path, caption: str | None = "one red square"):
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(path)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption)


UNREADABLE_FILES = [
    pytest.param(lambda p: os.symlink(p.name, p), "a dangling or looping symlink",
                 id="symlink-loop"),
    pytest.param(lambda p: os.symlink(p.parent / "gone.png", p), "a dangling or looping symlink",
                 id="dangling-symlink"),
    pytest.param(os.mkfifo, "not a regular file", id="fifo"),
]


@pytest.mark.parametrize("make, detail", UNREADABLE_FILES)
def test_unreadable_image_files_are_reported_without_hanging(tmp_path, make, detail):
    path = tmp_path / "x.png"
    make(path)
    with _no_hang():
        error = refused(ImageDecodeError, rf"x\.png: unreadable \({detail}\)$", load_rgb,
                        str(path))
    assert error.reason == "unreadable"


def test_permission_denied_image(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root, which reads a chmod 000 file anyway (the FIFO and "
                    "symlink cases above cover unreadable files)")
    path = tmp_path / "x.png"
    _good_png(path)
    path.chmod(0)
    error = refused(ImageDecodeError, r"x\.png: unreadable \(PermissionError", load_rgb,
                    str(path))
    assert error.reason == "unreadable"


def test_folder_walk_survives_loops_fifos_and_odd_names(tmp_path):
    _good_png(tmp_path / "a.png")
    _good_png(tmp_path / "b.png", caption=None)
    os.mkfifo(tmp_path / "b.txt")  # a sidecar that would block whoever opened it
    os.symlink(".", tmp_path / "loop")  # a directory cycle: not followed
    os.symlink(tmp_path, tmp_path / "sub")
    (tmp_path / "photo.jpg").mkdir()  # a directory named like an image: walked into
    _good_png(tmp_path / "photo.jpg" / "c.png")
    with _no_hang():
        captions = captioned_images(str(tmp_path))
    assert captions == {"a.png": "one red square", "photo.jpg/c.png": "one red square"}


@pytest.mark.parametrize("name, content, match", [
    pytest.param("captions.jsonl", b'{"file": "a.png", "caption": "caf\xe9"}\n',
                 r"captions\.jsonl: not UTF-8 text \(invalid continuation byte\); save it as",
                 id="jsonl-latin1"),
    pytest.param("captions.csv", b"file,caption\na.png,\xff\xfe red\n",
                 r"captions\.csv: not UTF-8 text \(invalid start byte\); save it as UTF-8$",
                 id="csv-not-utf8"),
])
def test_caption_index_in_another_encoding(tmp_path, name, content, match):
    _good_png(tmp_path / "a.png", caption=None)
    (tmp_path / name).write_bytes(content)
    refused(ValueError, match, captioned_images, str(tmp_path))


def test_source_dir_that_is_not_a_folder(tmp_path):
    refused(FileNotFoundError, r"source_dir '.*missing' does not exist$", captioned_images,
            str(tmp_path / "missing"))
    _good_png(tmp_path / "a.png")
    refused(NotADirectoryError, r"source_dir '.*a\.png' is not a directory$", captioned_images,
            str(tmp_path / "a.png"))


def test_build_counts_unreadable_files_and_finishes(tmp_path):
    """The whole build, end to end: the hostile entries are counted, not fatal."""
    source = tmp_path / "source"
    source.mkdir()
    _good_png(source / "a.png")
    os.symlink("loop.png", source / "loop.png")
    os.mkfifo(source / "fifo.jpg")
    os.symlink(".", source / "again")
    with _no_hang(60):
        builder = build_image_text_folder(source, tmp_path / "data", min_size=8)
    report = read_build_report(builder)
    assert report["counts"]["good"] == 1 and report["counts"]["unreadable"] == 2
    assert sorted(report["problem_files"]["unreadable"]) == ["fifo.jpg", "loop.png"]


# --------------------------------------------------------------------------- properties

# No example database: nothing is written into the checkout (.hypothesis/).
FAST = settings(max_examples=75, deadline=None, database=None)


def _check_layout(tokenizer, batch, n: int) -> None:
    """What every batch must be: [n, L] ids in the vocabulary, the mask a prefix of
    ones marking exactly the non-padding positions."""
    assert batch.ids.shape == batch.mask.shape == (n, MAX_LENGTH)
    assert batch.ids.dtype == np.int32 and batch.truncated.shape == (n,)
    assert ((batch.ids >= 0) & (batch.ids < tokenizer.vocab_size)).all()
    lengths = batch.mask.sum(axis=1)
    assert (batch.mask == (np.arange(MAX_LENGTH) < lengths[:, None])).all()  # prefix of ones
    assert (batch.ids[~batch.mask] == PAD_ID).all()
    assert (batch.truncated <= (lengths == MAX_LENGTH)).all()


@FAST
@given(prompts=st.lists(st.text(max_size=200), max_size=4))
def test_any_text_gives_a_well_formed_batch(tokenizer, prompts):
    batch = tokenizer.encode(prompts)
    _check_layout(tokenizer, batch, len(prompts))
    for i, prompt in enumerate(prompts):
        if not "".join(c for c in prompt if unicodedata.category(c) != "Cc").strip():
            assert not batch.mask[i].any()  # blank or control characters: the null condition
        # A batch is its prompts encoded one at a time.
        np.testing.assert_array_equal(tokenizer.encode(prompt).ids[0], batch.ids[i])


@FAST
@given(text=st.text(min_size=1, max_size=400))
def test_truncation_keeps_the_start_of_the_prompt(spm, spm_long, text):
    short, long = spm.encode(text), spm_long.encode(text)
    n = int(short.mask.sum())
    if short.truncated[0]:
        np.testing.assert_array_equal(short.ids[0, :n - 1], long.ids[0, :n - 1])
        assert short.ids[0, n - 1] == EOS_ID and n == MAX_LENGTH
    else:
        np.testing.assert_array_equal(short.ids[0, :n], long.ids[0, :n])
        assert int(long.mask.sum()) == n


@FAST
@given(words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=6))
def test_caption_words_round_trip(spm_long, words):
    text = " ".join(words)
    batch = spm_long.encode(text)
    assert not batch.truncated[0] and spm_long.decode(batch.ids[0]) == text


@FAST
@given(words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=40))
def test_hf_truncation_keeps_the_end_token_last(hf_tokenizer, words):
    batch = hf_tokenizer.encode(" ".join(words))
    n = int(batch.mask.sum())
    assert n == min(len(words) + 2, MAX_LENGTH) and batch.truncated[0] == (len(words) + 2 > n)
    assert batch.ids[0, 0] == 1 and batch.ids[0, n - 1] == 2  # <s> ... </s>


NOT_TEXT = st.one_of(st.none(), st.integers(), st.floats(), st.binary(), st.lists(st.text()))


@FAST
@given(prompts=st.lists(st.text(max_size=50), max_size=5), bad=NOT_TEXT, data=st.data())
def test_the_prompt_path_accepts_any_str_and_names_the_first_non_str(prompts, bad, data):
    checked = check_prompts(prompts)
    assert len(checked) == len(prompts)
    assert all(not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in p) for p in checked)
    assert [len(p) for p in checked] == [len(p) for p in prompts]
    index = data.draw(st.integers(0, len(prompts)))
    bad_batch = prompts[:index] + [bad] + prompts[index:]
    refused(TypeError, rf"^prompts\[{index}\] must be a str, got {type(bad).__name__}",
            check_prompts, bad_batch)


@FAST
@given(before=st.text(max_size=20), after=st.text(max_size=20),
       surrogate=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
def test_any_lone_surrogate_is_refused_with_its_position(before, after, surrogate):
    refused(ValueError, rf"^prompts\[0\] is not valid text: .* at position {len(before)} ",
            check_prompts, before + surrogate + after)
