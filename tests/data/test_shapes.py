"""shapes_captions: scenes, captions, rendering, held-out splits and the TFDS builder.

Geometry is checked here with its own arithmetic on the scene numbers, not with
the module's helpers, so a bug there cannot hide itself.
"""

from __future__ import annotations

import itertools
import json
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from imagen_jax.data import shapes
from imagen_jax.data.shapes import COLORS, Scene, SceneObject
from imagen_jax.data.shapes_builder import (ShapesCaptions, ShapesCaptionsConfig,
                                            build_shapes_dataset)

TINY = {"resolution": 32, "num_train": 64, "num_test": 32, "seed": 0}


def _scenes(n: int, seed: int = 0) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [shapes.sample_scene(rng) for _ in range(n)]


def _box(obj: SceneObject) -> tuple[float, float, float, float]:
    (x, y), h = obj.center, obj.size / 2
    return x - h, y - h, x + h, y + h


def _area_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    r = image.shape[0] // factor
    return image.astype(np.float64).reshape(r, factor, r, factor, 3).mean(axis=(1, 3))


def _uses_held_out(scene: Scene) -> bool:
    pairs = {(o.color, o.shape) for o in scene.objects}
    if pairs & set(shapes.HELD_OUT_PAIRS):
        return True
    return scene.kind == "relation" and (
        (scene.objects[0].shape, scene.relation, scene.objects[1].shape) in shapes.HELD_OUT_RELATIONS)


# ----------------------------------------------------------------------------- constants


def test_vocabulary():
    assert shapes.SHAPES == ("circle", "square", "triangle")
    assert shapes.RELATIONS == ("to the left of", "to the right of", "above", "below")
    assert len(COLORS) >= 6
    rgb = {name: np.array(value, float) for name, value in COLORS.items()}
    for a, b in itertools.combinations(rgb, 2):
        assert np.linalg.norm(rgb[a] - rgb[b]) > 90, (a, b)
    for name, value in rgb.items():
        assert np.linalg.norm(value - np.array(shapes.BACKGROUND, float)) > 150, name
    assert set(shapes.COUNT_WORDS) == {2, 3, 4}


def test_held_out_sets_are_valid_and_leave_every_colour_and_shape_in_train():
    assert 1 <= len(shapes.HELD_OUT_PAIRS) < len(COLORS) * len(shapes.SHAPES)
    for color, shape in shapes.HELD_OUT_PAIRS:
        assert color in COLORS and shape in shapes.SHAPES
    for subject, relation, obj in shapes.HELD_OUT_RELATIONS:
        assert subject in shapes.SHAPES and obj in shapes.SHAPES and relation in shapes.RELATIONS
    assert {c for c, _ in shapes.HELD_OUT_PAIRS} != set(COLORS)
    assert {s for _, s in shapes.HELD_OUT_PAIRS} <= set(shapes.SHAPES)


# ----------------------------------------------------------------------------- determinism


def test_generate_example_is_deterministic():
    for split, index in (("train", 0), ("train", 17), ("test", 3)):
        a = shapes.generate_example(split, index, 32, seed=5)
        b = shapes.generate_example(split, index, 32, seed=5)
        assert a["image"].tobytes() == b["image"].tobytes()
        assert (a["caption"], a["scene"], a["id"], a["index"]) == (b["caption"], b["scene"], b["id"], b["index"])


def test_different_seed_gives_different_examples():
    for index in range(5):
        a = shapes.generate_example("train", index, 32, seed=0)
        b = shapes.generate_example("train", index, 32, seed=1)
        assert a["scene"] != b["scene"]
        assert a["image"].tobytes() != b["image"].tobytes()


def test_examples_do_not_depend_on_order_or_resolution():
    later_first = shapes.generate_example("train", 9, 32)
    for index in range(9):
        shapes.generate_example("train", index, 32)
    assert shapes.generate_example("train", 9, 32)["scene"] == later_first["scene"]
    assert shapes.generate_example("train", 9, 64)["scene"] == later_first["scene"]
    assert shapes.generate_example("test", 9, 32)["scene"] != later_first["scene"]


