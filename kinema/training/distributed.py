"""Data-parallel training under ``torchrun``: process group, device per rank, data order per rank.

One code path: without ``torchrun`` (no ``WORLD_SIZE`` in the environment) a run is one process
and nothing here talks to other processes. Under ``torchrun --nproc_per_node N`` every process
initialises the default group from torchrun's environment (``env://``), takes the GPU of its
``LOCAL_RANK`` (NCCL) or stays on the CPU (gloo), and trains on its slice of each global batch.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from kinema.dist import barrier, broadcast_module_  # noqa: F401  (re-exported for the trainer)
from kinema.nn.batch import BatchRows
from kinema.training.loop_utils import resolve_device

BACKENDS = ("auto", "nccl", "gloo")


class DistributedSetupError(ValueError):
    """The process group cannot be set up as asked; the message says why and how to fix it."""


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place in the job: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs, TensorBoard and sample videos."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise DistributedSetupError(f"environment variable {name}={value!r} is not an integer") from exc


def setup(device: str = "auto", backend: str = "auto", timeout_minutes: float = 30) -> tuple[torch.device, ProcessInfo]:
    """Join the job torchrun started (if any) and pick this process's device.

    ``device``: ``auto`` (CUDA when available), ``cpu`` or ``cuda``; under torchrun a CUDA process
    uses ``cuda:LOCAL_RANK``. ``backend``: ``auto`` (NCCL on CUDA, gloo on CPU), ``nccl`` or ``gloo``.
    Returns ``(device, ProcessInfo)``; a process group that is already initialised is reused.
    """
    if backend not in BACKENDS:
        raise DistributedSetupError(f"--dist-backend {backend!r} is not one of {', '.join(BACKENDS)}")
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1 and not dist.is_initialized():
        return resolve_device(device), ProcessInfo()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if device.startswith("cuda") and ":" in device:
        raise DistributedSetupError(
            f"--device {device}: under torchrun each process takes the GPU of its LOCAL_RANK; pass --device cuda"
        )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise DistributedSetupError("--device cuda requested but CUDA is not available; use --device cpu (gloo)")
        if local_rank >= torch.cuda.device_count():
            raise DistributedSetupError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) visible: start at most "
                f"{torch.cuda.device_count()} processes per node (torchrun --nproc_per_node)"
            )
        torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
    else:
        torch_device = resolve_device(device)
    if backend == "auto":
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
    if backend == "nccl" and torch_device.type != "cuda":
        raise DistributedSetupError(
            "--dist-backend nccl needs CUDA devices, but this process runs on the CPU; use --dist-backend gloo "
            "(or auto) for CPU training, or --device cuda on a machine with GPUs"
        )
    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise DistributedSetupError(
                    f"WORLD_SIZE={world_size} is set but {name} is not: start multi-process runs with torchrun "
                    "(it sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)"
                )
        timeout = datetime.timedelta(minutes=timeout_minutes)
        store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
        # torchrun's restarted workers reuse the agent's key-value store, which still holds the failed
        # round's keys; without a per-attempt prefix gloo connected to the dead workers' addresses
        # and failed or hung (seen in tests/training/test_distributed.py under CPU load).
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend, store=dist.PrefixStore(f"kinema/attempt_{attempt}", store),
                                rank=rank, world_size=world_size, timeout=timeout)
    info = ProcessInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())
    return torch_device, info


def teardown() -> None:
    """Leave the process group (if this module's caller joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_rows(global_batch: int, info: ProcessInfo, accumulate: int = 1) -> list[BatchRows]:
    """This process's rows of a global batch, split into ``accumulate`` micro-batches."""
    per_process = global_batch // info.world_size
    mine = BatchRows(info.rank * per_process, (info.rank + 1) * per_process, global_batch)
    return mine.split(accumulate)


class DrawSampler(torch.utils.data.Sampler[int]):
    """This process's share of an endless, seeded stream of draw ids (see :class:`kinema.data.Draws`).

    The global stream visits the dataset in epochs; epoch ``e`` is a permutation seeded by
    ``(seed, e)`` and draw id ``e * length + index``. Step ``s`` of the run consumes draws
    ``[s * B, (s + 1) * B)`` of the stream (``B`` the global batch) and rank ``r`` of ``W`` takes
    draws ``r * B/W`` to ``(r + 1) * B/W - 1`` of each step. The order is therefore a pure function
    of the seed and the samples consumed: a resumed run -- with any number of processes -- reads
    exactly what the uninterrupted run would have read.
    """

    def __init__(self, length: int, seed: int, global_batch: int, consumed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if length <= 0:
            raise ValueError("dataset is empty")
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} processes")
        self.length, self.seed, self.global_batch = length, seed, global_batch
        self.consumed, self.rank, self.world_size = consumed, rank, world_size

    def _stream(self) -> Iterator[int]:
        epoch, position = divmod(self.consumed, self.length)
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.length, generator=g)
            yield from (order[position:] + epoch * self.length).tolist()
            epoch, position = epoch + 1, 0

    def __iter__(self) -> Iterator[int]:
        share = self.global_batch // self.world_size
        lo, hi = self.rank * share, (self.rank + 1) * share
        for i, draw in enumerate(self._stream()):
            if lo <= i % self.global_batch < hi:
                yield draw

    def __len__(self) -> int:  # DataLoader asks; the stream itself is endless
        return 2**62
