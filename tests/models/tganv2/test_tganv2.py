"""TGANv2: shapes per level, which frames each level sees, real/fake reduction, dense inference."""

from __future__ import annotations

import pytest
import torch
from tiny import TINY_MODEL, one_batch, tiny_model_config

from kinema.errors import ConfigError
from kinema.registry import load_config
from kinema.models.tganv2 import TGANv2, TGANv2Config
from kinema.nn import downsample3d


def make_model(**changes) -> TGANv2:
    torch.manual_seed(0)
    return TGANv2(tiny_model_config(**changes))


def test_sparse_training_shapes_per_level():
    model = make_model()
    videos, indices = model.generator(model.sample_noise(3), torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in videos] == [(3, 3, 8, 4, 4), (3, 3, 4, 8, 8), (3, 3, 2, 16, 16)]
    assert [tuple(i.shape) for i in indices] == [(3, 8), (3, 4), (3, 2)]
    assert all(v.abs().max() <= 1 for v in videos)


def test_dense_training_every_level_sees_all_frames():
    model = make_model(sparse=False)
    videos, indices = model.generator(model.sample_noise(2))
    assert [tuple(v.shape) for v in videos] == [(2, 3, 8, 4, 4), (2, 3, 8, 8, 8), (2, 3, 8, 16, 16)]
    assert all(torch.equal(i, torch.arange(8).expand(2, -1)) for i in indices)


def test_dense_inference_renders_last_level_on_all_frames():
    model = make_model().eval()
    assert model.sample(model.sample_noise(2)).shape == (2, 3, 8, 16, 16)


def test_level_frames_are_nested_stride_two_subsets_shared_by_the_batch():
    model = make_model()
    seen_offsets = set()
    for seed in range(8):
        _, indices = model.generator(model.sample_noise(4), torch.Generator().manual_seed(seed))
        assert torch.equal(indices[0], torch.arange(8).expand(4, -1))
        for coarse, fine in zip(indices[:-1], indices[1:]):
            assert (fine[:, 1:] - fine[:, :-1] == 2 * (coarse[:, 1] - coarse[:, 0])[:, None]).all()
            assert all(set(f.tolist()) <= set(c.tolist()) for c, f in zip(coarse, fine))
            assert (fine == fine[:1]).all(), "policy 'batch' shares one offset across the batch"
        seen_offsets.add(int(indices[1][0, 0]))
    assert seen_offsets == {0, 1}, "the offset is random, not fixed"


def test_offset_policies_sample_and_zero():
    model = make_model(subsample_offset="sample")
    _, indices = model.generator(model.sample_noise(16), torch.Generator().manual_seed(0))
    assert len({tuple(row.tolist()) for row in indices[1]}) == 2, "per-sample offsets differ within a batch"
    model = make_model(subsample_offset="zero")
    _, indices = model.generator(model.sample_noise(2))
    assert indices[1][0].tolist() == [0, 2, 4, 6] and indices[2][0].tolist() == [0, 4]


def test_sparse_levels_equal_dense_frames_in_eval_mode():
    """Generate densely == train sparsely: with running BN statistics every block works per frame, so
    the last level of the sparse path must equal the dense video at the frames it kept."""
    model = make_model()
    model.train()
    model.generator(model.sample_noise(8))  # give the BN layers non-trivial running statistics
    model.eval()
    z = model.sample_noise(3)
    videos, indices = model.generator(z, torch.Generator().manual_seed(1))
    dense = model.sample(z)
    for level, (video, idx) in enumerate(zip(videos, indices)):
        if level == len(videos) - 1:
            expected = torch.stack([dense[b, :, idx[b]] for b in range(3)])
            torch.testing.assert_close(video, expected, rtol=1e-5, atol=1e-5)


