"""Training: the shared loop and the papers' trainers."""
from .loop import LoopConfig, TrainingError, fit, grid_hook, batch_order, flatten_state, unflatten_state
from .began import BEGANTrainer, LRStallSchedule
from .gan import GANTrainer

__all__ = ["LoopConfig", "TrainingError", "fit", "grid_hook", "batch_order", "flatten_state", "unflatten_state",
           "BEGANTrainer", "LRStallSchedule", "GANTrainer"]
