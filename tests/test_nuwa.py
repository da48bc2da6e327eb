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


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- 3DNA


def brute_force_neighbours(p, q_shape, k_shape, extent, dilation, unit, shape, causal):
    """The set of key cells query cell ``p`` may attend, straight from the definition (no tensors)."""
    centre = [p[a] * k_shape[a] // q_shape[a] for a in range(3)]
    allowed = []
    for a in range(3):
        lo, hi = axis_offsets(extent[a], unit, shape)
        cells = [c for c in range(k_shape[a])
                 if lo * dilation[a] <= c - centre[a] <= hi * dilation[a] and (c - centre[a]) % dilation[a] == 0]
        allowed.append(cells)
    out = set(itertools.product(*allowed))
    if causal:
        raster = lambda c, s: (c[0] * s[1] + c[1]) * s[2] + c[2]  # noqa: E731
        out = {c for c in out if raster(c, k_shape) <= raster(p, q_shape)}
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
    kcells = [tuple(c) for c in grid_coords(k_shape).tolist()]
    for i, p in enumerate(grid_coords(q_shape).tolist()):
        seen = {kcells[j] for j in mask[i].nonzero().flatten().tolist()}
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
        if causal:
            depends[p] = True  # its own row enters through the query too
        assert torch.equal(depends, mask[p]), p


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
