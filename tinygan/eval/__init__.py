"""Judging samples without a pretrained network: mode metrics, Fréchet distance, sliced Wasserstein, the MNIST judge.

An application of the library rather than part of its core: the metrics are
host functions on arrays (:mod:`.metrics`; the sliced Wasserstein distance of
Laplacian-pyramid patches in :mod:`.swd`, on the device), and the MNIST judge
(:mod:`.mnist_judge`) is a small classifier trained with tinygan itself.
"""
