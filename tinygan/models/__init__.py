"""Network architectures of the three papers."""
from .began import BEGANDecoder, BEGANEncoder, BEGANDiscriminator, began_scales

__all__ = ["BEGANDecoder", "BEGANEncoder", "BEGANDiscriminator", "began_scales"]
