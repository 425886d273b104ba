"""Small input checks shared by every layer (it imports nothing from the project, so
diffusion/, data/, train/ and unclip_jax can all use it)."""

from __future__ import annotations

import contextlib
import numbers
import os
import tempfile
from typing import IO, Any, Iterator


def is_real(value: Any) -> bool:
    """A real number that is not a bool (`True` is an int to Python, never a setting)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_aug_level(level: float) -> float:
    """`level` as a float; ValueError unless it is a real number in [0, 1] (not NaN)."""
    if not is_real(level) or not 0.0 <= level <= 1.0:
        raise ValueError(f"aug_level must be a number in [0, 1], got {level!r}")
    return float(level)


@contextlib.contextmanager
def open_utf8(path: str, newline: str | None = None, what: str = "it") -> Iterator[IO[str]]:
    """`path` opened as UTF-8 text (a byte-order mark tolerated). Bytes that are not
    UTF-8 raise ValueError naming the file, not a bare codec error that does not say
    which file it read. `what` is how the advice names the file ("the prompts file")."""
    try:
        with open(path, encoding="utf-8-sig", newline=newline) as f:
            yield f
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason}); save {what} as UTF-8"
                         ) from None


def check_positive_int(value: Any, name: str) -> int:
    """`value` unchanged if it is an int >= 1 (not a bool); ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_output_dir(path: str, what: str = "output directory") -> str:
    """`path` as a directory that exists (created, with its parents, if need be) and
    can be written to; ValueError naming it and what to do otherwise.

    Sampling CLIs call it before any model is loaded: found only when the first PNG is
    written, a bad output path throws away all the sampling done before it. `what` is
    how the message names the path (e.g. "--out_dir").
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"{what} must be a non-empty path, got {path!r}")
    advice = "give a directory you can write to"
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{what} {path} is an existing file, not a directory: {advice} "
                         "(a new or existing directory, not a file name)")
    try:
        os.makedirs(path, exist_ok=True)
    except (OSError, ValueError) as err:  # ValueError: e.g. an embedded NUL byte
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ValueError(f"{what} {path} cannot be created ({reason}): {advice}") from None
    try:
        # A real write rather than os.access: it also sees read-only mounts, ACLs and
        # full disks, and needs no cleanup (the file is anonymous or removed at once).
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(f"{what} {path} is not writable ({err.strerror or err}): {advice}"
                         ) from None
    return path
