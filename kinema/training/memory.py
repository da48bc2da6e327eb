"""The memory a training run needs at the least, checked before anything is allocated.

A batch or model that cannot fit used to end in a MemoryError deep in a forward pass, or, under a cluster's
address-space limit (``ulimit -v``), in a segmentation fault with no message. The floor here counts only what
every step certainly holds -- weights, gradients, optimiser moments, one micro-batch of clips in
and one video-sized output -- so a refusal is never wrong; activations and EMA weights come on top and are not estimated.
"""

from __future__ import annotations

import math

import torch

from kinema.config import RunConfig
from kinema.errors import TrainingError
from kinema.registry import build_model
from kinema.system import format_bytes, memory_room

FLOAT_BYTES = 4  # fp32 master weights and clips; mixed precision keeps fp32 weights too
OPTIMIZER_MOMENTS = {"adam": 2, "adamw": 2, "rmsprop": 1}


def training_memory_floor(config: RunConfig, processes: int = 1, model=None) -> dict[str, int]:
    """Bytes one process certainly holds during a step, by part (the model is built on the meta device:
    nothing is allocated; ``model``: one already built there, as the dry run has). Empty when the model cannot be
    built there (then the run itself reports why)."""
    try:
        if model is None:
            with torch.device("meta"):
                model = build_model(config.model)
    except Exception:  # e.g. a first-stage checkpoint that does not exist: the real build names it
        return {}
    train = config.train
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() for b in model.buffers())
    micro_batch = max(1, train.batch_size // (processes * train.accumulate))
    video = math.prod(model.video_shape)  # (C, T, H, W): every VideoModel declares it
    floor = {
        "weights": FLOAT_BYTES * (params + buffers),
        "gradients": FLOAT_BYTES * trainable,
        "optimiser state": FLOAT_BYTES * OPTIMIZER_MOMENTS[train.optimizer] * trainable,
        "clips in and out": 2 * FLOAT_BYTES * micro_batch * video,
    }
    return {k: v for k, v in floor.items() if v}


def check_training_memory(config: RunConfig, processes: int = 1, model=None) -> str:
    """Raise :class:`TrainingError` when the floor of :func:`training_memory_floor` exceeds the room there is
    (:func:`kinema.system.memory_room`); else a one-line summary for ``--dry-run``."""
    floor = training_memory_floor(config, processes, model)
    if not floor:
        return "memory: not estimated (the model could not be built on the meta device)"
    need = sum(floor.values())
    parts = ", ".join(f"{name} {format_bytes(n)}" for name, n in sorted(floor.items(), key=lambda kv: -kv[1]))
    room, what = memory_room()
    if room is not None and need > room:
        train = config.train
        fix = (f"lower train.batch_size (now {train.batch_size}) or raise train.accumulate (now {train.accumulate})"
               if floor.get("clips in and out", 0) * 2 > need else
               "make the model smaller (fewer or narrower layers; the model section of the config)")
        raise TrainingError(
            f"this run needs at least {format_bytes(need)} per process before any activation ({parts}), but only "
            f"{format_bytes(room)} is free ({what}): {fix}")
    room_text = f"; {format_bytes(room)} free ({what})" if room is not None else ""
    return f"memory: at least {format_bytes(need)} per process before activations ({parts}){room_text}"
