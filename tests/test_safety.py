"""Safety (#10): no code path can unpickle, and sampling opens no network connection."""

from __future__ import annotations

import ast
import os
import socket

import jax
import jax.numpy as jnp
import pytest

from imagen_jax.diffusion import SamplerSettings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME_DIRS = ("imagen_jax", "unclip_jax", "configs", "launch", "benchmarks")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}


def pickle_paths(source: str, filename: str = "<string>") -> list[str]:
    """Lines that import a pickle module, call torch.load / pickle-style loads, or pass
    allow_pickle=True (numpy's default, False, is safe)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(
                node, ast.ImportFrom) and node.module else [])
            if any(n.split(".")[0] in PICKLE_MODULES for n in names):
                found.append(f"{filename}:{node.lineno} imports a pickle module")
        elif isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in ("torch.load", "pickle.load", "pickle.loads", "joblib.load"):
                found.append(f"{filename}:{node.lineno} calls {func}")
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant)
                                                     and kw.value.value is False):
                    found.append(f"{filename}:{node.lineno} passes allow_pickle={ast.unparse(kw.value)}")
    return found


def test_scanner_finds_each_kind_of_pickle_path():
    bad = ("import pickle\nfrom joblib import load\nimport torch\n"
           "torch.load('m.bin')\nimport numpy as np\nnp.load('a.npy', allow_pickle=True)\n"
           "np.load('b.npy', allow_pickle=flag)\nnp.load('c.npy', allow_pickle=False)\n")
    assert [line.split(" ", 1)[0] for line in pickle_paths(bad)] == [
        "<string>:1", "<string>:2", "<string>:4", "<string>:6", "<string>:7"]


def test_no_runtime_code_can_unpickle():
    found, scanned = [], 0
    for top in RUNTIME_DIRS:
        for root, _, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    with open(path, encoding="utf-8") as f:
                        found += pickle_paths(f.read(), os.path.relpath(path, REPO))
                    scanned += 1
    assert scanned > 50, f"only {scanned} files scanned: is the layout different?"
    assert not found, "\n".join(found)


@pytest.fixture
def no_network(monkeypatch):
    """Every way of opening a connection raises, so a test fails if one is tried."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network access attempted: {args[1:] or args}")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_no_network_fixture_catches_a_connection(no_network):
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("127.0.0.1", 9))
    assert no_network


def test_sampling_runs_with_the_network_disabled(no_network, tmp_path):
    from imagen_jax.nn.unet import UNetConfig
    from imagen_jax.sample import smoke_sample
    from imagen_jax.stages import BaseStage, unbox

    info = smoke_sample(str(tmp_path / "grid.png"), batch=2, size=16, guidance=3.0,
                        show_progress=False, settings=SamplerSettings(steps=3))
    assert os.path.exists(info["paths"][0])
    stage = BaseStage(unet=UNetConfig(channels=(8, 16), num_res_blocks=(1, 1),
                                      attention_head_dim=8, cond_dim=16, text_dim=8,
                                      num_groups=4), image_size=16)
    params = unbox(stage.init(jax.random.PRNGKey(0), 4))
    images = stage.sample(params, jnp.ones((2, 4, 8)), jnp.ones((2, 4), bool),
                          jax.random.PRNGKey(1), settings=SamplerSettings(steps=3))
    assert images.shape == (2, 16, 16, 3) and bool(jnp.isfinite(images).all())
    assert not no_network
