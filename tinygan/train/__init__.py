"""Running a trainer: the shared loop, run folders, checkpoints, CSV logs and curves, image grids.

:func:`fit` drives any trainer with a ``step(batch) -> metrics`` (the papers'
in :mod:`tinygan.gan`, or a user's own) through epochs, logging,
checkpoints and resume; everything it writes goes through the one atomic
writer, :func:`tinygan.files.atomic_write`.
"""
from .errors import RunFolderError, RunInterrupted, TrainingError
from .checkpoint import CheckpointError, flatten_state, load_checkpoint, save_checkpoint, unflatten_state
from .loop import LoopConfig, batch_order, fit, grid_hook
from .watch import BEST, CollapseWatch

__all__ = ["LoopConfig", "TrainingError", "RunFolderError", "RunInterrupted", "fit", "grid_hook", "batch_order",
           "CheckpointError", "save_checkpoint", "load_checkpoint", "flatten_state", "unflatten_state",
           "CollapseWatch", "BEST"]
