r"""DrawBench runner: generate images for a DrawBench-style prompt file and write a
self-contained HTML page for human rating.

    python -m imagen_jax.evaluate.drawbench --prompts_csv=drawbench.csv \
        --a=runs/demo/base,runs/demo/sr --b=runs/other/base,runs/other/sr \
        --images_per_prompt=4 --out=runs/drawbench

The CSV is the published DrawBench format (columns `Prompts` and `Category`; you
supply the file, nothing is downloaded). Each model is a comma-separated list of
stage workdirs, base first. With two models the page shows, per category and per
prompt, the two models' images side by side in a random (seeded) left/right order,
and asks which is better for image-text alignment and for fidelity, as the Imagen
paper's raters were asked; "Export ratings" saves the answers, already mapped back to
A/B, as JSON. `key.json` holds the left/right assignment. With one model it is a
per-category gallery. The raw PNGs are written under OUT/images/{a,b}/.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import random
import sys
from typing import Sequence

import numpy as np
from absl import app, flags

PROMPT_COLUMN, CATEGORY_COLUMN = "Prompts", "Category"


def read_prompts(path: str) -> list[tuple[str, str]]:
    """(prompt, category) rows of a DrawBench CSV; blank prompts are skipped."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"prompts_csv {path!r} does not exist")
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (PROMPT_COLUMN, CATEGORY_COLUMN) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"prompts_csv {path}: missing column(s) {missing}; the DrawBench "
                             f"format has columns {PROMPT_COLUMN!r} and {CATEGORY_COLUMN!r}")
        rows = [(r[PROMPT_COLUMN].strip(), (r[CATEGORY_COLUMN] or "").strip() or "Uncategorised")
                for r in reader if (r[PROMPT_COLUMN] or "").strip()]
    if not rows:
        raise ValueError(f"prompts_csv {path}: no prompts")
    return rows


def _png_data_uri(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _images_html(images: Sequence[np.ndarray]) -> str:
    return "".join(f'<img src="{_png_data_uri(im)}" width="{max(128, im.shape[1])}">'
                   for im in images)


_STYLE = """body{font-family:sans-serif;margin:1.5em} .item{border:1px solid #ccc;margin:1em 0;
padding:.6em} .side{display:inline-block;vertical-align:top;margin-right:2em}
img{image-rendering:pixelated;margin:2px} .q{margin:.3em 0}"""

_SCRIPT = """function exportRatings(){const out=[];document.querySelectorAll('.item').forEach(d=>{
const r={id:d.dataset.id,prompt:d.dataset.prompt,category:d.dataset.category};
['alignment','fidelity'].forEach(q=>{const c=d.querySelector('input[name="'+q+d.dataset.id+'"]:checked');
let v=c?c.value:null; if(v==='left')v=d.dataset.left; else if(v==='right')v=d.dataset.right; r[q]=v;});
out.push(r);});const a=document.createElement('a');a.href=URL.createObjectURL(new Blob(
[JSON.stringify(out,null,1)],{type:'application/json'}));a.download='ratings.json';a.click();}"""


def build_html(rows: Sequence[tuple[str, str]], images: dict[str, Sequence[Sequence[np.ndarray]]],
               seed: int = 0) -> tuple[str, list[dict]]:
    """The rating page and the left/right key. `images[model][i]` are prompt i's images."""
    models = sorted(images)
    rng = random.Random(seed)
    key, sections = [], {}
    for i, (prompt, category) in enumerate(rows):
        order = models[:] if len(models) == 1 else rng.sample(models, 2)
        key.append({"id": i, "prompt": prompt, "category": category, "left": order[0],
                    "right": order[-1]})
        sides = "".join(f'<div class="side"><b>{"Left" if j == 0 else "Right"}</b><br>'
                        f"{_images_html(images[m][i])}</div>" for j, m in enumerate(order))
        questions = ""
        if len(models) == 2:
            for q, text in (("alignment", "Which image set matches the caption better?"),
                            ("fidelity", "Which image set looks more realistic / better made?")):
                options = "".join(f'<label><input type="radio" name="{q}{i}" value="{v}">{v}'
                                  f"</label> " for v in ("left", "tie", "right"))
                questions += f'<div class="q">{text} {options}</div>'
        sections.setdefault(category, []).append(
            f'<div class="item" data-id="{i}" data-prompt="{html.escape(prompt)}" '
            f'data-category="{html.escape(category)}" data-left="{order[0]}" '
            f'data-right="{order[-1]}"><div class="q"><b>{html.escape(prompt)}</b></div>'
            f"{sides}{questions}</div>")
    body = "".join(f"<h2>{html.escape(c)} ({len(items)})</h2>{''.join(items)}"
                   for c, items in sections.items())
    button = ('<p><button onclick="exportRatings()">Export ratings</button></p>'
              if len(models) == 2 else "")
    title = "DrawBench: " + (" vs ".join(models))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body><h1>{title}</h1>"
            f"<p>{len(rows)} prompts. Left/right order is random per prompt.</p>{button}{body}"
            f"{button}</body></html>")
    return page, key