def test_generate_example_fields():
    ex = shapes.generate_example("train", 42, 48)
    assert ex["id"] == "train-000042" and ex["index"] == 42
    assert ex["image"].shape == (48, 48, 3) and ex["image"].dtype == np.uint8
    scene = shapes.scene_from_json(ex["scene"])
    assert ex["caption"] == scene.caption and ex["kind"] == scene.kind
    n = len(scene.objects)
    assert ex["objects"]["shape"] == [o.shape for o in scene.objects]
    assert ex["objects"]["color"] == [o.color for o in scene.objects]
    assert ex["objects"]["center"].shape == (n, 2) and ex["objects"]["center"].dtype == np.float32
    assert ex["objects"]["size"].shape == (n,) and ex["objects"]["size"].dtype == np.float32


@pytest.mark.parametrize("kwargs, name", [
    ({"split": "validation"}, "split"), ({"index": -1}, "index"), ({"seed": -2}, "seed"),
    ({"resolution": 0}, "resolution"), ({"index": 1.5}, "index"),
])
def test_generate_example_rejects_bad_arguments(kwargs, name):
    args = {"split": "train", "index": 0, "resolution": 32, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=name):
        shapes.generate_example(**args)


# ----------------------------------------------------------------------------- captions vs scenes


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return _scenes(600) + [shapes.example_scene("test", i) for i in range(150)]


def test_all_kinds_and_relations_are_sampled(scenes):
    assert {s.kind for s in scenes} == set(shapes.KINDS)
    assert {s.relation for s in scenes if s.kind == "relation"} == set(shapes.RELATIONS)
    assert {len(s.objects) for s in scenes if s.kind == "count"} == {2, 3, 4}


def test_captions_match_scenes(scenes):
    for scene in scenes:
        assert scene.caption == shapes.caption_for(scene)
        kind, described, relation = shapes.parse_caption(scene.caption)
        assert kind == scene.kind and relation == scene.relation
        assert list(described) == [(o.color, o.shape) for o in scene.objects]
        if scene.kind == "count":
            assert scene.caption.split()[0] == shapes.COUNT_WORDS[len(scene.objects)]
            assert len({(o.color, o.shape, o.size) for o in scene.objects}) == 1
        if scene.kind == "relation":
            assert (scene.objects[0].color, scene.objects[0].shape) != (
                scene.objects[1].color, scene.objects[1].shape)


def test_caption_examples():
    red = SceneObject("circle", "red", (0.2, 0.5), 0.2)
    orange = SceneObject("square", "orange", (0.8, 0.5), 0.2)
    assert shapes.caption_for(Scene((red,), "single", None, "")) == "a red circle"
    assert shapes.caption_for(Scene((orange, orange), "count", None, "")) == "two orange squares"
    relation = Scene((red, orange), "relation", "to the left of", "")
    assert shapes.caption_for(relation) == "a red circle to the left of an orange square"
    with pytest.raises(ValueError, match="caption"):
        shapes.parse_caption("a pink circle")


def test_relations_are_geometrically_true_and_unambiguous(scenes):
    margin = 0.05  # between bounding squares, along the relation's axis
    for scene in (s for s in scenes if s.kind == "relation"):
        subject, obj = scene.objects
        sl, st, sr, sb = _box(subject)
        ol, ot, orr, ob = _box(obj)
        dx, dy = obj.center[0] - subject.center[0], obj.center[1] - subject.center[1]
        if scene.relation == "to the left of":
            assert sr + margin <= ol and abs(dy) < dx
        elif scene.relation == "to the right of":
            assert orr + margin <= sl and abs(dy) < -dx
        elif scene.relation == "above":  # y grows downward
            assert sb + margin <= ot and abs(dx) < dy
        else:
            assert ob + margin <= st and abs(dx) < -dy


