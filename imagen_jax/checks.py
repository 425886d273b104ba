"""Small input checks shared by every layer (it imports nothing from the project, so
diffusion/, data/, train/ and unclip_jax can all use it)."""

from __future__ import annotations

import contextlib
import numbers
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
