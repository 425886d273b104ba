"""docs/tpu_compile.md's ranking (benchmarks/tpu_compile_report.py): only rows whose
bounds are comparable are ranked, and a bound set by collectives names the collective."""

from __future__ import annotations

import pytest

from benchmarks.tpu_compile_report import extrapolate, write_markdown

GIB = 1 << 30


def _row(stage: str, images_per_s: float, *, scan: bool = False, fits: bool = True,
         bound_by: str = "hbm", collectives: dict | None = None) -> dict:
    return dict(key=f"{stage}@{images_per_s}@{scan}", stage=stage, topology="v4:2x2x2", chips=8,
                strategy="fsdp", mesh={"data": 1, "fsdp": 8, "tensor": 1}, per_chip_batch=8,
                global_batch=64, remat=True, dtype="bfloat16", scan_blocks=scan, overrides="",
                compile_s=1.0, state_bytes=GIB, frozen_bytes=0,
                memory=dict(argument=GIB, output=GIB, temp=GIB, peak=3 * GIB),
                fits=fits, hbm_capacity=32 * GIB,
                collectives=collectives or {"all-gather": dict(count=1, sent_bytes=GIB)},
                collective_sent_bytes=GIB, times=dict(compute=0.1, hbm=0.2, collectives=0.01),
                flops=1e12, hbm_bytes=1e9, bound_s=64 / images_per_s, bound_by=bound_by,
                images_per_s_bound=images_per_s, mfu_at_bound=0.5,
                environment="test", libtpu="0", status="ok")


def _best_lines(tmp_path, rows: list[dict]) -> list[str]:
    path = tmp_path / "report.md"
    write_markdown({"rows": rows}, str(path))
    text = path.read_text().split("## Fastest configuration that fits, per stage")[1]
    return [line for line in text.split("\n## ")[0].splitlines()
            if line.startswith("| ") and "---" not in line][1:]


def test_scanned_tiny_and_unfitting_rows_are_not_ranked(tmp_path):
    narrow = dict(_row("base64", 990.0), overrides="model.channels=(64, 128)")
    rows = [_row("base64", 200.0), _row("base64", 900.0, scan=True),
            _row("base64", 950.0, fits=False), _row("tiny-base64", 5000.0), narrow]
    best = _best_lines(tmp_path, rows)
    assert len(best) == 1 and best[0].startswith("| base64 |")
    assert "unrolled blocks" in best[0] and "| 25.0 |" in best[0]  # 200 images/s / 8 chips


def test_a_collective_bound_names_its_collective(tmp_path):
    collectives = {"all-gather": dict(count=2, sent_bytes=GIB),
                   "all-reduce": dict(count=9, sent_bytes=21 * GIB)}
    best = _best_lines(tmp_path, [_row("t5", 700.0, bound_by="collectives",
                                       collectives=collectives)])
    assert "collectives: AR 21.00 GiB" in best[0]


def test_extrapolation_scales_the_sharded_state_and_keeps_the_temporaries():
    row = _row("base64", 320.0)  # 8 chips: 1 GiB state per chip, peak 3 GiB
    same = extrapolate(row, 8)
    assert same["peak"] == 3 * GIB and same["collective_sent_bytes"] == pytest.approx(GIB)
    far = extrapolate(row, 256)
    assert far["peak"] == pytest.approx(2 * GIB + GIB * 8 / 256)
    assert far["collective_sent_bytes"] == pytest.approx(GIB * (255 / 256) / (7 / 8))
    assert far["bound_by"] == "hbm" and far["images_per_s"] == pytest.approx(8 * 256 / 0.2)
