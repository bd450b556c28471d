"""The data layer: source order, checksums, clear errors, tensors and provenance."""
import dataclasses
import gzip
import io as _io
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from paramstress import data
from paramstress.engine.data import imagenet  # the ImageNet readers read their constants here


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(data.UnknownDataset,
                       match="known: cifar10, cifar10-jpeg, fashion-mnist, imagenet-val, iwslt14-de-en, mnist, multi30k, "
                             "ptb-conll, ptb-dependency, ptb-mikolov, ptb-treebank, tiny-imagenet, tiny-imagenet-80-20"):
        data.load("mnistt")


def test_the_package_reexports_its_modules_public_names():
    """``paramstress.data`` (what published pages import) has every public name of its modules,
    the same objects; the old flat name is the package itself."""
    import types

    from paramstress.engine.data import images, registry, sources, text

    for module in (sources, images, imagenet, text, registry):
        for name, value in vars(module).items():
            if name.startswith("_") or name == "annotations" or isinstance(value, types.ModuleType):
                continue
            owner = getattr(value, "__module__", None) if callable(value) else module.__name__
            if owner and owner.startswith("paramstress.engine.data"):
                assert getattr(data, name, None) is value, f"paramstress.data lacks {module.__name__}.{name}"
    from paramstress.engine import data as engine_data

    assert data is engine_data and data.TEXT_SPECS.items() <= data.SPECS.items()


def test_missing_offline_names_files_and_variable(empty_root):
    with pytest.raises(data.DataNotFound) as err:
        data.load("mnist")
    msg = str(err.value)
    assert "PARAMSTRESS_DATA_MIRROR" in msg
    assert str(empty_root / "MNIST" / "raw" / "train-images-idx3-ubyte") in msg
    assert "downloads disabled" in msg


def test_mirror_that_does_not_exist_is_an_error(empty_root, monkeypatch, tmp_path):
    monkeypatch.setenv("PARAMSTRESS_DATA_MIRROR", str(tmp_path / "nope"))
    with pytest.raises(data.DataNotFound, match="not a directory"):
        data.load("mnist")


def test_parse_idx_roundtrip_and_rejects_bad_header():
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    blob = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    np.testing.assert_array_equal(data.parse_idx(blob), arr)
    with pytest.raises(ValueError):
        data.parse_idx(bytes([0, 0, 9, 1, 0, 0, 0, 1, 5]))
    with pytest.raises(ValueError, match="payload"):
        data.parse_idx(blob[:-1])


def test_mnist_from_mirror_full_and_verified(mirror, empty_root, monkeypatch):
    monkeypatch.setenv("PARAMSTRESS_DATA_MIRROR", str(mirror))
    d = data.load("mnist")
    assert d.train_x.shape == (60000, 1, 28, 28) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (10000, 1, 28, 28)
    assert d.train_y.dtype == torch.int64 and set(d.train_y.unique().tolist()) == set(range(10))
    assert d.source.startswith("mirror: ")
    assert d.files["train-images-idx3-ubyte"] == "6bbc9ace898e44ae57da46a324031adb"
    assert d.checksum == data.combined_checksum(d.files)
    assert abs(d.mean[0] - 0.1307) < 1e-3 and abs(d.std[0] - 0.3081) < 1e-3
    x = d.normalize(d.train_x[:512])
    assert abs(float(x.mean())) < 0.1


def test_data_root_is_preferred_over_mirror(mirror, empty_root, monkeypatch):
    target = empty_root / "FashionMNIST" / "raw"
    shutil.copytree(mirror / "FashionMNIST" / "raw", target)
    monkeypatch.setenv("PARAMSTRESS_DATA_MIRROR", str(mirror))
    d = data.load("fashion-mnist")
    assert d.source == f"root: {target}"
    assert d.provenance()["checksum"] == d.checksum
    # the notebook row is path-free (absolute paths differ between checkouts)
    row = d.summary()
    assert row["origin"] == "root" and str(target) not in repr(row)
    assert d.checksum.startswith(row["MD5"])


def test_corrupted_file_fails_with_the_fix(mirror, empty_root):
    target = empty_root / "MNIST" / "raw"
    shutil.copytree(mirror / "MNIST" / "raw", target)
    labels = target / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] ^= 1
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(data.ChecksumMismatch, match="delete it and load again"):
        data.load("mnist")