def test_real_reduction_matches_fake_path():
    model = make_model()
    b, t, r = 6, 8, 16
    # Frame k of every real video is filled with the value k / 10, so pooled pixels reveal indices.
    real = (torch.arange(t).float() / 10).view(1, 1, t, 1, 1).expand(b, 3, t, r, r).contiguous()
    levels = model.real_levels(real, torch.Generator().manual_seed(3))
    fakes, _ = model.generator(model.sample_noise(b))
    assert [x.shape for x in levels] == [x.shape for x in fakes]
    frames = [(x[:, 0, :, 0, 0] * 10).round().long() for x in levels]
    assert torch.equal(frames[0], torch.arange(t).expand(b, -1))
    for coarse, fine in zip(frames[:-1], frames[1:]):
        assert all(set(f.tolist()) <= set(c.tolist()) for c, f in zip(coarse, fine))
        assert (fine[:, 1] - fine[:, 0] == 2 * (coarse[:, 1] - coarse[:, 0])).all()
    assert len({tuple(row.tolist()) for row in frames[2]}) > 1, "real offsets are drawn per sample"
    # Box pooling: a random video's level-0 is the 4x4 mean of the full-resolution frames.
    video = torch.rand(2, 3, t, r, r)
    level0 = model.real_levels(video)[0]
    torch.testing.assert_close(level0, video.unflatten(3, (4, 4)).unflatten(5, (4, 4)).mean((4, 6)))


def test_batch_subsampling_keeps_every_kth_sample_for_fakes_and_reals():
    model = make_model(batch_subsample=2)
    fakes, _ = model.generator(model.sample_noise(8))
    reals = model.real_levels(torch.zeros(8, 3, 8, 16, 16))
    assert [len(x) for x in fakes] == [len(x) for x in reals] == [8, 4, 2]
    scores = model.discriminate(fakes)
    assert [s.shape for s in scores] == [(8,), (4,), (2,)]


def test_discriminator_rejects_wrong_level_resolution():
    model = make_model()
    bad = [torch.zeros(2, 3, 8, 4, 4), torch.zeros(2, 3, 4, 8, 8), torch.zeros(2, 3, 2, 32, 32)]
    with pytest.raises(ValueError, match=r"expected shape \(\*, 3, \*, 16, 16\)"):
        model.discriminate(bad)
    with pytest.raises(ValueError, match="real video"):
        model.real_levels(torch.zeros(2, 3, 7, 16, 16))
    with pytest.raises(ValueError, match="z_dim"):
        model.sample(torch.zeros(2, 9))


def test_downsample_follows_chainer_padding():
    x = torch.arange(1.0, 4.0).view(1, 1, 3, 1, 1)  # odd axis: zero pad on both sides, 3 -> 2
    assert downsample3d(x, pad_singleton=False).flatten().tolist() == [0.5, 2.5]
    assert downsample3d(torch.ones(1, 1, 1, 4, 4)).shape == (1, 1, 3, 2, 2)  # the T = 1 quirk
    assert downsample3d(torch.ones(1, 1, 1, 4, 4), pad_singleton=False).shape == (1, 1, 1, 2, 2)
    assert downsample3d(torch.ones(1, 1, 4, 4, 4)).shape == (1, 1, 2, 2, 2)


def test_paper_config_parameter_counts():
    """docs/models/tganv2.md: G 88,032,460 and D 116,077,060 (BN affine parameters included)."""
    cfg = load_config("configs/tganv2_ucf101_192.toml").model
    with torch.device("meta"):
        model = TGANv2(cfg)
    assert model.parameter_counts() == {"generator": 88_032_460, "discriminator": 116_077_060, "total": 204_109_520}
    assert cfg.level_resolutions == [24, 48, 96, 192] and cfg.level_frames == [16, 8, 4, 2]


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(resolution=20), r"model.resolution = 20 cannot be produced.*Set model.resolution = 16"),
        (dict(frames=6), r"model.frames = 6 is not divisible by subsample_stride\^\(levels-1\) = 2\^2 = 4"),
        (dict(levels=4), r"model.levels = 4 needs at least 4 Up blocks"),
        (dict(subsample_stride=0), r"model.subsample_stride must be > 0"),
    ],
)
def test_invalid_model_configs_name_the_problem(changes, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, model={**TINY_MODEL, **changes})


