"""shapes_builder: the `shapes_captions` TFDS builder, its configs, splits and reuse."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from imagen_jax.data import shapes
from imagen_jax.data.shapes import COLORS
from imagen_jax.data.shapes_builder import (ShapesCaptions, ShapesCaptionsConfig,
                                            build_shapes_dataset)
from tests.data.shapes.helpers import uses_held_out

TINY = {"resolution": 32, "num_train": 64, "num_test": 32, "seed": 0}


def _read(builder: tfds.core.DatasetBuilder, split: str) -> list[dict]:
    return list(tfds.as_numpy(builder.as_dataset(split=split)))


def _listing(builder: tfds.core.DatasetBuilder) -> list[tuple[str, int]]:
    return sorted((p.name, p.stat().st_mtime_ns) for p in pathlib.Path(builder.data_dir).iterdir())


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
            assert uses_held_out(scene) == (split == "test"), (split, scene.caption)


def test_builder_is_reproducible_across_data_dirs(tiny, tmp_path):
    again = build_shapes_dataset(str(tmp_path), **TINY)
    for split in ("train", "test"):
        first, second = _read(tiny, split), _read(again, split)
        assert len(first) == len(second)
        for a, b in zip(first, second):
            assert a["id"] == b["id"] and a["caption"] == b["caption"] and a["scene"] == b["scene"]
            np.testing.assert_array_equal(a["image"], b["image"])


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
