"""Small helpers for benchmark reports: Markdown tables and the machine/version line
every measured figure is printed with."""

from __future__ import annotations

import os
import platform
from typing import Sequence


def grid_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table of already formatted cells (first column left-aligned)."""
    lines = ["| " + " | ".join(header) + " |",
             "| --- |" + " ---: |" * (len(header) - 1)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


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


def write_report(path: str, lines: list[str], payload: dict, echo: bool = True) -> str:
    """Writes the Markdown report to `path` and `payload` as JSON beside it (each through
    a temporary file and a rename, so an interrupted write leaves the old report); prints
    it unless `echo` is False."""
    import json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    for target, text in ((path, "\n".join(lines)),
                         (os.path.splitext(path)[0] + ".json", json.dumps(payload, indent=1))):
        with open(target + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(target + ".tmp", target)
    if echo:
        print("\n".join(lines))
        print(f"wrote {path}")
    return path
