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


CI_COPY_BUDGET_S = 90.0  # what one nbval copy may take on the 2-core CI machine (the issues' target)


def pytest_terminal_summary(terminalreporter):
    """Print each nbval copy's time (kernel start and every cell) against its budget.

    Shown, not asserted: speed is not a pass/fail criterion of the tests (the project's
    rule), but a copy that grows past the budget should be seen in every CI log.
    """
    totals: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            path = getattr(report, "nodeid", "").split("::")[0]
            duration = getattr(report, "duration", None)
            if path.endswith(".ipynb") and duration is not None:
                totals[path] = totals.get(path, 0.0) + duration
    if not totals:
        return
    terminalreporter.section(f"nbval copies: seconds each (budget {CI_COPY_BUDGET_S:.0f} s)")
    for path, seconds in sorted(totals.items()):
        flag = "  OVER BUDGET" if seconds > CI_COPY_BUDGET_S else ""
        terminalreporter.write_line(f"{seconds:7.1f}  {path}{flag}")
