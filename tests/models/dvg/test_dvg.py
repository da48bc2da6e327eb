"""DVG: networks and shapes, the official paper configuration's size, one training step, the GP layer,
the variance trigger (per sample), K futures of one clip, and the CLI train -> sample --condition path."""

from __future__ import annotations

import pytest
import torch

gpytorch = pytest.importorskip("gpytorch")

from kinema.cli import main  # noqa: E402
from kinema.data import Batch, build_dataset  # noqa: E402
from kinema.errors import ConfigError, SamplingError  # noqa: E402
from kinema.models.dvg import DVG, DVGConfig, window_trigger  # noqa: E402
from kinema.objectives.base import StepContext  # noqa: E402
from kinema.registry import build_dataclass, build_objective, load_config  # noqa: E402
from kinema.video import read_video, to_uint8, write_video  # noqa: E402

SMALL = {"resolution": 16, "channels": 1, "n_past": 3, "n_future": 3, "g_dim": 4, "nf": 8, "rnn_size": 16,
         "gp_inducing": 8, "gp_inducing_range": [-1.0, 1.0], "trigger_window": 8, "trigger_warmup": 4}


def small(**kw) -> DVG:
    torch.manual_seed(0)
    return DVG(build_dataclass(DVGConfig, {**SMALL, **kw}, "model"))


def clips(b=2, t=6, r=16, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, r, r, generator=g) * 2 - 1


@pytest.mark.parametrize("resolution, levels", [(16, 2), (32, 3), (64, 4)])
def test_encoder_decoder_shapes_and_skips(resolution, levels):
    m = small(resolution=resolution)
    x = torch.rand(3, 1, resolution, resolution)
    h, skips = m.encoder(x)
    assert h.shape == (3, 4) and h.abs().max() < 1  # tanh
    assert [s.shape[1:] for s in skips] == [(8 * 2**i, resolution >> (i + 1), resolution >> (i + 1))
                                            for i in range(levels)]
    y = m.decoder(h, skips)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1  # sigmoid on [0, 1] frames


def official_decode(decoder, h, skips):
    """The official decoder's forward (dcgan_64.py:80-88): concatenate the skip map, then each block whole."""
    x = decoder.stem(h.view(-1, decoder.g_dim, 1, 1))
    for block, skip in zip(decoder.blocks, skips[::-1]):
        x = block(torch.cat([x, skip], 1))
    return decoder.activation(decoder.out(torch.cat([x, skips[0]], 1)))


