"""The run directory a training run writes (layout: :mod:`kinema.runs`), held under its lock, and the one
place where a run decides whether and from where it resumes.

Opening it (rank 0) creates ``--out`` and checks it is writable, then takes its lock (one writer per run).
:meth:`RunFolder.start` tidies checkpoint writes a killed run left behind and resolves the start: a new run,
or a :class:`ResumePoint` (the newest checkpoint that loads, with its saved config), merged with the
requested config. The trainer (and through it ``kinema train``) receives the result; nothing else looks for
the checkpoint to resume from.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kinema.config import RunConfig, resumed_config
from kinema.dist import barrier
from kinema.errors import CheckpointError, TrainingError
from kinema.registry import load_config, load_config_json
from kinema.runlock import RunLock
from kinema.runs import (
    checkpoint_step,
    latest_valid_checkpoint,
    list_checkpoints,
    recover_interrupted_writes,
    resume_checkpoint,
    set_aside,
    truncate_metrics,
)


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues: ``checkpoint`` and the run config saved with it."""

    checkpoint: Path
    config: RunConfig

    @property
    def step(self) -> int:
        return checkpoint_step(self.checkpoint)

    @classmethod
    def find(cls, out: str | Path, resume: bool | str, requested: RunConfig | None = None, overrides: Sequence[str] = (),
             warn: Callable[[str], None] | None = None) -> tuple[ResumePoint | None, RunConfig | None]:
        """Where run ``out`` resumes and the config it then trains with: the newest checkpoint that loads with its
        saved config, and ``requested`` (None: the saved config with the ``--set`` ``overrides``) checked against
        it (only resumable keys may differ); ``(None, requested)`` for a new run. ``resume``: see
        :func:`kinema.runs.resume_checkpoint`. Read only; a training run calls it under its lock
        (:meth:`RunFolder.start`), ``kinema train --dry-run`` without one."""
        ckpt = resume_checkpoint(Path(out), resume, warn=warn)
        if ckpt is None:
            return None, requested
        saved = load_config_json(ckpt / "config.json")
        if requested is None:  # the checkpoint's own config, with the --set overrides
            requested = load_config(None, list(overrides), **saved.to_dict())
        return cls(ckpt, saved), resumed_config(saved, requested)


def prepare_out_dir(out: Path) -> None:
    from kinema.runs import is_weights_folder, refuse_inside_weights

    if is_weights_folder(out):  # an export or a checkpoint: a run's files would mix with (and break) it
        raise TrainingError(f"--out {out} is a checkpoint or export folder (config.json, model.safetensors), not a "
                            f"run folder; give a new --out (to fine-tune from it: --init-from {out})")
    try:
        refuse_inside_weights(out, "--out")
    except CheckpointError as exc:
        raise TrainingError(str(exc)) from None
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TrainingError(f"cannot write to --out {out}: {exc.strerror or exc}; choose a writable folder") from exc


