"""Named datasets, found in the data root, an offline mirror, or downloaded (the package's
public names; the readers live in its modules)."""
from paramstress.engine.data.imagenet import (  # noqa: F401
    CIFAR10_CLASSES, CIFAR10_JPEG_ARCHIVE, CIFAR10_JPEG_MD5, ChecksumMismatch, DataError, DataNotFound,
    FASHION_CLASSES, IMAGENET_CROP, IMAGENET_DEVKIT, IMAGENET_FOLDER, IMAGENET_MEAN, IMAGENET_RESIZE,
    IMAGENET_STD, IMAGENET_VAL_LAYOUT, IMAGENET_VAL_SIZES, IMAGENET_VAL_TAR, IWSLT14_LAYOUT, ImageData,
    MIRROR_ENV, MNIST_CLASSES, MULTI30K_LANGUAGES, MULTI30K_SPLITS, OFFLINE_ENV, PTB_CONLL_LAYOUT,
    ROOT_ENV, SPECS, Spec, TEXT_SPECS, TINY_IMAGENET_FOLDER, TINY_IMAGENET_MD5,
    TINY_IMAGENET_PAPER_SPLIT_SEED, TINY_IMAGENET_PAPER_TEST_FRACTION, TINY_IMAGENET_SIZES, TINY_IMAGENET_URL, TINY_IMAGENET_ZIP, TextFiles,
    UnknownDataset, available, channel_stats, combined_checksum, data_root, decode_image_folder_archive,
    decode_tiny_imagenet, get_spec, load, locate, md5_bytes, md5_file,
    mirror_root, offline, parse_idx, per_class_split, verify,
)
