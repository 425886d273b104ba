"""The stage interface and registry: every stage is found by name and satisfies the
protocol; the generic layer names no family and no stage; and a new stage is one
class, its registration and its config -- shown by training a toy stage that lives
only in this file with the real trainer."""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import imagen, unclip
from imagen_jax import stage_registry
from imagen_jax.stage_registry import Stage, StageSpec, build_stage, known_stages, lookup

REPO = pathlib.Path(__file__).resolve().parents[2]
ALL_STAGES = ("imagen.base64", "imagen.sr1024", "imagen.sr256", "unclip.clip",
              "unclip.decoder64", "unclip.prior", "unclip.upsample1024", "unclip.upsample256")


def test_every_stage_is_registered_and_satisfies_the_protocol():
    assert known_stages() == ALL_STAGES
    for name in ALL_STAGES:
        family, kind = name.split(".")
        config = (imagen if family == "imagen" else unclip).get_config(f"tiny,{kind}")
        stage = build_stage(config)
        assert isinstance(stage, Stage), name
        assert stage.batch_keys and all(isinstance(k, str) for k in stage.batch_keys)
        assert lookup(name).name == name


@pytest.mark.parametrize("name, match", [
    ("imagen.sr512", r"^config\.stage: unknown stage 'imagen\.sr512'; known: \("),
    ("dalle3.prior", r"^config\.stage: unknown stage 'dalle3\.prior'"),
    (None, r"^config\.stage must be a string"),
])
def test_unknown_stage_is_one_line_naming_the_field(name, match):
    with pytest.raises(ValueError, match=match) as info:
        lookup(name)
    assert "\n" not in str(info.value)


def test_registering_a_name_twice_or_a_bad_name_is_an_error():
    spec = lookup("imagen.base64")
    assert stage_registry.register(spec) is spec  # the same spec again: a module re-import
    with pytest.raises(ValueError, match="already registered"):
        stage_registry.register(dataclasses.replace(spec, check_config=lambda c: None))
    with pytest.raises(ValueError, match="must be 'family.kind'"):
        stage_registry.register(dataclasses.replace(spec, name="base64"))


def _python_files(folder: str) -> list[pathlib.Path]:
    return sorted((REPO / folder).rglob("*.py"))


def test_the_generic_layer_names_no_family_and_no_stage():
    """imagen_jax/train/ works through the registry only: no stage class, no stage or
    family name, no family module."""
    names = re.compile(r"""["'](imagen|unclip)(\.|["'])|unclip_jax|imagen_jax\.stages\b"""
                       r"""|\b(BaseStage|SuperResolutionStage|DecoderStage|PriorStage|"""
                       r"""ClipStage|UpsamplerStage)\b""")
    found = [f"{path.relative_to(REPO)}:{i}: {line.strip()}"
             for path in _python_files("imagen_jax/train")
             for i, line in enumerate(path.read_text().splitlines(), 1) if names.search(line)]
    assert found == []


def test_imagen_jax_never_imports_unclip_jax():
    imports = []
    for path in _python_files("imagen_jax"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            imports += [f"{path.relative_to(REPO)}: {m}" for m in modules
                        if m.split(".")[0] == "unclip_jax"]
    assert imports == []


# -- a new stage: one class, one registration, one config ---------------------------

class _PixelDenoiser(nn.Module):
    """A 1x1 convolution: predicts the noise from the noisy pixels and log-SNR."""

    @nn.compact
    def __call__(self, z, logsnr):
        kernel = self.param("kernel", nn.with_logical_partitioning(
            nn.initializers.zeros, ("embed", "mlp")), (4, 3))
        x = jnp.concatenate([z, jnp.broadcast_to(logsnr[:, None, None, None],
                                                  z.shape[:3] + (1,))], -1)
        return x @ kernel


@dataclasses.dataclass(frozen=True)
class ToyStage:
    """Denoises images with no condition at all: the smallest thing the trainer can train."""

    image_size: int
    batch_keys = ("images",)

    def init(self, key, text_len):
        s = self.image_size
        return _PixelDenoiser().init(key, jnp.zeros((1, s, s, 3)), jnp.zeros((1,)))

    def loss(self, params, batch, key):
        from imagen_jax.diffusion import CosineSchedule, diffusion_loss
        model = lambda z, logsnr: _PixelDenoiser().apply({"params": params}, z, logsnr)
        loss, _ = diffusion_loss(model, batch["images"], key, CosineSchedule(), "eps")
        return loss, {"loss": loss}

    def preview(self, params, batch, key, sample):
        return None


def test_a_new_stage_is_one_class_its_registration_and_its_config(tmp_path, monkeypatch):
    from imagen_jax.train.trainer import train

    # The registry as it was comes back after the test.
    monkeypatch.setattr(stage_registry, "_REGISTRY", dict(stage_registry._REGISTRY))
    stage_registry.register(StageSpec("toy.pixels", lambda c: ToyStage(c.image_size)))
    config = imagen.get_config("tiny,base64")  # the config: any stage's, re-pointed
    config.stage = "toy.pixels"
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.num_train, config.data.num_test, config.data.shuffle_buffer = 16, 8, 16
    config.train.steps, config.train.warmup_steps, config.train.batch_size = 3, 0, 8
    config.train.learning_rate = 0.05
    config.checkpoint.every_steps, config.checkpoint.async_save = 3, False
    config.log.every_steps, config.log.progress_bar = 1, False
    config.mesh.update(data=1)
    losses = []
    state = train(config, str(tmp_path / "run"), devices=jax.devices()[:1],
                  on_step=lambda step, m: losses.append(float(m["loss"])))
    assert int(state.step) == 3 and len(losses) == 3 and np.isfinite(losses).all()
    kernel = np.asarray(state.params["kernel"])
    assert kernel.shape == (4, 3) and np.abs(kernel).max() > 0  # trained from zeros
    assert (tmp_path / "run" / "checkpoints" / "3").is_dir()