def test_objects_are_inside_and_do_not_overlap(scenes):
    for scene in scenes:
        for obj in scene.objects:
            left, top, right, bottom = _box(obj)
            assert 0.0 < left and 0.0 < top and right < 1.0 and bottom < 1.0, scene
        for a, b in itertools.combinations(scene.objects, 2):
            al, at, ar, ab = _box(a)
            bl, bt, br, bb = _box(b)
            assert max(bl - ar, al - br, bt - ab, at - bb) > 0.0, scene


def test_center_pixel_has_object_colour(scenes):
    resolution = 64
    for scene in scenes[:200]:
        image = shapes.render(scene, resolution).astype(int)
        for obj in scene.objects:
            x, y = (min(int(c * resolution), resolution - 1) for c in obj.center)
            assert np.abs(image[y, x] - COLORS[obj.color]).max() <= 2, (scene, obj)
        assert tuple(image[0, 0]) == shapes.BACKGROUND  # objects keep off the border


# ----------------------------------------------------------------------------- rendering


def test_render_across_resolutions_is_consistent():
    # Measured: mean |256->64 - 64| is ~0.15 on 0-255 (worst scene ~0.6); edges only.
    diffs = []
    for scene in _scenes(40, seed=3):
        high = _area_downsample(shapes.render(scene, 256), 4)
        low = shapes.render(scene, 64).astype(np.float64)
        diffs.append(np.abs(high - low).mean())
    assert max(diffs) < 1.5 and np.mean(diffs) < 0.5, diffs
    scene = _scenes(1, seed=4)[0]
    assert np.abs(_area_downsample(shapes.render(scene, 128), 4) - shapes.render(scene, 32)).mean() < 2.0


def test_render_is_anti_aliased():
    scene = Scene((SceneObject("circle", "blue", (0.5, 0.5), 0.5),), "single", None, "a blue circle")
    image = shapes.render(scene, 32).reshape(-1, 3)
    pure = {shapes.BACKGROUND, COLORS["blue"]}
    blended = [tuple(p) for p in image if tuple(p) not in pure]
    assert len(blended) > 20  # edge pixels take in-between colours


def test_render_shapes_have_expected_areas():
    for shape, fraction in (("circle", np.pi / 4), ("square", 1.0), ("triangle", 0.5)):
        scene = Scene((SceneObject(shape, "red", (0.5, 0.5), 0.5),), "single", None, "")
        image = shapes.render(scene, 128).astype(float)
        bg, red = np.array(shapes.BACKGROUND, float), np.array(COLORS["red"], float)
        coverage = ((image - bg) / (red - bg))[..., 0].sum() / 128**2
        assert abs(coverage - 0.25 * fraction) < 0.005, shape


@pytest.mark.parametrize("resolution", [0, -4, 32.0, "64", True])
def test_render_rejects_bad_resolution(resolution):
    with pytest.raises(ValueError, match="resolution"):
        shapes.render(_scenes(1)[0], resolution)


# ----------------------------------------------------------------------------- scenes and JSON


def test_scene_json_round_trip(scenes):
    for scene in scenes[:100]:
        text = shapes.scene_to_json(scene)
        assert json.loads(text)["caption"] == scene.caption
        assert shapes.scene_from_json(text) == scene


@pytest.mark.parametrize("text", ["not json", "{}", '{"objects": [{"shape": "circle"}]}', "[1]"])
def test_scene_from_json_rejects_garbage(text):
    with pytest.raises(ValueError):
        shapes.scene_from_json(text)


