"""scripts/gpu_run.sh, the command that executes the gpu-published notebooks on a lent GPU.

Run here with stub ``nvidia-smi`` and ``python3`` (no GPU, no torch needed): the stub records
every benchmark and notebook the script starts, in order, into a log.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_run.sh"

STUB_PYTHON = """#!/bin/sh
# the import check (-c) passes; benchmarks (a path) and notebooks (-m paramstress.runner NAME) are logged
case "$1" in
  -c) exit 0 ;;
  -m) echo "notebook $3" >> "$STUB_LOG"; exit "${STUB_NOTEBOOK_RC:-0}" ;;
  *) echo "bench $*" >> "$STUB_LOG"; exit 0 ;;
esac
"""


def _run(tmp_path: Path, args: list[str], bench: str | None = None, notebook_rc: int = 0):
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils' timeout")
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    (stubs / "nvidia-smi").write_text("#!/bin/sh\necho stub-gpu\n")
    (stubs / "python3").write_text(STUB_PYTHON)
    for f in stubs.iterdir():
        f.chmod(0o755)
    tree = tmp_path / "tree"
    (tree / "lib").mkdir(parents=True, exist_ok=True)
    log = tmp_path / "calls.log"
    log.write_text("")
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"),
           "STUB_LOG": str(log), "STUB_NOTEBOOK_RC": str(notebook_rc)}
    env.pop("BENCH", None)
    if bench is not None:
        env["BENCH"] = bench
    proc = subprocess.run(["bash", str(SCRIPT), *args], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=60)
    return proc, log.read_text().splitlines()


def test_benchmarks_separated_by_semicolons_run_in_order_before_the_notebooks(tmp_path):
    proc, calls = _run(tmp_path, ["abc123", "100", "nb_one", "nb_two"],
                       bench="benchmarks/a.py --x 1; benchmarks/b.py --y 2 ;  ")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls == ["bench benchmarks/a.py --x 1", "bench benchmarks/b.py --y 2", "notebook nb_one",
                     "notebook nb_two"]


def test_bench_without_a_notebook_runs_only_the_benchmarks(tmp_path):
    proc, calls = _run(tmp_path, ["abc123", "100"], bench="benchmarks/a.py --quick")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls == ["bench benchmarks/a.py --quick"]


def test_seconds_zero_without_bench_only_stages(tmp_path):
    proc, calls = _run(tmp_path, ["abc123", "0"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls == []
    assert "in data/" in proc.stdout


def test_a_failing_notebook_stops_the_run_with_its_status(tmp_path):
    proc, calls = _run(tmp_path, ["abc123", "100", "nb_one", "nb_two"], notebook_rc=3)
    assert proc.returncode == 3
    assert calls == ["notebook nb_one"]
