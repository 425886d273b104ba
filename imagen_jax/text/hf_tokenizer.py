"""A Hugging Face `tokenizer.json` (e.g. CLIP's byte-level BPE) as a fixed-length
tokenizer with the same interface as the SentencePiece `Tokenizer`.

The file is read by the `tokenizers` library (Rust, no Python code from the
checkpoint runs). Its post-processor adds the model's special tokens (CLIP:
<|startoftext|> ... <|endoftext|>); a special token's text inside a prompt is read as
plain text, never as that token. A prompt longer than `max_length` keeps its first
`max_length - 1` tokens and its final special token, so the end-of-text token, which
CLIP's text tower pools, stays last; truncation is flagged and logged. Padding
positions are masked out (their id is `pad_id`). An empty prompt is all padding
with an all-False mask: the null condition, as with the SentencePiece tokenizer.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from imagen_jax.text.tokenizer import TokenizedBatch, _check_max_length, check_prompts

logger = logging.getLogger(__name__)
TOKENIZER_JSON = "tokenizer.json"


class HFTokenizer:
    def __init__(self, path: str | os.PathLike, max_length: int, pad_id: int = 0) -> None:
        try:
            from tokenizers import Tokenizer as RustTokenizer
        except ImportError as err:
            raise ImportError("reading tokenizer.json needs the `tokenizers` package "
                              "(pip install tokenizers)") from err
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"tokenizer file not found: {self.path}")
        try:
            self._tok = RustTokenizer.from_file(self.path)
        except Exception as err:  # the library raises its own exception type
            raise ValueError(f"{self.path}: not a Hugging Face tokenizer.json ({err})") from None
        self._tok.no_truncation()
        self._tok.no_padding()
        # A prompt's text is never a special token: "<|endoftext|>" typed by a user is
        # tokenized as text (transformers' split_special_tokens=True), so EOS only
        # comes from the post-processor, where CLIP's text tower pools it.
        self._tok.encode_special_tokens = True
        self.max_length = _check_max_length(max_length)
        self.pad_id = pad_id

    @classmethod
    def from_pretrained_dir(cls, directory: str | os.PathLike, max_length: int
                            ) -> "HFTokenizer":
        return cls(os.path.join(os.fspath(directory), TOKENIZER_JSON), max_length)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, prompts: str | Sequence[str]) -> TokenizedBatch:
        prompts = check_prompts(prompts)
        n, length = len(prompts), self.max_length
        ids = np.full((n, length), self.pad_id, np.int32)
        mask = np.zeros((n, length), bool)
        truncated = np.zeros((n,), bool)
        for i, prompt in enumerate(prompts):
            if not prompt.strip():
                continue
            row = self._tok.encode(prompt).ids
            if len(row) > length:
                row, truncated[i] = row[:length - 1] + row[-1:], True
            ids[i, :len(row)] = row
            mask[i, :len(row)] = True
        if truncated.any():
            logger.warning("%d of %d prompt(s) truncated to max_length=%d tokens",
                           int(truncated.sum()), n, length)
        return TokenizedBatch(ids=ids, mask=mask, truncated=truncated)


def tokenizer_from_dir(directory: str | os.PathLike, max_length: int):
    """tokenizer.json if the directory has one, else SentencePiece's spiece.model."""
    from imagen_jax.text.tokenizer import SPIECE_FILE, Tokenizer

    directory = os.fspath(directory)
    if os.path.isfile(os.path.join(directory, TOKENIZER_JSON)):
        return HFTokenizer.from_pretrained_dir(directory, max_length)
    if os.path.isfile(os.path.join(directory, SPIECE_FILE)):
        return Tokenizer.from_pretrained_dir(directory, max_length)
    raise FileNotFoundError(f"{directory} has neither {TOKENIZER_JSON} nor {SPIECE_FILE}")
