"""One contract for every entry of :data:`kinema.registry.MODELS`: a new family is tested by registering it
and adding its tiny config to :data:`TINY` below.

Per entry, on a tiny config: build; train 2 steps with a checkpoint after each; resume from the first
checkpoint and end bit-exact on the uninterrupted run's second; ``kinema info``; ``kinema sample``; every
sampling option the family's sampler declares (each either renders videos of the expected shape or is
refused with the named :class:`~kinema.errors.SamplingError`), in bf16 and fp16 too; and the evaluation
protocols its capabilities allow (a cheap stand-in network for the feature protocols), while the others are
refused up front.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kinema.cli import main
from kinema.errors import SamplingError
from kinema.metrics import evaluate as ev
from kinema.metrics.protocols import PROTOCOLS, Protocol
from kinema.models.base import FirstStageAutoencoder, SecondStageModel
from kinema.registry import MODELS, load_config, load_model, sampler_for
from kinema.runs import list_checkpoints
from kinema.training import Trainer
from kinema.video.io import to_uint8, write_video
from tiny import TINY_MODEL


@dataclass(frozen=True)
class Tiny:
    """A registry entry's tiny run: start from the shipped config ``config``, override its sections, and (for a
    second stage) point ``model.<first_stage[0]>`` at a run of the entry ``first_stage[1]``. ``samples``: calls of
    the family's sampler, ``(options, None)`` to render or ``(options, "regex")`` for the SamplingError expected;
    values ``"VIDEO"`` / ``"LOWRES"`` / ``"MASKS"`` become files, a callable ``f(model)`` a tensor."""

    config: str | None
    model: dict[str, Any] = field(default_factory=dict)
    objective: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    first_stage: tuple[str, str] | None = None
    samples: tuple[tuple[dict[str, Any], str | None], ...] = ()


def _context(model) -> torch.Tensor:
    c, t, h, w = model.video_shape
    return torch.zeros(1, c, t, h, w)


DISCRETE = "discrete-time temporal generator"
TINY: dict[str, Tiny] = {
    "tganv2": Tiny(None, model=dict(TINY_MODEL), samples=(
        ({}, None),
        ({"fps_multiplier": 2}, DISCRETE), ({"t_start": 0.5}, DISCRETE), ({"t_end": 3.0}, DISCRETE),
        ({"frames": 4}, DISCRETE), ({"times": torch.tensor([0.0, 0.5])}, DISCRETE))),
    "tgan": Tiny("tgan_ode_tiny", model=dict(z_dim=8, resolution=16, temporal_hidden=8, gen_channels=[16, 8, 8],
                                              dis_channels=[8, 8, 8]), samples=(
        ({"fps_multiplier": 2}, None), ({"t_start": -1.0, "t_end": 2.0, "frames": 5}, None),
        ({"times": torch.tensor([0.0, 0.5, 1.5])}, None))),
    "stylegan_v": Tiny("stylegan_v_tiny", samples=(
        ({"fps_multiplier": 2}, None), ({"t_start": 1.0, "t_end": 9.0, "frames": 3}, None),
        ({"times": torch.tensor([0.0, 4.0])}, None), ({"motion_seed": 5, "truncation_psi": 0.7}, None))),
    "vdm": Tiny("vdm_tiny", model=dict(resolution=8, base_channels=8, channel_mult=[1], attention_resolutions=[],
                                       head_channels=8, embed_channels=16, norm_groups=4, sampling_steps=2), samples=(
        ({"sampler": "ancestral", "steps": 2}, None),
        ({"extend": "VIDEO", "new_frames": 2, "method": "replacement", "steps": 2}, None),
        ({"upsample": "LOWRES", "guidance_weight": 1.0, "steps": 2}, None),
        ({"label": 0}, "not class-conditional"))),
    "videogpt_vqvae": Tiny("videogpt_vqvae_tiny", model=dict(hidden=8, embedding_dim=8, codebook_size=16,
                                                             res_layers=1)),
    "videogpt_prior": Tiny("videogpt_prior_tiny", model=dict(hidden=16, codebook_size=16, layers=1),
                           first_stage=("vqvae", "videogpt_vqvae"), samples=(
        ({"condition": "VIDEO", "temperature": 0.9, "top_k": 4}, None),
        ({"label": 0}, "not class-conditional"))),
    "dvg": Tiny("dvg_tiny", model=dict(n_past=2, n_future=2, g_dim=8, nf=8, rnn_size=16, rnn_layers=1,
                                       gp_inducing=4), samples=(
        ({"condition": "VIDEO", "frames": 3, "trigger": "every_k", "trigger_every": 2}, None),
        ({"context": _context}, None))),
    "nuwa_vqgan": Tiny("nuwa_vqgan_tiny", model=dict(hidden=8, max_mult=1, codebook_size=16, embedding_dim=8,
                                                     disc_hidden=8, disc_layers=1)),
    "nuwa": Tiny("nuwa_tiny", model=dict(codebook_size=16, hidden=32, heads=2, encoder_layers=1,
                                         decoder_layers=1), first_stage=("vqgan", "nuwa_vqgan"), samples=(
        ({"condition": "VIDEO", "temperature": 0.9, "top_k": 4, "guidance": 1.5}, None),
        ({"text": "a red square"}, "text"), ({"sketch": "MASKS"}, "sketch"))),
}
TRAIN = dict(steps=2, batch_size=2, checkpoint_every=1, keep_checkpoints=0, log_every=1, num_samples=2,
             sample_every=1000, ema_decay=0.0, eval_every=0, lr_schedule="constant")


def tiny_for(name: str) -> Tiny:
    if name not in TINY:
        pytest.fail(f"model {name!r} is registered in kinema.registry.MODELS but has no tiny config: add "
                    f"TINY[{name!r}] = Tiny(...) to tests/test_registry_contract.py (a shipped config to start from, "
                    "small overrides, and one call per sampling option its sampler declares)")
    return TINY[name]


def tiny_config(name: str, runs: dict[str, Path]):
    tiny = tiny_for(name)
    model = dict(tiny.model)
    model["name"] = name
    if tiny.first_stage is not None:
        key, entry = tiny.first_stage
        model[key] = str(runs[entry])
    sections = dict(model=model, train=dict(TRAIN), data={"num_clips": 8, **tiny.data})
    if tiny.objective:
        sections["objective"] = dict(tiny.objective)
    return load_config(tiny.config, **sections)


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    out = {f"model/{k}": v for k, v in load_file(ckpt / "model.safetensors").items()}
    if (ckpt / "ema.safetensors").is_file():
        out.update({f"ema/{k}": v for k, v in load_file(ckpt / "ema.safetensors").items()})
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Trained tiny runs by registry name, in an order that trains every first stage before its second stage."""
    return {}


