r"""Do the edits follow the text? Inpainting with the Imagen demo's base stage, and
unCLIP text diffs from the inverted latent, scored by ShapesBench's colour check.

    python -m imagen_jax.demo --workdir=runs/demo && python -m unclip_jax.demo
    python benchmarks/editing.py --demo_dir=runs/demo --unclip_dir=runs/unclip_demo \
        --out=docs/editing.md

Inpainting: a blank canvas (the shapes set's background) whose centre half is masked
(generate) is inpainted with a prompt, and with the empty prompt (no text); the
colour check asks whether the largest object has the prompt's colour. Text diffs: the
unCLIP decoder's images of `--source` captions are inverted (DDIM) and decoded along
theta toward each `--target` caption with x_T fixed; the colour check is the
target's. Every image count and seed is printed with its result.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_DEMO_DIR = flags.DEFINE_string("demo_dir", "runs/demo", "imagen_jax.demo's workdir.")
_UNCLIP_DIR = flags.DEFINE_string("unclip_dir", "runs/unclip_demo", "unclip_jax.demo's.")
_OUT = flags.DEFINE_string("out", "docs/editing.md", "Markdown (JSON next to it).")
_N = flags.DEFINE_integer("n", 64, "Inpainted images per row.")
_N_DIFFS = flags.DEFINE_integer("n_diffs", 24, "Images inverted and edited per text diff.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")

INPAINT_PROMPTS = ("a red circle", "a blue square")
# (source caption drawn and inverted, target caption): a colour change each.
TEXT_DIFFS = (("a red circle", "a blue circle"), ("a green square", "a yellow square"))
THETAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
BACKGROUND = 240 / 127.5 - 1.0  # the shapes set's background level in [-1, 1]


def _colour_rate(images, prompt: str) -> float:
    import numpy as np

    from imagen_jax.evaluate.shapesbench import score_image
    from imagen_jax.image_io import to_uint8

    images = np.asarray(images)
    if images.shape[1] < 64:  # the scorer is validated at 64 px
        factor = 64 // images.shape[1]
        images = images.repeat(factor, 1).repeat(factor, 2)
    return float(np.mean([score_image(im, prompt)["colour"] for im in to_uint8(images)]))


def inpainting(demo_dir: str, n: int, seed: int) -> list[dict]:
    import jax
    import numpy as np

    from imagen_jax.sample_cascade import Overrides, load_stage

    base = load_stage(os.path.join(demo_dir, "base"), Overrides())
    s = base.stage.image_size
    canvas = np.full((n, s, s, 3), BACKGROUND, np.float32)
    mask = np.zeros((n, s, s), np.float32)
    mask[:, s // 4: 3 * s // 4, s // 4: 3 * s // 4] = 1.0
    rows = []
    for prompt in INPAINT_PROMPTS:
        for text in (prompt, ""):
            emb, emb_mask = base.text_encoder([text] * n)
            images = base.stage.sample(base.params, emb, emb_mask, jax.random.PRNGKey(seed),
                                       settings=base.sampling.settings,
                                       guidance=base.sampling.guidance,
                                       inpaint_image=canvas, inpaint_mask=mask)
            rows.append({"asked": prompt, "prompt given": text or "(none)", "n": n,
                         "colour right": _colour_rate(images, prompt)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def text_diffs(unclip_dir: str, n: int, seed: int) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from unclip_jax.pipeline import load_pipeline

    pipe = load_pipeline(os.path.join(unclip_dir, "decoder"),
                         prior=os.path.join(unclip_dir, "prior"))
    rows = []
    for source, target in TEXT_DIFFS:
        drawn = pipe.generate([source] * n, jax.random.PRNGKey(seed))[0]
        rates = {t: [] for t in THETAS}
        for i in range(n):
            outputs, _ = pipe.text_diff(drawn[i], source, target, THETAS,
                                        jax.random.fold_in(jax.random.PRNGKey(seed), i))
            for t, image in zip(THETAS, np.asarray(outputs[0])):
                rates[t].append(image)
        row = {"source": source, "target": target, "n": n,
               "source colour in the drawn images": _colour_rate(drawn, source),
               "target colour by theta": {str(t): _colour_rate(jnp.stack(rates[t]), target)
                                          for t in THETAS}}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def markdown(inpaint: list[dict], diffs: list[dict], header: str) -> str:
    lines = [header, "", "Inpainting (the centre half of a blank canvas, Imagen demo base "
             "stage, its sampling config):", "",
             "| asked (colour checked) | prompt given | images | colour right |",
             "| --- | --- | ---: | ---: |"]
    lines += [f"| {r['asked']} | {r['prompt given']} | {r['n']} | "
              f"{100 * r['colour right']:.1f}% |" for r in inpaint]
    lines += ["", "Text diffs from the inverted latent (unCLIP demo decoder, x_T fixed; "
              "the target caption's colour check):", "",
              "| source -> target | images | source colour drawn | "
              + " | ".join(f"theta {t}" for t in THETAS) + " |",
              "| --- | ---: | ---: | " + " | ".join("---:" for _ in THETAS) + " |"]
    for r in diffs:
        lines.append(f"| {r['source']} -> {r['target']} | {r['n']} | "
                     f"{100 * r['source colour in the drawn images']:.1f}% | "
                     + " | ".join(f"{100 * v:.1f}%" for v in r["target colour by theta"].values())
                     + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    import jax

    start = time.perf_counter()
    inpaint = inpainting(_DEMO_DIR.value, _N.value, _SEED.value)
    diffs = text_diffs(_UNCLIP_DIR.value, _N_DIFFS.value, _SEED.value)
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs; python "
               f"{platform.python_version()}, jax {jax.__version__} "
               f"({jax.devices()[0].platform})")
    header = ("# Edits that follow the text (benchmarks/editing.py)\n\n"
              f"Measured by `python benchmarks/editing.py --demo_dir={_DEMO_DIR.value} "
              f"--unclip_dir={_UNCLIP_DIR.value} --n={_N.value} --n_diffs={_N_DIFFS.value}` on "
              f"{machine}; seed "
              f"{_SEED.value}, {time.perf_counter() - start:.0f} s.")
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, "w", encoding="utf-8") as f:
        f.write(markdown(inpaint, diffs, header))
    with open(os.path.splitext(_OUT.value)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"machine": machine, "inpainting": inpaint, "text_diffs": diffs}, f,
                  indent=1)
    print(markdown(inpaint, diffs, header))


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()
    app.run(main)
