"""kinema: train, sample and evaluate video generative models.

Entry points: ``kinema.load(run_dir)`` -> ``(model, config)``, ``kinema.api.train / sample / info``,
and the ``kinema`` command line (``kinema --help``).
"""

from kinema.version import __version__

__all__ = ["__version__", "load"]


def load(path, device: str = "cpu", ema: bool = True):
    """The model of a run directory's latest checkpoint (or of one checkpoint), in eval mode."""
    from kinema.api import load as _load

    return _load(path, device=device, ema=ema)
