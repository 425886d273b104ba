r"""unCLIP from the command line: generate from text, and the latent operations.
Every stage is a training workdir of `imagen_jax.main`; PNG strips go to --out_dir.

    python -m unclip_jax.generate sample --decoder=RUNS/decoder --prior=RUNS/prior \
        --upsampler=RUNS/up256 --prompts="one red circle" --prompts="two blue squares"
    python -m unclip_jax.generate variations --decoder=RUNS/decoder --images=a.png --num=4
    python -m unclip_jax.generate invert --decoder=RUNS/decoder --images=a.png --steps=100
    python -m unclip_jax.generate interpolate --decoder=RUNS/decoder \
        --images=a.png --images=b.png --frames=8 --noise=fixed
    python -m unclip_jax.generate textdiff --decoder=RUNS/decoder --images=a.png \
        --source="a red circle" --target="a blue circle" --thetas=0,0.1,0.2,0.3,0.4,0.5
    python -m unclip_jax.generate sample --decoder=RUNS/decoder --prior=RUNS/prior \
        --prompts="one red circle" --negative_prompt="a blue square"
    python -m unclip_jax.generate upsample --decoder=RUNS/decoder --upsampler=RUNS/up256 \
        --images=small.png --aug_level=0.1

Variations and text diffs decode the input image's DDIM-inverted x_T, as the paper
does (--latent=inverted; variations with DDIM --eta > 0); --latent=fresh decodes from
fresh noise instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax import image_io
from imagen_jax.checks import check_output_dir

MODES = ("sample", "variations", "invert", "interpolate", "textdiff", "upsample")

@dataclasses.dataclass(frozen=True)
class GenerateOptions:
    """What one `run` needs: the stage workdirs, the inputs of its mode, sampling
    settings and where the PNGs go (the CLI flags of the same names)."""
    decoder: str
    prior: str | None = None
    upsamplers: tuple[str, ...] = ()
    out_dir: str = "outputs/unclip"
    prompts: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    num: int = 4
    frames: int = 8
    noise: str = "fixed"
    source: str | None = None
    target: str | None = None
    thetas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    negative_prompt: str | None = None
    latent: str = "inverted"  # variations' and text diffs' x_T: 'inverted' or 'fresh'
    eta: float = 0.5  # variations from the inverted latent: DDIM eta
    aug_level: float = 0.0  # upsample: noise-conditioning augmentation


def _pipeline(options: GenerateOptions):
    from unclip_jax.pipeline import load_pipeline
    if not options.decoder:
        raise ValueError("--decoder is required")
    return load_pipeline(options.decoder, prior=options.prior,
                         upsamplers=options.upsamplers, decoder_steps=options.steps,
                         decoder_guidance=options.guidance)


def _images(options: GenerateOptions, pipe, count: int | None = None) -> jnp.ndarray:
    paths = options.images
    if not paths or (count is not None and len(paths) != count):
        raise ValueError(f"--images: expected {count or 'at least one'} image(s), got "
                         f"{len(paths)}")
    size = pipe.decoder.stage.image_size
    return jnp.asarray(np.stack([image_io.load_image(p, size) for p in paths]))


def _write(options: GenerateOptions, outputs, labels: list[str], name: str) -> list[str]:
    paths = []
    for images in outputs:
        side = images.shape[1]
        path = os.path.join(options.out_dir, f"{name}_{side}.png")
        paths.append(image_io.save_labelled_grid(np.asarray(images), labels, path,
                                                 columns=len(labels)))
    return paths


def run(mode: str, options: GenerateOptions) -> list[str]:
    """Runs one mode; returns the written PNG paths."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    # Where the PNGs go, checked before any stage is loaded (not found out after sampling).
    check_output_dir(options.out_dir, "--out_dir")
    if mode == "sample":
        check_output_dir(os.path.join(options.out_dir, "images"),
                         "the images folder under --out_dir")
    pipe = _pipeline(options)
    key = jax.random.PRNGKey(options.seed)
    if mode == "sample":
        if not options.prompts:
            raise ValueError("sample needs --prompts")
        negative = (None if options.negative_prompt is None
                    else [options.negative_prompt] * len(options.prompts))
        outputs = pipe.generate(list(options.prompts), key, negative_prompts=negative)
        from imagen_jax.sample_cascade import write_captioned_pngs
        write_captioned_pngs(np.asarray(outputs[-1]), options.prompts,
                             os.path.join(options.out_dir, "images"))
        return _write(options, outputs, list(options.prompts), "sample")
    if mode == "variations":
        images = _images(options, pipe)
        outputs = pipe.variations(images, options.num, key, noise=options.latent,
                                  eta=options.eta, steps=options.steps)
        labels = [f"{os.path.basename(p)} #{i}" for p in options.images
                  for i in range(options.num)]
        return _write(options, outputs, labels, "variations")
    if mode == "invert":
        images = _images(options, pipe)
        x_t, z_i = pipe.invert(images, options.steps)
        back = pipe.reconstruct(x_t, z_i, options.steps)
        err = float(jnp.mean(jnp.abs(back - images)))
        np.savez(os.path.join(options.out_dir, "inversion.npz"), x_t=np.asarray(x_t),
                 z_i=np.asarray(z_i))
        names = [os.path.basename(p) for p in options.images]
        paths = _write(options, [jnp.concatenate([images, back])],
                       names + [f"{n} (reconstructed)" for n in names], "invert")
        print(f"mean absolute reconstruction error {err:.4f} (pixels in [-1, 1])")
        return paths
    if mode == "interpolate":
        a, b = _images(options, pipe, 2)
        outputs = pipe.interpolate(a, b, options.frames, key, noise=options.noise)
        ts = np.linspace(0, 1, options.frames)
        return _write(options, outputs, [f"t={t:.2f}" for t in ts], "interpolate")
    if mode == "textdiff":
        if not options.source or not options.target:
            raise ValueError("textdiff needs --source and --target captions")
        image = _images(options, pipe, 1)[0]
        thetas = [float(t) for t in options.thetas]
        outputs, edited = pipe.text_diff(image, options.source, options.target, thetas, key,
                                         noise=options.latent, steps=options.steps)
        z_t, _, _ = pipe.clip.encode_prompts([options.target])
        cos = np.asarray(edited @ (z_t[0] / jnp.linalg.norm(z_t[0])))
        with open(os.path.join(options.out_dir, "textdiff.json"), "w", encoding="utf-8") as f:
            json.dump({"thetas": thetas, "cosine_to_target": cos.tolist()}, f, indent=1)
        return _write(options, outputs, [f"theta={t:.2f}" for t in thetas], "textdiff")
    if mode == "upsample":
        if not pipe.upsamplers:
            raise ValueError("upsample needs at least one --upsampler")
        if not options.images:
            raise ValueError("upsample needs --images")
        # At their own size: the upsamplers are fully convolutional.
        images = jnp.asarray(np.stack([image_io.load_image(p) for p in options.images]))
        outputs = pipe.upsample(images, key, aug_level=options.aug_level)
        return _write(options, outputs, [os.path.basename(p) for p in options.images],
                      "upsample")
    raise AssertionError(mode)  # unreachable: mode was checked against MODES


