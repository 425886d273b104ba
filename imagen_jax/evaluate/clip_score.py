r"""CLIP score: how well generated images match their prompts, under a CLIP model.

    python -m imagen_jax.evaluate.clip_score --images_dir=outputs/samples \
        --clip=runs/unclip_demo/clip

The score is the mean cosine similarity of each image's CLIP embedding z_i and its
prompt's z_t (Hessel et al. 2021 report 100 * max(cos, 0); the raw mean cosine is
printed here, with that figure beside it). `--clip` is either a trained `unclip.clip`
run (the shapes-trained CLIP of `python -m unclip_jax.demo`, runs/unclip_demo/clip by
default) or a local Hugging Face CLIPModel directory (config.json with text_config,
model.safetensors, tokenizer.json). The CLIP model is unCLIP's, reached through the
stage registry's `image_text_scorer` of the unclip.clip stage.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

import numpy as np

DEFAULT_CLIP = os.path.join("runs", "unclip_demo", "clip")
BATCH = 64


SCORER_STAGE = "unclip.clip"  # the registered stage whose model scores image-text pairs


def load_clip_for_scoring(directory: str) -> Any:
    """A frozen CLIP from a trained unclip.clip workdir or a Hugging Face CLIPModel
    directory, through the stage registry (imagen_jax never imports unclip_jax)."""
    from imagen_jax.stage_registry import lookup

    return lookup(SCORER_STAGE).image_text_scorer(directory)


def clip_score(clip: Any, images: np.ndarray, prompts: Sequence[str]) -> dict:
    """Mean cosine of CLIP image and prompt embeddings, for images [N, H, W, 3] in
    [-1, 1] (any size: CLIP resizes) and one prompt per image; also per image."""
    import jax.numpy as jnp

    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
    if not len(prompts):
        raise ValueError("no images to score")
    cosines = []
    for start in range(0, len(prompts), BATCH):
        z_i = np.array(clip.encode_images(jnp.asarray(images[start:start + BATCH])))
        z_t = np.array(clip.encode_prompts(list(prompts[start:start + BATCH]))[0])
        z_i /= np.maximum(np.linalg.norm(z_i, axis=-1, keepdims=True), 1e-8)
        z_t /= np.maximum(np.linalg.norm(z_t, axis=-1, keepdims=True), 1e-8)
        cosines.append(np.sum(z_i * z_t, axis=-1))
    cos = np.concatenate(cosines).astype(np.float64)
    return {"n": len(cos), "clip_score": float(cos.mean()),
            "clip_score_hessel": float(100 * np.maximum(cos, 0).mean()),
            "per_image": cos.tolist()}


def score_folder(images_dir: str, clip_dir: str) -> dict:
    """The CLIP score of a folder of captioned images (captions.jsonl, .csv or sidecars)."""
    from imagen_jax.data.folder_captions import captioned_images
    from imagen_jax.image_io import load_image

    captions = captioned_images(images_dir)
    if not captions:
        raise ValueError(f"no captioned images in {images_dir} (captions.jsonl, captions.csv "
                         "or .txt sidecars)")
    names = sorted(captions)
    clip = load_clip_for_scoring(clip_dir)
    size = clip.config.image_size
    images = np.stack([load_image(os.path.join(images_dir, n), size) for n in names])
    return clip_score(clip, images, [captions[n] for n in names])


def main(argv: Sequence[str]) -> None:
    from absl import flags

    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {list(argv[1:])}")
    f = flags.FLAGS
    try:
        result = score_folder(f.images_dir, f.clip)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"CLIP score over {result['n']} images: mean cosine {result['clip_score']:.4f} "
          f"(100 * max(cos, 0): {result['clip_score_hessel']:.2f}) under {f.clip}")
    if f.out:
        with open(f.out, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=1)


if __name__ == "__main__":
    from absl import app, flags

    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    flags.DEFINE_string("images_dir", None, "Folder of captioned images.", required=True)
    flags.DEFINE_string("clip", DEFAULT_CLIP, "unclip.clip workdir or HF CLIPModel directory.")
    flags.DEFINE_string("out", None, "Also write the scores as JSON here.")
    app.run(main)
