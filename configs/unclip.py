r"""unCLIP (DALL-E 2) stage configs: `get_config("VARIANT,STAGE")`.

VARIANT: 'paper' (Table 3 sizes: prior ~1B, decoder ~3.5B, upsamplers ~700M /
~300M; checked by tests/unclip/test_configs.py with jax.eval_shape) or 'tiny'
(CPU-sized, for tests and the notebook).
STAGE: 'clip', 'prior', 'decoder64', 'upsample256' or 'upsample1024'.

Train CLIP first; the prior and decoder read its run directory (frozen CLIP):

    python -m imagen_jax.main --config=configs/unclip.py:tiny,clip --workdir=/tmp/u/clip
    python -m imagen_jax.main --config=configs/unclip.py:tiny,prior --workdir=/tmp/u/prior \
        --config.clip.workdir=/tmp/u/clip
    python -m imagen_jax.main --config=configs/unclip.py:tiny,decoder64 \
        --workdir=/tmp/u/decoder --config.clip.workdir=/tmp/u/clip
    python -m imagen_jax.main --config=configs/unclip.py:tiny,upsample256 --workdir=/tmp/u/up

Choices where the paper is silent or our architecture differs (see PAPERS.md):
  - prior: width 2048, 32 heads, 20 blocks (Karlo's depth). The paper says 24 blocks
    and "1B"; 24 blocks of width 2048 are 1.21B, 20 blocks are 1.0B.
  - decoder: GLIDE's U-Net (512 channels x (1, 2, 3, 4), 3 res blocks, attention at
    32/16/8 with 64-channel heads) plus a trainable caption transformer (width
    2048, 24 blocks, 32 heads) over the frozen CLIP token states, standing in for
    GLIDE's own text transformer; ~3.2B in all.
  - upsamplers: ADM U-Nets without attention; 64->256: 320 x (1, 2, 3, 4), 3 res
    blocks (~620M); 256->1024: 192 x (1, 1, 2, 2, 4, 4), 2 res blocks plus one
    more at the two deepest levels (~294M), where ADM resamples with residual
    blocks and our U-Net uses a single convolution.
  - z_i enters the prior as a unit vector x sqrt(E) (the paper: raw x 17.2).
"""

from __future__ import annotations

from typing import NamedTuple

import ml_collections

from configs.common import add_common

VARIANTS = ("paper", "tiny")
STAGES = ("clip", "prior", "decoder64", "upsample256", "upsample1024")

# CLIP ViT-H/16 at 256 px, text width 1024 x 24 blocks, 1024-d embeddings (U-App. C).
_CLIP_PAPER = dict(embed_dim=1024, image_size=256, patch_size=16, vision_width=1280,
                   vision_layers=32, vision_heads=16, vocab_size=49408, max_length=77,
                   text_width=1024, text_layers=24, text_heads=16)
_CLIP_TINY = dict(embed_dim=32, image_size=16, patch_size=4, vision_width=32, vision_layers=2,
                  vision_heads=2, vocab_size=128, max_length=16, text_width=32, text_layers=2,
                  text_heads=2)


class _Training(NamedTuple):
    """One stage's paper training hyperparameters; each field is the config.train key
    it sets."""
    learning_rate: float
    batch_size: int
    steps: int
    b2: float
    eps: float
    weight_decay: float
    ema_decay: float


