"""Small pieces the trainer is built from: device choice, torch's threads and flags, and EMA."""

from __future__ import annotations

import copy
import os

import torch
from torch import nn


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``; ``cuda`` / ``cuda:i`` (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name} requested but CUDA is not available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != "cpu":
        raise ValueError(f"--device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


class EMA:
    """Exponential moving average of a module's parameters; buffers are copied as they are."""

    def __init__(self, module: nn.Module, decay: float, warmup: bool = False,
                 initial: dict[str, torch.Tensor] | None = None) -> None:
        """``initial``: start the average from these weights (a fine-tuned checkpoint's EMA) instead of ``module``'s."""
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        if initial is not None:
            self.module.load_state_dict(initial)

    def decay_at(self, step: int) -> float:
        """The decay used for the update after optimiser step ``step`` (1-based). With ``warmup``:
        ``min(decay, (1 + step) / (10 + step))`` (as TF's ExponentialMovingAverage with num_updates),
        so e.g. 0.9999 does not keep the average near the initial weights for thousands of steps."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, module: nn.Module, step: int = 0) -> None:
        decay = self.decay_at(step)
        for ema_p, p in zip(self.module.parameters(), module.parameters()):
            ema_p.lerp_(p.detach(), 1 - decay)
        for ema_b, b in zip(self.module.buffers(), module.buffers()):
            ema_b.copy_(b)


def default_threads(cores: int, processes_per_node: int = 1, loader_workers: int = 0) -> int:
    """PyTorch threads for one training process when ``train.threads`` is 0 (automatic).

    The node's cores are split between its processes; DataLoader workers run one thread each (PyTorch
    sets that in every worker), so they are taken out of the process's share. Oversubscribed cores cost
    far more than idle ones: on 2 busy cores the default of one thread per core made steps 8x slower.
    """
    share = max(1, cores // max(1, processes_per_node))
    return max(1, share - max(0, loader_workers))


def configure_torch(train, device: torch.device, world_size: int = 1, loader_workers: int = 0) -> None:
    """Threads (``train.threads``, or :func:`default_threads` when several processes or DataLoader workers
    share a CPU node), ``train.deterministic`` and cuDNN autotuning, for one training process."""
    if train.threads:
        torch.set_num_threads(train.threads)
    elif device.type == "cpu" and (world_size > 1 or loader_workers > 0):
        # N processes on one node, and their DataLoader workers, share its cores
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        torch.set_num_threads(default_threads(os.cpu_count() or 1, per_node, loader_workers))
    if train.deterministic:
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes per level: autotuned kernels pay off
