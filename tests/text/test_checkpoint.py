"""Safetensors reader, checkpoint directory handling and conversion error messages."""

from __future__ import annotations

import json
import shutil
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from imagen_jax.hf_checkpoint import SafetensorsFile, open_checkpoint, take
from imagen_jax.text import load_t5_encoder


def _copy_with_tensors(src, dst, tensors) -> None:
    """A checkpoint directory with src's config.json and `tensors` as model.safetensors."""
    dst.mkdir(exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    save_file(tensors, str(dst / "model.safetensors"))


def _write_raw(path, header: dict, data: bytes) -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def test_reads_dtypes_like_the_reference_reader(tmp_path):
    rng = np.random.RandomState(0)
    tensors = {
        "f32": rng.randn(3, 4).astype(np.float32),
        "f16": rng.randn(5).astype(np.float16),
        "f64": rng.randn(2, 2, 2),
        "i64": rng.randint(-9, 9, (4,)).astype(np.int64),
        "i32": rng.randint(-9, 9, (2, 3)).astype(np.int32),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.array(2.5, dtype=np.float32),
    }
    save_file(tensors, str(tmp_path / "a.safetensors"), metadata={"format": "np"})
    reference = load_file(str(tmp_path / "a.safetensors"))
    ours = SafetensorsFile(tmp_path / "a.safetensors")
    assert ours.metadata == {"format": "np"}
    assert sorted(ours) == sorted(reference)
    for name, value in reference.items():
        assert ours[name].dtype == value.dtype and ours[name].shape == value.shape
        np.testing.assert_array_equal(ours[name], value)
        assert not ours[name].flags.writeable  # a view of the read-only memory map


def test_reads_bfloat16(tmp_path):
    import torch
    from safetensors.torch import save_file as save_torch

    value = torch.randn(4, 6, dtype=torch.float32).to(torch.bfloat16)
    save_torch({"w": value}, str(tmp_path / "b.safetensors"))
    ours = SafetensorsFile(tmp_path / "b.safetensors")["w"]
    assert ours.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(ours.astype(np.float32), value.float().numpy())


@pytest.mark.parametrize("header, data, match", [
    ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\0" * 8,
     "outside the 8-byte data buffer"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8,
     "needs 12"),
    ({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 2,
     "unsupported dtype 'Q4'"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "overlap"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4,
     "invalid shape"),
])
def test_rejects_malformed_headers(tmp_path, header, data, match):
    path = tmp_path / "bad.safetensors"
    _write_raw(path, header, data)
    with pytest.raises(ValueError, match=match) as info:
        SafetensorsFile(path)
    assert "bad.safetensors" in str(info.value)


def test_rejects_truncated_file(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<Q", 1_000) + b"{}")
    with pytest.raises(ValueError, match="header length 1000 exceeds"):
        SafetensorsFile(path)


def test_take_names_tensor_and_shapes():
    tensors = {"a.weight": np.zeros((3, 4))}
    assert take(tensors, "a.weight", (3, 4)).shape == (3, 4)
    with pytest.raises(ValueError, match=r"^a\.weight: expected shape \(4, 3\), found \(3, 4\)$"):
        take(tensors, "a.weight", (4, 3))
    with pytest.raises(ValueError, match=r"^b\.weight: missing"):
        take(tensors, "b.weight", (1,))


def test_wrong_shape_names_tensor_and_both_shapes(hf_checkpoints, tmp_path):
    src = hf_checkpoints["relu"][1]
    tensors = load_file(str(src / "model.safetensors"))
    name = "encoder.block.1.layer.0.SelfAttention.k.weight"
    tensors[name] = tensors[name][:, :16].copy()
    _copy_with_tensors(src, tmp_path / "bad", tensors)
    with pytest.raises(ValueError) as info:
        load_t5_encoder(tmp_path / "bad")
    assert str(info.value) == f"{name}: expected shape (32, 32), found (32, 16)"


def test_wrong_ffn_shape(hf_checkpoints, tmp_path):
    src = hf_checkpoints["gated-gelu"][1]
    tensors = load_file(str(src / "model.safetensors"))
    name = "encoder.block.0.layer.1.DenseReluDense.wi_1.weight"
    tensors[name] = np.zeros((32, 64), np.float32)  # transposed
    _copy_with_tensors(src, tmp_path / "bad", tensors)
    with pytest.raises(ValueError, match=rf"{name}: expected shape \(64, 32\), found \(32, 64\)"):
        load_t5_encoder(tmp_path / "bad")


@pytest.mark.parametrize("name", ["encoder.block.1.layer.1.layer_norm.weight",
                                  "encoder.final_layer_norm.weight",
                                  "encoder.block.0.layer.0.SelfAttention.relative_attention_bias."
                                  "weight"])
def test_missing_tensor_is_named(hf_checkpoints, tmp_path, name):
    src = hf_checkpoints["relu"][1]
    tensors = load_file(str(src / "model.safetensors"))
    del tensors[name]
    _copy_with_tensors(src, tmp_path / "bad", tensors)
    with pytest.raises(ValueError, match=rf"^{name}: missing"):
        load_t5_encoder(tmp_path / "bad")


def test_missing_embedding_names_both_candidates(hf_checkpoints, tmp_path):
    src = hf_checkpoints["relu"][1]
    tensors = load_file(str(src / "model.safetensors"))
    embedding = tensors.pop("shared.weight")
    _copy_with_tensors(src, tmp_path / "none", tensors)
    with pytest.raises(ValueError, match="shared.weight / encoder.embed_tokens.weight"):
        load_t5_encoder(tmp_path / "none")
    # Stored only under the encoder's own name (tied weights saved the other way round).
    _copy_with_tensors(src, tmp_path / "alt", {**tensors,
                                               "encoder.embed_tokens.weight": embedding})
    _, params = load_t5_encoder(tmp_path / "alt")
    np.testing.assert_array_equal(params["token_embedder"]["embedding"], embedding)


def test_config_with_fewer_layers_than_weights(hf_checkpoints, tmp_path):
    src = hf_checkpoints["relu"][1]
    shutil.copytree(src, tmp_path / "ckpt")
    config = json.loads((src / "config.json").read_text())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "num_layers": 1}))
    with pytest.raises(ValueError, match="encoder.block.1.*config and weights disagree"):
        load_t5_encoder(tmp_path / "ckpt")


def test_pickle_checkpoint_is_refused_unread(hf_checkpoints, tmp_path):
    shutil.copy(hf_checkpoints["relu"][1] / "config.json", tmp_path / "config.json")
    # Not even a valid pickle: if the loader tried to unpickle it, the error would differ.
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04 not a pickle")
    with pytest.raises(ValueError, match="pickle-based.*pytorch_model.bin.*safetensors"):
        load_t5_encoder(tmp_path)


def test_missing_directory_config_and_weights(hf_checkpoints, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        open_checkpoint(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        open_checkpoint(tmp_path)
    shutil.copy(hf_checkpoints["relu"][1] / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        open_checkpoint(tmp_path)


def test_sharded_index_is_validated(hf_checkpoints, tmp_path):
    model, _ = hf_checkpoints["relu"]
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    checkpoint = open_checkpoint(tmp_path)
    assert "shared.weight" in checkpoint and checkpoint.shape("shared.weight") == (128, 32)
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name = next(iter(index["weight_map"]))
    index["weight_map"][name] = "../elsewhere.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match="invalid shard '../elsewhere.safetensors'"):
        open_checkpoint(tmp_path)
