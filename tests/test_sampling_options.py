"""Sampling options every family shares: bf16/fp16 (``--precision``) and progress inside one batch."""

from __future__ import annotations

import pytest
import torch

from kinema import api
from kinema.cli import main
from kinema.errors import SamplingError
from kinema.registry import build_model, load_config

# One shipped tiny config per family that can sample on its own (the VQ-VAE cannot: it has a prior).
FAMILIES = {"tganv2_tiny": {}, "tgan_ode_tiny": {}, "vdm_tiny": {"steps": 3}, "videogpt_prior_tiny": {}}


@pytest.mark.parametrize("config", list(FAMILIES))
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_every_family_samples_in_low_precision(config, precision):
    torch.manual_seed(0)
    model = build_model(load_config(config).model).eval()
    options = FAMILIES[config]
    full = api.generate(model, 2, seed=3, **options)
    low = api.generate(model, 2, seed=3, precision=precision, **options)
    assert low.dtype == torch.float32 and low.shape == full.shape
    assert torch.isfinite(low).all()
    # same noise, same network: low precision moves pixels a little, not a lot (range [-1, 1])
    assert (low - full).abs().max() < 0.1, f"{config} {precision}: {(low - full).abs().max():.3f}"


def test_unknown_precision_is_named():
    model = build_model(load_config("tganv2_tiny").model).eval()
    with pytest.raises(SamplingError, match="--precision 'fp8'.*fp32, bf16, fp16"):
        api.generate(model, 1, precision="fp8")


def test_cli_sample_precision(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", "tganv2_tiny", "--out", str(run), "--steps", "1", "--no-progress",
                 "--set", "train.num_samples=2"]) == 0
    assert main(["sample", "--checkpoint", str(run), "--out", str(tmp_path / "s.gif"), "--num", "2",
                 "--precision", "bf16", "--no-progress"]) == 0
    assert (tmp_path / "s.gif").stat().st_size > 0
    with pytest.raises(SystemExit):
        main(["sample", "--checkpoint", str(run), "--out", str(tmp_path / "t.gif"), "--precision", "int8"])
    assert "invalid choice: 'int8'" in capsys.readouterr().err


@pytest.mark.parametrize("config, options, inner", [("vdm_tiny", {"steps": 5}, "denoising"),
                                                    ("videogpt_prior_tiny", {}, "tokens")])
def test_progress_inside_one_batch(config, options, inner, capsys):
    """A diffusion or autoregressive batch is one long call: its steps get a bar of their own, and
    only when progress is asked for."""
    model = build_model(load_config(config).model).eval()
    api.generate(model, 2, batch_size=2, progress=True, **options)
    err = capsys.readouterr().err
    assert "sampling" in err and inner in err
    api.generate(model, 2, batch_size=2, progress=False, **options)
    assert inner not in capsys.readouterr().err


def test_evaluate_set_changes_how_a_checkpoint_samples_not_its_weights(tmp_path, capsys):
    """`kinema evaluate --set model.KEY=VALUE`: settings that keep the weights (a VDM's sampler and steps) are
    applied before sampling and recorded; a shape-changing or non-model override fails and says why."""
    from kinema.errors import CheckpointError, ConfigError
    from kinema.registry import load_model

    run = tmp_path / "run"
    assert main(["train", "--config", "vdm_tiny", "--out", str(run), "--steps", "1", "--no-progress",
                 "--set", "train.num_samples=1", "--set", "model.sampling_steps=2"]) == 0
    plain, config, _ = load_model(run)
    changed, changed_config, _ = load_model(run, overrides=['model.sampler="ancestral"', "model.sampling_steps=3"])
    assert (config.model.sampler, config.model.sampling_steps) == ("ddim", 2)
    assert (changed_config.model.sampler, changed_config.model.sampling_steps) == ("ancestral", 3)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), changed.state_dict().values()))
    with pytest.raises(CheckpointError, match="change the network.*weights no longer fit"):
        load_model(run, overrides=["model.base_channels=32"])
    with pytest.raises(ConfigError, match="model.\\* settings only"):
        load_model(run, overrides=["train.lr=1.0"])
    with pytest.raises(ConfigError, match="has no setting 'sampling_stepz'"):
        load_model(run, overrides=["model.sampling_stepz=3"])
    out = tmp_path / "r.jsonl"
    assert main(["evaluate", "--checkpoint", str(run), "--metrics", "motion256", "--num", "2", "--device", "cpu",
                 "--set", "model.sampling_steps=3", "--out", str(out)]) == 0
    import json

    assert json.loads(out.read_text())["overrides"] == ["model.sampling_steps=3"]
    assert main(["evaluate", "--fake", str(tmp_path), "--data", str(tmp_path), "--metrics", "motion256",
                 "--set", "model.sampling_steps=3"]) == 2
    assert "nothing to apply it to" in capsys.readouterr().err
