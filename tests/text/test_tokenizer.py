"""SentencePiece tokenizer: T5 id layout, padding, truncation reporting, null prompt."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from imagen_jax.text import Tokenizer, train_sentencepiece
from imagen_jax.text.tokenizer import EOS_ID, PAD_ID

from tests.text.helpers import shape_captions


def test_trained_model_has_t5_layout(spiece_path):
    tok = Tokenizer(spiece_path, max_length=16)
    assert os.path.basename(spiece_path) == "spiece.model"
    assert 10 < tok.vocab_size <= 64
    assert not [f for f in os.listdir(os.path.dirname(spiece_path)) if f.endswith(".tmp")]


def test_round_trip_padding_and_eos(spiece_path):
    tok = Tokenizer(spiece_path, max_length=32)
    prompts = ["a red circle above two blue squares", "one star"]
    batch = tok.encode(prompts)
    assert batch.ids.shape == batch.mask.shape == (2, 32)
    assert batch.ids.dtype == np.int32 and batch.mask.dtype == bool
    assert not batch.truncated.any()
    for row, mask in zip(batch.ids, batch.mask):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # real tokens first, then padding
        assert row[n - 1] == EOS_ID and (row[n:] == PAD_ID).all()
        assert (row[:n - 1] > EOS_ID).all()
    assert tok.decode(batch.ids) == prompts
    assert tok.decode(batch.ids[1]) == "one star"


def test_single_string_is_a_batch_of_one(spiece_path):
    tok = Tokenizer(spiece_path, max_length=16)
    batch = tok.encode("two green triangles")
    np.testing.assert_array_equal(batch.ids, tok.encode(["two green triangles"]).ids)
    assert batch.ids.shape == (1, 16)


def test_truncation_is_flagged_and_warned(spiece_path, caplog):
    tok = Tokenizer(spiece_path, max_length=6)
    long = " ".join(shape_captions(3, seed=5))
    with caplog.at_level(logging.WARNING, logger="imagen_jax.text.tokenizer"):
        batch = tok.encode([long, "one star", long])
    np.testing.assert_array_equal(batch.truncated, [True, False, True])
    assert "2 of 3 prompt(s) truncated to max_length=6" in caplog.text
    assert batch.mask[0].all() and batch.ids[0, -1] == EOS_ID  # EOS kept as last token
    assert tok.decode(batch.ids[0]) and long.startswith(tok.decode(batch.ids[0])[:3])


def test_exact_fit_is_not_truncated(spiece_path):
    probe = Tokenizer(spiece_path, max_length=64).encode("three purple hexagons")
    n = int(probe.mask.sum())
    batch = Tokenizer(spiece_path, max_length=n).encode("three purple hexagons")
    assert not batch.truncated.any() and batch.mask.all()


@pytest.mark.parametrize("prompt", ["", "   ", "\t\n"])
def test_empty_prompt_is_the_null_condition(spiece_path, prompt):
    batch = Tokenizer(spiece_path, max_length=8).encode([prompt, "one star"])
    assert not batch.mask[0].any() and (batch.ids[0] == PAD_ID).all()
    assert batch.mask[1].any() and not batch.truncated.any()


def test_empty_batch(spiece_path):
    batch = Tokenizer(spiece_path, max_length=8).encode([])
    assert batch.ids.shape == (0, 8) and batch.truncated.shape == (0,)


def test_non_string_prompt_is_named(spiece_path):
    tok = Tokenizer(spiece_path, max_length=8)
    with pytest.raises(TypeError, match=r"^prompts\[2\] must be a str, got int$"):
        tok.encode(["a", "b", 3])
    with pytest.raises(TypeError, match="prompts must be a str or a sequence of str"):
        tok.encode(b"bytes")


def test_bad_construction(spiece_path, tmp_path):
    with pytest.raises(ValueError, match="max_length"):
        Tokenizer(spiece_path, max_length=0)
    with pytest.raises(FileNotFoundError, match="spiece.model"):
        Tokenizer.from_pretrained_dir(tmp_path, max_length=8)
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a sentencepiece model"):
        Tokenizer(tmp_path / "junk.model", max_length=8)


def test_from_pretrained_dir_and_overwrite(tmp_path):
    path = train_sentencepiece(shape_captions(50, seed=1), str(tmp_path / "spiece.model"), 40)
    first = (tmp_path / "spiece.model").read_bytes()
    train_sentencepiece(shape_captions(50, seed=2), path, 40)  # replaced atomically
    assert (tmp_path / "spiece.model").read_bytes() != first
    tok = Tokenizer.from_pretrained_dir(tmp_path, max_length=32)
    assert tok.decode(tok.encode("five white stars").ids[0]) == "five white stars"


def test_train_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match=r"prompts\[1\]"):
        train_sentencepiece(["ok", None], str(tmp_path / "m.model"), 32)
    with pytest.raises(ValueError, match="non-empty caption"):
        train_sentencepiece(["", " "], str(tmp_path / "m.model"), 32)
    with pytest.raises(ValueError, match="vocab_size"):
        train_sentencepiece(["a b"], str(tmp_path / "m.model"), 2)


def test_offline_vocabulary_keeps_caption_words_whole(tmp_path):
    """A 128-piece unigram model split 'green' into g/ree/n and pushed relation captions
    past 16 tokens; the BPE vocabulary keeps every word of the domain one piece."""
    from imagen_jax.data.shapes import example_scene

    captions = [example_scene("train", i).caption for i in range(2000)]
    path = train_sentencepiece(captions, str(tmp_path / "spiece.model"), 128)
    tokenizer = Tokenizer(path, max_length=16)
    words = {w for c in captions for w in c.split()}
    for word in words:
        assert len(tokenizer.encode(word).mask[0].nonzero()[0]) == 2, word  # piece + EOS
    held_out = [example_scene("test", i).caption for i in range(300)]
    assert not tokenizer.encode(held_out).truncated.any()


def test_special_token_text_in_a_prompt_stays_text(spiece_path):
    """'</s>' or '<pad>' typed in a prompt is not EOS or padding: the only EOS is the
    one the tokenizer appends (where the CLIP text tower built on it pools)."""
    tok = Tokenizer(spiece_path, max_length=32)
    batch = tok.encode(["a red </s> circle <pad> <unk>"])
    n = int(batch.mask[0].sum())
    assert batch.ids[0, n - 1] == EOS_ID
    assert EOS_ID not in batch.ids[0, :n - 1].tolist()
    assert PAD_ID not in batch.ids[0, :n - 1].tolist()
