"""Writing files so that a reader never sees a partial one (checkpoints, caches, results)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def project_folder(env_var: str, name: str) -> Path:
    """``$env_var`` if set, else ``<checkout>/<name>`` (a source checkout), else ``./<name>``."""
    if os.environ.get(env_var):
        return Path(os.environ[env_var]).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[3]  # lib/paramstress/engine/storage.py
    if (checkout / "pyproject.toml").exists():
        return checkout / name
    return Path.cwd() / name


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace`` it into place.

    Readers see either the old file or the complete new one, never a partial
    write; on any exception the temporary file is removed and ``path`` is left as
    it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