# Table 3. CLIP: lr 3e-4 (App. C), the rest "as in CLIP" (batch 32768, beta2 0.98,
# eps 1e-6, weight decay 0.2); its step count is [?].
_PAPER_TRAINING = {
    "clip": _Training(learning_rate=3e-4, batch_size=32768, steps=100_000, b2=0.98,
                      eps=1e-6, weight_decay=0.2, ema_decay=0.9999),
    "prior": _Training(learning_rate=1.1e-4, batch_size=4096, steps=600_000, b2=0.96,
                       eps=1e-6, weight_decay=6e-2, ema_decay=0.9999),
    "decoder64": _Training(learning_rate=1.2e-4, batch_size=2048, steps=800_000, b2=0.999,
                           eps=1e-8, weight_decay=0.0, ema_decay=0.9999),
    "upsample256": _Training(learning_rate=1.2e-4, batch_size=1024, steps=1_000_000,
                             b2=0.999, eps=1e-8, weight_decay=0.0, ema_decay=0.9999),
    "upsample1024": _Training(learning_rate=1e-4, batch_size=512, steps=1_000_000, b2=0.999,
                              eps=1e-8, weight_decay=0.0, ema_decay=0.9999),
}


def _model(variant: str, stage: str, clip: dict) -> dict:
    paper = variant == "paper"
    if stage == "clip":
        return dict(clip)
    if stage == "prior":
        if paper:
            return dict(embed_dim=clip["embed_dim"], text_dim=clip["text_width"],
                        max_text_len=clip["max_length"], width=2048, layers=20, heads=32)
        return dict(embed_dim=clip["embed_dim"], text_dim=clip["text_width"],
                    max_text_len=clip["max_length"], width=32, layers=2, heads=2)
    if stage == "decoder64":
        if paper:
            return dict(channels=(512, 1024, 1536, 2048), num_res_blocks=(3, 3, 3, 3),
                        strides=(1, 2, 2, 2),
                        attention=("none", "self_cross", "self_cross", "self_cross"),
                        attention_per_res_block=True, skip_connections="res_block",
                        attention_head_dim=64, cond_dim=2048, text_dim=2048)
        return dict(channels=(16, 32), num_res_blocks=(1, 1), strides=(1, 2),
                    attention=("none", "self_cross"), attention_head_dim=16, cond_dim=32,
                    text_dim=clip["text_width"], num_groups=8)
    # Upsamplers: no attention, no text (text_dim only sizes the unused null token).
    common = dict(lowres_cond=True, noise_aug_cond=True, skip_connections="res_block",
                  text_dim=8)
    if not paper:
        return dict(common, channels=(16, 32), num_res_blocks=(1, 1), strides=(2, 2),
                    attention=("none", "none"), attention_head_dim=16, cond_dim=32,
                    num_groups=8)
    if stage == "upsample256":
        return dict(common, channels=(320, 640, 960, 1280), num_res_blocks=(3, 3, 3, 3),
                    strides=(1, 2, 2, 2), attention=("none",) * 4, cond_dim=1280)
    return dict(common, channels=(192, 192, 384, 384, 768, 768),
                num_res_blocks=(2, 2, 2, 2, 3, 3), strides=(1, 2, 2, 2, 2, 2),
                attention=("none",) * 6, cond_dim=768)


