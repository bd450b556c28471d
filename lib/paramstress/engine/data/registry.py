"""The named datasets and how one is found: :data:`SPECS`, :func:`load`, :func:`verify`.

Sources are tried in order (issue #2):

1. the data root (``data/`` of the checkout, or ``$PARAMSTRESS_DATA``);
2. a read-only mirror directory named by ``$PARAMSTRESS_DATA_MIRROR``
   (CI points it at ``../shared/data``);
3. a download from the public source into the data root, unless
   ``$PARAMSTRESS_OFFLINE=1``;
4. otherwise one :class:`DataNotFound` error naming the files expected and where.

Checksums (MD5, as published with the mirror and by torchvision) are verified on
every load; a mismatch raises :class:`ChecksumMismatch` naming the file and the fix.
A dataset is a :class:`~paramstress.engine.data.sources.Spec` in one of the readers'
tables (:data:`IMAGE_SPECS`, :data:`IMAGENET_SPECS`, :data:`TEXT_SPECS`), joined here.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from paramstress.engine.data.images import IMAGE_SPECS, ImageData
from paramstress.engine.data.imagenet import IMAGENET_SPECS
from paramstress.engine.data.sources import (
    MIRROR_ENV, DataNotFound, Spec, UnknownDataset, data_root, find_listed, mirror_root, offline, read_listed,
    verified_md5,
)
from paramstress.engine.data.text import TEXT_SPECS, TextFiles

#: Every named dataset: the image datasets, the ImageNet family, then the text corpora.
SPECS: dict[str, Spec] = {**IMAGE_SPECS, **IMAGENET_SPECS, **TEXT_SPECS}


def _present(spec: Spec, base: Path) -> bool:
    if spec.present is not None:
        return spec.present(spec, base)
    return all(find_listed(base / spec.folder, f) for f in spec.files)


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
        path = find_listed(folder, rel)
        verified_md5(spec, rel, read_listed(path, rel), path)
    return f"{kind}: {folder}"


def load(name: str, device: torch.device | str | None = None) -> ImageData | TextFiles:
    """Load a named dataset as tensors (checksums verified), optionally moved to ``device``."""
    spec = get_spec(name)
    kind, folder = locate(name)
    data = spec.reader(spec, folder, spec.files)
    data.source = f"{kind}: {folder}"
    return data.to(device) if device is not None else data


def available() -> list[str]:
    return sorted(SPECS)
