"""Shapes captions: the exact words a scene implies, and back.

Three kinds, each checkable against the scene:
  single    "a red circle", "an orange square"
  count     "three blue squares"            (2-4 identical objects)
  relation  "a green triangle to the left of a yellow circle"
"""

from __future__ import annotations

import re

from imagen_jax.data.shapes.scene import COLORS, COUNT_WORDS, RELATIONS, SHAPES, Scene, SceneObject


def _describe(color: str, shape: str) -> str:
    article = "an" if color[0] in "aeiou" else "a"  # "an orange square"
    return f"{article} {color} {shape}"


def caption_text(kind: str, objects: tuple[SceneObject, ...], relation: str | None) -> str:
    """The caption of a scene of `kind` holding `objects` (a sampler builds it before
    the frozen `Scene` exists)."""
    first = objects[0]
    if kind == "single":
        return _describe(first.color, first.shape)
    if kind == "count":
        return f"{COUNT_WORDS[len(objects)]} {first.color} {first.shape}s"
    second = objects[1]
    return f"{_describe(first.color, first.shape)} {relation} {_describe(second.color, second.shape)}"


def caption_for(scene: Scene) -> str:
    """The caption a scene's content implies (what `Scene.caption` holds for sampled scenes)."""
    return caption_text(scene.kind, scene.objects, scene.relation)


_WORD = r"(\w+)"
_OBJECT = rf"an? {_WORD} {_WORD}"
_COUNT_RE = re.compile(rf"^{_WORD} {_WORD} {_WORD}s$")
_RELATION_RE = re.compile(rf"^{_OBJECT} ({'|'.join(RELATIONS)}) {_OBJECT}$")
_SINGLE_RE = re.compile(rf"^{_OBJECT}$")


def parse_caption(caption: str) -> tuple[str, tuple[tuple[str, str], ...], str | None]:
    """Caption -> (kind, ((colour, shape) per object, in scene order), relation).

    The inverse of `caption_for` up to positions and sizes; evaluation uses it to
    score what a caption asked for without keeping the scene around.
    """
    if match := _RELATION_RE.match(caption):
        c1, s1, relation, c2, s2 = match.groups()
        parsed = ("relation", ((c1, s1), (c2, s2)), relation)
    elif match := _SINGLE_RE.match(caption):
        parsed = ("single", (match.groups(),), None)
    elif (match := _COUNT_RE.match(caption)) and match.group(1) in COUNT_WORDS.values():
        word, color, shape = match.groups()
        count = {w: n for n, w in COUNT_WORDS.items()}[word]
        parsed = ("count", ((color, shape),) * count, None)
    else:
        raise ValueError(f"caption is not a shapes caption: {caption!r}")
    if not all(color in COLORS and shape in SHAPES for color, shape in parsed[1]):
        raise ValueError(f"caption names an unknown colour or shape: {caption!r}")
    return parsed
