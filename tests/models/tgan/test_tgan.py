"""TGAN / TGAN-ODE: shapes per temporal kind, one GAN step, continuous-time sampling, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
import torch
from tiny import one_batch

from kinema.config import build_dataclass
from kinema.errors import ConfigError
from kinema.objectives.gan import GANConfig as ObjectiveConfig
from kinema.models.tgan import TGAN, TGANConfig
from kinema.objectives.gan import GANObjective

KINDS = ["conv1d", "gru", "lstm", "ode", "sde"]
CONFIGS = sorted(Path(__file__).resolve().parents[3].glob("configs/tgan_*.toml")) + sorted(
    Path(__file__).resolve().parents[3].glob("configs/mocogan_*.toml"))
# 8 frames at 16x16: two ConvTranspose2d doublings (4 -> 16), two D convs (8x16x16 -> 2x4x4).
TINY = {"z_dim": 8, "frames": 8, "resolution": 16, "temporal_hidden": 16, "gen_channels": [16, 8, 8], "dis_channels": [8, 16]}


def tiny(kind: str = "ode", **changes) -> TGAN:
    torch.manual_seed(0)
    return TGAN(TGANConfig(**{**TINY, "temporal": kind, **changes}))


@pytest.mark.parametrize("kind", KINDS)
def test_interface_shapes(kind):
    model = tiny(kind)
    g = torch.Generator().manual_seed(0)
    z = model.sample_noise(3, generator=g)
    assert z.shape == (3, 8) and z.min() >= -1 and z.max() <= 1
    fakes = model.generate_levels(z, generator=g)
    assert len(fakes) == 1 and fakes[0].shape == (3, 3, 8, 16, 16) == (3, *model.video_shape)
    assert fakes[0].abs().max() <= 1
    real = torch.rand(3, 3, 8, 16, 16) * 2 - 1
    reals = model.real_levels(real, generator=g)
    assert len(reals) == 1 and torch.equal(reals[0], real)
    scores = model.discriminate(reals)
    assert len(scores) == 1 and scores[0].shape == (3,)
    model.eval()
    assert model.sample(z).shape == (3, 3, 8, 16, 16)
    assert model.sample(z, torch.arange(4)).shape == (3, 3, 4, 16, 16)
    assert model.capabilities.continuous_time == (kind in ("ode", "sde"))


@pytest.mark.parametrize("kind", ["conv1d", "ode"])
def test_one_gan_step_changes_generator_and_discriminator(kind):
    model = tiny(kind)
    obj = GANObjective(model, ObjectiveConfig(loss="hinge", gp_weight=1.0, gp_reduction="mean"))
    opts = {n: torch.optim.Adam(p, lr=1e-3, betas=(0.0, 0.9)) for n, p in obj.parameter_groups().items()}
    g0 = [p.detach().clone() for p in model.generator.parameters()]
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    metrics = obj.train_step(*one_batch(torch.rand(4, 3, 8, 16, 16) * 2 - 1, opts, torch.Generator().manual_seed(0)))
    assert all(torch.isfinite(v) for v in metrics.values())
    assert all(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()) if a.dim() > 1)
    assert all(not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()) if a.dim() > 1)


def test_generation_is_seeded():
    """Same torch.Generator seed, same fakes -- the SDE's Brownian path included."""
    def fakes(model):
        g = torch.Generator().manual_seed(7)
        return model.generate_levels(model.sample_noise(2, generator=g), generator=g)[0]

    for kind in ("ode", "sde"):
        model = tiny(kind).eval()
        torch.testing.assert_close(fakes(model), fakes(model))


