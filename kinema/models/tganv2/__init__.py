"""TGANv2 ("Train Sparsely, Generate Densely", Saito et al., IJCV 2020); card: docs/models/tganv2.md."""

from kinema.models.tganv2.model import MultiLevelDiscriminator, TGANv2, TGANv2Config, TGANv2Generator, init_official_weights

__all__ = ["MultiLevelDiscriminator", "TGANv2", "TGANv2Config", "TGANv2Generator", "init_official_weights"]
