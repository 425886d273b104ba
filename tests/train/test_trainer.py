"""The trainer end to end on 8 fake CPU devices (tests/conftest.py): restore onto other
meshes, non-finite handling, main -> checkpoint -> sample. A resumed run equal to an
uninterrupted one, across killed processes: test_preemption_soak.py."""

import os

import jax
import numpy as np
import pytest

from configs import imagen
from imagen_jax.sample_cascade import Overrides, sample_to_files
from imagen_jax.train import checkpoint as ckpt_lib
from imagen_jax.train.run_config import save_config
from imagen_jax.train.trainer import initial_state, setup, train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _config(data_dir, stage="base64", steps=4, **train):
    c = imagen.get_config(f"tiny,{stage}")
    c.data.data_dir = data_dir
    c.data.num_train, c.data.num_test, c.data.shuffle_buffer = 32, 8, 32
    c.train.steps, c.train.warmup_steps = steps, 2
    c.train.update(train)
    c.checkpoint.every_steps = 2
    c.checkpoint.async_save = False
    c.log.every_steps = 2
    c.mesh.update(data=1)  # one device unless a test is about meshes: 8 fake devices
    return c                # share 2 real cores, so sharded steps cost 8x here


ONE = jax.devices()[:1]


@pytest.fixture(scope="module")
def cascade(data_dir, tmp_path_factory):
    """{stage: (workdir, final state)}: 2-step base64 and sr256 runs as
    `python -m imagen_jax.main` leaves them (config.json, checkpoints, periodic
    samples). One run serves as another run's init_from source and as a cascade."""
    root = tmp_path_factory.mktemp("cascade")
    runs = {}
    for stage in ["base64", "sr256"]:
        config = _config(data_dir, stage=stage, steps=2)
        config.log.sample_every_steps = 2
        workdir = str(root / stage)
        save_config(config, workdir)  # what `python -m imagen_jax.main` does first
        runs[stage] = (workdir, train(config, workdir, devices=ONE))
    return runs


def _params(state):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]


def test_checkpoint_from_a_4x2_mesh_restores_onto_other_meshes(data_dir, cascade, tmp_path):
    # The trained base64 state (step 2, moved Adafactor statistics), laid out over a
    # (data 4, fsdp 2) mesh by the trainer's own setup and saved by its checkpointer as
    # the loop does. That the step itself trains over meshes is what
    # tests/parallel/test_equivalence.py proves; compiling it here again would add a
    # sharded step's compile time and prove nothing more about checkpoints.
    trained = jax.device_get(cascade["base64"][1])  # host copy: the reference below
    config = _config(data_dir, steps=2)
    config.mesh.update(data=4, fsdp=2, tensor=1)
    run = setup(config, str(tmp_path / "run"))
    saved = jax.device_put(trained, run.state_shardings)
    assert jax.tree.leaves(saved.params)[0].sharding.mesh.shape == {
        "data": 4, "fsdp": 2, "tensor": 1}
    assert run.checkpointer.save(2, saved, run.iterator, force=True)
    run.checkpointer.wait()
    run.checkpointer.close()
    for mesh, devices in [(dict(data=8, fsdp=1), None), (dict(data=1, fsdp=1), ONE)]:
        config.mesh.update(**mesh)
        restored = initial_state(setup(config, str(tmp_path / "run"), devices=devices))
        leaf = jax.tree.leaves(restored.params)[0]
        assert leaf.sharding.mesh.devices.size == (8 if devices is None else 1)
        for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(jax.device_get(restored))):
            np.testing.assert_array_equal(a, b)
        assert int(restored.step) == 2


def test_nonfinite_loss_stops_with_the_step_or_is_skipped(data_dir, tmp_path):
    config = _config(data_dir, steps=6, learning_rate=1e30, grad_clip_norm=0.0,
                     warmup_steps=0, optimizer="adam")
    with pytest.raises(FloatingPointError, match=r"non-finite loss, gradient norm or updated weights at step \d"):
        train(config, str(tmp_path / "error"), devices=ONE)
    config.train.nonfinite = "skip"
    state = train(config, str(tmp_path / "skip"), devices=ONE)
    assert int(state.nonfinite_steps) > 0
    assert all(np.isfinite(p).all() for p in _params(state))


