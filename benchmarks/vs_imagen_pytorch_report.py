"""benchmarks/vs_imagen_pytorch.py's report: the Markdown written from a measured result
(the JSON beside it), so `--report_only` can write it again without measuring.

Tables: step times and rates against the target speed-ups, the FLOPs of a training
step and the rates achieved (with the rate a target would need), where a training
step's time goes, one convolution at the U-Net's shapes, and peak memory.
"""

from __future__ import annotations

import time

# The sampling case's settings (the harness runs them, the report states them).
SAMPLE_STEPS, GUIDANCE = 20, 3.0
TARGETS = {"train": 1.1, "sample": 1.5}  # speed-ups over imagen-pytorch that #24 asks for

# One row per kind of work, each side's categories that do it: imagen-jax's from
# benchmarks/step_profile.py, imagen-pytorch's from the peer's `profile` (aten ops).
PROFILE_ROWS = (
    ("convolutions", ("conv forward", "conv input gradient", "conv kernel gradient"),
     ("conv", "conv input + kernel gradient")),
    ("group norm", ("group norm forward", "group norm backward"), ("group norm",)),
    ("attention and dense layers (matmuls, softmax, masking)",
     ("attention forward", "attention backward", "dense forward", "dense backward"),
     ("matmul", "attention softmax")),
    ("layout copies and transposes", ("layout copies forward", "layout copies backward"), ()),
    ("everything else (elementwise, loss, noise)", ("other forward", "other backward"),
     ("other",)),
)


def report(result: dict) -> list[str]:
    from imagen_jax.evaluate.report import grid_table

    peak = result["matmul_peak_gflops"]
    lines = [f"# imagen-jax vs imagen-pytorch ({result.get('date', time.strftime('%Y-%m-%d'))})",
             "",
             "Regenerate: `bash benchmarks/peer_env.sh && python benchmarks/vs_imagen_pytorch.py"
             " --out=docs/performance.md`", "",
             f"Machine: {result.get('cpu_model', 'CPU model not recorded')}, "
             f"{result['environment']}; imagen-pytorch "
             f"{result['peer_versions']['imagen_pytorch']} on torch "
             f"{result['peer_versions']['torch']} ({result['peer_versions']['threads']} "
             "threads), float32, CPU. XLA_FLAGS: "
             f"`{result.get('xla_flags') or '(none)'}` (imagen_jax/xla_flags.py).", "",
             f"Matched base U-Net: {result['params']['ours']:,} parameters here, "
             f"{result['params']['peer']:,} in imagen-pytorch (MATCHED in the script). "
             f"{result['rounds']} alternating rounds of {result['iters']} steps per case "
             "(sampling: half as many calls); medians. Training: forward + backward + Adam; "
             f"sampling: {SAMPLE_STEPS} ancestral steps, guidance {GUIDANCE} (vanilla CFG), "
             "dynamic thresholding.", ""]
    header = ["case", "imagen-jax ms", "imagen-pytorch ms", "imagen-jax /s",
              "imagen-pytorch /s", "speed-up", "target", "first-step compile s"]
    table = []
    for r in result["rows"]:
        table.append([r["case"], f"{r['ours_s'] * 1e3:.1f}", f"{r['peer_s'] * 1e3:.1f}",
                      f"{r['ours_rate']:.2f}", f"{r['peer_rate']:.2f}", f"{r['speedup']:.2f}x",
                      f"{TARGETS[r['kind']]:.2f}x", f"{r['compile_s']:.1f}"])
    lines += grid_table(header, table) + [""]
    flop_rows = []
    for r in result["rows"]:
        if not r.get("flops"):
            continue
        ours, peer_rate = r["flops"] / r["ours_s"] / 1e9, r["peer_flops"] / r["peer_s"] / 1e9
        need = r["flops"] / (r["peer_s"] / TARGETS[r["kind"]]) / 1e9
        flop_rows.append([r["case"], f"{r['flops'] / 1e9:.1f}", f"{r['peer_flops'] / 1e9:.1f}",
                          f"{ours:.1f} ({ours / peak:.0%})", f"{peer_rate:.1f} ({peer_rate / peak:.0%})",
                          f"{need:.1f} ({need / peak:.0%})"])
    if flop_rows:
        lines += [f"FLOPs of one training step (forward + backward + Adam; imagen-jax: XLA's "
                  "cost analysis of the step, every op counted, elementwise ones too, attention "
                  "in one block; imagen-pytorch: torch's FlopCounterMode of forward + backward, "
                  "matmuls and convolutions only) and the rates achieved, as a share of the "
                  f"{peak:.1f} GFLOP/s float32 matmul peak measured in this run; the last "
                  "column is the rate imagen-jax would need, with its FLOPs, to meet the "
                  "target speed-up:", ""]
        lines += grid_table(["case", "imagen-jax GFLOP", "imagen-pytorch GFLOP",
                             "imagen-jax GFLOP/s", "imagen-pytorch GFLOP/s",
                             "needed for target"], flop_rows) + [""]
    phase_rows = [[r["case"], side] + [f"{r['phases'][key][k] * 1e3:.0f}"
                                       for k in ("forward", "backward", "adam")]
                  for r in result["rows"] if "phases" in r
                  for side, key in (("imagen-jax", "ours"), ("imagen-pytorch", "peer"))]
    if phase_rows:
        lines += ["Where a training step's time goes (ms, medians; imagen-jax's phases are "
                  "separately compiled functions: the loss, the loss and its gradient (backward "
                  "= the difference), and the Adam update alone):", ""]
        lines += grid_table(["case", "library", "forward", "backward", "Adam"],
                            phase_rows) + [""]
    lines += _profile_lines(result)
    conv_rows = []
    for ours, peer in zip(result["convs"]["ours"], result["convs"]["peer"]):
        b, side, c = ours["shape"]
        gflop = 2 * b * side * side * c * c * 9 / 1e9
        conv_rows.append([f"{b} x {side}x{side} x {c}", f"{ours['forward_ms']:.1f}",
                          f"{peer['forward_ms']:.1f}", f"{gflop / ours['forward_ms'] * 1e3:.0f}",
                          f"{gflop / peer['forward_ms'] * 1e3:.0f}",
                          f"{ours['forward_backward_ms']:.1f}",
                          f"{peer['forward_backward_ms']:.1f}"])
    lines += ["One 3x3 convolution at the U-Net's shapes (batch x side x channels in = out; "
              "ms, medians of 10):", ""]
    lines += grid_table(["shape", "XLA fwd", "torch fwd", "XLA GFLOP/s", "torch GFLOP/s",
                         "XLA fwd+bwd", "torch fwd+bwd"], conv_rows) + [""]
    lines += ["'/s': training images/s, sampling denoising steps/s (each step runs the "
              "guided model on the batch). Target: the issue's speed-up over imagen-pytorch "
              f"(training {TARGETS['train']}x, sampling {TARGETS['sample']}x). The matmul peak is "
              "1024^3 float32 products through XLA.", "",
              f"Peak resident memory: imagen-jax process {result['memory']['ours_peak_rss_mib']:.0f}"
              f" MiB, imagen-pytorch process {result['memory']['peer_peak_rss_mib']:.0f} MiB.",
              ""]
    return lines


