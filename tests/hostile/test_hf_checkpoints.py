"""Hostile Hugging Face checkpoint directories: missing, pickled, mislabelled or
damaged T5 / CLIP weights and tokenizer files, refused before anything is loaded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imagen_jax.nn.t5 import T5Config
from imagen_jax.text import load_t5_encoder
from imagen_jax.text.hf_tokenizer import tokenizer_from_dir
from imagen_jax.text.t5_convert import conversion_table
from tests.hostile.helpers import MAX_LENGTH, refused
from unclip_jax.clip_convert import load_clip


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