def main(argv):
    if len(argv) != 2 or argv[1] not in MODES:
        raise app.UsageError(f"give one mode: {' | '.join(MODES)}")
    f = flags.FLAGS
    try:
        options = GenerateOptions(
            decoder=f.decoder, prior=f.prior, upsamplers=tuple(f.upsampler),
            out_dir=f.out_dir, prompts=tuple(f.prompts), images=tuple(f.images), num=f.num,
            frames=f.frames, noise=f.noise, source=f.source, target=f.target,
            thetas=tuple(float(t) for t in f.thetas), steps=f.steps, guidance=f.guidance,
            seed=f.seed, negative_prompt=f.negative_prompt, latent=f.latent, eta=f.eta,
            aug_level=f.aug_level)
        paths = run(argv[1], options)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print("wrote " + ", ".join(paths))


def _define_flags() -> None:
    """CLI flags, defined only when run as a program (tests import this module beside
    others whose flags share names)."""
    flags.DEFINE_string("decoder", None, "unclip.decoder64 run directory.")
    flags.DEFINE_string("prior", None, "unclip.prior run directory (for 'sample').")
    flags.DEFINE_multi_string("upsampler", [], "Upsampler runs, 256 then 1024.")
    flags.DEFINE_string("out_dir", "outputs/unclip", "Where the PNGs go.")
    flags.DEFINE_multi_string("prompts", [], "Captions for 'sample'.")
    flags.DEFINE_multi_string("images", [], "Input images (PNG/JPEG).")
    flags.DEFINE_integer("num", 4, "Variations per image.")
    flags.DEFINE_integer("frames", 8, "Interpolation frames.")
    flags.DEFINE_enum("noise", "fixed", ["fixed", "slerp", "fresh"],
                      "Interpolation: x_T fixed, slerped, or fresh per frame.")
    flags.DEFINE_string("source", None, "textdiff: caption describing the image now.")
    flags.DEFINE_string("target", None, "textdiff: caption to move toward.")
    flags.DEFINE_list("thetas", ["0", "0.1", "0.2", "0.3", "0.4", "0.5"],
                      "textdiff: slerp amounts toward the text diff (paper: up to 0.25-0.5).")
    flags.DEFINE_integer("steps", None, "Decoder sampling / inversion steps.")
    flags.DEFINE_float("guidance", None, "Decoder guidance (default: its config).")
    flags.DEFINE_integer("seed", 0, "PRNG seed.")
    flags.DEFINE_string("negative_prompt", None, "sample: guide the prior and the decoder "
                        "away from this prompt instead of from no prompt.")
    flags.DEFINE_enum("latent", "inverted", ["inverted", "fresh"], "variations / textdiff: "
                      "decode from the image's DDIM-inverted x_T (the paper) or fresh noise.")
    flags.DEFINE_float("eta", 0.5, "variations from the inverted x_T: DDIM eta in (0, 1].")
    flags.DEFINE_float("aug_level", 0.0, "upsample: noise-conditioning augmentation level.")


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    _define_flags()
    app.run(main)
