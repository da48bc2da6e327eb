"""NÜWA: 3DNA nearby attention (blocked == dense reference, exact neighbourhoods, causality, KV cache),
the per-frame VQ-GAN tokenizer and its objective, the encoder-decoder transformer (causal, prefill,
cached == uncached sampling), the CLI flow and its errors. Tiny sizes (16-32 px, 4-8 frames), CPU."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from kinema.models.nuwa.attention import (
    NearbyAttention,
    axis_offsets,
    check_extent,
    dense_nearby_attention,
    grid_coords,
    make_neighbourhood,
    nearby_attention,
    neighbourhood_mask,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: shared cores, one thread


# --------------------------------------------------------------------------- 3DNA


def raster(c, s):
    return (c[0] * s[1] + c[1]) * s[2] + c[2]


def brute_force_neighbours(p, q_shape, k_shape, extent, dilation, unit, shape, causal):
    """The set of key cells (raster indices) query cell ``p`` may attend, straight from the definition (no
    tensors). Causal: in token space -- the tokens ``j < p`` of ``p``'s window, which the decoder input
    carries at cell ``j + 1``, and ``<bos>`` at cell 0."""
    centre = [p[a] * k_shape[a] // q_shape[a] for a in range(3)]
    allowed = []
    for a in range(3):
        lo, hi = axis_offsets(extent[a], unit, shape)
        cells = [c for c in range(k_shape[a])
                 if lo * dilation[a] <= c - centre[a] <= hi * dilation[a] and (c - centre[a]) % dilation[a] == 0]
        allowed.append(cells)
    out = {raster(c, k_shape) for c in itertools.product(*allowed)}
    if causal:
        out = {j + 1 for j in out if j < raster(p, q_shape)} | {0}
    return out


CASES = [  # q_shape, k_shape, extent, dilation, unit, shape, causal
    ((4, 4, 4), (4, 4, 4), (3, 3, 3), (1, 1, 1), "window", "centred", True),
    ((4, 4, 4), (4, 4, 4), (3, 3, 3), (1, 2, 2), "window", "centred", True),
    ((4, 4, 4), (4, 4, 4), (3, 3, 3), (1, 1, 1), "window", "one_sided", True),
    ((4, 4, 4), (4, 4, 4), (1, 1, 1), (1, 1, 1), "radius", "centred", True),
    ((4, 4, 4), (4, 4, 4), (3, 0, 3), (1, 1, 1), "window", "centred", False),
    ((4, 4, 4), (2, 2, 2), (3, 3, 1), (1, 1, 1), "window", "centred", False),  # cross: projected onto a coarser grid
    ((6, 3, 3), (2, 6, 6), (1, 3, 5), (1, 1, 2), "window", "centred", False),
    ((4, 4, 4), (1, 1, 7), (1, 1, 0), (1, 1, 1), "window", "centred", False),  # text-like grid: the whole text
]


@pytest.mark.parametrize("case", CASES)
def test_mask_is_exactly_the_neighbourhood_of_the_definition(case):
    q_shape, k_shape, extent, dilation, unit, shape, causal = case
    nb = make_neighbourhood(extent, dilation, unit, shape, causal)
    mask = neighbourhood_mask(q_shape, k_shape, nb)
    for i, p in enumerate(grid_coords(q_shape).tolist()):
        seen = set(mask[i].nonzero().flatten().tolist())
        assert seen == brute_force_neighbours(tuple(p), q_shape, k_shape, extent, dilation, unit, shape, causal)
        assert seen  # never an empty row


def test_extent_3_is_a_window_of_3_by_default_and_a_radius_on_request():
    assert axis_offsets(3) == (-1, 1) and axis_offsets(3, "radius") == (-3, 3)
    assert axis_offsets(3, shape="one_sided") == (-2, 0) and axis_offsets(3, "radius", "one_sided") == (-3, 0)
    nb = make_neighbourhood((3, 3, 3))
    centre = (1 * 4 + 1) * 4 + 1  # cell (1, 1, 1) of a 4x4x4 grid: 27 neighbours, all inside
    assert int(neighbourhood_mask((4, 4, 4), (4, 4, 4), nb)[centre].sum()) == 27
    nb7 = make_neighbourhood((3, 3, 3), unit="radius")
    assert int(neighbourhood_mask((8, 8, 8), (8, 8, 8), nb7)[(3 * 8 + 3) * 8 + 3].sum()) == 7 ** 3
    with pytest.raises(ValueError, match="odd extent"):
        axis_offsets(4)


def test_extent_larger_than_the_grid_is_a_clear_error():
    with pytest.raises(ValueError, match="axis H reaches 2 cells, but that axis of the grid has only 2"):
        check_extent((3, 5, 3), (1, 1, 1), (4, 2, 4), "window", "centred", "decoder self-attention")
    check_extent((3, 0, 3), (1, 1, 1), (4, 2, 4), "window", "centred", "ok")  # 0 = whole axis


def qkv(b, heads, lq, lk, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda n: torch.randn(b, heads, n, c, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    return make(lq), make(lk), make(lk)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("block_frames", [1, 3])
def test_blocked_equals_dense_reference_values_and_gradients(case, block_frames):
    q_shape, k_shape, extent, dilation, unit, shape, causal = case
    nb = make_neighbourhood(extent, dilation, unit, shape, causal)
    q, k, v = qkv(2, 2, math.prod(q_shape), math.prod(k_shape), 4)
    out = nearby_attention(q, k, v, q_shape, k_shape, nb, block_frames)
    ref = dense_nearby_attention(q, k, v, q_shape, k_shape, nb)
    assert torch.allclose(out, ref, atol=1e-12)
    w = torch.randn_like(out)
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))
    grads_ref = torch.autograd.grad((ref * w).sum(), (q, k, v))
    for a, b in zip(grads, grads_ref):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[2], CASES[5]])
def test_a_query_depends_on_exactly_its_neighbourhood(case):
    """Jacobian of the layer: output row p changes with input row q iff q is in p's neighbourhood."""
    q_shape, k_shape, extent, dilation, unit, shape, causal = case
    nb = make_neighbourhood(extent, dilation, unit, shape, causal)
    torch.manual_seed(0)
    layer = NearbyAttention(8, 2, q_shape, k_shape, nb).double()
    lq, lk = math.prod(q_shape), math.prod(k_shape)
    x = torch.randn(1, lq, 8, dtype=torch.float64)
    ctx = None if causal else torch.randn(1, lk, 8, dtype=torch.float64)
    mask = neighbourhood_mask(q_shape, k_shape, nb)
    for p in range(0, lq, 5):
        if causal:
            jac = torch.autograd.functional.jacobian(lambda x: layer(x)[0, p], x)[:, 0]  # (8, lk, 8)
        else:
            jac = torch.autograd.functional.jacobian(lambda c: layer(x, c)[0, p], ctx)[:, 0]
        depends = jac.abs().sum((0, 2)) > 0
        want = mask[p].clone()
        if causal:
            want[p] = True  # its own row enters through the query too (in or out of its key window)
        assert torch.equal(depends, want), p


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[5], CASES[6]])
def test_cached_step_equals_the_full_pass(case):
    q_shape, k_shape, extent, dilation, unit, shape, causal = case
    nb = make_neighbourhood(extent, dilation, unit, shape, causal)
    torch.manual_seed(0)
    layer = NearbyAttention(8, 2, q_shape, k_shape, nb).double().eval()
    x = torch.randn(2, math.prod(q_shape), 8, dtype=torch.float64)
    ctx = None if causal else torch.randn(2, math.prod(k_shape), 8, dtype=torch.float64)
    full = layer(x, ctx)
    cache = {}
    if not causal:
        cache["k"], cache["v"] = layer.keys_values(ctx)
    steps = torch.cat([layer.step(x[:, p : p + 1], p, cache) for p in range(x.shape[1])], dim=1)
    assert torch.allclose(steps, full, atol=1e-12)


