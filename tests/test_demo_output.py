"""What a newcomer sees from the demo (issue #22): no TensorFlow, absl, XLA or libtpu
start-up lines, and a dataset build in two `[data]` lines instead of TFDS's
"Downloading and preparing dataset Unknown size" and its per-file progress bars."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.xla_env import process_xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

START_AND_BUILD = textwrap.dedent("""
    import sys
    from imagen_jax.demo import quiet_native_logs
    print("on", quiet_native_logs(), flush=True)
    from absl import logging
    logging.set_verbosity(logging.ERROR)  # as imagen_jax.demo's main sets it
    from imagen_jax.data.shapes_builder import build_shapes_dataset
    build_shapes_dataset(sys.argv[1], resolution=8, num_train=8, num_test=1)
    build_shapes_dataset(sys.argv[1], resolution=8, num_train=8, num_test=1)  # built: silent
""")


def test_demo_start_and_dataset_build_print_only_their_own_lines(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", START_AND_BUILD, str(tmp_path)], cwd=REPO,
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, XLA_FLAGS=process_xla_flags(1), PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["on 1 x cpu"], proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("[data] ") for line in lines), \
        proc.stderr[-3000:]
    assert lines[0].startswith("[data] generating shapes_captions/r8_n8_1_s0 into ")
    assert lines[1].startswith("[data] shapes_captions/r8_n8_1_s0: test 1, train 8 "
                               "examples in ")