def _parse(arg: str | None) -> tuple[str, str]:
    parts = [p.strip() for p in (arg or "tiny,prior").split(",") if p.strip()]
    unknown = [p for p in parts if p not in VARIANTS + STAGES]
    if unknown:
        raise ValueError(f"configs/unclip.py: unknown config arg(s) {unknown}; variants are "
                         f"{VARIANTS}, stages are {STAGES} (e.g. 'paper,prior')")
    variant = next((p for p in parts if p in VARIANTS), "tiny")
    stage = next((p for p in parts if p in STAGES), "prior")
    return variant, stage


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant, stage = _parse(arg)
    paper = variant == "paper"
    clip = _CLIP_PAPER if paper else _CLIP_TINY
    c = ml_collections.ConfigDict()
    c.stage = f"unclip.{stage}"
    c.variant = variant
    c.model = ml_collections.ConfigDict(_model(variant, stage, clip))
    if stage not in ("clip", "prior"):
        c.model.dropout = 0.1 if paper and stage != "upsample1024" else 0.0  # Table 3
        c.model.remat = paper
        c.model.dtype = "bfloat16" if paper else "float32"

    sizes = {"clip": (256, 0), "prior": (64, 0), "decoder64": (64, 0),
             "upsample256": (256, 64), "upsample1024": (1024, 256)}
    if not paper:
        sizes = {"clip": (16, 0), "prior": (16, 0), "decoder64": (16, 0),
                 "upsample256": (32, 8), "upsample1024": (64, 16)}
    c.image_size, c.lowres_size = sizes[stage]

    # The frozen CLIP the prior and decoder condition on: a trained unclip.clip run
    # (workdir) or a local Hugging Face CLIPModel directory (checkpoint).
    # Its params and compute dtype: bfloat16 at paper size (ViT-H/16 in 1.8 GiB), sharded
    # over the mesh by the trainer like the trained model.
    c.clip = ml_collections.ConfigDict(dict(workdir="", checkpoint="",
                                            embed_dim=clip["embed_dim"],
                                            text_width=clip["text_width"],
                                            dtype="bfloat16" if paper else "float32"))
    # GLIDE-style trainable caption transformer in the decoder (0 layers = none).
    c.caption = ml_collections.ConfigDict(
        dict(width=2048, layers=24, heads=32) if paper and stage == "decoder64"
        else dict(width=0, layers=0, heads=1))

    c.diffusion = ml_collections.ConfigDict()
    # 1000-step cosine for all but 256->1024 (linear), Table 3; made continuous.
    c.diffusion.schedule = "linear" if stage == "upsample1024" else "cosine"
    # Prior: x0 (the paper's objective). Image stages: eps in the paper variant; v in
    # 'tiny', whose x0 = alpha z - sigma v has no 1/alpha blow-up near t = 1, which
    # keeps DDIM inversion stable for small, briefly trained models.
    c.diffusion.prediction = "x0" if stage == "prior" else ("eps" if paper else "v")
    # prior: caption and z_t dropped 10%; decoder: caption dropped 50%, z_i 10%.
    c.diffusion.cond_drop_prob = {"prior": 0.1, "decoder64": 0.5}.get(stage, 0.0)
    c.diffusion.image_embed_drop_prob = 0.1
    c.diffusion.min_snr_gamma = 0.0
    c.diffusion.max_aug_level = 0.0  # the upsamplers corrupt by blur / BSR instead
    c.diffusion.degradation = {"upsample256": "blur", "upsample1024": "bsr"}.get(stage, "none")
    # Upsamplers train on random crops a quarter of the target size.
    c.diffusion.train_crop = c.image_size // 4 if stage.startswith("upsample") else 0

    c.text = ml_collections.ConfigDict()
    c.text.checkpoint = ""  # Imagen's T5 field; unCLIP's text model is CLIP
    c.text.max_length = clip["max_length"]
    c.text.vocab_size = clip["vocab_size"]  # the offline caption vocabulary (clip stage)

    c.sample = ml_collections.ConfigDict()
    c.sample.sampler = {"prior": "ddpm", "decoder64": "ddpm"}.get(stage, "ddim")
    c.sample.steps = {"prior": 64, "decoder64": 250, "upsample256": 27,
                      "upsample1024": 15}.get(stage, 0) if paper else 16
    c.sample.eta = 0.0
    c.sample.guidance = 3.0 if stage == "decoder64" else 1.0
    c.sample.threshold = "dynamic" if stage == "decoder64" else "none"
    c.sample.percentile = 99.5
    c.sample.aug_level = 0.0
    c.sample.best_of = 2  # prior: keep the better of 2 z_i by similarity to z_t

    add_common(c, paper=paper)
    c.train.optimizer = "adamw"
    if paper:
        c.train.update(_PAPER_TRAINING[stage]._asdict())
    else:
        c.train.learning_rate = 1e-3
    c.data.resolution = c.image_size
    # Periodic samples as in configs/common.py: the decoder previews reconstructions of
    # the batch's CLIP embeddings, the upsamplers upsample its downsampled images; CLIP
    # and the prior make no images (their preview is None).
    return c
