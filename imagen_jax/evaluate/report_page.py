"""One HTML page a demo leaves to open: its grids, its ShapesBench tables, and every
held-out prompt's image with its per-criterion marks.

The page references the demo's PNGs by relative paths (it stays valid when the
workdir is moved or copied whole) and holds everything else inline: no script, no
stylesheet, nothing fetched.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from typing import Sequence

MARKS = ("colour", "shape", "count", "colour_shape", "relation", "whole")


@dataclass
class ScoredImages:
    """One set of scored images: a table title, its printed table, and per image the
    PNG path and the ShapesBench row (prompt, kind, True/False/None per criterion)."""

    title: str
    table: str
    images: Sequence[str]
    rows: Sequence[dict]
    note: str = ""
    summary: dict = field(default_factory=dict)  # shapesbench.summarize's


@dataclass
class ReportPage:
    title: str
    grids: list[tuple[str, str]] = field(default_factory=list)  # (caption, PNG path)
    scored: list[ScoredImages] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # facts shown under the title


def _mark(value: bool | None) -> str:
    if value is None:
        return '<td class="na">-</td>'
    return '<td class="ok">&#10003;</td>' if value else '<td class="no">&#10007;</td>'


def _rel(path: str, page_dir: str) -> str:
    return html.escape(os.path.relpath(path, page_dir).replace(os.sep, "/"), quote=True)


def _objects(row: dict) -> str:
    found = row.get("objects") or []
    return ", ".join(f"{o['color']} {o['shape']}" for o in found) or "none"


def render(page: ReportPage, path: str) -> str:
    """The page's HTML for a file at `path` (relative links are from its folder)."""
    page_dir = os.path.dirname(os.path.abspath(path))
    e = html.escape
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(page.title)}</title>",
           "<style>body{font-family:sans-serif;margin:1.5em;max-width:80em}"
           "pre{background:#f4f4f4;padding:.6em;overflow-x:auto}"
           "img.px{image-rendering:pixelated}table.rows td{padding:2px 6px;"
           "text-align:center}td.ok{color:#080}td.no{color:#b00}td.na{color:#999}"
           "td.prompt{text-align:left}</style></head><body>",
           f"<h1>{e(page.title)}</h1>"]
    out += [f"<p>{e(line)}</p>" for line in page.lines]
    if page.grids:
        out.append("<h2>Sample grids</h2>")
        for caption, grid in page.grids:
            out.append(f'<figure><img src="{_rel(grid, page_dir)}" alt="{e(caption)}">'
                       f"<figcaption>{e(caption)}</figcaption></figure>")
    for scored in page.scored:
        out.append(f"<h2>{e(scored.title)}</h2>")
        if scored.note:
            out.append(f"<p>{e(scored.note)}</p>")
        out.append(f"<pre>{e(scored.table)}</pre>")
    for scored in page.scored:
        out.append(f"<h2>{e(scored.title)}: every prompt</h2>")
        out.append('<table class="rows"><tr><th>image</th><th>prompt</th><th>kind</th>'
                   + "".join(f"<th>{m.replace('_', '+')}</th>" for m in MARKS)
                   + "<th>detected</th></tr>")
        for image, row in zip(scored.images, scored.rows, strict=True):
            out.append(f'<tr><td><img class="px" width="64" height="64" '
                       f'src="{_rel(image, page_dir)}" alt="{e(row["prompt"])}"></td>'
                       f'<td class="prompt">{e(row["prompt"])}</td><td>{e(row["kind"])}</td>'
                       + "".join(_mark(row.get(m)) for m in MARKS)
                       + f'<td class="prompt">{e(_objects(row))}</td></tr>')
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write(page: ReportPage, path: str) -> str:
    """Writes the page (replacing a previous one whole) and returns its path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".partial", "w", encoding="utf-8") as f:
        f.write(render(page, path))
    os.replace(path + ".partial", path)
    return path