def test_download_is_staged_and_verified(mirror, empty_root, monkeypatch):
    """The download path (source 3): files arrive in the root only when all are there."""
    monkeypatch.setenv("PARAMSTRESS_OFFLINE", "0")
    spec = data.SPECS["mnist"]

    def fake_download(root):  # stands in for torchvision's fetch: same layout, real files
        shutil.copytree(mirror / "MNIST" / "raw", root / "MNIST" / "raw")

    monkeypatch.setitem(data.SPECS, "mnist", dataclasses.replace(spec, download=fake_download))
    d = data.load("mnist")
    assert d.source.startswith("download: ")
    assert len(d.train_y) == 60000

    def broken_download(root):
        (root / "FashionMNIST" / "raw").mkdir(parents=True)
        (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"partial")
        raise OSError("connection reset")

    spec_f = data.SPECS["fashion-mnist"]
    monkeypatch.setitem(data.SPECS, "fashion-mnist", dataclasses.replace(spec_f, download=broken_download))
    with pytest.raises(data.DataNotFound, match="connection reset"):
        data.load("fashion-mnist")
    assert not (empty_root / "FashionMNIST").exists()  # nothing partial left looking valid


def test_subset_and_to_device(mirror):
    d = data.load("mnist").subset(train=100, test=50, seed=3)
    assert len(d.train_y) == 100 and len(d.test_y) == 50
    again = data.load("mnist").subset(train=100, test=50, seed=3)
    assert torch.equal(d.train_x, again.train_x)
    assert d.to("cpu").device.type == "cpu"
    with pytest.raises(ValueError):
        d.subset(train=0)


@pytest.mark.slow
def test_cifar10_jpeg_from_mirror(mirror):
    d = data.load("cifar10-jpeg")
    assert d.train_x.shape == (50000, 3, 32, 32) and d.test_x.shape == (10000, 3, 32, 32)
    assert d.train_y.bincount().tolist() == [5000] * 10
    assert d.classes[0] == "airplane" and d.classes[-1] == "truck"
    assert d.files == {"cifar10-jpeg.tar.gz": "67664af876dd64ad10750410502e5f72"}


def test_cifar10_jpeg_verify_checks_the_archive_as_stored(mirror, tmp_path, monkeypatch):
    # the runner's preflight: the README's MD5 is that of the .tar.gz itself
    root = tmp_path / "root"
    monkeypatch.setenv("PARAMSTRESS_DATA", str(root))
    monkeypatch.setenv("PARAMSTRESS_OFFLINE", "1")
    assert data.verify("cifar10-jpeg") == f"mirror: {mirror.resolve()}"
    bad = root / "cifar10-jpeg.tar.gz"  # the data root is tried before the mirror
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes((mirror / "cifar10-jpeg.tar.gz").read_bytes()[:-1])  # truncated
    with pytest.raises(data.ChecksumMismatch, match="expected 67664af876dd64ad10750410502e5f72"):
        data.verify("cifar10-jpeg")


def test_cifar10_official_missing_offline_names_the_batches(empty_root):
    with pytest.raises(data.DataNotFound, match="cifar-10-batches-py/data_batch_1"):
        data.load("cifar10")


# ----------------------------------------------------------------------------- ImageNet family (stand-in archives)
TINY_WNIDS = ["n03000000", "n01000000", "n02000000"]  # wnids.txt order is not the class order


def _image_bytes(arr: np.ndarray) -> bytes:
    """PNG bytes (lossless, so decoded pixels are exact) under a .JPEG name, as PIL sniffs content."""
    from PIL import Image

    out = _io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


def _pixels(seed: int, h: int, w: int, gray: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w) if gray else (h, w, 3), dtype=np.uint8)