def test_init_from_another_run_and_missing_run_is_an_error(data_dir, cascade, tmp_path):
    source, source_state = cascade["base64"]
    config = _config(data_dir, steps=2, init_from=source)
    run = setup(config, str(tmp_path / "target"), devices=ONE)
    state = initial_state(run)
    for a, b in zip([np.asarray(x) for x in jax.tree.leaves(source_state.ema_params)],
                    _params(state)):
        np.testing.assert_array_equal(a, b)
    config.train.init_from = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no checkpoints under"):
        initial_state(setup(config, str(tmp_path / "target2"), devices=ONE))


def test_main_then_sample_writes_pngs_of_the_cascade_sizes(cascade, tmp_path):
    workdirs = []
    for stage in ["base64", "sr256"]:
        workdir, _ = cascade[stage]
        assert os.path.exists(os.path.join(workdir, "samples", "step_00000002.png"))
        assert ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), save_every=1,
                                     keep=1).latest_step() == 2
        workdirs.append(workdir)
    paths = sample_to_files(workdirs, ["a red circle", "two blue squares"],
                            str(tmp_path / "out"), overrides=Overrides(steps=3))
    from PIL import Image
    finals = [p for p in paths if os.path.basename(p)[0].isdigit()]
    assert len(finals) == 2
    assert Image.open(finals[0]).size == (64, 64)  # 16 (base) x 4 (SR)
    assert any(p.endswith("grid_16.png") for p in paths)
    assert any(p.endswith("grid_64.png") for p in paths)


def test_sample_cli_paths_edit_images_with_trained_stages(cascade, tmp_path):
    """imagen_jax.sample's editing options on trained stages: inpainting keeps the
    unmasked pixels (to PNG rounding), image-to-image and a negative prompt with the
    fast solver in bfloat16 write their PNGs, and --lowres_image runs SR stages alone."""
    from PIL import Image

    from imagen_jax import image_io
    from imagen_jax.sample_cascade import ImageInputs

    base, sr = cascade["base64"][0], cascade["sr256"][0]
    photo = np.linspace(-0.9, 0.9, 16 * 16 * 3, dtype=np.float32).reshape(16, 16, 3)
    image_io.save_png(photo, str(tmp_path / "photo.png"))
    mask = np.zeros((16, 16, 3), np.float32) - 1.0
    mask[4:12, 4:12] = 1.0  # white: generate
    image_io.save_png(mask, str(tmp_path / "mask.png"))
    out = tmp_path / "inpaint"
    paths = sample_to_files([base], ["a red circle", "two blue squares"], str(out),
                            overrides=Overrides(steps=3, sampler="ddpm", resample_rounds=2),
                            inputs=ImageInputs(inpaint_image=str(tmp_path / "photo.png"),
                                               inpaint_mask=str(tmp_path / "mask.png")))
    first = image_io.load_image(next(p for p in paths if os.path.basename(p)[0].isdigit()))
    kept = mask[..., 0] < 0
    given = image_io.load_image(str(tmp_path / "photo.png"))
    np.testing.assert_allclose(first[kept], given[kept], atol=1e-6)
    paths = sample_to_files([base, sr], ["a red circle"], str(tmp_path / "img2img"),
                            overrides=Overrides(steps=4, sampler="dpmpp_2m", strength=0.5,
                                                dtype="bfloat16"),
                            inputs=ImageInputs(negative_prompt="a blue square",
                                               init_image=str(tmp_path / "photo.png")))
    assert Image.open(paths[0]).size == (64, 64)
    paths = sample_to_files([sr], [""], str(tmp_path / "up"), overrides=Overrides(steps=3),
                            inputs=ImageInputs(lowres_image=str(tmp_path / "photo.png")))
    assert Image.open(paths[0]).size == (64, 64)  # 16 px photo x 4
    with pytest.raises(ValueError, match="both --inpaint_image and --inpaint_mask"):
        ImageInputs(inpaint_image=str(tmp_path / "photo.png"))
    with pytest.raises(FileNotFoundError, match="image not found"):
        ImageInputs(init_image=str(tmp_path / "missing.png"))
