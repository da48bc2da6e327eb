"""Typed run configuration: dataclasses loaded from TOML, ``--set a.b=c`` overrides, clear errors.

A run config has four sections. ``[model]`` is the config dataclass of the model named by
``model.name`` and ``[objective]`` that of the objective named by ``objective.name`` (both looked up in
:mod:`kinema.registry`, which builds a run config from the sections read here); ``[data]`` and ``[train]``
are defined here, and so are the readers of config files (TOML, ``extends``, the shipped configs). Every key is checked against the dataclass: an unknown key or a value of the wrong
type raises :class:`ConfigError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomllib

from kinema.errors import ConfigError, TrainingError


@dataclass
class DataConfig:
    """Where training clips come from. Clip shape (frames, height, width) follows the model."""

    # "folder": video files; "frames": one folder of images per video; "hdf5": VideoGPT's HDF5 file (BAIR);
    # "cache": a folder written by `kinema prepare` (decoded once, read by memory map; see docs/data.md)
    source: Literal["synthetic", "folder", "frames", "hdf5", "cache"] = "synthetic"
    # folder of videos (searched recursively) for "folder"; the tree of frame folders for "frames"; the .hdf5
    # file for "hdf5"; the cache folder for "cache"
    path: str = ""
    # hdf5 only: which videos of the file, {split}_data / {split}_idx (VideoGPT's BAIR file has train and test)
    split: Literal["train", "test"] = "train"
    family: Literal["bouncing_shapes", "rotating_bars", "moving_digits", "moving_digits_stochastic",
                    "action_switch_digits", "captioned_shapes"] = "bouncing_shapes"
    num_clips: int = 10_000  # length of a synthetic dataset (one epoch)
    frame_stride: int = 1  # take every k-th frame of a video
    flip: bool = True  # random horizontal flip (folder and cache data, training only)
    # cache data: the random crop's x offset is uniform in [m, W - width - m] (TGANv2: 4, for a 192x256
    # cache and 192x192 crops); shrinks to (W - width) // 2 when the frame is not wide enough
    crop_margin: int = 4
    # Pass each clip's class label to the objective (class-conditional models: VDM, VideoGPT prior with
    # model.num_classes > 0). Needs labelled data: a cache prepared with --layout ucf101.
    labels: bool = False
    workers: int = 0  # DataLoader worker processes
    # Training items of `sparse_frames` frames at random gaps from long folder/cache videos instead of
    # model.frames consecutive ones (StyleGAN-V: 3, kinema/data/sparse_frames.py): total gap a power of two
    # <= sparse_max_gap, clipped to each video's length; each frame's time travels with the batch. 0 = off.
    sparse_frames: int = 0
    sparse_max_gap: int = 32

    def validate(self) -> None:
        _validate_data(self)


@dataclass
class TrainConfig:
    """The training loop: steps, batch, optimiser, logging and checkpoint cadence.

    ``batch_size`` is the *global* batch of one optimiser step: under ``torchrun`` with ``N``
    processes each takes ``batch_size / N`` samples, in ``accumulate`` micro-batches of
    ``batch_size / (N * accumulate)``. Steps, schedules and checkpoint intervals count optimiser
    steps, so they mean the same for any process count.
    """

    steps: int = 100_000
    batch_size: int = 32  # global: all processes and accumulation micro-steps together
    # Micro-batches per optimiser step (gradient accumulation): a large global batch on few GPUs.
    # Batch norm then normalises over one micro-batch at a time.
    accumulate: int = 1
    # With several processes, batch norm statistics cover the global batch (TGANv2 synchronised
    # its BN across 4 GPUs). False: each process normalises over its own samples.
    sync_batchnorm: bool = True
    # One optimiser per parameter group the objective names (GAN: generator, discriminator).
    optimizer: Literal["adam", "adamw", "rmsprop"] = "adam"
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.0, 0.9])  # adam/adamw; rmsprop uses betas[1] as alpha
    eps: float = 1e-8
    weight_decay: float = 0.0
    # Adam/AdamW as one fused kernel over all parameters (torch's fused=True; CPU and CUDA) instead of a
    # loop of small element-wise ops per parameter: the same update up to float rounding (~1e-9 after 5
    # steps in a test), 3.4x faster on 51.6M parameters on one CPU thread (docs/benchmarks.md).
    # RMSprop has no fused form. False: torch's default implementation.
    fused_optimizer: bool = True
    # linear: decay to 0 at `steps` (TGANv2); cosine: 0.5 (1 + cos(pi step / steps)), torch's
    # CosineAnnealingLR to 0 (VideoGPT); constant. Each after `warmup_steps` of linear warm-up from 0.
    lr_schedule: Literal["linear", "constant", "cosine"] = "linear"
    warmup_steps: int = 0
    grad_clip: float = 0.0  # > 0: clip each optimiser's gradient norm to this (after averaging); 0 = off
    ema_decay: float = 0.0  # 0 disables the EMA of the generator (the paper has none)
    ema_warmup: bool = False  # decay min(ema_decay, (1 + step) / (10 + step)): the average follows early training
    seed: int = 0
    # Fine-tuning: start step 0 from the weights (and EMA weights, if any) of this checkpoint -- a run folder,
    # a checkpoint folder, or one written by `kinema convert` from the authors' files. Optimisers, schedules
    # and data order start fresh; [model] must describe the same network (an error lists any difference).
    init_from: str = ""
    log_every: int = 10
    sample_every: int = 1000
    num_samples: int = 16  # videos in the fixed-noise sample grid
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3  # older checkpoints are deleted; 0 keeps all
    fps: float = 8.0  # frame rate of written sample videos
    # CPU threads for PyTorch; 0: automatic -- all cores, divided by the processes per node under torchrun,
    # minus the DataLoader workers (one thread each). Another busy process on the cores makes the default
    # several times slower: then use 1-2.
    threads: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms, for bit-exact resume tests
    # Training-time evaluation (rank 0): every `eval_every` steps (0 = never) and at the end, score the
    # (EMA) model under `eval_metrics` with `eval_num` clips per set against real clips -- for synthetic
    # data a held-out set (another seed) -- and log to metrics.jsonl and TensorBoard (eval/...).
    # motion256 (the oracle motion measures) needs no weights; I3D protocols read train.eval_i3d or
    # $KINEMA_I3D_WEIGHTS. Small clip counts are not comparable with the protocols' 2,048.
    eval_every: int = 0
    eval_metrics: list[str] = field(default_factory=lambda: ["motion256"])
    eval_num: int = 64
    eval_i3d: str = ""
    # Weights & Biases beside TensorBoard (rank 0; needs `pip install "kinema[wandb]"`): "online",
    # "offline" (written under OUT/wandb, upload later with `wandb sync`) or "off". --resume continues
    # the same W&B run. The run directory stays the record; W&B gets a copy of scalars and sample grids.
    wandb: Literal["off", "online", "offline"] = "off"
    wandb_project: str = "kinema"
    # "bf16" / "fp16": forward passes under torch.autocast; weights, optimiser state, losses and the
    # gradient penalty's branch stay fp32. fp16 adds dynamic loss scaling (torch.amp.GradScaler).
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # torch.compile the networks the objective allows (GAN: the generator only -- the R1 penalty's
    # double backward does not go through compiled graphs). The first step pays the compile time.
    compile: bool = False

    def validate(self) -> None:
        _validate_train(self)


SECTIONS = ("model", "objective", "data", "train")


@dataclass
class RunConfig:
    """A whole run: ``model`` is the model's own config dataclass (it has a ``name`` field)."""

    model: Any  # the config dataclass of model.name
    objective: Any  # the config dataclass of objective.name
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_toml(self) -> str:
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
            lines.append("")
        return "\n".join(lines)


