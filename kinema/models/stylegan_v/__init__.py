"""StyleGAN-V (Skorokhodov et al., CVPR 2022); card: docs/models/stylegan_v.md."""

from kinema.models.stylegan_v.model import (
    StyleGANV,
    StyleGANVConfig,
    StyleGANVDiscriminator,
    StyleGANVGenerator,
)
from kinema.models.stylegan_v.sampling import StyleGANVSampler

__all__ = ["StyleGANV", "StyleGANVConfig", "StyleGANVDiscriminator", "StyleGANVGenerator", "StyleGANVSampler"]