def run(prompts_csv: str, models: dict[str, list[str]], out: str, images_per_prompt: int,
        seed: int = 0, batch_size: int = 32) -> str:
    """Generates every model's images, writes PNGs, the page and the key; returns the page."""
    from tqdm import tqdm

    from imagen_jax.image_io import to_uint8
    from imagen_jax.sample_cascade import generate, load_cascade, write_captioned_pngs

    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be >= 1, got {images_per_prompt}")
    rows = read_prompts(prompts_csv)
    expanded = [p for p, _ in rows for _ in range(images_per_prompt)]
    images = {}
    for name, workdirs in models.items():
        cascade = load_cascade(workdirs)
        batch = min(batch_size, len(expanded))
        with tqdm(total=-(-len(expanded) // batch) * len(cascade.stages),
                  desc=f"model {name}", unit="stage") as bar:
            final = generate(cascade, expanded, seed=seed, batch_size=batch,
                             progress=lambda _: bar.update(1))[-1]
        write_captioned_pngs(final, expanded, os.path.join(out, "images", name))
        final = to_uint8(final)
        images[name] = [final[i * images_per_prompt:(i + 1) * images_per_prompt]
                        for i in range(len(rows))]
    page, key = build_html(rows, images, seed)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "drawbench.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    with open(os.path.join(out, "key.json"), "w", encoding="utf-8") as f:
        json.dump({"models": {n: w for n, w in models.items()}, "items": key}, f, indent=1)
    return path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _CSV.value or not _A.value:
        sys.exit("error: --prompts_csv and --a are required")
    models = {"a": [w for w in _A.value.split(",") if w]}
    if _B.value:
        models["b"] = [w for w in _B.value.split(",") if w]
    try:
        path = run(_CSV.value, models, _OUT.value, _N.value, _SEED.value, _BATCH.value)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {path}")


def _define_flags() -> None:
    """CLI flags, defined only when run as a program: tests import this module next to
    other modules whose flags share names (--out)."""
    global _CSV, _A, _B, _N, _OUT, _SEED, _BATCH
    _CSV = flags.DEFINE_string("prompts_csv", None, "DrawBench CSV (columns Prompts, Category).")
    _A = flags.DEFINE_string("a", None, "Model A: stage workdirs, comma-separated, base first.")
    _B = flags.DEFINE_string("b", None, "Optional model B, same form.")
    _N = flags.DEFINE_integer("images_per_prompt", 4, "Images per prompt and model.")
    _OUT = flags.DEFINE_string("out", "runs/drawbench", "Output folder.")
    _SEED = flags.DEFINE_integer("seed", 0, "Sampling and left/right seed.")
    _BATCH = flags.DEFINE_integer("batch", 32, "Sampling batch size.")


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    _define_flags()
    app.run(main)
