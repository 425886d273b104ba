"""TFDS builder for `shapes_captions`: rendered coloured shapes with exact captions.

Nothing is downloaded: every example is generated from (seed, split, index) by
`imagen_jax.data.shapes.generate_example`. Importing this module registers the
builder with TFDS under the name `shapes_captions`:

    builder = build_shapes_dataset("/tmp/tfds", resolution=64, num_train=512, num_test=64)
    ds = builder.as_dataset(split="train")

Examples are written in index order (shuffling disabled), so `train[:n]` is
examples 0..n-1, and the same slice of two configs with the same seed is the
same scenes at two resolutions: the pairs a super-resolution stage trains on.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from imagen_jax.data import shapes
from imagen_jax.data.prepare import prepare


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclasses.dataclass(eq=False, kw_only=True)
class ShapesCaptionsConfig(tfds.core.BuilderConfig):
    """Image side in pixels, examples per split, and the base seed of all scenes."""

    resolution: int
    num_train: int
    num_test: int
    seed: int = 0

    def __post_init__(self) -> None:
        _check_count("resolution", self.resolution, 1)
        _check_count("num_train", self.num_train, 1)
        _check_count("num_test", self.num_test, 1)
        _check_count("seed", self.seed, 0)
        if self.description is None:
            self.description = (f"{self.resolution}x{self.resolution} images, {self.num_train} train / "
                                f"{self.num_test} test examples, seed {self.seed}.")


class ShapesCaptions(tfds.core.GeneratorBasedBuilder):
    """Coloured circles, squares and triangles with single-object, count and relation captions."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    # Bigger images cost more disk and render time per example, hence fewer of them.
    BUILDER_CONFIGS = [
        ShapesCaptionsConfig(name="64", resolution=64, num_train=20_000, num_test=1_000),
        ShapesCaptionsConfig(name="256", resolution=256, num_train=10_000, num_test=1_000),
        ShapesCaptionsConfig(name="1024", resolution=1024, num_train=2_000, num_test=500),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "64"


    def _info(self) -> tfds.core.DatasetInfo:
        side = self.builder_config.resolution
        features = tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(side, side, 3), encoding_format="png"),
            "caption": tfds.features.Text(),
            "id": tfds.features.Text(),
            "index": tfds.features.Scalar(dtype=np.int64),
            "scene": tfds.features.Text(),
            "kind": tfds.features.ClassLabel(names=list(shapes.KINDS)),
            "objects": tfds.features.Sequence({
                "shape": tfds.features.ClassLabel(names=list(shapes.SHAPES)),
                "color": tfds.features.ClassLabel(names=list(shapes.COLORS)),
                "center": tfds.features.Tensor(shape=(2,), dtype=np.float32),
                "size": tfds.features.Tensor(shape=(), dtype=np.float32),
            }),
        })
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=features,
            disable_shuffling=True,  # keep index order; see the module docstring
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # generated, nothing to download
        config = self.builder_config
        return {
            "train": self._generate_examples("train", config.num_train),
            "test": self._generate_examples("test", config.num_test),
        }

    def _generate_examples(self, split: str, count: int) -> Iterator[tuple[str, dict]]:
        config = self.builder_config
        for index in range(count):
            example = shapes.generate_example(split, index, config.resolution, config.seed)
            yield example["id"], example


def build_shapes_dataset(data_dir: str, resolution: int, num_train: int, num_test: int,
                         seed: int = 0) -> ShapesCaptions:
    """A prepared `shapes_captions` builder for a custom config (generated on first call only)."""
    config = ShapesCaptionsConfig(
        name=f"r{resolution}_n{num_train}_{num_test}_s{seed}", resolution=resolution,
        num_train=num_train, num_test=num_test, seed=seed)
    builder = ShapesCaptions(config=config, data_dir=data_dir)
    prepare(builder)
    return builder
