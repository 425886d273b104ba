r"""The backward pass's candidates for a faster formulation, measured per CPU backend
setting and per shape: what #24 asked to measure again before changing the model.

    python benchmarks/backward_variants.py --out=docs/backward_variants.md

Each backend setting runs in its own process (XLA reads XLA_FLAGS once):
  eigen          convolutions out of YNNPACK (the project's default, imagen_jax/xla_flags.py)
  ynnpack        convolutions in YNNPACK (jaxlib's default)
  eigen-dots     convolutions and dots both out of YNNPACK
For each, medians of --iters runs (ms) of
  1. one 3x3 convolution at the matched base U-Net's shapes: forward, input gradient,
     kernel gradient as XLA writes it, and the kernel gradient as the matmul it is
     (im2col: the 9 shifted inputs side by side, one [B*H*W, 9*C]^T x [B*H*W, C']
     product; and 9 products, one per kernel tap);
  2. one attention layer's forward + backward at the U-Net's shapes: `attend` as it is
     (autodiff, query blocks recomputed in the backward once the scores pass 32 MB), a
     hand-written closed-form backward (custom_vjp keeping the output and the
     log-normaliser), and query blocks kept rather than recomputed;
  3. the matched U-Net's whole training step (benchmarks/vs_imagen_pytorch.py's Ours).
Every variant's result is checked against the reference before it is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.step_profile import median_ms  # noqa: E402

BACKENDS = {
    "eigen": "-individual_convolution",
    "ynnpack": "+individual_convolution",
    "eigen-dots": "-individual_convolution,-individual_dot",
}
# (batch, side, channels in, channels out): the 32 px batch 8 and 64 px batch 4 models
CONV_SHAPES = ((8, 32, 64, 64), (8, 16, 128, 128), (8, 8, 256, 256),
               (4, 64, 64, 64), (4, 32, 128, 128), (4, 16, 256, 256))
# (batch, queries, keys, heads), head width 32: the attention levels of both models
ATTENTION_SHAPES = ((8, 256, 273, 8), (8, 64, 81, 16), (4, 1024, 1041, 8), (4, 256, 273, 16))


def _conv_variants():
    import jax
    import jax.numpy as jnp
    from jax import lax

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def shifted(x, w):
        kh, kw = w.shape[:2]
        h, width = x.shape[1:3]
        xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
        return [xp[:, i:i + h, j:j + width, :] for i in range(kh) for j in range(kw)]

    def im2col(x, w, g):
        cols = jnp.concatenate(shifted(x, w), axis=-1).reshape(-1, w.shape[0] * w.shape[1]
                                                               * x.shape[-1])
        d = lax.dot_general(cols, g.reshape(-1, g.shape[-1]), (((0,), (0,)), ((), ())))
        return d.reshape(w.shape)

    def nine_dots(x, w, g):
        g2 = g.reshape(-1, g.shape[-1])
        taps = [lax.dot_general(s.reshape(-1, x.shape[-1]), g2, (((0,), (0,)), ((), ())))
                for s in shifted(x, w)]
        return jnp.stack(taps).reshape(w.shape)

    return {
        "forward": lambda x, w, g: conv(x, w),
        "input gradient": lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0],
        "kernel gradient (XLA)": lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0],
        "kernel gradient (im2col matmul)": im2col,
        "kernel gradient (9 matmuls)": nine_dots,
    }


def _closed_form_attention():
    """softmax attention with its gradient written out (custom_vjp): residuals are the
    output and the log-normaliser; the backward recomputes the probabilities."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    def scores(qh, kh, bias):
        s = jnp.einsum("bntd,bnsd->bnts", qh, kh, preferred_element_type=jnp.float32)
        return s / np.sqrt(qh.shape[-1]).astype(np.float32) + bias[:, None, None, :]

    def fwd(q, k, v, bias):
        qh, kh, vh = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))
        s = scores(qh, kh, bias)
        top = s.max(axis=-1, keepdims=True)
        weights = jnp.exp(s - top)
        total = weights.sum(axis=-1, keepdims=True)
        out = jnp.einsum("bnts,bnsd->bntd", weights, vh) / total
        lse = (top + jnp.log(total))[..., 0]
        return jnp.swapaxes(out, 1, 2), (qh, kh, vh, bias, out, lse)

    def bwd(res, d_out):
        qh, kh, vh, bias, out, lse = res
        d_out = jnp.swapaxes(d_out, 1, 2)
        probs = jnp.exp(scores(qh, kh, bias) - lse[..., None])
        d_v = jnp.einsum("bnts,bntd->bnsd", probs, d_out)
        d_probs = jnp.einsum("bntd,bnsd->bnts", d_out, vh)
        d_s = probs * (d_probs - jnp.sum(d_out * out, -1, keepdims=True))
        d_s = d_s / np.sqrt(qh.shape[-1]).astype(np.float32)
        d_q = jnp.einsum("bnts,bnsd->bntd", d_s, kh)
        d_k = jnp.einsum("bnts,bntd->bnsd", d_s, qh)
        return (jnp.swapaxes(d_q, 1, 2), jnp.swapaxes(d_k, 1, 2), jnp.swapaxes(d_v, 1, 2),
                jnp.zeros_like(bias))

    attention = jax.custom_vjp(lambda q, k, v, bias: fwd(q, k, v, bias)[0])
    attention.defvjp(fwd, bwd)
    return attention