def _tiny_standin(folder) -> tuple[dict, dict]:
    """A 3-class Tiny ImageNet: 2 train images per class (one grayscale), 4 val images; returns the
    expected (label, pixels) of each train and val file."""
    top = "tiny-imagenet-200"
    entries, train, val = {}, {}, {}
    entries[f"{top}/wnids.txt"] = ("\n".join(TINY_WNIDS) + "\n").encode()
    entries[f"{top}/words.txt"] = b"n01000000\tfirst\n"
    for k, wnid in enumerate(TINY_WNIDS):
        entries[f"{top}/train/{wnid}/{wnid}_boxes.txt"] = b"ignored"
        for i in range(2):
            arr = _pixels(10 * k + i, 64, 64, gray=(i == 1))
            entries[f"{top}/train/{wnid}/images/{wnid}_{i}.JPEG"] = _image_bytes(arr)
            train[(sorted(TINY_WNIDS).index(wnid), f"{wnid}_{i}.JPEG")] = arr
    lines = []
    for i, wnid in enumerate(["n02000000", "n03000000", "n01000000", "n02000000"]):
        arr = _pixels(100 + i, 64, 64)
        entries[f"{top}/val/images/val_{i}.JPEG"] = _image_bytes(arr)
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
        val[f"val_{i}.JPEG"] = (sorted(TINY_WNIDS).index(wnid), arr)
    entries[f"{top}/val/val_annotations.txt"] = ("\n".join(lines) + "\n").encode()
    entries[f"{top}/test/images/test_0.JPEG"] = _image_bytes(_pixels(999, 64, 64))
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "tiny-imagenet-200.zip", "w") as zf:
        for name, blob in entries.items():
            zf.writestr(name, blob)
    return train, val


@pytest.fixture
def tiny(tmp_path, empty_root, monkeypatch):
    """A stand-in tiny-imagenet-200.zip in a mirror, with the expected MD5 and sizes patched to it."""
    mirror = tmp_path / "mirror"
    train, val = _tiny_standin(mirror)
    monkeypatch.setattr(imagenet, "TINY_IMAGENET_MD5", data.md5_file(mirror / "tiny-imagenet-200.zip"))
    monkeypatch.setattr(imagenet, "TINY_IMAGENET_SIZES", (6, 4, 3, 64))
    monkeypatch.setenv("PARAMSTRESS_DATA_MIRROR", str(mirror))
    return mirror, train, val


def _expected_tiny(train, val):
    tx = np.stack([np.broadcast_to(a[..., None], (64, 64, 3)) if a.ndim == 2 else a
                   for _, a in sorted(train.items())]).transpose(0, 3, 1, 2)
    vx = np.stack([val[f][1] for f in sorted(val)]).transpose(0, 3, 1, 2)
    return tx, [k[0] for k in sorted(train)], vx, [val[f][0] for f in sorted(val)]


def test_tiny_imagenet_from_zip(tiny, empty_root, monkeypatch):
    mirror, train, val = tiny
    assert data.verify("tiny-imagenet") == f"mirror: {mirror}"
    d = data.load("tiny-imagenet")
    tx, ty, vx, vy = _expected_tiny(train, val)
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape == (6, 3, 64, 64) and d.test_x.shape == (4, 3, 64, 64)
    assert torch.equal(d.train_x, torch.from_numpy(tx)) and d.train_y.tolist() == ty == [0, 0, 1, 1, 2, 2]
    assert torch.equal(d.test_x, torch.from_numpy(vx)) and d.test_y.tolist() == vy == [1, 2, 0, 1]
    assert d.classes == sorted(TINY_WNIDS)
    assert d.files == {"tiny-imagenet-200.zip": imagenet.TINY_IMAGENET_MD5}
    assert d.source == f"mirror: {mirror}"
    # decoded once: the second load reads the cached tensors from the data root
    assert (empty_root / "cache" / f"tiny-imagenet-{imagenet.TINY_IMAGENET_MD5}.pt").exists()
    monkeypatch.setattr(imagenet, "decode_tiny_imagenet", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = data.load("tiny-imagenet")
    assert torch.equal(again.train_x, d.train_x) and again.checksum == d.checksum


def test_tiny_imagenet_from_extracted_folder(tiny, empty_root, monkeypatch):
    mirror, train, val = tiny
    from_zip = data.load("tiny-imagenet")
    with zipfile.ZipFile(mirror / "tiny-imagenet-200.zip") as zf:
        zf.extractall(empty_root)
    d = data.load("tiny-imagenet")  # the data root's folder is preferred over the mirror's zip
    assert d.source == f"root: {empty_root}"
    assert torch.equal(d.train_x, from_zip.train_x) and torch.equal(d.test_y, from_zip.test_y)
    assert list(d.files) == ["tiny-imagenet-200/"] and d.checksum != from_zip.checksum
    assert data.verify("tiny-imagenet").startswith("root: ")
    # any change of a file is a new decode with a new checksum
    first = d.checksum
    (empty_root / "tiny-imagenet-200" / "val" / "images" / "val_0.JPEG").write_bytes(
        _image_bytes(_pixels(7, 64, 64)))
    changed = data.load("tiny-imagenet")
    assert changed.checksum != first and not torch.equal(changed.test_x[0], d.test_x[0])


def test_per_class_split_holds_out_the_share_of_every_class():
    labels = torch.arange(3).repeat_interleave(500)[torch.randperm(1500, generator=torch.Generator().manual_seed(5))]
    train, test = data.per_class_split(labels, 0.2, seed=0)
    assert len(train) == 1200 and len(test) == 300
    assert torch.bincount(labels[test]).tolist() == [100, 100, 100]
    assert torch.bincount(labels[train]).tolist() == [400, 400, 400]
    assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(1500))  # disjoint, nothing lost
    assert torch.equal(train, train.sort().values) and torch.equal(test, test.sort().values)
    again = data.per_class_split(labels, 0.2, seed=0)
    assert torch.equal(again[1], test)
    assert not torch.equal(data.per_class_split(labels, 0.2, seed=1)[1], test)
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            data.per_class_split(labels, bad, seed=0)


