"""Library entry points behind the CLI: ``train``, ``sample``, ``evaluate``, ``prepare``, ``info`` and ``load``.

Each takes plain Python values, so ``kinema.api.train(...)`` from a notebook does exactly what
``kinema train ...`` does from a shell.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Literal

import torch

from kinema.arguments import checked
from kinema.config import RunConfig
from kinema.errors import CheckpointError, SamplingError, TrainingError
from kinema.registry import MODELS, build_model, load_config, load_config_json, load_model, sampler_for
from kinema.runs import checkpoint_step
from kinema.training.loggers import append_record
from kinema.training.loop_utils import resolve_device
from kinema.training.run_folder import ResumePoint
from kinema.training.trainer import Trainer
from kinema.video import save_video_grid, to_uint8, write_video

VIDEO_SUFFIXES = (".mp4", ".gif")


@checked
def resolve_run_config(
    config_path: str | Path | None, out: str | Path, overrides: list[str] = (), resume: bool | Literal["auto"] = False
) -> RunConfig:
    """The config a ``train --dry-run`` describes: the file plus overrides, or, when resuming without a
    file, the checkpoint's own config plus overrides (read only: a training run resolves its resume point
    under the run's lock, :meth:`kinema.training.run_folder.RunFolder.start`)."""
    if config_path is not None:
        return load_config(config_path, overrides)
    point, config = ResumePoint.find(out, resume, None, overrides) if resume else (None, None)
    if point is None:
        raise TrainingError("--config is required (a TOML file, see configs/) unless --resume is given")
    return config


def describe(config: RunConfig) -> str:
    """The resolved config (TOML) and the parameter counts, as printed by ``--dry-run``."""
    from kinema.training.memory import check_training_memory

    with torch.device("meta"):  # shapes only: a model too large to allocate is still described
        model = build_model(config.model)
    memory = check_training_memory(config, model=model)  # a run that cannot fit is refused here too
    counts = model.parameter_counts()
    lines = [config.to_toml(), "# parameters"]
    lines += [f"# {name}: {count:,}" for name, count in counts.items()]
    return "\n".join(lines + [f"# {memory}"])


def _requested_config(config_path: str | Path | None, overrides: list[str], steps: int | None,
                      resume: bool | str) -> tuple[RunConfig | None, list[str]]:
    """The config a ``kinema train`` asks for and its overrides (``--steps`` folded in). None: the run's own
    checkpoint config, taken where the run resolves its resume point (once, under its lock). Fine-tuning
    without a file starts from the source checkpoint's config."""
    overrides = list(overrides) + ([f"train.steps={steps}"] if steps is not None else [])
    fine_tune = _init_from(overrides)
    if config_path is None and not resume and fine_tune is None:
        raise TrainingError("--config is required (a TOML file, see configs/) unless --resume is given or "
                            "train.init_from names a checkpoint whose config to start from")
    if config_path is None and not resume:
        return load_config(None, overrides, **load_model_config(fine_tune).to_dict()), overrides
    return (load_config(config_path, overrides) if config_path is not None else None), overrides


@checked
def train(
    config_path: str | Path | None,
    out: str | Path,
    overrides: list[str] = (),
    steps: int | None = None,
    resume: bool | Literal["auto"] = False,
    device: str = "auto",
    progress: bool = True,
    dist_backend: str = "auto",
    command: str | None = None,
) -> Path:
    """Train a run; returns the final checkpoint directory (:func:`plan` describes one without training).

    ``resume``: True continues the run in ``out`` (error if it has no checkpoint); ``"auto"``
    continues it when it has one and starts it otherwise -- what the restarted workers of
    ``torchrun --max-restarts`` need, since they rerun the same command. Under ``torchrun`` every
    process calls this; see ``docs/distributed.md``. ``command``: the command line recorded in the run's
    ``commands.jsonl`` (the CLI passes its own; None: this process's).
    """
    from kinema.training import distributed

    config, overrides = _requested_config(config_path, overrides, steps, resume)
    try:
        trainer = Trainer(config, out, device=device, resume=resume, progress=progress, dist_backend=dist_backend,
                          overrides=overrides if config is None else (), command=command)
        return trainer.fit()
    finally:
        distributed.teardown()


