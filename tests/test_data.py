"""The data layer: source order, checksums, clear errors, tensors and provenance."""
import gzip
import shutil

import numpy as np
import pytest
import torch

from paramstress import data


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(data.UnknownDataset, match="known: cifar10, cifar10-jpeg, fashion-mnist, mnist"):
        data.load("mnistt")


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

    monkeypatch.setitem(data.SPECS, "mnist", data.dataclasses.replace(spec, download=fake_download))
    d = data.load("mnist")
    assert d.source.startswith("download: ")
    assert len(d.train_y) == 60000

    def broken_download(root):
        (root / "FashionMNIST" / "raw").mkdir(parents=True)
        (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"partial")
        raise OSError("connection reset")

    spec_f = data.SPECS["fashion-mnist"]
    monkeypatch.setitem(data.SPECS, "fashion-mnist", data.dataclasses.replace(spec_f, download=broken_download))
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


def test_cifar10_official_missing_offline_names_the_batches(empty_root):
    with pytest.raises(data.DataNotFound, match="cifar-10-batches-py/data_batch_1"):
        data.load("cifar10")
