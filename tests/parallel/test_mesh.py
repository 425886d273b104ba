"""Mesh construction from a config, and logical-axis rules from a config."""

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import AxisType

from imagen_jax.parallel import (DEFAULT_RULES, MESH_AXES, make_mesh, mesh_shape,
                                 rules_from_config)


def test_eight_fake_devices():
    assert jax.device_count() == 8  # tests/conftest.py; every mesh below relies on it


@pytest.mark.parametrize("shape, expected", [
    ({"data": -1}, (8, 1, 1)),
    ({"fsdp": -1}, (1, 8, 1)),
    ({"data": 2, "fsdp": -1, "tensor": 2}, (2, 2, 2)),
    ({"tensor": 4, "data": -1}, (2, 1, 4)),
    ({"data": 2, "fsdp": 2, "tensor": 2}, (2, 2, 2)),
])
def test_fill_and_order(shape, expected):
    mesh = make_mesh(shape)
    assert mesh.axis_names == MESH_AXES == ("data", "fsdp", "tensor")
    assert tuple(mesh.shape.values()) == expected
    assert mesh.devices.size == 8


def test_axis_types_are_auto():
    # jax.make_mesh defaults to Explicit; Flax's logical partitioning needs Auto.
    assert make_mesh({"fsdp": 8}).axis_types == (AxisType.Auto,) * 3


def test_config_dict_and_device_subset():
    config = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 2})
    mesh = make_mesh(config, devices=jax.devices()[:4])
    assert dict(mesh.shape) == {"data": 1, "fsdp": 2, "tensor": 2}
    assert set(mesh.devices.flat) == set(jax.devices()[:4])


@pytest.mark.parametrize("shape, message", [
    ({"data": 3}, "mesh shape {'data': 3, 'fsdp': 1, 'tensor': 1} needs 3 devices, have 8"),
    ({"data": 4, "fsdp": 4}, "needs 16 devices, have 8"),
    ({"data": -1, "fsdp": -1}, "only one axis may be -1"),
    ({"data": 3, "fsdp": -1}, "cannot fill 'fsdp' with 8 devices"),
    ({"model": 8}, "unknown axes ['model']"),
    ({"data": 0}, "data=0 must be a positive int or -1"),
    ({"tensor": 2.0}, "tensor=2.0 must be a positive int or -1"),
    ([8, 1, 1], "must be a mapping of axis name -> size"),
])
def test_bad_shapes(shape, message):
    with pytest.raises(ValueError) as e:
        make_mesh(shape)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_mesh_shape_uses_given_device_count():
    assert mesh_shape({"fsdp": -1, "tensor": np.int64(2)}, 32) == {"data": 1, "fsdp": 16,
                                                                    "tensor": 2}


def test_rules_default_and_override():
    assert rules_from_config(None) == rules_from_config([]) == DEFAULT_RULES
    rules = rules_from_config([["batch", ["data"]], ["embed", ["fsdp", "tensor"]],
                               ["mlp", "tensor"], ["norm", None]])
    assert rules == (("batch", "data"), ("embed", ("fsdp", "tensor")), ("mlp", "tensor"),
                     ("norm", None))


@pytest.mark.parametrize("value, message", [
    ([["embed", "model"]], "unknown mesh axis 'model'"),
    ([["embed", ["fsdp", "x"]]], "unknown mesh axis 'x'"),
    ([["embed", ["fsdp", "fsdp"]]], "repeat an axis"),
    ([["embed"]], "is not a [name, axes] pair"),
    (["embed"], "is not a [name, axes] pair"),
    ([[3, "fsdp"]], "name 3 is not a non-empty str"),
    ([7], "7 is not a [name, axes] pair"),
])
def test_bad_rules(value, message):
    with pytest.raises(ValueError) as e:
        rules_from_config(value)
    assert message in str(e.value)
