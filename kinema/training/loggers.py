"""Where a run's scalars and sample grids go, behind one interface (:class:`RunLoggers`):

- ``metrics.jsonl``: the source of truth, one JSON record a line (written by rank 0 from the start);
- TensorBoard (``tensorboard/``) and, with ``train.wandb = "online"`` or ``"offline"``, Weights & Biases get a
  copy of the same scalars and sample grids while :meth:`RunLoggers.open` ... :meth:`RunLoggers.close`.

The W&B run id is derived from the run directory and kept in ``OUT/wandb/kinema_run_id``, so ``--resume``
continues the same W&B run. ``"offline"`` writes everything under ``OUT/wandb/`` without a network (upload
later with ``wandb sync OUT/wandb/offline-run-*``).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
import uuid
from pathlib import Path

from kinema.config import RunConfig
from kinema.errors import ConfigError
from kinema.runs import COMMANDS_FILE

WANDB_ID_FILE = "kinema_run_id"


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


def _wandb_run_id(folder: Path) -> str:
    """The W&B run id of this run directory: written once, read on every resume."""
    path = folder / WANDB_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id + "\n")
    return run_id


def append_record(path: Path, record: dict) -> None:
    """One JSON line at the end of ``path`` (a run's ``metrics.jsonl``, or ``kinema evaluate --out``)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


class WandbLogger:
    """Scalars and sample videos of one training run, sent to W&B from the main process."""

    def __init__(self, out: Path, config: RunConfig, mode: str, project: str) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError(f'train.wandb = "{mode}" needs the wandb package: pip install "kinema[wandb]" '
                              '(or set train.wandb = "off")') from None
        self._wandb = wandb
        folder = Path(out) / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project, dir=str(out), id=_wandb_run_id(folder), resume="allow", name=Path(out).resolve().name,
            config=config.to_dict(), mode=mode, settings=wandb.Settings(console="off", silent=True),
        )

    def scalars(self, metrics: dict[str, float], step: int, prefix: str = "train") -> None:
        self.run.log({f"{prefix}/{key}": value for key, value in metrics.items()}, step=step)

    def video(self, tag: str, path: Path, step: int) -> None:
        """A sample grid already written by the trainer (GIF or MP4): W&B stores the file as it is."""
        self.run.log({tag: self._wandb.Video(str(path), format=Path(path).suffix.lstrip("."))}, step=step)

    def close(self) -> None:
        self.run.finish()


class RunLoggers:
    """The run's loggers. ``out`` None (ranks other than 0): every call does nothing. ``command``: the command line
    that started the run (recorded in ``commands.jsonl``; None: this process's own)."""

    def __init__(self, out: Path | None, command: str | None = None) -> None:
        self.out, self.command = out, command
        self._writer = None  # TensorBoard, between open() and close()
        self._wandb: WandbLogger | None = None

    def open(self, config: RunConfig, resumed_step: int | None) -> None:
        """Start TensorBoard and (``train.wandb``) W&B; ``resumed_step``: events of later steps, logged by a
        killed run, are purged."""
        if self.out is None:
            return
        # How the run was started, each time it was (a resume adds a line): what `kinema export` cites in the
        # model card. The CLI hands down its arguments; from Python, the script's command line stands for it.
        line = self.command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
        append_record(self.out / COMMANDS_FILE, {"time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                                                 "step": resumed_step or 0, "command": line})
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = {"purge_step": resumed_step + 1} if resumed_step is not None else {}
            self._writer = SummaryWriter(str(self.out / "tensorboard"), **purge)
        except ImportError:  # TensorBoard is optional at run time
            pass
        if config.train.wandb != "off":
            self._wandb = WandbLogger(self.out, config, config.train.wandb, config.train.wandb_project)

    def train(self, step: int, metrics: dict[str, float]) -> None:
        """Training scalars: rounded to 6 digits in ``metrics.jsonl``, as they are elsewhere."""
        if self.out is None:
            return
        append_record(self.out / "metrics.jsonl", {"step": step, **{k: round(v, 6) for k, v in metrics.items()}})
        self._scalars(metrics, step, "train")

    def eval(self, step: int, results: dict[str, dict]) -> None:
        """Evaluation results ``{protocol: result}``: the whole result in ``metrics.jsonl``, its value elsewhere."""
        if self.out is None:
            return
        append_record(self.out / "metrics.jsonl", {"step": step, "eval": results})
        self._scalars({name: result["value"] for name, result in results.items()}, step, "eval")

    def _scalars(self, values: dict[str, float], step: int, prefix: str) -> None:
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(f"{prefix}/{key}", value, step)
        if self._wandb is not None:
            self._wandb.scalars(values, step, prefix)

    def video(self, tag: str, gif: Path, step: int) -> None:
        if self._writer is not None:
            add_gif_to_tensorboard(self._writer, tag, gif, step)
        if self._wandb is not None:
            self._wandb.video(tag, gif, step)

    def close(self) -> None:
        """Close TensorBoard and W&B (``metrics.jsonl`` is appended to line by line: nothing to close)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.close()
            self._wandb = None
