"""Where the files of a named dataset are looked for, and how they are checked.

What every reader and the registry share: the errors (each message names the fix), the
data root / offline mirror / offline switch read from the environment, MD5 checksums,
:class:`Spec` (how one named dataset is stored, checked, fetched and read) and reading
a listed file with its MD5 verified.

Checksums are MD5, as published with the mirror and by torchvision; a dataset's
``checksum`` is :func:`combined_checksum` over its files' MD5s.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
from pathlib import Path
from typing import Any, Callable

from paramstress.engine.storage import project_folder


class DataError(RuntimeError):
    """Base class: the message always names the fix."""


class UnknownDataset(DataError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class DataNotFound(DataError, FileNotFoundError):
    pass


class ChecksumMismatch(DataError):
    pass


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


# --------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------
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
    #: ``reader(spec, folder, files)``: an ``ImageData`` (image datasets) or a ``TextFiles`` (text corpora)
    reader: Callable[["Spec", Path, dict[str, str]], Any]
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


def find_listed(folder: Path, name: str) -> Path | None:
    """The file a spec lists as ``name`` in ``folder``: as named, or gzipped beside it (``name.gz``)."""
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.exists():
            return candidate
    return None


def read_listed(path: Path, rel: str) -> bytes:
    """The bytes a spec's MD5 for ``rel`` covers: the decompressed content when the file
    was found gzipped beside its listed name (MNIST's ``*-ubyte`` as ``*-ubyte.gz``), the
    file as stored when it is listed under its own name (``cifar10-jpeg.tar.gz``)."""
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.name == Path(rel).name + ".gz" else raw


def verified_md5(spec: Spec, rel: str, data: bytes, where: Path) -> str:
    """The MD5 of ``data`` (the bytes of ``spec``'s file ``rel``, read from ``where``), or
    :class:`ChecksumMismatch` naming the file and the fix when it is not the listed one."""
    digest = md5_bytes(data)
    if digest != spec.files[rel]:
        raise ChecksumMismatch(
            f"{spec.name}: {where} has MD5 {digest}, expected {spec.files[rel]} "
            f"(corrupted or incomplete file). Fix: delete it and load again "
            f"(it is re-read from the mirror or downloaded), or restore it from the public source "
            f"({spec.public_source})."
        )
    return digest
