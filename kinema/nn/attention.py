"""Attention layers: multi-head attention with VideoGPT's initialisation, and axial attention over a video."""

from __future__ import annotations

import math

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
