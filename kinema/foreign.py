"""Reading other projects' checkpoint files without running their code.

The authors' checkpoints are pickles: a PyTorch Lightning ``.ckpt`` pickles an ``argparse.Namespace``,
StyleGAN-V's ``network-snapshot.pkl`` pickles whole modules *with their source code* (StyleGAN2-ADA's
``torch_utils.persistence``), DVG's ``model.pth`` pickles its ``nn.Module`` objects. Unpickling those the
ordinary way imports and runs whatever the file names -- so kinema never does.

:func:`load_foreign` rebuilds only data: tensors, numpy arrays, plain containers, and -- for the class
paths a converter allows by pattern -- an :class:`Inert` record (the class path, the constructor
arguments, the pickled state and items), never an instance of the class. Persistent StyleGAN2-ADA
objects become :class:`Inert` records whose embedded source is kept as text and never executed.
Anything else is refused with an :class:`UnsafePickleError` naming the global it met.
"""

from __future__ import annotations

import fnmatch
import io
from dataclasses import dataclass, field
import pickle
import re
import struct
import types
import zipfile
from pathlib import Path
from typing import Any, Iterable

import torch

from kinema.errors import CheckpointError


class UnsafePickleError(CheckpointError):
    """A pickle asked for a class or function outside the allow-list (it was not imported or called)."""


class Inert:
    """A foreign object rebuilt as data. ``class_path`` is ``module.Name`` of the class the file named;
    ``args`` the constructor arguments, ``state`` what ``__setstate__`` would have received, ``items`` /
    ``list`` what ``SETITEMS`` / ``APPENDS`` added (dict and list subclasses)."""

    class_path = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.state, obj.items, obj.list = args, None, {}, []
        return obj

    def __init__(self, *args, **kwargs):  # REDUCE calls the class: keep the arguments, run nothing
        pass

    def __setstate__(self, state) -> None:
        self.state = state

    def __setitem__(self, key, value) -> None:
        self.items[key] = value

    def append(self, value) -> None:
        self.list.append(value)

    def extend(self, values) -> None:
        self.list.extend(values)

    @property
    def attributes(self) -> dict:
        """The instance ``__dict__`` the object would have had (``state``, or its first part for
        ``(dict, slots)`` states); ``{}`` when the state is not a dict."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]
        return state if isinstance(state, dict) else {}

    def __repr__(self) -> str:
        return f"Inert({self.class_path})"


_INERT_CLASSES: dict[str, type[Inert]] = {}


def _inert_class(path: str) -> type[Inert]:
    if path not in _INERT_CLASSES:
        _INERT_CLASSES[path] = type(path.rsplit(".", 1)[-1], (Inert,), {"class_path": path})
    return _INERT_CLASSES[path]


def _persistent_object(meta: dict) -> Inert:
    """StyleGAN2-ADA ``torch_utils.persistence._reconstruct_persistent_obj``: the record keeps the class
    name, the module source (as text: never executed) and the instance state."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafePickleError(f"unexpected persistent-object record {type(meta).__name__}; expected "
                                "StyleGAN2-ADA's {'type': 'class', ...}")
    obj = _inert_class(f"persistence.{meta.get('class_name')}")()
    obj.state = meta.get("state")
    obj.source = meta.get("module_src", "")
    return obj


