"""XLA_FLAGS for the processes a test launches (CLIs, notebook kernels, multi-host
processes): the suite's compile-time flags (tests/conftest.py), with the device
count each of those processes needs instead of the suite's 8 fake devices."""

from __future__ import annotations

import os
import re

_DEVICE_COUNT = re.compile(r"--xla_force_host_platform_device_count=\d+")


def process_xla_flags(device_count: int | None = None) -> str:
    """The suite's XLA_FLAGS without its fake device count; with `device_count`
    fake CPU devices when given (None: the launched process decides, e.g. one device,
    or launch/local_multihost.sh which adds its own count)."""
    flags = _DEVICE_COUNT.sub("", os.environ.get("XLA_FLAGS", "")).split()
    if device_count is not None:
        flags.insert(0, f"--xla_force_host_platform_device_count={device_count}")
    return " ".join(flags)
