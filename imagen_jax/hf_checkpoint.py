"""Reads a local Hugging Face checkpoint directory (config.json + safetensors) and
converts it to Flax params by a conversion table.

Shared by the T5 converter (`imagen_jax/text/t5_convert.py`) and unclip_jax's CLIP
converter (`unclip_jax/clip_convert.py`). Only safetensors are read, and they are parsed here
rather than through a framework: the format is an 8-byte little-endian header
length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
"__metadata__": {...}}, then the raw data buffer (offsets relative to its start).
Tensors are numpy views into a read-only memory map, so a checkpoint of many GB is
neither read up front nor copied twice.

PyTorch `.bin` / `.pt` checkpoints are pickles, and unpickling runs arbitrary code;
they are refused, never opened.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Iterator, Mapping, Sequence

import ml_dtypes
import numpy as np

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# Safetensors dtype codes -> numpy dtypes (explicitly little-endian: the format is).
_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype(bool),
}
# A header bigger than this is not a checkpoint header (the reference reader's limit).
_MAX_HEADER_BYTES = 100_000_000


class SafetensorsFile(Mapping[str, np.ndarray]):
    """One .safetensors file: a lazy, read-only mapping name -> numpy array."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._header, self._data_start, file_size = _read_header(self.path)
        self.metadata: dict[str, str] = self._header.pop("__metadata__", None) or {}
        _validate_header(self.path, self._header, file_size - self._data_start)
        self._map: np.memmap | None = None

    def _buffer(self) -> np.ndarray:
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._map

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape of `name`, without touching its data."""
        return tuple(self._header[name]["shape"])

    def __getitem__(self, name: str) -> np.ndarray:
        entry = self._header[name]  # KeyError for an unknown name, as a Mapping should
        dtype = _DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        raw = self._buffer()[self._data_start + begin:self._data_start + end]
        if entry["dtype"] == "BF16" and sys.byteorder != "little":
            # ml_dtypes.bfloat16 is native-order only; the file is little-endian.
            raise ValueError(f"{self.path}: tensor {name!r}: reading BF16 needs a "
                             "little-endian host")
        return raw.view(dtype).reshape(entry["shape"])

    def __contains__(self, name: object) -> bool:
        return name in self._header

    def __iter__(self) -> Iterator[str]:
        return iter(self._header)

    def __len__(self) -> int:
        return len(self._header)


def _read_header(path: str) -> tuple[dict[str, Any], int, int]:
    """(parsed JSON header, offset of the data buffer, file size)."""
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header "
                             "length)")
        header_len = int.from_bytes(prefix, "little")
        if header_len > min(_MAX_HEADER_BYTES, file_size - 8):
            raise ValueError(f"{path}: safetensors header length {header_len} exceeds the file "
                             f"({file_size} bytes)")
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: safetensors header is not valid JSON ({err})") from err
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a JSON object")
    return header, 8 + header_len, file_size


def _validate_header(path: str, header: Mapping[str, Any], data_size: int) -> None:
    """Checks dtypes, shapes and offsets of every entry, and that tensors do not overlap."""
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: tensor {name!r} has a malformed header entry")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r} "
                             f"(supported: {', '.join(_DTYPES)})")
        if (not isinstance(shape, list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                           for d in shape)):
            raise ValueError(f"{path}: tensor {name!r} has invalid shape {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise ValueError(f"{path}: tensor {name!r} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise ValueError(f"{path}: tensor {name!r} data_offsets [{begin}, {end}] fall outside "
                             f"the {data_size}-byte data buffer")
        expected = math.prod(shape) * _DTYPES[dtype].itemsize
        if end - begin != expected:
            raise ValueError(f"{path}: tensor {name!r} spans {end - begin} bytes, but shape "
                             f"{tuple(shape)} of {dtype} needs {expected}")
        if end > begin:
            spans.append((begin, end, name))
    spans.sort()
    for (_, prev_end, prev), (begin, _, name) in zip(spans, spans[1:]):
        if begin < prev_end:
            raise ValueError(f"{path}: tensors {prev!r} and {name!r} overlap in the data buffer")


class Checkpoint(Mapping[str, np.ndarray]):
    """A Hugging Face checkpoint directory: `config` (dict) and lazily-read tensors.

    Works for a single `model.safetensors` and for a sharded checkpoint
    (`model.safetensors.index.json` whose `weight_map` names each tensor's shard).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = os.fspath(directory)
        if not os.path.isdir(self.directory):
            raise FileNotFoundError(f"checkpoint directory not found: {self.directory}")
        self.config = _read_json(os.path.join(self.directory, CONFIG_FILE), what="config")
        if not isinstance(self.config, dict):
            raise ValueError(f"{os.path.join(self.directory, CONFIG_FILE)}: not a JSON object")
        self._shards: dict[str, SafetensorsFile] = {}  # opened on first use
        self._weight_map = self._find_weights()

    def _find_weights(self) -> dict[str, str]:
        """name -> shard file name, from the single file or the index."""
        single = os.path.join(self.directory, SAFETENSORS_FILE)
        index = os.path.join(self.directory, SAFETENSORS_INDEX_FILE)
        if os.path.isfile(single):
            return {name: SAFETENSORS_FILE for name in self._shard(SAFETENSORS_FILE)}
        if os.path.isfile(index):
            return self._read_index(index)
        pickles = sorted(f for f in os.listdir(self.directory) if f.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise ValueError(
                f"{self.directory} holds only pickle-based weights ({', '.join(pickles)}), which "
                "are refused because unpickling can run arbitrary code; convert them to "
                "safetensors (e.g. `model.save_pretrained(dir, safe_serialization=True)`)")
        raise FileNotFoundError(f"{self.directory} has neither {SAFETENSORS_FILE} nor "
                                f"{SAFETENSORS_INDEX_FILE}")

    def _read_index(self, index_path: str) -> dict[str, str]:
        index = _read_json(index_path, what="safetensors index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index_path}: no 'weight_map' object")
        for name, shard in weight_map.items():
            # Shards must be plain files beside the index, never a path elsewhere.
            if (not isinstance(shard, str) or os.path.basename(shard) != shard
                    or shard in ("", ".", "..") or not shard.endswith(".safetensors")):
                raise ValueError(f"{index_path}: tensor {name!r} maps to invalid shard {shard!r}")
        for shard in sorted(set(weight_map.values())):
            stored = self._shard(shard)
            listed = [n for n, s in weight_map.items() if s == shard]
            absent = [n for n in listed if n not in stored]
            if absent:
                raise ValueError(f"{os.path.join(self.directory, shard)}: lacks tensor "
                                 f"{absent[0]!r} that {SAFETENSORS_INDEX_FILE} places there")
        return dict(weight_map)

    def _shard(self, file_name: str) -> SafetensorsFile:
        if file_name not in self._shards:
            path = os.path.join(self.directory, file_name)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"checkpoint shard not found: {path}")
            self._shards[file_name] = SafetensorsFile(path)
        return self._shards[file_name]

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape of `name`, without reading its data."""
        return self._shard(self._weight_map[name]).shape(name)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._shard(self._weight_map[name])[name]

    def __contains__(self, name: object) -> bool:
        return name in self._weight_map  # without touching the data

    def __iter__(self) -> Iterator[str]:
        return iter(self._weight_map)

    def __len__(self) -> int:
        return len(self._weight_map)

    def take(self, name: str, shape: Sequence[int]) -> np.ndarray:
        """The tensor `name`, checked to have `shape`."""
        return take(self, name, shape, source=self.directory)


def take(tensors: Mapping[str, np.ndarray], name: str, shape: Sequence[int],
         source: str = "checkpoint") -> np.ndarray:
    """`tensors[name]`, with errors that name the tensor (and both shapes on a mismatch)."""
    if name not in tensors:
        raise ValueError(f"{name}: missing from {source}")
    array = tensors[name]
    expected, found = tuple(int(d) for d in shape), tuple(array.shape)
    if found != expected:
        raise ValueError(f"{name}: expected shape {expected}, found {found}")
    return array


def check_model_type(checkpoint: Checkpoint, expected: Sequence[str]) -> None:
    """ValueError if config.json names a `model_type` other than `expected` (e.g. a BERT
    directory offered as T5), before its keys are misread. A config without the key
    (written by hand, or by an old `transformers`) is left to the field checks."""
    model_type = checkpoint.config.get("model_type")
    if model_type is not None and model_type not in expected:
        raise ValueError(f"{os.path.join(checkpoint.directory, CONFIG_FILE)}: model_type "
                         f"{model_type!r} is not a {' / '.join(map(repr, expected))} checkpoint")


def open_checkpoint(directory: str | os.PathLike) -> Checkpoint:
    """Opens a local Hugging Face checkpoint directory (config.json + safetensors)."""
    return Checkpoint(directory)


def _read_json(path: str, what: str) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from err


# Flax parameter path -> (HF tensor name, HF shape, HF array -> Flax array)
ConversionTable = dict[tuple[str, ...], tuple[str, tuple[int, ...], Any]]


def param_shapes(init_fn: Any, *args: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flat {path: shape} of the 'params' an `init_fn(*args)` would create (abstractly)."""
    import flax
    import flax.linen as nn
    import jax

    variables = jax.eval_shape(init_fn, *args)
    params = nn.meta.unbox(variables["params"])
    return {path: tuple(leaf.shape)
            for path, leaf in flax.traverse_util.flatten_dict(params).items()}


def convert_by_table(checkpoint: Checkpoint, table: ConversionTable,
                     expected: Mapping[tuple[str, ...], tuple[int, ...]], dtype: np.dtype, *,
                     prefix: str | tuple[str, ...] = "", also_used: Sequence[str] = ()) -> dict:
    """Nested Flax params built by `table` from `checkpoint`, every shape checked.

    `expected` is the module's own {path: shape}; the table must cover exactly those
    paths. Checkpoint tensors under `prefix` that the table does not read mean the
    config and the weights disagree (e.g. more layers stored than configured), which
    is refused rather than silently ignored.
    """
    import flax
    import jax.numpy as jnp

    if set(table) != set(expected):
        # The table and the module disagree: a bug in the converter, not the checkpoint.
        raise RuntimeError("conversion table does not match the module's parameters: "
                           f"{sorted(set(table) ^ set(expected))[:4]}")
    used = set(also_used) | {name for name, _, _ in table.values()}
    unused = sorted(n for n in checkpoint if n.startswith(prefix) and n not in used)
    if unused:
        raise ValueError(f"{checkpoint.directory}: {len(unused)} tensor(s) that config.json "
                         f"does not account for (e.g. {unused[0]}); config and weights disagree")
    flat = {}
    for path, (name, hf_shape, to_flax) in table.items():
        array = to_flax(take(checkpoint, name, hf_shape, source=checkpoint.directory))
        if tuple(array.shape) != expected[path]:
            raise RuntimeError(f"{name}: converted to {tuple(array.shape)}, but "
                               f"{'/'.join(path)} expects {expected[path]}")
        flat[path] = jnp.asarray(np.array(array, dtype=dtype))  # a copy, in C order
    return flax.traverse_util.unflatten_dict(flat)


_PARAM_DTYPES = {np.dtype(np.float32): np.dtype(np.float32),
                 np.dtype(ml_dtypes.bfloat16): np.dtype(ml_dtypes.bfloat16)}


def param_dtype(dtype: Any) -> np.dtype:
    """The numpy dtype converted parameters are stored in: float32 or bfloat16 only."""
    import jax.numpy as jnp  # jnp.dtype also understands the name 'bfloat16'

    if dtype is None:  # jnp.dtype(None) would quietly mean float64
        raise ValueError("dtype must be float32 or bfloat16, got None")
    try:
        key = jnp.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}") from err
    if key not in _PARAM_DTYPES:
        raise ValueError(f"dtype must be float32 or bfloat16, got {key.name}")
    return _PARAM_DTYPES[key]
