r"""This project's base U-Net against imagen-pytorch's, side by side, in one run.

    bash benchmarks/peer_env.sh                       # once: the peer's venv
    python benchmarks/vs_imagen_pytorch.py --out=docs/performance.md
    python benchmarks/vs_imagen_pytorch.py --quick    # fewer rounds, a smoke run
    python benchmarks/vs_imagen_pytorch.py --report_only  # Markdown again from the JSON

Both U-Nets are built at one matched configuration (MATCHED below: resolution, batch,
channel widths, residual blocks per level, attention levels, text length and width;
parameter counts within 5%, both printed). imagen-pytorch runs in its own process and
virtual environment (benchmarks/imagen_pytorch_peer.py, driven over a pipe), so the
two alternate A/B on the same machine: each round times `--iters` steps of one side,
then of the other (the side that goes first alternates), after a warm-up; the report
gives medians. Timed:
  1. a training step (forward + backward + Adam update): 32 px batch 8, 64 px batch 4;
  2. sampling with classifier-free guidance (vanilla CFG on both sides, imagen-
     pytorch's parallel-component removal off), 32 px batch 4, 20 steps.
Also: the first train step's compile time, achieved FLOP/s (XLA's cost analysis of
the step) against a float32 matmul peak measured in this run, and each process's
peak resident memory. Writes Markdown + JSON with the machine and versions
(the Markdown: benchmarks/vs_imagen_pytorch_report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.step_profile import median_ms, profile_step  # noqa: E402
from benchmarks.vs_imagen_pytorch_report import GUIDANCE, SAMPLE_STEPS, report  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_PYTHON = os.path.join(REPO, ".venv-peer", "bin", "python")

TEXT_LEN, TEXT_DIM = 16, 64
# One configuration, written out for each library. Both: 3 levels of 64/128/256
# channels at 32/16/8 px for a 32 px input, 2 residual blocks per level down and up,
# attention with the text at the two low-resolution levels (32-wide heads), group
# norm in 8 groups, text 16 tokens x 64. The architectures differ beyond that:
# imagen-pytorch adds two residual blocks at the bottleneck and cross-attention inside
# its residual blocks; this project's attention is twice as wide as its blocks
# (attention_hidden_mult=2). The options below bring the parameter counts within 1%:
# imagen-pytorch without its Perceiver text pooling and bottleneck attention, with a
# 64-wide text conditioning, one time token and 1x feed-forwards.
MATCHED = {
    "ours": dict(channels=(64, 128, 256), num_res_blocks=(2, 2, 2), strides=(1, 2, 2),
                 attention=("none", "self_cross", "self_cross"), attention_head_dim=32,
                 attention_hidden_mult=2, cond_dim=256, text_dim=TEXT_DIM, num_groups=8),
    "peer": dict(dim=64, dim_mults=(1, 2, 4), num_resnet_blocks=1, text_embed_dim=TEXT_DIM,
                 max_text_len=TEXT_LEN, layer_attns=(False, True, True),
                 layer_cross_attns=(False, True, True), attn_dim_head=32, attn_heads=4,
                 init_cross_embed=False, use_global_context_attn=False,
                 memory_efficient=False, cond_dim=64, num_time_tokens=1, ff_mult=1.0,
                 attn_pool_text=False, attend_at_middle=False),
}
CASES = (("train", 32, 8), ("train", 64, 4), ("sample", 32, 4))


class Peer:
    """imagen-pytorch in its own process: one JSON command per line each way."""

    def __init__(self):
        if not os.path.exists(PEER_PYTHON):
            raise SystemExit(f"{PEER_PYTHON} is missing: run `bash benchmarks/peer_env.sh`")
        self.proc = subprocess.Popen(
            [PEER_PYTHON, os.path.join(REPO, "benchmarks", "imagen_pytorch_peer.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def __call__(self, cmd: str, **kwargs) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"imagen-pytorch peer exited (code {self.proc.wait()}) on {cmd!r}")
        reply = json.loads(line)
        if "error" in reply:
            raise SystemExit(f"imagen-pytorch peer, {cmd!r}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self("quit")
            self.proc.wait(timeout=30)


class Ours:
    """This project's BaseStage at MATCHED['ours']: a jitted Adam train step and the
    jitted guided sampler."""

    def __init__(self, image_size: int):
        import jax
        import jax.numpy as jnp
        import optax

        from imagen_jax.diffusion.schedules import CosineSchedule
        from imagen_jax.nn.unet import UNetConfig
        from imagen_jax.stages import BaseStage, unbox

        self.jax, self.jnp = jax, jnp
        self.stage = BaseStage(unet=UNetConfig(**MATCHED["ours"]), image_size=image_size,
                               schedule=CosineSchedule(), prediction="eps", cond_drop_prob=0.1)
        self.params = unbox(self.stage.init(jax.random.PRNGKey(0), TEXT_LEN))
        self.tx = optax.adam(1e-4)
        self.opt = self.tx.init(self.params)
        self.key = jax.random.PRNGKey(1)
        stage, tx = self.stage, self.tx

        def train_step(params, opt, batch, key):
            (loss, _), grads = jax.value_and_grad(stage.loss, has_aux=True)(params, batch, key)
            updates, opt = tx.update(grads, opt, params)
            return optax.apply_updates(params, updates), opt, loss

        self.train_step_fn = train_step
        self.train_step = jax.jit(train_step, donate_argnums=(0, 1))
        # The step's phases, compiled separately (one jitted step cannot be timed
        # inside): the loss alone, and the loss with its gradient.
        self.forward = jax.jit(lambda params, batch, key: stage.loss(params, batch, key)[0])
        self.forward_backward = jax.jit(jax.grad(lambda params, batch, key:
                                                 stage.loss(params, batch, key)[0]))
        self.adam_update = jax.jit(lambda params, opt, grads: optax.apply_updates(
            params, tx.update(grads, opt, params)[0]))

    def num_params(self) -> int:
        return sum(x.size for x in self.jax.tree.leaves(self.params))

    def _text(self, batch: int):
        text = self.jax.random.normal(self.jax.random.PRNGKey(2), (batch, TEXT_LEN, TEXT_DIM))
        return text, self.jnp.ones((batch, TEXT_LEN), bool)

    def train_batch(self, batch: int) -> dict:
        s = self.stage.image_size
        images = self.jax.random.uniform(self.jax.random.PRNGKey(3), (batch, s, s, 3), minval=-1)
        text, mask = self._text(batch)
        return {"images": images, "text": text, "text_mask": mask}

    def train(self, batch: dict) -> float:
        start = time.perf_counter()
        self.params, self.opt, loss = self.train_step(self.params, self.opt, batch, self.key)
        loss.block_until_ready()
        return time.perf_counter() - start

    def phases(self, batch: dict, iters: int) -> dict[str, float]:
        """Median seconds of forward, backward (forward+backward - forward) and the
        Adam update (compiled and timed on its own, on gradients of the params' shape)."""
        jax = self.jax

        fwd = median_ms(self.forward, self.params, batch, self.key, iters=iters) / 1e3
        fwd_bwd = median_ms(self.forward_backward, self.params, batch, self.key,
                            iters=iters) / 1e3
        grads = jax.tree.map(lambda x: self.jnp.full_like(x, 1e-3), self.params)
        adam = median_ms(self.adam_update, self.params, self.opt, grads, iters=iters) / 1e3
        return {"forward": fwd, "backward": fwd_bwd - fwd, "adam": adam}

    def train_flops(self, batch: dict) -> float:
        """Model FLOPs of one step: XLA's count of the step traced with attention in one
        block (cost analysis counts a loop body once, so blocked attention would be
        undercounted; the blocks' recomputation is not model work either way)."""
        from imagen_jax.nn import attention

        saved, attention.ATTENTION_BLOCK_BYTES = attention.ATTENTION_BLOCK_BYTES, 1 << 62
        try:
            # a new function, so that JAX traces it again rather than reusing its trace
            step = self.jax.jit(lambda *args: self.train_step_fn(*args))
            lowered = step.lower(self.params, self.opt, batch, self.key)
        finally:
            attention.ATTENTION_BLOCK_BYTES = saved
        return float(lowered.cost_analysis()["flops"])

    def sample(self, batch: int) -> float:
        from imagen_jax.diffusion.samplers import SamplerSettings

        text, mask = self._text(batch)
        settings = SamplerSettings(sampler="ddpm", steps=SAMPLE_STEPS, threshold="dynamic")
        start = time.perf_counter()
        out = self.stage.sample(self.params, text, mask, self.key, settings=settings,
                                guidance=GUIDANCE)
        out.block_until_ready()
        return time.perf_counter() - start


def cpu_model() -> str:
    """The processor's model name (Linux), for the report."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def matmul_peak_gflops(n: int = 1024, reps: int = 20) -> float:
    """float32 matmul rate of this machine through XLA (the same BLAS path the U-Net's
    dense layers take), median of `reps` products."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n))
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        dot(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


CONV_SHAPES = ((8, 32, 64), (8, 16, 128), (8, 8, 256), (4, 64, 64))  # the U-Net's own


def conv_times(shapes, iters: int) -> list[dict]:
    """Median ms of one 3x3 convolution (NHWC, SAME) forward, and forward + backward
    (both gradients), per (batch, side, channels): the U-Net's dominant op."""
    import jax
    from jax import lax

    out = []
    for b, side, c in shapes:
        x = jax.random.normal(jax.random.PRNGKey(0), (b, side, side, c))
        w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, c, c))
        g = jax.random.normal(jax.random.PRNGKey(2), (b, side, side, c))
        conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        both = lambda x, w, g: jax.vjp(conv, x, w)[1](g)

        out.append({"shape": [b, side, c],
                    "forward_ms": median_ms(jax.jit(conv), x, w, iters=iters),
                    "forward_backward_ms": median_ms(jax.jit(both), x, w, g, iters=iters)})
    return out


