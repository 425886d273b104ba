"""Which images a user's folder holds, and the caption of each.

Captions come from any mix of these, highest precedence first:
    1. `captions.jsonl` at the root: one `{"file": "a/b.jpg", "caption": "..."}`
       per line (`image` is accepted instead of `file`);
    2. `captions.csv` at the root, with a header naming a `file` (or `image`)
       column and a `caption` column;
    3. sidecar text files: `a/b.jpg` is captioned by `a/b.txt`.
An index file is a deliberate export while sidecars are often left over from
earlier tooling, so an index entry beats a sidecar, even when it is empty. Within
one index file the first entry for an image wins. Captions are stripped.

Problems with entries are counted in a `build_report.Tally` under
ENTRY_CATEGORIES; an index file that is not UTF-8, or a csv without the needed
columns, stops the build instead (every caption in it is suspect).
"""

from __future__ import annotations

import csv
import json
import os
import posixpath
from collections.abc import Mapping
from typing import Any

from imagen_jax.checks import open_utf8
from imagen_jax.data.build_report import Tally

CAPTIONS_JSONL = "captions.jsonl"
CAPTIONS_CSV = "captions.csv"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
# Keys an index entry may use for the image path, in the order they are tried.
FILE_KEYS = ("file", "image")


def check_source_dir(source_dir: str) -> None:
    """FileNotFoundError / NotADirectoryError naming `source_dir` unless it is a folder."""
    if not os.path.exists(source_dir):
        raise FileNotFoundError(f"image_text_folder: source_dir {source_dir!r} does not exist")
    if not os.path.isdir(source_dir):
        raise NotADirectoryError(f"image_text_folder: source_dir {source_dir!r} is not a "
                                 "directory")


def walk_folder(source_dir: str) -> tuple[list[str], dict[str, str]]:
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


def collect_captions(source_dir: str, images: list[str], sidecars: Mapping[str, str],
                     tally: Tally) -> dict[str, str]:
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
    check_source_dir(source_dir)
    images, sidecars = walk_folder(source_dir)
    return collect_captions(source_dir, images, sidecars, Tally())


def _read_jsonl(path: str, tally: Tally) -> list[tuple[str, str]]:
    """(relative path, caption) pairs from captions.jsonl; bad lines are counted."""
    entries = []
    # open_utf8 tolerates the byte-order mark some Windows tools write, and stops
    # the build on bytes that are not UTF-8: then every caption is suspect.
    with open_utf8(path) as f:
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


def _read_csv(path: str, tally: Tally) -> list[tuple[str, str]]:
    """(relative path, caption) pairs from captions.csv; bad rows are counted."""
    entries = []
    # newline="" lets the csv module handle newlines inside quoted captions.
    with open_utf8(path, newline="") as f:
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


def _read_sidecar(path: str, rel: str, tally: Tally) -> str | None:
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
