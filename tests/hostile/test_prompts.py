"""Hostile prompts: what the tokenizers, the cascade and unCLIP refuse (in one line,
before any model), and the odd prompts they accept instead."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.sample_cascade import generate, read_prompts_file, sample_to_files
from imagen_jax.text.tokenizer import EOS_ID, Tokenizer
from tests.hostile.helpers import MAX_LENGTH, refused


class _Untouchable:
    """A stand-in for a model that must not be reached: any use is a test failure."""

    def __getattr__(self, name):
        raise AssertionError(f"the input reached the model (.{name}) before being checked")

    def __call__(self, *args, **kwargs):
        raise AssertionError("the input reached the model before being checked")


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
