"""TFDS builder for a user's own folder of images with captions.

People scrape or export image-caption data as a plain directory tree; this turns
one into a TFDS dataset (`image_text_folder`) with the fixed schema the training
input pipeline relies on:

    image    uint8 (H, W, 3), stored as PNG (lossless: no second JPEG generation)
    caption  text; "" is "no caption", the model's unconditional (null) condition
    id       path of the image relative to `source_dir`; also the example key
    index    position of the example in its split's sorted id list (0..n-1).
             TFDS shuffles examples by key on disk, so read order is not index
             order. That is kept on purpose: in path order, each training
             process's `split[a:b]` slice would be one folder, often one source.

Captions come from captions.jsonl, captions.csv or sidecar .txt files, by the
precedence `imagen_jax.data.folder_captions` describes; images are checked and
decoded by `imagen_jax.data.image_decode`.

Nothing is ever written into `source_dir`. Every image with a supported extension
(case-insensitive) lands in exactly one category, and every problem is counted,
logged and stored in `build_report.json` in the builder's `data_dir` (see
`imagen_jax.data.build_report`). In 'unconditional' mode an image with a missing
or empty caption is kept as `good` (and `unconditional`) but still counted under
its caption reason, so the report describes the data either way.

The config name hashes the settings, not the folder's contents: after changing the
folder, rebuild into a fresh `data_dir` (or with
`tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS`), otherwise TFDS reuses the
earlier build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from imagen_jax.data.build_report import Tally, log_summary, report_dict, write_build_report
from imagen_jax.data.folder_captions import check_source_dir, collect_captions, walk_folder
from imagen_jax.data.image_decode import ImageDecodeError, decode_rgb, load_rgb
from imagen_jax.data.prepare import prepare

MISSING_CAPTION_MODES = ("skip", "unconditional")


# --------------------------------------------------------------------------- config


@dataclasses.dataclass(eq=False, kw_only=True)
class ImageTextFolderConfig(tfds.core.BuilderConfig):
    """Which folder to read and how to filter it.

    Attributes:
        source_dir: the folder of images, only ever read. Made absolute on
            creation so the config (and its name) does not depend on the working
            directory at build time.
        min_size: images whose shorter side (before any `max_side` downscaling)
            is below this are skipped as `too_small`.
        missing_caption: 'skip' drops images without a usable caption;
            'unconditional' keeps them with caption "", the null condition.
        test_fraction: if > 0, about this fraction of images, chosen by a hash of
            their relative path (stable across builds, machines and additions to
            the folder), forms a 'test' split next to 'train'.
        max_side: if set, images are downscaled so their longer side is at most
            this, to keep the prepared dataset small.
        name: defaults to `<folder name>_<hash of the settings above>`.
    """

    name: str = ""
    source_dir: str
    min_size: int = 64
    missing_caption: str = "skip"
    test_fraction: float = 0.0
    max_side: int | None = None

    def __post_init__(self) -> None:
        self.source_dir = os.path.abspath(os.fspath(self.source_dir))
        # The folder's existence is checked at build time, not here: a prepared
        # dataset can still be loaded after its source folder is gone.
        _validate_config(self)
        if not self.name:
            self.name = default_config_name(self)
        if self.description is None:
            self.description = f"Images with captions from {self.source_dir}"


def _validate_config(config: ImageTextFolderConfig) -> None:
    """Fails at construction, naming the field, rather than halfway into a build."""
    prefix = "ImageTextFolderConfig."
    if not _is_int(config.min_size) or config.min_size < 1:
        raise ValueError(f"{prefix}min_size must be an int >= 1, got {config.min_size!r}")
    if config.missing_caption not in MISSING_CAPTION_MODES:
        raise ValueError(f"{prefix}missing_caption must be one of {MISSING_CAPTION_MODES}, "
                         f"got {config.missing_caption!r}")
    fraction = config.test_fraction
    if not (_is_number(fraction) and 0.0 <= fraction < 1.0):
        raise ValueError(f"{prefix}test_fraction must be a number in [0, 1), got {fraction!r}")
    if config.max_side is not None and (not _is_int(config.max_side) or config.max_side < 1):
        raise ValueError(f"{prefix}max_side must be None or an int >= 1, "
                         f"got {config.max_side!r}")


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but `min_size=True` is a bug, not a size.
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, (float, np.floating))


def _settings(config: ImageTextFolderConfig) -> dict[str, Any]:
    """Everything that changes the generated data; the config name hashes it."""
    return {
        "source_dir": config.source_dir,
        "min_size": int(config.min_size),
        "missing_caption": config.missing_caption,
        "test_fraction": float(config.test_fraction),
        "max_side": None if config.max_side is None else int(config.max_side),
    }


def default_config_name(config: ImageTextFolderConfig) -> str:
    """`<folder name>_<10 hex digits>`: findable in data_dir, distinct per setting."""
    digest = hashlib.sha256(json.dumps(_settings(config), sort_keys=True).encode("utf-8"))
    slug = re.sub(r"[^a-z0-9]+", "_", os.path.basename(config.source_dir).lower()).strip("_")
    return f"{slug[:32] or 'folder'}_{digest.hexdigest()[:10]}"


# --------------------------------------------------------------------------- scan


def _in_test_split(rel: str, test_fraction: float) -> bool:
    """Depends on the path alone, so adding files never moves existing ones.

    sha256 rather than `hash()`, which is salted per process.
    """
    bucket = int.from_bytes(hashlib.sha256(rel.encode("utf-8")).digest()[:8], "big")
    return bucket / 2.0**64 < test_fraction


def _scan(config: ImageTextFolderConfig) -> tuple[dict[str, list[tuple[str, str]]], Tally]:
    """Sorted (path, caption) pairs per split, and the tally of everything seen."""
    tally = Tally()
    images, sidecars = walk_folder(config.source_dir)
    captions = collect_captions(config.source_dir, images, sidecars, tally)
    splits: dict[str, list[tuple[str, str]]] = {"train": []}
    if config.test_fraction > 0:
        splits["test"] = []
    for rel in images:
        caption = _keep(config, rel, captions.get(rel), tally)
        if caption is not None:
            split = "test" if _in_test_split(rel, config.test_fraction) else "train"
            splits[split].append((rel, caption))
    return splits, tally


def _check_not_empty(config: ImageTextFolderConfig, splits: Mapping[str, list[Any]],
                     tally: Tally) -> None:
    """TFDS cannot write an empty split; say why it is empty instead of its assertion."""
    for name, items in splits.items():
        if not items:
            raise ValueError(
                f"image_text_folder: split {name!r} would be empty ({tally.counts['good']} "
                f"usable images in {config.source_dir!r}, test_fraction="
                f"{config.test_fraction}); counts: {dict(tally.counts)}")


def _keep(config: ImageTextFolderConfig, rel: str, caption: str | None,
          tally: Tally) -> str | None:
    """The caption to store for `rel`, or None if the image is dropped (counted).

    The image is checked before its caption so that the image-problem counts do
    not depend on `missing_caption`: switching it only moves images between kept
    and skipped.
    """
    try:
        width, height = decode_rgb(os.path.join(config.source_dir, rel)).size
    except ImageDecodeError as e:
        tally.add(e.reason, rel)
        return None
    if min(width, height) < config.min_size:
        tally.add("too_small", rel)
        return None
    if not caption:
        tally.add("missing_caption" if caption is None else "empty_caption", rel)
        if config.missing_caption == "skip":
            return None
        tally.add("unconditional")
        caption = ""
    tally.add("good")
    return caption


# --------------------------------------------------------------------------- builder


class ImageTextFolder(tfds.core.GeneratorBasedBuilder):
    """A user's folder of images with captions; see the module docstring."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIG_CLS = ImageTextFolderConfig


    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        # Set by the scan in `_split_generators`, so that only a call that really
        # generated data (not one reusing an earlier build) writes a report.
        self._pending_report: dict[str, Any] | None = None

    @property
    def _folder_config(self) -> ImageTextFolderConfig:
        config = self.builder_config
        if not isinstance(config, ImageTextFolderConfig):
            raise ValueError("image_text_folder needs an ImageTextFolderConfig, e.g. "
                             "ImageTextFolder(config=ImageTextFolderConfig(source_dir=...))")
        return config

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                "caption": tfds.features.Text(doc='"" is the unconditional (null) caption'),
                "id": tfds.features.Text(doc="image path relative to source_dir"),
                "index": tfds.features.Scalar(np.int64, doc="position in the split's sorted ids"),
            }),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        """Checks every image before writing any: `index` needs each split's final list."""
        del dl_manager  # Nothing is downloaded.
        config = self._folder_config
        check_source_dir(config.source_dir)
        splits, tally = _scan(config)
        _check_not_empty(config, splits, tally)
        self._pending_report = report_dict(config.source_dir, config.name, _settings(config),
                                           splits, tally)
        log_summary(self._pending_report)
        return {name: self._generate_examples(items) for name, items in splits.items()}

    def _generate_examples(self, items: list[tuple[str, str]]
                           ) -> Iterator[tuple[str, dict[str, Any]]]:
        config = self._folder_config
        for index, (rel, caption) in enumerate(items):
            try:
                pixels = load_rgb(os.path.join(config.source_dir, rel), config.max_side)
            except ImageDecodeError as e:
                raise RuntimeError(f"{rel} decoded during the scan but not now; was the "
                                   f"folder modified during the build? ({e})") from e
            yield rel, {"image": pixels, "caption": caption, "id": rel, "index": index}

    def download_and_prepare(self, **kwargs: Any) -> None:
        """As TFDS's; then stores the build report next to the prepared data."""
        super().download_and_prepare(**kwargs)
        if self._pending_report is not None:
            write_build_report(self.data_dir, self._pending_report)
            self._pending_report = None


def build_image_text_folder(source_dir: str | os.PathLike, data_dir: str | os.PathLike,
                            **config_kwargs: Any) -> ImageTextFolder:
    """Prepares (or reuses) the dataset of `source_dir` under `data_dir`.

    `config_kwargs` are `ImageTextFolderConfig` fields: min_size, missing_caption,
    test_fraction, max_side, name, ...
    """
    config = ImageTextFolderConfig(source_dir=os.fspath(source_dir), **config_kwargs)
    check_source_dir(config.source_dir)
    builder = ImageTextFolder(config=config, data_dir=os.fspath(data_dir))
    # Nothing of this dataset is on the TFDS bucket; do not even ask.
    download_config = tfds.download.DownloadConfig(try_download_gcs=False)
    prepare(builder, download_config=download_config)
    return builder