class RunFolder:
    """``--out`` of one training run. Rank 0 (``is_main``) creates it and holds its lock until :meth:`close`;
    ``warn`` reports what is tidied or skipped (rank 0 only)."""

    def __init__(self, path: str | Path, is_main: bool = True, warn: Callable[[str], None] | None = None) -> None:
        self.path, self.is_main, self._warn = Path(path), is_main, warn
        self._lock: RunLock | None = None
        if is_main:
            prepare_out_dir(self.path)
            # One writer per run directory: a second run here fails now, naming this one.
            self._lock = RunLock(self.path).acquire(warn=warn)

    def start(self, config: RunConfig | None, resume: bool | str,
              overrides: Sequence[str] = ()) -> tuple[RunConfig, ResumePoint | None]:
        """The run's config and where it starts (``resume``: True, ``"auto"`` or False, see
        :func:`kinema.runs.resume_checkpoint`): resuming, the :class:`ResumePoint` and ``config`` (None: the
        checkpoint's own, with ``overrides``) checked against its saved config, and the records a killed run
        logged after the checkpoint are dropped from ``metrics.jsonl`` (TensorBoard's: ``purge_step``,
        :meth:`~kinema.training.loggers.RunLoggers.open`); a new run refuses a folder with checkpoints."""
        if self.is_main:
            for line in recover_interrupted_writes(self.path):  # under the lock: no other writer
                self._warn(f"{self.path}/checkpoints: {line}")
        barrier()
        given = config
        point, config = ResumePoint.find(self.path, resume, config, overrides, warn=self._warn if self.is_main else None)
        if point is not None:
            if self.is_main and given is None:
                self._warn_edited_config(point, overrides)
            if self.is_main:
                # Newer checkpoints were skipped as unusable: renamed, never deleted, so that reaching their step
                # again cannot overwrite weights that may be intact (an unreadable file, an edited config.json).
                for skipped in [c for c in list_checkpoints(self.path) if checkpoint_step(c) > point.step]:
                    kept = set_aside(skipped)
                    self._warn(f"set aside {skipped.name} as {kept} (kept as it was; no command reads it; delete it "
                               "yourself once you no longer need it)")
                truncate_metrics(self.path, point.step)
            barrier()
            return config, point
        if config is None:
            raise TrainingError("--config is required (a TOML file, see configs/) unless --resume is given")
        return config, None

    def _warn_edited_config(self, point: ResumePoint, overrides: Sequence[str]) -> None:
        """A resume without --config trains with the checkpoint's config (plus --set) and rewrites ``config.toml``:
        values edited into that file would be dropped without a word, so each one is named (keys this command
        sets with --set are its own business)."""
        from kinema.config import diff_configs, parse_override

        path = self.path / "config.toml"
        if not path.is_file():
            return
        try:
            edited = load_config(path)
        except Exception as exc:  # ConfigError, or a model section that no longer builds a config
            self._warn(f"{path} cannot be read ({type(exc).__name__}); the run continues with the config of "
                       f"{point.checkpoint.name} and rewrites the file")
            return
        given = {f"{section}.{key}:" for section, key, _ in map(parse_override, overrides)}
        lines = [line for line in diff_configs(edited, point.config) if line.split(" ", 1)[0] not in given]
        if lines:
            shown = "; ".join(line.replace(" -> ", " in config.toml, ") + " in the checkpoint" for line in lines[:4])
            self._warn(f"{path} differs from the config this resume trains with ({shown}{' ...' if len(lines) > 4 else ''}); "
                       f"a resume takes {point.checkpoint.name}'s config plus --set and rewrites config.toml: pass "
                       "--set SECTION.KEY=VALUE for a change you meant (keys a run cannot change are refused)")

    def beat(self) -> None:
        """The lock's heartbeat (rank 0; called once per step)."""
        if self._lock is not None:
            self._lock.beat()

    def write_config(self, config: RunConfig) -> None:
        """Rank 0: ``config.toml``, the config the run trains with. Written beside and renamed: a kill never leaves
        half a file, and a ``config.toml`` that is a link to someone's own config file is replaced, never written
        through."""
        if not self.is_main:
            return
        tmp = self.path / ".config.toml.tmp"
        tmp.write_text(config.to_toml())
        os.replace(tmp, self.path / "config.toml")

    def check_lock(self) -> None:
        """Rank 0: the lock is still this run's (:meth:`kinema.runlock.RunLock.check`); called before each
        checkpoint write."""
        if self._lock is not None:
            self._lock.check()

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def checkpoints(self) -> list[Path]:
        return list_checkpoints(self.path)

    def last_good(self) -> str:
        """The newest usable checkpoint, in words (for errors that stop a run)."""
        try:
            last = latest_valid_checkpoint(self.path, warn=None)
        except CheckpointError:  # some exist, none is usable
            last = None
        return f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
