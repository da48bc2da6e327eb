"""Run directories: where a run keeps its checkpoints, and finding them (no model loading here).

A run directory (``kinema train --out RUN``) holds ``config.toml``, ``metrics.jsonl``, ``samples/``,
``tensorboard/`` and ``checkpoints/step_{step:07d}/``. One checkpoint directory holds::

    config.json          the full run config; enough to rebuild the model
    model.safetensors    every parameter and buffer of the model
    ema.safetensors      EMA weights of the objective's EMA target, when train.ema_decay > 0
    trainer_state.pt     optimisers, LR schedules, step, RNG and data-order state (weights_only)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kinema.errors import CheckpointError

REQUIRED_FILES = ("config.json", "model.safetensors", "trainer_state.pt")
STEP_PREFIX = "step_"


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
