"""WGAN objective with singular value clipping (TGAN): a step per update order, the clipping itself
against the official code's formula, the clipping period, BatchNorm gain clamping, the model check, and
the TGAN paper configs that use it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import holds_saved_tensors, one_batch, tiny_model_config
from torch import nn

from kinema.data import Batch
from kinema.errors import ConfigError
from kinema.models.tgan import TGAN, TGANConfig
from kinema.objectives.base import StepContext
from kinema.objectives.wgan import (
    WGANConfig,
    WGANObjective,
    clamp_batchnorm_gains_,
    clip_singular_values_,
    clippable_weights,
    largest_singular_value,
)

ROOT = Path(__file__).resolve().parents[2]
# test_tgan.py's tiny TGAN: 8 frames at 16x16, two D convs with BatchNorm after the second.
TINY = {"z_dim": 8, "frames": 8, "resolution": 16, "temporal_hidden": 16, "gen_channels": [16, 8, 8],
        "dis_channels": [8, 16]}
# The configs of the paper's TGAN / TGAN-ODE rows (Kanaa et al. 2021, Table 1), which train TGAN's WGAN-SVC.
PAPER_CONFIGS = ["tgan_conv1d", "tgan_ode", "tgan_ode2", "tgan_ode3", "tgan_ode_deep", "tgan_sde",
                 "tgan_ode_ucf101_64"]


def tiny_tgan(kind: str = "ode") -> TGAN:
    torch.manual_seed(0)
    return TGAN(TGANConfig(**TINY, temporal=kind))


def setup(**objective):
    model = tiny_tgan()
    obj = WGANObjective(model, WGANConfig(**objective))
    opts = {n: torch.optim.RMSprop(p, lr=5e-5) for n, p in obj.parameter_groups().items()}
    return model, obj, opts, torch.rand(4, 3, 8, 16, 16) * 2 - 1


def inflate(module: nn.Module, factor: float = 10.0) -> None:
    """Scale every clippable weight so its largest singular value is well above 1."""
    with torch.no_grad():
        for w in clippable_weights(module):
            w.mul_(factor / largest_singular_value(w))


def batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("order", ["g_first", "d_first"])
def test_one_step_updates_both_networks_and_clips_the_critic(order):
    model, obj, opts, real = setup(order=order, clip_every=1)
    inflate(model.discriminator)
    for bn in batchnorms(model.discriminator):
        bn.weight.data.fill_(5.0)  # far above sqrt(running_var) ~ 1
    assert max(largest_singular_value(w) for w in clippable_weights(model.discriminator)) > 9
    g0 = [p.detach().clone() for p in model.generator.parameters()]
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    metrics = obj.train_step(*one_batch(real, opts, torch.Generator().manual_seed(0)))
    assert set(metrics) == {"loss_g", "loss_d", "score_real", "score_fake", "critic_sigma_max"}
    assert all(torch.isfinite(v) for v in metrics.values())
    assert metrics["critic_sigma_max"] > 9  # measured before this step's clipping
    torch.testing.assert_close(metrics["loss_d"], metrics["score_fake"] - metrics["score_real"])
    assert all(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()) if a.dim() > 1)
    assert all(not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()) if a.dim() > 1)
    # Every clipped layer -- the Conv3d weights as (out, in * kt * kh * kw), TGAN's reshape -- has
    # spectral norm <= 1, and every BN gain lies in [0.01 sigma, sigma].
    weights = clippable_weights(model.discriminator)
    assert len(weights) == 3  # two strided Conv3d + the score Conv3d
    for w in weights:
        assert largest_singular_value(w) <= 1 + 1e-5
    bns = batchnorms(model.discriminator)
    assert len(bns) == 1
    for bn in bns:
        sigma = bn.running_var.sqrt()
        assert (bn.weight <= sigma + 1e-6).all() and (bn.weight >= 0.01 * sigma - 1e-6).all()


def test_g_first_critic_gradients_match_a_fresh_forward_on_detached_fakes():
    """g_first reuses the generator phase's fake scores and backpropagates their half first; the critic's
    gradients equal those of scoring the same (detached) fakes and the reals again after the G step, in the
    same order (fakes, then reals: what batch norm's statistics see)."""
    model, obj, opts, real = setup(order="g_first", clip="none")
    for opt in opts.values():  # lr 0: the weights stay, so the critic's pass can be recomputed afterwards
        opt.param_groups[0]["lr"] = 0.0
    bn_state = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    obj.train_step(*one_batch(real, opts, torch.Generator().manual_seed(5)))
    reused = [p.grad.clone() for p in model.discriminator.parameters()]

    # train mode normalises with batch statistics; the running ones are put back only to leave D as before the step
    model.discriminator.load_state_dict(bn_state)
    g = torch.Generator().manual_seed(5)
    z = model.sample_noise(4, generator=g)
    fakes = [f.detach() for f in model.generate_levels(z, generator=g)]
    fake_scores = torch.cat(model.discriminate(fakes))
    real_scores = torch.cat(model.discriminate([r.detach() for r in model.real_levels(real, g)]))
    model.discriminator.zero_grad()
    (fake_scores.mean() - real_scores.mean()).backward(inputs=list(model.discriminator.parameters()))
    for a, p in zip(reused, model.discriminator.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)


def test_g_first_frees_the_critics_graph_on_the_fakes_before_the_reals_forward():
    model, obj, opts, real = setup(order="g_first")
    held, real_levels = [], model.real_levels

    def spy(*args, **kwargs):
        held.append(holds_saved_tensors(obj._fake_scores[0].grad_fn))
        return real_levels(*args, **kwargs)

    model.real_levels = spy
    obj.train_step(*one_batch(real, opts, torch.Generator().manual_seed(0)))
    assert held == [False], "the critic's graph on the fakes is still held when the reals go through it"


@pytest.mark.parametrize("order", ["g_first", "d_first"])
def test_gradient_accumulation_runs(order):
    model, obj, opts, real = setup(order=order, clip_every=1)
    ctx = StepContext.for_batch(opts, torch.Generator().manual_seed(0), 4, accumulate=2)
    metrics = obj.train_step([Batch(real[:2]), Batch(real[2:])], ctx)
    assert all(torch.isfinite(v) for v in metrics.values())
    assert all(largest_singular_value(w) <= 1 + 1e-5 for w in clippable_weights(model.discriminator))


def test_clipping_matches_the_official_formula():
    """TGAN ``_clip_singular_value``: U, s, Vh = svd(W.reshape(out, -1)); s[s > 1] = 1; U diag(s) Vh."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv3d(3, 8, 4), nn.Conv2d(8, 6, 3), nn.Linear(5, 7), nn.ConvTranspose2d(4, 6, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(20)
    before = [w.detach().clone() for w in clippable_weights(net)]
    biases = [m.bias.detach().clone() for m in net]
    largest = clip_singular_values_(net)
    torch.testing.assert_close(largest, max(largest_singular_value(w) for w in before))
    for w0, w in zip(before, clippable_weights(net)):
        a = w0.double().numpy().reshape(w0.shape[0], -1)
        u, s, vh = np.linalg.svd(a, full_matrices=False)
        s[s > 1] = 1
        expected = torch.from_numpy(u @ np.diag(s) @ vh).reshape(w0.shape).float()
        torch.testing.assert_close(w.detach(), expected, rtol=1e-4, atol=1e-5)
        assert largest_singular_value(w) <= 1 + 1e-5
    assert all(torch.equal(b, m.bias) for b, m in zip(biases, net))  # only weights are clipped


def test_weights_within_the_limit_stay_bit_identical():
    net = nn.Conv3d(3, 8, 2)
    with torch.no_grad():
        net.weight.mul_(0.5 / largest_singular_value(net.weight))
    before = net.weight.detach().clone()
    clip_singular_values_(net)
    assert torch.equal(net.weight, before)


def test_batchnorm_gains_are_clamped_to_the_running_std():
    bn = nn.BatchNorm3d(4)
    bn.running_var.copy_(torch.tensor([4.0, 4.0, 4.0, 0.25]))
    bn.weight.data.copy_(torch.tensor([3.0, 0.01, -1.0, 0.3]))
    clamp_batchnorm_gains_(bn)
    # sigma = 2, 2, 2, 0.5: 3 -> 2 (upper), 0.01 -> 0.02 (lower), -1 -> 0.02, 0.3 stays
    torch.testing.assert_close(bn.weight.detach(), torch.tensor([2.0, 0.02, 0.02, 0.3]))


def test_clipping_runs_after_every_clip_every_th_iteration():
    """Official TGAN: ``self.it += 1; if it % freq == 0`` -- after iterations 5, 10, ... (steps 4, 9, ...)."""
    model, obj, opts, real = setup()  # clip_every = 5, the official configs' freq
    assert obj.config.clip_every == 5
    clipped_at = []
    for step in range(10):
        batches, ctx = one_batch(real, opts, torch.Generator().manual_seed(step))
        ctx.step = step
        inflate(model.discriminator)
        if "critic_sigma_max" in obj.train_step(batches, ctx):
            clipped_at.append(step)
            assert all(largest_singular_value(w) <= 1 + 1e-5 for w in clippable_weights(model.discriminator))
        else:
            assert max(largest_singular_value(w) for w in clippable_weights(model.discriminator)) > 1
    assert clipped_at == [4, 9]


def test_clip_none_never_clips_and_config_is_checked():
    model, obj, opts, real = setup(clip="none", clip_every=1)
    inflate(model.discriminator)
    assert "critic_sigma_max" not in obj.train_step(*one_batch(real, opts, torch.Generator().manual_seed(0)))
    assert max(largest_singular_value(w) for w in clippable_weights(model.discriminator)) > 1
    with pytest.raises(ConfigError, match=r"objective\.clip_every"):
        WGANConfig(clip_every=0).validate()


def test_refuses_a_model_without_the_gan_interface():
    from kinema.models.vdm import VDM, VDMConfig
    from kinema.registry import build_objective

    with torch.device("meta"):
        vdm = VDM(VDMConfig())
    with pytest.raises(ConfigError, match="'wgan'.*lacks"):
        build_objective(vdm, WGANConfig())


def test_multi_level_model_trains_too():
    """TGANv2 offers the same interface (several discriminator levels)."""
    from kinema.models.tganv2 import TGANv2

    torch.manual_seed(0)
    model = TGANv2(tiny_model_config())
    obj = WGANObjective(model, WGANConfig(clip_every=1))
    opts = {n: torch.optim.RMSprop(p, lr=5e-5) for n, p in obj.parameter_groups().items()}
    metrics = obj.train_step(*one_batch(torch.rand(4, 3, 8, 16, 16) * 2 - 1, opts, torch.Generator().manual_seed(0)))
    assert all(torch.isfinite(v) for v in metrics.values())
    assert all(largest_singular_value(w) <= 1 + 1e-5 for w in clippable_weights(model.discriminator))


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_use_wgan_svc_and_rmsprop(name):
    from kinema.registry import load_config

    cfg = load_config(ROOT / "configs" / f"{name}.toml")
    assert isinstance(cfg.objective, WGANConfig)
    assert (cfg.objective.clip, cfg.objective.clip_every, cfg.objective.clip_batchnorm) == ("svc", 5, True)
    assert cfg.objective.order == "d_first"  # the TGAN-ODE scripts: D step, then G step
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.betas[1], cfg.train.eps) == ("rmsprop", 5e-5, 0.99, 1e-8)
    assert (cfg.train.batch_size, cfg.train.lr_schedule) == (32, "constant")


def test_paper_config_dry_run(tmp_path, capsys):
    from kinema.cli import main

    assert main(["train", "--config", "configs/tgan_ode.toml", "--out", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert 'name = "wgan"' in out and 'optimizer = "rmsprop"' in out