# --------------------------------------------------------------------------- VQ-GAN tokenizer

import json  # noqa: E402

from kinema.cli import main  # noqa: E402
from kinema.config import build_dataclass  # noqa: E402
from kinema.data import Batch  # noqa: E402
from kinema.errors import ConfigError  # noqa: E402
from kinema.models.nuwa.model import NUWA, NUWAConfig  # noqa: E402
from kinema.models.nuwa.vqgan import NUWAVQGAN, NUWAVQGANConfig  # noqa: E402
from kinema.nn.codebook import Codebook  # noqa: E402
from kinema.objectives.base import StepContext  # noqa: E402
from kinema.objectives.nuwa import NUWAVQGANObjectiveConfig, adaptive_weight  # noqa: E402
from kinema.registry import build_model, build_objective, load_config  # noqa: E402

# nuwa(): tiny.py, shared with test_nuwa_eval.py and tests/benchmarks/test_nuwa_measure.py
from tiny import TINY_NUWA, tiny_nuwa as nuwa  # noqa: E402
from tiny import TINY_NUWA_VQGAN as TINY_VQ  # noqa: E402


def video(b=2, t=4, r=16, seed=0):
    return torch.rand(b, 3, t, r, r, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def vqgan(**changes):
    torch.manual_seed(0)
    return NUWAVQGAN(build_dataclass(NUWAVQGANConfig, {**TINY_VQ, **changes}, "model"))


@pytest.mark.parametrize("downsample", [2, 4, 8, 16])
def test_tokenizer_is_per_frame_and_its_map_size_follows_the_downsampling(downsample):
    """The token map is resolution / downsample for any number of stages (lucidrains' image_size //
    num_layers**2 is right only for 4 layers)."""
    model = vqgan(downsample=downsample, resolution=32)
    x = video(r=32)
    s = 32 // downsample
    out = model(x)
    assert out["indices"].shape == (2, 4, s, s) and out["reconstruction"].shape == x.shape
    assert model.encode(x[:, :, :3]).shape == (2, 3, s, s)  # any number of frames
    assert model.decode(out["indices"]).shape == x.shape
    # frames are independent: frame 1's tokens do not change when frame 0 does
    y = x.clone()
    y[:, :, 0] = -y[:, :, 0]
    assert torch.equal(model.encode(x)[:, 1:], model.encode(y)[:, 1:])


def test_tokenizer_shares_videogpts_codebook():
    from kinema.models.videogpt.vqvae import Codebook as VideoGPTCodebook

    assert VideoGPTCodebook is Codebook and isinstance(vqgan().codebook, Codebook)


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    rec, gen = (w ** 2).sum(), 3 * w.sum()
    lam = adaptive_weight(rec, gen, w, 1e4)
    assert lam.item() == pytest.approx(torch.tensor([2.0, 4.0]).norm().item() / (3 * 2 ** 0.5 + 1e-6))
    assert adaptive_weight(rec, 1e-9 * w.sum(), w, 7.0).item() == 7.0  # clamped


def step_vqgan(model, objective, step, clips):
    opts = {name: torch.optim.Adam(params, lr=1e-3) for name, params in objective.parameter_groups().items()}
    ctx = StepContext.for_batch(opts, torch.Generator().manual_seed(step), len(clips), step=step)
    return objective.train_step([Batch(clips)], ctx)


def test_vqgan_objective_phases_codebook_init_and_gan_start():
    model = vqgan()
    objective = build_objective(model, build_dataclass(NUWAVQGANObjectiveConfig, {"disc_start": 1}, "objective"))
    assert set(objective.parameter_groups()) == {"vqgan", "discriminator"}
    disc_before = [p.detach().clone() for p in model.discriminator.parameters()]
    metrics = step_vqgan(model, objective, 0, video())
    assert bool(model.codebook.initialized) and "loss_d" not in metrics and metrics["generator"] == 0
    assert all(torch.equal(a, b) for a, b in zip(disc_before, model.discriminator.parameters()))  # not yet
    metrics = step_vqgan(model, objective, 1, video(seed=1))
    assert "loss_d" in metrics and metrics["adaptive_weight"] > 0 and "dead_codes" in metrics
    assert not all(torch.equal(a, b) for a, b in zip(disc_before, model.discriminator.parameters()))


def test_perceptual_loss_only_from_a_given_weights_file(tmp_path):
    from safetensors.torch import save_file

    from kinema.objectives.nuwa import VGG16Features

    with pytest.raises(ConfigError, match="is not a file"):
        build_dataclass(NUWAVQGANObjectiveConfig, {"perceptual_weights": str(tmp_path / "none.pth")}, "objective")
        build_objective(vqgan(), build_dataclass(NUWAVQGANObjectiveConfig,
                                                 {"perceptual_weights": str(tmp_path / "none.pth")}, "objective"))
    torch.manual_seed(0)
    state = {f"features.{k}": v.half() for k, v in VGG16Features().features.state_dict().items()}
    save_file(state, tmp_path / "vgg16.safetensors")
    cfg = build_dataclass(NUWAVQGANObjectiveConfig, {"perceptual_weights": str(tmp_path / "vgg16.safetensors")},
                          "objective")
    model = vqgan()
    objective = build_objective(model, cfg)
    metrics = step_vqgan(model, objective, 0, video(t=2))
    assert metrics["perceptual"] > 0
    save_file({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.safetensors")
    with pytest.raises(ConfigError, match="not a VGG16 state dict"):
        VGG16Features.from_file(str(tmp_path / "bad.safetensors"))


# --------------------------------------------------------------------------- transformer


def test_decoder_is_causal_no_logit_depends_on_a_later_token():
    model = nuwa()
    tr = model.transformer
    codes = torch.randint(0, 16, (1, 4 * 4 * 4), generator=torch.Generator().manual_seed(0))
    enc = tr.encode(model.condition_tokens(codes.view(1, 4, 4, 4)))
    inputs = tr.inputs(codes).detach().requires_grad_()
    logits = tr.decode(inputs, enc)[0]
    length = logits.shape[0]
    for p in range(0, length, 7):
        (grad,) = torch.autograd.grad(logits[p].pow(2).sum(), inputs, retain_graph=True)
        depends = grad[0].abs().sum(-1) > 0  # input j carries token j - 1
        assert not depends[p + 1 :].any(), p  # tokens >= p (inputs > p) never reach logit p
        assert depends[p]  # the previous token (or <bos>) always does


WINDOWS = [  # self_extent, self_dilation, causal_window
    ([3, 3, 3], [1, 1, 1], "centred"),
    ([3, 3, 3], [1, 1, 1], "one_sided"),
    ([3, 3, 3], [1, 1, 2], "centred"),
    ([2, 2, 2], [1, 2, 1], "one_sided"),
    ([1, 0, 3], [1, 1, 1], "centred"),  # one frame, whole column, 3 columns
]


def token_window(p, grid, extent, dilation, shape):
    """Tokens ``j < p`` (raster) in target ``p``'s causal window, from the definition, in token space."""
    coords = list(itertools.product(*(range(s) for s in grid)))
    bounds = [axis_offsets(e, "window", shape) for e in extent]

    def near(a, d):
        return bounds[a][0] * dilation[a] <= d <= bounds[a][1] * dilation[a] and d % dilation[a] == 0

    return {j for j in range(p) if all(near(a, coords[j][a] - coords[p][a]) for a in range(3))}


@pytest.mark.parametrize("extent, dilation, shape", WINDOWS)
def test_every_target_reads_exactly_its_causal_window_of_tokens(extent, dilation, shape):
    """Issue 27: in TOKEN space, the logits of target ``p`` (one decoder layer) depend on exactly the earlier
    tokens of ``p``'s window, plus ``<bos>`` and token ``p - 1``, which the query's own input carries (the
    residual stream). Gradient of the logits at every target w.r.t. the decoder inputs; input cell ``q``
    carries token ``q - 1``. Building the window on input cells instead read the neighbourhood one raster
    step back (e.g. target (0, 1, 0) read (0, 0, 3) and missed (0, 0, 1))."""
    model = nuwa(decoder_layers=1, self_extent=extent, self_dilation=dilation, causal_window=shape).double()
    tr = model.transformer
    grid = model.token_grid
    length = math.prod(grid)
    codes = torch.randint(0, 16, (1, length), generator=torch.Generator().manual_seed(0))
    enc = tr.encode(model.condition_tokens(codes.view(1, *grid))).detach()
    inputs = torch.randn(1, length, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                         requires_grad=True)
    logits = tr.decode(inputs, enc)[0]
    for p in range(length):
        (grad,) = torch.autograd.grad(logits[p].pow(2).sum(), inputs, retain_graph=True)
        cells = set((grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist())
        assert 0 in cells, p  # <bos>
        tokens = {q - 1 for q in cells if q > 0}
        want = token_window(p, grid, extent, dilation, shape) | ({p - 1} if p else set())
        assert tokens == want, (p, sorted(tokens ^ want))
    if shape == "one_sided" and extent == [3, 3, 3]:  # the target's own column in the previous frame is read
        h, w = grid[1:]
        assert ((1 * h + 1) * w + 1) - h * w in token_window((1 * h + 1) * w + 1, grid, extent, dilation, shape)


@pytest.mark.parametrize("cond_frames, extent", [(2, [3, 3, 3]), (1, [1, 3, 1]), (2, [1, 1, 3])])
def test_every_target_reads_exactly_its_projected_window_of_the_condition(cond_frames, extent):
    """Cross-attention in token space: the logits of target ``p`` depend on exactly the condition cells in
    the window around ``p``'s projection onto the condition grid (gradient w.r.t. the encoder output)."""
    model = nuwa(decoder_layers=1, cond_frames=cond_frames, cross_extent=extent, encoder_extent=[1, 3, 3]).double()
    tr = model.transformer
    grid, cgrid = model.token_grid, model.config.cond_grid
    length = math.prod(grid)
    codes = torch.randint(0, 16, (1, length), generator=torch.Generator().manual_seed(0))
    enc = tr.encode(model.condition_tokens(codes.view(1, *grid))).detach().requires_grad_()
    logits = tr.decode(tr.inputs(codes).detach(), enc)[0]
    bounds = [axis_offsets(e) for e in extent]
    for p, c in enumerate(itertools.product(*(range(s) for s in grid))):
        (grad,) = torch.autograd.grad(logits[p].pow(2).sum(), enc, retain_graph=True)
        read = set((grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist())
        centre = [c[a] * cgrid[a] // grid[a] for a in range(3)]
        want = {raster(k, cgrid) for k in itertools.product(*(range(s) for s in cgrid))
                if all(bounds[a][0] <= k[a] - centre[a] <= bounds[a][1] for a in range(3))}
        assert read == want, (p, c)


@pytest.mark.parametrize("changes", [{}, {"causal_window": "one_sided", "self_extent": [2, 3, 2]},
                                     {"self_dilation": [1, 2, 2]}, {"cond_frames": 0}, {"block_frames": 1}])
def test_cached_step_logits_equal_the_full_forward_at_every_position(changes):
    """The KV-cached decoder (``NUWATransformer.step``, used by sampling) gives the full forward's logits."""
    model = nuwa(**changes).double()
    tr = model.transformer
    codes = torch.randint(0, 16, (2, *model.token_grid), generator=torch.Generator().manual_seed(2))
    flat = codes.flatten(1)
    cond = model.condition_tokens(codes)
    full = tr(flat, cond)
    caches = tr.new_caches(tr.encode(cond))
    steps = torch.stack([tr.step(None if p == 0 else flat[:, p - 1], p, caches, 2) for p in range(flat.shape[1])],
                        dim=1)
    assert torch.allclose(steps, full, atol=1e-10)


def test_dense_reference_and_blocked_attention_give_the_same_model():
    model = nuwa()
    codes = torch.randint(0, 16, (2, 4, 4, 4), generator=torch.Generator().manual_seed(1))
    blocked = model.logits(codes)
    for module in model.modules():
        if hasattr(module, "impl"):
            module.impl = "dense"
    assert torch.allclose(model.logits(codes), blocked, atol=1e-5)


@pytest.mark.parametrize("changes, guidance", [({}, 1.0), ({}, 2.0), ({"cond_frames": 0}, 1.0),
                                               ({"causal_window": "one_sided", "self_extent": [2, 3, 2]}, 1.0),
                                               ({"self_dilation": [1, 1, 2]}, 1.0)])
def test_cached_and_uncached_sampling_give_identical_tokens(changes, guidance):
    model = nuwa(**changes)
    noise = torch.tensor([3, 4])
    frames = video(t=1) if model.config.cond_frames else None
    a = model.sample_codes(noise, frames, guidance=guidance, use_cache=True)
    b = model.sample_codes(noise, frames, guidance=guidance, use_cache=False)
    assert torch.equal(a, b)


def test_prediction_keeps_the_prefilled_frames_tokens_exactly():
    model = nuwa()
    frames = video(t=2, seed=5)
    given = model.encode(frames)
    codes = model.sample_codes(torch.tensor([0, 1]), frames)
    assert torch.equal(codes[:, :2], given)
    assert not torch.equal(codes[0, 2:], codes[1, 2:])  # the rest is sampled (per-video seeds)
    uncond = nuwa(cond_frames=0)
    assert torch.equal(uncond.sample_codes(torch.tensor([0]), frames[:1, :, :1])[:, :1], given[:1, :1])


def test_training_loss_and_condition_dropout():
    model = nuwa().train()
    clips = video()
    loss = model.loss(clips)
    assert loss.ndim == 0 and 0 < loss.item() < 20
    loss.backward()
    assert model.transformer.to_logits.weight.grad is not None
    assert all(p.grad is None for p in model.vqgan.parameters())
    codes = model.encode(clips)
    cond = model.condition_tokens(codes, torch.tensor([True, False]))
    assert (cond[0] == model.transformer.null_token).all() and torch.equal(cond[1], codes[1, :1].flatten())


def test_bad_inputs_are_clear_errors():
    vq = json.dumps({"name": "nuwa_vqgan", **TINY_VQ})
    with pytest.raises(ConfigError, match="self_extent.*axis H reaches 2 cells.*only 2"):
        build_dataclass(NUWAConfig, {**TINY_NUWA, "resolution": 8, "self_extent": [3, 5, 3], "vqgan_config": vq},
                        "model")
    with pytest.raises(ConfigError, match="cross_extent.*axis T"):
        build_dataclass(NUWAConfig, {**TINY_NUWA, "cross_extent": [3, 3, 3]}, "model")
    with pytest.raises(ConfigError, match="does not match its VQ-GAN"):
        build_dataclass(NUWAConfig, {**TINY_NUWA, "codebook_size": 32, "vqgan_config": vq}, "model")
    with pytest.raises(ConfigError, match="not a NÜWA VQ-GAN|Train the tokenizer first"):
        build_dataclass(NUWAConfig, {**TINY_NUWA, "vqgan": "/nonexistent/run"}, "model")
    model = nuwa()
    with pytest.raises(ValueError, match="predicts video from its first 1 frame"):
        model.sample(torch.tensor([0]))
    with pytest.raises(ValueError, match="conditioning frames"):
        model.sample(torch.tensor([0]), frames=video(b=1, t=1, r=8))
    with pytest.raises(ValueError, match="needs 1..3"):
        model.sample(torch.tensor([0]), frames=video(b=1, t=4))


def test_paper_config_builds_on_meta_with_its_parameter_count():
    cfg = load_config("nuwa_paper_336")
    assert cfg.model.token_grid == (10, 21, 21)
    with torch.device("meta"):
        counts = build_model(cfg.model).parameter_counts()
    assert counts["transformer (trained)"] == 897_163_520  # the card's number; the paper says 870M


def test_two_stage_cli_flow(tmp_path):
    """Train the tokenizer, train prediction on its tokens, sample with --condition; clear errors."""
    from kinema.video import to_uint8, write_video

    small = ["model.resolution=16", "model.downsample=4", "model.frames=4", "train.batch_size=4",
             "train.num_samples=2", "data.num_clips=16", "train.steps=2", "train.log_every=1",
             "train.sample_every=2", "train.checkpoint_every=2"]
    vq_sets = small + ["model.hidden=16", "model.codebook_size=16", "model.embedding_dim=8", "model.disc_hidden=8",
                       "objective.disc_start=1"]
    sets = lambda values: [a for v in values for a in ("--set", v)]  # noqa: E731
    assert main(["--threads", "1", "train", "--config", "nuwa_vqgan_tiny", *sets(vq_sets),
                 "--out", str(tmp_path / "vq")]) == 0
    assert main(["--threads", "1", "train", "--config", "nuwa_tiny", "--dry-run"]) == 0
    assert main(["--threads", "1", "train", "--config", "nuwa_tiny", *sets(small), "--out", str(tmp_path / "bad")]) == 2
    tr_sets = small + ["model.codebook_size=16", "model.hidden=32", "model.heads=2", "model.encoder_layers=1",
                       "model.decoder_layers=1", f"model.vqgan={tmp_path / 'vq'}"]
    assert main(["--threads", "1", "train", "--config", "nuwa_tiny", *sets(tr_sets),
                 "--out", str(tmp_path / "nuwa")]) == 0
    clip = video(b=1, t=2, seed=9)[0]
    write_video(tmp_path / "cond.mp4", to_uint8(clip))
    out = tmp_path / "samples"
    assert main(["--threads", "1", "sample", "--checkpoint", str(tmp_path / "nuwa"), "--num", "2", "--out", str(out),
                 "--condition", str(tmp_path / "cond.mp4"), "--top-k", "4", "--guidance", "1.5"]) == 0
    assert len(list(out.iterdir())) >= 2
    assert main(["--threads", "1", "sample", "--checkpoint", str(tmp_path / "nuwa"), "--num", "1",
                 "--out", str(tmp_path / "x.mp4")]) == 2  # a prediction model needs --condition
    assert main(["--threads", "1", "sample", "--checkpoint", str(tmp_path / "vq"), "--num", "1",
                 "--out", str(tmp_path / "y.mp4")]) != 0  # a tokenizer cannot sample
