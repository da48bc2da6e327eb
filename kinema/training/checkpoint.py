"""Writing checkpoints (layout: :mod:`kinema.runs`) atomically, and reading the trainer state back.

A checkpoint is written into a hidden temporary directory and renamed into place with
``os.replace``, so a kill at any moment leaves either the previous checkpoints or a complete new one.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from kinema.config import RunConfig
from kinema.runs import STEP_PREFIX
from kinema.system import free_bytes


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
    try:
        tmp.mkdir()
        (tmp / "config.json").write_text(config.to_json())
        metadata = {"step": str(step), "model": config.model.name}
        save_file(_state_for_safetensors(model.state_dict()), tmp / "model.safetensors", metadata=metadata)
        if ema_state is not None:
            save_file(_state_for_safetensors(ema_state), tmp / "ema.safetensors", metadata=metadata)
        torch.save(trainer_state, tmp / "trainer_state.pt")
    except BaseException:  # a full disk, an interrupt: no partial copy (a whole model) stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
