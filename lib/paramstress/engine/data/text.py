"""Text corpora (Sun et al. 2021, Tables 1-2: PTB-LM, PTB-Parsing, De-En): located and
MD5-verified here, parsed by the text tasks (:mod:`paramstress.corruption.text`).

Published corpora (``ptb-treebank``, ``ptb-dependency``: NLTK's samples; ``multi30k``;
``ptb-mikolov``) have listed MD5s and a download; user-supplied ones (``iwslt14-de-en``,
``ptb-conll``) have a required layout and record the MD5 of every file found.
:data:`TEXT_SPECS` names them for the registry.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import tarfile
from pathlib import Path
from typing import Callable

import torch

from paramstress.engine.data.sources import (
    ChecksumMismatch, DataNotFound, Spec, combined_checksum, md5_file, verified_md5,
)


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
    files = {rel: verified_md5(spec, rel, (folder / rel).read_bytes(), folder / rel) for rel in spec.files}
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
