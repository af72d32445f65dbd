"""The collapse watch: after every epoch, a quality and a diversity score of the generator's samples.

The most common complaint about GAN implementations is a run that looked fine and then, a day
later, draws two faces: mode collapse. The watch turns that into a line on the screen and a row
in the run folder, and keeps the best model so far where a later collapse cannot touch it:

* ``watch.csv`` gets one row per epoch: the quality score, the diversity score, whether this
  epoch is the best so far, and whether the diversity fell;
* when the diversity falls more than ``drop`` below the best seen in the run, a warning line says
  so (``warning: epoch 12: diversity (class entropy) fell to 1.41 from 2.29 at epoch 7 ...``);
* when the quality is the best so far, the epoch's checkpoint (just written by the training loop)
  is copied to ``best.npz`` beside ``checkpoint.npz``; ``--sample best`` draws from it.

The scores come from the example (the watch knows no data): MNIST, the judge's Frechet distance
and class entropy; faces, the sliced Wasserstein distance and the share of samples that are not
near-duplicates of another sample (:func:`tinygan.eval.metrics.near_duplicates`); toys, the
high-quality share and the modes captured. Everything the watch remembers is in watch.csv, so a
resumed run goes on comparing with the epochs before it.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

from ..files import atomic_write
from .rundir import CHECKPOINT
from .runlog import read_csv_log, write_epoch_row

WATCH = "watch.csv"
BEST = "best.npz"


class CollapseWatch:
    """Call it after each epoch with ``(epoch, out, quality, diversity)``; returns the row written.

    ``quality`` and ``diversity`` are host numbers; ``lower_is_better`` says which way quality
    improves (a distance: True); diversity is always better higher. ``drop`` is how far, in the
    diversity's own unit, it may fall below the run's best before the watch warns; with
    ``relative`` it is a fraction of the best (0.3: a fall of 30%).
    """

    def __init__(self, quality_name, diversity_name, drop, lower_is_better=True, relative=False, say=print):
        if not drop > 0 or (relative and not drop < 1):
            raise ValueError(f"CollapseWatch: drop must be > 0 (and < 1 when relative), got {drop!r}")
        self.quality_name, self.diversity_name = quality_name, diversity_name
        self.drop, self.lower_is_better, self.relative, self.say = drop, lower_is_better, relative, say

    def _history(self, out, epoch):
        path = Path(out) / WATCH
        if not path.exists():
            return []
        log = read_csv_log(path)
        keep = log["epoch"] < epoch  # a resumed run may redo an epoch: that row is replaced
        return [(int(e), q, d) for e, q, d in zip(log["epoch"][keep], log["quality"][keep], log["diversity"][keep])]

    def __call__(self, epoch, out, quality, diversity):
        history = [h for h in self._history(out, epoch) if math.isfinite(h[1])]
        sign = 1 if self.lower_is_better else -1
        best = min(history, key=lambda h: sign * h[1]) if history else None
        is_best = math.isfinite(quality) and (best is None or sign * quality < sign * best[1])
        scored = [h for h in history if math.isfinite(h[2])]  # an epoch left unscored (NaN) is no reference
        top = max(scored, key=lambda h: h[2]) if scored else None
        fell = top is not None and diversity < (top[2] * (1 - self.drop) if self.relative else top[2] - self.drop)
        if is_best and (Path(out) / CHECKPOINT).exists():
            with atomic_write(Path(out) / BEST) as fh, open(Path(out) / CHECKPOINT, "rb") as src:
                shutil.copyfileobj(src, fh)
        row = {"epoch": epoch, "quality": quality, "diversity": diversity,
               "best": int(is_best), "collapse_warning": int(fell)}
        write_epoch_row(Path(out) / WATCH, row)
        if fell:
            by = f"{self.drop:.0%} of it" if self.relative else f"{self.drop:g}"
            kept = best[1] if best else quality
            self.say(f"warning: epoch {epoch}: diversity ({self.diversity_name}) fell to {diversity:.4g} from "
                     f"{top[2]:.4g} at epoch {top[0]}, by more than {by}: the generator may be collapsing onto "
                     f"a few modes. The best model so far ({self.quality_name} {kept:.4g}) is kept in {Path(out) / BEST}")
        return row
