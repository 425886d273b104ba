"""What a stage is, and how stage families make their stages known.

A *stage* is the unit a config selects (`config.stage = "imagen.sr256"`): a model,
its training loss and how it samples. The generic layer (train/: the trainer,
config validation, loading a trained run; the benchmarks) works only through the
two Protocols below and `lookup`; it names no family and no stage.

A family is a module that calls `register` for each of its stages on import:
`imagen_jax.stages` ("imagen.*") and `unclip_jax.stages` ("unclip.*"). `lookup`
imports a family's module by name the first time one of its stages is asked for,
so imagen_jax never imports unclip_jax. Adding a stage is one stage class (the
`Stage` protocol), one `register(StageSpec(...))` in its family's module, and its
config variant in configs/.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import jax

# Family prefix -> the module whose import registers that family's stages.
FAMILY_MODULES = {"imagen": "imagen_jax.stages", "unclip": "unclip_jax.stages"}


@runtime_checkable
class Stage(Protocol):
    """A trainable, sampleable stage. Params are the plain (unboxed) 'params' tree."""

    batch_keys: tuple[str, ...]  # what `loss` reads from a prepared batch

    def init(self, key: jax.Array, text_len: int) -> Any:
        """Boxed variables (with logical axis names) for a batch of one."""
        ...

    def loss(self, params: Any, batch: dict, key: jax.Array) -> tuple[jax.Array, dict]:
        """(scalar loss, metrics) on a prepared batch; traced inside the train step."""
        ...

    def preview(self, params: Any, batch: dict, key: jax.Array, sample: Any) -> jax.Array | None:
        """Images [N, H, W, 3] in [-1, 1] sampled for a prepared batch (the trainer's
        periodic samples) with the settings of config.sample; None for a stage that
        makes no images (CLIP, the prior)."""
        ...


class Conditioner(Protocol):
    """The frozen model a stage's batches pass through inside the train step (Imagen's
    T5, unCLIP's CLIP): raw batches (caption ids, images) in, stage batches out."""

    params: Any  # frozen weights: an argument of the step, never trained (None: none)
    tokenizer: Any  # captions -> ids for the input pipeline (None: captions unused)

    def prepare(self, params: Any, batch: dict) -> dict:
        ...

    def abstract_params(self) -> Any:
        """`params` as shapes with their logical axis names (`jax.eval_shape` of the
        module's init), from which they are sharded over the mesh; None: no params."""
        ...


CaptionSource = Callable[[], Iterable[str]]


def no_conditioner(config: Any, workdir: str, captions: CaptionSource) -> None:
    """For stages whose batches need nothing before the loss (images only)."""
    return None


def no_weightless_conditioner(config: Any) -> None:
    return None


def no_config_checks(config: Any) -> None:
    return None


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """A registered stage: how to build it and what the generic layer asks of it."""

    name: str  # "family.kind", the value of config.stage
    build: Callable[[Any], Stage]  # config -> stage
    # config -> None; raises ValueError naming the field for values this stage cannot
    # use (the generic checks -- mesh, batch, learning rate -- run before it).
    check_config: Callable[[Any], None] = no_config_checks
    # (config, workdir, captions) -> the frozen conditioner, or None. `captions()` is
    # the training captions, the corpus of an offline tokenizer.
    conditioner: Callable[[Any, str, CaptionSource], Conditioner | None] = no_conditioner
    # config -> the same conditioner with no weights (params None): its architecture
    # at the config's dtype, for compiling the step from shapes (imagen_jax/train/aot.py)
    # on a machine without the checkpoint.
    weightless_conditioner: Callable[[Any], Conditioner | None] = no_weightless_conditioner
    # directory -> a frozen image-text model for evaluation (encode_images(images) ->
    # [N, E], encode_prompts(prompts) -> (z_t [N, E], ...)), e.g. CLIP for the CLIP
    # score; None for a stage that cannot score.
    image_text_scorer: Callable[[str], Any] | None = None


_REGISTRY: dict[str, StageSpec] = {}


def register(spec: StageSpec) -> StageSpec:
    """Makes `spec.name` selectable by config.stage. Registering a name twice is an
    error unless it is the same spec (a module imported again)."""
    family, _, kind = spec.name.partition(".")
    if not family or not kind:
        raise ValueError(f"stage name {spec.name!r} must be 'family.kind'")
    if _REGISTRY.get(spec.name, spec) != spec:
        raise ValueError(f"stage {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _import_family(family: str) -> None:
    if family in FAMILY_MODULES:
        importlib.import_module(FAMILY_MODULES[family])


def known_stages() -> tuple[str, ...]:
    """Every registered stage name (importing each known family first)."""
    for family in FAMILY_MODULES:
        _import_family(family)
    return tuple(sorted(_REGISTRY))


def lookup(name: Any) -> StageSpec:
    """The spec registered as `name`; ValueError naming config.stage if there is none."""
    if not isinstance(name, str):
        raise ValueError(f"config.stage must be a string like 'imagen.base64', got {name!r}")
    if name not in _REGISTRY:
        _import_family(name.partition(".")[0])
    if name not in _REGISTRY:
        raise ValueError(f"config.stage: unknown stage {name!r}; known: {known_stages()}")
    return _REGISTRY[name]


def build_stage(config: Any) -> Stage:
    """The stage config.stage selects, built from the config."""
    return lookup(config.stage).build(config)
