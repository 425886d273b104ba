"""Sharding costs read from compiled executables (imagen_jax/parallel/analysis.py and
benchmarks/sharding.py) agree with what each strategy must do by construction."""

from __future__ import annotations

import importlib.util
import os
import sys

import jax
import pytest

from imagen_jax.parallel import analysis

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _benchmark():
    """benchmarks/sharding.py as a module (benchmarks/ is scripts, not a package)."""
    name = "sharding_benchmark"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(REPO, "benchmarks", "sharding.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve annotations through it
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_hlo_collectives_are_parsed_with_their_group_sizes():
    hlo = "\n".join([
        "  %all-reduce.22 = (f32[32]{0}, /*index=1*/bf16[4,8]{1,0}) all-reduce(%a, %b), "
        "channel_id=1, replica_groups={{0,1,2,3},{4,5,6,7}}, to_apply=%add",
        "  %all-gather.3 = f32[8,16]{1,0} all-gather(f32[1,16]{1,0} %p), channel_id=2, "
        "replica_groups=[1,8]<=[8], dimensions={0}",
        "  %reduce-scatter.1 = f32[2,16]{1,0} reduce-scatter(f32[8,16]{1,0} %g), "
        "replica_groups=[2,4]<=[8], dimensions={0}, to_apply=%add",
        "  %all-reduce.5 = f32[10]{0} all-reduce(f32[10]{0} %x), replica_groups={{0},{1}}, "
        "to_apply=%add",  # groups of one device: nothing moves
        "  %get-tuple-element = f32[32]{0} get-tuple-element(%all-reduce.22), index=0",
    ])
    stats = analysis.collective_bytes(hlo, num_devices=8)
    ar, ag, rs = stats["all-reduce"], stats["all-gather"], stats["reduce-scatter"]
    assert (ar.count, ar.payload_bytes) == (1, 32 * 4 + 32 * 2)
    assert ar.sent_bytes == pytest.approx(2 * 3 / 4 * (32 * 4 + 32 * 2))
    assert (ag.count, ag.payload_bytes) == (1, 8 * 16 * 4)
    assert ag.sent_bytes == pytest.approx(7 / 8 * 8 * 16 * 4)
    assert rs.sent_bytes == pytest.approx(3 * 2 * 16 * 4)
    assert stats["all-to-all"].count == 0


def test_tpu_async_collectives_with_tiled_layouts_are_counted():
    # As libtpu prints them: tuple results whose tiled layouts hold parentheses, and
    # collective-permute-start's (operand, result, u32[] context, u32[] context).
    hlo = "\n".join([
        "  %collective-permute-start.192 = (bf16[1,512,64,64]{1,3,0,2:T(8,128)(2,1)S(3)}, "
        "bf16[1,512,64,64]{1,3,0,2:T(8,128)(2,1)S(3)}, u32[]{:S(2)}, u32[]{:S(2)}) "
        "collective-permute-start(%get-tuple-element.10809), channel_id=8, "
        "source_target_pairs={{0,7},{1,0},{2,1},{3,2},{4,3},{5,4},{6,5},{7,6}}",
        "  %collective-permute-done.192 = bf16[1,512,64,64]{1,3,0,2:T(8,128)(2,1)S(3)} "
        "collective-permute-done(%collective-permute-start.192)",
        "  %all-gather-start.1 = (bf16[512,64]{1,0:T(8,128)(2,1)}, "
        "bf16[4096,64]{1,0:T(8,128)(2,1)}) all-gather-start(%p), channel_id=9, "
        "replica_groups=[1,8]<=[8], dimensions={0}",
    ])
    stats = analysis.collective_bytes(hlo, num_devices=8)
    permute, gather = stats["collective-permute"], stats["all-gather"]
    assert (permute.count, permute.payload_bytes) == (1, 512 * 64 * 64 * 2)
    assert permute.sent_bytes == 512 * 64 * 64 * 2
    assert (gather.count, gather.payload_bytes) == (1, 4096 * 64 * 2)
    assert gather.sent_bytes == pytest.approx(7 / 8 * 4096 * 64 * 2)


@pytest.fixture(scope="module")
def base64_costs():
    """The tiny base U-Net's train step under pure data parallel and pure FSDP (8)."""
    bench = _benchmark()
    shapes = bench.strategies(8)
    return {s: bench.measure(bench.workload, "base64", "tiny", s, shapes[s], 1, 0)
            for s in ("data", "fsdp")}


def test_fsdp_stores_an_eighth_of_the_parameters_per_device(base64_costs):
    data, fsdp = base64_costs["data"], base64_costs["fsdp"]
    total = data.params_total_bytes
    assert data.params_bytes == total  # replicated
    # Sharded along each weight's input width; the few that 8 does not divide
    # (3 RGB input channels, biases, norms) stay whole, so slightly over total / 8.
    assert total / 8 <= fsdp.params_bytes <= 1.15 * total / 8
    assert fsdp.optimizer_bytes < 0.2 * data.optimizer_bytes


def test_only_fsdp_gathers_the_parameters(base64_costs):
    data, fsdp = base64_costs["data"], base64_costs["fsdp"]
    # Data parallel: the gradient all-reduce (at least the size of the gradients),
    # and no weight all-gathers (a few small activation gathers remain).
    data_gathered = data.collectives.get("all-gather", {}).get("payload_mib", 0.0) * 2 ** 20
    assert data_gathered < 0.1 * data.params_total_bytes
    assert data.collectives["all-reduce"]["payload_mib"] * 2 ** 20 >= 0.9 * data.params_total_bytes
    # FSDP gathers every sharded weight (forward, and again for the backward pass).
    gathered = fsdp.collectives["all-gather"]["payload_mib"] * 2 ** 20
    assert gathered >= 0.9 * fsdp.params_total_bytes


def test_state_bytes_on_an_abstract_mesh_match_the_compiled_shardings(base64_costs):
    bench = _benchmark()
    w = bench.workload("base64", "tiny", 8)
    for strategy, m in base64_costs.items():
        b = bench.state_bytes_at(w, bench.strategies(8)[strategy])
        assert b["params"] == m.params_bytes
        # 16 devices: FSDP keeps shrinking, data parallel does not.
        big = bench.state_bytes_at(w, bench.strategies(16)[strategy])
        assert (big["params"] < m.params_bytes) == (strategy == "fsdp")


def test_paper_sizes_lower_from_abstract_shapes_only():
    bench = _benchmark()
    t5 = bench.workload("t5", "paper", 8)
    total = bench.state_bytes_at(t5, {"fsdp": 8})["total_params"]
    assert total / 2 == pytest.approx(4.76e9, rel=0.05)  # bf16 T5-XXL encoder, 4.6-4.8B
    base = bench.workload("base64", "paper", 8)
    assert bench.state_bytes_at(base, {"data": 8})["total_params"] / 4 == pytest.approx(
        2.0e9, rel=0.15)  # Imagen's 2B base U-Net, float32 parameters
    # Nothing was allocated: the workloads hold only shapes.
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(base.batch))


