r"""Score a trained cascade, or a folder of images, with ShapesBench.

    # the cascade of trained stages (base first), on the test split's held-out prompts
    python -m imagen_jax.evaluate.score_shapes --workdir=runs/base --workdir=runs/sr \
        --num_prompts=120 --out=runs/shapesbench
    # any folder of images with their prompts (captions.jsonl, captions.csv or .txt sidecars)
    python -m imagen_jax.evaluate.score_shapes --images_dir=outputs/cascade --out=runs/folder

Prints the table and writes OUT/shapesbench.json (summary + one row per image); for
a checkpoint it also writes the generated images to OUT/images/ with captions.jsonl,
so the same images can be scored again or looked at.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

_WORKDIRS = flags.DEFINE_multi_string("workdir", [], "Stage workdirs, base first.")
_IMAGES_DIR = flags.DEFINE_string("images_dir", None, "Folder of captioned images to score.")
_OUT = flags.DEFINE_string("out", None, "Where shapesbench.json (and images/) go.")
_NUM_PROMPTS = flags.DEFINE_integer("num_prompts", 120, "Test-split prompts to generate.")
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "test"], "Which split's captions.")
_BATCH = flags.DEFINE_integer("batch", 64, "Sampling batch size.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_STEPS = flags.DEFINE_integer("steps", None, "Sampler steps (default: each stage's config).")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Guidance weight (default: config).")
_THRESHOLD = flags.DEFINE_enum("threshold", None, ["none", "static", "dynamic"],
                               "Thresholding (default: config).")
_PERCENTILE = flags.DEFINE_float("percentile", None, "Dynamic thresholding percentile.")
_AUG = flags.DEFINE_float("aug_level", None, "SR noise-augmentation level at sampling.")


def score_folder(images_dir: str) -> tuple[list[dict], dict]:
    import numpy as np
    from PIL import Image

    from imagen_jax.data.folder_captions import captioned_images
    from imagen_jax.evaluate.shapesbench import score_images

    captions = captioned_images(images_dir)
    if not captions:
        raise ValueError(f"no captioned images in {images_dir} (captions.jsonl, captions.csv "
                         "or .txt sidecars)")
    names = sorted(captions)
    images = (np.asarray(Image.open(os.path.join(images_dir, n)).convert("RGB")) for n in names)
    rows, summary = score_images(images, [captions[n] for n in names])
    for row, name in zip(rows, names):
        row["file"] = name
    return rows, summary


def score_checkpoints(workdirs: list[str], out: str) -> tuple[list[dict], dict]:
    from tqdm import tqdm

    from imagen_jax.evaluate.shapesbench import score_images, shapesbench_prompts
    from imagen_jax.image_io import to_uint8
    from imagen_jax.sample_cascade import (Overrides, generate, load_cascade,
                                           write_captioned_pngs)

    overrides = Overrides(steps=_STEPS.value, guidance=_GUIDANCE.value,
                          threshold=_THRESHOLD.value, percentile=_PERCENTILE.value,
                          aug_level=_AUG.value)
    prompts = shapesbench_prompts(_NUM_PROMPTS.value, split=_SPLIT.value)
    cascade = load_cascade(workdirs, overrides)
    batches = -(-len(prompts) // _BATCH.value)
    with tqdm(total=batches * len(cascade.stages), desc="sampling", unit="stage") as bar:
        outputs = generate(cascade, prompts, seed=_SEED.value, batch_size=_BATCH.value,
                           progress=lambda _: bar.update(1))
    write_captioned_pngs(outputs[-1], prompts, os.path.join(out, "images"))
    return score_images(list(to_uint8(outputs[-1])), prompts)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from imagen_jax.evaluate.shapesbench import format_table

    if bool(_WORKDIRS.value) == bool(_IMAGES_DIR.value):
        sys.exit("error: give either --workdir (one per stage, base first) or --images_dir")
    out = _OUT.value or os.path.join(_IMAGES_DIR.value or _WORKDIRS.value[-1], "shapesbench")
    try:
        if _IMAGES_DIR.value:
            rows, summary = score_folder(_IMAGES_DIR.value)
            source = _IMAGES_DIR.value
        else:
            rows, summary = score_checkpoints(_WORKDIRS.value, out)
            source = " -> ".join(_WORKDIRS.value)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        sys.exit(f"error: {e}")
    print(format_table(summary, f"ShapesBench: {source}"))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "shapesbench.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"source": source, "summary": summary, "rows": rows}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    app.run(main)
