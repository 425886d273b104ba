"""The demo's index.html (imagen_jax/evaluate/report_page.py through imagen_jax.demo's
own scoring and page functions, on images drawn by the ShapesBench renderer instead of
a trained cascade): it references only files that exist, shows both tables, and marks
every prompt per criterion."""

from __future__ import annotations

import os
from html.parser import HTMLParser

import numpy as np

from imagen_jax import image_io
from imagen_jax.demo import score_shapesbench, write_index
from imagen_jax.evaluate.shapesbench import shapesbench_prompts


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href"):
                self.refs.append(value)

    def handle_data(self, data):
        self.text.append(data)


def _drawn(prompts: list[str]) -> np.ndarray:
    """Ground-truth scenes for the prompts, in [-1, 1] like a sampler's output."""
    from imagen_jax.data.shapes import example_scene, render

    scenes = [example_scene("test", i, 0) for i in range(len(prompts))]
    assert [s.caption for s in scenes] == prompts
    return np.stack([render(s, 64) for s in scenes]).astype(np.float32) / 127.5 - 1.0


def test_index_page_references_only_existing_files(tmp_path):
    workdir = str(tmp_path / "demo")
    prompts = shapesbench_prompts(12, split="test")
    final_images = _drawn(prompts)
    base_images = final_images[:, ::2, ::2]  # a 32 px "base stage"
    grid = image_io.save_png_grid(final_images[:4], os.path.join(workdir, "samples",
                                                                  "grid_64.png"))
    out = os.path.join(workdir, "shapesbench")
    base = score_shapesbench(base_images, prompts, os.path.join(out, "base_stage"),
                             "ShapesBench, base stage alone")
    final = score_shapesbench(final_images, prompts, out, "ShapesBench, final images")
    page = write_index(workdir, "demo", [grid], [final, base], ["a line"])
    assert page == os.path.join(workdir, "index.html")

    parser = _Links()
    with open(page, encoding="utf-8") as f:
        parser.feed(f.read())
    # The grid, and each prompt's image for both tables: all relative, all there.
    assert len(parser.refs) == 1 + 2 * len(prompts)
    for ref in parser.refs:
        assert not os.path.isabs(ref) and "://" not in ref, ref
        assert os.path.isfile(os.path.join(workdir, ref)), ref
    text = "".join(parser.text)
    assert "ShapesBench, final images, 12 held-out test prompts (64 px)" in text
    assert "ShapesBench, base stage alone, 12 held-out test prompts (32 px, scored at 64)" \
        in text
    for prompt in prompts:
        assert text.count(prompt) >= 2  # a row under each table
    # Drawn by the renderer, the final images score (nearly) every mark: the page's
    # check marks are the rows' values.
    marks = sum(row["colour"] is True for row in final.rows)
    assert marks >= 10 and text.count("\u2713") >= marks


def test_missing_image_would_be_caught(tmp_path):
    """The check above can fail: a page whose image is removed references a file that
    no longer exists."""
    workdir = str(tmp_path / "demo")
    prompts = shapesbench_prompts(2, split="test")
    final = score_shapesbench(_drawn(prompts), prompts, os.path.join(workdir, "sb"), "t")
    page = write_index(workdir, "demo", [], [final])
    os.remove(final.images[0])
    parser = _Links()
    with open(page, encoding="utf-8") as f:
        parser.feed(f.read())
    assert [r for r in parser.refs if not os.path.isfile(os.path.join(workdir, r))] == [
        os.path.relpath(final.images[0], workdir)]
