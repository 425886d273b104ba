"""Shared fixtures: tiny random HF T5 checkpoints and a SentencePiece model on shape captions."""

from __future__ import annotations

import pytest

from tests.text.helpers import build_hf_model, shape_captions


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """{variant: (model, directory)} for 'relu' (tied, v1.0) and 'gated-gelu' (v1.1)."""
    out = {}
    for variant in ("relu", "gated-gelu"):
        model = build_hf_model(variant)
        directory = tmp_path_factory.mktemp(f"t5-{variant}")
        model.save_pretrained(directory)
        out[variant] = (model, directory)
    return out


@pytest.fixture(scope="session")
def spiece_path(tmp_path_factory):
    from imagen_jax.text import train_sentencepiece

    path = tmp_path_factory.mktemp("spm") / "spiece.model"
    return train_sentencepiece(shape_captions(200), str(path), vocab_size=64)
