"""Small helpers for benchmark reports: Markdown tables and the machine/version line
every measured figure is printed with."""

from __future__ import annotations

import os
import platform
from typing import Sequence


def markdown_table(rows: Sequence[tuple[str, dict]], columns: Sequence[tuple[str, str, str]]
                   ) -> str:
    """rows: (name, values); columns: (key, header, format spec). Missing keys stay blank."""
    lines = ["| setting | " + " | ".join(c[1] for c in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    for name, row in rows:
        cells = [format(row[key], fmt) if key in row else "" for key, _, fmt in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment() -> str:
    """Machine, OS, Python and jax versions and the backend, in one line."""
    import jax

    return (f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; python "
            f"{platform.python_version()}, jax {jax.__version__} ({jax.devices()[0].platform})")
