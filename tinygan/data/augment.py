"""Data augmentation on the host: horizontal flips for face GANs, drawn from (seed, epoch).

Face GANs train on mirrored faces as well (a face and its mirror image are equally likely
faces, and the data set seems twice as large to the discriminator). Each example's flip in an
epoch is a coin drawn from ``(seed, epoch)`` for all examples at once and looked up by the
example's index, so it does not depend on the batch size, on the number of processes that
share a batch, or on where a run was resumed: a resumed run flips exactly what a straight run
would have.
"""
from __future__ import annotations

import numpy as np

#: a third key of the flip's generator, so its coins are not the data order's (seed, epoch) stream
_FLIP_STREAM = 0x666C6970  # "flip"


def flip_mask(seed: int, epoch: int, n: int) -> np.ndarray:
    """Which of ``n`` examples are mirrored in ``epoch`` (boolean, about half): a function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch, _FLIP_STREAM]).random(n) < 0.5


def hflip(seed: int, n: int):
    """The augmentation ``fit(..., augment=hflip(seed, len(images)))`` takes: ``augment(epoch, idx,
    batch)`` mirrors (left to right) the NCHW images whose example indices ``idx`` drew a flip."""
    masks = {}

    def augment(epoch, idx, batch):
        if epoch not in masks:
            masks.clear()  # one epoch at a time
            masks[epoch] = flip_mask(seed, epoch, n)
        flip = masks[epoch][idx]
        if not flip.any():
            return batch
        images = batch[0].copy()  # the data set itself stays as it is
        images[flip] = images[flip][..., ::-1]
        return (images,) + tuple(batch[1:])
    return augment
