"""Sharing trained models: ``kinema export`` writes an inference folder with a model card, and
:func:`from_pretrained` loads one from a path or the Hugging Face Hub.

An export folder holds::

    config.json        the run config (enough to rebuild the model)
    model.safetensors  the whole model; the EMA weights of its EMA target by default (``raw=True``: as trained)
    export.json        where it came from: run, checkpoint, step, weights, kinema version, time
    README.md          the model card: family, parameters, data, steps, evaluation records, command, samples
    samples.gif/.png   a grid of videos sampled from it (seed 0), shown by the card
    manifest.json      sha256 of each file (checked before use, as a checkpoint's)

``kinema.load``, ``kinema sample / evaluate / info`` and ``train.init_from`` take it like a checkpoint; it has no
optimiser state, so it is small and cannot be resumed -- fine-tune from it instead. The Hub is optional
(``pip install 'kinema[hub]'``): it is imported only when a repository id is given or pushed to, and
``HF_HUB_OFFLINE=1`` / its cache are honoured as ``huggingface_hub`` does everywhere.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from glob import escape as glob_escape
from pathlib import Path

from kinema.config import RunConfig
from kinema.errors import CheckpointError
from kinema.registry import load_model, sampler_for
from kinema.runs import (
    COMMANDS_FILE,
    EXPORT_FILE,
    MANIFEST_FILE,
    checkpoint_step,
    is_weights_only,
    refuse_inside_weights,
    resolve_checkpoint,
    write_manifest,
)
from kinema.files import file_mode
from kinema.system import filesystem_of, format_bytes
from kinema.training.checkpoint import is_disk_full
from kinema.version import __version__

CARD_FILE = "README.md"
SAMPLE_GRID = "samples"  # samples.gif (animated, for the card) and samples.png (first frames)


def _run_folder(ckpt: Path) -> Path | None:
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None


def _records(run: Path | None, name: str) -> list[dict]:
    """The JSON lines of ``run/name`` (a line cut short by a kill is skipped)."""
    if run is None or not (run / name).is_file():
        return []
    records = []
    for line in (run / name).read_bytes().splitlines():  # bytes: one undecodable line must not stop an export
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _evaluation_rows(run: Path | None, step: int) -> list[str]:
    """Markdown rows of every evaluation record in the run's ``metrics.jsonl`` up to ``step``."""
    rows = []
    for record in _records(run, "metrics.jsonl"):
        results = record.get("eval")
        logged = record.get("step")
        if not isinstance(results, dict) or type(logged) is not int or logged > step:  # bool is an int too
            continue
        where = "kinema evaluate" if "checkpoint" in record else "during training"
        for protocol, result in results.items():
            value = result.get("value") if isinstance(result, dict) else result
            if isinstance(value, (int, float)):
                rows.append(f"| {record['step']} | `{protocol}` | {value:.4g} | {where} |")
    return rows


def _write_samples(model, ckpt: Path, folder: Path, num: int, fps: float, progress: bool) -> str:
    """``samples.gif`` + ``samples.png`` (first frames) sampled from the exported weights, seed 0; a model that
    samples only from given frames or text (the trainer's preview supplies them) gets the run's preview grid
    of the checkpoint's step instead. Returns the card's line about them ("" when there are none)."""
    from PIL import Image

    from kinema.errors import SamplingError
    from kinema.video import make_grid, save_video_grid, to_uint8

    nrow = math.ceil(math.sqrt(num))
    try:
        videos = sampler_for(model).generate(model, num, 0, 16, progress, "fp32")
    except SamplingError:
        run = _run_folder(ckpt)
        preview = run / "samples" / f"step_{checkpoint_step(ckpt):07d}.gif" if run else None
        if preview is None or not preview.is_file():
            return ""
        shutil.copyfile(preview, folder / f"{SAMPLE_GRID}.gif")
        return f"The training run's preview grid at step {checkpoint_step(ckpt):,} (this model samples from given inputs)."
    save_video_grid(videos, folder / f"{SAMPLE_GRID}.gif", fps=fps, nrow=nrow)
    first = to_uint8(make_grid(videos[:, :, :1], nrow=nrow))[0]  # (H, W, C) uint8
    Image.fromarray(first if first.shape[-1] == 3 else first[..., 0]).save(folder / f"{SAMPLE_GRID}.png")
    return (f"{num} videos sampled from these weights with seed 0 (`kinema sample --checkpoint THIS_FOLDER --num {num} "
            "--seed 0` gives the same).")


