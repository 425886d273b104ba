r"""The offline unCLIP demo stack on `shapes_captions`, CPU-sized (unclip_jax/demo.py):
CLIP, the diffusion prior and a 32 px decoder, plus a 32 -> 64 upsampler.

    python -m unclip_jax.demo --workdir=runs/unclip_demo
    python -m imagen_jax.main --config=configs/unclip_demo.py:clip --workdir=runs/u/clip

ARG: 'clip', 'prior', 'decoder' or 'upsampler'. Each starts from configs/unclip.py's
tiny variant (the paper configs' code paths). The decoder's U-Net, resolution,
batch and loss are those of the Imagen demo's base stage
(configs/imagen_demo.py), so the two can be compared at equal guidance; only the
conditioning differs (CLIP image embedding + CLIP token states vs frozen T5).
Steps: the four stages share the 15 minutes the demo may take on a 2-core CPU
(README, unCLIP section: each stage's seconds as measured).
"""

from __future__ import annotations

import ml_collections

from configs import unclip
from configs.common import cpu_demo_training

STAGES = {"clip": "clip", "prior": "prior", "decoder": "decoder64",
          "upsampler": "upsample256"}
# CLIP for 32 px shapes: 8x8 patches of 4 px, 64-d embeddings.
CLIP = dict(embed_dim=64, image_size=32, patch_size=4, vision_width=64, vision_layers=4,
            vision_heads=4, vocab_size=128, max_length=16, text_width=64, text_layers=3,
            text_heads=4)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name = (arg or "decoder").strip()
    if name not in STAGES:
        raise ValueError(f"configs/unclip_demo.py: unknown stage {name!r}; expected one of "
                         f"{tuple(STAGES)}")
    c = unclip.get_config(f"tiny,{STAGES[name]}")
    c.variant = "demo"
    c.clip.embed_dim, c.clip.text_width = CLIP["embed_dim"], CLIP["text_width"]
    c.text.max_length, c.text.vocab_size = CLIP["max_length"], CLIP["vocab_size"]
    if name == "clip":
        c.model = ml_collections.ConfigDict(CLIP)
        c.image_size = 32
        c.train.batch_size = 64  # contrastive: more negatives per step
        c.train.steps = 1000
        c.train.learning_rate = 1e-3
    elif name == "prior":
        c.model = ml_collections.ConfigDict(dict(
            embed_dim=CLIP["embed_dim"], text_dim=CLIP["text_width"],
            max_text_len=CLIP["max_length"], width=128, layers=4, heads=4))
        c.image_size = 32  # the images CLIP embeds
        c.train.batch_size = 64
        c.train.steps = 1200
        c.train.learning_rate = 1e-3
        c.sample.steps = 64  # the paper's strided 64 steps
    elif name == "decoder":
        # The Imagen demo base stage's U-Net (configs/imagen_demo.py), reading CLIP.
        c.image_size = 32
        c.model.channels = (32, 32, 64)
        c.model.num_res_blocks = (1, 1, 1)
        c.model.strides = (1, 2, 2)
        c.model.attention = ("none", "self_cross", "self_cross")
        c.model.text_dim = CLIP["text_width"]
        c.train.batch_size = 16
        c.train.steps = 1400
        c.train.learning_rate = 1e-3
        c.sample.steps = 25
        c.sample.sampler = "ddim"
        c.sample.guidance = 3.0
    else:
        c.image_size, c.lowres_size = 64, 32
        c.model.channels = (8, 16, 32, 64)
        c.model.num_res_blocks = (1, 1, 1, 1)
        c.model.strides = (1, 2, 2, 2)
        c.model.attention = ("none",) * 4
        c.diffusion.train_crop = 32  # a quarter of the area (half the side) of 64 px
        c.train.batch_size = 16
        c.train.steps = 700
        c.train.learning_rate = 2e-3
        c.sample.steps = 25
    if name in ("decoder", "upsampler"):
        c.model.attention_head_dim = 32
        c.model.cond_dim = 128
        # As the Imagen demo: v-prediction with min-SNR-5 weights.
        c.diffusion.prediction = "v"
        c.diffusion.min_snr_gamma = 5.0
    cpu_demo_training(c)
    return c