def test_encoder_head_as_a_matrix_product_equals_the_conv():
    m = small(resolution=32).double().train()
    x = torch.rand(5, 1, 32, 32, dtype=torch.float64)
    h, skips = m.encoder(x)
    torch.testing.assert_close(h, m.encoder.head(skips[-1]).flatten(1), atol=1e-12, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_decoder_skip_terms_equal_the_concatenating_decoder(channels):
    # float64: the two orders of summation then agree to ~1e-15 (float32: ~1e-7, amplified in batch norm's backward)
    m = small(resolution=32, channels=channels).double().train()  # batch norm on the call's batch, as in training
    h, skips = m.encoder(torch.rand(5, channels, 32, 32, dtype=torch.float64))
    expected = official_decode(m.decoder, h, skips)
    terms = m.decoder.skip_terms(skips)
    assert [t.shape[1] for t in terms] == [16, 8, channels]  # each level's output channels, coarsest first
    torch.testing.assert_close(m.decoder(h, skips), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(m.decoder(h, terms), expected, atol=1e-12, rtol=0)
    # reused for another latent (what sampling and the joint loss do), gradients reach the same weights
    h2 = torch.rand(5, 4, dtype=torch.float64) * 2 - 1
    ours = m.decoder(h, terms).square().sum() + m.decoder(h2, terms).square().sum()
    theirs = official_decode(m.decoder, h, skips).square().sum() + official_decode(m.decoder, h2, skips).square().sum()
    params = [*m.decoder.parameters(), *m.encoder.parameters()]
    for a, b in zip(torch.autograd.grad(ours, params, retain_graph=True), torch.autograd.grad(theirs, params)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("n_future", [1, 4, 9])
def test_sample_shapes_per_frame_count_and_context_kept(n_future):
    m = small().eval()
    context = clips(1, 5)
    video = m.sample(m.sample_noise(3), frames=context, n_future=n_future)
    assert video.shape == (3, 3, 3 + n_future, 16, 16)
    grey = context[:, :, :3].mean(1, keepdim=True).expand(-1, 3, -1, -1, -1)
    torch.testing.assert_close(video[:, :, :3], grey.expand(3, -1, -1, -1, -1), atol=1e-6, rtol=0)
    assert video.abs().max() <= 1


def test_paper_config_parameter_count_on_meta():
    cfg = load_config("configs/dvg_kth_64.toml").model
    assert (cfg.resolution, cfg.channels, cfg.n_past, cfg.n_future, cfg.g_dim, cfg.rnn_size, cfg.gp_inducing) == \
        (64, 1, 5, 10, 90, 256, 40)
    with torch.device("meta"):
        m = DVG(cfg)
    assert m.parameter_counts() == {"encoder": 3_493_966, "decoder": 6_247_233, "predictor": 1_099_098,
                                    "gp": 151_560, "total": 10_991_857}
    # the official widths: 64, 128, 256, 512, then a valid 4x4 conv to g_dim = 90; 90 GPs of 40 inducing points
    assert [b[0].out_channels for b in m.encoder.blocks] == [64, 128, 256, 512]
    assert m.encoder.head[0].kernel_size == (4, 4) and m.encoder.head[0].out_channels == 90
    assert m.gp.gp.variational_strategy.inducing_points.shape == (90, 40, 1)
    assert [c.hidden_size for c in m.predictor.cells] == [256, 256]


def step_context(objective, batch_size, step=0):
    opts = {name: torch.optim.Adam(params, lr=2e-3, betas=(0.9, 0.999))
            for name, params in objective.parameter_groups().items()}
    return StepContext.for_batch(opts, torch.Generator().manual_seed(0), batch_size, step=step)


def test_one_training_step_changes_every_part_and_logs_the_terms():
    m = small().train()
    objective = build_objective(m, build_dataclass(load_config("configs/dvg_tiny.toml").objective.__class__,
                                                   {}, "objective"))
    # the joint phase steps all three optimisers from one loss, through the base phase loop
    assert [(p.name, p.optimizers) for p in objective.phases()] == [
        ("joint", ("autoencoder", "lstm", "gp")), ("lstm", ("lstm",)), ("gp", ("gp",))]
    assert "train_step" not in type(objective).__dict__
    before = {k: v.detach().clone() for k, v in m.named_parameters()}
    batch = Batch(clips(4, 6))
    metrics = objective.train_step([batch], step_context(objective, 4))
    for key in ("loss", "ae", "lstm_frame", "latent", "gp_frame", "neg_elbo", "lstm_finetune", "gp_finetune"):
        assert torch.isfinite(metrics[key]), key
    cfg = objective.config
    expected = (cfg.ae_weight * metrics["ae"] + cfg.lstm_frame_weight * metrics["lstm_frame"]
                + cfg.latent_weight * metrics["latent"] + cfg.gp_frame_weight * metrics["gp_frame"]
                + cfg.elbo_weight * metrics["neg_elbo"])
    torch.testing.assert_close(metrics["loss"], expected)
    for part in ("encoder", "decoder", "predictor", "gp"):
        changed = [k for k, v in m.named_parameters() if k.startswith(part + ".") and not torch.equal(v, before[k])]
        assert changed, f"{part} did not move"


def test_gp_learning_rate_milestones():
    m = small()
    objective = build_objective(m, build_dataclass(type(load_config("configs/dvg_tiny.toml").objective),
                                                   {"gp_lr_milestones": [2, 4]}, "objective"))
    assert [objective.gp_lr_factor(s) for s in (0, 1, 2, 3, 4, 100)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    ctx = step_context(objective, 2, step=4)
    objective.train_step([Batch(clips(2, 6))], ctx)
    assert ctx.optimizers["gp"].param_groups[0]["lr"] == 2e-3  # restored after the step


def test_gp_layer_elbo_decreases_on_a_toy_regression():
    from kinema.models.dvg.gp import GPTemporal

    torch.manual_seed(0)
    gp = GPTemporal(2, 10, (-1.0, 1.0))
    x = torch.linspace(-1, 1, 64)[:, None].expand(-1, 2)
    y = torch.stack([torch.sin(3 * x[:, 0]), 0.5 * x[:, 1]], 1)
    opt = torch.optim.Adam(gp.parameters(), lr=0.05)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = gp.neg_elbo(gp.posterior(x), y, num_data=64)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0 and sum(losses[-10:]) < sum(losses[:10])
    gp.eval()
    mean, var = gp.predictive(x)
    assert (mean - y).abs().max() < 0.15 and var.shape == (64, 2) and (var > 0).all()


def test_window_trigger_fires_on_a_jump_per_sample_and_not_on_flat_variance():
    # three samples, 30 steps of variance norms: a small oscillation (i.i.d. noise alone exceeds mean + 2 std
    # now and then -- the rule is the official one, it has false alarms), with a jump for samples 0 and 2
    t = torch.arange(30.0)
    values = 1.0 + 0.01 * torch.sin(0.7 * t[None] + torch.tensor([[0.0], [1.0], [2.0]]))
    values[0, 20] = 2.0  # sample 0: a jump at step 20
    values[2, 25] = 2.0  # sample 2: a jump at step 25
    fired = torch.zeros(3, 30, dtype=torch.bool)
    for step in range(12, 30):
        fired[:, step] = window_trigger(values[:, step - 11: step], values[:, step], 2.01)
    assert fired.nonzero().tolist() == [[0, 20], [2, 25]]
    flat = torch.ones(2, 12)
    assert not window_trigger(flat[:, :11], flat[:, 11], 2.01).any()
    with pytest.raises(ConfigError, match="can never exceed"):
        build_dataclass(DVGConfig, {**SMALL, "trigger_window": 5}, "model")


def test_each_sample_reads_its_own_variance_and_futures_equal_the_lstm_before_a_trigger(monkeypatch):
    """Three futures of one clip; the GP's variance jumps for sample 1 alone at one frame: only sample 1
    branches there, the others stay on the LSTM rollout (the official reads element 3 for everyone)."""
    m = small(n_past=3, trigger_warmup=4, trigger_window=8).eval()
    context = clips(1, 3, seed=1)
    noise = m.sample_noise(3, torch.Generator().manual_seed(0))
    lstm_only = m.sample(noise, frames=context, n_future=10, trigger="never")
    assert torch.equal(lstm_only[0], lstm_only[1]) and torch.equal(lstm_only[1], lstm_only[2])

    real = m.gp.predictive
    calls = []

    def predictive(h):
        mean, var = real(h)
        step = len(calls)
        calls.append(step)
        scale = torch.ones(len(h), 1)
        if step == 8:  # the 9th encoded frame: frame index 9 is drawn from the GP for sample 1
            scale[1] = 50.0
        return mean, var.detach().clamp(0.1, 0.1) * scale

    monkeypatch.setattr(m.gp, "predictive", predictive)
    video, info = m.sample(noise, frames=context, n_future=10, return_info=True)
    assert info["triggered"].nonzero().tolist() == [[1, 9 - 3]]
    assert torch.equal(video[0], lstm_only[0]) and torch.equal(video[2], lstm_only[2])
    assert torch.equal(video[1, :, :9], lstm_only[1, :, :9])
    assert not torch.allclose(video[1, :, 9], lstm_only[1, :, 9])


def test_k_futures_of_one_clip_differ_after_a_trigger():
    m = small().eval()
    context = clips(1, 4, seed=2)
    noise = m.sample_noise(4, torch.Generator().manual_seed(1))
    video = m.sample(noise, frames=context, n_future=6, trigger="every_k", trigger_every=5)
    before, after = video[:, :, :5], video[:, :, 5:]  # frame 5 is the first GP draw
    assert all(torch.equal(before[0], before[k]) for k in range(1, 4))
    assert all(not torch.allclose(after[i], after[j]) for i in range(4) for j in range(i + 1, 4))
    again = m.sample(noise, frames=context, n_future=6, trigger="every_k", trigger_every=5)
    assert torch.equal(video, again)  # the seeds fix the draws


def test_bad_inputs_are_named():
    for key, value, match in (("n_future", 0, "n_future must be >= 1"), ("gp_inducing", 0, "inducing points"),
                              ("resolution", 48, "4 \\* 2\\*\\*k")):
        with pytest.raises(ConfigError, match=match):
            build_dataclass(DVGConfig, {**SMALL, key: value}, "model")
    m = small().eval()
    noise = m.sample_noise(2)
    with pytest.raises(ValueError, match="needs 3 context frames"):
        m.sample(noise, frames=clips(1, 2))
    with pytest.raises(ValueError, match="expected \\(B, 1 or 3, T, 16, 16\\)"):
        m.sample(noise, frames=torch.zeros(1, 2, 4, 16, 16))
    with pytest.raises(ValueError, match="expected \\(B, 1 or 3, T, 16, 16\\)"):
        m.sample(noise, frames=clips(1, 4, r=32))
    with pytest.raises(ValueError, match="pass the conditioning frames"):
        m.sample(noise)
    with pytest.raises(ValueError, match=">= 1"):
        m.sample(noise, frames=clips(1, 4), n_future=0)


def test_cli_train_then_sample_k_futures_of_one_clip(tmp_path, capsys):
    run = tmp_path / "run"
    sets = [f"--set=model.{k}={v}" for k, v in (("resolution", 16), ("nf", 8), ("g_dim", 4), ("rnn_size", 16),
                                                ("gp_inducing", 8))]
    assert main(["--threads", "1", "train", "--config", "configs/dvg_tiny.toml", "--out", str(run), "--steps", "2",
                 "--no-progress", "--device", "cpu", "--set", "train.batch_size=4", "--set", "train.num_samples=2",
                 "--set", "data.num_clips=8", *sets]) == 0
    clip = build_dataset(load_config("configs/dvg_tiny.toml").data, frames=5, height=16, width=16, seed=3)[0]
    condition = write_video(tmp_path / "clip.mp4", to_uint8(clip))
    out = tmp_path / "futures"
    assert main(["--threads", "1", "sample", "--checkpoint", str(run), "--condition", str(condition), "--frames",
                 "7", "--num", "3", "--trigger", "every_k", "--trigger-every", "4", "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 0
    videos = [read_video(out / f"sample_{i}.mp4") for i in range(3)]
    assert all(v.shape == (3 + 7, 16, 16, 3) for v in videos)
    given = read_video(condition)[:3].astype(int)
    for v in videos:  # the context frames are the given ones (up to video compression)
        assert abs(v[:3].astype(int) - given).mean() < 4
    # the same through Python, in float (two training steps leave the frames too flat for uint8 files)
    from kinema.api import generate
    from kinema.registry import load_model
    from kinema.video import from_uint8

    model, _, _ = load_model(run)
    futures = generate(model, 3, seed=0, context=from_uint8(read_video(condition))[None], frames=7,
                       trigger="every_k", trigger_every=4)
    assert torch.equal(futures[0, :, :4], futures[1, :, :4])  # frame 4 is the first GP draw
    assert not torch.equal(futures[0, :, 4:], futures[1, :, 4:])

    def error(argv):
        assert main(argv) == 2
        return capsys.readouterr().err

    base = ["sample", "--checkpoint", str(run), "--out", str(tmp_path / "x.gif"), "--device", "cpu"]
    assert "pass --condition VIDEO" in error(base)
    assert "is a folder" in error([*base, "--condition", str(run)])
    big = write_video(tmp_path / "big.mp4", to_uint8(clips(1, 4, r=32)[0]))
    assert "of 16x16" in error([*base, "--condition", str(big)])
    short = write_video(tmp_path / "short.mp4", to_uint8(clip[:, :2]))
    assert "needs 3 frame(s)" in error([*base, "--condition", str(short)])
    assert "at least 1 frame" in error([*base, "--condition", str(condition), "--frames", "0"])


def test_sampler_rejects_a_wrong_context_from_python():
    from kinema.api import generate

    m = small().eval()
    with pytest.raises(SamplingError, match="one of them"):
        generate(m, 2)
    videos = generate(m, 2, seed=0, context=clips(1, 3), frames=2)
    assert videos.shape == (2, 3, 5, 16, 16)


@pytest.mark.parametrize("trigger", ["never", "every_k"])
def test_fixed_schedules_skip_the_gp_off_draw_frames_with_the_same_video(trigger):
    """Without return_info the fixed schedules call the GP only on draw frames: the videos are unchanged."""
    from kinema.registry import build_model, load_config

    model = build_model(load_config("dvg_tiny").model).eval()
    frames = torch.rand(2, 1, model.config.n_past, 32, 32) * 2 - 1
    noise = model.sample_noise(2, generator=torch.Generator().manual_seed(0))
    calls = []
    original = model.gp.predictive
    model.gp.predictive = lambda h: calls.append(1) or original(h)
    with torch.no_grad():
        fast = model.sample(noise, frames=frames, n_future=12, trigger=trigger, trigger_every=4)
        counted = len(calls)
        full, _ = model.sample(noise, frames=frames, n_future=12, trigger=trigger, trigger_every=4, return_info=True)
    assert torch.equal(fast, full)
    assert counted == (0 if trigger == "never" else len([i for i in range(model.config.n_past, model.config.n_past + 12) if i % 4 == 0]))