def _storage_from_bytes(data: bytes):
    """``torch.storage._load_from_bytes`` (how a plain pickle carries a tensor's storage) with PyTorch's
    own weights-only unpickler instead of the full one."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _reconstructor(cls, base, state):  # copyreg._reconstructor: protocol 0/1 objects
    if isinstance(cls, type) and issubclass(cls, Inert):
        obj = cls()
        obj.state = state
        return obj
    if base is object and state is None:
        return cls.__new__(cls)
    return base.__new__(cls, state) if base is not object else cls.__new__(cls)


_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}

# Globals rebuilt for real: data constructors that cannot run foreign code.
_SAFE: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "slice"): slice,
    ("builtins", "complex"): complex, ("builtins", "bytearray"): bytearray,
    ("__builtin__", "set"): set,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_object,
    # StyleGAN-V imports the persistence module as src.torch_utils.persistence (universome/stylegan-v layout)
    ("src.torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_object,
}
_NUMPY = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
          ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
          ("numpy._core.multiarray", "scalar")}
_NUMPY_DTYPE = ("numpy.dtypes",)  # numpy 2 pickles dtypes as numpy.dtypes.Float32DType etc.


def _make_unpickler(inert: tuple[str, ...], source: str) -> type[pickle.Unpickler]:
    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) in _SAFE:
                return _SAFE[(module, name)]
            if (module, name) in _NUMPY or module in _NUMPY_DTYPE:
                return super().find_class(module, name)
            if module == "torch" and name in _DTYPES:
                return getattr(torch, name)
            if module == "torch" and name.endswith("Storage"):  # legacy storage classes (data only)
                return getattr(torch, name)
            path = f"{module}.{name}"
            if any(fnmatch.fnmatchcase(path, pattern) for pattern in inert):
                return _inert_class(path)
            raise UnsafePickleError(
                f"{source} wants {path}, which is outside the allow-list of this converter; kinema never "
                "imports or runs code named in a checkpoint file. If this is a genuine checkpoint of the "
                "expected kind, its format has a class the converter does not know yet (please report it)")

    return RestrictedUnpickler


def load_failure(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in kinema's words (torch's own message
    advises ``weights_only=False``, i.e. running the file's code: never what a user should do here)."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it stores the Python object {found.group(1)}, not only tensors"
    if isinstance(exc, OSError):  # unreadable, not unparsable
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return first[:200]
    # Everything else is the unpickler failing on the bytes: torch's UnpicklingError, but a damaged stream
    # can also stop in an opcode (random bytes starting with b"e" raise IndexError: pop from empty list).
    return "not a tensor-only PyTorch file: a foreign or damaged pickle"


def load_tensor_file(path: str | Path, expected: str, error: type[Exception] = CheckpointError) -> dict:
    """A state dict of tensors from a ``.safetensors`` file or a tensor-only ``torch.save`` file (read with
    ``weights_only``: no code in the file runs). ``error`` (naming the file, what is wrong and ``expected``, the
    file that belongs here) for anything else."""
    import warnings

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            with warnings.catch_warnings():  # torch's pickle-protocol notes are noise here
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise several types for foreign or unsafe files
        raise error(f"cannot read {path} as a state dict of tensors ({load_failure(exc)}); expected {expected}. "
                    "kinema reads only tensors from weight files and never runs code stored in one") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise error(f"{path} is not a state dict of tensors; expected {expected}")
    return state


def load_foreign(path: str | Path, inert: Iterable[str] = ()) -> Any:
    """Load a pickle or a ``torch.save`` file (zip or legacy) as data only.

    ``inert`` lists ``fnmatch`` patterns of class paths (``"argparse.Namespace"``, ``"models.lstm.*"``)
    that become :class:`Inert` records; any other class or function is refused before it is imported.
    Raises :class:`CheckpointError` for a missing, truncated or damaged file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file")
    unpickler = _make_unpickler(tuple(inert), str(path))
    try:
        if zipfile.is_zipfile(path) or _is_legacy_torch(path):
            module = types.SimpleNamespace(Unpickler=unpickler, load=lambda f, **kw: unpickler(f, **kw).load(),
                                           __name__="kinema_restricted_pickle")
            return torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)
        with open(path, "rb") as f:
            return unpickler(f).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, zipfile.BadZipFile, KeyError,
            IndexError, TypeError, AttributeError, struct.error) as exc:
        raise CheckpointError(f"{path} is truncated or damaged, or not a pickle/torch checkpoint "
                              f"({type(exc).__name__}: {exc})") from None


def _is_legacy_torch(path: Path) -> bool:
    """The pre-1.6 ``torch.save`` format starts with a pickled magic number."""
    with open(path, "rb") as f:
        head = f.read(16)
    return head[:2] == b"\x80\x02" and b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19" in head


def tensors_in(tree: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten nested dicts of tensors into ``{'a.b.c': tensor}`` (what a state dict looks like)."""
    flat: dict[str, torch.Tensor] = {}
    if isinstance(tree, torch.Tensor):
        flat[prefix] = tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            flat.update(tensors_in(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def module_state_dict(module: Inert, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict`` a pickled ``nn.Module`` (rebuilt as :class:`Inert`) would return: its
    ``_parameters`` and persistent ``_buffers``, recursively through ``_modules``, with dotted names."""
    if not isinstance(module, Inert):
        raise CheckpointError(f"expected a pickled module, found {type(module).__name__}")
    attrs = module.attributes
    if "_parameters" not in attrs or "_modules" not in attrs:
        raise CheckpointError(f"{module.class_path} is not a pickled torch.nn.Module (no _parameters/_modules)")
    state: dict[str, torch.Tensor] = {}
    for name, value in attrs["_parameters"].items():
        if value is not None:
            state[prefix + name] = value.detach()
    skip = attrs.get("_non_persistent_buffers_set", set()) or set()
    for name, value in attrs.get("_buffers", {}).items():
        if value is not None and name not in skip:
            state[prefix + name] = value
    for name, child in attrs["_modules"].items():
        if child is not None:
            state.update(module_state_dict(child, f"{prefix}{name}."))
    return state


@dataclass
class Converted:
    """What a family's converter returns: kinema's model config dataclass for the foreign checkpoint,
    the weights as kinema names them, and what it read (written to ``converted.json``). The registry
    builds the model from ``model``, loads ``state`` strictly (every name and shape must match) and
    writes an ordinary checkpoint folder."""

    model: Any  # the model config dataclass (carries ``name``)
    state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)  # hyper-parameters read, the source format


@dataclass(frozen=True)
class ConvertOptions:
    """What ``kinema convert`` passes a family converter besides the source file: ``model`` is the model
    config of ``--config``/``--set`` (for formats that carry no hyper-parameters, e.g. Chainer ``.npz``;
    ``None`` when not given), ``first_stage`` a converted first-stage checkpoint (``--vqvae``)."""

    model: Any = None
    first_stage: Path | None = None