def train_run(name: str, runs: dict[str, Path], root: Path) -> Path:
    if name in runs:
        return runs[name]
    tiny = tiny_for(name)
    if tiny.first_stage is not None:
        train_run(tiny.first_stage[1], runs, root)
    out = root / name
    trainer = Trainer(tiny_config(name, runs), out, device="cpu", progress=False)
    trainer.fit()
    runs[name] = out
    return out


def test_every_registered_model_has_a_tiny_config():
    assert not sorted(set(TINY) - set(MODELS)), "TINY names a model the registry does not hold"
    for name in MODELS:
        tiny_for(name)


def write_clip(path: Path, video: torch.Tensor) -> str:
    """``video (C, T, H, W)`` in [-1, 1] -> a GIF (grey for one channel)."""
    if video.shape[0] == 1:
        video = video.expand(3, *video.shape[1:])
    write_video(path, to_uint8(video), fps=8)
    return str(path)


def option_values(options: dict[str, Any], model, real: torch.Tensor, tmp: Path) -> dict[str, Any]:
    values = {}
    for key, value in options.items():
        if callable(value):
            value = value(model)
        elif value == "VIDEO":
            value = write_clip(tmp / f"{key}.gif", real)
        elif value == "LOWRES":  # half the resolution, the model's frames
            value = write_clip(tmp / f"{key}.gif", torch.nn.functional.avg_pool3d(real[None], (1, 2, 2))[0])
        elif value == "MASKS":
            c, t, h, w = model.video_shape
            np.save(tmp / "masks.npy", np.zeros((t, h, w), dtype=np.int64))
            value = str(tmp / "masks.npy")
        values[key] = value
    return values


@pytest.fixture()
def cheap_network(monkeypatch):
    """A stand-in for the feature networks (per-channel mean and std of each clip); tiny test protocols, the
    feature one at ``frames`` frames."""
    monkeypatch.setattr(ev, "feature_function",
                        lambda protocol, w, device: lambda v: torch.cat([v.mean((2, 3, 4)), v.std((2, 3, 4))], 1))

    def register(frames: int) -> list[str]:
        tiny = {"fvd_contract": Protocol("fvd_contract", "i3d", "fvd", 4, frames),
                "motion_contract": Protocol("motion_contract", "none", "oracle", 4, 0),
                "bestof_contract": Protocol("bestof_contract", "none", "best_of_n", 2, 0, futures=2)}
        for name, protocol in tiny.items():
            monkeypatch.setitem(PROTOCOLS, name, protocol)
        return list(tiny)

    return register


