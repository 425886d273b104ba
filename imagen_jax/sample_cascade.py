"""Sampling from trained stages: rebuild each stage from its workdir, load its (EMA)
weights from the latest checkpoint, and run the cascade. Used by `imagen_jax.sample`."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np
from PIL import Image
from tqdm import tqdm

from imagen_jax import image_io
from imagen_jax.checks import (check_aug_level, check_output_dir, check_positive_int,
                               open_utf8)
from imagen_jax.config_sections import SAMPLER_FIELDS, sampler_settings
from imagen_jax.cascade import Cascade, CascadeStage, StageSampling
from imagen_jax.diffusion import SamplerSettings, check_guidance
from imagen_jax.stages import SAMPLING_DTYPES, with_sampling_dtype
from imagen_jax.text.tokenizer import check_prompts


@dataclasses.dataclass(frozen=True)
class Overrides:
    """Sampling options given on the command line; None keeps each stage's config."""

    steps: int | None = None
    sampler: str | None = None
    eta: float | None = None
    guidance: float | None = None
    threshold: str | None = None
    percentile: float | None = None
    aug_level: float | None = None
    strength: float | None = None  # image-to-image
    resample_rounds: int | None = None  # inpainting (RePaint)
    dtype: str | None = None  # 'bfloat16': parameters and activations cast for sampling

    def __post_init__(self) -> None:
        """Checks the given options at once, before any stage is loaded or compiled."""
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        settings = {k: v for k, v in given.items() if k not in ("guidance", "aug_level",
                                                                 "dtype")}
        SamplerSettings(**settings)  # its defaults stand in for the options not given
        if "guidance" in given:
            check_guidance(self.guidance)
        if "aug_level" in given:
            check_aug_level(self.aug_level)
        if self.dtype is not None and self.dtype not in SAMPLING_DTYPES:
            raise ValueError(f"dtype must be one of {SAMPLING_DTYPES}, got {self.dtype!r}")


def stage_sampling(config: Any, overrides: Overrides) -> StageSampling:
    """How a stage samples: its config.sample, with the options given replacing it."""
    s = config.sample
    settings = sampler_settings(s, config.diffusion.prediction,
                                **{name: getattr(overrides, name) for name in SAMPLER_FIELDS})
    edit = {name: getattr(overrides, name) for name in ("strength", "resample_rounds")
            if getattr(overrides, name) is not None}
    settings = dataclasses.replace(settings, **edit)
    pick = lambda name: s[name] if getattr(overrides, name) is None else getattr(overrides, name)
    return StageSampling(settings=settings, guidance=pick("guidance"),
                         aug_level=pick("aug_level"))


def load_stage(workdir: str, overrides: Overrides, ema: bool = True,
               step: int | None = None) -> CascadeStage:
    """A trained stage from its workdir (config.json + checkpoints + text encoder), at
    its latest checkpoint or at `step`."""
    from imagen_jax.text.from_config import text_encoder_from_config
    from imagen_jax.train.trained import load_trained_stage

    config, stage, params = load_trained_stage(workdir, ema=ema, step=step)
    stage, params = with_sampling_dtype(stage, params, overrides.dtype or "float32")
    encoder = text_encoder_from_config(config.text, workdir)
    return CascadeStage(stage, params, stage_sampling(config, overrides), text_encoder=encoder)


def read_prompts_file(path: str) -> list[str]:
    """The non-blank lines of a UTF-8 text file (a byte-order mark is tolerated), stripped."""
    with open_utf8(path, what="the prompts file") as f:
        return [line.strip() for line in f if line.strip()]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:48] or "empty"


def image_filename(index: int, prompt: str) -> str:
    """The PNG name of prompt number `index`, e.g. `00042_a_red_circle.png`: a function
    of the index and the prompt alone, so that a rerun over the same prompts finds
    what an earlier run wrote (and names sort in prompt order up to 100,000)."""
    return f"{index:05d}_{_slug(prompt)}.png"


def load_cascade(workdirs: Sequence[str], overrides: Overrides = Overrides(),
                 ema: bool = True, from_image: bool = False) -> Cascade:
    """The cascade of trained stages in `workdirs`, base first (SR stages only with
    `from_image`: they upsample a given image)."""
    if not workdirs:
        raise ValueError("no workdirs given: name the base stage's first, then each SR stage's")
    stages = [load_stage(w, overrides, ema) for w in workdirs]
    return Cascade(stages[0].text_encoder, stages, from_image=from_image)


