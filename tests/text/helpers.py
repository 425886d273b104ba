"""Helpers for the text tests: shape captions, padded id batches, tiny random HF T5 models."""

from __future__ import annotations

import random

import numpy as np

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star", "hexagon"]
COUNTS = ["one", "two", "three", "four", "five"]
RELATIONS = ["above", "below", "to the left of", "to the right of", "next to"]

# Small enough to build in a second; 32 buckets / max distance 128 as in real T5, with
# sequences of 20 so that distances past the exact-bucket range (8) are exercised.
HF_SIZES = dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                relative_attention_num_buckets=32, relative_attention_max_distance=128,
                dropout_rate=0.0, layer_norm_epsilon=1e-6)
SEQ_LEN = 20


def shape_captions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    captions = []
    for _ in range(n):
        count = rng.choice(COUNTS)
        plural = "" if count == "one" else "s"
        captions.append(f"{count} {rng.choice(COLOURS)} {rng.choice(SHAPES)}{plural} "
                        f"{rng.choice(RELATIONS)} a {rng.choice(COLOURS)} {rng.choice(SHAPES)}")
    return captions


def padded_batch(vocab_size: int = 128, lengths=(SEQ_LEN, 13, 5, 1), seed: int = 0):
    """Random ids [B, SEQ_LEN] with right padding (id 0) after each row's length."""
    rng = np.random.RandomState(seed)
    mask = np.arange(SEQ_LEN)[None, :] < np.asarray(lengths)[:, None]
    ids = np.where(mask, rng.randint(3, vocab_size, (len(lengths), SEQ_LEN)), 0)
    return ids.astype(np.int64), mask


def build_hf_model(feed_forward_proj: str, seed: int = 0, full: bool = False):
    """A random HF T5 (encoder-only, or T5ForConditionalGeneration when `full`) in eval mode.

    Layer-norm weights are randomised too (HF initialises them to ones), so the test
    also catches a norm weight that is dropped or misplaced in conversion.
    """
    import torch
    from transformers import T5Config, T5EncoderModel, T5ForConditionalGeneration

    config = T5Config(**HF_SIZES, feed_forward_proj=feed_forward_proj,
                      tie_word_embeddings=feed_forward_proj == "relu")
    torch.manual_seed(seed)
    model = (T5ForConditionalGeneration if full else T5EncoderModel)(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name:
                param.uniform_(0.5, 1.5)
    return model


def hf_last_hidden_state(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch

    encoder = model.get_encoder() if hasattr(model, "get_encoder") else model
    with torch.no_grad():
        out = encoder(input_ids=torch.from_numpy(ids),
                      attention_mask=torch.from_numpy(mask.astype(np.int64)))
    return out.last_hidden_state.numpy()
