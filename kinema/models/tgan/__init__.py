"""TGAN / TGAN-ODE (Kanaa et al. 2021) with swappable temporal generators; card: docs/models/tgan_ode.md."""

from kinema.models.tgan.model import (
    TGAN,
    TGANConfig,
    TGANDiscriminator,
    TGANGenerator,
    TGANImageGenerator,
    init_reference_weights,
)

__all__ = ["TGAN", "TGANConfig", "TGANDiscriminator", "TGANGenerator", "TGANImageGenerator", "init_reference_weights"]