@dataclasses.dataclass(frozen=True)
class ImageInputs:
    """What a sampling run reads besides the prompts, the same for every prompt: a
    negative prompt, and the images of image-to-image, inpainting or upsampling
    (file paths, read and checked before any stage is loaded)."""

    negative_prompt: str | None = None
    init_image: str | None = None  # image-to-image of the base stage (with --strength)
    inpaint_image: str | None = None  # inpainting of the base stage ...
    inpaint_mask: str | None = None  # ... where this image is white (generate)
    lowres_image: str | None = None  # upsampled by SR stages only (no base stage)

    def __post_init__(self) -> None:
        if (self.inpaint_image is None) != (self.inpaint_mask is None):
            raise ValueError("inpainting needs both --inpaint_image and --inpaint_mask")
        edits = [n for n in ("init_image", "inpaint_image", "lowres_image") if getattr(self, n)]
        if len(edits) > 1:
            raise ValueError(f"give one of --init_image, --inpaint_image and --lowres_image, "
                             f"not {edits}")
        for name in ("init_image", "inpaint_image", "inpaint_mask", "lowres_image"):
            path = getattr(self, name)
            if path is not None:
                image_io.load_image(path)  # exists, decodes, not too large: named errors now

    def cascade_kwargs(self, cascade: Cascade, batch: int) -> dict:
        """Keyword arguments of `Cascade.__call__` for a batch of `batch` prompts."""
        kwargs: dict[str, Any] = {}
        if self.negative_prompt is not None:
            kwargs["negative_prompts"] = [self.negative_prompt] * batch
        tile = lambda x: np.broadcast_to(x, (batch,) + x.shape)  # noqa: E731
        size = (cascade.stages[0].stage.image_size
                if self.init_image or self.inpaint_image else None)
        if self.lowres_image:
            kwargs["lowres"] = tile(image_io.load_image(self.lowres_image))
        elif self.init_image:
            kwargs["first_stage_edits"] = {
                "init_image": tile(image_io.load_image(self.init_image, size))}
        elif self.inpaint_image:
            mask = image_io.load_image(self.inpaint_mask, size).mean(-1) > 0.0
            kwargs["first_stage_edits"] = {
                "inpaint_image": tile(image_io.load_image(self.inpaint_image, size)),
                "inpaint_mask": tile(mask.astype(np.float32))}
        return kwargs


def iter_batches(generate_fn: Callable[[list[str], jax.Array], Sequence[Any]],
                 prompts: Sequence[str], *, seed: int, batch_size: int,
                 skip: Callable[[range], bool] | None = None
                 ) -> Iterator[tuple[range, list[np.ndarray]]]:
    """`generate_fn(prompts, key) -> images per stage` over batches of `batch_size`:
    yields (the batch's prompt indices, each stage's images for them as numpy), one
    batch at a time, so that a caller can write each batch and let it go.

    Batch i is prompts[i * batch_size:(i + 1) * batch_size] with the key
    fold_in(PRNGKey(seed), i), in every sampler of both families: the same seed and
    batch size give the same images, also when batches are skipped (`skip(indices)`
    true: not generated, e.g. already written) or a run is resumed. With more than one
    batch the last is padded to `batch_size` (repeating its last prompt) so that the
    samplers compile once.
    """
    check_positive_int(batch_size, "batch_size")
    for index, start in enumerate(range(0, len(prompts), batch_size)):
        indices = range(start, min(start + batch_size, len(prompts)))
        if skip is not None and skip(indices):
            continue
        chunk = list(prompts[start:indices.stop])
        padded = chunk + [chunk[-1]] * (batch_size - len(chunk)) if len(prompts) > batch_size \
            else chunk
        outputs = generate_fn(padded, jax.random.fold_in(jax.random.PRNGKey(seed), index))
        yield indices, [np.asarray(jax.device_get(images))[:len(chunk)] for images in outputs]


def generate_in_batches(generate_fn: Callable[[list[str], jax.Array], Sequence[Any]],
                        prompts: Sequence[str], *, seed: int, batch_size: int,
                        on_batch: Callable[[], None] | None = None) -> list[np.ndarray]:
    """`generate_fn(prompts, key) -> images per stage`, over batches of `batch_size`
    (`iter_batches`); returns each stage's images for all prompts, in order."""
    per_stage: list[list[np.ndarray]] | None = None
    for _, outputs in iter_batches(generate_fn, prompts, seed=seed, batch_size=batch_size):
        if per_stage is None:
            per_stage = [[] for _ in outputs]
        for images, out in zip(outputs, per_stage):
            out.append(images)
        if on_batch is not None:
            on_batch()
    return [np.concatenate(chunks) for chunks in per_stage or []]


