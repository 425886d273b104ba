"""Shared fixtures of the `image_text_folder` tests: the source folders and their builds.

Each folder is built once per setting and the builds are shared by every file here
(session-scoped fixtures): TFDS builds cost about a second each on two CPU cores,
the first one more while TensorFlow warms up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from imagen_jax.data.image_text_folder import build_image_text_folder
from tests.data.image_text_folder.helpers import (make_csv_folder, make_index_folder,
                                                  make_main_folder, snapshot)


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    makers = {"main": make_main_folder, "index": make_index_folder, "csv": make_csv_folder}
    for name, make in makers.items():
        (root / name).mkdir()
        make(root / name)
    return {name: root / name for name in makers}


@pytest.fixture(scope="session")
def snapshots(folders) -> dict[str, dict]:
    """Taken before any build (fixture order: every build fixture requests this)."""
    return {name: snapshot(path) for name, path in folders.items()}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def skip_build(folders, snapshots, data_dir):
    return build_image_text_folder(folders["main"], data_dir)


@pytest.fixture(scope="session")
def unconditional_build(folders, snapshots, data_dir):
    return build_image_text_folder(folders["main"], data_dir, missing_caption="unconditional")


@pytest.fixture(scope="session")
def split_builds(folders, snapshots, tmp_path_factory):
    """The same split config built from scratch twice, into separate data dirs."""
    return [build_image_text_folder(folders["main"], tmp_path_factory.mktemp(f"split{i}"),
                                    test_fraction=0.5) for i in range(2)]


@pytest.fixture(scope="session")
def max_side_build(folders, snapshots, data_dir):
    return build_image_text_folder(folders["main"], data_dir, max_side=40)


@pytest.fixture(scope="session")
def index_build(folders, snapshots, data_dir):
    return build_image_text_folder(folders["index"], data_dir)


@pytest.fixture(scope="session")
def csv_build(folders, snapshots, data_dir):
    return build_image_text_folder(folders["csv"], data_dir)
