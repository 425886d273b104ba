"""The text encoder a config names: a local HF T5 checkpoint, or the offline default.

Offline default (config.text.checkpoint == ''): a SentencePiece vocabulary trained
on the training captions and a *randomly initialised, frozen* small T5 (fixed
seed). Random features still tell captions apart, which is enough for the
synthetic shapes set; the vocabulary is saved in the workdir so that sampling
later tokenises exactly as training did.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import jax.numpy as jnp

from imagen_jax.nn.t5 import T5Config
from imagen_jax.text.encoder import TextEncoder
from imagen_jax.text.tokenizer import Tokenizer, train_sentencepiece

TOKENIZER_FILE = "spiece.model"


def text_encoder_from_config(text: Any, workdir: str,
                             captions: Callable[[], Sequence[str]] | None = None) -> TextEncoder:
    """Loads or builds the encoder in `text.dtype`; `captions` supplies the offline
    vocabulary's corpus."""
    dtype = jnp.dtype(text.get("dtype", "float32"))
    if text.checkpoint:
        return TextEncoder.from_pretrained(text.checkpoint, max_length=text.max_length,
                                           dtype=dtype)
    tokenizer = offline_tokenizer(workdir, text.max_length, text.vocab_size, captions)
    config = T5Config(**text.random_t5.to_dict())
    return TextEncoder.random(config, tokenizer, seed=text.seed, dtype=dtype)


def offline_tokenizer(workdir: str, max_length: int, vocab_size: int,
                      captions: Callable[[], Sequence[str]] | None = None) -> Tokenizer:
    """The workdir's caption vocabulary, trained from `captions` on first use."""
    path = os.path.join(workdir, TOKENIZER_FILE)
    if not os.path.exists(path):
        if captions is None:
            raise FileNotFoundError(f"{path} is missing: the offline vocabulary is written by "
                                    "training; train first or name a pretrained checkpoint")
        os.makedirs(workdir, exist_ok=True)
        train_sentencepiece(list(captions()), path, vocab_size=vocab_size)
    return Tokenizer(path, max_length)
