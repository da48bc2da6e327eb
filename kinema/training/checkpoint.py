"""Checkpoint directories: ``config.json`` + safetensors weights + trainer state, written atomically.

Layout of one checkpoint (``RUN/checkpoints/step_0000100/``)::

    config.json          the full run config; enough to rebuild the model
    model.safetensors    every parameter and buffer of the model (generator and discriminator)
    ema.safetensors      EMA weights of the generator, when train.ema_decay > 0
    trainer_state.pt     optimisers, LR schedules, step, RNG and data-order state (weights_only)

A checkpoint is written into a hidden temporary directory and renamed into place with
``os.replace``, so a kill at any moment leaves either the previous checkpoints or a complete new one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kinema.config import RunConfig, load_config_json

REQUIRED_FILES = ("config.json", "model.safetensors", "trainer_state.pt")
STEP_PREFIX = "step_"


class CheckpointError(RuntimeError):
    """A checkpoint path is missing, incomplete or of an unexpected kind."""


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
    """Write ``run_dir/checkpoints/step_{step:07d}`` atomically and return its path."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{STEP_PREFIX}{step:07d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / "config.json").write_text(config.to_json())
    metadata = {"step": str(step), "model": config.model.name}
    save_file(_state_for_safetensors(model.state_dict()), tmp / "model.safetensors", metadata=metadata)
    if ema_state is not None:
        save_file(_state_for_safetensors(ema_state), tmp / "ema.safetensors", metadata=metadata)
    torch.save(trainer_state, tmp / "trainer_state.pt")
    if final.exists():  # re-saving a step (after a resume): move the old one aside first
        old = root / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary directories are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX)]
    return sorted((p for p in found if is_complete(p)), key=lambda p: int(p.name[len(STEP_PREFIX):]))


def is_complete(path: Path) -> bool:
    return all((Path(path) / name).is_file() for name in REQUIRED_FILES)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep = 0`` keeps all)."""
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run directory (-> its latest checkpoint) or one checkpoint directory."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint path {path} does not exist; pass a run directory "
                              "(written by `kinema train --out`) or one of its checkpoints/step_* folders")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is a file; pass a run directory or a checkpoint directory")
    if (path / "config.json").is_file() and (path / "model.safetensors").exists():
        if not is_complete(path):
            missing = [n for n in REQUIRED_FILES if not (path / n).is_file()]
            raise CheckpointError(f"checkpoint {path} is incomplete (missing {', '.join(missing)})")
        return path
    checkpoints = list_checkpoints(path)
    if not checkpoints:
        raise CheckpointError(
            f"{path} holds no complete checkpoint (expected {path}/checkpoints/step_*/ with "
            f"{', '.join(REQUIRED_FILES)}); train first with `kinema train --out {path}`"
        )
    return checkpoints[-1]


def checkpoint_step(path: Path) -> int:
    return int(Path(path).name[len(STEP_PREFIX):]) if Path(path).name.startswith(STEP_PREFIX) else -1


def load_model(
    path: str | Path, device: str | torch.device = "cpu", ema: bool = True, expect_model: str | None = None
) -> tuple[torch.nn.Module, RunConfig, Path]:
    """Rebuild a model from a checkpoint. Returns ``(model in eval mode, config, checkpoint dir)``.

    ``ema=True`` overlays the EMA generator weights when the checkpoint has them. ``expect_model``
    raises a clear error if the checkpoint holds another model.
    """
    from kinema.models import build_model

    ckpt = resolve_checkpoint(path)
    try:
        config = load_config_json(ckpt / "config.json")
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{ckpt}/config.json is not a valid kinema config: {exc}") from exc
    if expect_model is not None and config.model.name != expect_model:
        raise CheckpointError(f"{ckpt} holds a {config.model.name!r} model, expected {expect_model!r}")
    model = build_model(config.model)
    try:
        state = load_file(ckpt / "model.safetensors")
        model.load_state_dict(state)
        if ema and (ckpt / "ema.safetensors").is_file():
            model.load_state_dict(load_file(ckpt / "ema.safetensors"), strict=False)
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"cannot load weights from {ckpt}: {exc}") from exc
    return model.to(device).eval(), config, ckpt


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    return torch.load(Path(ckpt) / "trainer_state.pt", map_location="cpu", weights_only=True)
