"""The one batch type that datasets, the trainer, objectives and evaluation pass around."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch


@dataclass
class Batch:
    """Clips and what comes with them.

    ``clips``: ``(B, C, T, H, W)`` float in ``[-1, 1]`` (or uint8 straight from a cache, converted on
    the device by the trainer); ``labels``: ``(B,)`` class indices; ``text``: one string per clip;
    ``times``: ``(B, T)`` time points of the frames; ``masks``: ``(B, T, H, W)`` integer per-frame
    segmentation masks (class per pixel; e.g. the sketches of NÜWA's sketch-to-video). A dataset item is a clip tensor ``(C, T, H, W)``
    or a ``Batch`` of one unbatched item; :meth:`collate` stacks either.
    """

    clips: torch.Tensor
    labels: torch.Tensor | None = None
    text: list[str] | None = None
    times: torch.Tensor | None = None
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.clips.shape[0]

    @property
    def fields(self) -> frozenset[str]:
        """The optional fields this batch carries (``labels``, ``text``, ``times``, ``masks``)."""
        return frozenset(f.name for f in fields(self) if f.name != "clips" and getattr(self, f.name) is not None)

    @staticmethod
    def collate(items: list[Any]) -> Batch:
        """``DataLoader`` collate: clip tensors or unbatched ``Batch`` items -> one ``Batch``."""
        if all(isinstance(item, torch.Tensor) for item in items):
            return Batch(torch.stack(items))
        if not all(isinstance(item, Batch) for item in items):
            raise TypeError(f"dataset items must all be clip tensors or all Batch, got {sorted({type(i).__name__ for i in items})}")
        first = items[0]
        return Batch(
            clips=torch.stack([i.clips for i in items]),
            labels=torch.stack([torch.as_tensor(i.labels) for i in items]) if first.labels is not None else None,
            text=[i.text for i in items] if first.text is not None else None,
            times=torch.stack([i.times for i in items]) if first.times is not None else None,
            masks=torch.stack([i.masks for i in items]) if first.masks is not None else None,
        )

    def to(self, device, non_blocking: bool = False) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return replace(self, clips=move(self.clips), labels=move(self.labels), times=move(self.times),
                       masks=move(self.masks))

    def with_clips(self, clips: torch.Tensor) -> Batch:
        return replace(self, clips=clips)

    def split(self, parts: int) -> list[Batch]:
        """``parts`` consecutive micro-batches (``torch.chunk`` sizes)."""
        clips = self.clips.chunk(parts)
        labels = self.labels.chunk(parts) if self.labels is not None else [None] * len(clips)
        times = self.times.chunk(parts) if self.times is not None else [None] * len(clips)
        masks = self.masks.chunk(parts) if self.masks is not None else [None] * len(clips)
        out, start = [], 0
        for c, lab, t, m in zip(clips, labels, times, masks):
            text = self.text[start : start + len(c)] if self.text is not None else None
            out.append(Batch(c, lab, text, t, m))
            start += len(c)
        return out
