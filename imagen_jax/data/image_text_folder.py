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

Captions come from any mix of these, highest precedence first:
    1. `captions.jsonl` at the root: one `{"file": "a/b.jpg", "caption": "..."}`
       per line (`image` is accepted instead of `file`);
    2. `captions.csv` at the root, with a header naming a `file` (or `image`)
       column and a `caption` column;
    3. sidecar text files: `a/b.jpg` is captioned by `a/b.txt`.
An index file is a deliberate export while sidecars are often left over from
earlier tooling, so an index entry beats a sidecar, even when it is empty. Within
one index file the first entry for an image wins. Captions are stripped.

Nothing is ever written into `source_dir`. Every image with a supported extension
(case-insensitive) lands in exactly one of IMAGE_CATEGORIES (good, not_image,
unreadable, corrupt, too_large, too_small, missing_caption, empty_caption); caption-entry
problems are ENTRY_CATEGORIES. All are counted, logged in one summary line, and
stored in `build_report.json` in the builder's `data_dir` (see
`read_build_report`). In 'unconditional' mode an image with a missing or empty
caption is kept as `good` (and `unconditional`) but still counted under its
caption reason, so the report describes the data either way.

The config name hashes the settings, not the folder's contents: after changing the
folder, rebuild into a fresh `data_dir` (or with
`tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS`), otherwise TFDS reuses the
earlier build.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from PIL import Image, ImageFile, ImageOps

CAPTIONS_JSONL = "captions.jsonl"
CAPTIONS_CSV = "captions.csv"
REPORT_FILENAME = "build_report.json"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
MISSING_CAPTION_MODES = ("skip", "unconditional")
# Keys an index entry may use for the image path, in the order they are tried.
FILE_KEYS = ("file", "image")
# Paths listed per problem category in the report: enough to find the broken
# files without the report growing with the dataset.
MAX_LISTED_PROBLEMS = 50

# Exactly one of these per image file.
# `unreadable`: no permission, a dangling or looping symlink, or not a regular file
# (a FIFO or device named like an image, which would block the build if opened).
IMAGE_CATEGORIES = ("good", "not_image", "unreadable", "corrupt", "too_large", "too_small",
                    "missing_caption", "empty_caption")
# Problems with caption entries (index lines, sidecars), counted separately.
ENTRY_CATEGORIES = ("missing_file", "bad_caption_entry", "duplicate_entry",
                    "shadowed_caption")

# Leading bytes of the accepted formats. A file that starts with one but cannot be
# decoded is `corrupt` (a damaged image); one that does not is `not_image` (some
# other file with an image extension, e.g. an HTML error page saved as .jpg).
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


class ImageDecodeError(Exception):
    """An image file could not be turned into pixels; `reason` is its category."""

    def __init__(self, reason: str, path: str, detail: str):
        super().__init__(f"{path}: {reason} ({detail})")
        self.reason = reason


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


# --------------------------------------------------------------------------- report


@dataclasses.dataclass
class _Tally:
    """Counts, and the first few paths, per category while scanning."""

    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    paths: collections.defaultdict = dataclasses.field(
        default_factory=lambda: collections.defaultdict(list))

    def add(self, category: str, path: str | None = None) -> None:
        self.counts[category] += 1
        if path is not None and len(self.paths[category]) < MAX_LISTED_PROBLEMS:
            self.paths[category].append(path)


def _report_dict(config: ImageTextFolderConfig, splits: Mapping[str, list[Any]],
                 tally: _Tally) -> dict[str, Any]:
    """The JSON-able build report (see `read_build_report`)."""
    counts = {name: tally.counts.get(name, 0)
              for name in (*IMAGE_CATEGORIES, "unconditional", *ENTRY_CATEGORIES)}
    return {
        "source_dir": config.source_dir,
        "config_name": config.name,
        "settings": _settings(config),
        # Kept unconditional images appear in `good` and in a caption category.
        "num_images": sum(counts[name] for name in IMAGE_CATEGORIES) - counts["unconditional"],
        "counts": counts,
        "splits": {name: len(items) for name, items in splits.items()},
        "problem_files": dict(sorted(tally.paths.items())),
    }


