r"""What the demo's frozen random T5 passes on about a caption's words and their order.

    python benchmarks/text_tokens.py            # -> docs/text_tokens.{md,json}

The U-Net reads text through cross-attention and an attention pool, both of which
see the encoder's output as a *set* of token vectors: any order information must
already be inside the vectors. A pretrained T5 writes context into every token;
a random one (the offline demo's encoder, configs/imagen_demo.py) barely does. This
measures, on the shapes captions, with the demo's vocabulary and encoder:

  identity   do colour and shape words stay distinguishable after the layers?
             nearest-word accuracy of each output vector against the words' mean
             outputs, and the cosine between two different words (raw embeddings
             vs encoder outputs);
  binding    can a set-reader tell "a red circle above a blue square" from "a blue
             circle above a red square" (colours swapped between the objects) or
             from "a blue square above a red circle" (objects swapped)? The
             optimal one-to-one matching distance between the two captions' token
             sets, relative to the same distance for captions that differ in one
             colour word (which every encoder must separate). 0 = identical sets.
  positions  the same, after adding the U-Net's text position embedding (a fixed
             sinusoid of the token index, `UNetConfig.text_positions`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def matching_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance of the optimal one-to-one matching of two equal-size vector sets."""
    from scipy.optimize import linear_sum_assignment

    cost = np.linalg.norm(a[:, None] - b[None], axis=-1)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/text_tokens")
    parser.add_argument("--num_captions", type=int, default=3000)
    args = parser.parse_args(argv)

    import jax

    from configs import imagen_demo
    from imagen_jax.data.shapes.captions import caption_text
    from imagen_jax.data.shapes.examples import example_scene
    from imagen_jax.data.shapes.scene import COLORS, SHAPES, SceneObject
    from imagen_jax.nn.embeddings import text_position_embedding
    from imagen_jax.text.from_config import text_encoder_from_config

    config = imagen_demo.get_config("base")
    captions = [example_scene("train", i).caption for i in range(args.num_captions)]
    with tempfile.TemporaryDirectory() as workdir:
        encoder = text_encoder_from_config(config.text, workdir, lambda: captions)
        tokenizer = encoder.tokenizer

        def encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            out, mask = encoder(texts)
            ids = np.asarray(tokenizer.encode(texts).ids)
            return np.asarray(out, np.float64), np.asarray(mask, bool), ids

        raw_table = np.asarray(encoder.params["token_embedder"]["embedding"], np.float64)
        out, mask, ids = encode(captions)

    words = list(COLORS) + list(SHAPES)
    word_ids = {}
    for w in words:
        batch = tokenizer.encode([w])
        pieces = [int(p) for p, m in zip(batch.ids[0], batch.mask[0]) if m and p != 1]
        word_ids[w] = pieces[-1]  # the piece that carries the word ("▁red" or "red")

    def identity(vectors_of: dict[str, np.ndarray]) -> dict:
        means = {w: v.mean(0) for w, v in vectors_of.items()}
        names = list(means)
        centres = np.stack([means[w] for w in names])
        hits = total = 0
        for k, w in enumerate(names):
            d = np.linalg.norm(vectors_of[w][:, None] - centres[None], axis=-1)
            hits += int((d.argmin(1) == k).sum())
            total += len(d)
        unit = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        cos = unit @ unit.T
        off = cos[~np.eye(len(names), dtype=bool)]
        spread = np.mean([np.linalg.norm(v - means[w], axis=1).mean() / np.linalg.norm(means[w])
                          for w, v in vectors_of.items()])
        return {"nearest_word_accuracy": hits / total, "mean_cos_between_words": float(off.mean()),
                "max_cos_between_words": float(off.max()),
                "context_spread": float(spread)}

    raw_vectors = {w: raw_table[word_ids[w]][None] for w in words}
    t5_vectors = {}
    for w in words:
        where = (ids == word_ids[w]) & mask
        t5_vectors[w] = out[where]

    # Binding pairs: every relation caption over two different colours and shapes.
    def caption(c1, s1, rel, c2, s2):
        return caption_text("relation", (SceneObject(s1, c1, (0.5, 0.5), 0.2),
                                          SceneObject(s2, c2, (0.5, 0.5), 0.2)), rel)

    pairs = {"colours swapped between objects": [], "objects swapped": [],
             "one colour word changed (reference)": []}
    colours = list(COLORS)
    for (c1, c2), (s1, s2) in itertools.product(itertools.permutations(colours[:4], 2),
                                                itertools.permutations(SHAPES, 2)):
        base = caption(c1, s1, "above", c2, s2)
        pairs["colours swapped between objects"].append((base, caption(c2, s1, "above", c1, s2)))
        pairs["objects swapped"].append((base, caption(c2, s2, "above", c1, s1)))
        other = next(c for c in colours if c not in (c1, c2))
        pairs["one colour word changed (reference)"].append((base, caption(other, s1, "above",
                                                                           c2, s2)))

    def set_distances(with_positions: bool, raw: bool) -> dict[str, float]:
        result = {}
        for name, items in pairs.items():
            left, right = [p[0] for p in items], [p[1] for p in items]
            lo, lm, li = encode(left)
            ro, rm, ri = encode(right)
            if raw:
                lo, ro = raw_table[li], raw_table[ri]
            if with_positions:
                pos = np.asarray(text_position_embedding(lo.shape[1], lo.shape[2]), np.float64)
                lo, ro = lo + pos, ro + pos
            result[name] = float(np.mean([matching_distance(lo[k][lm[k]], ro[k][rm[k]])
                                          for k in range(len(items))]))
        ref = result["one colour word changed (reference)"]
        return {name: {"distance": d, "relative_to_reference": d / ref}
                for name, d in result.items()}

    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "versions": f"python {platform.python_version()}, jax {jax.__version__}",
        "num_captions": args.num_captions,
        "encoder": config.text.random_t5.to_dict(),
        "identity": {"raw embeddings": identity(raw_vectors),
                     "encoder outputs": identity(t5_vectors)},
        "binding": {"raw embeddings": set_distances(False, True),
                    "encoder outputs": set_distances(False, False),
                    "encoder outputs + positions": set_distances(True, False)},
    }
    write_report(report, args.out)
    return report


def write_report(report: dict, out: str) -> None:
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    lines = ["# What the demo's random frozen T5 keeps of a caption",
             "", f"Measured by `python benchmarks/text_tokens.py` on {report['machine']}; "
             f"{report['versions']}; {report['num_captions']} training captions, the demo's "
             "vocabulary and encoder (configs/imagen_demo.py).", "",
             "## Word identity (the 6 colour and 3 shape words)", "",
             "| vectors | nearest-word accuracy | mean cos between words | max cos | "
             "spread across contexts |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, r in report["identity"].items():
        lines.append(f"| {name} | {r['nearest_word_accuracy']:.1%} | "
                     f"{r['mean_cos_between_words']:.3f} | {r['max_cos_between_words']:.3f} | "
                     f"{r['context_spread']:.3f} |")
    lines += ["", "## Can a set-reader (cross-attention, attention pool) tell the captions apart?",
              "", "Optimal one-to-one matching distance between the token vectors of two "
              "relation captions, relative to captions that differ in one colour word.", "",
              "| vectors | colours swapped between objects | objects swapped | one colour word "
              "changed |", "| --- | ---: | ---: | ---: |"]
    for name, r in report["binding"].items():
        cells = " | ".join(f"{r[k]['relative_to_reference']:.3f}" for k in (
            "colours swapped between objects", "objects swapped",
            "one colour word changed (reference)"))
        lines.append(f"| {name} | {cells} |")
    with open(out + ".md", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    main()
