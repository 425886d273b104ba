"""benchmarks/preemption_soak.py, small: the training command killed twice with SIGKILL
(once while a checkpoint is being written) and preempted once with SIGTERM, then run to
the end; every restart resumes from the newest complete checkpoint and the run equals
an uninterrupted one (the script's longer run: >= 20 kills)."""

import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _soak_module():
    spec = importlib.util.spec_from_file_location(
        "preemption_soak", os.path.join(REPO, "benchmarks", "preemption_soak.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through it
    spec.loader.exec_module(module)
    return module


def test_killed_and_preempted_run_equals_the_uninterrupted_run(tmp_path):
    report = _soak_module().soak(str(tmp_path), kills=2, sigterms=1, steps=9, seed=1,
                                 verbose=True)
    interruptions = report["interruptions"]
    assert [i["signal"] for i in interruptions].count("SIGKILL") == 2
    assert [i["signal"] for i in interruptions].count("SIGTERM") == 1
    for item in interruptions:
        assert item["exit_code"] == (-9 if item["signal"] == "SIGKILL" else 143), item
        assert item["identical"], item
    assert report["during_checkpoint_write"] >= 1  # the aimed kill found a write under way
    assert report["identical_resumes"] == 3
    assert report["final_arrays"] > 400 and report["final_arrays_differing"] == []
    assert report["loss_trajectory_equal"]
