"""Preparing a TFDS builder's data once, cleaning up after builds that were killed.

TFDS writes a build into `<config dir>/incomplete.<6 characters>_<version>/` and
renames it to `<config dir>/<version>/` when it is done. A build killed midway (a
preempted VM, Ctrl-C twice, the OOM killer) leaves that directory behind with
partial TFRecords, and TFDS never looks at it again: every later build writes a new
one beside it. `prepare` removes those leftovers before it builds.

Only leftovers can go: another process may be writing its own `incomplete.*`
directory right now (two runs whose workdirs share the default data_dir, or hosts
of one job on a shared disk). So every `prepare` holds an exclusive `flock` on
`<config dir>/.build.lock` for its whole build; whoever holds it knows that no other
`prepare` is writing there, hence that any `incomplete.*` directory it finds was left
by a process that died (the kernel releases a dead process's lock, however it died).
A second `prepare` of the same dataset waits for the first, then finds the data
ready instead of building it again.

A data_dir that cannot be locked (gs://..., a filesystem without locks) is built
without the lock, and its leftovers are kept: there is no telling them from a live
build.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import io
import shutil
import sys
import time
from collections.abc import Iterator
from typing import Any

import tensorflow_datasets as tfds
from absl import logging

LOCK_FILE = ".build.lock"
# TFDS's name for a build in progress (tensorflow_datasets/core/utils/file_utils.py,
# `_get_incomplete_dir`): "incomplete." + 6 random [A-Z0-9] + "_" + the version dir.
_INCOMPLETE_BUILD = re.compile(r"incomplete\.[A-Z0-9]{6}_.+")


def prepare(builder: tfds.core.DatasetBuilder, **kwargs: Any) -> None:
    """`builder.download_and_prepare(**kwargs)`, under the build lock, after removing
    what killed builds of the same dataset left (one warning line when there was any)."""
    # data_path is <data_dir>/<name>/<config>/<version>; builds go beside it.
    config_dir = os.fspath(builder.data_path.parent)
    with _build_lock(config_dir) as locked:
        if locked:
            removed = remove_leftover_builds(config_dir)
            if removed:
                logging.warning("removed %d leftover(s) of an interrupted dataset build: %s",
                                len(removed), ", ".join(removed))
        if builder.data_path.exists():
            builder.download_and_prepare(**kwargs)  # built: TFDS only reads its info
        else:
            _build_quietly(builder, **kwargs)


def _build_quietly(builder: tfds.core.DatasetBuilder, **kwargs: Any) -> None:
    """Builds with one line before and one after, instead of TFDS's: it prints
    "Downloading and preparing dataset Unknown size ..." for a set generated locally
    (nothing is downloaded) and a progress bar per split and shuffle file, named by
    its temporary path."""
    name = f"{builder.name}/{builder.builder_config.name}" if builder.builder_config \
        else builder.name
    print(f"[data] generating {name} into {builder.data_dir} (once)", file=sys.stderr,
          flush=True)
    start = time.perf_counter()
    tfds.display_progress_bar(False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            builder.download_and_prepare(**kwargs)
    finally:
        tfds.display_progress_bar(True)
    splits = ", ".join(f"{split} {info.num_examples}"
                       for split, info in sorted(builder.info.splits.items()))
    print(f"[data] {name}: {splits} examples in {time.perf_counter() - start:.0f} s",
          file=sys.stderr, flush=True)


def remove_leftover_builds(config_dir: str) -> list[str]:
    """Deletes every TFDS build-in-progress directory in `config_dir`; returns their
    paths. Only call it holding the build lock: it cannot tell a live build."""
    try:
        names = sorted(os.listdir(config_dir))
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        path = os.path.join(config_dir, name)
        if _INCOMPLETE_BUILD.fullmatch(name) and os.path.isdir(path):
            shutil.rmtree(path)
            removed.append(path)
    return removed


@contextlib.contextmanager
def _build_lock(config_dir: str) -> Iterator[bool]:
    """Holds an exclusive flock on `config_dir`/LOCK_FILE, waiting for a holder to
    finish; yields False (holding nothing) where the directory cannot be locked."""
    if "://" in config_dir:  # an object store: no flock; os.makedirs would make "gs:/"
        yield False
        return
    os.makedirs(config_dir, exist_ok=True)
    fd = os.open(os.path.join(config_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        yield _lock(fd, config_dir)
    finally:
        os.close(fd)  # releases the lock


def _lock(fd: int, config_dir: str) -> bool:
    """Takes the exclusive lock on `fd`, waiting if another process holds it; False
    where the filesystem has no locks."""
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Said once, so that a wait of minutes (a big build) is not taken for a hang.
            logging.warning("waiting for another process that is building the dataset "
                            "in %s", config_dir)
            fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:  # ENOLCK, EOPNOTSUPP: a network filesystem without locks
        logging.info("cannot lock %s (%s): building without the lock", config_dir, e)
        return False
    return True
