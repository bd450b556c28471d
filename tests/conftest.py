import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def mirror_or_skip() -> Path:
    """The offline data mirror ($PARAMSTRESS_DATA_MIRROR, else ../shared/data beside the checkout)."""
    value = os.environ.get("PARAMSTRESS_DATA_MIRROR") or str(REPO.parent / "shared" / "data")
    path = Path(value)
    if not (path / "MNIST").is_dir():
        pytest.skip(f"no data mirror at {path}: set PARAMSTRESS_DATA_MIRROR")
    return path


@pytest.fixture
def mirror(monkeypatch) -> Path:
    path = mirror_or_skip()
    monkeypatch.setenv("PARAMSTRESS_DATA_MIRROR", str(path))
    return path


@pytest.fixture
def empty_root(tmp_path, monkeypatch) -> Path:
    """A fresh, empty data root with downloads disabled."""
    root = tmp_path / "root"
    monkeypatch.setenv("PARAMSTRESS_DATA", str(root))
    monkeypatch.setenv("PARAMSTRESS_OFFLINE", "1")
    monkeypatch.delenv("PARAMSTRESS_DATA_MIRROR", raising=False)
    return root


@pytest.fixture(scope="module")
def one_cpu_thread():
    """Run a module's tiny workloads on one intra-op thread (restored afterwards).

    With tensors this small, torch's thread pool costs more than it gives, and when
    other jobs share the CPU its spinning threads oversubscribe the cores (15× slower).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
