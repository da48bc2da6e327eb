"""Progress inside one long call: the denoising steps of a diffusion batch, the token positions of an
autoregressive batch. The caller that owns the outer bar (``sample_in_batches``) switches it on with
:func:`inner_progress`; model code wraps its loop in :func:`steps` and stays silent otherwise (training
previews, tests, library use)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar("kinema_inner_progress", default=False)


@contextmanager
def inner_progress(enabled: bool) -> Iterator[None]:
    token = _enabled.set(enabled)
    try:
        yield
    finally:
        _enabled.reset(token)


def steps(iterable: Iterable, total: int, desc: str) -> Iterable:
    """``iterable`` with a transient bar under the batch bar when inner progress is on."""
    if not _enabled.get():
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, position=1, mininterval=0.5)