def _card(config: RunConfig, ckpt: Path, step: int, weights: str, counts: dict[str, int], run: Path | None,
          samples: str, video_shape: tuple[int, ...]) -> str:
    model, data, train = config.model, config.data, config.train
    commands = [r["command"] for r in _records(run, COMMANDS_FILE) if isinstance(r.get("command"), str)]
    # a fence longer than any run of backticks in the commands: a quoted ``` cannot end the block early
    fence = "`" * max([3, *(len(m) + 1 for c in commands for m in re.findall("`+", c))])
    data_text = (f"synthetic `{data.family}` ({data.num_clips:,} clips)" if data.source == "synthetic"
                 else f"`{data.source}` at `{data.path}`")
    evaluation = _evaluation_rows(run, step)
    lines = [
        "---", "library_name: kinema", f"tags: [kinema, video-generation, {model.name}]", "---", "",
        f"# {model.name} — trained with kinema", "",
        f"Exported by kinema {__version__} from `{ckpt}` on {time.strftime('%Y-%m-%d')}. "
        f"Family: **{model.name}** (model card: `docs/models/` in the kinema repository).", "",
        "| | |", "|---|---|",
        f"| weights | {weights} |",
        f"| step | {step:,} of {train.steps:,} |" if step >= 0 else "| step | (not a training checkpoint) |",
        f"| video (C, T, H, W) | {' x '.join(map(str, video_shape))} |",
        "| parameters | " + ", ".join(f"{name} {count:,}" for name, count in counts.items()) + " |",
        f"| data | {data_text} |",
        f"| batch, lr, optimiser | {train.batch_size}, {train.lr:g}, {train.optimizer} |",
        "", "## Samples", "", *([f"![samples]({SAMPLE_GRID}.gif)", "", samples] if samples else ["(none)"]), "",
        "## Trained with", "",
        fence + "sh", *(commands or ["(no command record in the run folder)"]), fence, "",
        "## Evaluation", "",
    ]
    if evaluation:
        lines += ["| step | protocol | value | measured |", "|---:|---|---:|---|", *evaluation]
    else:
        lines += ["No evaluation record in the run's `metrics.jsonl`; score it with "
                  "`kinema evaluate --checkpoint THIS_FOLDER --metrics ...`."]
    lines += [
        "", "## Use", "", "```python", "import kinema", "from kinema import api", "",
        'model, config = kinema.from_pretrained("THIS_FOLDER_OR_HUB_REPO")',
        "videos = api.generate(model, num=4, seed=0)  # (N, C, T, H, W) in [-1, 1]", "```", "",
        "```sh", "kinema sample --checkpoint THIS_FOLDER --out samples/",
        "kinema train --out runs/finetune --init-from THIS_FOLDER  # its config, a fresh optimiser",
        "```", "",
        "## Config", "", "```toml", config.to_toml().rstrip(), "```", "",
    ]
    return "\n".join(lines)


def export(source: str | Path, out: str | Path, raw: bool = False, num_samples: int = 16, fps: float | None = None,
           progress: bool = False) -> Path:
    """Write the inference folder of ``source`` (a run folder: its newest sound checkpoint, or one checkpoint)
    to ``out`` and return it. ``raw``: the weights as trained instead of their EMA. ``out`` must be new or an
    earlier export (replaced); it is written beside itself and renamed into place."""
    from safetensors.torch import save_file

    out = Path(out)
    # before any work: a folder inside a checkpoint is deleted with it when the run prunes it
    refuse_inside_weights(out, "export folder", include_self=False)
    _check_replaceable(out)
    ckpt = resolve_checkpoint(source)
    has_ema = (ckpt / "ema.safetensors").is_file()
    model, config, ckpt = load_model(ckpt, device="cpu", ema=not raw)
    weights = ("as trained (raw)" if raw or not has_ema else
               f"EMA of `{config.train.ema_decay}` decay over the raw weights")
    kind = "raw" if raw or not has_ema else "ema"
    origin = _export_record(ckpt)
    if origin is not None:  # re-exporting an export: its weights and step are those of the export's own source
        kind = origin.get("weights") if origin.get("weights") in ("raw", "ema") else kind
        weights = f"those of the export `{ckpt}` ({kind})"
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        step = checkpoint_step(ckpt)
        if origin is not None and type(origin.get("step")) is int:
            step = origin["step"]
        (tmp / "config.json").write_text(config.to_json())
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp / "model.safetensors", metadata={"step": str(step), "model": config.model.name})
        os.chmod(tmp / "model.safetensors", file_mode())  # safetensors writes 0600 whatever the umask
        samples = _write_samples(model, ckpt, tmp, num_samples, fps or config.train.fps, progress)
        record = {"kinema_version": __version__, "source": str(ckpt.resolve()), "step": step,
                  "model": config.model.name, "weights": kind,
                  "exported": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        if origin is not None:
            record["exported_from"] = origin
        (tmp / EXPORT_FILE).write_text(json.dumps(record, indent=2))
        (tmp / CARD_FILE).write_text(_card(config, ckpt, step, weights, model.parameter_counts(), _run_folder(ckpt),
                                           samples, tuple(model.video_shape)))
        write_manifest(tmp)
        if out.exists():
            _check_replaceable(out)  # again: something may have been added while the samples were drawn
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception) and is_disk_full(exc):
            earlier = " and the earlier export there is intact" if out.exists() else ""
            raise CheckpointError(f"disk full: writing the export {out} on {filesystem_of(out.parent)}: the partial "
                                  f"copy was removed{earlier}. Free some space (the weights alone take "
                                  f"{format_bytes(_state_size(model))}) or export elsewhere") from None
        raise
    return out


