"""Network architectures of the three papers."""
from .began import BEGANDecoder, BEGANEncoder, BEGANDiscriminator, began_scales
from .gan import (MLPGenerator, MLPDiscriminator, DCGANGenerator, DCGANDiscriminator,
                  ConditionalMLPGenerator, ConditionalMLPDiscriminator,
                  ConditionalDCGANGenerator, ConditionalDCGANDiscriminator,
                  ToyGenerator, ToyDiscriminator)

__all__ = ["BEGANDecoder", "BEGANEncoder", "BEGANDiscriminator", "began_scales",
           "MLPGenerator", "MLPDiscriminator", "DCGANGenerator", "DCGANDiscriminator",
           "ConditionalMLPGenerator", "ConditionalMLPDiscriminator",
           "ConditionalDCGANGenerator", "ConditionalDCGANDiscriminator",
           "ToyGenerator", "ToyDiscriminator"]
