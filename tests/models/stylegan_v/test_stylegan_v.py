"""StyleGAN-V: shapes, the motion codes and time encoder, what the discriminator sees, lazy per-clip R1,
continuous-time sampling at any frame rate and length, the paper config's size, and the CLI."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import one_batch

from kinema.cli import main
from kinema.errors import ConfigError, SamplingError
from kinema.models.stylegan_v import StyleGANV, StyleGANVConfig
from kinema.models.stylegan_v.layers import (
    conv2d_resample,
    demod_coefficients,
    modulated_conv2d,
    setup_filter,
    upfirdn2d,
    upsample2d,
)
from kinema.nn.batch import BatchRows
from kinema.objectives.gan import GANConfig, GANObjective
from kinema.registry import load_config

TINY = dict(frames=8, resolution=16, z_dim=16, w_dim=16, channel_base=128, channel_max=16, motion_z_dim=16,
            motion_u_dim=16, motion_kernel=11, motion_z_distance=4, time_enc_dim=8, min_period_len=4,
            max_period_len=64, max_num_frames=32, concat_res=8, dt_embed_dim=8, mbstd_group_size=2)


def make_model(**changes) -> StyleGANV:
    torch.manual_seed(0)
    return StyleGANV(StyleGANVConfig(**{**TINY, **changes}))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shapes_of_samples_fake_and_real_clips_and_scores():
    model = make_model()
    noise = model.sample_noise(2, gen())
    codes = math.ceil(31 / 4) + 2 + 20
    assert noise.shape == (2, 16 + codes * 16)
    video = model.sample(noise)
    assert video.shape == (2, 3, 8, 16, 16) and video.abs().max() <= 1
    (fake,) = model.generate_levels(noise, gen(1))
    assert fake.shape == (2, 4, 3, 16, 16)  # 3 frames + the time channel
    (real,) = model.real_levels(torch.rand(2, 3, 8, 16, 16), gen(1))
    assert real.shape == (2, 4, 3, 16, 16)
    (scores,) = model.discriminate([fake])
    assert scores.shape == (2,)
    with pytest.raises(ValueError, match=r"real video \(B, 3, 8, 16, 16\)"):
        model.real_levels(torch.rand(2, 3, 7, 16, 16), gen())


def test_one_training_step_changes_both_networks():
    model = make_model()
    obj = GANObjective(model, GANConfig(gp_weight=0.01, gp_reduction="mean", gp_every=16))
    opts = {n: torch.optim.Adam(p, lr=1e-3, betas=(0.0, 0.99)) for n, p in obj.parameter_groups().items()}
    g0 = [p.detach().clone() for p in model.generator.parameters()]
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    metrics = obj.train_step(*one_batch(torch.rand(4, 3, 8, 16, 16) * 2 - 1, opts, gen()))
    assert all(torch.isfinite(v) for v in metrics.values()) and metrics["gp"] > 0
    changed = lambda before, module: [not torch.equal(a, b) for a, b in zip(before, module.parameters())]  # noqa: E731
    g_changed, d_changed = changed(g0, model.generator), changed(d0, model.discriminator)
    assert any(g_changed) and any(d_changed)
    # the mapping, the motion conv1d and the time encoder all learn
    names = [n for n, _ in model.generator.named_parameters()]
    for part in ("mapping.", "motion.conv.", "motion.time_encoder.aligners", "blocks.b4.const"):
        assert any(c for n, c in zip(names, g_changed) if n.startswith(part)), part


def test_sampling_at_4x_frame_rate_repeats_the_1x_frames_at_shared_times():
    model = make_model()
    noise = model.sample_noise(2, gen(3))
    dense = model.sample(noise)
    fine = model.sample(noise, times=torch.linspace(0, 7, 29))
    assert fine.shape == (2, 3, 29, 16, 16)
    torch.testing.assert_close(fine[:, :, ::4], dense, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(fine[:, :, 1], fine[:, :, 0]), "in-between frames are new frames"


def test_arbitrary_length_extends_the_noise_and_keeps_the_early_frames():
    model = make_model()
    short = model.sample_noise(2, gen(5))
    long = model.sample_noise(2, gen(5), t_max=200.0)
    assert torch.equal(long[:, : short.shape[1]], short), "longer noise extends the default one"
    head = model.sample(short, times=torch.arange(8.0))
    video = model.sample(long, times=torch.arange(0.0, 200.5, 0.5))
    assert video.shape[2] == 401
    torch.testing.assert_close(video[:, :, :16:2], head, rtol=1e-4, atol=1e-5)
    frac = model.sample(long, times=torch.tensor([150.25, 199.9]))
    assert torch.isfinite(frac).all()
    with pytest.raises(SamplingError, match="need .* motion noise codes"):
        model.sample(short, times=torch.tensor([0.0, 200.0]))
    with pytest.raises(SamplingError, match="t >= 0"):
        model.sample(short, times=torch.tensor([-1.0, 0.0]))


def test_time_embedding_equals_the_aligner_at_anchors_and_is_continuous():
    model = make_model()
    motion = model.generator.motion
    _, motion_z = model.split_noise(model.sample_noise(2, gen(7)))
    anchors = motion.anchors(motion_z[:, : motion.num_codes()])
    d = model.config.motion_z_distance
    t = torch.tensor([[0.0, 4.0, 8.0, 12.0]]).expand(2, -1)
    v = motion(motion_z, t).reshape(2, 4, -1)
    aligned = motion.time_encoder.aligners_predictor(anchors[:, :4])
    torch.testing.assert_close(v, aligned, rtol=1e-5, atol=1e-5)
    # left and right limits at an anchor agree; within a segment the embedding is not just the lerp
    eps = 1e-3
    around = motion(motion_z, torch.tensor([[8 - eps, 8.0, 8 + eps]]).expand(2, -1)).reshape(2, 3, -1)
    assert (around[:, 0] - around[:, 1]).abs().max() < 1e-2 and (around[:, 2] - around[:, 1]).abs().max() < 1e-2
    mid = motion(motion_z, torch.full((2, 1), 6.0)).reshape(2, -1)
    assert not torch.allclose(mid, (aligned[:, 1] + aligned[:, 2]) / 2, atol=1e-4)
    assert d == 4


def test_motion_codes_interpolate_linearly_between_anchors():
    model = make_model()
    motion = model.generator.motion
    _, motion_z = model.split_noise(model.sample_noise(1, gen(2)))
    anchors = motion.anchors(motion_z[:, : motion.num_codes()])
    u = motion.motion_u(motion_z, torch.tensor([[4.0, 5.0, 6.0, 7.0, 8.0]]))
    for i, a in enumerate((0.0, 0.25, 0.5, 0.75, 1.0)):
        torch.testing.assert_close(u[0, i], anchors[0, 1] * (1 - a) + anchors[0, 2] * a, rtol=1e-5, atol=1e-6)
    # the conv1d is unpadded with kernel 11: an anchor depends on 21 consecutive noise codes only
    bumped = motion_z.clone()
    bumped[:, 25:] += 1  # anchor j reads noise codes j..j+20
    changed = (motion.anchors(bumped[:, : motion.num_codes()]) - anchors).abs().amax(dim=2)[0]
    assert len(changed) == 10 and changed[:5].max() == 0 and changed[5:].min() > 0


def test_same_content_new_motion_and_the_reverse():
    model = make_model()
    a, b = model.sample_noise(2, gen(1)), model.sample_noise(2, gen(2))
    z_a, m_a = model.split_noise(a)
    z_b, m_b = model.split_noise(b)
    mixed = model.join_noise(z_a, m_b)
    gen_ = model.generator
    gen_.eval()
    t = torch.arange(8.0).expand(2, -1)
    assert torch.equal(gen_.mapping(model.split_noise(mixed)[0]), gen_.mapping(z_a)), "content (w) kept"
    assert torch.equal(gen_.motion(model.split_noise(mixed)[1], t), gen_.motion(m_b, t)), "motion taken"
    va, vm = model.sample(a), model.sample(mixed)
    assert not torch.allclose(va, vm)
    # the motion code is the only per-frame input: a video with a constant v(t) would be frozen
    assert not torch.allclose(vm[:, :, 0], vm[:, :, 7])


def test_discriminator_sees_exactly_the_sampled_frames_and_their_gaps():
    model = make_model()
    video = torch.randn(6, 3, 8, 16, 16)
    (real,) = model.real_levels(video, gen(4))
    times = real[:, 3, :, 0, 0]
    assert torch.equal(times, times.round()) and (times[:, 1:] > times[:, :-1]).all()
    gaps = (times[:, 2] - times[:, 0]).tolist()
    assert set(gaps) <= {2.0, 4.0} and (times >= 0).all() and (times <= 7).all()  # frames = 8: gaps {2, 4}
    for i in range(6):
        torch.testing.assert_close(real[i, :3], video[i][:, times[i].long()])
        assert (real[i, 3] == times[i][:, None, None]).all()
    # fakes: fractional start, integer gaps
    (fake,) = model.generate_levels(model.sample_noise(6, gen()), gen(4))
    t_fake = fake[:, 3, :, 0, 0]
    assert not torch.equal(t_fake, t_fake.round())
    diffs = t_fake[:, 1:] - t_fake[:, :-1]
    torch.testing.assert_close(diffs, diffs.round())
    # the time encoder gets the consecutive differences of those times
    seen = {}
    hook = model.discriminator.time_encoder.register_forward_hook(lambda m, i, o: seen.update(t=i[0]))
    model.discriminate([real])
    hook.remove()
    assert torch.equal(seen["t"], times)


def test_discriminator_score_depends_on_frame_order_and_time_gaps():
    model = make_model()
    (x,) = model.real_levels(torch.randn(2, 3, 8, 16, 16), gen(0))
    base = model.discriminate([x])[0]
    swapped = x.clone()
    swapped[:, :3] = x[:, :3].flip(2)
    assert not torch.allclose(model.discriminate([swapped])[0], base)
    regapped = x.clone()
    regapped[:, 3, 2] += 1
    assert not torch.allclose(model.discriminate([regapped])[0], base)


def test_time_channel_is_not_differentiated_and_r1_is_the_per_clip_frame_mean():
    """kinema's R1 under gp_reduction "mean" with gp_weight = gamma / (2 F) equals the official
    r1_penalty = sum_CHW grad^2 per frame, averaged over a clip's frames and over clips, times gamma / 2
    (loss.py:161-167)."""
    from kinema.objectives.gan import real_gradient_penalty

    model = make_model()
    (x,) = model.real_levels(torch.randn(4, 3, 8, 16, 16), gen(0))
    x = x.requires_grad_()
    scores = model.discriminate([x])[0]
    (grad,) = torch.autograd.grad(scores.sum(), [x], retain_graph=True)
    assert (grad[:, 3] == 0).all(), "time stamps are read detached"
    gamma = 0.2
    ours = gamma / (2 * 3) * real_gradient_penalty(scores, [x], "mean")
    frames = grad[:, :3].transpose(1, 2).reshape(12, 3, 16, 16)  # [B*F, C, H, W] as the official code sees them
    official = (frames.square().sum([1, 2, 3]) * gamma / 2).view(4, 3).mean(dim=1).mean()
    torch.testing.assert_close(ours, official)


def test_r1_differentiates_the_reals_before_augmentation(monkeypatch):
    """With augmentation on (p = 1: every op on every clip), the gan objective's R1 leaf is the real clip as
    sampled from the video (un-augmented), D sees it augmented, and the penalty equals sum(dD(aug(x))/dx ^ 2)
    / B by hand -- the official order (augmentation inside run_D, loss.py:57-64, R1 w.r.t. real_img_tmp,
    loss.py:144-145) -- and not the penalty w.r.t. the augmented clip."""
    import kinema.objectives.gan as gan_module
    from kinema.data import Batch
    from kinema.objectives.base import StepContext

    model = make_model(augment_p=1.0)
    seen = {}
    penalty_fn = gan_module.real_gradient_penalty

    def spy_penalty(scores, inputs, reduction):
        seen["leaf"] = inputs[0]
        return penalty_fn(scores, inputs, reduction)

    augment_levels = model.augment_levels

    def spy_augment(levels, generator, rows):
        seen["state"] = generator.get_state().clone()
        return augment_levels(levels, generator, rows)

    monkeypatch.setattr(gan_module, "real_gradient_penalty", spy_penalty)
    monkeypatch.setattr(model, "augment_levels", spy_augment)
    obj = GANObjective(model, GANConfig(gp_weight=1.0, gp_reduction="mean", gp_every=1))
    opts = {n: torch.optim.SGD(p, lr=0.0) for n, p in obj.parameter_groups().items()}
    video = torch.randn(4, 3, 8, 16, 16, generator=gen(9))
    metrics = obj.train_step([Batch(video)], StepContext.for_batch(opts, gen(0), 4))

    leaf = seen["leaf"].detach()
    times = leaf[:, 3, :, 0, 0].long()  # (B, 3) frame indices, read from the time channel
    raw = torch.stack([video[b, :, times[b]] for b in range(4)])
    assert torch.equal(leaf[:, :3], raw), "the R1 leaf holds the real frames as sampled, not augmented"

    def penalty(x: torch.Tensor, augment: bool) -> torch.Tensor:
        x = x.clone().requires_grad_()
        g = torch.Generator().set_state(seen["state"])
        d_in = augment_levels([x], g, BatchRows.whole(4)) if augment else [x]
        (grad,) = torch.autograd.grad(model.discriminate(d_in)[0].sum(), [x])
        return grad.square().sum() / 4

    torch.testing.assert_close(metrics["gp"], penalty(leaf, augment=True))
    augmented = augment_levels([leaf], torch.Generator().set_state(seen["state"]), BatchRows.whole(4))[0]
    assert not torch.equal(augmented, leaf)
    assert not torch.isclose(metrics["gp"], penalty(augmented.detach(), augment=False), rtol=1e-3)
    # real_levels on its own (other objectives, previews) still hands augmented clips, with the same draws
    (default,) = model.real_levels(video, gen(5))
    (plain,) = model.real_levels(video, gen(5), augmented=False)
    g = gen(5)
    model.draw_clip_times(BatchRows.whole(4), g, False)
    assert torch.equal(default, augment_levels([plain], g, BatchRows.whole(4))[0])


def test_lazy_r1_runs_every_n_steps_with_gain_n():
    from kinema.objectives.base import StepContext
    from kinema.data import Batch

    def d_grad(step: int, every: int):
        model = make_model()
        obj = GANObjective(model, GANConfig(gp_weight=1.0, gp_reduction="mean", gp_every=every))
        opts = {n: torch.optim.SGD(p, lr=0.0) for n, p in obj.parameter_groups().items()}
        real = torch.randn(2, 3, 8, 16, 16, generator=gen(9))
        ctx = StepContext.for_batch(opts, gen(0), 2, step=step)
        metrics = obj.train_step([Batch(real)], ctx)
        return metrics["gp"], torch.cat([p.grad.flatten() for p in model.discriminator.parameters()
                                         if p.grad is not None])

    gp_off, grad_off = d_grad(step=3, every=4)
    assert gp_off == 0
    gp_on, grad_on = d_grad(step=4, every=4)
    gp_every_step, grad_every = d_grad(step=4, every=1)
    assert gp_on > 0 and torch.isclose(gp_on, gp_every_step)
    # gradient = loss part + every * penalty part: (on - off) = 4 * (every_step - off), the loss part being equal
    torch.testing.assert_close(grad_on - grad_off, 4 * (grad_every - grad_off), rtol=1e-3, atol=1e-6)


def test_greyscale_augmentation_never_mixes_frames_and_is_clip_consistent():
    model = make_model(channels=1, augment_p=1.0)
    clip = torch.randn(3, 1, 3, 16, 16)
    rows = BatchRows.whole(3)
    out = model.augment(clip, rows, gen(0))
    bumped = clip.clone()
    bumped[:, :, 1] += 5
    out2 = model.augment(bumped, rows, gen(0))
    assert torch.equal(out[:, :, 0], out2[:, :, 0]) and torch.equal(out[:, :, 2], out2[:, :, 2])
    # the same transform on every frame: identical frames stay identical
    same = clip[:, :, :1].expand(-1, -1, 3, -1, -1).contiguous()
    aug = model.augment(same, rows, gen(1))
    assert torch.equal(aug[:, :, 0], aug[:, :, 1]) and torch.equal(aug[:, :, 0], aug[:, :, 2])
    assert not torch.equal(aug, same)


def test_fir_resampling_is_the_official_1_3_3_1_filter():
    f = setup_filter()
    assert torch.allclose(f.sum(), torch.tensor(1.0)) and f[0, 0] == 1 / 64
    x = torch.arange(8.0).reshape(1, 1, 1, 8).expand(1, 1, 8, 8)
    up = upsample2d(x, f)
    # 1-D: output 2i = 0.25 x[i-1] + 0.75 x[i], 2i+1 = 0.75 x[i] + 0.25 x[i+1] (zero padded at the edges)
    torch.testing.assert_close(up[0, 0, 8, 2:6], torch.tensor([0.75, 1.25, 1.75, 2.25]))
    down = upfirdn2d(torch.ones(1, 1, 8, 8), f, down=2, padding=(1, 1, 1, 1))
    assert down.shape == (1, 1, 4, 4) and torch.allclose(down[0, 0, 1:3, 1:3], torch.ones(2, 2))


@pytest.mark.parametrize("c_in, c_out, k, size", [(8, 6, 3, 4), (5, 7, 3, 5), (4, 3, 1, 6)])
def test_upsampling_conv_transposed_fast_path_equals_the_upfirdn_fallback(c_in, c_out, k, size):
    """conv2d_resample.py:124-142 (transposed conv, then FIR) against the generic path (FIR, then conv)."""
    g = torch.Generator().manual_seed(0)
    f = setup_filter().double()
    x = torch.randn(3, c_in, size, size, generator=g, dtype=torch.float64)
    w = torch.randn(c_out, c_in, k, k, generator=g, dtype=torch.float64)
    a = conv2d_resample(x, w, f, up=2, padding=k // 2, up_impl="transpose")
    b = conv2d_resample(x, w, f, up=2, padding=k // 2, up_impl="upfirdn")
    assert a.shape == b.shape == (3, c_out, 2 * size, 2 * size)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_fused_equals_non_fused_and_every_impl_agrees(up, demodulate):
    """Fused (grouped, per-sample weights: the official fp32 inference path) and non-fused (the training
    path) modulated convolutions, the transposed / fallback upsampling and the factored / per-sample
    demodulation: all equal in float32 to 1e-5, gradients to 1e-5 of their largest entry."""
    g = torch.Generator().manual_seed(1)
    f = setup_filter()
    x0 = torch.randn(4, 16, 8, 8, generator=g)
    w0 = torch.randn(12, 16, 3, 3, generator=g)
    s0 = torch.randn(4, 16, generator=g) + 1
    outs, grads = [], []
    for fused in (False, True):
        for up_impl in ("transpose", "upfirdn"):
            for demod_impl in ("factored", "per_sample"):
                x, w, s = (t.clone().requires_grad_() for t in (x0, w0, s0))
                y = modulated_conv2d(x, w, s, f, up=up, padding=1, demodulate=demodulate, fused=fused,
                                     up_impl=up_impl, demod_impl=demod_impl)
                (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
                outs.append(y.detach())
                grads.append((x.grad, w.grad, s.grad))
    assert outs[0].shape == (4, 12, 8 * up, 8 * up)
    for y, gr in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(y, outs[0], rtol=1e-5, atol=1e-5)
        for a, b in zip(gr, grads[0]):  # sums over many terms: to 1e-5 of the largest entry
            assert (a - b).abs().max() <= 1e-5 * b.abs().max()
    w64, s64 = w0.double(), s0.double()
    torch.testing.assert_close(demod_coefficients(w64, s64, "factored"), demod_coefficients(w64, s64, "per_sample"),
                               rtol=1e-12, atol=0)


def test_paper_config_parameter_counts_on_the_meta_device():
    cfg = load_config("stylegan_v_256").model
    with torch.device("meta"):
        model = StyleGANV(cfg)
    counts = model.parameter_counts()
    assert counts["generator"] == 32_105_941 and counts["discriminator"] == 25_333_568
    motion = sum(p.numel() for p in model.generator.motion.parameters())
    assert motion == 2 * (512 * 512 * 11 + 512) + 512 * 256 * 2 + 512 * 512
    assert model.discriminator.blocks["b16"].conv0.weight.shape[1] == 768  # 3 frames x 256 channels at 16x16
    assert model.generator.blocks["b4"].conv1.weight.shape[1] == 1024  # const 512 ++ v(t) 512


@pytest.mark.parametrize("changes, message", [
    ({"resolution": 24}, "power of two"),
    ({"frames": 2}, "no frame gap fits"),
    ({"concat_res": 16}, "concat_res"),
    ({"augment_ops": ["rotate"]}, "augment_ops"),
])
def test_invalid_configs_name_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        StyleGANVConfig(**{**TINY, **changes}).validate()


def test_tiny_configs_load():
    tiny, tiny16 = load_config("stylegan_v_tiny"), load_config("stylegan_v_tiny16")
    assert (tiny.model.frames, tiny16.model.frames, tiny16.model.resolution) == (8, 16, 32)
    assert tiny.model.total_gaps() == [2, 4] and tiny16.model.total_gaps() == [2, 4, 8]
    assert tiny.objective.gp_every == 16 and tiny.train.betas == [0.0, 0.99]


def test_cli_trains_and_samples_at_any_frame_rate_and_length(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--config", "stylegan_v_tiny", "--out", str(run), "--steps", "2", "--no-progress",
            "--device", "cpu", "--set", "train.batch_size=4", "--set", "train.num_samples=2"]
    assert main(args) == 0
    for extra in (["--fps-multiplier", "2"], ["--t-start", "0", "--t-end", "127", "--frames", "128"],
                  ["--motion-seed", "5"]):
        out = tmp_path / f"s{len(extra)}{extra[0]}.gif"
        assert main(["sample", "--checkpoint", str(run), "--num", "2", "--out", str(out), *extra]) == 0
        assert out.is_file()
    from kinema.api import generate
    from kinema.registry import load_model

    model, _, _ = load_model(run)
    a = generate(model, 2, seed=1)
    b = generate(model, 2, seed=1, fps_multiplier=2)
    assert a.shape == (2, 3, 8, 32, 32) and b.shape == (2, 3, 15, 32, 32)
    torch.testing.assert_close(b[:, :, ::2], a, rtol=1e-4, atol=1e-5)
    c = generate(model, 2, seed=1, motion_seed=9)
    assert not torch.allclose(a, c)