def test_benchmark_resumes_merges_and_refuses_mixed_reports(tmp_path, capsys):
    """--resume keeps measured rows (not re-measured: same compile time), adds the missing
    ones and writes each as it is measured; --merge joins another report's rows;
    --report_only measures nothing; a report for another device count is refused."""
    import json

    bench = _benchmark()
    out, other = str(tmp_path / "a.md"), str(tmp_path / "b.md")
    common = ["--devices=8", "--sizes=tiny", "--stages=t5", "--time_steps=0"]
    bench.main(common + ["--strategies=data", f"--out={out}"])
    first = json.load(open(tmp_path / "a.json"))["results"]
    assert [r["strategy"] for r in first] == ["data"]
    bench.main(common + ["--strategies=data,fsdp", "--resume", f"--out={out}"])
    rows = json.load(open(tmp_path / "a.json"))["results"]
    assert [r["strategy"] for r in rows] == ["data", "fsdp"]
    assert rows[0]["compile_s"] == first[0]["compile_s"]  # kept, not measured again
    assert rows[1]["environment"] and rows[1]["device"] == "cpu"

    bench.main(common + ["--strategies=tensor", f"--out={other}"])
    bench.main(common + ["--strategies=data,fsdp,tensor", "--resume", "--report_only",
                         f"--merge={tmp_path / 'b.json'}", f"--out={out}"])
    merged = json.load(open(tmp_path / "a.json"))["results"]
    assert [r["strategy"] for r in merged] == ["data", "fsdp", "tensor"]
    assert "Partial" not in open(out).read()

    with pytest.raises(SystemExit, match="measured on 8 devices, not --devices=4"):
        bench.main(["--devices=4", "--sizes=tiny", "--stages=t5", "--resume", f"--out={out}"])


def test_fewest_devices_counts_exact_state_bytes():
    """min_devices: replicated state never fits below its size; FSDP's shrinks as 1/N."""
    bench = _benchmark()
    w = bench.workload("base64", "tiny", 2)
    gib = bench.GIB
    state = bench.state_bytes_at(w, {"data": 1})
    total = (state["params"] + state["optimizer"] + state["ema"]) / gib
    m = bench.Measurement(stage="base64", size="tiny", strategy="fsdp", mesh={}, global_batch=2,
                          params_total_bytes=0, params_bytes=0, optimizer_bytes=0,
                          temp_bytes=0, peak_bytes=0, collectives={}, sent_mib=0.0,
                          compile_s=0.0)
    assert bench.min_devices(w, "data", m, total * 1.01) == 1
    assert bench.min_devices(w, "data", m, total * 0.5) is None  # replicated: never fits
    n = bench.min_devices(w, "fsdp", m, total * 0.3)
    at_n = bench.state_bytes_at(w, bench.strategies(n)["fsdp"])
    assert sum(at_n[k] for k in ("params", "optimizer", "ema")) / gib <= total * 0.3
    assert n >= 4