def test_scene_validation():
    obj = SceneObject("circle", "red", (0.3, 0.3), 0.2)
    with pytest.raises(ValueError, match="shape"):
        SceneObject("hexagon", "red", (0.3, 0.3), 0.2)
    with pytest.raises(ValueError, match="color"):
        SceneObject("circle", "pink", (0.3, 0.3), 0.2)
    with pytest.raises(ValueError, match="center"):
        SceneObject("circle", "red", (1.3, 0.3), 0.2)
    with pytest.raises(ValueError, match="relation"):
        Scene((obj, obj), "relation", None, "")
    with pytest.raises(ValueError, match="kind"):
        Scene((obj,), "many", None, "")


def test_sample_scene_kinds_and_filters():
    rng = np.random.default_rng(0)
    for kind in shapes.KINDS:
        assert shapes.sample_scene(rng, kind).kind == kind
    red = shapes.sample_scene(rng, "single", allowed=lambda s: s.objects[0].color == "red")
    assert red.objects[0].color == "red"
    with pytest.raises(ValueError, match="kind"):
        shapes.sample_scene(rng, "pair")
    with pytest.raises(ValueError, match="rng"):
        shapes.sample_scene(0)
    with pytest.raises(ValueError, match="allowed"):
        shapes.sample_scene(rng, "single", allowed=lambda s: False)


# ----------------------------------------------------------------------------- held-out compositions


def test_is_held_out():
    color, shape = shapes.HELD_OUT_PAIRS[0]
    held = SceneObject(shape, color, (0.5, 0.5), 0.2)
    assert shapes.is_held_out(Scene((held,), "single", None, ""))
    subject, relation, obj = shapes.HELD_OUT_RELATIONS[0]
    free = [c for c in COLORS if all((c, s) not in shapes.HELD_OUT_PAIRS for s in shapes.SHAPES)]
    a = SceneObject(subject, free[0], (0.2, 0.5), 0.2)
    b = SceneObject(obj, free[1], (0.8, 0.5), 0.2)
    assert shapes.is_held_out(Scene((a, b), "relation", relation, ""))
    other = next(r for r in shapes.RELATIONS if (subject, r, obj) not in shapes.HELD_OUT_RELATIONS)
    assert not shapes.is_held_out(Scene((a, b), "relation", other, ""))


def test_train_scenes_never_use_held_out_compositions():
    train = [shapes.example_scene("train", i) for i in range(2000)]
    assert not any(_uses_held_out(s) for s in train)
    # The train split still covers every colour, shape, relation and kind.
    assert {o.color for s in train for o in s.objects} == set(COLORS)
    assert {o.shape for s in train for o in s.objects} == set(shapes.SHAPES)
    assert {s.relation for s in train if s.kind == "relation"} == set(shapes.RELATIONS)


def test_test_scenes_are_all_held_out_and_mix_kinds():
    test = [shapes.example_scene("test", i) for i in range(300)]
    assert all(_uses_held_out(s) for s in test)
    assert {s.kind for s in test} == set(shapes.KINDS)
    by_triple = [s for s in test if s.kind == "relation"
                 and not {(o.color, o.shape) for o in s.objects} & set(shapes.HELD_OUT_PAIRS)]
    assert by_triple  # some test relations are held out only by their wording


# ----------------------------------------------------------------------------- TFDS builder


def _read(builder: tfds.core.DatasetBuilder, split: str) -> list[dict]:
    return list(tfds.as_numpy(builder.as_dataset(split=split)))


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def tiny(tiny_root) -> ShapesCaptions:
    return build_shapes_dataset(tiny_root, **TINY)


def test_builder_is_registered():
    assert tfds.builder_cls("shapes_captions") is ShapesCaptions
    assert ShapesCaptions.name == "shapes_captions"


def test_predefined_configs(tmp_path):
    configs = ShapesCaptions.builder_configs
    assert {"64", "256", "1024"} <= set(configs)
    for name in ("64", "256", "1024"):
        assert configs[name].resolution == int(name)
        assert configs[name].num_train > 0 and configs[name].num_test > 0
    assert configs["64"].num_train >= 20_000
    info = ShapesCaptions(config="256", data_dir=str(tmp_path)).info  # not prepared
    assert info.features["image"].shape == (256, 256, 3)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="resolution"):
        ShapesCaptionsConfig(name="bad", resolution=0, num_train=1, num_test=1)
    with pytest.raises(ValueError, match="num_test"):
        ShapesCaptionsConfig(name="bad", resolution=8, num_train=1, num_test=-1)


