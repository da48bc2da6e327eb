"""What kinema does to the files it writes and reads: the mode a new file gets, and a file's digest.

The bottom floor (imports nothing of kinema): checkpoints, exports, converted weights and metric networks use it.
"""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MiB blocks: checkpoint manifests, metric weights, sources."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: 0666 less the process umask (safetensors
    creates its files 0600 whatever the umask; kinema's files follow the umask like every other tool's)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask
