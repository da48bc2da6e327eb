"""Checkpoint state (layout: :mod:`kinema.runs`): what the trainer saves and restores, written atomically,
and the disk checks around it.

A checkpoint is written into a hidden temporary directory and renamed into place with
``os.replace``, so a kill at any moment leaves either the previous checkpoints or a complete new one.
Before the first step the run checks that one checkpoint fits; a full disk later is said in one line
naming the filesystem, the space needed and the checkpoints that are intact.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from kinema.config import RunConfig
from kinema.errors import TrainingError
from kinema.runs import STEP_PREFIX, checkpoint_problem, list_checkpoints, prune_checkpoints, set_aside, write_manifest
from kinema.files import file_mode
from kinema.system import filesystem_of, format_bytes, free_bytes


def _state_for_safetensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_checkpoint(
    run_dir: Path,
    step: int,
    config: RunConfig,
    model: torch.nn.Module,
    trainer_state: dict[str, Any],
    ema_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``run_dir/checkpoints/step_{step:07d}`` atomically (``manifest.json`` last) and return its path.

    An existing folder of that step is replaced only when it is a sound checkpoint of this run's model;
    anything else there is renamed ``set-aside-step_N`` (:func:`kinema.runs.set_aside`), never deleted."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{STEP_PREFIX}{step:07d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        (tmp / "config.json").write_text(config.to_json())
        metadata = {"step": str(step), "model": config.model.name}
        save_file(_state_for_safetensors(model.state_dict()), tmp / "model.safetensors", metadata=metadata)
        if ema_state is not None:
            save_file(_state_for_safetensors(ema_state), tmp / "ema.safetensors", metadata=metadata)
        torch.save(trainer_state, tmp / "trainer_state.pt")
        for weights in tmp.glob("*.safetensors"):  # safetensors writes 0600 whatever the umask
            os.chmod(weights, file_mode())
        write_manifest(tmp)  # last: sha256 of every file above
    except BaseException:  # a full disk, an interrupt: no partial copy (a whole model) stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists() and checkpoint_problem(final, model_name=config.model.name) is None:
        # re-saving a step of this run (resumed at its last step): the old copy is replaced. It is moved aside
        # first, so a kill between the two renames leaves it for recover_interrupted_writes to put back.
        old = root / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return final
    if final.exists():  # not a sound checkpoint of this run: never overwritten, kept under another name
        set_aside(final)
    os.replace(tmp, final)
    return final


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    return torch.load(Path(ckpt) / "trainer_state.pt", map_location="cpu", weights_only=True)


def load_weights(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path, device=str(device))


def trainer_state(step: int, optimizers: dict, schedulers: dict, noise_generator: torch.Generator,
                  lr_anchor: tuple[int, float], scaler, device: torch.device) -> dict[str, Any]:
    """``trainer_state.pt``: optimisers, LR schedules, the step, the RNG states and where the LR was re-planned."""
    state = {
        "step": step,
        "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
        "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
        "rng_torch": torch.get_rng_state(),
        "noise_generator": noise_generator.get_state(),
        "lr_anchor": list(lr_anchor),
    }
    if device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(device)
    if scaler is not None:
        state["grad_scaler"] = scaler.state_dict()
    return state


def restore_trainer_state(state: dict[str, Any], optimizers: dict, schedulers: dict,
                          noise_generator: torch.Generator, scaler, device: torch.device) -> tuple[int, tuple[int, float]]:
    """Put :func:`trainer_state`'s ``state`` back; returns ``(step, lr_anchor)`` (older checkpoints have no
    anchor: the schedule was never re-planned)."""
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    for name, sched in schedulers.items():
        sched.load_state_dict(state["schedulers"][name])
    torch.set_rng_state(state["rng_torch"])
    if "rng_cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["rng_cuda"], device)
    noise_generator.set_state(state["noise_generator"])
    if scaler is not None and "grad_scaler" in state:
        scaler.load_state_dict(state["grad_scaler"])
    anchor = (int(state["lr_anchor"][0]), float(state["lr_anchor"][1])) if "lr_anchor" in state else (0, 1.0)
    return state["step"], anchor


def write_checkpoint(run_dir: Path, step: int, config: RunConfig, model: torch.nn.Module,
                     trainer_state: dict[str, Any], ema_state: dict[str, torch.Tensor] | None, need: int) -> Path:
    """:func:`save_checkpoint`, then all but the newest ``train.keep_checkpoints`` are deleted. A full disk is
    said in one TrainingError naming the filesystem and the ``need``-ed space (the partial copy is removed and
    earlier checkpoints stay)."""
    root = Path(run_dir) / "checkpoints"
    try:
        path = save_checkpoint(run_dir, step, config, model, trainer_state, ema_state)
        prune_checkpoints(run_dir, config.train.keep_checkpoints)
        return path
    except Exception as exc:
        if not is_disk_full(exc, root, need):
            raise
        free = free_bytes(root)
        last = list_checkpoints(run_dir)
        kept = (f"the earlier checkpoints are intact (latest {last[-1].name})" if last
                else "no earlier checkpoint exists")
        raise TrainingError(
            f"disk full: writing checkpoint step {step} to {root} on {filesystem_of(root)} needs about "
            f"{format_bytes(need)} ({need:,} bytes), {format_bytes(free or 0)} is free; the partial copy was "
            f"removed and {kept}. Free some space, then resume with --resume") from exc


def check_finite(step: int, states: dict[str, dict[str, torch.Tensor]], last_good: Callable[[], str]) -> None:
    """Refuse to checkpoint non-finite weights (``states``: prefix -> state dict): a checkpoint is what a
    resume and the NaN error call good. One host sync for all tensors; ``last_good()`` names the newest usable
    checkpoint in the error."""
    named = [(prefix + k, v) for prefix, state in states.items() for k, v in state.items() if v.is_floating_point()]
    if not named:
        return
    finite = torch.stack([torch.isfinite(v).all() for _, v in named]).cpu()
    if bool(finite.all()):
        return
    bad = [name for (name, _), ok in zip(named, finite.tolist()) if not ok]
    raise TrainingError(
        f"step {step}: {len(bad)} of {len(named)} weight tensors are not finite (first: {bad[0]}); no "
        f"checkpoint was written ({last_good()}). Lower train.lr or raise objective.gp_weight, "
        "then resume with --resume")


# --------------------------------------------------------------------------- disk space


def state_bytes(tensors) -> int:
    """Bytes of the tensors in a (nested) state: what writing it needs on disk, headers aside."""
    if isinstance(tensors, torch.Tensor):
        return tensors.numel() * tensors.element_size()
    if isinstance(tensors, dict):
        return sum(state_bytes(v) for v in tensors.values())
    if isinstance(tensors, (list, tuple)):
        return sum(state_bytes(v) for v in tensors)
    return 0


def checkpoint_bytes(optimizer: str, optimizers: dict, states: list[dict[str, torch.Tensor]]) -> int:
    """About what one checkpoint takes on disk: the weight ``states`` (model, EMA) and the state of the
    ``optimizer`` kind (Adam keeps two moments per parameter, RMSprop one), estimated before the optimisers
    have any state."""
    moments = {"adam": 2, "adamw": 2, "rmsprop": 1}[optimizer]
    params = [p for opt in optimizers.values() for group in opt.param_groups for p in group["params"]]
    tensors = sum(len(state) for state in states) + moments * len(params)
    # + about 512 bytes of file headers and alignment per tensor, and the RNG states
    return sum(state_bytes(state) for state in states) + moments * state_bytes(params) + 512 * tensors + 2**16


def disk_full_error(exc: OSError, run_dir: Path) -> TrainingError:
    """A full disk while writing samples or logs, in one line (like a checkpoint's)."""
    last = list_checkpoints(run_dir)
    return TrainingError(
        f"disk full: {exc.filename or run_dir} on {filesystem_of(run_dir)}: {exc.strerror or exc}; "
        + (f"the earlier checkpoints are intact (latest {last[-1].name})" if last else "no checkpoint was written")
        + ". Free some space, then resume with --resume")


_FULL_TEXT = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")


def is_disk_full(exc: BaseException, path: Path | None = None, need: int = 0) -> bool:
    """Whether ``exc`` (or an exception it wraps) comes from a full disk or quota.

    safetensors reports ENOSPC as a SafetensorError with the OS message in its text, and torch.save's
    zip writer as a bare RuntimeError ("unexpected pos ..."): with ``path`` and ``need``, a write error
    while the filesystem has less than ``need`` bytes free counts as full too.
    """
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(seen) for text in _FULL_TEXT):
            return True
        seen = seen.__cause__ or seen.__context__
    if path is not None and need and isinstance(exc, (OSError, RuntimeError)):
        free = free_bytes(path)
        return free is not None and free < need
    return False
