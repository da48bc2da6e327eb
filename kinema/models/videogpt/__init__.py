"""VideoGPT (Yan et al. 2021): a 3-D VQ-VAE and an autoregressive prior over its codes; card: docs/models/videogpt.md."""

from kinema.models.videogpt.prior import VideoGPTPrior, VideoGPTPriorConfig
from kinema.models.videogpt.sampling import PriorSampler
from kinema.models.videogpt.vqvae import Codebook, VideoGPTVQVAE, VideoGPTVQVAEConfig

__all__ = ["Codebook", "PriorSampler", "VideoGPTPrior", "VideoGPTPriorConfig", "VideoGPTVQVAE", "VideoGPTVQVAEConfig"]
