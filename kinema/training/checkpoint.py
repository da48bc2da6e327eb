"""Writing checkpoints (layout: :mod:`kinema.runs`) atomically, and reading the trainer state back.

A checkpoint is written into a hidden temporary directory and renamed into place with
``os.replace``, so a kill at any moment leaves either the previous checkpoints or a complete new one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from kinema.config import RunConfig
from kinema.runs import STEP_PREFIX


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


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    return torch.load(Path(ckpt) / "trainer_state.pt", map_location="cpu", weights_only=True)
