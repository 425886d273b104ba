"""benchmarks/vs_imagen_pytorch_report.py: ratios, targets and the FLOP rate a target
needs, from a result measured elsewhere (no peer, no timing here); and the harness's
--report_only, which writes it from the JSON alone."""

import importlib.util
import os

import pytest

from benchmarks.vs_imagen_pytorch_report import report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _harness():
    spec = importlib.util.spec_from_file_location(
        "vs_imagen_pytorch", os.path.join(REPO, "benchmarks", "vs_imagen_pytorch.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RESULT = {
    "date": "2026-01-02", "environment": "test machine", "xla_flags": "--x=1",
    "peer_versions": {"imagen_pytorch": "2.1.0", "torch": "2.14.1", "threads": 2},
    "params": {"ours": 100, "peer": 101}, "rounds": 1, "iters": 1,
    "matmul_peak_gflops": 100.0,
    "rows": [{"case": "train 32px batch 8", "kind": "train", "ours_s": 0.5, "peer_s": 1.0,
              "ours_rate": 16.0, "peer_rate": 8.0, "speedup": 2.0, "compile_s": 3.0,
              "flops": 40e9, "peer_flops": 30e9,
              "phases": {"ours": {"forward": 0.1, "backward": 0.3, "adam": 0.01},
                         "peer": {"forward": 0.2, "backward": 0.7, "adam": 0.02}}},
             {"case": "sample 32px batch 4", "kind": "sample", "ours_s": 2.0, "peer_s": 3.0,
              "ours_rate": 10.0, "peer_rate": 6.67, "speedup": 1.5, "compile_s": 4.0}],
    "convs": {"ours": [{"shape": [8, 32, 64], "forward_ms": 5.0, "forward_backward_ms": 10.0}],
              "peer": [{"shape": [8, 32, 64], "forward_ms": 6.0, "forward_backward_ms": 20.0}]},
    "memory": {"ours_peak_rss_mib": 1000.0, "peer_peak_rss_mib": 1100.0},
}


def test_report_rows_and_needed_rate():
    text = "\n".join(report(RESULT))
    assert "(2026-01-02)" in text and "`--x=1`" in text
    assert "| train 32px batch 8 | 500.0 | 1000.0 | 16.00 | 8.00 | 2.00x | 1.10x | 3.0 |" in text
    assert "| sample 32px batch 4 | 2000.0 | 3000.0 | 10.00 | 6.67 | 1.50x | 1.50x | 4.0 |" in text
    # 40 GFLOP in 0.5 s = 80 GFLOP/s; peer 30 GFLOP in 1 s; 1.1x the peer's speed needs
    # the step in 1 / 1.1 s: 40 * 1.1 = 44 GFLOP/s.
    assert "| train 32px batch 8 | 40.0 | 30.0 | 80.0 (80%) | 30.0 (30%) | 44.0 (44%) |" in text
    assert "| train 32px batch 8 | imagen-jax | 100 | 300 | 10 |" in text


def test_report_only_needs_the_json(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        _harness().main(["--report_only", f"--out={tmp_path}/perf.md"])
    (tmp_path / "perf.json").write_text(__import__("json").dumps(RESULT))
    _harness().main(["--report_only", f"--out={tmp_path}/perf.md"])
    assert "2.00x" in (tmp_path / "perf.md").read_text()


def test_profile_table_sums_each_side_per_kind_of_op():
    from benchmarks.step_profile import CATEGORIES

    result = dict(RESULT, rows=[dict(RESULT["rows"][0])])
    ours = {c: 1.0 for c in CATEGORIES}
    ours.update({"conv forward": 30.0, "conv input gradient": 20.0, "conv kernel gradient": 25.0})
    result["rows"][0]["profile"] = {
        "ours": {"wall_ms": 150.0, "thunk_ms": 185.0, "categories": ours,
                 "top": [{"op": "convolution.3", "ms": 9.0, "category": "conv kernel gradient",
                          "shape": "f32[64,3,3,64]{3,2,1,0}"}]},
        "peer": {"forward": {"conv": 40.0, "matmul": 5.0, "attention softmax": 1.0,
                             "other": 20.0},
                 "backward": {"conv input + kernel gradient": 70.0, "matmul": 9.0,
                              "other": 30.0},
                 "forward_wall_ms": 70.0, "backward_wall_ms": 115.0}}
    text = "\n".join(report(result))
    # convolutions: forward 30, backward 20 + 25; the peer's one backward op
    assert "| train 32px batch 8 | convolutions | 30 | 45 | 40 | 70 |" in text
    # attention and dense: our 4 categories at 1 ms (2 forward, 2 backward); peer matmul
    # + softmax
    assert "| train 32px batch 8 | attention and dense layers (matmuls, softmax, masking) " \
           "| 2 | 2 | 6 | 9 |" in text
    # every category once: forward 30 + 5 x 1, backward 45 + 5 x 1
    assert "| train 32px batch 8 | **sum of ops** (wall) | 35 | 50 | 66 (70) | 109 (115) |" in text
    assert "convolution.3 f32[64,3,3,64] (conv kernel gradient) 9.0 ms" in text
