"""The ImageNet family (``paper`` profiles only; none of it is in the offline mirror).

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

Decoded tensors are cached in the data root's ``cache/`` (``torch.load(..., weights_only=True)``),
keyed by the archives' MD5s or, for an extracted folder, by its files' names, sizes and
modification times. The readers read this module's constants when they run.
:data:`IMAGENET_SPECS` names these datasets for the registry.
"""
from __future__ import annotations

import io
import os
import re
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from paramstress.engine.data.images import ImageData, image_data
from paramstress.engine.data.sources import (
    ChecksumMismatch, DataNotFound, Spec, combined_checksum, data_root, md5_bytes, md5_file,
)
from paramstress.engine.storage import atomic_save


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
    return image_data(spec, tx, ty, vx, vy, wnids, files)


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
    return image_data(spec, tx[train_idx], ty[train_idx], tx[test_idx], ty[test_idx], wnids, files)


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


IMAGENET_SPECS: dict[str, Spec] = {
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
