"""imagen_jax adds its XLA:CPU flags before the backend starts, and never overrides
a flag the user set."""

import os
import subprocess
import sys

from imagen_jax.xla_flags import CPU_FLAGS, add_default_xla_flags

FLAG = "xla_cpu_experimental_ynn_fusion_type"


def test_appends_to_existing_flags_once():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    value = add_default_xla_flags(env)
    assert value == ("--xla_force_host_platform_device_count=8 "
                     f"--{FLAG}={CPU_FLAGS[FLAG]}")
    assert add_default_xla_flags(env) == value  # idempotent
    assert add_default_xla_flags({}) == f"--{FLAG}={CPU_FLAGS[FLAG]}"


def test_user_value_wins():
    env = {"XLA_FLAGS": f"--{FLAG}=+individual_convolution"}
    assert add_default_xla_flags(env) == f"--{FLAG}=+individual_convolution"


CHECK = """
import imagen_jax, jax, jax.numpy as jnp
x, w = jnp.ones((8, 32, 32, 64)), jnp.ones((3, 3, 64, 64))  # YNNPACK skips tiny convs
conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
print("ynn" in conv.lower(x, w).compile().as_text())
"""


def _convolution_in_ynnpack(xla_flags: str) -> bool:
    env = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout.split()
    return out[-1] == "True"


def test_flag_reaches_xla_through_import():
    """With the import's flag, XLA compiles the convolution itself (Eigen); with the
    user's opposite choice it stays a YNNPACK fusion — so the flag is what decides."""
    assert not _convolution_in_ynnpack("")
    assert _convolution_in_ynnpack(f"--{FLAG}=+individual_convolution")