@pytest.mark.parametrize("kind", ["ode", "sde"])
def test_continuous_kinds_sample_any_times(kind):
    model = tiny(kind).eval()
    z = model.sample_noise(2, generator=torch.Generator().manual_seed(1))
    times = torch.tensor([-2.0, -0.5, 0.0, 0.25, 3.5, 7.0, 9.0])  # before, between and after frames
    video = model.sample(z, times, seed=3)
    assert video.shape == (2, 3, 7, 16, 16) and torch.isfinite(video).all()
    up = model.sample(z, torch.arange(0, 7.5, 0.5), seed=3)  # 2x frame-rate up-sampling
    assert up.shape == (2, 3, 15, 16, 16)
    if kind == "ode":  # a frame's latent does not depend on the other requested times
        torch.testing.assert_close(up[:, :, ::2], model.sample(z), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["conv1d", "gru", "lstm"])
def test_discrete_kinds_refuse_continuous_times(kind):
    model = tiny(kind).eval()
    z = model.sample_noise(2)
    for times in ([0.0, 0.5, 1.0], [-1.0, 0.0, 1.0], list(range(9))):
        with pytest.raises(ValueError, match="discrete-time generator"):
            model.sample(z, torch.tensor(times))


@pytest.mark.parametrize("changes, key", [
    ({"resolution": 48}, "model.resolution"),
    ({"resolution": 32}, "model.gen_channels"),  # 32 = 4 * 2^3 needs 4 widths, TINY has 3
    ({"temporal": "gru", "temporal_order": 2}, "model.temporal_order"),
    ({"temporal_solver": "nope"}, "model.temporal_solver"),
    ({"temporal_layers": 0}, "model.temporal_layers"),
    ({"temporal_hidden": 0}, "model.temporal_hidden"),
    ({"temporal": "convlstm"}, "model.temporal"),
    ({"frames": 2}, "model.dis_channels"),
    ({"gen_channels": [15, 8, 8]}, "model.gen_channels"),
    ({"z_dim": 0}, "model.z_dim"),
])
def test_config_errors_name_the_key(changes, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        TGANConfig(**{**TINY, **changes}).validate()


def test_config_type_errors_from_toml_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.temporal"):
        build_dataclass(TGANConfig, {"temporal": "transformer"}, "model")
    with pytest.raises(ConfigError, match=r"model\.temporal_order"):
        build_dataclass(TGANConfig, {"temporal_order": "two"}, "model")


def test_resolution_follows_number_of_deconvs():
    model = tiny(resolution=32, gen_channels=[16, 8, 8, 8], dis_channels=[8, 16, 16])
    video = model.generate_levels(model.sample_noise(2))[0]
    assert video.shape == (2, 3, 8, 32, 32) and model.discriminate([video])[0].shape == (2,)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_configs_load_and_build_on_meta(path):
    raw = tomllib.loads(path.read_text())
    from kinema.registry import load_config

    cfg = load_config(path).model  # resolves `extends` (the *_tiny16 twins)
    assert isinstance(cfg, TGANConfig)
    with torch.device("meta"):
        model = TGAN(cfg)
    counts = model.parameter_counts()
    print(f"{path.stem}: {counts}")
    assert counts["generator"] > 0 and counts["discriminator"] > 0
    if not path.stem.startswith(("tgan_ode_tiny", "tgan_ode_cpu16")):  # the paper configs: UCF-101 at 64x64
        assert model.video_shape == (3, 16, 64, 64)
        # UCF-101 as a folder of videos, or as the cache `kinema prepare` writes (tgan_ode_ucf101_64)
        assert (raw["data"]["source"], raw["data"]["path"]) in {("folder", "data/UCF-101"), ("cache", "data/ucf101_64x85")}


def test_paper_architecture_counts():
    """Counts of the reference layers (models/tgan.py of the TGAN-ODE code), BN affine included:
    image generator = 2 x (100*4096 + 2*4096) + deconvs; D = 4 Conv3d + 3 BN3d + the 4x4 score conv."""
    with torch.device("meta"):
        model = TGAN(TGANConfig(temporal="conv1d"))
    counts = model.parameter_counts()
    deconvs = (512 * 256 + 256 * 128 + 128 * 64 + 64 * 32) * 16 + 2 * (256 + 128 + 64 + 32) + 32 * 3 * 9 + 3
    assert counts["image"] == 2 * (100 * 4096 + 2 * 4096) + deconvs
    convs = [(3, 64), (64, 128), (128, 256), (256, 512)]
    d = sum(a * b * 64 + b for a, b in convs) + 2 * (128 + 256 + 512) + 512 * 16 + 1
    assert counts["discriminator"] == d


@pytest.mark.parametrize("upsample", ["transposed", "resize"])
def test_content_once_same_outputs_and_gradients(upsample):
    """model.content_once (the first doubling's z_c half computed once per video) is the same maths
    as one convolution of the concatenated map per frame (float64), in both layouts and with either
    up-sampler; the content projection's BatchNorm1d sees the B video codes in both (its running statistics
    are the reference's)."""
    from kinema.registry import build_model, load_config

    for channels_last in ("false", "true"):
        results = {}
        for once in ("false", "true"):
            cfg = load_config("tgan_ode_tiny", [f"model.content_once={once}", f"model.upsample={upsample}",
                                                f"model.channels_last={channels_last}"]).model
            torch.manual_seed(0)
            model = build_model(cfg).double()
            z = model.sample_noise(3, generator=torch.Generator().manual_seed(1)).double()
            video = model.generate_levels(z, generator=torch.Generator().manual_seed(2))[0]
            (video * torch.linspace(-1, 1, video.numel(), dtype=video.dtype).view_as(video)).sum().backward()
            grads = {n: p.grad.clone() for n, p in model.generator.named_parameters() if p.grad is not None}
            results[once] = (video.detach(), grads, dict(model.generator.named_buffers()))
        (ref, ref_grads, ref_buffers), (video, grads, buffers) = results["false"], results["true"]
        torch.testing.assert_close(video, ref, rtol=1e-10, atol=1e-12)
        scale = max(g.abs().max().item() for g in ref_grads.values())
        assert grads.keys() == ref_grads.keys()
        for name in ref_grads:
            torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-9, atol=1e-12 * scale, msg=name)
        for name in ref_buffers:
            torch.testing.assert_close(buffers[name].double(), ref_buffers[name].double(), rtol=1e-12, atol=1e-12)
        assert model.generator.image.content[1].running_mean.shape == (cfg.gen_channels[0] // 2 * 16,)


def test_resize_upsampler_has_no_checkerboard():
    """model.upsample = "resize" exists for what Odena et al. (2016) show: a 4x4 stride-2 transposed
    convolution gives even and odd output pixels different kernel taps, so a flat input map comes out as a
    checkerboard; nearest x2 + a 3x3 convolution gives every interior pixel the same taps (flat stays flat).
    Both layers with random weights, on a spatially constant (1, C, 4, 4) map."""
    from kinema.registry import build_model, load_config

    flat = torch.ones(1, 8, 4, 4, dtype=torch.float64)
    spread = {}
    for upsample in ("transposed", "resize"):
        cfg = load_config("tgan_ode_tiny", [f"model.upsample={upsample}", "model.init=pytorch"]).model
        torch.manual_seed(0)
        image = build_model(cfg).generator.image.double()
        doubling = image.deconvs[:image.first_doubling]
        assert [type(m).__name__ for m in doubling] == (
            ["Upsample", "Conv2d"] if upsample == "resize" else ["ConvTranspose2d"])
        out = doubling(flat.repeat(1, cfg.gen_channels[0] // 8, 1, 1))  # (1, C', 8, 8)
        assert out.shape[-2:] == (8, 8)
        interior = out[..., 1:-1, 1:-1]
        spread[upsample] = (interior - interior.mean(dim=(-2, -1), keepdim=True)).abs().max().item()
    assert spread["resize"] < 1e-12, spread  # flat in, flat out
    assert spread["transposed"] > 1e-3, spread  # the checkerboard