def _state_size(model) -> int:
    return sum(v.numel() * v.element_size() for v in model.state_dict().values())


def _export_record(folder: Path) -> dict | None:
    """``export.json`` of an export folder (None for a checkpoint or one that cannot be read)."""
    try:
        record = json.loads((folder / EXPORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _check_replaceable(out: Path) -> None:
    """``out`` may be written: new, or an earlier export holding nothing but its own files. Replacing it deletes
    the folder, so a folder with anything else in it (notes, a run trained into it) is refused, never emptied."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir() or not (out / EXPORT_FILE).is_file():
        raise CheckpointError(f"{out} exists and is not a kinema export; give a new folder")
    try:
        listed = set(json.loads((out / MANIFEST_FILE).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        listed = None
    extra = sorted(p.name for p in out.iterdir() if listed is None or p.name not in listed | {MANIFEST_FILE})
    if extra:
        raise CheckpointError(f"{out} is a kinema export that also holds {', '.join(extra[:3])}"
                              f"{' ...' if len(extra) > 3 else ''}, which replacing it would delete; move "
                              "them out or give a new folder")


def _remove_stale_temporaries(out: Path) -> None:
    """Delete ``.tmp-NAME-PID`` folders beside ``out`` left by an export that was killed (its process is gone)."""
    from kinema.runlock import _pid_alive

    for tmp in out.parent.glob(f".tmp-{glob_escape(out.name)}-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)) and tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)


def _hub_snapshot(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> Path:
    """The local folder of Hub repository ``repo_id`` (downloaded into, or found in, the Hub's cache)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise CheckpointError(f"{repo_id!r} is not a local folder, and loading from the Hugging Face Hub needs "
                              "huggingface_hub: pip install 'kinema[hub]'") from None
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir))
    except LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        raise CheckpointError(
            f"{repo_id!r} is not in the Hugging Face Hub cache"
            + (" and HF_HUB_OFFLINE is set, so nothing is downloaded: unset it once to fetch the model"
               if offline else " and the Hub cannot be reached: connect once, or copy the exported folder and pass "
                               "its path")) from None
    except Exception as exc:  # RepositoryNotFoundError, HTTP errors, a bad id ...
        raise CheckpointError(f"cannot fetch {repo_id!r} from the Hugging Face Hub: {type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None


def from_pretrained(name_or_path: str | Path, device: str = "cpu", revision: str | None = None,
                    cache_dir: str | Path | None = None, ema: bool = True):
    """``(model in eval mode, config)`` from an export folder, a run or checkpoint folder, or a Hugging Face Hub
    repository id (``user/name``, an export pushed with ``kinema export --push-to-hub``)."""
    path = Path(name_or_path)
    if not path.exists():
        if str(name_or_path).count("/") != 1 or str(name_or_path).startswith((".", "/", "~")):
            raise CheckpointError(f"{name_or_path} does not exist; pass an export, run or checkpoint folder, or a "
                                  "Hugging Face Hub repository id such as user/model")
        path = _hub_snapshot(str(name_or_path), revision, cache_dir)
        if not (path / "config.json").is_file() or not is_weights_only(path):
            raise CheckpointError(f"the Hub repository {name_or_path!r} holds no kinema export (config.json, "
                                  f"model.safetensors, {EXPORT_FILE}); push one with `kinema export RUN OUT "
                                  "--push-to-hub REPO`")
    model, config, _ = load_model(path, device=device, ema=ema)
    return model, config


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload an export folder to the Hub repository ``repo_id`` (created if needed); returns its URL."""
    folder = Path(folder)
    if not (folder / EXPORT_FILE).is_file():
        raise CheckpointError(f"{folder} is not a kinema export ({EXPORT_FILE} missing); write one with `kinema export`")
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise CheckpointError("pushing to the Hugging Face Hub needs huggingface_hub: pip install 'kinema[hub]'") from None
    hub = HfApi(token=token)
    hub.create_repo(repo_id, private=private, exist_ok=True)
    hub.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="kinema export")
    return f"https://huggingface.co/{repo_id}"
