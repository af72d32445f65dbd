"""Data sets for tinygan: MNIST, face images (LFW), the toy 2D mixtures.

Everything here runs on the host with NumPy and returns ``uint8`` or
``float32`` arrays; moving them to the device is the training loop's job.

* :func:`load_mnist` - the original IDX files, downloaded or from a folder.
* :func:`load_faces` - LFW deep-funneled or any folder/archive of photos,
  grayscale excluded, centre-cropped and resized, cached as ``.npy``.
* :data:`MIXTURES`, :func:`sample_mixture` - the ring and grid mixtures.
* :func:`hflip`, :func:`flip_mask` - horizontal-flip augmentation drawn from (seed, epoch).
* :func:`fingerprint` - a short hash of arrays, for checkpoints to record
  what the data was.
* :func:`fetch`, :class:`Source`, :func:`download`, :func:`safe_extract`,
  :func:`md5sum`, :func:`sha256sum`, :func:`default_cache_dir`,
  :func:`cache_lock` - the plumbing, usable on their own.

Data problems raise :class:`DataError` (downloads: :class:`DownloadError`);
notes that are not errors are :class:`DataWarning` (one line each).
"""

from .archive import safe_extract
from .augment import flip_mask, hflip
from .cache import cache_lock
from .download import Fetched, Source, default_cache_dir, download, fetch, md5sum, sha256sum
from .errors import DataError, DataWarning, DownloadError
from .faces import DEFAULT_CROP, FaceStats, load_faces
from .fingerprint import fingerprint
from .mnist import read_idx, load_mnist
from .toy import MIXTURES, Mixture, sample_mixture

__all__ = [
    "DataError", "flip_mask", "hflip",
    "DataWarning",
    "DownloadError",
    "default_cache_dir",
    "download",
    "fetch",
    "Fetched",
    "Source",
    "cache_lock",
    "fingerprint",
    "md5sum",
    "sha256sum",
    "safe_extract",
    "read_idx",
    "load_mnist",
    "load_faces",
    "FaceStats",
    "DEFAULT_CROP",
    "Mixture",
    "MIXTURES",
    "sample_mixture",
]
