"""Video Diffusion Models (Ho et al. 2022); card: docs/models/vdm.md."""

from kinema.models.vdm.model import VDM, UNet3D, VDMConfig
from kinema.models.vdm.sampling import VDMSampler, extend, super_resolve

__all__ = ["VDM", "UNet3D", "VDMConfig", "VDMSampler", "extend", "super_resolve"]
