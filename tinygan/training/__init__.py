"""Training: the shared loop and the papers' trainers."""
from .errors import RunFolderError, RunInterrupted, TrainingError
from .loop import LoopConfig, fit, grid_hook, batch_order, flatten_state, unflatten_state
from .began import BEGANTrainer, LRStallSchedule
from .gan import GANTrainer

__all__ = ["LoopConfig", "TrainingError", "RunFolderError", "RunInterrupted", "fit", "grid_hook", "batch_order", "flatten_state", "unflatten_state",
           "BEGANTrainer", "LRStallSchedule", "GANTrainer"]