def test_builder_features(tiny):
    features = tiny.info.features
    assert set(features) == {"image", "caption", "id", "index", "scene", "kind", "objects"}
    assert features["image"].shape == (32, 32, 3) and features["image"].encoding_format == "png"
    assert features["kind"].names == ["single", "count", "relation"]
    objects = features["objects"].feature
    assert objects["shape"].names == list(shapes.SHAPES)
    assert objects["color"].names == list(COLORS)
    assert objects["center"].shape == (2,) and objects["center"].dtype == np.float32
    assert objects["size"].shape == () and objects["size"].dtype == np.float32
    assert features["index"].dtype == np.int64


def test_builder_splits_and_examples(tiny):
    assert tiny.builder_config.name == "r32_n64_32_s0"
    assert tiny.info.splits["train"].num_examples == 64
    assert tiny.info.splits["test"].num_examples == 32
    for split, count in (("train", 64), ("test", 32)):
        examples = _read(tiny, split)
        assert [int(e["index"]) for e in examples] == list(range(count))  # stored in index order
        for ex in examples[:8]:
            index = int(ex["index"])
            expected = shapes.generate_example(split, index, 32, seed=0)
            assert ex["id"].decode() == expected["id"] == f"{split}-{index:06d}"
            assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
            np.testing.assert_array_equal(ex["image"], expected["image"])
            assert ex["caption"].decode() == expected["caption"]
            assert ex["scene"].decode() == expected["scene"]
            assert tiny.info.features["kind"].int2str(ex["kind"]) == expected["kind"]
            np.testing.assert_allclose(ex["objects"]["center"], expected["objects"]["center"])


def test_builder_held_out_only_in_test(tiny):
    shape_names, color_names = list(shapes.SHAPES), list(COLORS)
    for split in ("train", "test"):
        for ex in _read(tiny, split):
            scene = shapes.scene_from_json(ex["scene"].decode())
            stored = [(color_names[c], shape_names[s])
                      for c, s in zip(ex["objects"]["color"], ex["objects"]["shape"])]
            assert stored == [(o.color, o.shape) for o in scene.objects]
            assert _uses_held_out(scene) == (split == "test"), (split, scene.caption)


def test_builder_is_reproducible_across_data_dirs(tiny, tmp_path):
    again = build_shapes_dataset(str(tmp_path), **TINY)
    for split in ("train", "test"):
        first, second = _read(tiny, split), _read(again, split)
        assert len(first) == len(second)
        for a, b in zip(first, second):
            assert a["id"] == b["id"] and a["caption"] == b["caption"] and a["scene"] == b["scene"]
            np.testing.assert_array_equal(a["image"], b["image"])


def _listing(builder: tfds.core.DatasetBuilder) -> list[tuple[str, int]]:
    return sorted((p.name, p.stat().st_mtime_ns) for p in pathlib.Path(builder.data_dir).iterdir())


def test_build_shapes_dataset_reuses_prepared_data(tiny, tiny_root):
    files = _listing(tiny)
    assert _listing(build_shapes_dataset(tiny_root, **TINY)) == files  # nothing rewritten


def test_custom_config_via_constructor(tmp_path):
    config = ShapesCaptionsConfig(name="tiny", resolution=16, num_train=4, num_test=2, seed=3)
    builder = ShapesCaptions(config=config, data_dir=str(tmp_path))
    builder.download_and_prepare()
    train = _read(builder, "train")
    assert len(train) == 4 and train[0]["image"].shape == (16, 16, 3)
    assert train[0]["scene"].decode() == shapes.generate_example("train", 0, 16, seed=3)["scene"]
