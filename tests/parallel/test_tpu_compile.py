"""A train step compiled by the TPU compiler on this CPU-only machine: the path of
benchmarks/tpu_compile.py (imagen_jax/train/aot.py, libtpu from the test extra) for a
tiny stage on a 4-chip TPU v5e topology under FSDP. It must fit, and each chip must
hold about a quarter of the state and of the frozen encoder."""

from __future__ import annotations

import pytest

from configs import unclip
from imagen_jax.train import aot


@pytest.fixture(scope="module")
def program():
    # The smallest stage that runs a frozen encoder in its step: the tiny unCLIP prior
    # (its CLIP turns caption ids and images into z_t, z_i and token states).
    config = unclip.get_config("tiny,prior")
    config.clip.workdir = "unused"  # compiled from the architecture, nothing is loaded
    config.mesh = {"data": 1, "fsdp": -1, "tensor": 1}
    config.train.batch_size = 8
    # Wide enough that the TPU's tiled layout of small arrays (a few KiB each) does not
    # dominate the per-chip bytes; the compile time is set by the number of ops.
    config.model.width = 256
    config.model.layers = 1  # compile time grows with the layers, not the width
    return aot.compile_train_step(config, aot.topology_devices("v5e:2x2"))


def test_the_step_compiles_for_tpu_and_fits(program):
    assert program.num_devices == 4 and program.mesh_sizes["fsdp"] == 4
    assert program.compiled.as_text()  # a TPU executable's HLO
    costs = aot.step_costs(program)
    bound = aot.roofline(costs, aot.CHIPS["v5e"], program.global_batch,
                         program.model_flops / program.num_devices)
    assert bound["fits"] and 0 < costs["memory"]["peak"] < aot.CHIPS["v5e"].hbm_bytes
    assert costs["flops"] > 0 and costs["hbm_bytes"] > 0 and bound["bound_s"] > 0
    # FSDP: weights are all-gathered for use and gradients reduced across the 4 chips.
    assert costs["collectives"].get("all-gather", {}).get("count", 0) > 0, costs["collectives"]


def test_fsdp_stores_a_quarter_of_the_state_and_of_the_frozen_clip_per_chip(program):
    state, frozen = program.state_bytes_per_device, program.frozen_bytes_per_device
    # Small leaves (norm scales, biases a dimension of 4 does not divide) stay whole.
    assert program.state_bytes_total / 4 <= state <= 1.15 * program.state_bytes_total / 4
    assert program.frozen_bytes_total / 4 <= frozen <= 1.3 * program.frozen_bytes_total / 4
    # The TPU compiler's own account of the step's inputs on one chip agrees: the
    # state, the frozen weights and a quarter of the batch, far below a full copy.
    argument = aot.step_costs(program)["memory"]["argument"]
    assert state + frozen <= argument < 0.5 * (program.state_bytes_total +
                                              program.frozen_bytes_total)