def _profile_lines(result: dict) -> list[str]:
    """Per kind of op, forward and backward ms of one training step on each side."""
    from imagen_jax.evaluate.report import grid_table

    rows, detail = [], []
    for r in result["rows"]:
        if "profile" not in r:
            continue
        ours, peer = r["profile"]["ours"]["categories"], r["profile"]["peer"]
        for label, our_keys, peer_keys in PROFILE_ROWS:
            def ms(keys, phase):
                return sum(v for k, v in ours.items() if k in keys
                           and (("backward" in k or "gradient" in k) == (phase == "backward")))
            rows.append([r["case"], label, f"{ms(our_keys, 'forward'):.0f}",
                         f"{ms(our_keys, 'backward'):.0f}",
                         f"{sum(peer['forward'].get(k, 0.0) for k in peer_keys):.0f}",
                         f"{sum(peer['backward'].get(k, 0.0) for k in peer_keys):.0f}"])
        prof = r["profile"]["ours"]
        rows.append([r["case"], "**sum of ops** (wall)",
                     f"{sum(v for k, v in ours.items() if 'backward' not in k and 'gradient' not in k):.0f}",
                     f"{sum(v for k, v in ours.items() if 'backward' in k or 'gradient' in k):.0f}",
                     f"{sum(peer['forward'].values()):.0f} ({peer['forward_wall_ms']:.0f})",
                     f"{sum(peer['backward'].values()):.0f} ({peer['backward_wall_ms']:.0f})"])
        detail.append(f"- {r['case']}: imagen-jax loss + gradient {prof['wall_ms']:.0f} ms wall, "
                      f"{prof['thunk_ms']:.0f} ms of ops; conv input gradient "
                      f"{ours['conv input gradient']:.0f} ms, kernel gradient "
                      f"{ours['conv kernel gradient']:.0f} ms; slowest ops: "
                      + ", ".join(f"{t['op']} {t['shape'].split('{')[0]} ({t['category']}) "
                                  f"{t['ms']:.1f} ms" for t in prof["top"][:4]))
    if not rows:
        return []
    return ["Where the time of one training forward + backward goes, per kind of op (ms "
            "per step). imagen-jax: benchmarks/step_profile.py, a jax.profiler trace of "
            "the compiled loss-and-gradient, each executed op matched to its HLO "
            "instruction (convolutions, dots and copies, which XLA:CPU completes "
            "asynchronously, timed alone at the same shapes); XLA runs independent ops "
            "on both cores at once, so its ops add up to more than the wall time. "
            "imagen-pytorch: torch.profiler self CPU time of the forward and of "
            "loss.backward(), profiled separately (wall in brackets); torch computes a "
            "convolution's two gradients in one op, its matmuls are not split into "
            "attention and dense layers, and imagen-pytorch's normalisations are made of "
            "elementwise ops (aten::var, mul, ...), so they count in 'everything else'. The "
            "profilers' own overhead makes both sides slower than in the timed steps above.",
            ""] + grid_table(
        ["case", "kind of op", "imagen-jax forward", "imagen-jax backward",
         "imagen-pytorch forward", "imagen-pytorch backward"], rows) + [""] + detail + [""]
