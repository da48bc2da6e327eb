"""The clip batches kinema's trainer draws for a config, rebuilt outside the trainer, so that a reference
implementation trains on the same batches in the same order (benchmarks/equal_compute.py and
benchmarks/equal_compute_authors.py both feed their references from it)."""

from __future__ import annotations

from typing import Iterator

import torch


def config_stream(cfg) -> Iterator[torch.Tensor]:
    """The batches kinema's trainer draws for ``cfg`` (``Trainer._batches``: the config's dataset at
    ``train.seed``, as uint8, in ``DrawSampler`` order, dequantised), ``(B, 3, T, H, W)`` float in [-1, 1].
    Shared by ``equal_compute.stage_stream`` and ``equal_compute_authors.stage_stream``."""
    from kinema.data import Draws, build_dataset
    from kinema.training.distributed import DrawSampler
    from kinema.video.io import dequantise

    m, t = cfg.model, cfg.train
    draws = Draws(build_dataset(cfg.data, frames=m.frames, height=m.resolution, width=m.resolution, seed=t.seed,
                                train=True, uint8=True))
    ids = iter(DrawSampler(len(draws), t.seed, t.batch_size))
    while True:
        batch = torch.stack([torch.as_tensor(draws[next(ids)]) for _ in range(t.batch_size)])
        yield dequantise(batch) if batch.dtype == torch.uint8 else batch.float()
