"""Shared fixtures of the shapes tests."""

from __future__ import annotations

import pytest

from imagen_jax.data import shapes
from imagen_jax.data.shapes import Scene
from tests.data.shapes.helpers import sample_scenes


@pytest.fixture(scope="session")
def scenes() -> list[Scene]:
    """Train scenes as sampled and test scenes (held-out compositions), checked by the
    scene, caption, sampling and rendering tests alike."""
    return sample_scenes(600) + [shapes.example_scene("test", i) for i in range(150)]
