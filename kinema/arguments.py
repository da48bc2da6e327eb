"""Argument checks for the Python API: a wrong type or value is refused at the call, naming the argument.

Without them a mistake surfaced far from its cause or not at all: ``kinema.load(path, ema="no")`` meant
``ema=True`` (a non-empty string is truthy), ``train(..., resume="yes")`` a hard resume, and a string where a
list belongs was read one character at a time ("unknown metric 'f'"). :func:`checked` reads the function's own
annotations, so the documented signature is the rule; this module imports nothing of kinema (bottom floor).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

INT64_MAX = 2**63 - 1
# Values an argument of this name must lie in (inclusive; None: unbounded). Seeds are offset per batch and
# passed to torch.Generator, which takes 64-bit integers.
RANGES: dict[str, tuple[int | None, int | None]] = {
    "seed": (0, 2**62), "num": (1, None), "batch_size": (1, None), "workers": (0, None), "min_frames": (1, None),
    "steps": (1, None),
}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(t) for t in typing.get_args(tp))
    if origin is Literal:
        return " or ".join(repr(v) for v in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if origin is tuple and len(args) > 1 and args[1] is not Ellipsis:
            return f"a pair of {_describe(args[0])}" if len(args) == 2 else f"a tuple of {len(args)}"
        return f"a list of {_describe(args[0])}" if args else "a list"
    if tp is type(None):
        return "None"
    if tp is Path:
        return "a path"
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, t) for t in typing.get_args(tp))
    if origin is Literal:
        return any(value == v and type(value) is type(v) for v in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is Path:
        return isinstance(value, os.PathLike)
    if origin in (list, tuple):  # a list or a tuple either way; never a string (it would be read char by char)
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(tp)
        if origin is tuple and len(args) > 1 and args[1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, t) for v, t in zip(value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # an annotation this checker does not know: not checked


def checked(func):
    """Check each argument of ``func`` against its annotation (and :data:`RANGES`) before the call.

    A wrong type raises ``TypeError`` and a value out of range ``ValueError``, each naming the function, the
    argument, what it takes and what it got. ``device`` also takes a ``torch.device``; unannotated arguments and
    ``**options`` are the function's own business."""
    signature = inspect.signature(func)
    hints: dict[str, Any] = {}

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if not hints:  # resolved at the first call: the module's names all exist by then
            hints.update(typing.get_type_hints(func))
            hints.pop("return", None)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{func.__name__}(): {exc}") from None
        for name, value in list(bound.arguments.items()):
            if name not in hints or signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                continue
            if name == "device" and type(value).__name__ == "device":  # a torch.device
                continue
            if _is_numpy_integer(value) and _matches(0, hints[name]):  # np.int64(3) is the integer 3
                value = bound.arguments[name] = int(value)
            if isinstance(value, str) and not value.strip() and _matches(Path(), hints[name]):
                # pathlib reads "" as the current folder: an empty path would silently mean "here"
                raise ValueError(f"{func.__name__}(): {name} is an empty string; give a path")
            if not _matches(value, hints[name]):
                shown = f"the string {value!r}" if isinstance(value, str) else f"{value!r} ({type(value).__name__})"
                raise TypeError(f"{func.__name__}(): {name} must be {_describe(hints[name])}, got {shown}")
            low, high = RANGES.get(name, (None, None))
            if isinstance(value, int) and not isinstance(value, bool):
                high = INT64_MAX if high is None else high
                if (low is not None and value < low) or value > high:
                    raise ValueError(f"{func.__name__}(): {name} must be in [{low if low is not None else '-inf'}, "
                                     f"{high:,}], got {value:,}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{func.__name__}(): {name} must be a finite number, got {value!r}")
        return func(*bound.args, **bound.kwargs)

    return wrapper


def _is_numpy_integer(value: Any) -> bool:
    """A NumPy integer scalar (``np.int64(3)``; not a bool): what indexing and ``np.arange`` hand out."""
    return type(value).__module__ == "numpy" and isinstance(value, numbers.Integral) and not isinstance(value, bool)
