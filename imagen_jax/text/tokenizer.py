"""SentencePiece tokenizer with T5's layout (pad=0, eos=1, unk=2), fixed-length batches.

Each prompt becomes its pieces followed by EOS, padded with pad id 0 to
`max_length`, or cut to `max_length - 1` pieces + EOS. Cutting a prompt changes what
the image is conditioned on, so it is reported: per-prompt `truncated` flags and a
logged warning. An empty (or whitespace-only) prompt becomes all padding with an
all-False mask: the null condition that classifier-free guidance drops to. Control
characters count as spaces (`check_prompts`), so a prompt of only those is empty too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import tempfile
from typing import Sequence

import numpy as np
import sentencepiece as spm

logger = logging.getLogger(__name__)

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
SPIECE_FILE = "spiece.model"


@dataclasses.dataclass(frozen=True)
class TokenizedBatch:
    """ids [B, L] int32, mask [B, L] bool (True on real tokens), truncated [B] bool."""

    ids: np.ndarray
    mask: np.ndarray
    truncated: np.ndarray


# Control characters (Unicode category Cc: C0, DEL, C1) -> space. A NUL or a terminal
# colour escape pasted into a prompt is noise, not words: SentencePiece would give it an
# <unk> piece and byte-level BPE a byte token, conditioning the image on garbage. Tabs
# and newlines are Cc too; as spaces they separate words exactly as before.
_CONTROL_TO_SPACE = {c: " " for c in (*range(0x20), *range(0x7F, 0xA0))}


def _not_str(what: str, value: object) -> TypeError:
    hint = " (decode bytes to str first)" if isinstance(value, (bytes, bytearray)) else ""
    return TypeError(f"{what}, got {type(value).__name__}{hint}")


def check_prompts(prompts: str | Sequence[str]) -> list[str]:
    """The prompts as a list of str (a str is a batch of one), control characters
    replaced by spaces; TypeError / ValueError naming the bad prompt's index.

    `bytes` are refused rather than guessed at: decode them first (their encoding is
    the caller's to know). A str holding lone surrogates (what Python makes of
    undecodable bytes on a command line or in a file opened with 'surrogateescape')
    cannot be encoded as UTF-8 for the tokenizer, and is refused too.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    elif isinstance(prompts, (bytes, bytearray)) or not isinstance(prompts, Sequence):
        raise _not_str("prompts must be a str or a sequence of str", prompts)
    checked = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise _not_str(f"prompts[{i}] must be a str", prompt)
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"prompts[{i}] is not valid text: {prompt[err.start]!r} at "
                             f"position {err.start} cannot be encoded as UTF-8 (undecodable "
                             "input bytes?)") from None
        checked.append(prompt.translate(_CONTROL_TO_SPACE))
    return checked


def _check_max_length(max_length: int) -> int:
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) \
            or max_length < 1:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    return int(max_length)


class Tokenizer:
    """A SentencePiece model file, encoding prompts to fixed-length T5 id batches."""

    def __init__(self, model_path: str | os.PathLike, max_length: int) -> None:
        self.model_path = os.fspath(model_path)
        self.max_length = _check_max_length(max_length)
        if not os.path.isfile(self.model_path):
            raise FileNotFoundError(f"sentencepiece model not found: {self.model_path}")
        with open(self.model_path, "rb") as f:
            proto = f.read()
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(proto)
        except (RuntimeError, OSError) as err:
            raise ValueError(f"{self.model_path}: not a sentencepiece model ({err})") from err
        layout = (self._sp.pad_id(), self._sp.eos_id(), self._sp.unk_id())
        if layout != (PAD_ID, EOS_ID, UNK_ID):
            raise ValueError(f"{self.model_path}: (pad, eos, unk) ids are {layout}, T5 needs "
                             f"{(PAD_ID, EOS_ID, UNK_ID)}")

    @classmethod
    def from_pretrained_dir(cls, directory: str | os.PathLike, max_length: int) -> "Tokenizer":
        """Loads `spiece.model` from a local Hugging Face T5 directory."""
        path = os.path.join(os.fspath(directory), SPIECE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        return cls(path, max_length)

    @property
    def vocab_size(self) -> int:
        """Number of pieces; every id the tokenizer emits is below this."""
        return self._sp.get_piece_size()

    def encode(self, prompts: str | Sequence[str]) -> TokenizedBatch:
        """Tokenizes a prompt or a batch of prompts to [B, max_length] ids and mask."""
        prompts = check_prompts(prompts)
        n, length = len(prompts), self.max_length
        ids = np.full((n, length), PAD_ID, dtype=np.int32)
        truncated = np.zeros((n,), dtype=bool)
        pieces = self._sp.encode(prompts) if prompts else []
        for i, (prompt, row) in enumerate(zip(prompts, pieces)):
            if not prompt.strip():
                continue  # the null condition: no tokens at all, not even EOS
            if len(row) + 1 > length:
                row, truncated[i] = row[:length - 1], True
            ids[i, :len(row)] = row
            ids[i, len(row)] = EOS_ID
        if truncated.any():
            logger.warning("%d of %d prompt(s) truncated to max_length=%d tokens",
                           int(truncated.sum()), n, length)
        return TokenizedBatch(ids=ids, mask=ids != PAD_ID, truncated=truncated)

    def decode(self, ids: np.ndarray | Sequence[int] | Sequence[Sequence[int]]) -> str | list[str]:
        """Text of one id row (-> str) or of a batch [B, L] (-> list of str); stops at EOS."""
        array = np.asarray(ids)
        if array.ndim not in (1, 2) or not (array.size == 0
                                            or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"ids must be a 1-D or 2-D integer array, got shape {array.shape} "
                             f"of {array.dtype}")
        if array.size and (array.min() < 0 or array.max() >= self.vocab_size):
            raise ValueError(f"ids must lie in [0, {self.vocab_size}), found "
                             f"[{array.min()}, {array.max()}]")
        rows = [array] if array.ndim == 1 else list(array)
        texts = []
        for row in rows:
            row = [int(t) for t in row]
            if EOS_ID in row:
                row = row[:row.index(EOS_ID)]
            texts.append(self._sp.decode([t for t in row if t != PAD_ID]))
        return texts[0] if array.ndim == 1 else texts


def train_sentencepiece(captions: Sequence[str], output_path: str | os.PathLike,
                        vocab_size: int) -> str:
    """Trains a BPE SentencePiece model with T5's id layout on `captions`.

    For the offline default (synthetic shape captions, nothing downloadable).
    `vocab_size` is an upper bound: a small corpus may support fewer pieces, and
    `hard_vocab_limit=False` lets training stop there instead of failing. The file
    is written atomically (temp file, then rename) and its path returned.
    """
    captions = check_prompts(captions)
    if not any(c.strip() for c in captions):
        raise ValueError("captions must contain at least one non-empty caption")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) \
            or vocab_size < 4:
        raise ValueError(f"vocab_size must be an int >= 4, got {vocab_size!r}")
    output_path = os.fspath(output_path)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(captions), model_writer=model, vocab_size=int(vocab_size),
        model_type="bpe", character_coverage=1.0, hard_vocab_limit=False,
        pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1, minloglevel=2)
    directory = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".spiece-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.getvalue())
        os.replace(tmp, output_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return output_path
