"""Optional Weights & Biases logging beside TensorBoard (``train.wandb = "online"`` or ``"offline"``).

The run directory stays the source of truth (``metrics.jsonl``, ``tensorboard/``, ``samples/``); W&B gets
a copy of the same scalars and sample videos. The W&B run id is derived from the run directory and kept
in ``OUT/wandb/kinema_run_id``, so ``--resume`` continues the same W&B run. ``"offline"`` writes
everything under ``OUT/wandb/`` without a network (upload later with ``wandb sync OUT/wandb/offline-run-*``).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from kinema.errors import ConfigError

ID_FILE = "kinema_run_id"


def _run_id(folder: Path) -> str:
    """The W&B run id of this run directory: written once, read on every resume."""
    path = folder / ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id + "\n")
    return run_id


class WandbLogger:
    """Scalars and sample videos of one training run, sent to W&B from the main process."""

    def __init__(self, out: Path, config, mode: str, project: str) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError(f'train.wandb = "{mode}" needs the wandb package: pip install "kinema[wandb]" '
                              '(or set train.wandb = "off")') from None
        self._wandb = wandb
        folder = Path(out) / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project, dir=str(out), id=_run_id(folder), resume="allow", name=Path(out).resolve().name,
            config=config.to_dict(), mode=mode, settings=wandb.Settings(console="off", silent=True),
        )

    def scalars(self, metrics: dict[str, float], step: int, prefix: str = "train") -> None:
        self.run.log({f"{prefix}/{key}": value for key, value in metrics.items()}, step=step)

    def video(self, tag: str, path: Path, step: int) -> None:
        """A sample grid already written by the trainer (GIF or MP4): W&B stores the file as it is."""
        self.run.log({tag: self._wandb.Video(str(path), format=Path(path).suffix.lstrip("."))}, step=step)

    def close(self) -> None:
        self.run.finish()
