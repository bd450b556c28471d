"""The runner's progress lines (elapsed time, an estimate for the pages left from their committed
runs) and the summary table a multi-page run ends with (issue 28)."""
import re

from paramstress.book import runner


def test_committed_seconds_come_from_the_pages_provenance():
    assert runner.committed_seconds("corruption", "gpu") > 60  # the published H200 run's wall time
    assert runner.committed_seconds("corruption", "local") is None  # no local copy is committed
    assert runner.committed_seconds("quickstart", "ci") is not None  # the nbval copy's


def test_a_multi_page_run_prints_progress_and_a_summary(monkeypatch, capsys, tmp_path, mirror):
    written = []

    def fake_execute(name, profile, overrides, target):
        written.append(name)
        (tmp_path / "ckpt" / f"{name}.pt").parent.mkdir(exist_ok=True)
        (tmp_path / "ckpt" / f"{name}.pt").write_text("x")  # one new cache file per page
        return 1.5

    monkeypatch.setenv("PARAMSTRESS_CHECKPOINTS", str(tmp_path / "ckpt"))
    monkeypatch.setattr(runner, "execute", fake_execute)
    assert runner.main(["quickstart", "vulnerability", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert written == ["quickstart", "vulnerability"]
    assert re.search(r"\[1/2\] quickstart @ local .*\(0 s elapsed; the 2 left took ~\d+ min", out)
    assert re.search(r"\[2/2\] vulnerability @ local .*s elapsed; the 1 left took", out)
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("quickstart ", "vulnerability ", "all "))}
    assert rows["quickstart"][1:3] == ["local", "2"] and rows["quickstart"][-1] == "1"
    assert rows["all"][-1] == "2"


def test_the_injected_parameters_cell_is_removed_from_the_html(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters", "remove-cell"]}),
        nbformat.v4.new_code_cell("x = 2", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(x)", metadata={"tags": ["hide-input"]})])
    path = tmp_path / "page.ipynb"
    nbformat.write(nb, path)
    runner.hide_injected_parameters(path)
    tags = [c.metadata.get("tags") for c in nbformat.read(path, as_version=4).cells]
    assert tags == [["parameters", "remove-cell"], ["injected-parameters", "remove-cell"], ["hide-input"]]