def _attention_variants():
    import jax
    import jax.numpy as jnp

    from imagen_jax.nn import attention as A

    closed = _closed_form_attention()

    def with_core(core, block_bytes=None, remat=True):
        def run(q, k, v, mask):
            if remat:
                saved, A._softmax_attention = A._softmax_attention, core
                try:
                    return A.attend(q, k, v, mask, block_bytes=block_bytes)
                finally:
                    A._softmax_attention = saved
            # A's query blocks, kept for the backward instead of recomputed
            b, t = q.shape[:2]
            bias = jnp.where(mask, 0.0, -1e30).astype(jnp.float32)
            block = t
            while block % 2 == 0 and block * b * q.shape[2] * k.shape[1] * 4 > \
                    A.ATTENTION_BLOCK_BYTES:
                block //= 2
            blocks = jnp.moveaxis(q.reshape(b, t // block, block, *q.shape[2:]), 1, 0)
            out = jax.lax.map(lambda qb: core(qb, k, v, bias), blocks)
            return jnp.moveaxis(out, 0, 1).reshape(q.shape[:3] + v.shape[-1:])
        return run

    return {"attend (autodiff)": with_core(A._softmax_attention),
            "closed-form backward": with_core(closed),
            "query blocks kept, not recomputed": with_core(A._softmax_attention, remat=False)}


def measure(iters: int) -> dict:
    """Everything for the backend this process runs under."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    out: dict = {"convs": [], "attention": [], "train_step": []}
    variants = _conv_variants()
    for b, side, cin, cout in CONV_SHAPES:
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
        x = jax.random.normal(k1, (b, side, side, cin))
        w = jax.random.normal(k2, (3, 3, cin, cout)) * 0.05
        g = jax.random.normal(k3, (b, side, side, cout))
        ref = jax.jit(variants["kernel gradient (XLA)"])(x, w, g)
        row = {"shape": [b, side, cin, cout]}
        for name, fn in variants.items():
            fn = jax.jit(fn)
            if name.startswith("kernel gradient"):
                np.testing.assert_allclose(fn(x, w, g), ref, rtol=1e-3, atol=1e-2)
            row[name] = median_ms(fn, x, w, g, iters=iters)
        out["convs"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    for b, t, s, n in ATTENTION_SHAPES:
        ks = jax.random.split(jax.random.PRNGKey(1), 4)
        q, g = (jax.random.normal(ks[i], (b, t, n, 32)) for i in (0, 3))
        k, v = (jax.random.normal(ks[i], (b, s, n, 32)) for i in (1, 2))
        mask = jnp.arange(s)[None] < jnp.asarray([s - 5] + [s] * (b - 1))[:, None]
        row = {"shape": [b, t, s, n]}
        ref = None
        for name, attend in _attention_variants().items():
            fn = jax.jit(lambda q, k, v, attend=attend: jax.vjp(
                lambda q, k, v: attend(q, k, v, mask), q, k, v)[1](g))
            grads = fn(q, k, v)
            if ref is None:
                ref = grads
            for a, r in zip(grads, ref):
                np.testing.assert_allclose(a, r, rtol=1e-3, atol=1e-4)
            row[name] = median_ms(fn, q, k, v, iters=iters)
        out["attention"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    from benchmarks.vs_imagen_pytorch import Ours

    for size, batch in ((32, 8), (64, 4)):
        ours = Ours(size)
        data = ours.train_batch(batch)
        ours.train(data)
        times = [ours.train(data) for _ in range(iters)]
        out["train_step"].append({"case": f"{size}px batch {batch}",
                                  "ms": statistics.median(times) * 1e3})
        print(json.dumps(out["train_step"][-1]), file=sys.stderr, flush=True)
    return out


def report(result: dict) -> list[str]:
    from imagen_jax.evaluate.report import grid_table

    names = list(result["backends"])
    lines = ["# Backward-pass candidates per CPU backend and shape "
             f"({result['date']})", "",
             "Regenerate: `python benchmarks/backward_variants.py "
             "--out=docs/backward_variants.md`", "",
             f"Machine: {result['cpu_model']}, {result['environment']}. Medians of "
             f"{result['iters']} runs, ms. Backends (XLA_FLAGS "
             "`--xla_cpu_experimental_ynn_fusion_type=...`): "
             + "; ".join(f"{n}: `{BACKENDS[n]}`" for n in names) + ".", "",
             "One 3x3 convolution (batch x side x channels in -> out):", ""]
    conv_keys = [k for k in result["backends"][names[0]]["convs"][0] if k != "shape"]
    rows = []
    for i, first in enumerate(result["backends"][names[0]]["convs"]):
        b, side, cin, cout = first["shape"]
        for n in names:
            row = result["backends"][n]["convs"][i]
            rows.append([f"{b} x {side}x{side} x {cin}->{cout}", n]
                        + [f"{row[k]:.2f}" for k in conv_keys])
    lines += grid_table(["shape", "backend"] + conv_keys, rows) + [""]
    att_keys = [k for k in result["backends"][names[0]]["attention"][0] if k != "shape"]
    rows = []
    for i, first in enumerate(result["backends"][names[0]]["attention"]):
        b, t, s, n_heads = first["shape"]
        for n in names:
            row = result["backends"][n]["attention"][i]
            rows.append([f"{b} x {t} queries x {s} keys x {n_heads} heads", n]
                        + [f"{row[k]:.1f}" for k in att_keys])
    lines += ["One attention layer, forward + backward (head width 32; gradients of every "
              "variant checked equal first):", ""]
    lines += grid_table(["shape", "backend"] + att_keys, rows) + [""]
    rows = [[step["case"]] + [f"{result['backends'][n]['train_step'][i]['ms']:.0f}"
                              for n in names]
            for i, step in enumerate(result["backends"][names[0]]["train_step"])]
    lines += ["The matched base U-Net's whole training step (forward + backward + Adam), "
              "per backend:", ""]
    lines += grid_table(["case"] + names, rows) + [""]
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/backward_variants.md")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:  # one backend, measured in this process; JSON on stdout
        print(json.dumps(measure(args.iters)))
        return
    from benchmarks.vs_imagen_pytorch import cpu_model
    from imagen_jax.evaluate.report import environment, write_report

    result = {"date": time.strftime("%Y-%m-%d"), "cpu_model": cpu_model(),
              "environment": environment(), "iters": args.iters, "backends": {}}
    for name in args.backends.split(","):
        if name not in BACKENDS:
            raise SystemExit(f"--backends: unknown backend {name!r}; one of {list(BACKENDS)}")
        env = dict(os.environ, XLA_FLAGS=" ".join(
            [os.environ.get("XLA_FLAGS", ""),
             f"--xla_cpu_experimental_ynn_fusion_type={BACKENDS[name]}"]).strip())
        print(f"[backward_variants] {name}: XLA_FLAGS={env['XLA_FLAGS']}", flush=True)
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                               f"--iters={args.iters}"], env=env, stdout=subprocess.PIPE,
                              text=True, check=True)
        result["backends"][name] = json.loads(proc.stdout.strip().splitlines()[-1])
    write_report(args.out, report(result), result)


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend (a set flag is kept)
    main()