def _log_summary(report: Mapping[str, Any]) -> None:
    counts = report["counts"]
    problems = {k: v for k, v in counts.items() if v and k not in ("good", "unconditional")}
    # A warning when anything was dropped, so it shows at default verbosity.
    log = logging.warning if problems else logging.info
    log("image_text_folder %s: kept %d of %d images, splits %s, %d unconditional; "
        "problems: %s (details in %s)", report["source_dir"], counts["good"],
        report["num_images"], report["splits"], counts["unconditional"], problems or "none",
        REPORT_FILENAME)


def read_build_report(builder: tfds.core.DatasetBuilder) -> dict[str, Any]:
    """The report written when `builder`'s data was prepared.

    Keys: source_dir, config_name, settings, num_images, counts (every name in
    IMAGE_CATEGORIES and ENTRY_CATEGORIES, plus `unconditional`), splits
    (examples per split) and problem_files (up to MAX_LISTED_PROBLEMS paths per
    problem category).
    """
    path = epath.Path(builder.data_dir) / REPORT_FILENAME
    if not path.exists():
        raise FileNotFoundError(f"No {REPORT_FILENAME} in {builder.data_dir}: the data was not "
                                "prepared by ImageTextFolder.download_and_prepare")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- captions


def _walk(source_dir: str) -> tuple[list[str], dict[str, str]]:
    """Sorted relative (posix) image paths, and sidecar .txt paths keyed by stem.

    Hidden files and folders (`.DS_Store`, macOS `._x.jpg` resource forks,
    `.ipynb_checkpoints`) are ignored rather than reported as broken images.
    os.walk does not follow symlinked folders, so a link cycle cannot hang it.
    """
    images, sidecars = [], {}
    for root, dirs, files in os.walk(source_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            rel = os.path.relpath(os.path.join(root, name), source_dir).replace(os.sep, "/")
            stem, ext = posixpath.splitext(rel)
            if ext.lower() in IMAGE_EXTENSIONS:
                images.append(rel)
            elif ext.lower() == ".txt":
                sidecars[stem] = rel
    return sorted(images), sidecars


def _collect_captions(source_dir: str, images: list[str], sidecars: Mapping[str, str],
                      tally: _Tally) -> dict[str, str]:
    """Caption per image path, with precedence captions.jsonl > captions.csv > sidecar."""
    image_set = set(images)
    captions: dict[str, str] = {}
    for filename, read in ((CAPTIONS_JSONL, _read_jsonl), (CAPTIONS_CSV, _read_csv)):
        index_path = os.path.join(source_dir, filename)
        if not os.path.isfile(index_path):
            continue
        seen: set[str] = set()
        for rel, caption in read(index_path, tally):
            where = f"{filename}: {rel}"
            if rel not in image_set:
                tally.add("missing_file", where)
            elif rel in seen:
                tally.add("duplicate_entry", where)
            elif rel in captions:
                tally.add("shadowed_caption", where)
            else:
                captions[rel] = caption
            seen.add(rel)
    for rel in images:
        sidecar = sidecars.get(posixpath.splitext(rel)[0])
        if sidecar is not None and rel in captions:
            tally.add("shadowed_caption", sidecar)
        elif sidecar is not None:
            caption = _read_sidecar(os.path.join(source_dir, sidecar), sidecar, tally)
            if caption is not None:
                captions[rel] = caption
    return captions


def captioned_images(source_dir: str) -> dict[str, str]:
    """Caption per image (relative path) of a folder, by the same rules as the builder.

    For tools that read a captioned folder without building a dataset (e.g. scoring
    a folder of generated images against their prompts).
    """
    _check_source_dir(source_dir)
    images, sidecars = _walk(source_dir)
    return _collect_captions(source_dir, images, sidecars, _Tally())


def _read_jsonl(path: str, tally: _Tally) -> list[tuple[str, str]]:
    """(relative path, caption) pairs from captions.jsonl; bad lines are counted."""
    entries = []
    # utf-8-sig: tolerate the byte-order mark some Windows tools write.
    with _utf8_text(path) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            entry = _entry_from_record(record) if isinstance(record, dict) else None
            if entry is None:
                tally.add("bad_caption_entry", f"{CAPTIONS_JSONL}:{line_number}")
            else:
                entries.append(entry)
    return entries


def _read_csv(path: str, tally: _Tally) -> list[tuple[str, str]]:
    """(relative path, caption) pairs from captions.csv; bad rows are counted."""
    entries = []
    # newline="" lets the csv module handle newlines inside quoted captions.
    with _utf8_text(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if "caption" not in header or not any(key in header for key in FILE_KEYS):
            # A wrong header makes every row unusable; dropping them one by one
            # would look like a folder that simply has no captions.
            raise ValueError(f"{path}: the header must name a 'file' (or 'image') column "
                             f"and a 'caption' column, got {header}")
        for row in reader:
            entry = _entry_from_record(row)
            if entry is None:
                tally.add("bad_caption_entry", f"{CAPTIONS_CSV}:{reader.line_num}")
            else:
                entries.append(entry)
    return entries


@contextlib.contextmanager
def _utf8_text(path: str, newline: str | None = None) -> Iterator[Any]:
    """An index file opened as UTF-8 text (a byte-order mark tolerated). Bytes that are
    not UTF-8 stop the build with the file's name, not a bare codec error: a file
    saved in another encoding has every caption suspect, not just one line."""
    try:
        with open(path, encoding="utf-8-sig", newline=newline) as f:
            yield f
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason}); save it as UTF-8") from None


