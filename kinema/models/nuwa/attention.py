"""3DNA -- 3-D nearby attention (NÜWA, Wu et al. 2021, arXiv 2111.12417, §3.3 as quoted by secondary notes).

Tokens live on grids ``(T, H, W)`` flattened T-major (raster order: ``index = (t * H + h) * W + w``).
A query at cell ``p = (t, h, w)`` of the query grid ``(T, H, W)`` is projected onto the key grid
``(T', H', W')``: ``p'_a = floor(p_a * S'_a / S_a)`` per axis (the paper's projection, identity for
self-attention). It attends to the key cells ``q`` with, on every axis ``a``,

    ``q_a - p'_a`` in ``{lo_a * d_a, (lo_a + 1) * d_a, ..., hi_a * d_a}``   (``d_a`` = dilation)

**Causal** (the decoder's self-attention) works in *token* coordinates. The decoder input is shifted right
(:meth:`kinema.models.nuwa.model.NUWATransformer.inputs`): input cell ``0`` is ``<bos>`` and input cell
``q >= 1`` carries token ``q - 1``. A query at cell ``p`` predicts token ``p`` and sits at token ``p``'s
coordinates; key cell ``q >= 1`` sits at the coordinates of the token it carries, ``q - 1``, and is seen
when that token is in ``p``'s window and already generated (``q - 1 < p``, i.e. ``q <= p``); key cell ``0``
(``<bos>``) is always seen. So the logits of token ``p`` read, through attention, exactly the earlier
tokens of ``p``'s window (plus ``<bos>``); the query's own input, token ``p - 1``, also reaches them through
the residual stream. (Building the window on input cells instead -- key cell ``q`` at cell ``q``'s own
coordinates -- shifts every neighbourhood back by one raster step in token space: the bug of issue 27.)

``lo`` / ``hi`` come from the extent (:func:`axis_offsets`): kinema's default reads "extent e" as a
**window** of ``e`` cells (``e = 3`` -> offsets -1, 0, 1: radius 1); ``unit = "radius"`` reads it as a
radius (``e = 3`` -> offsets -3..3, 7 cells). ``shape = "one_sided"`` (causal only) takes the window
behind the query on every axis (``-(e-1)..0`` cells), the pattern lucidrains/nuwa-pytorch uses
(``nuwa_pytorch.py`` L426-431: left padding ``2 * pad`` on every axis). Extent 0 = the whole axis.

Two implementations of the same maths:

- :func:`nearby_attention` (memory-lean, blocked): queries in blocks of ``block_frames`` frames; each
  block attends, with SDPA and a boolean mask, only to the slab of key frames its neighbourhoods can
  reach. Peak score memory ``O(block * slab)`` instead of ``O(L_q * L_k)``.
- :func:`dense_nearby_attention` (reference): SDPA over all keys with the full ``(L_q, L_k)`` mask of
  :func:`neighbourhood_mask`; tests check the two agree in values and gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

WHOLE = 1 << 20  # offset bound standing for "the whole axis" (extent 0)


@dataclass(frozen=True)
class Neighbourhood:
    """Per-axis offset bounds ``lo <= 0 <= hi`` (in steps of ``dilation``) and causality."""

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    dilation: tuple[int, int, int] = (1, 1, 1)
    causal: bool = False

    def reach(self, axis: int) -> tuple[int, int]:
        """Smallest and largest key offset (cells) along ``axis``."""
        d = self.dilation[axis]
        return self.lo[axis] * d, self.hi[axis] * d


def axis_offsets(extent: int, unit: Literal["window", "radius"] = "window",
                 shape: Literal["centred", "one_sided"] = "centred") -> tuple[int, int]:
    """``(lo, hi)`` offset bounds (in dilation steps) of one axis; ``extent = 0`` is the whole axis.

    window e (odd when centred): centred ``-(e-1)/2 .. (e-1)/2``, one-sided ``-(e-1) .. 0``;
    radius r: centred ``-r .. r``, one-sided ``-r .. 0``.
    """
    if extent < 0:
        raise ValueError(f"extent must be >= 0 (0 = the whole axis), got {extent}")
    if extent == 0:
        return (-WHOLE, 0 if shape == "one_sided" else WHOLE)
    if unit == "window":
        if shape == "centred" and extent % 2 == 0:
            raise ValueError(f"a centred window needs an odd extent (cells per axis), got {extent}")
        r = (extent - 1) // 2 if shape == "centred" else extent - 1
    elif unit == "radius":
        r = extent
    else:
        raise ValueError(f"extent unit must be 'window' or 'radius', got {unit!r}")
    return (-r, 0 if shape == "one_sided" else r)


def make_neighbourhood(extent, dilation=(1, 1, 1), unit="window", shape="centred", causal=False) -> Neighbourhood:
    bounds = [axis_offsets(int(e), unit, shape) for e in extent]
    return Neighbourhood(tuple(b[0] for b in bounds), tuple(b[1] for b in bounds), tuple(int(d) for d in dilation),
                         causal)


def grid_coords(shape: tuple[int, int, int], start: int = 0, stop: int | None = None,
                device=None) -> torch.Tensor:
    """``(n, 3)`` long coordinates of the raster positions ``start..stop-1`` of a ``(T, H, W)`` grid."""
    t, h, w = shape
    stop = t * h * w if stop is None else stop
    idx = torch.arange(start, stop, device=device)
    return torch.stack([idx // (h * w), (idx // w) % h, idx % w], dim=-1)


def project(coords: torch.Tensor, q_shape, k_shape) -> torch.Tensor:
    """Query cells onto the key grid: ``floor(p_a * S'_a / S_a)`` per axis."""
    qs = torch.tensor(q_shape, device=coords.device)
    ks = torch.tensor(k_shape, device=coords.device)
    return coords * ks // qs


def key_coords(k_shape, k_index: torch.Tensor, nb: Neighbourhood) -> torch.Tensor:
    """``(n_k, 3)`` coordinates of the key cells ``k_index``: the cells' own, or, causal, the coordinates of
    the token each carries (``k_index - 1``; cell 0, ``<bos>``, gets token 0's and is let through by
    :func:`mask_between` regardless)."""
    t, h, w = k_shape
    idx = (k_index - 1).clamp(min=0) if nb.causal else k_index
    return torch.stack([idx // (h * w), (idx // w) % h, idx % w], dim=-1)


def mask_between(q_index: torch.Tensor, k_index: torch.Tensor, q_shape, k_shape, nb: Neighbourhood) -> torch.Tensor:
    """Boolean ``(n_q, n_k)``: True where the query cells ``q_index`` may attend the key cells ``k_index``
    (raster indices of the query and key grids; causal: see the module docstring)."""
    t, h, w = q_shape
    q_coords = torch.stack([q_index // (h * w), (q_index // w) % h, q_index % w], dim=-1)
    centre = project(q_coords, q_shape, k_shape)
    diff = key_coords(k_shape, k_index, nb)[None, :, :] - centre[:, None, :]  # (n_q, n_k, 3)
    dil = torch.tensor(nb.dilation, device=diff.device)
    lo = torch.tensor(nb.lo, device=diff.device) * dil
    hi = torch.tensor(nb.hi, device=diff.device) * dil
    ok = ((diff >= lo) & (diff <= hi) & (diff % dil == 0)).all(-1)
    if nb.causal:  # token k-1 already generated (k <= q), or <bos>
        ok = (ok & (k_index[None, :] <= q_index[:, None])) | (k_index[None, :] == 0)
    return ok


def neighbourhood_mask(q_shape, k_shape, nb: Neighbourhood, device=None) -> torch.Tensor:
    """The full ``(L_q, L_k)`` mask (reference; ``L`` = grid sizes). Causal needs equal grids."""
    if nb.causal and tuple(q_shape) != tuple(k_shape):
        raise ValueError("causal nearby attention is self-attention: query and key grids must be equal")
    qi = torch.arange(math.prod(q_shape), device=device)
    ki = torch.arange(math.prod(k_shape), device=device)
    return mask_between(qi, ki, q_shape, k_shape, nb)


def key_frame_range(t_lo: int, t_hi: int, q_shape, k_shape, nb: Neighbourhood) -> tuple[int, int]:
    """Key frames ``[first, last]`` the queries of frames ``t_lo..t_hi`` can reach (causal: frames of the
    tokens the key cells carry)."""
    lo_off, hi_off = nb.reach(0)
    first = t_lo * k_shape[0] // q_shape[0] + lo_off
    last = t_hi * k_shape[0] // q_shape[0] + hi_off
    if nb.causal:
        last = min(last, t_hi)
    return max(first, 0), min(last, k_shape[0] - 1)


def key_cells(t_lo: int, t_hi: int, q_shape, k_shape, nb: Neighbourhood, stop: int | None = None,
              device=None) -> tuple[torch.Tensor, int, int]:
    """The key cells the queries of frames ``t_lo..t_hi`` can reach: ``(index, start, end)`` -- the slab
    ``start..end-1``, and ``index`` its raster indices, with ``<bos>`` (cell 0) in front when causal and
    the slab does not hold it. Causal: the slab holds the cells carrying the tokens of the reachable frames
    (cell = token + 1), cut at ``stop`` (exclusive; the cached step's own position + 1)."""
    f0, f1 = key_frame_range(t_lo, t_hi, q_shape, k_shape, nb)
    per_k = k_shape[1] * k_shape[2]
    start, end = f0 * per_k, (f1 + 1) * per_k
    if nb.causal:
        start, end = start + 1, min(end + 1, math.prod(k_shape))
    if stop is not None:
        end = min(end, stop)
    index = torch.arange(start, end, device=device)
    if nb.causal and start > 0:
        index = torch.cat([torch.zeros(1, dtype=index.dtype, device=device), index])
    return index, start, end


def gather_keys(k: torch.Tensor, start: int, end: int, with_bos: bool) -> torch.Tensor:
    """``k[:, :, start:end]`` of ``(B, heads, L_k, c)``, with cell 0 in front when ``with_bos``."""
    slab = k[:, :, start:end]
    return torch.cat([k[:, :, :1], slab], dim=2) if with_bos else slab


def dense_nearby_attention(q, k, v, q_shape, k_shape, nb: Neighbourhood, dropout: float = 0.0) -> torch.Tensor:
    """Reference: ``q (B, heads, L_q, c)``, ``k, v (B, heads, L_k, c)`` with the full boolean mask."""
    mask = neighbourhood_mask(q_shape, k_shape, nb, device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


def nearby_attention(q, k, v, q_shape, k_shape, nb: Neighbourhood, block_frames: int = 1,
                     dropout: float = 0.0) -> torch.Tensor:
    """Memory-lean 3DNA: query frames in blocks of ``block_frames``, each against its key-frame slab.

    ``q (B, heads, L_q, c)`` with ``L_q = prod(q_shape)``; ``k, v (B, heads, L_k, c)``. Same result as
    :func:`dense_nearby_attention` (every query sees at least its own projected cell, so no row is empty).
    """
    tq, hq, wq = q_shape
    per_q = hq * wq
    out = []
    for t0 in range(0, tq, block_frames):
        t1 = min(t0 + block_frames, tq) - 1
        qs, qe = t0 * per_q, (t1 + 1) * per_q
        index, ks, ke = key_cells(t0, t1, q_shape, k_shape, nb, device=q.device)
        bos = len(index) > ke - ks
        mask = mask_between(torch.arange(qs, qe, device=q.device), index, q_shape, k_shape, nb)
        out.append(F.scaled_dot_product_attention(q[:, :, qs:qe], gather_keys(k, ks, ke, bos),
                                                  gather_keys(v, ks, ke, bos), attn_mask=mask, dropout_p=dropout))
    return torch.cat(out, dim=2)


class NearbyAttention(nn.Module):
    """Multi-head 3DNA: ``forward(x (B, L_q, dim), context (B, L_k, dim_kv) | None)`` -> ``(B, L_q, dim)``.

    ``context=None`` is self-attention (query and key grid ``q_shape``). ``impl`` picks the blocked
    implementation (``"blocked"``) or the dense reference (``"dense"``). ``step`` decodes one query
    position with a key/value cache (self-attention) or precomputed context keys (cross-attention).
    """

    def __init__(self, dim: int, heads: int, q_shape, k_shape, nb: Neighbourhood, dim_kv: int | None = None,
                 dropout: float = 0.0, block_frames: int = 1) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        dim_kv = dim if dim_kv is None else dim_kv
        self.heads, self.nb, self.dropout, self.block_frames = heads, nb, dropout, block_frames
        self.q_shape, self.k_shape = tuple(q_shape), tuple(k_shape)
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim_kv, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.impl: Literal["blocked", "dense"] = "blocked"

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, L, c)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(context).chunk(2, dim=-1)
        return self.split(k), self.split(v)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, q_shape=None, k_shape=None,
                nb: Neighbourhood | None = None) -> torch.Tensor:
        """``q_shape``, ``k_shape``, ``nb``: this call's grids and neighbourhood (default: the module's), for
        one set of weights over conditions on different grids (NÜWA's text, sketch and frame conditions)."""
        q_shape = self.q_shape if q_shape is None else tuple(q_shape)
        k_shape = self.k_shape if k_shape is None else tuple(k_shape)
        nb = self.nb if nb is None else nb
        q = self.split(self.q(x))
        k, v = self.keys_values(x if context is None else context)
        p = self.dropout if self.training else 0.0
        if self.impl == "dense":
            a = dense_nearby_attention(q, k, v, q_shape, k_shape, nb, p)
        else:
            a = nearby_attention(q, k, v, q_shape, k_shape, nb, self.block_frames, p)
        return self.out(a.transpose(1, 2).flatten(2))

    def step(self, x: torch.Tensor, pos: int, cache: dict) -> torch.Tensor:
        """One query at raster position ``pos``: ``x (B, 1, dim)``. Self-attention: ``cache`` gets this
        position's key/value (``cache["k"], cache["v"]`` of the whole grid, allocated on first use) and
        the query reads the cached keys of its slab; cross-attention: ``cache["k"], cache["v"]`` are the
        context's (set once with :meth:`keys_values`; ``cache["k_shape"]``, ``cache["nb"]`` override the
        module's key grid and neighbourhood, as in :meth:`forward`)."""
        q = self.split(self.q(x))
        k_shape, nb = tuple(cache.get("k_shape", self.k_shape)), cache.get("nb", self.nb)
        if nb.causal:
            k, v = self.keys_values(x)
            if "k" not in cache:
                length = math.prod(self.q_shape)
                cache["k"] = k.new_zeros(*k.shape[:2], length, k.shape[-1])
                cache["v"] = v.new_zeros(*v.shape[:2], length, v.shape[-1])
            cache["k"][:, :, pos : pos + 1] = k
            cache["v"][:, :, pos : pos + 1] = v
        t = pos // (self.q_shape[1] * self.q_shape[2])
        index, ks, ke = key_cells(t, t, self.q_shape, k_shape, nb, pos + 1 if nb.causal else None, x.device)
        bos = len(index) > ke - ks
        mask = mask_between(torch.tensor([pos], device=x.device), index, self.q_shape, k_shape, nb)
        k, v = gather_keys(cache["k"], ks, ke, bos), gather_keys(cache["v"], ks, ke, bos)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(a.transpose(1, 2).flatten(2))


def check_extent(extent, dilation, grid, unit: str, shape: str, what: str) -> None:
    """Raise ValueError when an extent reaches beyond the grid (use 0 for the whole axis)."""
    for axis, (e, d, s) in enumerate(zip(extent, dilation, grid)):
        if e == 0:
            continue
        lo, hi = axis_offsets(int(e), unit, shape)
        reach = max(-lo, hi) * int(d)
        if reach > s - 1:
            name = "THW"[axis]
            raise ValueError(f"{what}: extent {e} ({unit}) with dilation {d} on axis {name} reaches {reach} cells, "
                             f"but that axis of the grid has only {s} cell(s) (reach at most {s - 1}); use a "
                             f"smaller extent or 0 for the whole axis")
