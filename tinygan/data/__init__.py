"""Data sets for tinygan: MNIST, face images (LFW), the toy 2D mixtures.

Everything here runs on the host with NumPy and returns ``uint8`` or
``float32`` arrays; moving them to the device is the training loop's job.

* :func:`load_mnist` - the original IDX files, downloaded or from a folder.
* :func:`load_faces` - LFW deep-funneled or any folder/archive of photos,
  grayscale excluded, centre-cropped and resized, cached as ``.npy``.
* :data:`MIXTURES`, :func:`sample_mixture` - the ring and grid mixtures.
* :func:`download`, :func:`safe_extract`, :func:`md5sum`,
  :func:`default_cache_dir` - the plumbing, usable on their own.

Data problems raise :class:`DataError` (downloads: :class:`DownloadError`).
"""

from .archive import safe_extract
from .download import default_cache_dir, download, md5sum
from .errors import DataError, DownloadError
from .faces import DEFAULT_CROP, FaceStats, load_faces
from .mnist import read_idx, load_mnist
from .toy import MIXTURES, Mixture, sample_mixture

__all__ = [
    "DataError",
    "DownloadError",
    "default_cache_dir",
    "download",
    "md5sum",
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