@checked
def plan(
    config_path: str | Path | None,
    out: str | Path | None = None,
    overrides: list[str] = (),
    steps: int | None = None,
    resume: bool | Literal["auto"] = False,
) -> str:
    """What ``kinema train --dry-run`` prints: the resolved config, the parameter counts and the memory the run
    needs at the least, without training (a run that cannot fit is refused here too). Resuming without a file,
    the checkpoint's config in ``out`` is read, not locked."""
    config, overrides = _requested_config(config_path, overrides, steps, resume)
    return describe(config if config is not None else resolve_run_config(None, out, overrides, resume))


def _init_from(overrides: list[str]) -> str | None:
    """The checkpoint a ``--set train.init_from=PATH`` override names, if any."""
    from kinema.config import parse_override

    found = [parse_override(text) for text in overrides]
    paths = [value for section, key, value in found if (section, key) == ("train", "init_from") and value]
    return str(paths[-1]) if paths else None


@checked
def load_model_config(path: str | Path) -> RunConfig:
    """The run config stored with a checkpoint (a run folder, a checkpoint folder or ``kinema convert`` output)."""
    from kinema.runs import resolve_checkpoint

    return load_config_json(resolve_checkpoint(path) / "config.json")


def configs() -> str:
    """The shipped configs, one line each: name, model, frames x resolution, first comment line."""
    from kinema.registry import read_config_file, shipped_configs

    rows = []
    for name, path in shipped_configs().items():
        model = read_config_file(path).get("model", {})
        config = load_config(path) if model.get("name") else None
        frames, resolution = (config.model.frames, config.model.resolution) if config else ("?", "?")
        comment = next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")), "")
        rows.append((name, model.get("name", "?"), f"{frames}x{resolution}", comment))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]  # columns as wide as their longest entry
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows)


@checked
def load(path: str | Path, device: str = "cpu", ema: bool = True) -> tuple[torch.nn.Module, RunConfig]:
    """``kinema.load("runs/x")``: the model of a run's latest (or a given) checkpoint, in eval mode."""
    model, config, _ = load_model(path, device=resolve_device(device), ema=ema)
    return model, config


@torch.no_grad()
@checked
def generate(model, num: int, seed: int = 0, batch_size: int = 16, progress: bool = False, precision: str = "fp32",
             **options) -> torch.Tensor:
    """``num`` videos ``(N, C, T, H, W)`` in [-1, 1] on the CPU; the same seed gives the same videos.

    ``precision``: ``"fp32"``, ``"bf16"`` or ``"fp16"`` -- sampling under autocast (the weights stay
    float32; the videos come back float32). bf16 suits CPUs and recent GPUs; fp16 is for GPUs.

    ``options`` are the model family's sampling options (:func:`sample_options` and ``kinema sample
    --help`` list them per model, e.g. ``times`` for continuous-time models); an option the model does
    not support raises :class:`kinema.errors.SamplingError`.
    """
    return sampler_for(model).generate(model, num, seed, batch_size, progress, precision, **options)


def sample_options() -> dict[str, list]:
    """Per registered model name, its sampler's options (:class:`kinema.sampling.SampleOption`)."""
    return {name: list(entry.sampler.options) for name, entry in MODELS.items()}


def _prepare_output(out: str | Path) -> Path:
    """Check ``--out`` (a .mp4/.gif file, or a folder) and create its folder -- before any sampling."""
    from kinema.runs import refuse_inside_weights

    out = Path(out)
    is_file = out.suffix.lower() in VIDEO_SUFFIXES
    if out.suffix and not is_file:
        raise ValueError(f"--out {out}: use a .mp4 or .gif file, or a folder (no suffix)")
    refuse_inside_weights(out, "--out")
    target_dir = out.parent if is_file else out
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create output folder {target_dir}: {exc.strerror}; choose a writable path") from exc
    return out


