"""Video Diffusion Models: U-Net shapes and masks, schedule and parameterisations, samplers, guidance,
the objective's micro-batch contract, and train/sample through the CLI. Tiny sizes, CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kinema import api, diffusion
from kinema.cli import main
from kinema.errors import ConfigError
from kinema.registry import build_model, load_config
from kinema.models.vdm import VDM, VDMConfig
from kinema.data import Batch
from kinema.registry import build_objective
from kinema.objectives.base import StepContext
from kinema.video import read_video, to_uint8, write_video

TINY = {"frames": 4, "resolution": 16, "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
        "attention_resolutions": [8], "head_channels": 4, "embed_channels": 16, "max_frames": 8, "dropout": 0.0,
        "sampling_steps": 4}


def tiny_vdm(randomise: bool = True, seed: int = 0, **changes) -> VDM:
    """A tiny VDM; ``randomise`` also fills the zero-initialised layers so every path carries signal."""
    torch.manual_seed(seed)
    model = VDM(VDMConfig(**{**TINY, **changes}))
    if randomise:
        with torch.no_grad():
            for p in model.parameters():
                if p.abs().sum() == 0:
                    p.normal_(0, 0.2)
    return model.eval()


@pytest.mark.parametrize("frames,resolution,mult", [(4, 16, [1, 2]), (1, 16, [1, 2]), (6, 32, [1, 2, 2]), (8, 8, [1])])
def test_unet_shapes(frames, resolution, mult):
    attn = [resolution // 2 ** (len(mult) - 1)]
    model = tiny_vdm(frames=frames, resolution=resolution, channel_mult=mult, attention_resolutions=attn)
    z = model.sample_noise(2, torch.Generator().manual_seed(0))
    assert z.shape == (2, 3, frames, resolution, resolution) == (2, *model.video_shape)
    assert model.denoiser(z, torch.zeros(2)).shape == z.shape
    extra = torch.randn(2, 3, frames + 2, resolution, resolution)  # joint training: 2 image frames appended
    assert model.denoiser(extra, torch.zeros(2), image_frames=2).shape == extra.shape


def test_frame_limits_and_bad_inputs_name_the_fix():
    model = tiny_vdm(max_frames=4)
    with pytest.raises(ValueError, match="max_frames = 4"):
        model.denoiser(torch.randn(1, 3, 6, 16, 16), torch.zeros(1))
    with pytest.raises(ValueError, match=r"expected shape \(\*, 3, \*, 16, 16\)"):
        model.denoiser(torch.randn(1, 3, 4, 8, 8), torch.zeros(1))
    with pytest.raises(ConfigError, match="exceeds model.max_frames"):
        VDMConfig(**{**TINY, "frames": 16}).validate()


@pytest.mark.parametrize("override,message", [
    ("model.parameterization=x0", r"model.parameterization: expected \"eps\" \| \"v\""),
    ("model.sampler=euler", r"model.sampler: expected \"ancestral\" \| \"ddim\""),
    ("model.sampling_steps=0", "sampling_steps must be > 0"),
    ("model.attention_resolutions=[3]", "not level resolutions"),
])
def test_config_validation(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/vdm_tiny.toml", [override])


@pytest.mark.parametrize("statistics", ["frame", "video"])
def test_temporal_mask_makes_image_frames_independent(statistics):
    model = tiny_vdm(norm_statistics=statistics)
    t_video, k = 4, 3
    z = torch.randn(1, 3, t_video + k, 16, 16)
    logsnr = torch.tensor([0.5])
    base = model.denoiser(z, logsnr, image_frames=k)
    for j in (0, t_video + 1):  # perturb a video frame, then an image frame
        z2 = z.clone()
        z2[:, :, j] += 3 * torch.randn_like(z2[:, :, j])
        out = model.denoiser(z2, logsnr, image_frames=k)
        others = [i for i in range(t_video, t_video + k) if i != j]  # image frames other than j
        torch.testing.assert_close(out[:, :, others], base[:, :, others], rtol=0, atol=1e-6)
        if j >= t_video:
            torch.testing.assert_close(out[:, :, :t_video], base[:, :, :t_video], rtol=0, atol=1e-6)
    # without the mask the same perturbation reaches the other frames (temporal attention mixes them)
    z2 = z.clone()
    z2[:, :, 0] += 3
    changed = model.denoiser(z2, logsnr)[:, :, 1:] - model.denoiser(z, logsnr)[:, :, 1:]
    assert changed.abs().max() > 1e-3


def test_schedule_endpoints_and_unit_variance():
    t = torch.linspace(0, 1, 101)
    logsnr = diffusion.cosine_logsnr(t)
    alpha, sigma = diffusion.alpha_sigma(logsnr)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t))
    assert logsnr[0].item() == pytest.approx(20.0, abs=1e-4) and logsnr[-1].item() == pytest.approx(-20.0, abs=1e-4)
    assert (logsnr[1:] < logsnr[:-1]).all(), "log-SNR decreases with t"
    # away from the clipped ends it is the cosine schedule alpha = cos(pi t / 2)
    torch.testing.assert_close(alpha[10:91], torch.cos(math.pi * t[10:91] / 2), rtol=0, atol=1e-4)


def test_eps_and_v_parameterisations_give_the_same_x0():
    g = torch.Generator().manual_seed(0)
    x, eps, eps_hat = (torch.randn(3, 3, 2, 4, 4, generator=g) for _ in range(3))
    alpha, sigma = diffusion.alpha_sigma(diffusion.cosine_logsnr(torch.tensor([0.1, 0.5, 0.9])))
    z = diffusion.broadcast(alpha, x) * x + diffusion.broadcast(sigma, x) * eps
    for p in ("eps", "v"):  # the true target recovers x exactly
        target = diffusion.training_target(x, eps, alpha, sigma, p)
        torch.testing.assert_close(diffusion.x0_from_output(target, z, alpha, sigma, p), x, rtol=1e-4, atol=1e-4)
    # any eps prediction, written as the equivalent v prediction, gives the same x_hat
    x_hat = diffusion.x0_from_output(eps_hat, z, alpha, sigma, "eps")
    v_hat = diffusion.broadcast(alpha, x) * eps_hat - diffusion.broadcast(sigma, x) * x_hat
    torch.testing.assert_close(diffusion.x0_from_output(v_hat, z, alpha, sigma, "v"), x_hat, rtol=1e-4, atol=1e-4)


def test_ddim_eta0_is_deterministic_and_ancestral_is_not():
    model = tiny_vdm()
    noise = model.sample_noise(2, torch.Generator().manual_seed(1))
    a = model.sample(noise, sampler="ddim", eta=0.0, generator=torch.Generator().manual_seed(0))
    b = model.sample(noise, sampler="ddim", eta=0.0, generator=torch.Generator().manual_seed(99))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = model.sample(noise, sampler="ancestral", generator=torch.Generator().manual_seed(0))
    d = model.sample(noise, sampler="ancestral", generator=torch.Generator().manual_seed(99))
    assert not torch.equal(c, d)
    torch.testing.assert_close(model.sample(noise, sampler="ancestral"), model.sample(noise, sampler="ancestral"),
                               rtol=0, atol=0)  # default generator: seeded from the noise
    assert a.shape == noise.shape and a.abs().max() <= 1


def test_reconstruction_guidance_super_resolution_moves_sample_towards_low_res():
    model = tiny_vdm(frames=2)
    low = torch.rand(2, 3, 2, 8, 8) * 2 - 1
    noise = model.sample_noise(2, torch.Generator().manual_seed(3))
    errors = {}
    for method, w in (("reconstruction", 0.0), ("reconstruction", 8.0), ("replacement", 0.0)):
        out = model.super_resolve(low, noise, method=method, weight=w, steps=6,
                                  generator=torch.Generator().manual_seed(0))
        errors[method, w] = (diffusion.downsample(out, 2) - low).pow(2).mean().item()
    assert errors["reconstruction", 8.0] < 0.5 * errors["reconstruction", 0.0], errors
    assert errors["replacement", 0.0] < 0.5 * errors["reconstruction", 0.0], errors


def test_reconstruction_guidance_temporal_extension_pulls_new_frames_towards_the_context():
    # A denoiser whose x_hat of every frame is the frame-average of z / alpha (data = static videos): the new
    # frames b see the context a only through z, so guidance (eq. 7) is what makes them agree with x_a.
    def x0_fn(z, t):
        alpha, _ = diffusion.alpha_sigma(diffusion.cosine_logsnr(t))
        return (z.mean(dim=2, keepdim=True) / diffusion.broadcast(alpha, z)).expand_as(z)

    frame = torch.rand(2, 3, 1, 8, 8) * 2 - 1
    context = frame.expand(-1, -1, 2, -1, -1)  # x_a: a static clip of 2 frames
    noise = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    errors, traces = {}, {}
    for method, w in (("replacement", 2.0), ("reconstruction", 0.0), ("reconstruction", 2.0)):
        trace: list[float] = []
        window = diffusion.sample_extension(x0_fn, context, noise, 8, "ddim", method=method, weight=w,
                                           generator=torch.Generator().manual_seed(0), trace=trace)
        errors[method, w] = (window[:, :, 2:] - frame).pow(2).mean().item()  # new frames vs the context frame
        traces[method, w] = trace[-1]  # ||x_a - x_hat_a||^2 at the last step
    assert errors["reconstruction", 0.0] == errors["replacement", 2.0], "w_r = 0 is the replacement method"
    assert errors["reconstruction", 2.0] < 0.1 * errors["replacement", 2.0], errors
    assert traces["reconstruction", 2.0] < 0.1 * traces["replacement", 2.0], traces


def test_extension_on_the_network_and_guidance_argument_checks():
    model = tiny_vdm(parameterization="v")
    context = torch.rand(2, 3, 2, 16, 16) * 2 - 1
    noise = model.sample_noise(2, torch.Generator().manual_seed(4))
    trace: list[float] = []
    window = model.extend(context, noise, weight=2.0, steps=3, trace=trace)
    assert window.shape == noise.shape and len(trace) == 3 and window.abs().max() <= 1
    with pytest.raises(ValueError, match=r"guidance weight w_r must be in \[0, 100\]"):
        model.extend(context, noise, weight=500.0)
    with pytest.raises(ValueError, match="conditioning method"):
        model.extend(context, noise, method="inpaint")
    with pytest.raises(ValueError, match="conditioning frames: expected"):
        model.extend(context[:, :, :, :8], noise)


def objective_and_optimizer(joint: int, classes: int):
    model = tiny_vdm(num_classes=classes).train()
    cfg = load_config(None, model={"name": "vdm", **TINY, "num_classes": classes},
                      objective={"name": "diffusion", "joint_image_frames": joint, "cond_drop_prob": 0.5})
    objective = build_objective(model, cfg.objective)
    return model, objective, {"denoiser": torch.optim.SGD(objective.parameter_groups()["denoiser"], lr=0.0)}


def test_two_micro_batches_give_the_gradient_of_one_batch():
    clips = torch.rand(4, 3, 4, 16, 16) * 2 - 1
    labels = torch.tensor([0, 1, 1, 0])
    grads, losses = [], []
    for accumulate in (1, 2):
        _, objective, opt = objective_and_optimizer(joint=2, classes=2)
        ctx = StepContext.for_batch(opt, torch.Generator().manual_seed(5), 4, accumulate=accumulate)
        micro = Batch(clips, labels).split(accumulate)
        losses.append(objective.train_step(micro, ctx)["loss"])
        grads.append([p.grad.clone() for p in objective.parameter_groups()["denoiser"]])
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_joint_images_come_from_other_clips_of_the_batch():
    _, objective, _ = objective_and_optimizer(joint=2, classes=0)
    clips = torch.arange(3.0)[:, None, None, None, None].expand(3, 3, 4, 16, 16)  # clip i is constant i
    x = objective.joint_batch(clips, clips, slice(0, 3), torch.tensor([0.0, 0.6, 0.99]), torch.tensor([[0, 3]] * 3))
    assert x.shape == (3, 3, 6, 16, 16)
    sources = x[:, 0, 4:, 0, 0]
    assert all((sources[i] != i).all() for i in range(3)), sources


def test_discrete_training_times_are_the_samplers_grid():
    """objective.train_timesteps = N draws t from {1/N, ..., 1}, the points an N-step sampler evaluates
    (video-diffusion-pytorch's discrete training); 0 keeps t ~ U(0, 1). Same RNG stream either way."""
    model = tiny_vdm()
    cfg = load_config(None, model={"name": "vdm", **TINY}, objective={"name": "diffusion", "train_timesteps": 4})
    objective = build_objective(model, cfg.objective)
    ctx = StepContext.for_batch({}, torch.Generator().manual_seed(0), 256)
    t = objective.draws(ctx, 4, "cpu")["t"]
    assert set(t.tolist()) == {0.25, 0.5, 0.75, 1.0}
    objective.config.train_timesteps = 0
    continuous = objective.draws(StepContext.for_batch({}, torch.Generator().manual_seed(0), 256), 4, "cpu")["t"]
    assert torch.equal(t, (torch.floor(continuous * 4) + 1) / 4)
    with pytest.raises(ConfigError, match="train_timesteps"):
        load_config(None, model={"name": "vdm", **TINY}, objective={"name": "diffusion", "train_timesteps": -1})


def test_class_conditional_model_needs_labels():
    _, objective, opt = objective_and_optimizer(joint=0, classes=3)
    with pytest.raises(ValueError, match="num_classes = 3"):
        objective.train_step([Batch(torch.zeros(2, 3, 4, 16, 16))], StepContext.for_batch(opt, torch.Generator(), 2))


def test_short_training_lowers_the_loss():
    torch.manual_seed(0)
    model = tiny_vdm(randomise=False, parameterization="v").train()
    objective = build_objective(model, load_config(None, model={"name": "vdm", **TINY}).objective)
    opt = {"denoiser": torch.optim.Adam(objective.parameter_groups()["denoiser"], lr=3e-3)}
    x = torch.linspace(-1, 1, 16)
    clip = torch.stack([torch.tanh(4 * (x[None, :] - 0.3 * f + 0.5)).expand(16, 16) for f in range(4)])  # moving edge
    clips = clip[None, None].expand(4, 3, 4, 16, 16)
    t = torch.tensor([0.2, 0.4, 0.6, 0.8])  # fixed noise levels and noise for a comparable loss
    eps = torch.randn(clips.shape, generator=torch.Generator().manual_seed(1))

    @torch.no_grad()
    def fixed_loss() -> float:
        alpha, sigma = diffusion.alpha_sigma(model.logsnr(t))
        z = diffusion.broadcast(alpha, clips) * clips + diffusion.broadcast(sigma, clips) * eps
        target = diffusion.training_target(clips, eps, alpha, sigma, "v")
        return (model.denoiser(z, model.logsnr(t)) - target).pow(2).mean().item()

    before = fixed_loss()
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        objective.train_step([Batch(clips)], StepContext.for_batch(opt, g, 4))
    after = fixed_loss()
    assert after < 0.6 * before, (before, after)


@pytest.fixture(scope="module")
def trained_vdm(tmp_path_factory):
    out = tmp_path_factory.mktemp("vdm") / "run"
    sets = ["model.base_channels=8", "model.embed_channels=16", "model.head_channels=8", "model.sampling_steps=2",
            "train.batch_size=2", "train.num_samples=2", "train.sample_every=2", "train.checkpoint_every=2"]
    argv = ["train", "--config", "configs/vdm_tiny.toml", "--out", str(out), "--steps", "2", "--device", "cpu",
            "--no-progress"]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    return out


def test_tiny_config_trains_and_samples_through_the_cli(trained_vdm, tmp_path):
    records = [json.loads(line) for line in (trained_vdm / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 2 and math.isfinite(records[-1]["loss"])
    assert (trained_vdm / "samples" / "step_0000002.gif").is_file()
    assert (trained_vdm / "checkpoints" / "step_0000002" / "ema.safetensors").is_file()
    gif = tmp_path / "s.gif"
    assert main(["sample", "--checkpoint", str(trained_vdm), "--num", "2", "--out", str(gif)]) == 0
    assert read_video(gif).shape[0] == 8
    again = tmp_path / "again.gif"
    assert main(["sample", "--checkpoint", str(trained_vdm), "--num", "2", "--out", str(again),
                 "--sampler", "ancestral", "--steps", "3"]) == 0
    assert read_video(again).shape[0] == 8


def test_extend_and_upsample_through_the_cli(trained_vdm, tmp_path, capsys):
    clip = write_video(tmp_path / "clip.mp4", to_uint8(torch.rand(3, 5, 16, 16) * 2 - 1))
    small = write_video(tmp_path / "small.mp4", to_uint8(torch.rand(3, 8, 8, 8) * 2 - 1))
    longer = tmp_path / "longer.gif"
    common = ["--checkpoint", str(trained_vdm), "--num", "1", "--steps", "2"]
    assert main(["sample", *common, "--extend", str(clip), "--new-frames", "6", "--out", str(longer)]) == 0
    assert read_video(longer).shape[0] == 5 + 6
    big = tmp_path / "big.gif"
    assert main(["sample", *common, "--upsample", str(small), "--method", "replacement", "--out", str(big)]) == 0
    assert read_video(big).shape[:3] == (8, 20, 20)  # one 16x16 tile with the grid's 2-pixel border
    capsys.readouterr()

    def error(*argv) -> str:
        assert main(["sample", *argv]) == 2
        return capsys.readouterr().err

    assert "expected 3-channel frames of 16x16" in error(*common, "--extend", str(small), "--out", str(longer))
    short = write_video(tmp_path / "short.mp4", to_uint8(torch.rand(3, 2, 16, 16) * 2 - 1))
    assert "expected at least 4 frames" in error(*common, "--extend", str(short), "--out", str(longer))
    tiny_short = write_video(tmp_path / "tiny_short.mp4", to_uint8(torch.rand(3, 2, 8, 8) * 2 - 1))
    assert "expected at least 8 frames" in error(*common, "--upsample", str(tiny_short), "--out", str(big))
    assert "of 16/f for an integer f >= 2" in error(*common, "--upsample", str(clip), "--out", str(big))
    assert "sampling steps must be an integer >= 1, got 0" in error(*common[:-2], "--steps", "0", "--out", str(big))
    assert "w_r must be in [0, 100]" in error(*common, "--extend", str(clip), "--guidance-weight", "1e4",
                                              "--out", str(longer))


def test_non_vdm_checkpoint_is_refused_for_extend(tmp_path, capsys):
    from tiny import tiny_run_config

    from kinema.training import Trainer

    Trainer(tiny_run_config(steps=1), tmp_path / "gan", device="cpu", progress=False).fit()
    clip = write_video(tmp_path / "clip.mp4", to_uint8(torch.rand(3, 4, 16, 16) * 2 - 1))
    assert main(["sample", "--checkpoint", str(tmp_path / "gan"), "--extend", str(clip), "--out",
                 str(tmp_path / "x.gif")]) == 2
    assert "--extend: not supported by a 'tganv2' model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--upsample: not supported by a 'tganv2' model"):
        api.sample(tmp_path / "gan", tmp_path / "y.gif", upsample=clip)


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    from kinema.training import Trainer

    # dropout 0: the trainer's DataLoader iterator draws its base seed from the global RNG after a resume has
    # restored it, which shifts the dropout masks of a resumed run (reported; a trainer fix).
    sets = ["model.base_channels=8", "model.embed_channels=16", "model.head_channels=8", "model.sampling_steps=1",
            "model.dropout=0.0", "train.batch_size=2", "train.accumulate=2", "train.num_samples=1",
            "train.sample_every=100", "train.checkpoint_every=2"]

    def run(out, steps, resume=False):
        return Trainer(load_config("configs/vdm_tiny.toml", sets + [f"train.steps={steps}"]), out, device="cpu",
                       resume=resume, progress=False).fit()

    straight = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4, resume=True)
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(straight / name), load_file(resumed / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)


def test_temporal_attention_matches_sdpa():
    """The written-out temporal attention is SDPA's maths: same output (float64) with bias and image mask."""
    import torch.nn.functional as F
    from einops import rearrange

    from kinema.models.vdm.model import Attention, temporal_mask

    torch.manual_seed(0)
    attn = Attention(32, 16, 32, "time", 16).double()
    torch.nn.init.normal_(attn.proj.weight)
    torch.nn.init.normal_(attn.relative_bias)
    x = torch.randn(2, 32, 10, 4, 4, dtype=torch.float64)
    mask = temporal_mask(8, 2)
    q, k, v = rearrange(attn.qkv(attn.norm(x)), "b (n g d) t h w -> n (b h w) g t d", n=3, g=attn.heads)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=attn.time_bias(10, mask, x.device)[None])
    expected = x + attn.proj(rearrange(sdpa, "(b h w) g t d -> b (g d) t h w", b=2, h=4))
    torch.testing.assert_close(attn(x, mask), expected, rtol=1e-12, atol=1e-12)