def _entry_from_record(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """(path, stripped caption) from a jsonl object or csv row; None if malformed.

    A null caption (JSON null, or a csv row too short to have one) counts as an
    empty caption rather than a malformed entry: the file is clearly listed.
    """
    raw_path = next((record[key] for key in FILE_KEYS if record.get(key)), None)
    path = _normalize_entry_path(raw_path)
    caption = record.get("caption")
    if path is None or not isinstance(caption, (str, type(None))):
        return None
    return path, (caption or "").strip()


def _normalize_entry_path(raw: Any) -> str | None:
    """An index entry's path as a clean relative posix path; None if unusable."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    path = posixpath.normpath(raw.strip().replace("\\", "/"))
    if posixpath.isabs(path) or path == ".." or path.startswith("../"):
        return None  # Outside source_dir: never read files the user did not hand us.
    return path


def _read_sidecar(path: str, rel: str, tally: _Tally) -> str | None:
    """The sidecar's stripped text; None (counted) if it is not readable UTF-8."""
    if not os.path.isfile(path):  # e.g. a FIFO named a.txt: opening it would block
        tally.add("bad_caption_entry", rel)
        return None
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read().strip()
    except (UnicodeDecodeError, OSError):
        tally.add("bad_caption_entry", rel)
        return None


def _in_test_split(rel: str, test_fraction: float) -> bool:
    """Depends on the path alone, so adding files never moves existing ones.

    sha256 rather than `hash()`, which is salted per process.
    """
    bucket = int.from_bytes(hashlib.sha256(rel.encode("utf-8")).digest()[:8], "big")
    return bucket / 2.0**64 < test_fraction


# --------------------------------------------------------------------------- pixels


def load_rgb(path: str, max_side: int | None = None) -> np.ndarray:
    """Fully decodes an image file to uint8 RGB (H, W, 3), upright and opaque.

    Animated GIF/WebP files give their first frame.

    Raises:
        ImageDecodeError: `reason` is 'not_image', 'unreadable', 'corrupt' or 'too_large'.
    """
    return np.asarray(_downscale(_decode(path), max_side), dtype=np.uint8)


def _decode(path: str) -> Image.Image:
    """The full-size upright RGB image, or ImageDecodeError saying why not."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Something in this process switched it on; truncated files would then
        # come back partly grey and be stored as if they were fine.
        raise RuntimeError("image_text_folder needs PIL.ImageFile.LOAD_TRUNCATED_IMAGES "
                           "to be False so that truncated images are detected")
    _check_regular_file(path)
    try:
        with Image.open(path) as img:
            img.load()  # Only decoding everything finds truncated or damaged data.
            return _to_rgb(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError as e:
        raise ImageDecodeError("too_large", path, str(e)) from e
    except PermissionError as e:
        raise ImageDecodeError("unreadable", path, f"{type(e).__name__}: {e}") from e
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        # PIL cannot identify a damaged header either, so "broken image" and "no
        # image at all" are told apart by the file's first bytes.
        reason = "corrupt" if _has_image_signature(path) else "not_image"
        raise ImageDecodeError(reason, path, f"{type(e).__name__}: {e}") from e


def _check_regular_file(path: str) -> None:
    """ImageDecodeError('unreadable') unless `path` is (a symlink to) a regular file.

    os.walk lists FIFOs, sockets, devices and broken or looping symlinks among the
    files; opening a FIFO blocks until something writes to it, which would hang
    the build, so they are reported without being opened.
    """
    if not os.path.isfile(path):
        what = "a dangling or looping symlink" if os.path.islink(path) else "not a regular file"
        raise ImageDecodeError("unreadable", path, what)


def _has_image_signature(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head.startswith(_IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: alpha composited onto white, 16-bit scaled to 8-bit."""
    if img.mode in _SIXTEEN_BIT_MODES:
        # convert() clips I / I;16 values above 255 instead of rescaling them;
        # 65535 / 257 == 255 maps the full 16-bit range onto the 8-bit one.
        values = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        # Dropping alpha would reveal whatever colour transparent pixels happen to
        # store (often black); white is how the image looks on a page.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _downscale(img: Image.Image, max_side: int | None) -> Image.Image:
    """Shrinks (never enlarges) so that the longer side is at most `max_side`."""
    if max_side is None or max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = tuple(max(1, round(side * scale)) for side in img.size)
    return img.resize(size, Image.Resampling.LANCZOS)


# --------------------------------------------------------------------------- scan


def _check_source_dir(source_dir: str) -> None:
    if not os.path.exists(source_dir):
        raise FileNotFoundError(f"image_text_folder: source_dir {source_dir!r} does not exist")
    if not os.path.isdir(source_dir):
        raise NotADirectoryError(f"image_text_folder: source_dir {source_dir!r} is not a "
                                 "directory")


def _scan(config: ImageTextFolderConfig) -> tuple[dict[str, list[tuple[str, str]]], _Tally]:
    """Sorted (path, caption) pairs per split, and the tally of everything seen."""
    tally = _Tally()
    images, sidecars = _walk(config.source_dir)
    captions = _collect_captions(config.source_dir, images, sidecars, tally)
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
                     tally: _Tally) -> None:
    """TFDS cannot write an empty split; say why it is empty instead of its assertion."""
    for name, items in splits.items():
        if not items:
            raise ValueError(
                f"image_text_folder: split {name!r} would be empty ({tally.counts['good']} "
                f"usable images in {config.source_dir!r}, test_fraction="
                f"{config.test_fraction}); counts: {dict(tally.counts)}")