def generate(cascade: Cascade, prompts: Sequence[str], *, seed: int = 0, batch_size: int = 64,
             progress: Callable[[str], None] | None = None) -> list[np.ndarray]:
    """Every stage's images ([-1, 1], lowest resolution first) for `prompts`, in batches
    (`generate_in_batches`)."""
    prompts = check_prompts(prompts)  # a str is one prompt, not a list of characters
    if not prompts:
        raise ValueError("no prompts given")
    return generate_in_batches(lambda p, key: cascade(p, key, progress=progress), prompts,
                               seed=seed, batch_size=batch_size)


def write_captioned_pngs(images: np.ndarray, prompts: Sequence[str], out_dir: str) -> list[str]:
    """One PNG per image plus `captions.jsonl` naming each file's prompt (the format
    `image_text_folder` and `imagen_jax.evaluate.score_shapes --images_dir` read)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [image_io.save_png(image, os.path.join(out_dir, image_filename(i, prompt)))
             for i, (prompt, image) in enumerate(zip(prompts, images, strict=True))]
    _write_captions(out_dir, [(image_filename(i, p), p) for i, p in enumerate(prompts)])
    return paths


def _write_captions(out_dir: str, entries: Sequence[tuple[str, str]]) -> None:
    """captions.jsonl of (file, caption) pairs, replaced whole (a temporary file renamed):
    a killed run leaves the previous complete list, never half a line."""
    path = os.path.join(out_dir, "captions.jsonl")
    with open(path + ".partial", "w", encoding="utf-8") as f:
        f.write("".join(json.dumps({"file": name, "caption": caption}) + "\n"
                        for name, caption in entries))
    os.replace(path + ".partial", path)


def _grid_name(side: int, first: int, single_page: bool) -> str:
    """grid_<side>.png when one grid holds every prompt (the name before pages
    existed); else grid_<side>_<first prompt's index>.png, beside that prompt's PNG."""
    return f"grid_{side}.png" if single_page else f"grid_{side}_{first:05d}.png"


class _GridPages:
    """Labelled grids of at most `per_grid` prompts (a page) per stage, each written as
    soon as its page's prompts are all on disk.

    Memory stays one page of the lower stages' images (uint8): the final stage's
    tiles are read back from its PNGs, which also covers prompts written by an earlier
    run. A lower stage has no PNGs, so its grid of a page is written only when this
    run sampled the whole page.
    """

    def __init__(self, out_dir: str, prompts: Sequence[str], per_grid: int):
        self.out_dir, self.prompts, self.wanted = out_dir, prompts, per_grid
        self.per_grid: int | None = None  # fixed by the final stage's side, once known
        self.lower: dict[int, list[np.ndarray | None]] = {}  # stage -> uint8 per index
        self.written: list[str] = []

    def fix_page_size(self, side: int) -> None:
        """Sets the page size once, from the final stage's image side."""
        if self.per_grid is None:
            # Every grid within what the project reads back (image_io.MAX_IMAGE_PIXELS):
            # the final stage's tiles are the largest.
            self.per_grid = image_io.max_grid_images(side, self.wanted)
            if self.per_grid < self.wanted:
                print(f"grids of {side} px images hold at most {self.per_grid} prompts "
                      f"(image-size limit), not {self.wanted}", flush=True)

    def page(self, index: int) -> range:
        """The prompt indices of the page holding prompt `index`."""
        first = index - index % self.per_grid
        return range(first, min(first + self.per_grid, len(self.prompts)))

    def add_batch(self, indices: range, outputs: Sequence[np.ndarray]) -> None:
        """Keeps the lower stages' images of a sampled batch for their pages' grids."""
        self.fix_page_size(outputs[-1].shape[1])
        for stage, images in enumerate(outputs[:-1]):
            tiles = self.lower.setdefault(stage, [None] * len(self.prompts))
            for i, image in zip(indices, images):
                tiles[i] = image_io.to_uint8(image)

    def write(self, page: range) -> None:
        """The grids of `page` (every prompt of it on disk), then frees its tiles."""
        single = self.per_grid >= len(self.prompts)
        labels = [self.prompts[i] for i in page]
        for stage, tiles in sorted(self.lower.items()):
            page_tiles = [tiles[i] for i in page]
            if all(t is not None for t in page_tiles):
                images = np.stack(page_tiles).astype(np.float32) / 127.5 - 1.0
                self._save(images, labels, page.start, single)
            for i in page:
                tiles[i] = None
        final = np.stack([image_io.load_image(os.path.join(
            self.out_dir, image_filename(i, self.prompts[i]))) for i in page])
        self._save(final, labels, page.start, single)

    def _save(self, images: np.ndarray, labels: list[str], first: int, single: bool) -> None:
        path = os.path.join(self.out_dir, _grid_name(images.shape[1], first, single))
        self.written.append(image_io.save_labelled_grid(images, labels, path))


