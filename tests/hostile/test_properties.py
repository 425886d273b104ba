"""Property-based tests (hypothesis) of the tokenizers and the prompt path: any text
gives a well-formed batch, any non-str is named, any lone surrogate is refused."""

from __future__ import annotations

import unicodedata

import numpy as np
from hypothesis import given, settings, strategies as st

from imagen_jax.text.tokenizer import EOS_ID, PAD_ID, check_prompts
from tests.hostile.helpers import MAX_LENGTH, WORDS, refused


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