@pytest.mark.parametrize("name", list(MODELS))
def test_registry_entry_honours_the_contract(name, runs, tmp_path_factory, tmp_path, capsys, cheap_network):
    root = tmp_path_factory.getbasetemp() / "contract_runs"
    run = train_run(name, runs, root)
    tiny = tiny_for(name)

    # checkpoints after each of the 2 steps; resuming from the first ends bit-exact on the second
    assert [p.name for p in list_checkpoints(run)] == ["step_0000001", "step_0000002"]
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_0000002")
    end = Trainer(tiny_config(name, runs), resumed, device="cpu", resume=True, progress=False).fit()
    a, b = weights(run / "checkpoints" / "step_0000002"), weights(end)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == [], "resume is not bit-exact"

    # kinema info
    assert main(["info", str(run)]) == 0
    assert f"model:      {name}" in capsys.readouterr().out

    model, config, _ = load_model(run)
    sampler = sampler_for(model)
    c, t, h, w = model.video_shape
    if isinstance(model, SecondStageModel):
        assert model.first_stage_loaded and not any(p.requires_grad for p in model.first_stage.parameters())
        assert not model.train().first_stage.training, "the frozen first stage stays in eval mode"
        model.eval()
    if isinstance(model, FirstStageAutoencoder):  # a tokenizer: nothing to sample, and it says what to do
        assert main(["sample", "--checkpoint", str(run), "--num", "1", "--out", str(tmp_path / "s.gif")]) == 2
        assert "cannot sample" in capsys.readouterr().err
        assert not sampler.options
        return

    # kinema sample, then every declared sampling option
    real = torch.rand(c, t, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert main(["sample", "--checkpoint", str(run), "--num", "1", "--out", str(tmp_path / "s.gif"),
                 *(["--condition", write_clip(tmp_path / "c.gif", real)] if not model.capabilities.unconditional
                   else [])]) == 0
    covered = set()
    for options, refused in tiny.samples:
        covered |= set(options)
        values = option_values(options, model, real, tmp_path)
        if refused is not None:
            with pytest.raises(SamplingError, match=refused):
                sampler.generate(model, 2, seed=0, batch_size=2, **values)
            continue
        videos = sampler.generate(model, 2, seed=0, batch_size=2, **values)
        assert videos.shape[:2] == (2, c) and videos.dtype == torch.float32, options
        assert bool(videos.isfinite().all()) and float(videos.abs().max()) <= 1.0 + 1e-6, options
    missing = sorted(set(sampler.option_names()) - covered)
    assert not missing, f"TINY[{name!r}].samples exercises none of the declared options {missing}"
    # --precision, which every sampler takes: videos come back float32, finite, of the same shape
    options = next((option_values(o, model, real, tmp_path) for o, refused in tiny.samples if refused is None), {})
    full = sampler.generate(model, 2, seed=3, batch_size=2, **options)
    for precision in ("bf16", "fp16"):
        low = sampler.generate(model, 2, seed=3, batch_size=2, precision=precision, **options)
        assert low.dtype == torch.float32 and low.shape == full.shape and bool(low.isfinite().all()), precision

    # the evaluation protocols its capabilities allow; the others are refused before any work
    caps = model.capabilities
    generative = caps.unconditional or ev.continues_frames(model)
    allowed = ([["fvd_contract"]] if generative else []) + ([["motion_contract"]] if caps.unconditional else []) \
        + ([["bestof_contract"]] if caps.context_frames else [])
    refused = [[p] for p in cheap_network(t) if [p] not in allowed]
    dataset, key = ev.heldout_real_set(config.data, config.train.seed, t, h, w)
    for metrics in allowed:
        result = ev.evaluate_model(model, metrics, {}, dataset=dataset, dataset_key=key, num=4, seed=0,
                                   batch_size=2, cache_dir=None)
        assert np.isfinite(result[metrics[0]]["value"]), (metrics, result)
    for metrics in refused:
        with pytest.raises(ValueError, match="score it with"):
            ev.check_model_suits(model, metrics)


def test_second_stage_on_the_meta_device_reads_no_first_stage_weights(runs, tmp_path_factory, monkeypatch):
    """The checkpoint check builds models on the meta device: the first stage is not loaded there (nor read)."""
    import kinema.models.base as base
    from kinema.registry import build_model

    root = tmp_path_factory.getbasetemp() / "contract_runs"
    for name in ("videogpt_prior", "nuwa"):
        config = tiny_config(name, {entry: train_run(entry, runs, root) for entry in ("videogpt_vqvae", "nuwa_vqgan")})
        assert build_model(config.model).first_stage_loaded
        monkeypatch.setattr(base, "checkpoint_with_model", lambda *a: pytest.fail("read first-stage weights on meta"))
        with torch.device("meta"):
            model = build_model(config.model)
        assert not model.first_stage_loaded
        monkeypatch.undo()
