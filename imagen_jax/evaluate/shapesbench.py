"""ShapesBench: a weight-free compositional scorer for images of the shapes domain.

In the spirit of DrawBench's Colors / Counting / Positional categories, but scored
by geometry instead of by raters, so it needs no model weights and cannot be fooled
by a scorer network's own biases:

  1. segment: each pixel takes the nearest palette entry (background or one of the
     six colours) if it is within `max_color_distance` of it, else no label;
  2. detect: 4-connected components of each colour with at least `min_area` pixels;
  3. classify shape: IoU of the component with the ideal circle, square and
     (apex-up) triangle fitted to its bounding box; the best wins if its IoU is at
     least `min_shape_iou`, else the object's shape is 'unknown';
  4. relations: compare centroids along the relation's axis, which must dominate.

Per prompt (parsed with `imagen_jax.data.shapes.parse_caption`) naming K objects,
with the K largest detected objects as "the main objects", it scores
  colour        the main objects' colours are the set the prompt names
  shape         the main objects' shapes are the set the prompt names
  count         exactly K objects are detected
  colour_shape  the main objects are the prompted (colour, shape) pairs (binding)
  relation      (relation prompts) the main objects are the two prompted ones and
                the relation holds between them
  whole         count, colour_shape and (if any) relation: the whole prompt is right
Looking only at the main objects keeps clutter from earning credit: an image with
every colour and shape in it scores no better than chance.
and aggregates per category with Wilson 95% confidence intervals, overall and by
prompt kind.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from imagen_jax.data.shapes import BACKGROUND, COLORS, KINDS, SHAPES, parse_caption

CATEGORIES = ("colour", "shape", "count", "colour_shape", "relation", "whole")
_PALETTE_NAMES = ("background",) + tuple(COLORS)
_PALETTE = np.asarray([BACKGROUND] + list(COLORS.values()), np.float32)


@dataclasses.dataclass(frozen=True)
class ScorerSettings:
    """Thresholds of the scorer; the defaults are the ones the tests hold it to."""

    # Half the smallest palette distance (~95) would reject colours a model renders
    # slightly off; 80 still rejects 50% blends of a colour with the background.
    max_color_distance: float = 80.0
    # The smallest object the data has is a triangle of side 0.13 (area ~0.0085 of
    # the image); a quarter of that keeps every real object and drops speckle.
    min_area_fraction: float = 0.002
    min_area_pixels: int = 4
    min_shape_iou: float = 0.5


@dataclasses.dataclass(frozen=True)
class DetectedObject:
    color: str
    shape: str  # one of SHAPES or 'unknown'
    center: tuple[float, float]  # (x, y) in [0, 1], y down
    area: int  # pixels
    iou: float  # IoU with the best-fitting ideal shape


def _template(shape: str, height: int, width: int) -> np.ndarray:
    """The ideal shape filling a height x width box, sampled at pixel centres."""
    v = (np.arange(height, dtype=np.float32) + 0.5) / height - 0.5
    u = (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5
    u, v = u[None, :], v[:, None]
    if shape == "circle":
        return u * u + v * v <= 0.25
    if shape == "square":
        return np.ones((height, width), bool)
    return np.broadcast_to(np.abs(u) <= (v + 0.5) / 2, (height, width))  # apex up


def classify_shape(mask: np.ndarray, min_iou: float = 0.5) -> tuple[str, float]:
    """(shape, IoU) of a cropped boolean mask against each ideal shape in its box."""
    height, width = mask.shape
    best, best_iou = "unknown", 0.0
    for shape in SHAPES:
        template = _template(shape, height, width)
        union = np.logical_or(mask, template).sum()
        iou = float(np.logical_and(mask, template).sum() / union) if union else 0.0
        if iou > best_iou:
            best, best_iou = shape, iou
    return (best if best_iou >= min_iou else "unknown"), best_iou


def segment(image: np.ndarray, settings: ScorerSettings = ScorerSettings()) -> np.ndarray:
    """Palette index per pixel (0 = background, 1.. = COLORS order), -1 = no label."""
    pixels = np.asarray(image, np.float32)
    distance = np.linalg.norm(pixels[..., None, :] - _PALETTE, axis=-1)
    labels = distance.argmin(-1)
    return np.where(distance.min(-1) <= settings.max_color_distance, labels, -1)


def detect_objects(image: np.ndarray, settings: ScorerSettings = ScorerSettings()
                   ) -> list[DetectedObject]:
    """The objects in a uint8 [H, W, 3] image, largest first."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3], got shape {image.shape}")
    height, width = image.shape[:2]
    labels = segment(image, settings)
    min_area = max(settings.min_area_pixels, int(settings.min_area_fraction * height * width))
    objects = []
    for index, color in enumerate(COLORS, start=1):
        components, count = ndimage.label(labels == index)  # 4-connectivity
        for box_index, box in enumerate(ndimage.find_objects(components), start=1):
            mask = components[box] == box_index
            area = int(mask.sum())
            if area < min_area:
                continue
            shape, iou = classify_shape(mask, settings.min_shape_iou)
            ys, xs = np.nonzero(mask)
            center = ((box[1].start + xs.mean() + 0.5) / width,
                      (box[0].start + ys.mean() + 0.5) / height)
            objects.append(DetectedObject(color, shape, center, area, iou))
    return sorted(objects, key=lambda o: -o.area)