# --------------------------------------------------------------------------- type checking


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


INT64_MAX = 2**63 - 1


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` as type ``tp`` or raise ConfigError naming ``key`` and the allowed values."""
    origin = typing.get_origin(tp)
    error = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise error
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise error
    if tp is type(None):
        if value is not None:
            raise error
        return None
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise error
        (item_type, *_) = typing.get_args(tp)
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise error
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise error
        if not -INT64_MAX <= value <= INT64_MAX:  # torch and numpy take 64-bit integers; past that, an overflow
            raise ConfigError(f"{key}: {value} is out of range (integers must lie within +-{INT64_MAX:,})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error
        if not math.isfinite(value):  # TOML and --set accept inf and nan; no setting means them
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise error
        return value
    raise ConfigError(f"{key}: unsupported field type {tp!r}")


def build_dataclass(cls: type, values: dict[str, Any], section: str) -> Any:
    """Construct dataclass ``cls`` from ``values``, checking every key and type."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown key {section}.{unknown[0]}; allowed keys in [{section}]: {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def _check_positive(section: str, obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{section}.{name} must be > 0, got {getattr(obj, name)}")


def _validate_train(cfg: TrainConfig) -> None:
    _check_positive("train", cfg, ("steps", "batch_size", "accumulate", "lr", "log_every", "sample_every",
                                   "checkpoint_every", "num_samples", "fps"))
    if cfg.batch_size % cfg.accumulate:
        raise ConfigError(
            f"train.batch_size {cfg.batch_size} is not divisible by train.accumulate {cfg.accumulate}: "
            "the global batch is split into equal micro-batches; choose values whose ratio is whole"
        )
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise ConfigError(f"train.betas must be two numbers in [0, 1), got {cfg.betas}")
    if cfg.weight_decay < 0 or cfg.warmup_steps < 0 or cfg.grad_clip < 0:
        raise ConfigError("train.weight_decay, train.warmup_steps and train.grad_clip must be >= 0 "
                          f"(got {cfg.weight_decay}, {cfg.warmup_steps}, {cfg.grad_clip})")
    if cfg.warmup_steps >= cfg.steps and cfg.warmup_steps > 0:
        raise ConfigError(f"train.warmup_steps = {cfg.warmup_steps} must be below train.steps = {cfg.steps}")
    if not 0 <= cfg.ema_decay < 1:
        raise ConfigError(f"train.ema_decay must be in [0, 1) (0 disables EMA), got {cfg.ema_decay}")
    if cfg.threads < 0:
        raise ConfigError(f"train.threads must be >= 0 (0: automatic), got {cfg.threads}")
    if cfg.eval_every < 0 or cfg.eval_num < 2:
        raise ConfigError(f"train.eval_every must be >= 0 (0: no evaluation) and train.eval_num >= 2, got "
                          f"{cfg.eval_every} and {cfg.eval_num}")
    # the protocol names of train.eval_metrics are looked up with the other names, in kinema.registry
    if cfg.keep_checkpoints < 0:
        raise ConfigError("train.keep_checkpoints must be >= 0 (0 keeps all)")
    if not 0 <= cfg.seed < INT64_MAX:  # the sample grid's noise is seeded with seed + 1
        raise ConfigError(f"train.seed must be in [0, {INT64_MAX - 1:,}], got {cfg.seed:,}")


def _validate_data(cfg: DataConfig) -> None:
    _check_positive("data", cfg, ("num_clips", "frame_stride"))
    if cfg.workers < 0:
        raise ConfigError("data.workers must be >= 0")
    if cfg.crop_margin < 0:
        raise ConfigError(f"data.crop_margin must be >= 0 (pixels), got {cfg.crop_margin}")
    if cfg.source == "folder" and not cfg.path:
        raise ConfigError('data.path is empty: data.source = "folder" needs a folder of videos')
    if cfg.source == "frames" and not cfg.path:
        raise ConfigError('data.path is empty: data.source = "frames" needs a folder of frame folders (one folder '
                          "of image files per video)")
    if cfg.source == "hdf5" and not cfg.path:
        raise ConfigError('data.path is empty: data.source = "hdf5" needs an HDF5 file in VideoGPT\'s layout, e.g. '
                          "bair.hdf5 from the authors' scripts/preprocess/bair/create_bair_dataset.sh")
    if cfg.split != "train" and cfg.source != "hdf5":
        raise ConfigError(f'data.split = {cfg.split!r} selects the videos of an HDF5 file (data.source = "hdf5"); '
                          f"data.source = {cfg.source!r} has no splits: remove data.split")
    if cfg.labels and cfg.source != "cache":
        raise ConfigError(
            f'data.labels = true needs labelled clips, which only data.source = "cache" provides (a cache '
            f"prepared with `kinema prepare --layout ucf101`); got data.source = {cfg.source!r}")
    if cfg.sparse_frames and (cfg.sparse_frames < 2 or cfg.sparse_max_gap < cfg.sparse_frames - 1):
        raise ConfigError(f"data.sparse_frames must be 0 (off) or >= 2 with data.sparse_max_gap >= sparse_frames - 1; "
                          f"got {cfg.sparse_frames} and {cfg.sparse_max_gap}")
    if cfg.sparse_frames and cfg.source == "synthetic":
        raise ConfigError('data.sparse_frames reads frames of long videos: it needs data.source = "folder", '
                          '"frames", "hdf5" or "cache"')
    if cfg.source == "cache" and not cfg.path:
        raise ConfigError('data.path is empty: data.source = "cache" needs the folder written by '
                          "`kinema prepare --out DIR` (see docs/data.md)")


# --------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value`` (value in TOML syntax; bare words are strings)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. train.steps=200")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    if section not in SECTIONS:
        raise ConfigError(f"--set {text!r}: unknown section {section!r}; allowed: {', '.join(SECTIONS)}")
    try:
        parsed = tomllib.loads(f"v = {raw.strip()}")
    except tomllib.TOMLDecodeError:
        parsed = {"v": raw.strip()}
    if set(parsed) != {"v"}:  # "3\ntrain.lr=5" parses as two keys: the second would be dropped without a word
        raise ConfigError(f"--set {text!r}: the value spans several lines; give one value per --set (repeat --set "
                          "for more keys)")
    value = parsed["v"]
    return section, key.strip(), value


CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # shipped with the package


def shipped_configs() -> dict[str, Path]:
    """The ready configs by name (``tganv2_tiny`` -> ``.../kinema/configs/tganv2_tiny.toml``)."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.toml"))}


def resolve_config_path(path: str | Path) -> Path:
    """A config file path, or the name of a shipped config (with or without ``.toml``)."""
    given = Path(path)
    if given.is_file():
        return given
    if given.is_dir():
        raise ConfigError(f"config {str(path)!r} is a folder; give a TOML file (e.g. {path}/NAME.toml) or a shipped "
                          "config name (`kinema configs` lists them)")
    shipped = shipped_configs()
    name = given.name[:-5] if given.name.endswith(".toml") else given.name
    if name in shipped and (given.parent == Path(".") or given.parent.name == "configs"):
        return shipped[name]
    close = [n for n in shipped if name.split("_")[0] in n][:6] or list(shipped)[:6]
    raise ConfigError(f"config {str(path)!r} is neither a file nor a shipped config name; `kinema configs` lists "
                      f"them (e.g. {', '.join(close)})")


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The sections of a TOML config; ``extends = "NAME_OR_PATH"`` at the top starts from that config
    (section by section, key by key: this file's keys win)."""
    path = resolve_config_path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: `extends` forms a loop ({' -> '.join(str(p) for p in _seen)})")
    try:  # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the TOML
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not a TOML text file (byte {exc.start} is not UTF-8: a binary file?); "
                          "give a TOML config such as configs/tganv2_tiny.toml") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    parent = data.pop("extends", None)
    for section, values in data.items():  # checked here, so a file that others extend is checked too
        if not isinstance(values, dict):
            kind = "an array of tables ([[...]])" if isinstance(values, list) else f"the value {values!r}"
            raise ConfigError(f"{path}: top-level key {section!r} is {kind}, not a [section]; only `extends` may be "
                              "top-level")
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{path}: extends must be a config name or path (a non-empty string), got {parent!r}")
    relative = path.parent / parent
    base = read_config_file(relative if relative.is_file() else parent, (*_seen, path.resolve()))
    for section, values in data.items():
        base.setdefault(section, {}).update(values)
    return base


def migrate(config_class: type, model: dict[str, Any], objective: dict[str, Any]) -> tuple[dict, dict]:
    """Move keys an earlier kinema kept in ``[model]`` to where they live now.

    A model config dataclass lists them in ``MOVED_KEYS`` (``{"old_key": "objective.new_key"}``) and
    renamed objectives in ``RENAMED_OBJECTIVES`` (``{"old_name": "new_name"}``): checkpoints and config
    files written before the move keep loading. Setting a key in both places is an error naming both.
    """
    model, objective = dict(model), dict(objective)
    renamed = getattr(config_class, "RENAMED_OBJECTIVES", {})
    if objective.get("name") in renamed:
        objective["name"] = renamed[objective["name"]]
    for old, new in getattr(config_class, "MOVED_KEYS", {}).items():
        if old not in model:
            continue
        section, key = new.split(".", 1)
        if key in objective:
            raise ConfigError(f"model.{old} moved to {new}; the config sets both -- keep only {new}")
        objective[key] = model.pop(old)
    return model, objective


def diff_values(a: dict, b: dict, section: str) -> list[str]:
    """Keys whose values differ between two dicts of one config section, as ``section.key: a -> b`` lines."""
    return [f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}"
            for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def diff_configs(a: RunConfig, b: RunConfig) -> list[str]:
    """Keys whose values differ between two configs, as ``section.key: a -> b`` lines."""
    da, db = a.to_dict(), b.to_dict()
    return [line for section in SECTIONS for line in diff_values(da[section], db[section], section)]


# Keys that may change when a run is resumed; anything else must match the checkpoint.
RESUMABLE_CHANGES = {
    "train.steps", "train.log_every", "train.sample_every", "train.checkpoint_every", "train.eval_every",
    "train.eval_metrics", "train.eval_num", "train.eval_i3d", "train.threads", "train.lr_schedule",
    "train.keep_checkpoints", "train.num_samples", "train.fps", "data.workers", "train.accumulate",
    "train.sync_batchnorm", "train.fused_optimizer",
}


def resumed_config(saved: RunConfig, requested: RunConfig) -> RunConfig:
    """``requested`` for a run resumed from a checkpoint saved with ``saved``, once checked: only
    :data:`RESUMABLE_CHANGES` may differ."""
    differing = [line for line in diff_configs(saved, requested) if line.split(":")[0] not in RESUMABLE_CHANGES]
    if differing:
        raise TrainingError(
            "--resume: the config differs from the checkpoint's in keys that cannot change mid-run:\n  "
            + "\n  ".join(differing)
            + "\nrun with the checkpoint's config (omit those --set / use the same file) or start a new --out"
        )
    return requested
