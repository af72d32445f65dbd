"""tinygan: GANs from first principles on NumPy or CuPy.

    import tinygan as tg
    from tinygan import nn, functional as F, optim

    tg.backend.use("numpy")      # or "cupy"
    x = tg.tensor(batch)         # NCHW, float32
"""
from . import backend
from .tensor import Tensor, tensor, no_grad, is_grad_enabled
from . import functional
from .functional import concat, cat, stack
from . import nn, optim
from .gradcheck import gradcheck, gradcheck_directional, GradcheckError

__version__ = "0.1.0"

__all__ = ["backend", "Tensor", "tensor", "no_grad", "is_grad_enabled", "functional", "nn", "optim",
           "concat", "cat", "stack", "gradcheck", "gradcheck_directional", "GradcheckError"]
