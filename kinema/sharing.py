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
import shutil
import time
from pathlib import Path

from kinema.config import RunConfig
from kinema.errors import CheckpointError
from kinema.registry import load_model, sampler_for
from kinema.runs import (
    COMMANDS_FILE,
    EXPORT_FILE,
    checkpoint_step,
    is_weights_only,
    resolve_checkpoint,
    write_manifest,
)
from kinema.system import file_mode
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
    for line in (run / name).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _evaluation_rows(run: Path | None, step: int) -> list[str]:
    """Markdown rows of every evaluation record in the run's ``metrics.jsonl`` up to ``step``."""
    rows = []
    for record in _records(run, "metrics.jsonl"):
        results = record.get("eval")
        if not isinstance(results, dict) or not isinstance(record.get("step"), int) or record["step"] > step:
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
          samples: str) -> str:
    model, data, train = config.model, config.data, config.train
    commands = [r["command"] for r in _records(run, COMMANDS_FILE) if isinstance(r.get("command"), str)]
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
        f"| video | {model.frames} frames x {model.resolution} px |"
        if hasattr(model, "frames") and hasattr(model, "resolution") else "| video | see config |",
        "| parameters | " + ", ".join(f"{name} {count:,}" for name, count in counts.items()) + " |",
        f"| data | {data_text} |",
        f"| batch, lr, optimiser | {train.batch_size}, {train.lr:g}, {train.optimizer} |",
        "", "## Samples", "", *([f"![samples]({SAMPLE_GRID}.gif)", "", samples] if samples else ["(none)"]), "",
        "## Trained with", "",
        "```sh", *(commands or ["(no command record in the run folder)"]), "```", "",
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

    ckpt = resolve_checkpoint(source)
    has_ema = (ckpt / "ema.safetensors").is_file()
    model, config, ckpt = load_model(ckpt, device="cpu", ema=not raw)
    weights = ("as trained (raw)" if raw or not has_ema else
               f"EMA of `{config.train.ema_decay}` decay over the raw weights")
    out = Path(out)
    if out.exists() and not (out.is_dir() and (out / EXPORT_FILE).is_file()):
        raise CheckpointError(f"{out} exists and is not a kinema export; give a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        step = checkpoint_step(ckpt)
        (tmp / "config.json").write_text(config.to_json())
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp / "model.safetensors", metadata={"step": str(step), "model": config.model.name})
        os.chmod(tmp / "model.safetensors", file_mode())  # safetensors writes 0600 whatever the umask
        samples = _write_samples(model, ckpt, tmp, num_samples, fps or config.train.fps, progress)
        record = {"kinema_version": __version__, "source": str(ckpt.resolve()), "step": step,
                  "model": config.model.name, "weights": "raw" if raw or not has_ema else "ema",
                  "exported": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        (tmp / EXPORT_FILE).write_text(json.dumps(record, indent=2))
        (tmp / CARD_FILE).write_text(_card(config, ckpt, step, weights, model.parameter_counts(), _run_folder(ckpt),
                                           samples))
        write_manifest(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


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
