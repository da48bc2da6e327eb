"""Weight files of the metric networks: safetensors in, clear errors out; a safe reader for pickles.

Metric networks never download anything: the user converts published weights once
(``kinema convert i3d|c3d|inception SRC OUT.safetensors``) and points kinema at the result.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kinema.system import file_mode

NETWORK_KEY = "kinema_network"  # safetensors metadata: which network the file holds


class WeightsError(ValueError):
    """A weights file is missing, of another network, or does not match the architecture."""


def save_weights(state: dict[str, torch.Tensor], path: str | Path, network: str) -> Path:
    """Write a converted state dict with its network name in the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    save_file(tensors, str(path), metadata={NETWORK_KEY: network})
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
    if not path.is_file():
        raise WeightsError(f"{network} weights file {path} does not exist; convert the published weights with "
                           f"`kinema convert {network} SRC {path}`")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            stored = (f.metadata() or {}).get(NETWORK_KEY)
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for foreign files
        raise WeightsError(f"{path} is not a safetensors weights file ({exc}); convert it with "
                           f"`kinema convert {network} SRC OUT.safetensors`") from exc
    if stored is not None and stored != network:
        raise WeightsError(f"{path} holds {stored} weights, but {network} weights are needed")
    check_state_dict(module.state_dict(), state, f"{path} does not match the {network} network")
    module.load_state_dict(state)
    return module


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