def test_dense_mode_accepts_frames_not_divisible_by_the_stride():
    cfg = load_config(None, model={**TINY_MODEL, "frames": 6, "sparse": False}).model
    assert isinstance(cfg, TGANv2Config) and cfg.level_frames == [6, 6, 6]


def test_paper_config_level_shapes_on_meta_device():
    """The 192x192 network's per-level shapes, in sparse training and dense inference, without memory."""
    cfg = load_config("configs/tganv2_ucf101_192.toml").model
    with torch.device("meta"):
        model = TGANv2(cfg)
    z = model.sample_noise(2, generator=torch.Generator().manual_seed(0))
    videos, indices = model.generator(z, torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in videos] == [
        (2, 3, 16, 24, 24), (2, 3, 8, 48, 48), (2, 3, 4, 96, 96), (2, 3, 2, 192, 192)]
    assert [tuple(i.shape) for i in indices] == [(2, 16), (2, 8), (2, 4), (2, 2)]
    assert [tuple(s.shape) for s in model.discriminate(videos)] == [(2,)] * 4
    assert tuple(model.sample(z).shape) == (2, 3, 16, 192, 192)
    reals = model.real_levels(torch.empty(2, 3, 16, 192, 192, device="meta"))
    assert [r.shape for r in reals] == [v.shape for v in videos]


def test_parameter_counts_match_the_hand_derivation_in_the_model_card():
    """docs/models/tganv2.md derives each block's count from its layer list; the model must agree."""

    def up(cin, cout):  # BN(cin) + conv3(cin->cout) + BN(cout) + conv3(cout->cout) + conv1 shortcut
        return 2 * cin + 10 * cin * cout + 9 * cout**2 + 5 * cout

    def render(c):  # BN(c) + conv3(c->3)
        return 29 * c + 3

    def dis_block(cin, cout):  # conv3(cin->cin) + conv3(cin->cout) + conv1(cin->cout)
        return 27 * cin**2 + 28 * cin * cout + cin + 2 * cout

    g_channels = [1024, 512, 256, 128, 64, 32, 32]
    generator = (256 * 9216 + 9216) + (2048 * 4096 * 9 + 4096)
    generator += sum(up(a, b) for a, b in zip(g_channels[:-1], g_channels[1:]))
    generator += sum(render(c) for c in g_channels[-4:])
    d_channels = [64, 128, 256, 512, 1024]
    optimized = (3 * 64 * 27 + 64) + (64 * 64 * 27 + 64) + (3 * 64 + 64)
    one_level = optimized + sum(dis_block(a, b) for a, b in zip(d_channels[:-1], d_channels[1:])) + 1025
    assert (generator, 4 * one_level) == (88_032_460, 116_077_060)
    cfg = load_config("configs/tganv2_ucf101_192.toml").model
    with torch.device("meta"):
        assert TGANv2(cfg).parameter_counts() == {"generator": generator, "discriminator": 4 * one_level,
                                                 "total": generator + 4 * one_level}


@pytest.mark.parametrize("changes", [{"temporal": "ode"}, {"temporal": "ode", "temporal_order": 2},
                                     {"temporal": "ode", "temporal_order": 3}, {"temporal": "sde"}])
def test_tganv2_ode_variants_train_one_step(changes):
    """TGANv2-ODE, its higher-order and SDE variants run a training step (the reference crashes there)."""
    from kinema.objectives.gan import GANConfig as ObjectiveConfig
    from kinema.objectives.gan import GANObjective

    model = make_model(**changes)
    obj = GANObjective(model, ObjectiveConfig())
    opts = {n: torch.optim.Adam(p, lr=1e-3, betas=(0.0, 0.9)) for n, p in obj.parameter_groups().items()}
    before = [p.detach().clone() for p in model.generator.temporal.parameters()]
    obj.train_step(*one_batch(torch.rand(2, 3, 8, 16, 16) * 2 - 1, opts, torch.Generator().manual_seed(0)))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.generator.temporal.parameters()))
    assert model.capabilities.continuous_time


def test_tganv2_ode_samples_at_any_times_and_convlstm_refuses():
    model = make_model(temporal="ode").eval()
    z = model.sample_noise(2)
    assert model.sample(z, torch.linspace(-3, 7, 21)).shape == (2, 3, 21, 16, 16)
    dense = model.sample(z)
    torch.testing.assert_close(model.sample(z, torch.linspace(0, 7, 29))[:, :, ::4], dense, rtol=1e-4, atol=1e-5)
    convlstm = make_model().eval()
    assert not convlstm.capabilities.continuous_time
    with pytest.raises(ValueError, match="convlstm is a discrete-time generator"):
        convlstm.sample(z, torch.linspace(0, 7, 29))


def test_tganv2_ode_paper_config_parameter_count():
    """docs/models/tgan_ode.md: the TGANv2-ODE generator has 21,969,100 parameters (TGANv2 without the ConvLSTM's
    75,501,568, plus the field Conv2d(1024, 1024, 3): 9,438,208)."""
    cfg = load_config("configs/tganv2_ode_ucf101_192.toml").model
    with torch.device("meta"):
        counts = TGANv2(cfg).parameter_counts()
    assert counts["generator"] == 88_032_460 - 75_501_568 + 1024 * 1024 * 9 + 1024 == 21_969_100


def test_bad_temporal_settings_name_the_model_key():
    with pytest.raises(ConfigError, match="model.temporal_order"):
        load_config(None, model={**TINY_MODEL, "temporal": "ode", "temporal_order": 0})
    with pytest.raises(ConfigError, match="model.temporal_solver"):
        load_config(None, model={**TINY_MODEL, "temporal": "ode", "temporal_solver": "rk5"})


def test_sde_samples_are_reproducible_through_the_api():
    from kinema.api import generate

    model = make_model(temporal="sde").eval()
    a, b = generate(model, 2, seed=3), generate(model, 2, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, generate(model, 2, seed=4))


def test_convlstm_initialised_as_two_official_convolutions_and_forget_bias():
    """Official ConvLSTM: w_xifoc over x and w_hifoc over h, each LeCun-normal with fan-in 9 C; kinema's
    one convolution over concat(x, h) is initialised per half. The forget-gate bias is a named option."""
    torch.manual_seed(0)
    cfg = TGANv2Config(**{**TINY_MODEL, "gen_channels": [64, 16, 8, 8], "convlstm_forget_bias": 1.5})
    cell = TGANv2(cfg).generator.temporal.rnn.cell
    c, h = cell.in_channels, cell.hidden_channels
    for half in (cell.gates.weight[:, :c], cell.gates.weight[:, c:]):
        expected = (9 * half.shape[1]) ** -0.5
        assert abs(half.std().item() / expected - 1) < 0.05, (half.std().item(), expected)
    bias = cell.gates.bias.detach()
    assert torch.all(bias[h:2 * h] == 1.5) and torch.all(bias[:h] == 0) and torch.all(bias[2 * h:] == 0)
    with pytest.raises(ConfigError, match='convlstm_forget_bias = 1.0 only applies to model.temporal = "convlstm"'):
        TGANv2Config(**{**TINY_MODEL, "temporal": "ode", "convlstm_forget_bias": 1.0}).validate()


def test_forget_bias_keeps_z_alive_in_late_frames():
    """With zero input after t = 0, a forget gate at sigmoid(0) halves the state every frame: the latent
    maps of different z become alike by frame 15. Bias 1 keeps ~100x more of the spread (0.08 vs 0.0009 of frame 0s here)."""
    spreads = {}
    for bias in (0.0, 1.0):
        torch.manual_seed(0)
        model = TGANv2(TGANv2Config(**{**TINY_MODEL, "frames": 16, "gen_channels": [64, 16, 8, 8],
                                       "convlstm_forget_bias": bias}))
        with torch.no_grad():
            maps = model.generator.latent_sequence(model.sample_noise(64, generator=torch.Generator().manual_seed(0)))
        spread = maps.std(0).mean(dim=(0, 2, 3))  # across z, per frame
        spreads[bias] = (spread[-1] / spread[0]).item()
    assert spreads[0.0] < 0.01 and spreads[1.0] > 0.05 and spreads[1.0] > 50 * spreads[0.0], spreads
