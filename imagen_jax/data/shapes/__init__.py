"""Procedural coloured-shape scenes with exact captions: a dataset that needs no download.

Every example is a `Scene` (shapes, colours, positions in normalised [0, 1]^2
coordinates, y down) sampled from a seed derived from (base seed, split, index),
so any example can be regenerated on its own and generation order does not
matter. The same scene renders at any resolution, which gives a text-to-image
cascade consistent low/high-resolution pairs: example i of the 64 px and of the
256 px data are the same scene.

Captions come in three kinds, each checkable against the scene:
  single    "a red circle", "an orange square"
  count     "three blue squares"            (2-4 identical objects)
  relation  "a green triangle to the left of a yellow circle"

Layouts keep every object inside the image and apart from the others, and a
relation is only used when it is clearly true along its axis and clearly not
the other axis's relation, so a caption is never ambiguous about the picture.

Some compositions are held out of the train split entirely (`HELD_OUT_PAIRS`,
`HELD_OUT_RELATIONS`); the test split contains only scenes that use them, which
measures attribute binding and compositional generalisation.

This package's public face; the parts:
  scene      vocabulary, `Scene` / `SceneObject`, geometry, JSON
  captions   `caption_for`, `parse_caption`
  sampling   `sample_scene` (layouts)
  rendering  `render`
  examples   held-out compositions, `example_scene`, `generate_example`
"""

from imagen_jax.data.shapes.captions import caption_for, caption_text, parse_caption
from imagen_jax.data.shapes.examples import (HELD_OUT_PAIRS, HELD_OUT_RELATIONS, SPLITS,
                                             example_rng, example_scene, generate_example,
                                             is_held_out)
from imagen_jax.data.shapes.rendering import SUPERSAMPLE, render
from imagen_jax.data.shapes.sampling import EDGE_MARGIN, MIN_GAP, SIZE_RANGES, sample_scene
from imagen_jax.data.shapes.scene import (BACKGROUND, COLORS, COUNT_WORDS, KINDS,
                                          RELATION_DOMINANCE, RELATION_GAP, RELATIONS, SHAPES,
                                          Scene, SceneObject, bounding_box, inside_image,
                                          relation_holds, scene_from_json, scene_to_json,
                                          separated)

__all__ = [
    "BACKGROUND", "COLORS", "COUNT_WORDS", "EDGE_MARGIN", "HELD_OUT_PAIRS", "HELD_OUT_RELATIONS",
    "KINDS", "MIN_GAP", "RELATIONS", "RELATION_DOMINANCE", "RELATION_GAP", "SHAPES",
    "SIZE_RANGES", "SPLITS", "SUPERSAMPLE", "Scene", "SceneObject", "bounding_box",
    "caption_for", "caption_text", "example_rng", "example_scene", "generate_example",
    "inside_image", "is_held_out", "parse_caption", "relation_holds", "render",
    "sample_scene", "scene_from_json", "scene_to_json", "separated",
]
