"""What an `image_text_folder` build did with each file: the tally and its report.

Every image with a supported extension lands in exactly one of IMAGE_CATEGORIES;
problems with caption entries (index lines, sidecars) are ENTRY_CATEGORIES. All
are counted, logged in one summary line, and stored as `build_report.json` in the
builder's `data_dir` (see `read_build_report`). In 'unconditional' mode an image
with a missing or empty caption is kept as `good` (and `unconditional`) but still
counted under its caption reason, so the report describes the data either way.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

REPORT_FILENAME = "build_report.json"
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


@dataclasses.dataclass
class Tally:
    """Counts, and the first few paths, per category while scanning."""

    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    paths: collections.defaultdict = dataclasses.field(
        default_factory=lambda: collections.defaultdict(list))

    def add(self, category: str, path: str | None = None) -> None:
        self.counts[category] += 1
        if path is not None and len(self.paths[category]) < MAX_LISTED_PROBLEMS:
            self.paths[category].append(path)


def report_dict(source_dir: str, config_name: str, settings: Mapping[str, Any],
                splits: Mapping[str, list[Any]], tally: Tally) -> dict[str, Any]:
    """The JSON-able build report (see `read_build_report`); `settings` are the
    config's, everything that changes the generated data."""
    counts = {name: tally.counts.get(name, 0)
              for name in (*IMAGE_CATEGORIES, "unconditional", *ENTRY_CATEGORIES)}
    return {
        "source_dir": source_dir,
        "config_name": config_name,
        "settings": dict(settings),
        # Kept unconditional images appear in `good` and in a caption category.
        "num_images": sum(counts[name] for name in IMAGE_CATEGORIES) - counts["unconditional"],
        "counts": counts,
        "splits": {name: len(items) for name, items in splits.items()},
        "problem_files": dict(sorted(tally.paths.items())),
    }


def log_summary(report: Mapping[str, Any]) -> None:
    """One log line per build: what was kept and what was dropped, by category."""
    counts = report["counts"]
    problems = {k: v for k, v in counts.items() if v and k not in ("good", "unconditional")}
    # A warning when anything was dropped, so it shows at default verbosity.
    log = logging.warning if problems else logging.info
    log("image_text_folder %s: kept %d of %d images, splits %s, %d unconditional; "
        "problems: %s (details in %s)", report["source_dir"], counts["good"],
        report["num_images"], report["splits"], counts["unconditional"], problems or "none",
        REPORT_FILENAME)


def write_build_report(data_dir: str | epath.PathLike, report: Mapping[str, Any]) -> None:
    """Stores `report` next to the prepared data, where `read_build_report` finds it."""
    path = epath.Path(data_dir) / REPORT_FILENAME
    path.write_text(json.dumps(report, indent=2, sort_keys=True))


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
