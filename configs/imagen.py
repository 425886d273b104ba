r"""Imagen stage configs: `get_config("VARIANT,STAGE")`.

VARIANT: 'paper' (the paper's sizes: base 64 ~2B, SR 64->256 ~600M, SR 256->1024
~400M parameters) or 'tiny' (seconds per train step on a CPU).
STAGE: 'base64', 'sr256' or 'sr1024'.

    python -m imagen_jax.main --config=configs/imagen.py:tiny,base64 --workdir=/tmp/base
    python -m imagen_jax.main --config=configs/imagen.py:paper,sr256 --workdir=gs://...

Where the paper is silent (tagged [?] in shared/PAPERS.md) the choice is named here:
  - conditioning width 2048 for all three U-Nets (as NVIDIA's Rosetta configs);
  - base 64: the ADM layout (strides 1,2,2,2; skips from every res block, one more res
    block in the up path, attention after every res block at 32/16/8);
  - SR 64->256: the Efficient U-Net table (128/256/512/1024 channels, 2/4/8/8 blocks,
    all levels downsample), self-attention with text keys once per block at the last
    level, attention width 2x the channels;
  - SR 256->1024: the same without self-attention (cross-attention only). The paper
    lists it at 400M against 600M, which removing self-attention alone cannot
    explain (it is ~8M here); the last level uses 768 channels (channel multiplier 6,
    as Rosetta's sr2) to land at the stated size.
"""

from __future__ import annotations

import ml_collections

from configs.common import add_common

VARIANTS = ("paper", "tiny")
STAGES = ("base64", "sr256", "sr1024")
T5_XXL_DIM = 4096  # T5 v1.1-XXL encoder width (4.6B parameters, PAPERS.md 1.1)


def _unet_paper(stage: str) -> dict:
    if stage == "base64":
        return dict(channels=(512, 1024, 1536, 2048), num_res_blocks=(3, 3, 3, 3),
                    strides=(1, 2, 2, 2),
                    attention=("none", "self_cross", "self_cross", "self_cross"),
                    attention_per_res_block=True, skip_connections="res_block",
                    attention_head_dim=64, cond_dim=2048, text_dim=T5_XXL_DIM)
    last_channels, attention = (1024, "self_cross") if stage == "sr256" else (768, "cross")
    return dict(channels=(128, 256, 512, last_channels), num_res_blocks=(2, 4, 8, 8),
                strides=(2, 2, 2, 2), attention=("none", "none", "none", attention),
                # "8 heads, hidden 2x channels" (Fig. A.28): head width = 2C / 8.
                attention_hidden_mult=2, attention_head_dim=2 * last_channels // 8,
                cond_dim=2048,
                text_dim=T5_XXL_DIM, lowres_cond=True, noise_aug_cond=True)


def _unet_tiny(stage: str) -> dict:
    common = dict(channels=(16, 32), num_res_blocks=(1, 1), attention_head_dim=16,
                  cond_dim=32, text_dim=32, num_groups=8)
    if stage == "base64":
        return dict(common, strides=(1, 2), attention=("none", "self_cross"))
    return dict(common, strides=(2, 2),
                attention=("none", "self_cross" if stage == "sr256" else "cross"),
                lowres_cond=True, noise_aug_cond=True)