def test_tiny_imagenet_80_20_is_the_papers_split_of_the_training_images(tiny, empty_root, monkeypatch):
    mirror, train, val = tiny
    monkeypatch.setattr(imagenet, "TINY_IMAGENET_PAPER_TEST_FRACTION", 0.5)  # the stand-in has 2 images per class
    official = data.load("tiny-imagenet")
    monkeypatch.setattr(imagenet, "decode_tiny_imagenet", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    paper = data.load("tiny-imagenet-80-20")  # the same cached tensors, split differently
    assert data.verify("tiny-imagenet-80-20") == f"mirror: {mirror}"
    assert paper.name == "tiny-imagenet-80-20" and paper.classes == official.classes
    assert paper.train_y.tolist() == [0, 1, 2] and paper.test_y.tolist() == [0, 1, 2]
    train_idx, test_idx = data.per_class_split(official.train_y, 0.5, seed=0)
    assert torch.equal(paper.train_x, official.train_x[train_idx]) and torch.equal(paper.test_x, official.train_x[test_idx])
    # the official validation images are not used; the statistics are the training split's
    assert not any(torch.equal(v, t) for v in official.test_x for t in paper.test_x)
    assert paper.mean == data.channel_stats(official.train_x[train_idx])[0] != official.mean
    split = [k for k in paper.files if k.startswith("split: ")]
    assert split == ["split: 0.5 of each class's training images as test, seed 0"]
    assert paper.files[split[0]] == data.md5_bytes(test_idx.numpy().astype("<i8").tobytes())
    assert paper.checksum != official.checksum and paper.files[imagenet.TINY_IMAGENET_ZIP] == imagenet.TINY_IMAGENET_MD5
    monkeypatch.setattr(imagenet, "TINY_IMAGENET_PAPER_SPLIT_SEED", 1)
    assert data.load("tiny-imagenet-80-20").checksum != paper.checksum


def test_tiny_imagenet_checksum_and_size_checks(tiny, monkeypatch):
    mirror, _, _ = tiny
    monkeypatch.setattr(imagenet, "TINY_IMAGENET_MD5", "90528d7ca1a48142e341f4ef8d21d0de")  # the real archive's
    with pytest.raises(data.ChecksumMismatch, match="delete it and load again"):
        data.load("tiny-imagenet")
    with pytest.raises(data.ChecksumMismatch):
        data.verify("tiny-imagenet")
    monkeypatch.setattr(imagenet, "TINY_IMAGENET_MD5", data.md5_file(mirror / "tiny-imagenet-200.zip"))
    monkeypatch.setattr(imagenet, "TINY_IMAGENET_SIZES", (100_000, 10_000, 200, 64))
    with pytest.raises(ValueError, match="100,000/10,000 images of 200 classes"):
        data.load("tiny-imagenet")


def test_tiny_imagenet_missing_offline_names_both_forms(empty_root):
    with pytest.raises(data.DataNotFound) as err:
        data.load("tiny-imagenet")
    msg = str(err.value)
    assert str(empty_root / "tiny-imagenet-200.zip") in msg and "tiny-imagenet-200/" in msg
    assert "PARAMSTRESS_DATA_MIRROR" in msg and "cs231n.stanford.edu" in msg


def test_tiny_imagenet_download_uses_the_public_url_and_md5(tmp_path, empty_root, monkeypatch):
    standin = tmp_path / "standin"
    _tiny_standin(standin)
    md5 = data.md5_file(standin / "tiny-imagenet-200.zip")
    monkeypatch.setattr(imagenet, "TINY_IMAGENET_MD5", md5)
    monkeypatch.setattr(imagenet, "TINY_IMAGENET_SIZES", (6, 4, 3, 64))
    monkeypatch.setenv("PARAMSTRESS_OFFLINE", "0")
    calls = []

    def fake_download_url(url, root, filename=None, md5=None):  # torchvision's signature
        calls.append((url, filename, md5))
        shutil.copy(standin / "tiny-imagenet-200.zip", Path(root) / filename)

    import torchvision.datasets.utils as tvu

    monkeypatch.setattr(tvu, "download_url", fake_download_url)
    d = data.load("tiny-imagenet")
    assert calls == [("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "tiny-imagenet-200.zip", md5)]
    assert d.source.startswith("download: ") and (empty_root / "tiny-imagenet-200.zip").exists()
    assert [p.name for p in empty_root.iterdir() if p.name.startswith(".download")] == []


IMAGENET_WNIDS = ["n03000000", "n01000000", "n02000000"]
# (wnid, height, width, grayscale) of each validation image, in file order
IMAGENET_IMAGES = [("n02000000", 300, 260, False), ("n03000000", 260, 400, True),
                   ("n01000000", 256, 256, False), ("n02000000", 500, 333, False)]


def _reference_crop(arr: np.ndarray) -> np.ndarray:
    """torchvision's reference ImageNet evaluation crop, computed with torchvision.transforms."""
    from PIL import Image
    from torchvision import transforms

    img = Image.fromarray(arr).convert("RGB")
    return np.asarray(transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])(img))


def _imagenet_folder_standin(root: Path) -> tuple[np.ndarray, list[int]]:
    xs, ys = [], []
    for i, (wnid, h, w, gray) in enumerate(IMAGENET_IMAGES):
        arr = _pixels(200 + i, h, w, gray)
        path = root / "imagenet" / "val" / wnid / f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_image_bytes(arr))
    for i, (wnid, h, w, gray) in sorted(enumerate(IMAGENET_IMAGES), key=lambda t: (t[1][0], t[0])):
        xs.append(_reference_crop(_pixels(200 + i, h, w, gray)))
        ys.append(sorted(IMAGENET_WNIDS).index(wnid))
    return np.stack(xs).transpose(0, 3, 1, 2), ys


