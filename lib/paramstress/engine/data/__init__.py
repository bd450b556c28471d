"""Named datasets, found in the data root, an offline mirror, or downloaded.

Every dataset is held as whole tensors (``uint8`` images ``N×C×H×W`` and ``int64``
labels), so that it can be moved to the device once and batched by indexing, with
no DataLoader in the hot loops. What the provenance of a notebook needs (where the
files came from and their checksum) travels with the tensors.

``paramstress.engine.data`` (also importable as ``paramstress.data``) is the one name to
import; it re-exports the public names of its modules, which read downwards:

* :mod:`~paramstress.engine.data.sources`: the errors, the data root / mirror / offline
  environment, MD5 checksums, :class:`Spec` and verified reading of a listed file;
* :mod:`~paramstress.engine.data.images`: :class:`ImageData`, the normalisation statistics
  (:func:`channel_stats`) and the MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-10 JPEG readers;
* :mod:`~paramstress.engine.data.imagenet`: Tiny ImageNet (official split and the 80/20
  split of Pravin et al. 2023) and the ILSVRC2012 validation set;
* :mod:`~paramstress.engine.data.text`: :class:`TextFiles` and the text corpora;
* :mod:`~paramstress.engine.data.registry`: :data:`SPECS` (every named dataset),
  :func:`locate` (data root, then mirror, then download), :func:`verify` and :func:`load`.

A reader reads its module's constants when it runs (``TINY_IMAGENET_MD5``, ...): to
change one, set it on the module that defines it, not on this package.
"""
from paramstress.engine.data.images import (
    CIFAR10_CLASSES, CIFAR10_JPEG_ARCHIVE, CIFAR10_JPEG_MD5, FASHION_CLASSES, IMAGE_SPECS, MNIST_CLASSES, ImageData,
    channel_stats, decode_image_folder_archive, image_data, parse_idx,
)
from paramstress.engine.data.imagenet import (
    IMAGENET_CROP, IMAGENET_DEVKIT, IMAGENET_FOLDER, IMAGENET_MEAN, IMAGENET_RESIZE, IMAGENET_SPECS, IMAGENET_STD,
    IMAGENET_VAL_LAYOUT, IMAGENET_VAL_SIZES, IMAGENET_VAL_TAR, TINY_IMAGENET_FOLDER, TINY_IMAGENET_MD5,
    TINY_IMAGENET_PAPER_SPLIT_SEED, TINY_IMAGENET_PAPER_TEST_FRACTION, TINY_IMAGENET_SIZES, TINY_IMAGENET_URL,
    TINY_IMAGENET_ZIP, decode_tiny_imagenet, per_class_split,
)
from paramstress.engine.data.registry import SPECS, available, get_spec, load, locate, verify
from paramstress.engine.data.sources import (
    MIRROR_ENV, OFFLINE_ENV, ROOT_ENV, ChecksumMismatch, DataError, DataNotFound, Spec, UnknownDataset,
    combined_checksum, data_root, find_listed, md5_bytes, md5_file, mirror_root, offline, read_listed, verified_md5,
)
from paramstress.engine.data.text import (
    IWSLT14_LAYOUT, MULTI30K_LANGUAGES, MULTI30K_SPLITS, PTB_CONLL_LAYOUT, TEXT_SPECS, TextFiles,
)

__all__ = [
    # sources
    "DataError", "UnknownDataset", "DataNotFound", "ChecksumMismatch", "MIRROR_ENV", "ROOT_ENV", "OFFLINE_ENV",
    "data_root", "mirror_root", "offline", "md5_bytes", "md5_file", "combined_checksum", "Spec", "find_listed",
    "read_listed", "verified_md5",
    # images
    "ImageData", "channel_stats", "image_data", "parse_idx", "decode_image_folder_archive", "MNIST_CLASSES",
    "FASHION_CLASSES", "CIFAR10_CLASSES", "CIFAR10_JPEG_ARCHIVE", "CIFAR10_JPEG_MD5", "IMAGE_SPECS",
    # imagenet
    "TINY_IMAGENET_URL", "TINY_IMAGENET_ZIP", "TINY_IMAGENET_FOLDER", "TINY_IMAGENET_MD5", "TINY_IMAGENET_SIZES",
    "TINY_IMAGENET_PAPER_TEST_FRACTION", "TINY_IMAGENET_PAPER_SPLIT_SEED", "decode_tiny_imagenet", "per_class_split",
    "IMAGENET_FOLDER", "IMAGENET_VAL_TAR", "IMAGENET_DEVKIT", "IMAGENET_VAL_SIZES", "IMAGENET_RESIZE", "IMAGENET_CROP",
    "IMAGENET_MEAN", "IMAGENET_STD", "IMAGENET_VAL_LAYOUT", "IMAGENET_SPECS",
    # text
    "TextFiles", "MULTI30K_SPLITS", "MULTI30K_LANGUAGES", "IWSLT14_LAYOUT", "PTB_CONLL_LAYOUT", "TEXT_SPECS",
    # registry
    "SPECS", "get_spec", "locate", "verify", "load", "available",
]