def _write_videos(videos: torch.Tensor, out: str | Path, fps: float) -> list[Path]:
    """One grid file (``out`` ending in .mp4/.gif) or a folder with one MP4 per video plus grids."""
    out = _prepare_output(out)
    if out.suffix.lower() in VIDEO_SUFFIXES:
        return [save_video_grid(videos, out, fps=fps)]
    width = len(str(len(videos) - 1))
    paths = [write_video(out / f"sample_{i:0{width}d}.mp4", to_uint8(v), fps=fps) for i, v in enumerate(videos)]
    nrow = math.ceil(math.sqrt(len(videos)))
    return paths + [save_video_grid(videos, out / f"grid{ext}", fps=fps, nrow=nrow) for ext in VIDEO_SUFFIXES]


def _check_sample_memory(model, sampler, num: int, options: dict) -> None:
    """Refuse a ``--num`` whose videos cannot fit in memory: all of them are generated (float32) and
    held until they are written, plus a uint8 copy for the files; so ``num`` is bounded by the memory
    available now, not by a fixed number (a 16x16 model fits millions, a 256x256 one thousands)."""
    from kinema.system import available_memory

    try:
        scale = max(1.0, sampler.frame_rate_scale(model, **{k: v for k, v in options.items() if v is not None}))
    except (TypeError, ValueError):  # an option this model lacks: generate() says so properly
        scale = 1.0
    per_video = math.prod(model.video_shape) * scale * (4 + 4 + 1)  # noise (at most video-sized), float32 video, uint8
    free = available_memory()
    if free is not None and num * per_video > 0.8 * free:
        fits = max(1, int(0.8 * free // per_video))
        raise SamplingError(
            f"--num {num}: the videos are held in memory until written, about {num * per_video / 2**30:,.1f} GiB, "
            f"but {free / 2**30:.1f} GiB is available; use --num {fits} or less per call (other --seed values give "
            "other videos)")


@checked
def sample(
    checkpoint: str | Path,
    out: str | Path,
    num: int = 16,
    seed: int = 0,
    device: str = "auto",
    ema: bool = True,
    fps: float | None = None,
    batch_size: int = 16,
    progress: bool = False,
    precision: str = "fp32",
    **options,
) -> list[Path]:
    """Write ``num`` samples: one grid video (``out`` ending in .mp4/.gif) or, for a folder, one MP4
    per sample plus ``grid.gif`` / ``grid.mp4``. ``options``: the family's sampling options (see
    :func:`generate`). Returns the written paths."""
    if num <= 0:
        raise ValueError(f"--num must be > 0, got {num}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"--fps must be a positive number of frames per second, got {fps}")
    out = _prepare_output(out)
    model, config, _ = load_model(checkpoint, device=resolve_device(device), ema=ema)
    sampler = sampler_for(model)
    _check_sample_memory(model, sampler, num, options)
    videos = generate(model, num, seed, batch_size, progress, precision, **options)
    # e.g. 4x the frames over the same time span play at 4x the run's fps: real-time speed, unless --fps
    fps = fps or config.train.fps * sampler.frame_rate_scale(model, **options)
    return _write_videos(videos, out, fps)


@checked
def evaluate(
    checkpoint: str | Path | None,
    metrics: list[str],
    data: str | None = None,
    num: int | None = None,
    seed: int = 0,
    device: str = "auto",
    i3d: str | None = None,
    c3d: str | None = None,
    c3d_mean: str | None = None,
    inception: str | None = None,
    batch_size: int = 16,
    workers: int = 2,
    cache_dir: str | Path | None = "default",
    out: str | Path | None = None,
    ema: bool = True,
    fake: str | Path | None = None,
    lpips: str | None = None,
    overrides: list[str] = (),
) -> dict:
    """Score a checkpoint under named protocols (``kinema evaluate``). Real clips come from ``data``
    (a folder of videos or a ``kinema prepare`` cache) or, if omitted, the run's own data config. Results
    are appended to the run's ``metrics.jsonl`` (when the checkpoint sits in a run directory) and to
    ``out`` (JSON lines). ``fake``: score a folder of generated videos instead of a checkpoint (then
    ``data`` is required; clips are taken at the fake videos' own resolution). ``overrides``: ``model.key=value``
    settings that keep the weights (e.g. ``model.sampler="ancestral"``, ``model.sampling_steps=128``), applied to
    the checkpoint's config before it samples; the record lists them."""
    from kinema.metrics.evaluate import default_cache_dir, evaluate_model, heldout_real_set, resolve_protocols
    from kinema.metrics.evaluate import weights_path

    protocols = resolve_protocols(metrics)  # unknown names fail before any work
    if out is not None:
        _check_records_file(out)
    if fake is not None:
        if overrides:
            raise ValueError("--set changes how a checkpoint's model samples; --fake scores videos already "
                             "generated, so there is nothing to apply it to (drop --set, or give --checkpoint)")
        return _evaluate_folder(fake, protocols, data, num, seed, device, i3d, batch_size, workers, cache_dir, out)
    if checkpoint is None:
        raise ValueError("give --checkpoint RUN, or --fake DIR (a folder of generated videos) with --data REAL")
    model, config, ckpt = load_model(checkpoint, device=resolve_device(device), ema=ema, overrides=list(overrides))
    given = {"i3d": i3d, "c3d": c3d, "c3d_mean": c3d_mean, "inception": inception, "lpips": lpips}  # lpips: optional
    weights = {network: weights_path(network, path) for network, path in given.items()}
    dataset = dataset_key = None
    if any(p.needs_real for p in protocols):
        data_cfg = _real_data(data) if data else config.data
        _, _, height, width = model.video_shape
        frames = max(p.frames or model.video_shape[1] for p in protocols if p.needs_real)
        dataset, dataset_key = heldout_real_set(data_cfg, config.train.seed, frames, height, width)
    cache = default_cache_dir() if cache_dir == "default" else (Path(cache_dir) if cache_dir else None)
    results = evaluate_model(model, protocols, weights, dataset=dataset, dataset_key=dataset_key, num=num, seed=seed,
                             batch_size=batch_size, device=model.device, cache_dir=cache,
                             workers=config.data.workers if not data else workers)
    record = {"step": checkpoint_step(ckpt), "checkpoint": str(ckpt), "eval": results}
    if overrides:
        record["overrides"] = list(overrides)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None
    targets = ([run_dir / "metrics.jsonl"] if run_dir else []) + ([Path(out)] if out else [])
    if len(targets) == 2 and _same_file(*targets):  # --out RUN/metrics.jsonl: the record once, not twice
        targets = targets[:1]
    for target in targets:
        append_record(target, record)
    return record


def _real_data(data: str | Path):
    """``--data``: a cache written by `kinema prepare` (it has meta.json), an HDF5 video file (its test
    split: the videos held out from training), or a folder of videos."""
    from kinema.config import DataConfig

    path = Path(data)
    if path.is_file() and path.suffix.lower() in (".hdf5", ".h5"):
        return DataConfig(source="hdf5", path=str(path), split="test", flip=False)
    return DataConfig(source="cache" if (path / "meta.json").is_file() else "folder", path=str(path), flip=False)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:  # one does not exist yet
        return os.path.abspath(a) == os.path.abspath(b)


def _check_records_file(out: str | Path) -> None:
    """``evaluate --out``: a JSON-lines file the record can be appended to, checked before the (long) scoring.
    Appending to a checkpoint's weights or any other file would corrupt it; a folder cannot take it."""
    from kinema.runs import refuse_inside_weights

    path = Path(out)
    refuse_inside_weights(path, "--out")
    if path.is_dir():
        raise ValueError(f"--out {out} is a folder; give a JSON-lines file to append the results to (e.g. "
                         f"{Path(out) / 'eval.jsonl'})")
    if path.exists():
        if not path.is_file():
            raise ValueError(f"--out {out} is not a regular file; give a JSON-lines file to append the results to")
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        first, newline, _ = head.partition(b"\n")
        try:  # a first line longer than what was read is judged by its start
            ok = not head.strip() or (isinstance(json.loads(first), dict) if newline else head.lstrip()[:1] == b"{")
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"--out {out} exists and is not a JSON-lines file of records (its first line is not a "
                             "JSON object); appending would damage it. Give a new file or one `--out` wrote before")
    elif not path.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {path.parent} does not exist")


def _evaluate_folder(fake, protocols, data, num, seed, device, i3d, batch_size, workers, cache_dir, out) -> dict:
    """``kinema evaluate --fake DIR --data REAL``: generated videos from files, real clips from ``data``."""
    from kinema.config import DataConfig
    from kinema.data import build_dataset
    from kinema.data.folder import VIDEO_EXTENSIONS, find_files
    from kinema.metrics.evaluate import default_cache_dir, evaluate_model, heldout_real_set, weights_path
    from kinema.video import read_video

    if data is None:
        raise ValueError("--fake DIR scores generated videos against real ones: give --data (a folder of real videos "
                         "or a `kinema prepare` cache)")
    files = find_files(fake, VIDEO_EXTENSIONS) if Path(fake).is_dir() else []  # follows linked folders, as the dataset
    if not files:
        raise ValueError(f"--fake {fake}: no video files ({', '.join(VIDEO_EXTENSIONS)}) found; point it at the folder "
                         "`kinema sample --out DIR` wrote")
    first = read_video(files[0])  # (T, H, W, 3): the generated length and resolution
    height, width = first.shape[1:3]
    frames = max(p.frames or first.shape[0] for p in protocols)  # motion protocols: the videos' own length
    fake_set = build_dataset(DataConfig(source="folder", path=str(fake), flip=False), frames=frames, height=height,
                             width=width, seed=seed, train=False)
    real_set, key = heldout_real_set(_real_data(data), seed, frames, height, width)
    weights = {"i3d": weights_path("i3d", i3d)}
    cache = default_cache_dir() if cache_dir == "default" else (Path(cache_dir) if cache_dir else None)
    results = evaluate_model(None, protocols, weights, dataset=real_set, dataset_key=key, num=num or len(fake_set),
                             seed=seed, batch_size=batch_size, device=resolve_device(device), cache_dir=cache,
                             workers=workers, fake_dataset=fake_set)
    record = {"step": None, "fake": str(fake), "eval": results}
    if out:
        append_record(Path(out), record)
    return record


@checked
def prepare(
    data: str | Path,
    out: str | Path,
    resolution: str | tuple[int, int] = "192x256",
    fps: float | None = None,
    layout: str = "folder",
    split: str | None = None,
    splits: str | Path | None = None,
    workers: int | None = None,
    min_frames: int = 16,
    verify: bool = True,
    progress: bool = True,
):
    """``kinema prepare``: decode every video (or, with ``layout="frames"``, every folder of frame images)
    under ``data`` once into the cache ``out`` (one uint8
    ``(T, H, W, 3)`` ``.npy`` per video, ``index.json``, ``meta.json``); rerunning resumes. Returns a
    :class:`kinema.data.prepare.PrepareReport` (``.summary()`` lists skipped files with reasons).
    Train on it with ``data.source = "cache"``, ``data.path = out``. See :func:`kinema.data.prepare.prepare`."""
    from kinema.data.prepare import prepare as _prepare

    return _prepare(data, out, resolution=resolution, fps=fps, layout=layout, split=split, splits=splits,
                    workers=workers, min_frames=min_frames, verify=verify, progress=progress)


@checked
def convert(kind: str, src: str | Path, out: str | Path, config: str | Path | None = None,
            overrides: list[str] = (), first_stage: str | Path | None = None) -> Path:
    """``kinema convert KIND SRC OUT``: published metric-network weights -> one ``.safetensors`` file
    (``i3d``, ``c3d``, ``inception``), or a checkpoint saved by a model's official code -> a kinema
    checkpoint folder that ``kinema sample / evaluate / info``, :func:`load` and ``train.init_from`` take.

    ``config`` (+ ``overrides``) gives the model config for formats that carry no hyper-parameters
    (e.g. Chainer ``.npz`` snapshots); ``first_stage`` the already converted first stage of a second-stage model.
    Files are read as data only (:mod:`kinema.foreign`): no code in them is ever run.
    """
    from kinema.foreign import ConvertOptions
    from kinema.registry import convert as _convert

    model = load_config(config, list(overrides)).model if config is not None or overrides else None
    return _convert(kind, src, out, ConvertOptions(model=model, first_stage=Path(first_stage) if first_stage else None))


def _step_line(ckpt: Path, config: RunConfig) -> str:
    import json

    from kinema.runs import CONVERTED_FILE, EXPORT_FILE

    if (ckpt / CONVERTED_FILE).is_file():  # `kinema convert` output: no training step of kinema's
        record = json.loads((ckpt / CONVERTED_FILE).read_text())
        return f"converted:  {record.get('kind')} from {record.get('source')} (sha256 {str(record.get('sha256'))[:12]})"
    if (ckpt / EXPORT_FILE).is_file():  # `kinema export` output: weights for inference, no trainer state
        record = json.loads((ckpt / EXPORT_FILE).read_text())
        return (f"exported:   step {record.get('step')} of {config.train.steps}, {record.get('weights')} weights, "
                f"from {record.get('source')}")
    return f"step:       {checkpoint_step(ckpt)} of {config.train.steps}"


@checked
def export(source: str | Path, out: str | Path, raw: bool = False, num_samples: int = 16,
           push_to_hub: str | None = None, private: bool = False, progress: bool = False) -> Path:
    """``kinema export``: the inference folder of a run or checkpoint (config, EMA weights -- ``raw`` for the
    trained ones --, model card, sample grid; :mod:`kinema.sharing`), optionally uploaded to the Hugging Face
    Hub repository ``push_to_hub``. Returns the folder."""
    from kinema import sharing

    folder = sharing.export(source, out, raw=raw, num_samples=num_samples, progress=progress)
    if push_to_hub:
        sharing.push_to_hub(folder, push_to_hub, private=private)
    return folder


@checked
def from_pretrained(name_or_path: str | Path, device: str = "cpu", revision: str | None = None,
                    cache_dir: str | Path | None = None, ema: bool = True) -> tuple[torch.nn.Module, RunConfig]:
    """``(model, config)`` from an export, run or checkpoint folder, or a Hugging Face Hub repository id
    (:func:`kinema.sharing.from_pretrained`; the Hub's cache and ``HF_HUB_OFFLINE`` are honoured)."""
    from kinema import sharing

    return sharing.from_pretrained(name_or_path, device=resolve_device(device), revision=revision,
                                   cache_dir=cache_dir, ema=ema)


@checked
def info(path: str | Path) -> str:
    """Model, checkpoint, step, parameter counts and config of a run or checkpoint directory."""
    model, config, ckpt = load_model(path, device="cpu", ema=False)
    counts = model.parameter_counts()
    lines = [
        f"model:      {config.model.name}",
        f"checkpoint: {ckpt}",
        _step_line(ckpt, config),
        f"EMA:        {'yes' if (ckpt / 'ema.safetensors').is_file() else 'no'}",
        "parameters: " + ", ".join(f"{name} {count:,}" for name, count in counts.items()),
        "",
        config.to_toml(),
    ]
    return "\n".join(lines)


__all__ = ["CheckpointError", "convert", "describe", "evaluate", "export", "from_pretrained", "generate", "info", "load",
           "plan", "prepare", "sample", "sample_options", "train"]
