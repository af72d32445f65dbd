"""The three papers: their losses, their networks and their training steps.

Read in this order: :mod:`.losses` (the value function, the non-saturating
loss, BEGAN's L_D, L_G, k_t and M_global), :mod:`.models` (MLP, DCGAN-style
and conditional G and D, the toy 2-D networks), :mod:`.began_models` (BEGAN's
encoder and decoder), :mod:`.trainer` (Algorithm 1 of the GAN paper, also for
the conditional GAN) and :mod:`.began` (the BEGAN step). A trainer's
``step(batch) -> metrics`` is all a training loop needs, the shared one
(:func:`tinygan.train.fit`) or a user's own.
"""
from . import losses
from .models import (ConditionalDCGANDiscriminator, ConditionalDCGANGenerator, ConditionalMLPDiscriminator,
                     ConditionalMLPGenerator, DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator,
                     ToyDiscriminator, ToyGenerator)
from .began_models import BEGANDecoder, BEGANDiscriminator, BEGANEncoder, began_scales
from .trainer import GANTrainer
from .began import BEGANTrainer

__all__ = ["losses", "MLPGenerator", "MLPDiscriminator", "DCGANGenerator", "DCGANDiscriminator",
           "ConditionalMLPGenerator", "ConditionalMLPDiscriminator", "ConditionalDCGANGenerator",
           "ConditionalDCGANDiscriminator", "ToyGenerator", "ToyDiscriminator", "BEGANDecoder", "BEGANEncoder",
           "BEGANDiscriminator", "began_scales", "GANTrainer", "BEGANTrainer"]
