"""Run directories: where a run keeps its checkpoints, and finding them (no model loading here).

A run directory (``kinema train --out RUN``) holds ``config.toml``, ``metrics.jsonl`` (one JSON record a
line: :func:`kinema.training.loggers.append_record`), ``samples/``, ``tensorboard/`` and ``checkpoints/step_{step:07d}/``. One checkpoint directory holds::

    config.json          the full run config; enough to rebuild the model
    model.safetensors    every parameter and buffer of the model
    ema.safetensors      EMA weights of the objective's EMA target, when train.ema_decay > 0
    trainer_state.pt     optimisers, LR schedules, step, RNG and data-order state (weights_only)
    manifest.json        sha256 and size of each file above, written last: a flipped byte is caught

A checkpoint kinema decides not to use (a resume skips it as damaged, edited or of another model) is never
deleted or overwritten: it is renamed ``set-aside-step_N`` beside the others, a name no command reads.

``kinema convert`` writes the same folder without ``trainer_state.pt`` and with ``converted.json``
(the source file, its sha256 and the hyper-parameters read from it); ``kinema export`` one with ``export.json``
(the checkpoint it came from), a ``README.md`` model card and sample videos.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import sys
from pathlib import Path
from typing import Callable

from kinema.errors import CheckpointError, ConfigError, TrainingError
from kinema.files import file_sha256

REQUIRED_FILES = ("config.json", "model.safetensors", "trainer_state.pt")
# safetensors has no checksum: the manifest holds each file's sha256 (checkpoints written before it have none)
MANIFEST_FILE = "manifest.json"
# What trainer_state.pt must hold for a resume (kinema.training.checkpoint.trainer_state writes it).
TRAINER_STATE_KEYS = ("step", "optimizers", "schedulers", "rng_torch", "noise_generator")
SET_ASIDE_PREFIX = "set-aside-"
# OUT/commands.jsonl: each start of `kinema train` in the run folder (time, step, command line).
COMMANDS_FILE = "commands.jsonl"
# A folder written by `kinema export`: config.json and the (EMA) weights for inference, plus this record and a
# model card; like convert's output it holds no trainer state (fine-tune from it with train.init_from).
EXPORT_FILE = "export.json"
# A checkpoint folder written by `kinema convert` from another project's file: config.json and the
# weights, plus this record of where they came from; no trainer state (fine-tune with train.init_from).
CONVERTED_FILE = "converted.json"
# Files of a checkpoint, export or converted folder that kinema reads: its manifest must list each one present.
VOUCHED_FILES = ("config.json", "model.safetensors", "ema.safetensors", "trainer_state.pt", EXPORT_FILE,
                 CONVERTED_FILE)
STEP_PREFIX = "step_"
# Exactly step_<digits>: copies such as step_0000020.bak or editor files beside them are not checkpoints.
STEP_NAME = re.compile(re.escape(STEP_PREFIX) + r"(\d+)")
# Folders save_checkpoint writes before its os.replace; left behind only by a killed write.
TEMP_PREFIXES = (".tmp-", ".old-")


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop the training records of steps after ``step`` from ``run_dir/metrics.jsonl``: a killed run logged
    them, and the run resumed from ``step`` logs them again. Records of ``kinema evaluate`` (they name a
    checkpoint or a folder of fakes) are kept; a line cut short by the kill is dropped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_bytes().splitlines():  # bytes: a line that is not UTF-8 must not stop the resume
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by the kill (JSONDecodeError), or not text (UnicodeDecodeError)
            dropped += 1
            continue
        logged = record.get("step") if isinstance(record, dict) else None
        if isinstance(logged, int) and logged > step and not {"checkpoint", "fake"} & set(record):
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(b"".join(line + b"\n" for line in kept))
        os.replace(tmp, path)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary directories and other names are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_NAME.fullmatch(p.name) and p.is_dir()]
    return sorted((p for p in found if is_complete(p)), key=checkpoint_step)


def is_weights_only(path: Path) -> bool:
    """A folder of weights for inference and fine-tuning, no trainer state: ``kinema convert`` or ``kinema export``
    output."""
    return (Path(path) / CONVERTED_FILE).is_file() or (Path(path) / EXPORT_FILE).is_file()


def is_complete(path: Path) -> bool:
    return all((Path(path) / name).is_file() for name in REQUIRED_FILES)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep = 0`` keeps all)."""
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run directory (-> its latest usable checkpoint) or one checkpoint directory."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint path {path} does not exist; pass a run directory "
                              "(written by `kinema train --out`) or one of its checkpoints/step_* folders")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is a file; pass a run directory or a checkpoint directory")
    weights_only = is_weights_only(path)
    if (path / "config.json").is_file() and ((path / "model.safetensors").exists() or weights_only):
        required = ("config.json", "model.safetensors") if weights_only else REQUIRED_FILES
        missing = [n for n in required if not (path / n).is_file()]
        if missing:
            raise CheckpointError(f"checkpoint {path} is incomplete (missing {', '.join(missing)})")
        problem = manifest_problem(path)
        if problem:
            raise CheckpointError(f"checkpoint {path} is damaged: {problem}; use another checkpoint of the run "
                                  "(pass the run folder to take the newest sound one) or restore it from a backup")
        return path
    # The newest usable one: a truncated or edited newest checkpoint is skipped with a warning.
    ckpt = latest_valid_checkpoint(path, trainer_state=False)
    if ckpt is None:
        raise CheckpointError(
            f"{path} holds no complete checkpoint (expected {path}/checkpoints/step_*/ with "
            f"{', '.join(REQUIRED_FILES)}); train first with `kinema train --out {path}`"
        )
    return ckpt


