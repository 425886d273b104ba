"""Config sections every stage shares: data, mesh, training loop, checkpoints, logging.

Stage-family files (configs/imagen.py, configs/unclip.py) call `add_common`
and then set what is specific to their stages.
"""

from __future__ import annotations

import ml_collections


def add_common(c: ml_collections.ConfigDict, *, paper: bool) -> ml_collections.ConfigDict:
    c.data = ml_collections.ConfigDict()
    # 'shapes_captions' (offline synthetic set, generated on first use) or
    # 'image_text_folder' (data.source_dir: your images with captions).
    c.data.name = "shapes_captions"
    c.data.data_dir = ""  # TFDS data dir; '' = WORKDIR/../tensorflow_datasets
    c.data.source_dir = ""  # image_text_folder only
    c.data.num_train = 20_000 if paper else 2_000  # shapes_captions only
    c.data.num_test = 1_000 if paper else 64
    c.data.split = "train"
    c.data.shuffle_buffer = 10_000 if paper else 1_000
    # Off: a flip turns "a circle to the left of a square" into a false caption.
    c.data.random_flip = False
    c.data.embedding_cache = ""  # directory written by imagen_jax.data.embed_captions

    # Mesh axes (data, fsdp, tensor); one size may be -1 (= the remaining devices).
    # data-parallel: data=-1. FSDP: fsdp=-1. Tensor-parallel: tensor=N. Only this
    # (and optionally logical_rules) changes between the three.
    # Paper configs: FSDP over every chip, the layout the TPU compiler proved fits and
    # ranked fastest per chip (docs/tpu_compile.md: the 2B base step at 8 per chip
    # peaks at 10.75 GiB of a v4's 32, where data parallel would keep a full 17 GiB copy
    # of the U-Net's state plus 8.9 GiB of T5-XXL on every chip; for the prior FSDP
    # beats data, data x fsdp, fsdp x tensor and tensor parallel on 8 chips).
    c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1} if paper else
                                       {"data": -1, "fsdp": 1, "tensor": 1})
    c.logical_rules = ()  # () = imagen_jax.parallel's default table

    c.train = ml_collections.ConfigDict()
    c.train.optimizer = "adamw"
    c.train.learning_rate = 1e-4
    c.train.schedule = "cosine"  # or 'constant' (after warmup)
    c.train.final_lr_fraction = 0.0
    c.train.warmup_steps = 10_000 if paper else 10
    c.train.b1 = 0.9
    c.train.b2 = 0.999
    c.train.eps = 1e-8
    c.train.weight_decay = 0.0
    c.train.grad_clip_norm = 1.0
    c.train.grad_accum_steps = 1
    c.train.ema_decay = 0.9999 if paper else 0.99
    c.train.batch_size = 2048 if paper else 8
    c.train.steps = 2_500_000 if paper else 100
    c.train.nonfinite = "error"  # or 'skip': drop the update and count it
    c.train.init_from = ""  # another run's WORKDIR: start from its (EMA) weights

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 5_000 if paper else 50
    c.checkpoint.keep = 3
    c.checkpoint.async_save = True
    # A step that fails to read is read again read_attempts times in all, waiting
    # read_retry_s, then twice that, ... (a transient filesystem error is not damage).
    c.checkpoint.read_attempts = 3
    c.checkpoint.read_retry_s = 2.0

    c.log = ml_collections.ConfigDict()
    c.log.every_steps = 100 if paper else 10
    c.log.sample_every_steps = 10_000 if paper else 0  # 0 = never during training
    c.log.num_samples = 4
    c.log.progress_bar = True  # tqdm on the main process (steps, loss, images/s, ETA)
    c.log.title = ""  # the progress bar's name; "" = the stage's registry name
    c.seed = 0
    return c


def cpu_demo_training(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """What the CPU demo stacks (imagen_demo, unclip_demo) share: the shapes set at the
    stage's resolution, Adam at a constant rate after a short warmup (so stopping
    early or resuming for longer needs no new schedule), a short EMA for a run of a
    few thousand steps, and every checkpoint kept (a few MB each; the learning-curve
    benchmark reads them)."""
    c.data.resolution = c.image_size
    c.data.num_train = 5000
    c.data.num_test = 256
    c.train.optimizer = "adam"
    c.train.schedule = "constant"
    c.train.warmup_steps = 50
    c.train.ema_decay = 0.995
    c.checkpoint.every_steps = 200
    c.checkpoint.keep = 100
    c.log.every_steps = 50
    return c
