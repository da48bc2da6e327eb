"""kinema: train, sample and evaluate video generative models.

Entry points: ``kinema.load(run_dir)`` and ``kinema.from_pretrained(folder_or_hub_id)`` -> ``(model, config)``,
``kinema.api.train / sample / export / info``, and the ``kinema`` command line (``kinema --help``).
"""

from kinema.version import __version__

__all__ = ["__version__", "from_pretrained", "load"]


def load(path, device: str = "cpu", ema: bool = True):
    """The model of a run directory's latest checkpoint (or of one checkpoint), in eval mode."""
    from kinema.api import load as _load

    return _load(path, device=device, ema=ema)


def from_pretrained(name_or_path, device: str = "cpu", revision: str | None = None, cache_dir=None, ema: bool = True):
    """``(model, config)`` from a ``kinema export`` folder, a run or checkpoint folder, or a Hugging Face Hub
    repository id (``pip install 'kinema[hub]'``; its cache and ``HF_HUB_OFFLINE`` are honoured)."""
    from kinema.api import from_pretrained as _from_pretrained

    return _from_pretrained(name_or_path, device=device, revision=revision, cache_dir=cache_dir, ema=ema)