def sample_to_files(workdirs: Sequence[str], prompts: Sequence[str], out_dir: str, *,
                    overrides: Overrides = Overrides(), seed: int = 0, ema: bool = True,
                    progress: Callable[[str], None] | None = None, batch_size: int = 16,
                    per_grid: int = 64, overwrite: bool = False,
                    show_progress: bool = True,
                    inputs: ImageInputs = ImageInputs()) -> list[str]:
    """Runs the cascade of `workdirs` (base first) over `prompts` in batches of
    `batch_size` and returns the paths written.

    As each batch finishes it writes the final stage's PNG of each prompt (named by
    `image_filename`) and rewrites captions.jsonl to list every PNG on disk, so a
    killed run keeps what it wrote. Prompts whose PNG already exists are not sampled
    again (unless `overwrite`): a batch of only such prompts is skipped, and when
    nothing is left to sample no stage is loaded. Each stage's labelled grid holds a
    page of at most `per_grid` prompts (fewer where a grid would pass the image-size
    limit). The output directory and every option are checked before any stage is
    loaded. `progress` gets each stage's "stage i: HxW" message. `inputs`: a negative
    prompt and the image of image-to-image, inpainting or upsampling, for every prompt.
    """
    prompts = check_prompts(prompts)  # before any stage is loaded
    if not prompts:
        raise ValueError("no prompts given")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(per_grid, "per_grid")
    check_output_dir(out_dir)
    names = [image_filename(i, p) for i, p in enumerate(prompts)]
    done = set() if overwrite else {
        i for i, name in enumerate(names) if os.path.isfile(os.path.join(out_dir, name))}
    if done:
        print(f"skipping {len(done)} prompts already written to {out_dir} (their PNGs "
              "exist; --overwrite samples them again)", flush=True)
    grids = _GridPages(out_dir, prompts, per_grid)
    paths: list[str] = []
    if len(done) < len(prompts):
        cascade = load_cascade(workdirs, overrides, ema,
                               from_image=inputs.lowres_image is not None)
        paths += _sample_batches(cascade, prompts, out_dir, names, done, grids, seed=seed,
                                 batch_size=batch_size, progress=progress,
                                 show_progress=show_progress, inputs=inputs)
    # Every prompt is on disk now. Its caption list and the pages finished by an earlier
    # run whose final grid is missing (a run killed between its last PNG and the grid)
    # are rebuilt from the PNGs.
    _write_captions(out_dir, [(name, prompt) for name, prompt in zip(names, prompts)])
    with Image.open(os.path.join(out_dir, names[0])) as first_png:
        final_side = first_png.size[0]
    grids.fix_page_size(final_side)
    for first in range(0, len(prompts), grids.per_grid):
        page = grids.page(first)
        single = grids.per_grid >= len(prompts)
        if not os.path.exists(os.path.join(out_dir, _grid_name(final_side, first, single))):
            grids.write(page)
    return paths + grids.written


def _sample_batches(cascade: Cascade, prompts: list[str], out_dir: str, names: list[str],
                    done: set[int], grids: _GridPages, *, seed: int, batch_size: int,
                    progress: Callable[[str], None] | None, show_progress: bool,
                    inputs: ImageInputs = ImageInputs()) -> list[str]:
    """sample_to_files' loop: the batches not all in `done`, written as each finishes."""
    paths = []
    bar = tqdm(total=len(prompts), initial=len(done), desc="sampling", unit="prompt",
               disable=not show_progress)

    def stage_done(message: str) -> None:
        bar.set_postfix_str(message)
        if progress is not None:
            progress(message)

    def generate_fn(batch: list[str], key: jax.Array) -> list[Any]:
        return cascade(batch, key, progress=stage_done,
                       **inputs.cascade_kwargs(cascade, len(batch)))

    # A batch holding some written prompts is still sampled whole (only the missing
    # PNGs are written): its images are then the ones an uninterrupted run gives.
    batches = iter_batches(generate_fn, prompts, seed=seed, batch_size=batch_size,
                           skip=lambda indices: all(i in done for i in indices))
    with bar:
        for indices, outputs in batches:
            new = [i for i in indices if i not in done]
            for i in new:
                paths.append(image_io.save_png(outputs[-1][i - indices.start],
                                               os.path.join(out_dir, names[i])))
            done.update(new)
            _write_captions(out_dir, [(names[i], prompts[i]) for i in sorted(done)])
            grids.add_batch(indices, outputs)
            for first in sorted({grids.page(i).start for i in indices}):
                page = grids.page(first)
                if all(i in done for i in page):
                    grids.write(page)
            bar.update(len(new))
    return paths