def _imagenet_archive_standin(root: Path) -> None:
    import scipy.io

    folder = root / "imagenet"
    folder.mkdir(parents=True)
    with tarfile.open(folder / "ILSVRC2012_img_val.tar", "w") as tar:
        for i, (_, h, w, gray) in enumerate(IMAGENET_IMAGES):
            blob = _image_bytes(_pixels(200 + i, h, w, gray))
            info = tarfile.TarInfo(f"ILSVRC2012_val_{i + 1:08d}.JPEG")
            info.size = len(blob)
            tar.addfile(info, _io.BytesIO(blob))
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
              "wordnet_height", "num_train_images"]
    synsets = np.zeros((4,), dtype=[(f, "O") for f in fields])
    ids = {"n03000000": 1, "n01000000": 2, "n02000000": 3}  # ILSVRC ids are not in wnid order
    for k, (wnid, ident) in enumerate(ids.items()):
        synsets[k] = (ident, wnid, "a, b", "g", 0, np.array([]), 0, 1)
    synsets[3] = (1001, "n00001740", "entity", "g", 2, np.array([1, 2]), 5, 0)  # not a leaf: ignored
    meta = _io.BytesIO()
    scipy.io.savemat(meta, {"synsets": synsets})
    truth = "".join(f"{ids[w]}\n" for w, *_ in IMAGENET_IMAGES).encode()
    with tarfile.open(folder / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
        for name, blob in [("ILSVRC2012_devkit_t12/data/meta.mat", meta.getvalue()),
                           ("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth)]:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, _io.BytesIO(blob))


def test_imagenet_val_from_class_folders(tmp_path, empty_root, monkeypatch):
    mirror = tmp_path / "mirror"
    expected_x, expected_y = _imagenet_folder_standin(mirror)
    monkeypatch.setenv("PARAMSTRESS_DATA_MIRROR", str(mirror))
    monkeypatch.setattr(imagenet, "IMAGENET_VAL_SIZES", (4, 3))
    d = data.load("imagenet-val")
    assert d.train_x.shape == (0, 3, 224, 224) and d.train_y.shape == (0,) and d.train_y.dtype == torch.int64
    assert d.image_shape == (3, 224, 224) and d.num_classes == 3
    assert d.test_x.dtype == torch.uint8 and torch.equal(d.test_x, torch.from_numpy(expected_x))
    assert d.test_y.tolist() == expected_y == [0, 1, 1, 2]
    assert d.mean == (0.485, 0.456, 0.406) and d.std == (0.229, 0.224, 0.225)
    assert d.classes == sorted(IMAGENET_WNIDS) and list(d.files) == ["imagenet/val/"]
    assert d.summary()["train"] == 0 and d.subset(test=2).test_x.shape == (2, 3, 224, 224)
    assert data.verify("imagenet-val") == f"mirror: {mirror / 'imagenet'}"
    # evaluation only: the training loop says so before any compute
    from paramstress import training

    with pytest.raises(ValueError, match="evaluation-only"):
        training.train(None, d, training.TrainConfig(model="resnet34_imagenet"), progress=False)


def test_imagenet_val_from_official_archives(tmp_path, empty_root, monkeypatch):
    folder_copy = tmp_path / "folder"
    expected_x, expected_y = _imagenet_folder_standin(folder_copy)
    mirror = tmp_path / "mirror"
    _imagenet_archive_standin(mirror)
    monkeypatch.setenv("PARAMSTRESS_DATA_MIRROR", str(mirror))
    monkeypatch.setattr(imagenet, "IMAGENET_VAL_SIZES", (4, 3))
    with pytest.raises(data.ChecksumMismatch, match="official ILSVRC2012"):  # torchvision's MD5s
        data.verify("imagenet-val")
    for attr, name in (("IMAGENET_VAL_TAR", "ILSVRC2012_img_val.tar"), ("IMAGENET_DEVKIT", "ILSVRC2012_devkit_t12.tar.gz")):
        monkeypatch.setattr(imagenet, attr, (name, data.md5_file(mirror / "imagenet" / name)))
    data.verify("imagenet-val")
    d = data.load("imagenet-val")
    # file order in the archive, labels from the devkit's ids mapped to sorted wnids
    assert d.test_y.tolist() == [sorted(IMAGENET_WNIDS).index(w) for w, *_ in IMAGENET_IMAGES] == [1, 2, 0, 1]
    # the same pixels as the class-folder layout, in the other order
    folder_order = sorted(range(4), key=lambda i: (IMAGENET_IMAGES[i][0], i))
    for row, i in enumerate(folder_order):
        assert torch.equal(d.test_x[i], torch.from_numpy(expected_x[row].copy()))
    assert set(d.files) == {"ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"}


def test_imagenet_val_incomplete_is_refused(tmp_path, empty_root, monkeypatch):
    _imagenet_folder_standin(empty_root)
    with pytest.raises(ValueError, match="complete validation set"):
        data.load("imagenet-val")  # 3 classes, not 1000: label indices would not match the weights


@pytest.mark.parametrize("offline", ["1", "0"])
def test_imagenet_val_missing_names_files_and_variable(empty_root, monkeypatch, offline):
    monkeypatch.setenv("PARAMSTRESS_OFFLINE", offline)
    with pytest.raises(data.DataNotFound) as err:
        data.load("imagenet-val")
    msg = str(err.value)
    for needle in ("ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz", "val/<wnid>/",
                   str(empty_root / "imagenet"), "PARAMSTRESS_DATA_MIRROR"):
        assert needle in msg
    if offline == "0":
        assert "cannot be downloaded" in msg and "image-net.org" in msg


def test_normalisation_statistics_do_not_depend_on_the_thread_count(mirror):
    """Fashion-MNIST's float32 mean rounds differently when torch splits the reduction among
    2 threads instead of 1; the statistics every model is normalised with must not."""
    import torch

    previous = torch.get_num_threads()
    try:
        stats = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            d = data.load("fashion-mnist")
            stats.append((d.mean, d.std))
            assert torch.get_num_threads() == threads  # the caller's setting is left alone
    finally:
        torch.set_num_threads(previous)
    assert stats[0] == stats[1] == stats[2]
    assert stats[0] == ((0.2860405743122101,), (0.3530242443084717,))  # the one-thread values the book used