def centroid_relation_holds(subject: tuple[float, float], obj: tuple[float, float],
                            relation: str) -> bool:
    """"subject <relation> obj" from centroids: the relation's axis dominates the offset."""
    dx, dy = obj[0] - subject[0], obj[1] - subject[1]
    along, across = {"to the left of": (dx, dy), "to the right of": (-dx, dy),
                     "above": (dy, dx), "below": (-dy, dx)}[relation]
    return along > 0 and abs(across) < along


def score_image(image: np.ndarray, prompt: str, settings: ScorerSettings = ScorerSettings()
                ) -> dict:
    """Per-category booleans (None where a category does not apply) for one image."""
    kind, wanted, relation = parse_caption(prompt)
    found = detect_objects(image, settings)
    # Colour, shape, binding and relation look at the K largest objects (K = how many
    # the prompt names): an image sprayed with every colour and shape gets no credit.
    main = found[:len(wanted)]
    pairs = [(o.color, o.shape) for o in main]
    scores = {
        "kind": kind,
        "colour": {o.color for o in main} == {c for c, _ in wanted},
        "shape": {o.shape for o in main} == {s for _, s in wanted},
        "count": len(found) == len(wanted),
        "colour_shape": sorted(pairs) == sorted(wanted),
        "relation": None,
        "objects": [dataclasses.asdict(o) for o in found],
    }
    exact = scores["colour_shape"] and scores["count"]
    if relation is not None:
        subjects = [o for o in main if (o.color, o.shape) == wanted[0]]
        targets = [o for o in main if (o.color, o.shape) == wanted[1]]
        scores["relation"] = any(centroid_relation_holds(s.center, t.center, relation)
                                 for s in subjects for t in targets)
        exact = exact and scores["relation"]
    scores["whole"] = exact
    return scores


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (sensible at 0 and n)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _aggregate(rows: Sequence[dict]) -> dict:
    out = {"n": len(rows)}
    for category in CATEGORIES:
        values = [r[category] for r in rows if r[category] is not None]
        if not values:
            continue
        hits = int(sum(values))
        low, high = wilson_interval(hits, len(values))
        out[category] = {"accuracy": hits / len(values), "n": len(values),
                         "ci95": [low, high]}
    return out


def summarize(rows: Sequence[dict]) -> dict:
    """{'all': {...}, 'single': {...}, 'count': {...}, 'relation': {...}} per category."""
    summary = {"all": _aggregate(rows)}
    for kind in KINDS:
        subset = [r for r in rows if r["kind"] == kind]
        if subset:
            summary[kind] = _aggregate(subset)
    return summary


def score_images(images: Iterable[np.ndarray], prompts: Sequence[str],
                 settings: ScorerSettings = ScorerSettings()) -> tuple[list[dict], dict]:
    """(per-image rows, summary) for images paired with their prompts."""
    rows = []
    for image, prompt in zip(images, prompts, strict=True):
        row = score_image(image, prompt, settings)
        rows.append(dict(row, prompt=prompt))
    return rows, summarize(rows)


def format_table(summary: dict, title: str = "ShapesBench") -> str:
    """A fixed-width table: one row per prompt kind, accuracy [95% CI] per category."""
    header = f"{'kind':<9}{'n':>5}" + "".join(f"{c:>20}" for c in CATEGORIES)
    lines = [title, header, "-" * len(header)]
    for kind in ("all",) + KINDS:
        if kind not in summary:
            continue
        row = summary[kind]
        cells = []
        for category in CATEGORIES:
            if category in row:
                acc, (low, high) = row[category]["accuracy"], row[category]["ci95"]
                cells.append(f"{100 * acc:5.1f} [{100 * low:4.1f},{100 * high:5.1f}]")
            else:
                cells.append("-")
        lines.append(f"{kind:<9}{row['n']:>5}" + "".join(f"{c:>20}" for c in cells))
    return "\n".join(lines)


def shapesbench_prompts(num: int, split: str = "test", seed: int = 0) -> list[str]:
    """The captions of the split's first `num` scenes: for 'test', only held-out
    compositions, about a third of each kind (single, count, relation)."""
    from imagen_jax.data.shapes import example_scene

    if num < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num}")
    return [example_scene(split, i, seed).caption for i in range(num)]
