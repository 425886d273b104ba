"""The scoring and DrawBench commands on an untrained tiny cascade's checkpoints (what
they read is a workdir's config and latest checkpoint; training them first would
only add the compile of two train steps)."""

import json
import os
import subprocess
import sys

import jax
import pytest

from configs import imagen
from imagen_jax.evaluate import drawbench
from imagen_jax.train.run_config import save_config
from imagen_jax.train.trainer import initial_state, setup
from tests.xla_env import process_xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def cascade_dirs(tmp_path_factory):
    """A tiny base (16 px) and SR (16 -> 64) stage as the trainer leaves a workdir:
    config.json, the offline vocabulary and a checkpoint (of the initial state)."""
    root = tmp_path_factory.mktemp("cascade")
    workdirs = []
    for stage in ("base64", "sr1024"):
        c = imagen.get_config(f"tiny,{stage}")
        c.data.data_dir = str(root / "tfds")
        c.data.num_train, c.data.num_test, c.data.shuffle_buffer = 16, 8, 16
        c.train.steps, c.train.warmup_steps, c.train.batch_size = 1, 1, 4
        c.checkpoint.async_save = False
        c.log.progress_bar = False
        c.mesh.update(data=1)
        c.sample.steps = 2
        workdir = str(root / stage)
        save_config(c, workdir)
        run = setup(c, workdir, devices=jax.devices()[:1])
        assert run.checkpointer.save(1, initial_state(run), run.iterator, force=True)
        run.checkpointer.wait()
        run.checkpointer.close()
        workdirs.append(workdir)
    return workdirs


def _run(*args):
    # One CPU device (not the suite's 8 fake ones); the suite's other XLA flags kept:
    # the CLI compiles the cascade's samplers, faster with the suite's compile-time
    # flags (tests/conftest.py).
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, XLA_FLAGS=process_xla_flags()))


def test_score_shapes_scores_a_checkpoint_then_its_own_images(cascade_dirs, tmp_path):
    out = tmp_path / "bench"
    result = _run("imagen_jax.evaluate.score_shapes", *[f"--workdir={w}" for w in cascade_dirs],
                  "--num_prompts=6", "--batch=4", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "colour_shape" in result.stdout
    report = json.loads((out / "shapesbench.json").read_text())
    assert report["summary"]["all"]["n"] == 6 and len(report["rows"]) == 6
    assert len(list((out / "images").glob("*.png"))) == 6
    # The written folder scores again, image for image, to the same result.
    again = _run("imagen_jax.evaluate.score_shapes", f"--images_dir={out / 'images'}",
                 f"--out={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr[-2000:]
    rescored = json.loads((tmp_path / "again" / "shapesbench.json").read_text())
    assert rescored["summary"] == report["summary"]


def test_score_shapes_errors_are_one_line(tmp_path):
    result = _run("imagen_jax.evaluate.score_shapes", f"--images_dir={tmp_path / 'none'}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: image_text_folder: "
                                                             "source_dir")
    result = _run("imagen_jax.evaluate.score_shapes")
    assert "give either --workdir" in result.stderr


def test_drawbench_page_pairs_two_models_in_random_order(cascade_dirs, tmp_path):
    csv_path = tmp_path / "drawbench.csv"
    csv_path.write_text("Prompts,Category\na red circle,Colors\ntwo blue squares,Counting\n"
                        "a green triangle above a red square,Positional\n,Colors\n")
    path = drawbench.run(str(csv_path), {"a": cascade_dirs, "b": cascade_dirs},
                         str(tmp_path / "db"), images_per_prompt=2, batch_size=4)
    page = open(path, encoding="utf-8").read()
    assert page.count('class="item"') == 3 and page.count("data:image/png;base64,") == 12
    for category in ("Colors (1)", "Counting (1)", "Positional (1)"):
        assert category in page
    assert "exportRatings" in page and "http" not in page  # self-contained
    key = json.loads((tmp_path / "db" / "key.json").read_text())
    assert {(i["left"], i["right"]) for i in key["items"]} <= {("a", "b"), ("b", "a")}
    assert len(list((tmp_path / "db" / "images" / "b").glob("*.png"))) == 6


def test_drawbench_left_right_order_is_seeded_and_mixed():
    import numpy as np
    rows = [(f"p{i}", "C") for i in range(40)]
    images = {m: [[np.zeros((4, 4, 3), np.uint8)]] * 40 for m in ("a", "b")}
    _, key = drawbench.build_html(rows, images, seed=3)
    _, same = drawbench.build_html(rows, images, seed=3)
    lefts = [k["left"] for k in key]
    assert lefts == [k["left"] for k in same]
    assert 10 < lefts.count("a") < 30


def test_drawbench_csv_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,category\nx,y\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['Prompts', 'Category'\]"):
        drawbench.read_prompts(str(bad))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        drawbench.read_prompts(str(tmp_path / "nope.csv"))
    empty = tmp_path / "empty.csv"
    empty.write_text("Prompts,Category\n")
    with pytest.raises(ValueError, match="no prompts"):
        drawbench.read_prompts(str(empty))


def test_drawbench_cli_reports_a_bad_csv_in_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,category\nx,y\n")
    result = _run("imagen_jax.evaluate.drawbench", f"--prompts_csv={bad}", "--a=nowhere")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: prompts_csv")