def _parse(arg: str | None) -> tuple[str, str]:
    parts = [p.strip() for p in (arg or "tiny,base64").split(",") if p.strip()]
    variant = next((p for p in parts if p in VARIANTS), "tiny")
    stage = next((p for p in parts if p in STAGES), "base64")
    unknown = [p for p in parts if p not in VARIANTS + STAGES]
    if unknown:
        raise ValueError(f"configs/imagen.py: unknown config arg(s) {unknown}; variants are "
                         f"{VARIANTS}, stages are {STAGES} (e.g. 'paper,sr256')")
    return variant, stage


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant, stage = _parse(arg)
    paper = variant == "paper"
    c = ml_collections.ConfigDict()
    c.stage = f"imagen.{stage}"
    c.variant = variant
    c.model = ml_collections.ConfigDict(_unet_paper(stage) if paper else _unet_tiny(stage))
    c.model.dropout = 0.0  # Imagen App. F: dropout 0 for all three models
    # A pretrained T5 writes word order into its outputs; only an order-free encoder
    # (the offline demo's random one) needs the U-Net to add positions (docs/text_tokens.md).
    c.model.text_positions = False
    # Rematerialised res blocks in the paper SR configs; not in base64, where the TPU
    # compiler found the step without remat faster (8 v4 chips, 8 per chip: 238 vs 250 ms
    # bound) for 0.9 GiB more (11.7 of 32 GiB per chip; docs/tpu_compile.md).
    c.model.remat = paper and stage != "base64"
    c.model.dtype = "bfloat16" if paper else "float32"

    sizes = {"base64": (64, None), "sr256": (256, 64), "sr1024": (1024, 256)}
    image_size, lowres_size = sizes[stage]
    if not paper:  # same ratios, CPU-sized images
        image_size, lowres_size = {"base64": (16, None), "sr256": (32, 8),
                                   "sr1024": (64, 16)}[stage]
    c.image_size = image_size
    c.lowres_size = lowres_size or 0

    c.diffusion = ml_collections.ConfigDict()
    # Cosine for base and 64->256; linear betas (1e-4 -> 0.02, 1000 steps, made
    # continuous) for 256->1024 (Imagen App. F). eps-prediction (App. A).
    c.diffusion.schedule = "linear" if stage == "sr1024" else "cosine"
    c.diffusion.prediction = "eps"
    c.diffusion.cond_drop_prob = 0.1
    c.diffusion.min_snr_gamma = 0.0  # 0 = off
    c.diffusion.max_aug_level = 0.5 if stage != "base64" else 0.0
    # 256->1024 trains on 256 crops (with the matching 64 low-res crops).
    c.diffusion.train_crop = (256 if paper else 32) if stage == "sr1024" else 0

    c.text = ml_collections.ConfigDict()
    c.text.encoder = "t5"
    c.text.checkpoint = ""  # local HF directory (config.json, safetensors, spiece.model)
    c.text.max_length = 128 if paper else 16  # [?] paper; 128 as Rosetta and NeMo
    # The frozen encoder's params and compute dtype: bfloat16 halves T5-XXL to 8.9 GiB,
    # which the trainer then shards over the mesh like the U-Net (docs/tpu_compile.md).
    c.text.dtype = "bfloat16" if paper else "float32"
    # Offline default when no checkpoint is named: a vocabulary trained on the
    # captions and a frozen random T5 of this size (see imagen_jax/text/from_config.py).
    c.text.vocab_size = 128
    c.text.seed = 0
    c.text.random_t5 = ml_collections.ConfigDict(dict(
        vocab_size=128, d_model=c.model.text_dim, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu"))

    c.sample = ml_collections.ConfigDict()
    c.sample.sampler = "ddim"
    c.sample.steps = 50 if paper else 10
    c.sample.eta = 0.0
    c.sample.guidance = {"base64": 5.0, "sr256": 5.0, "sr1024": 5.0}[stage]  # Fig. A.10
    c.sample.threshold = "dynamic"
    c.sample.percentile = 99.5
    c.sample.aug_level = 0.0

    add_common(c, paper=paper)
    # Adafactor for the base model, Adam for the SR models, 1e-4 after 10k warmup
    # steps, batch 2048, 2.5M steps (Imagen App. F); EMA 0.9999 and clipping at 1.0
    # are [?] in the paper (Rosetta/NeMo values).
    c.train.optimizer = "adafactor" if stage == "base64" else "adam"
    c.data.resolution = image_size  # shapes_captions renders at the stage's size
    return c
