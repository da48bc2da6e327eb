"""What the machine has: memory available to new allocations, the disk that holds a path and its free
space. The bottom floor (imports nothing of kinema): data preparation, checkpoint writing, sampling and
evaluation all check against it before they start work that would not fit."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kinema.errors import TrainingError


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def memory_room() -> tuple[int | None, str]:
    """(bytes a new allocation can still get, what bounds it): the memory available now, or the process's
    address-space limit (``ulimit -v``, as clusters set it) less what the process already maps, whichever is
    smaller. ``(None, "")`` when neither is known. Past either, allocations fail -- some of them in native code
    that answers with a segmentation fault instead of an error, hence checking before allocating."""
    room, what = available_memory(), "memory available"
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/status") as f:
                mapped = next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:")), 0)
            headroom = max(0, soft - mapped)
            if room is None or headroom < room:
                room, what = headroom, f"address space left under this process's limit, ulimit -v {soft // 1024}"
    except (ImportError, OSError, ValueError):
        pass
    return room, what


def filesystem_of(path: Path) -> str:
    """The mount point holding ``path`` (its nearest existing ancestor): the disk to name in errors."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return str(path)


def free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem holding ``path`` (its nearest existing ancestor), None when unknown."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def format_bytes(n: float) -> str:
    """``n`` bytes in words for messages: ``"512 bytes"``, ``"1.5 GiB"`` (TiB at most)."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_disk_space(out: Path, need: int) -> None:
    """Refuse to start a run whose first checkpoint (``need`` bytes) clearly cannot fit in ``out`` (every rank
    checks the same shared filesystem, so all stop together)."""
    free = free_bytes(out)
    if free is not None and free < need:
        raise TrainingError(
            f"not enough disk space for a checkpoint: {out} is on {filesystem_of(out)} with "
            f"{format_bytes(free)} free, one checkpoint needs about {format_bytes(need)} ({need:,} bytes); "
            "nothing was written -- free some space or choose another --out")
