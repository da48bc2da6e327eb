"""benchmarks/equal_compute_authors.py: the equal-compute specs of TGANv2 and VideoGPT and the authors'
trainers. The checks that run the authors' code skip without a checkout: set ``KINEMA_OFFICIAL_TGAN_ODE``
(Zasder3/Latent-Neural-Differential-Equations-for-Video-Generation) and ``KINEMA_OFFICIAL_VIDEOGPT``
(wilson1yan/VideoGPT)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import equal_compute_authors as eca  # noqa: E402


def _checkout(name: str) -> Path:
    path = os.environ.get(f"KINEMA_OFFICIAL_{name.upper()}")
    if not path or not Path(path).is_dir():
        pytest.skip(f"no checkout of the authors' {name} repository (set KINEMA_OFFICIAL_{name.upper()})")
    return Path(path)


def test_specs_follow_the_contract():
    """Both families: stages with a name (also as "stage"), a config and its overrides (loadable), steps; the
    batch is every stage's; a second stage names the first; a speed ratio; a trainer each."""
    from kinema.registry import load_config

    assert set(eca.AUTHORS_FAMILIES) == set(eca.REFERENCE_TRAINERS) == {"tganv2", "videogpt"}
    for family, spec in eca.AUTHORS_FAMILIES.items():
        assert spec["batch"] > 0 and spec["reference"].count("/") == 1 and spec["notes"]
        assert spec["speed_ratio"] is None or 0 < spec["speed_ratio"] < 2
        for i, stage in enumerate(spec["stages"]):
            assert stage["name"] == stage["stage"] and stage["steps"] > 0
            assert ("first_stage" in stage) == (i > 0)
            cfg = load_config(stage["config"], [s for s in stage["set"]])
            assert cfg.train.batch_size == spec["batch"] and cfg.train.lr_schedule == "constant"


def test_tganv2_matches_the_port_parameter_counts_and_loop():
    """kinema's TGANv2 at the port's 32x32 network: the port's G and D parameter counts exactly, and the
    port's loss weights and optimiser."""
    official = _checkout("tgan_ode")
    from kinema.registry import build_model, load_config

    sys.path.insert(0, str(official))
    from models.tganv2_dis import DisMultiResNet
    from models.tganv2_gen import Generator_CLSTM

    stage = eca.AUTHORS_FAMILIES["tganv2"]["stages"][0]
    cfg = load_config(stage["config"], stage["set"])
    counts = build_model(cfg.model).parameter_counts()
    port = [sum(p.numel() for p in m.parameters())
            for m in (Generator_CLSTM(**eca.PORT_CPU16_G), DisMultiResNet(**eca.PORT_CPU16_D))]
    assert port == [counts["generator"], counts["discriminator"]]
    assert (cfg.objective.gp_weight, cfg.train.lr, list(cfg.train.betas), cfg.train.ema_decay) == (0.5, 1e-4, [0.0, 0.9], 0.0)


def test_tganv2_kinema_starts_from_the_ports_initial_network(tmp_path):
    """kinema's TGANv2 side starts from the port's initial weights of the seed (``kinema_start``) with the
    port's update order: its dense video at step 0 equals the port generator's for the same z (batch norm on
    batch statistics, as the port samples), and the two seeds give different starts."""
    official = _checkout("tgan_ode")
    from kinema import api
    import train_speed

    spec = eca.AUTHORS_FAMILIES["tganv2"]
    assert spec["kinema_init"] == "reference"
    assert 'objective.update_order="discriminator_first"' in spec["stages"][0]["set"]
    starts = [eca.kinema_start("tganv2", seed, tmp_path / str(seed), official) for seed in (0, 1)]
    assert all(len(s) == 1 and s[0].startswith("train.init_from=") for s in starts) and starts[0] != starts[1]
    model, _ = api.load(starts[1][0].split("=", 1)[1].strip('"'))
    gen, _, _, _ = train_speed.build_port_tganv2(official, 1, torch.device("cpu"), real=torch.zeros(1, 16, 3, 32, 32),
                                                 gen_kwargs=eca.PORT_CPU16_G, dis_kwargs=eca.PORT_CPU16_D, seed=1)
    z = torch.rand(3, eca.PORT_CPU16_G["z_dim"]) * 2 - 1
    model.train()
    with torch.no_grad():
        torch.testing.assert_close(model.sample(z), gen(z, test=True), rtol=1e-4, atol=1e-5)


def test_tganv2_reference_trains_and_samples(tmp_path):
    """One iteration of the port's loop on kinema's stream, then 2 samples: (2, 3, 16, 32, 32) in [-1, 1]."""
    official = _checkout("tgan_ode")
    torch.set_num_threads(1)
    sample = eca.train_tganv2(official, eca.kinema_batches("tganv2", 0), {"tganv2": 1}, 0, tmp_path)
    videos = sample(2, 0)
    assert videos.shape == (2, 3, 16, 32, 32) and videos.abs().max() <= 1 and torch.isfinite(videos).all()
    assert torch.equal(videos, sample(2, 0))  # seeded


def test_videogpt_reference_trains_and_samples(tmp_path):
    """One VQ-VAE and one prior iteration of the authors' code, each stage on its own stream, their
    parameter counts equal kinema's; 2 samples (2, 3, 16, 32, 32) in [-1, 1]."""
    official = _checkout("videogpt")
    from kinema.registry import build_model, load_config

    torch.set_num_threads(1)
    batches = eca.kinema_batches("videogpt", 0)
    batches.parameters = None
    sample = eca.train_videogpt(official, batches, {"vqvae": 1, "prior": 1}, 0, tmp_path)
    videos = sample(2, 0)
    assert videos.shape == (2, 3, 16, 32, 32) and videos.abs().max() <= 1 and torch.isfinite(videos).all()
    vq_stage, prior_stage = eca.AUTHORS_FAMILIES["videogpt"]["stages"]
    vq = build_model(load_config(vq_stage["config"], vq_stage["set"]).model)
    assert batches.parameters["vqvae"] == sum(p.numel() for p in vq.parameters())
    # kinema's prior counted on a 16-dimensional codebook (the VQ-VAE above) in benchmarks/reference.py's record:
    # without model.vqvae the prior's input layer is sized for the default codebook
    record = json.loads((ROOT / "benchmarks" / "results" / "reference_videogpt.json").read_text())
    assert record["config"] == prior_stage["config"]
    assert batches.parameters["prior"] == record["parameters"]["kinema"]
