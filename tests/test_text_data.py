"""The data layer's text corpora: mirror, checksums, user-supplied folders, clear errors."""
import shutil

import pytest

from paramstress import data


def test_multi30k_from_mirror_verified(mirror, empty_root, monkeypatch):
    monkeypatch.setenv("PARAMSTRESS_DATA_MIRROR", str(mirror))
    d = data.load("multi30k")
    assert d.source.startswith("mirror: ")
    assert {s: len(v[0]) for s, v in d.splits.items()} == {"train": 29000, "valid": 1014, "test": 1000}
    assert all(len(src) == len(tgt) for src, tgt in d.splits.values())
    assert d.languages == ("de", "en")
    assert d.files["train.de"] == "d3b4bc1671cfb805267f97f16884beba"
    assert d.checksum == data.combined_checksum(d.files)
    row = d.summary()
    assert row["origin"] == "mirror" and str(mirror) not in repr(row)
    assert d.provenance()["test"] == 1000


@pytest.mark.parametrize("name, archive", [("ptb-treebank", "treebank.zip"),
                                           ("ptb-dependency", "dependency_treebank.zip")])
def test_nltk_corpora_from_mirror(mirror, empty_root, monkeypatch, name, archive):
    monkeypatch.setenv("PARAMSTRESS_DATA_MIRROR", str(mirror))
    d = data.load(name)
    assert (d.nltk_root / "corpora" / archive).is_file()
    assert list(d.files) == [archive]
    assert data.verify(name).startswith("mirror: ")


def test_corrupted_text_file_fails_with_the_fix(mirror, empty_root):
    target = empty_root / "multi30k"
    shutil.copytree(mirror / "multi30k", target)
    blob = bytearray((target / "val.en").read_bytes())
    blob[10] ^= 1
    (target / "val.en").write_bytes(bytes(blob))
    with pytest.raises(data.ChecksumMismatch, match="delete it and load again"):
        data.load("multi30k")
    with pytest.raises(data.ChecksumMismatch):
        data.verify("multi30k")  # the runner's preflight catches it before a kernel starts


@pytest.mark.parametrize("name, expected", [
    ("multi30k", "multi30k/train.de"),
    ("ptb-treebank", "nltk_data/corpora/treebank.zip"),
    ("ptb-mikolov", "ptb-mikolov/ptb.train.txt"),
    ("iwslt14-de-en", "prepare-iwslt14.sh"),
    ("ptb-conll", "train.conll"),
])
def test_missing_offline_names_files_and_variable(empty_root, name, expected):
    with pytest.raises(data.DataNotFound) as err:
        data.load(name)
    msg = str(err.value)
    assert expected in msg and "PARAMSTRESS_DATA_MIRROR" in msg and "downloads disabled" in msg


def test_user_supplied_corpus_records_md5s(empty_root):
    folder = empty_root / "iwslt14.tokenized.de-en"
    folder.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            (folder / f"{split}.{lang}").write_text(f"{split} {lang} line\n")
    d = data.load("iwslt14-de-en")
    assert d.source.startswith("root: ")
    assert sorted(d.files) == sorted(f"{s}.{l}" for s in ("train", "valid", "test") for l in ("de", "en"))
    assert d.files["test.en"] == data.md5_bytes(b"test en line\n")
    (folder / "test.en").unlink()
    with pytest.raises(data.DataNotFound, match="test.en"):
        data.load("iwslt14-de-en")


def test_user_supplied_has_no_download(empty_root, monkeypatch):
    monkeypatch.setenv("PARAMSTRESS_OFFLINE", "0")
    with pytest.raises(data.DataNotFound, match="no automatic download"):
        data.load("ptb-conll")