def _keep(config: ImageTextFolderConfig, rel: str, caption: str | None,
          tally: _Tally) -> str | None:
    """The caption to store for `rel`, or None if the image is dropped (counted).

    The image is checked before its caption so that the image-problem counts do
    not depend on `missing_caption`: switching it only moves images between kept
    and skipped.
    """
    try:
        width, height = _decode(os.path.join(config.source_dir, rel)).size
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
        _check_source_dir(config.source_dir)
        splits, tally = _scan(config)
        _check_not_empty(config, splits, tally)
        self._pending_report = _report_dict(config, splits, tally)
        _log_summary(self._pending_report)
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
            report_path = epath.Path(self.data_dir) / REPORT_FILENAME
            report_path.write_text(json.dumps(self._pending_report, indent=2, sort_keys=True))
            self._pending_report = None


def build_image_text_folder(source_dir: str | os.PathLike, data_dir: str | os.PathLike,
                            **config_kwargs: Any) -> ImageTextFolder:
    """Prepares (or reuses) the dataset of `source_dir` under `data_dir`.

    `config_kwargs` are `ImageTextFolderConfig` fields: min_size, missing_caption,
    test_fraction, max_side, name, ...
    """
    config = ImageTextFolderConfig(source_dir=os.fspath(source_dir), **config_kwargs)
    _check_source_dir(config.source_dir)
    builder = ImageTextFolder(config=config, data_dir=os.fspath(data_dir))
    # Nothing of this dataset is on the TFDS bucket; do not even ask.
    download_config = tfds.download.DownloadConfig(try_download_gcs=False)
    builder.download_and_prepare(download_config=download_config)
    return builder
