"""What the hostile-input tests share: the one-line refusal check and the inputs'
constants (plain helpers, not fixtures: the fixtures are in conftest.py)."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from configs import unclip
from tests.text.helpers import COLOURS, COUNTS, SHAPES

MAX_LENGTH = 16
NAN, INF = float("nan"), float("inf")
WORDS = COLOURS + SHAPES + COUNTS


def refused(exc_type: type[Exception], match: str, call: Callable[..., Any], *args: Any,
            **kwargs: Any) -> Exception:
    """Asserts `call(*args, **kwargs)` raises `exc_type` matching `match`, in one line."""
    with pytest.raises(exc_type, match=match) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value), f"a multi-line message: {info.value}"
    return info.value


def unclip_config(stage: str) -> Any:
    """The tiny unCLIP config of `stage`; stages that read a frozen CLIP get a
    placeholder workdir (nothing here loads it)."""
    c = unclip.get_config(f"tiny,{stage}")
    if stage in ("prior", "decoder64"):
        c.clip.workdir = "/unused"
    return c