def _alternate(ours_fn, peer_fn, rounds: int) -> tuple[list[float], list[float]]:
    """rounds of (peer's step times, ours), the side that goes first alternating."""
    ours, peer = [], []
    for r in range(rounds):
        for side in (("peer", "ours") if r % 2 == 0 else ("ours", "peer")):
            (peer.extend(peer_fn()) if side == "peer" else ours.extend(ours_fn()))
    return ours, peer


def run(args: argparse.Namespace) -> dict:
    import jax

    from imagen_jax.evaluate.report import environment

    peer = Peer()
    rows, params = [], {}
    try:
        for kind, size, batch in CASES:
            built = peer("build", unet=MATCHED["peer"], image_size=size, steps=SAMPLE_STEPS,
                         text_len=TEXT_LEN, text_dim=TEXT_DIM, threads=os.cpu_count())
            ours = Ours(size)
            params = {"ours": ours.num_params(), "peer": built["params"]}
            gap = abs(params["ours"] - params["peer"]) / params["peer"]
            if gap > 0.05:
                raise SystemExit(f"MATCHED: parameter counts differ by {gap:.1%} "
                                 f"(ours {params['ours']:,}, imagen-pytorch {params['peer']:,})")
            row: dict[str, Any] = {"case": f"{kind} {size}px batch {batch}", "kind": kind,
                                   "size": size, "batch": batch}
            if kind == "train":
                data = ours.train_batch(batch)
                row["compile_s"] = ours.train(data)  # the first call compiles
                row["flops"] = ours.train_flops(data)
                row["peer_flops"] = peer("flops", batch=batch, size=size)["flops"]
                peer("train", batch=batch, size=size, iters=1)  # warm-up
                peer_phases = {"forward": [], "backward": [], "adam": []}

                def peer_train():
                    reply = peer("train", batch=batch, size=size, iters=args.iters)
                    for name, values in reply["phases"].items():
                        peer_phases[name] += values
                    return reply["seconds"]

                t_ours, t_peer = _alternate(
                    lambda: [ours.train(data) for _ in range(args.iters)], peer_train,
                    args.rounds)
                row["phases"] = {"ours": ours.phases(data, args.iters),
                                 "peer": {k: statistics.median(v)
                                          for k, v in peer_phases.items()}}
                row["profile"] = {"ours": profile_step(ours, data, iters=3),
                                  "peer": peer("profile", batch=batch, size=size, iters=3)}
                unit = batch
            else:
                row["compile_s"] = ours.sample(batch)
                peer("sample", batch=batch, cond_scale=GUIDANCE, iters=1)
                t_ours, t_peer = _alternate(
                    lambda: [ours.sample(batch) for _ in range(max(1, args.iters // 2))],
                    lambda: peer("sample", batch=batch, cond_scale=GUIDANCE,
                                 iters=max(1, args.iters // 2))["seconds"],
                    args.rounds)
                unit = SAMPLE_STEPS  # denoising steps per sample call
            med_ours, med_peer = statistics.median(t_ours), statistics.median(t_peer)
            row.update(ours_s=med_ours, peer_s=med_peer, ours_rate=unit / med_ours,
                       peer_rate=unit / med_peer, speedup=med_peer / med_ours,
                       ours_times=t_ours, peer_times=t_peer)
            print(f"{row['case']:22s} ours {med_ours * 1e3:8.1f} ms  imagen-pytorch "
                  f"{med_peer * 1e3:8.1f} ms  speed-up {row['speedup']:.2f}x", flush=True)
            rows.append(row)
        convs = {"ours": conv_times(CONV_SHAPES, 10),
                 "peer": peer("conv", shapes=CONV_SHAPES, iters=10)["convs"]}
        memory = {"ours_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peer_peak_rss_mib": peer("memory")["peak_rss_mib"]}
        versions = built["versions"]
    finally:
        peer.close()
    return {"environment": environment(), "cpu_model": cpu_model(),
            "jax_devices": str(jax.devices()),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "date": time.strftime("%Y-%m-%d"),
            "peer_versions": versions, "params": params, "rows": rows, "memory": memory,
            "convs": convs,
            "matmul_peak_gflops": matmul_peak_gflops(), "rounds": args.rounds,
            "iters": args.iters, "matched": {k: {kk: list(v) if isinstance(v, tuple) else v
                                                 for kk, v in d.items()}
                                             for k, d in MATCHED.items()}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/performance.md")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="2 rounds of 2: a smoke run")
    p.add_argument("--report_only", action="store_true",
                   help="rewrite the Markdown from the JSON beside --out; measure nothing")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.iters = 2, 2
    from imagen_jax.evaluate.report import write_report

    if args.report_only:
        json_path = os.path.splitext(args.out)[0] + ".json"
        if not os.path.exists(json_path):
            raise SystemExit(f"--report_only: {json_path} does not exist (run without it first)")
        with open(json_path, encoding="utf-8") as f:
            result = json.load(f)
    else:
        result = run(args)
    write_report(args.out, report(result), result)


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    main()