def is_weights_folder(path: Path) -> bool:
    """A checkpoint, export or converted folder: ``config.json`` beside ``model.safetensors``."""
    return (Path(path) / "config.json").is_file() and (Path(path) / "model.safetensors").is_file()


def refuse_inside_weights(out: str | Path, what: str, include_self: bool = True) -> None:
    """Raise :class:`CheckpointError` when ``out`` is, or lies inside, a checkpoint/export folder: files
    written there are deleted with it when the run prunes old checkpoints or an export is replaced, and
    a name it already holds (``model.safetensors``) would be overwritten."""
    path = Path(os.path.abspath(out))
    for folder in ((path,) if include_self else ()) + tuple(path.parents):
        if is_weights_folder(folder):
            where = "is the checkpoint folder" if folder == path else f"is inside the checkpoint folder {folder}"
            raise CheckpointError(f"{what} {out} {where}: what is written there is "
                                  "deleted with it when the run prunes old checkpoints (and could overwrite its "
                                  "files); write it somewhere else")


def checkpoint_step(path: Path) -> int:
    """The step of a ``step_NNNNNNN`` folder; -1 for any other name."""
    match = STEP_NAME.fullmatch(Path(path).name)
    return int(match.group(1)) if match else -1


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, or its type name when it has none (an EOFError from an
    empty file has no text)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__




def write_manifest(folder: Path) -> Path:
    """``folder/manifest.json``: the sha256 and size of every file in ``folder``; written last (to a temporary
    name, then renamed), so a manifest exists only for a folder whose files are all complete."""
    folder = Path(folder)
    files = {p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}
    tmp = folder / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps({"files": files}, indent=1))
    os.replace(tmp, folder / MANIFEST_FILE)
    return folder / MANIFEST_FILE


