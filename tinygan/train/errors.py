"""What can stop a run, as exceptions: the examples turn each into one line and an exit status."""


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN in a loss, a checkpoint or data set that does not fit the run)."""


class RunFolderError(TrainingError):
    """A run folder cannot be used as asked (it holds a run, it is a file, it holds no run)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C, after the loop saved a checkpoint and said where; nothing more needs saying."""
