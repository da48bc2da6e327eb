"""DVG (Shrivastava & Shrivastava, ICLR 2021): video prediction with a GP trigger; card: docs/models/dvg.md."""

from kinema.models.dvg.model import DVG, DVGConfig, window_trigger
from kinema.models.dvg.sampling import DVGSampler

__all__ = ["DVG", "DVGConfig", "DVGSampler", "window_trigger"]
