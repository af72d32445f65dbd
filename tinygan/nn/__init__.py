"""Layers and models, with torch.nn's names, arguments and default initialisations.

* :mod:`.module`: ``Parameter``, ``Module``, ``Sequential``, ``ModuleList``, ``ModuleDict``;
* :mod:`.layers`: ``Linear``, ``Conv2d``, ``ConvTranspose2d``, ``Upsample``, batch norm,
  ``Embedding``, ``Dropout``, the activations, ``Flatten``, ``Unflatten``, ``Identity``,
  ``MinibatchDiscrimination``;
* :mod:`.init`: the initialisers (``nn.init.normal_``, ..., ``nn.init.dcgan_``);
* :mod:`.input_grad`: ``input_gradient``, d output / d input of a piecewise-linear network
  as a graph in its weights (R1's penalty);
* :mod:`.utils`: ``clip_grad_norm_`` (also as ``nn.utils.clip_grad_norm_``), ``frozen``, ``evaluating``.
"""
from . import init, utils
from .module import Module, ModuleDict, ModuleList, Parameter, Sequential, StateDictError, check_state_matches
from .layers import (ELU, BatchNorm1d, BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, Embedding, Flatten, Identity,
                     LeakyReLU, Linear, MinibatchDiscrimination, ReLU, Sigmoid, Tanh, Unflatten, Upsample)
from .input_grad import input_gradient
from .utils import clip_grad_norm_, evaluating, frozen, update_bn

__all__ = ["Parameter", "Module", "Sequential", "ModuleList", "ModuleDict", "Linear", "Conv2d", "ConvTranspose2d",
           "Upsample", "BatchNorm1d", "BatchNorm2d", "Embedding", "Dropout", "ReLU", "LeakyReLU", "ELU",
           "Sigmoid", "Tanh", "Flatten", "Unflatten", "Identity", "MinibatchDiscrimination", "init", "utils",
           "clip_grad_norm_", "frozen", "evaluating", "update_bn", "input_gradient", "StateDictError", "check_state_matches"]
