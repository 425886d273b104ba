r"""Sampling at paper size on one TPU chip, proven by the TPU compiler (no chip attached).

    python benchmarks/tpu_sampling.py                     # every stage, v5e and v4
    python benchmarks/tpu_sampling.py --chips=v5e --stages=base64,sr256,sr1024

For each paper stage — Imagen's base64, sr256 and sr1024 (fully convolutional on the
whole 256 -> 1024 image), unCLIP's prior, decoder64, upsample256 and upsample1024 —
one guided sampling step (the stage's own sampler with classifier-free guidance, run
for one step: the U-Net on 2B examples, the guidance and thresholding) is compiled
for one chip of a TPU generation. The largest batch that fits the chip's HBM is
found from two compiles (peak bytes are affine in the batch) and checked by a third;
at that batch the roofline bound per step (FLOPs / bf16 peak, HBM bytes / bandwidth)
times the paper's step count gives a **bound** on the time per image, per stage and
for the whole cascade. Bounds, never measurements. Rows land in
docs/tpu_sampling.json as they finish; a second run skips rows it has.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.tpu_compile import load_rows, save_rows  # noqa: E402

IMAGEN = ("base64", "sr256", "sr1024")
UNCLIP = ("prior", "decoder64", "upsample256", "upsample1024")
CASCADES = {"imagen": IMAGEN, "unclip": UNCLIP}
TOPOLOGY = {"v5e": "v5e:2x2", "v4": "v4:2x2x1", "v5p": "v5p:2x2x1"}  # one chip of it is used
OUT = "docs/tpu_sampling.md"
GIB = 1 << 30
MAX_BATCH = 1024  # a sampling batch beyond this is not what the table is for


VARIANT = "paper"  # --variant=tiny checks the script quickly


def sampling_config(stage: str):
    from configs import imagen, unclip
    config = (imagen if stage in IMAGEN else unclip).get_config(f"{VARIANT},{stage}")
    config.diffusion.train_crop = 0  # sampling runs on the whole image
    if stage in IMAGEN and VARIANT == "paper":
        config.text.checkpoint = "t5-v1_1-xxl"  # the architecture, nothing is loaded
    if stage in ("prior", "decoder64"):
        config.clip.workdir = "unused"
    return config


def _program(stage: str, config, device, batch: int):
    """(jitted one-step sampler, its abstract args) for `batch` images on `device`."""
    import jax

    from imagen_jax.config_sections import sampler_settings
    from imagen_jax.parallel.sharding import unbox_logical
    from imagen_jax.stage_registry import build_stage, lookup
    from imagen_jax.train.aot import abstract_batch

    one = jax.sharding.SingleDeviceSharding(device)
    place = lambda tree: jax.tree.map(  # noqa: E731
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), tree)
    stage_obj = build_stage(config)
    params = unbox_logical(jax.eval_shape(
        lambda: stage_obj.init(jax.random.PRNGKey(0), config.text.max_length)))["params"]
    config = config.copy_and_resolve_references()
    config.train.batch_size = batch
    conditioner = lookup(config.stage).weightless_conditioner(config)
    raw = abstract_batch(config, stage_obj, conditioner)
    prepared = raw
    if conditioner is not None:
        frozen = unbox_logical(conditioner.abstract_params())
        prepared = jax.eval_shape(conditioner.prepare, frozen, raw)
    prepared = {k: v for k, v in prepared.items() if k not in ("text_ids",)}
    key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
    sample = config.sample.copy_and_resolve_references()
    sample.steps = 1
    if stage == "prior":
        settings = dataclasses.replace(sampler_settings(sample), steps=1)
        fn = lambda p, b, k: stage_obj.sample(  # noqa: E731
            p, b["text"], b["text_mask"], b["text_embed"], k, settings=settings,
            guidance=sample.guidance, best_of=sample.get("best_of", 2))
    else:
        fn = lambda p, b, k: stage_obj.preview(p, b, k, sample)  # noqa: E731
    args = (place(params), place(prepared), place(key))
    return jax.jit(fn), args


def compile_step(stage: str, chip: str, batch: int) -> dict:
    from imagen_jax.parallel import analysis
    from imagen_jax.train import aot

    device = aot.topology_devices(TOPOLOGY[chip])[0]
    config = sampling_config(stage)
    jitted, args = _program(stage, config, device, batch)
    start = time.perf_counter()
    try:
        compiled = jitted.lower(*args).compile()
    except Exception as e:  # noqa: BLE001 - the TPU compiler refuses what does not fit
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        return dict(batch=batch, compile_s=time.perf_counter() - start, fits=False,
                    memory={"peak": None}, error=str(e).splitlines()[0][:300])
    compile_s = time.perf_counter() - start
    program = aot.StepProgram(compiled, 0.0, compile_s, 1, {}, batch,
                              analysis.total_bytes(args[0]), 0, 0.0)
    costs = aot.step_costs(program)
    spec = aot.CHIPS[chip]
    from imagen_jax.parallel.flops import count_flops
    model_flops = count_flops(jitted, *args)  # the attention's loop counted fully
    bound = aot.roofline(costs, spec, batch, model_flops)
    return dict(batch=batch, compile_s=compile_s, memory=costs["memory"],
                flops=costs["flops"], model_flops=model_flops, hbm_bytes=costs["hbm_bytes"],
                fits=bound["fits"],
                bound_s=bound["bound_s"], bound_by=bound["bound_by"],
                steps=int(config.sample.steps), params_bytes=program.state_bytes_per_device)


VERIFY = False  # --verify: also compile at the predicted largest batch


def predict_largest(peak_1: int, peak_8: int | None, hbm: int) -> tuple:
    """(bytes per image, fixed bytes, largest batch <= MAX_BATCH) from the peaks at
    batch 1 and 8 (peak(b) = fixed + per_image * b); (None, None, 1) without the second."""
    if peak_8 is None:
        return None, None, 1
    per_image = (peak_8 - peak_1) / 7
    fixed = peak_1 - per_image
    guess = int((hbm - fixed) // per_image) if per_image > 0 else MAX_BATCH
    return per_image, fixed, max(1, min(guess, MAX_BATCH))


def largest_batch(stage: str, chip: str) -> dict:
    """Compiles at batch 1 and 8, solves peak(b) = a + c b <= HBM for b (at most
    MAX_BATCH), and with --verify compiles at that b to confirm (stepping down 15% at
    a time while the compiler says it does not fit)."""
    from imagen_jax.train import aot

    hbm = aot.CHIPS[chip].hbm_bytes
    small, large = compile_step(stage, chip, 1), compile_step(stage, chip, 8)
    trials = [small, large]
    if not small["fits"]:
        raise RuntimeError(f"{stage} does not fit one {chip} chip even at batch 1")
    per_image, fixed, guess = predict_largest(small["memory"]["peak"],
                                              large["memory"]["peak"], hbm)
    best = large if large["fits"] else small
    b = guess
    while VERIFY and b > 8 and len(trials) < 6:
        row = compile_step(stage, chip, b)
        trials.append(row)
        if row["fits"]:
            best = row
            break
        b = int(b * 0.85)
    return dict(best, per_image_bytes=per_image, fixed_bytes=fixed, predicted_max=guess,
                verified=best["batch"] == guess,
                trials=[dict(batch=t["batch"], peak=t["memory"]["peak"], fits=t["fits"],
                             compile_s=t["compile_s"]) for t in trials],
                capped=guess >= MAX_BATCH)


def repredict(data: dict) -> None:
    """Largest batches of stored rows again from their two trials (no compile)."""
    from imagen_jax.train.aot import CHIPS

    for row in data["rows"]:
        if row.get("status") == "ok" and len(row.get("trials", [])) >= 2:
            first, second = row["trials"][:2]
            row["per_image_bytes"], row["fixed_bytes"], row["predicted_max"] = predict_largest(
                first["peak"], second["peak"], CHIPS[row["chip"]].hbm_bytes)
            row["verified"] = row["batch"] == row["predicted_max"]
            row["capped"] = row["predicted_max"] >= MAX_BATCH


def write_markdown(data: dict, path: str) -> None:
    from imagen_jax.train.aot import CHIPS

    rows = {(r["stage"], r["chip"]): r for r in data["rows"] if r.get("status") == "ok"}
    lines = ["# Paper-size sampling on one TPU chip (benchmarks/tpu_sampling.py)", "",
             "One guided sampling step per stage compiled by the TPU compiler for one chip; "
             "the largest batch that fits its HBM; the roofline **bound** per step at that "
             "batch (the larger of FLOPs / bf16 peak and HBM bytes / bandwidth) and the "
             "bound on the time per image at the paper's step count. Bounds, not "
             "measurements: a real step is slower.", "",
             "`largest batch` is predicted from two compiles (batch 1 and 8: the peak is "
             "affine in the batch) and marked verified where a third compile at that batch "
             "fitted; the bound columns are at the largest batch compiled.", "",
             "| stage | chip | largest batch (HBM) | batch compiled | peak GiB there | compile s | "
             "bound ms / step (by) | steps | bound s / image |", "|" + " --- |" * 9]
    for (stage, chip), r in sorted(rows.items()):
        per_image = r["bound_s"] * r["steps"] / r["batch"]
        cap = " (cap)" if r.get("capped") else ""
        state = "verified" if r.get("verified") else "predicted"
        lines.append(f"| {stage} | {chip} | {r['predicted_max']}{cap}, {state} "
                     f"({CHIPS[chip].hbm_bytes / GIB:.0f} GiB) | {r['batch']} | "
                     f"{r['memory']['peak'] / GIB:.2f} | {r['compile_s']:.0f} | "
                     f"{r['bound_s'] * 1e3:.1f} ({r['bound_by']}) | {r['steps']} | "
                     f"{per_image:.3f} |")
    lines += ["", "## Whole cascade, per image (bound)", "",
              "| cascade | chip | stages compiled | bound s / image |", "| --- | --- | --- | --- |"]
    for name, stages in CASCADES.items():
        for chip in sorted({c for _, c in rows}):
            have = [rows[(s, chip)] for s in stages if (s, chip) in rows]
            if not have:
                continue
            total = sum(r["bound_s"] * r["steps"] / r["batch"] for r in have)
            missing = [s for s in stages if (s, chip) not in rows]
            lines.append(f"| {name} | {chip} | {len(have)} of {len(stages)}"
                         f"{' (missing ' + ', '.join(missing) + ')' if missing else ''} | "
                         f"{total:.2f} |")
    failed = [r for r in data["rows"] if r.get("status") != "ok"]
    if failed:
        lines += ["", "Not compiled: " + "; ".join(f"{r['stage']} on {r['chip']}: "
                                                  f"{r.get('error', '')}" for r in failed)]
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", default=",".join(IMAGEN + UNCLIP))
    parser.add_argument("--chips", default="v5e,v4")
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--retry", action="store_true")
    parser.add_argument("--variant", default="paper", choices=["paper", "tiny"])
    parser.add_argument("--report_only", action="store_true",
                        help="rebuild the markdown (and the predictions) from the JSON")
    parser.add_argument("--verify", action="store_true",
                        help="compile at the predicted largest batch too (a third compile)")
    args = parser.parse_args()
    global VARIANT, VERIFY
    VARIANT, VERIFY = args.variant, args.verify
    json_path = os.path.splitext(args.out)[0] + ".json"
    if args.report_only:
        data = load_rows(json_path)
        repredict(data)
        save_rows(json_path, data)
        write_markdown(data, args.out)
        return
    for chip in args.chips.split(","):
        for stage in args.stages.split(","):
            data = load_rows(json_path)
            old = next((r for r in data["rows"] if r["stage"] == stage and r["chip"] == chip),
                       None)
            if old and (old["status"] == "ok" or not args.retry):
                print(f"[skip] {stage} on {chip}", flush=True)
                continue
            print(f"[compile] {stage} on {chip} ...", flush=True)
            try:
                row = dict(largest_batch(stage, chip), stage=stage, chip=chip, status="ok")
            except Exception as e:  # noqa: BLE001 - recorded as the row's result
                row = dict(stage=stage, chip=chip, status="error", error=str(e)[:400])
            data = load_rows(json_path)
            data["rows"] = [r for r in data["rows"]
                            if (r["stage"], r["chip"]) != (stage, chip)] + [row]
            save_rows(json_path, data)
            write_markdown(data, args.out)
            print(f"[{row['status']}] {stage} on {chip}: "
                  + (f"batch {row['batch']}, {row['bound_s'] * 1e3:.1f} ms/step bound"
                     if row["status"] == "ok" else row["error"]), flush=True)
    write_markdown(load_rows(json_path), args.out)


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    main()
