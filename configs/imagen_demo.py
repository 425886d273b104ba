r"""The offline demo cascade: a 32 px base stage and a 32 -> 64 super-resolution stage
trained on `shapes_captions` on a 2-core CPU in minutes (see imagen_jax/demo.py).

    python -m imagen_jax.demo --workdir=runs/demo                 # both stages + samples
    python -m imagen_jax.main --config=configs/imagen_demo.py:base --workdir=runs/demo/base

ARG: 'base' or 'sr'. Each starts from configs/imagen.py's tiny variant (same code
paths as the paper configs) and sizes the model and the schedule for the CPU
budget. The choices, measured in the README's demo section:
  - base at 32 px with 32 channels at full resolution: denoising needs
    full-resolution capacity; a first level that downsamples (Efficient U-Net
    style) trained to a much higher loss per step. Wider inner levels cost more
    FLOPs than they returned within the budget;
  - v-prediction and min-SNR-5 weighting: with the paper's eps loss, samples
    after ~6 minutes were still speckled noise; with v they show clean
    backgrounds and the prompted colours;
  - batch 16: per image the CPU is as fast as at 64, and twice the updates help;
  - learning rate 1e-3 (Adam, small models; 2e-3 for the SR stage, whose loss
    sat on a plateau for the first ~150 steps), short warmup, constant schedule so
    that stopping early (or resuming for longer) needs no new schedule;
  - EMA decay 0.995: a run of a few thousand steps needs a short average;
  - text positions added in the U-Net (model.text_positions): the offline random T5
    leaves its outputs nearly order-free (docs/text_tokens.md: two relation captions
    with their colours swapped are 0.23 of a one-word change apart as token sets, 0.48
    with positions), and cross-attention reads text as a set.
"""

from __future__ import annotations

import ml_collections

from configs import imagen
from configs.common import cpu_demo_training

STAGES = {"base": "base64", "sr": "sr256"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name = (arg or "base").strip()
    if name not in STAGES:
        raise ValueError(f"configs/imagen_demo.py: unknown stage {name!r}; expected one of "
                         f"{tuple(STAGES)}")
    c = imagen.get_config(f"tiny,{STAGES[name]}")
    c.variant = "demo"
    c.model.num_res_blocks = (1, 1, 1)
    c.model.strides = (1, 2, 2)
    if name == "base":
        c.image_size, c.lowres_size = 32, 0
        c.model.channels = (32, 32, 64)
        c.model.attention = ("none", "self_cross", "self_cross")
        # docs/learning_curve.md (60 minutes of this stage on 2 cores): single-object
        # colour+shape 92% at 2,400-3,000 steps, >= 96% from 5,400 on; count and
        # relation prompts plateau well below their targets whatever the length. 3,000
        # steps: 9.7 min on the slower of the 2-core machines measured (the whole demo
        # 17 min there, README), ~5 min on the faster one.
        c.train.steps = 3000
        # Static thresholding at w = 8 (docs/sampler_sweep.md): dynamic thresholding
        # divides a guided x0 by its 99.5th-percentile |x0|, which here is set by the
        # overshooting object pixels, so the light background (0.88 in [-1, 1]) is
        # darkened with it (median pixel 0.76 instead of 0.87) and shapes lose their
        # edges; static clipping keeps the background and lets w rise.
        c.sample.threshold = "static"
        c.sample.guidance = 8.0
        c.log.title = "base stage, 32 px"  # the progress bar's name (registry: imagen.base64)
    else:
        # Four levels with few channels at 64 and 32 px: 2.2x the images/s of
        # (16, 32, 64) on (64, 32, 16) px, and at this budget better samples (off-
        # palette pixels 28% instead of 87%).
        c.image_size, c.lowres_size = 64, 32
        c.model.channels = (8, 16, 32, 64)
        c.model.num_res_blocks = (1, 1, 1, 1)
        c.model.strides = (1, 2, 2, 2)
        c.model.attention = ("none", "none", "none", "cross")
        c.train.steps = 1000
        c.sample.guidance = 3.0
        c.sample.threshold = "static"  # dynamic tints the background here (as above)
        # Stochastic DDIM (eta 1) with 50 steps: deterministic DDIM's 25 steps left the
        # undertrained SR stage's speckle and tints in every image, and ShapesBench's
        # shape detector read the ragged edges as other shapes. On the same trained
        # cascade (seed 0, base 3,600 steps) single colour+shape after SR: 38.5% (eta
        # 0, 25 steps), 65.4% (eta 1, 25), 88.5% (eta 1, 50) against 92.3% for the
        # base stage's own samples.
        c.sample.eta = 1.0
        # No noise-conditioning augmentation (Imagen's a ~ U(0, 0.5) elsewhere): fed the
        # same base samples, the SR stage trained with it turned 24% of the right
        # single-object images wrong, the one trained without it 4%; its output sat
        # twice as far from its low-res input, with no fewer artefacts
        # (docs/ablations.md, table 3).
        c.diffusion.max_aug_level = 0.0
        c.log.title = "super-resolution 32 -> 64 px"
    c.train.batch_size = 16
    # v-prediction with min-SNR-5 loss weights (Hang et al. 2023) instead of the paper's
    # eps loss: at this budget eps-prediction's samples were still speckled noise.
    c.diffusion.prediction = "v"
    c.diffusion.min_snr_gamma = 5.0
    c.model.attention_head_dim = 32
    c.model.cond_dim = 128
    c.model.text_positions = True
    cpu_demo_training(c)
    c.train.learning_rate = 1e-3 if name == "base" else 2e-3
    c.sample.steps = 25 if name == "base" else 50
    return c