def manifest_problem(folder: Path) -> str | None:
    """Why ``folder``'s files disagree with its manifest (a missing file, another size or sha256), or None
    (also for a folder without a manifest: checkpoints written before manifests existed)."""
    path = Path(folder) / MANIFEST_FILE
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():  # a FIFO would block the read forever, a folder cannot be read
        return f"{MANIFEST_FILE} is not a regular file"
    try:
        files = json.loads(path.read_text())["files"]
        entries = [(name, int(entry["bytes"]), str(entry["sha256"])) for name, entry in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{MANIFEST_FILE} cannot be read ({type(exc).__name__}: {first_line(exc)})"
    # kinema writes only the plain names of the folder's own files: "../x" or "/etc/x" would check (and
    # vouch for) a file outside the folder
    outside = [name for name, _, _ in entries if name in ("", ".", "..") or Path(name).name != name]
    if outside:
        return f"{MANIFEST_FILE} names {outside[0]!r}, which is not a file of this folder"
    # a manifest that leaves out a file kinema reads would vouch for the folder without checking it
    unlisted = [name for name in VOUCHED_FILES if name not in files and (Path(folder) / name).exists()]
    if unlisted:
        return f"{MANIFEST_FILE} does not list {unlisted[0]}, so that file is unchecked"
    for name, size, sha in entries:
        file = Path(folder) / name
        try:
            if not file.is_file():
                return f"{name} is missing (listed in {MANIFEST_FILE})"
            if file.stat().st_size != size:
                return f"{name} has {file.stat().st_size:,} bytes, {MANIFEST_FILE} says {size:,}"
            if file_sha256(file) != sha:
                return f"{name} is corrupt: its sha256 differs from {MANIFEST_FILE}'s (same length, changed bytes)"
        except OSError as exc:
            return f"{name} cannot be read: {exc.strerror or first_line(exc)}"
    return None


def _stderr_warning(message: str) -> None:
    print(f"kinema: warning: {message}", file=sys.stderr)


def _safetensors_problem(path: Path) -> tuple[str | None, dict]:
    """(problem or None, header) of a safetensors file: the header must parse and the file must be
    exactly as long as the header says -- a write cut short by a kill or a full disk is shorter."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                return f"{path.name} is truncated ({size} bytes)", {}
            (length,) = struct.unpack("<Q", f.read(8))
            if length > size - 8:
                return f"{path.name} is truncated (header of {length} bytes, file of {size})", {}
            header = json.loads(f.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"{path.name} cannot be read: {exc}", {}
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = max((v["data_offsets"][1] for v in tensors.values()), default=0)
    if size != 8 + length + end:
        return f"{path.name} is truncated or corrupt ({size} bytes, its header describes {8 + length + end})", {}
    return None, tensors


# Checks a checkpoint's weights against the model its config.json describes. Building that model needs
# the registry, which sits above this module (it imports runs): the registry installs the check when it
# is imported (:func:`kinema.registry.weights_match_config`), so this module never imports it.
_model_check: Callable[[Path, dict, dict | None], str | None] | None = None


def set_model_check(check: Callable[[Path, dict, dict | None], str | None]) -> None:
    """``check(ckpt, tensors, ema)`` -> problem or None; ``tensors`` and ``ema`` (None without EMA weights) are the
    parsed safetensors headers."""
    global _model_check
    _model_check = check


def checkpoint_problem(ckpt: Path, trainer_state: bool = True, model_name: str | None = None) -> str | None:
    """Why ``ckpt`` cannot be used (a short reason), or None when it looks sound.

    Checks what a resume would trip over, without building the model's weights: the required files
    exist; they agree with ``manifest.json`` (sha256); ``config.json`` parses (and, with ``model_name``, names
    that model); each safetensors file is complete; the installed model check (the
    registry's: ``config.json`` is a valid config and the weights are exactly the tensors, names and
    shapes, of the model it describes -- an edited config.json fails here); and, with
    ``trainer_state``, ``trainer_state.pt`` loads (weights_only), holds every key a resume reads and names the
    step of the folder's name.
    """
    import torch

    ckpt = Path(ckpt)
    missing = [n for n in REQUIRED_FILES if not (ckpt / n).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    problem = manifest_problem(ckpt)
    if problem:
        return problem
    try:
        saved = json.loads((ckpt / "config.json").read_text())
    except OSError as exc:  # permission denied, a flaky network filesystem
        return f"config.json cannot be read ({exc.strerror or first_line(exc)})"
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        return f"config.json is not a valid kinema config ({type(exc).__name__}: {first_line(exc)})"
    saved_model = saved.get("model", {}).get("name") if isinstance(saved, dict) and isinstance(saved.get("model"), dict) else None
    if model_name is not None and saved_model != model_name:
        return f"it holds a {saved_model!r} model, but this run trains {model_name!r} (its config.toml)"
    problem, tensors = _safetensors_problem(ckpt / "model.safetensors")
    if problem:
        return problem
    ema = None
    if (ckpt / "ema.safetensors").is_file():
        problem, ema = _safetensors_problem(ckpt / "ema.safetensors")
        if problem:
            return problem
    if _model_check is not None:
        problem = _model_check(ckpt, tensors, ema)
        if problem:
            return problem
    if trainer_state:
        try:
            state = torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated zip raises RuntimeError, an empty file EOFError, pickle errors, ...
            return f"trainer_state.pt cannot be loaded ({type(exc).__name__}: {first_line(exc)})"
        if not isinstance(state, dict):
            return f"trainer_state.pt holds a {type(state).__name__}, not kinema's trainer state"
        lacking = [k for k in TRAINER_STATE_KEYS if k not in state]
        if lacking:
            return f"trainer_state.pt lacks {', '.join(lacking)}"
        if not isinstance(state["step"], int) or state["step"] != checkpoint_step(ckpt):
            return (f"trainer_state.pt says step {state['step']!r}, but the folder is {ckpt.name}: one of them "
                    "was changed")
    return None


def latest_valid_checkpoint(run_dir: Path, trainer_state: bool = True,
                            warn: Callable[[str], None] | None = _stderr_warning,
                            model_name: str | None = None) -> Path | None:
    """The newest checkpoint of ``run_dir`` that :func:`checkpoint_problem` accepts; each newer bad
    one is reported through ``warn`` with its reason. None when the run has no checkpoint at all;
    :class:`CheckpointError` when it has some but none is usable."""
    checkpoints = list_checkpoints(run_dir)
    bad = []
    for ckpt in reversed(checkpoints):
        problem = checkpoint_problem(ckpt, trainer_state, model_name)
        if problem is None:
            if bad and warn is not None:
                for path, reason in bad:
                    warn(f"skipping checkpoint {path}: {reason}; using {ckpt.name}")
            return ckpt
        bad.append((ckpt, problem))
    if bad:
        raise CheckpointError(
            f"none of the {len(bad)} checkpoints in {Path(run_dir) / 'checkpoints'} is usable: "
            + "; ".join(f"{p.name}: {r}" for p, r in bad)
            + ". Start a new run in another --out (or restore a checkpoint from a backup)")
    return None


def run_model_name(run_dir: Path) -> str | None:
    """The model a run folder trains, from its ``config.toml`` (None when it has none or it cannot be read:
    then every checkpoint's own config is taken at its word)."""
    import tomllib

    if not (Path(run_dir) / "config.toml").is_file():  # absent, or a FIFO (reading it would block forever)
        return None
    try:
        with open(Path(run_dir) / "config.toml", "rb") as f:
            model = tomllib.load(f).get("model", {})
    except (OSError, ValueError):
        return None
    name = model.get("name") if isinstance(model, dict) else None
    return name if isinstance(name, str) else None


def resume_checkpoint(run_dir: Path, resume: bool | str,
                      warn: Callable[[str], None] | None = _stderr_warning) -> Path | None:
    """The checkpoint a training run in ``run_dir`` continues from, or None for a new run.

    ``resume`` True: the newest checkpoint that loads (:func:`latest_valid_checkpoint`; TrainingError when there
    is none); ``"auto"``: the same when ``run_dir`` holds a checkpoint, else None (what the restarted workers
    of ``torchrun --max-restarts`` need: they rerun the same command); False: None, and a folder that holds
    checkpoints is refused (a new run would mix with them). A checkpoint of another model than the run's
    ``config.toml`` names (:func:`run_model_name`), dropped into the folder, is skipped.
    """
    existing = list_checkpoints(run_dir)
    if resume == "auto":
        resume = bool(existing)
    if not resume:
        if existing:
            raise TrainingError(f"{run_dir} already holds checkpoints (latest {existing[-1].name}); pass --resume to "
                                "continue that run, or choose another --out")
        return None
    ckpt = latest_valid_checkpoint(run_dir, warn=warn, model_name=run_model_name(run_dir))
    if ckpt is None:
        raise TrainingError(f"--resume: {run_dir}/checkpoints holds no complete checkpoint to resume from; "
                            "drop --resume to start a new run")
    return ckpt


def set_aside(ckpt: Path) -> Path:
    """Rename checkpoint ``ckpt`` to ``set-aside-step_N`` (``-2``, ``-3``, ... when taken) beside it: no command
    reads, prunes or overwrites it again, and nothing is deleted. Returns the new path; TrainingError when the
    rename fails (the run must not go on to overwrite it)."""
    ckpt = Path(ckpt)
    target = ckpt.with_name(SET_ASIDE_PREFIX + ckpt.name)
    n = 1
    while target.exists():
        n += 1
        target = ckpt.with_name(f"{SET_ASIDE_PREFIX}{ckpt.name}-{n}")
    try:
        os.replace(ckpt, target)
    except OSError as exc:
        raise TrainingError(f"cannot set aside the unusable checkpoint {ckpt} ({exc.strerror or first_line(exc)}); "
                            "this run would overwrite it when it reaches that step again. Move it out of "
                            f"{ckpt.parent} yourself, then resume") from exc
    return target


def recover_interrupted_writes(run_dir: Path) -> list[str]:
    """Tidy ``run_dir/checkpoints`` after a writer that was killed mid-save; returns what was done.

    Call only while holding the run's lock (no writer can be active). A re-save of an existing step
    moves the old copy to ``.old-step_N-PID`` before renaming ``.tmp-step_N-PID`` into place: a kill
    between the two renames leaves ``step_N`` missing, so the old copy is put back. Every other
    temporary folder is an orphan -- a partial checkpoint (at paper scale a whole model and optimiser
    state) that nothing will ever read -- and is deleted.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = []
    for old in sorted(root.glob(".old-*")):
        name = old.name[len(".old-"):].rsplit("-", 1)[0]
        if STEP_NAME.fullmatch(name) and not (root / name).exists() and is_complete(old):
            os.replace(old, root / name)
            done.append(f"restored {name} from an interrupted re-save")
    for tmp in sorted(root.iterdir()):
        if tmp.name.startswith(TEMP_PREFIXES):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            done.append(f"removed {tmp.name} (left by a checkpoint write that was killed)")
    return done


def first_stage_model_config(path: str | Path, key: str, name: str, what: str, stage: str, config_hint: str) -> dict:
    """The model section of the first-stage checkpoint that a second-stage model's ``model.<key>`` points
    at (a VQ-VAE for VideoGPT's prior, a VQ-GAN for NÜWA): a ConfigError names a missing checkpoint or
    one holding another model than ``name`` (``what`` in words), with the command that trains the ``stage``."""
    try:
        ckpt = resolve_checkpoint(path)
    except CheckpointError as exc:
        raise ConfigError(f"model.{key}: {exc}. Train the {stage} first: kinema train --config "
                          f"{config_hint} --out {path}") from None
    model = json.loads((ckpt / "config.json").read_text()).get("model", {})
    if model.get("name") != name:
        raise ConfigError(f"model.{key} = {str(path)!r} holds a {model.get('name')!r} model, not a {what} "
                          f"({name}); point it at a run trained with configs/{name}_*.toml")
    return model


def checkpoint_with_model(path: str | Path, stored: str) -> Path | None:
    """The checkpoint dir under ``path`` whose model config equals ``stored`` JSON, else None."""
    try:
        ckpt = resolve_checkpoint(path)
        model = json.loads((ckpt / "config.json").read_text()).get("model", {})
    except (CheckpointError, OSError, ValueError):
        return None
    return ckpt if model == json.loads(stored) else None
