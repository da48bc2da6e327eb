"""Attention layers: multi-head attention with VideoGPT's initialisation, and axial attention over a video."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Multi-head attention with the official initialisation (q/k/v without bias, output with bias).

    ``forward(q, kv)`` takes ``(..., Lq, dim_q)`` and ``(..., Lk, dim_kv)`` and returns ``(..., Lq, dim_q)``.
    """

    def __init__(self, dim_q: int, dim_kv: int, heads: int, n_layer: int = 1) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim_q, dim_q, bias=False)
        self.k = nn.Linear(dim_kv, dim_q, bias=False)
        self.v = nn.Linear(dim_kv, dim_kv, bias=False)
        self.out = nn.Linear(dim_kv, dim_q)
        nn.init.normal_(self.q.weight, std=1 / math.sqrt(dim_q))
        nn.init.normal_(self.k.weight, std=1 / math.sqrt(dim_kv))
        nn.init.normal_(self.v.weight, std=1 / math.sqrt(dim_kv))
        nn.init.normal_(self.out.weight, std=1 / math.sqrt(dim_q * n_layer))

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., L, C)`` -> ``(..., heads, L, C / heads)``."""
        return x.unflatten(-1, (self.heads, -1)).transpose(-2, -3)

    def merge(self, a: torch.Tensor) -> torch.Tensor:
        return self.out(a.transpose(-2, -3).flatten(-2))

    def forward(self, q: torch.Tensor, kv: torch.Tensor, causal: bool = False, dropout: float = 0.0) -> torch.Tensor:
        a = F.scaled_dot_product_attention(self.split(self.q(q)), self.split(self.k(kv)), self.split(self.v(kv)),
                                           is_causal=causal, dropout_p=dropout if self.training else 0.0)
        return self.merge(a)


class AxialAttention(nn.Module):
    """Sum of full attentions along T, H and W of ``(B, C, T, H, W)`` (non-causal, official AxialBlock)."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.attn_w = MultiHeadAttention(channels, channels, heads)
        self.attn_h = MultiHeadAttention(channels, channels, heads)
        self.attn_t = MultiHeadAttention(channels, channels, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.permute(0, 2, 3, 4, 1)  # (B, T, H, W, C)
        out = 0
        for attn, axis in ((self.attn_w, 3), (self.attn_h, 2), (self.attn_t, 1)):
            seq = h.movedim(axis, -2)  # the attended axis next to channels
            out = out + attn(seq, seq).movedim(-2, axis)
        return out.permute(0, 4, 1, 2, 3)


def strided_block_shape(shape: tuple[int, ...], block: int) -> tuple[int, ...]:
    """Grid of attention blocks of ``block`` consecutive (flattened, last-axis-fastest) positions.

    Official ``StridedSparsityConfig._compute_block_shape`` (wilson1yan/VideoGPT ``videogpt/attention.py``
    L423-435): merge axes from the last until their product exceeds ``block``; that merged axis holds
    ``product / block`` blocks, the leading axes stay. ``(8, 32, 32)``, block 32 -> ``(8, 32)``.
    """
    prod, i = 1, len(shape) - 1
    for i in range(len(shape) - 1, -1, -1):
        prod *= shape[i]
        if prod > block:
            break
    if prod % block:
        raise ValueError(f"sparse attention: the grid {tuple(shape)} does not split into blocks of {block} "
                         f"positions along its trailing axes ({prod} is not a multiple of {block})")
    return (*shape[:i], prod // block)


def strided_sparse_layout(shape: tuple[int, ...], block: int, local_blocks: int,
                          causal: bool = True) -> torch.Tensor:
    """Block layout ``(n, n)`` bool of the official N-d strided sparse attention (``attn_type = "sparse"``).

    Official ``StridedSparsityConfig`` (``videogpt/attention.py`` L333-392), which follows Child et al. 2019:
    block row ``r`` attends block columns ``max(0, r - local_blocks) .. r`` (local; ``local_blocks + 1``
    blocks, as the official loop bounds give) and, for every block-grid axis but the last, the blocks
    that differ from ``r`` only along that axis at an index ``<=`` its own (strided). Non-causal: the
    local band reaches ``r + local_blocks - 1`` and the strided part the whole axis.
    """
    if local_blocks < 1:
        raise ValueError("sparse attention needs at least 1 local block")
    grid = strided_block_shape(shape, block)
    n = math.prod(grid)
    layout = np.zeros((n, n), dtype=bool)  # numpy: the same on any default device (meta included)
    for r in range(n):
        layout[r, max(0, r - local_blocks) : (r + 1 if causal else min(r + local_blocks, n))] = True
    index = np.arange(n).reshape(grid)
    for r in range(n):
        idx = np.unravel_index(r, grid)
        for d in range(len(grid) - 1):  # no strided attention over the last block axis (official)
            sel = list(idx)
            sel[d] = slice(0, idx[d] + 1 if causal else grid[d])
            layout[r, index[tuple(sel)]] = True
    return torch.from_numpy(layout)


def sparse_causal_mask(layout: torch.Tensor, block: int, rows: slice | None = None,
                       length: int | None = None) -> torch.Tensor:
    """Position-level mask (True = attend) of a causal block ``layout``: ``q`` sees ``k`` iff ``k <= q`` and
    their blocks are linked. ``rows``: the query positions (default all); ``length``: keys ``0..length-1``.

    The official kernel masks diagonal blocks with ``tril`` (``make_sparse_attn_mask``, L394-412) and its
    decoding row is the layout row cut after the query (``get_non_block_layout_row``, L414-419): both
    are this mask.
    """
    total = layout.shape[0] * block
    length = total if length is None else length
    q = torch.arange(total, device=layout.device)[rows if rows is not None else slice(None)]
    k = torch.arange(length, device=layout.device)
    return layout[q[:, None] // block, k[None, :] // block] & (k[None, :] <= q[:, None])
