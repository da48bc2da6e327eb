"""NÜWA (Wu et al. 2021, arXiv 2111.12417): per-frame VQ-GAN tokens + 3DNA encoder-decoder; card: docs/models/nuwa.md."""

from kinema.models.nuwa.model import NUWA, NUWAConfig
from kinema.models.nuwa.sampling import NUWASampler
from kinema.models.nuwa.vqgan import NUWAVQGAN, NUWAVQGANConfig

__all__ = ["NUWA", "NUWAConfig", "NUWASampler", "NUWAVQGAN", "NUWAVQGANConfig"]
