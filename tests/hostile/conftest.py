"""Tokenizers and a weightless unCLIP pipeline for the hostile-input tests: every
refusal is shown to happen in front of a model that has no weights."""

from __future__ import annotations

import pytest

from imagen_jax.diffusion import SamplerSettings
from imagen_jax.stage_registry import build_stage
from imagen_jax.text.hf_tokenizer import HFTokenizer
from imagen_jax.text.tokenizer import Tokenizer, train_sentencepiece
from tests.hostile.helpers import MAX_LENGTH, WORDS, unclip_config
from tests.text.helpers import shape_captions
from unclip_jax.conditioning import FrozenCLIP
from unclip_jax.pipeline import TrainedStage, UnclipPipeline


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


@pytest.fixture(scope="module")
def weightless_pipeline(spm) -> UnclipPipeline:
    """An unCLIP pipeline whose models have no weights (params=None): any call that got
    as far as a model would fail, so each refusal is shown to come first."""
    clip = FrozenCLIP(build_stage(unclip_config("clip")).clip, None, spm)
    settings = SamplerSettings(steps=4)
    return UnclipPipeline(clip, TrainedStage(build_stage(unclip_config("prior")), None, settings),
                          TrainedStage(build_stage(unclip_config("decoder64")), None, settings))
