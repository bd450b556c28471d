"""The runner checks everything before a kernel starts and never overwrites published notebooks."""
import subprocess
import sys
from pathlib import Path

import pytest

from paramstress import profiles, runner

REPO = profiles.repo_root()


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "paramstress.runner", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)


def test_other_profile_never_targets_book():
    published = profiles.published("quickstart")
    other = next(p for p in profiles.PROFILES if p != published)
    assert runner.target_path("quickstart", other, None, False) == REPO / "runs" / other / "quickstart.ipynb"
    assert runner.target_path("quickstart", published, None, False) == REPO / "book" / "quickstart.ipynb"
    with pytest.raises(runner.RunError, match="may not overwrite"):
        runner.target_path("quickstart", other, str(REPO / "book"), False)
    assert runner.target_path("quickstart", "ci", None, True) == REPO / "tests" / "notebooks" / "quickstart.ipynb"


def test_parameter_values_parse_like_papermill():
    assert runner._literal("3") == 3 and runner._literal("None") is None
    assert runner._literal("0.5") == 0.5 and runner._literal("mnist") == "mnist"


@pytest.mark.parametrize("args, message", [
    (["nosuch"], "unknown notebook 'nosuch'"),
    (["quickstart", "--profile", "huge"], "unknown profile 'huge'"),
    (["quickstart", "-p", "epoch", "3"], "unknown parameter"),
    (["quickstart", "-p", "dataset", "mnistt"], "'mnistt' is not a dataset name; choose from mnist"),
    # the example: rejected before a kernel starts, not in cell 11 after the training
    (["corruption", "--profile", "ci", "-p", "p", "0.5"], "p = 0.5: 0.5 is less than the minimum of 1"),
    (["resistant_training", "-p", "seeds", "[]"], "seeds = []"),
    (["selective_backprop", "-p", "freeze_rule", "majority"], "'majority' is not a freeze_rule name"),
    (["text_vulnerability", "-p", "task_params", "{'de_en': {}}"], "'de_en' is not a task name"),
])
def test_bad_input_fails_fast_with_the_fix(args, message):
    out = run_cli(*args, "--out", "/tmp/paramstress-never-written")
    assert out.returncode == 2, out.stderr
    assert "Executing" not in out.stderr and not Path("/tmp/paramstress-never-written").exists()
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_data_fails_before_any_kernel(tmp_path):
    import os

    env = dict(os.environ, PARAMSTRESS_DATA=str(tmp_path / "root"), PARAMSTRESS_OFFLINE="1")
    env.pop("PARAMSTRESS_DATA_MIRROR", None)
    out = run_cli("quickstart", "--profile", "ci", "--out", str(tmp_path / "out"), env=env)
    assert out.returncode == 2
    assert "PARAMSTRESS_DATA_MIRROR" in out.stderr and "train-images-idx3-ubyte" in out.stderr
    assert not (tmp_path / "out").exists()


def test_corrupted_data_fails_before_any_kernel(tmp_path, mirror):
    import gzip
    import os
    import shutil

    root = tmp_path / "root"
    shutil.copytree(mirror / "MNIST" / "raw", root / "MNIST" / "raw")
    labels = root / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10
    labels.write_bytes(gzip.compress(bytes(raw)))
    env = dict(os.environ, PARAMSTRESS_DATA=str(root), PARAMSTRESS_OFFLINE="1")
    out = run_cli("quickstart", "--profile", "ci", "--out", str(tmp_path / "out"), env=env)
    assert out.returncode == 2
    assert "MD5" in out.stderr and "delete it and load again" in out.stderr
    assert not (tmp_path / "out").exists()


def _first_code_cell_after_parameters(nb):
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    i = next(k for k, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    rest = [c for c in cells[i + 1:] if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    return "".join(rest[0]["source"])


@pytest.mark.parametrize("notebook", profiles.notebooks())
def test_every_page_checks_its_parameters_in_its_first_code_cell(notebook):
    """Plain papermill (no runner) gets the same check: the first code cell after the
    parameters calls profiles.check before any data or model. Pages published at `gpu`
    cannot be re-executed here, so their code cells stay as published until a GPU run."""
    import json
    if profiles.published(notebook) == "gpu":
        pytest.skip(f"{notebook} is published at gpu: its code cells change only with a GPU re-run")
    source = _first_code_cell_after_parameters(json.loads((REPO / "book" / f"{notebook}.ipynb").read_text()))
    call = f'profiles.check("{notebook}", globals())'
    assert call in source, f"book/{notebook}.ipynb's first code cell lacks {call}"
    before = source[:source.index(call)]
    assert "data.load(" not in before and "Run(" not in before and "train(" not in before and "build_task(" not in before


def test_plain_papermill_rejects_a_bad_value_in_the_first_code_cell(tmp_path):
    """The issue's example run without the runner: papermill with a bad value stops in the
    check, before the data are loaded, naming what is expected."""
    import papermill
    with pytest.raises(papermill.PapermillExecutionError) as info:
        papermill.execute_notebook(str(REPO / "book" / "quickstart.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"epochs": 0}, kernel_name="python3", progress_bar=False,
                                   cwd=str(tmp_path))
    assert "ProfileError" in info.value.ename and "epochs = 0" in info.value.evalue
    import json
    out = json.loads((tmp_path / "out.ipynb").read_text())
    ran = [c for c in out["cells"] if c["cell_type"] == "code" and c.get("execution_count")]
    assert 'profiles.check("quickstart", globals())' in "".join(ran[-1]["source"])  # the failing cell
    assert not any("data.load" in "".join(c["source"]) for c in ran)