def test_video_groupnorm_is_the_5d_groupnorm_and_image_frames_stay_per_frame():
    from kinema.models.vdm.model import norm

    layer = norm(8, 4, over_video=True).double()
    torch.nn.init.normal_(layer.weight), torch.nn.init.normal_(layer.bias)
    x = torch.randn(2, 8, 6, 5, 5, dtype=torch.float64) * 3 + 1
    whole = torch.nn.functional.group_norm(x, 4, layer.weight, layer.bias, layer.eps)  # video-diffusion-pytorch
    torch.testing.assert_close(layer(x), whole)
    folded = layer(x.transpose(1, 2).reshape(12, 8, 5, 5), 6)  # frames in the batch
    torch.testing.assert_close(folded.view(2, 6, 8, 5, 5).transpose(1, 2), whole)
    mixed = layer(x, 6, 4)  # 4 video frames, 2 image frames
    torch.testing.assert_close(mixed[:, :, :4], torch.nn.functional.group_norm(x[:, :, :4], 4, layer.weight,
                                                                               layer.bias, layer.eps))
    per_frame = norm(8, 4).double()
    per_frame.load_state_dict(layer.state_dict())
    torch.testing.assert_close(mixed[:, :, 4:], per_frame(x[:, :, 4:]))


@pytest.mark.parametrize("statistics", ["frame", "video"])
def test_fold_frames_same_outputs_and_gradients(monkeypatch, statistics):
    """model.fold_frames (frames in the batch inside the U-Net, 2-D convolutions of the squeezed Conv3d
    weights) changes the layout, not the maths: float64, with image frames (temporal mask) and attention."""
    import kinema.models.vdm.model as vdm_model

    embed = vdm_model.sinusoidal_embedding  # float32 by design; float64 here for the comparison
    monkeypatch.setattr(vdm_model, "sinusoidal_embedding", lambda x, dim: embed(x, dim).double())
    results = {}
    for fold in (False, True):
        cfg = load_config("vdm_cpu16", [f"model.fold_frames={str(fold).lower()}",
                                        "model.attention_resolutions=[16,8]",
                                        f'model.norm_statistics="{statistics}"']).model
        torch.manual_seed(0)
        model = build_model(cfg).double()
        for p in model.parameters():  # zero-initialised projections would hide the attention paths
            torch.nn.init.normal_(p, std=0.1)
        z = torch.randn(2, 3, 10, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        out = model.denoiser(z, torch.tensor([1.0, -2.0], dtype=torch.float64), image_frames=2)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results[fold] = (out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (ref, ref_grads), (out, grads) = results[False], results[True]
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    assert grads.keys() == ref_grads.keys() and len(grads) > 100
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-9, atol=1e-11, msg=name)
