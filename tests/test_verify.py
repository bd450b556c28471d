"""make verify (paramstress.book.verify): a fresh run's glued values and CSVs against the published
pages; every difference named, the exit status non-zero on any."""
import gzip
import json
import shutil
import time

import pytest

from paramstress.book import profiles
from paramstress.book import verify as V

BOOK = profiles.repo_root() / "book"


def copy_page(page, to):
    shutil.copy(BOOK / f"{page}.ipynb", to / f"{page}.ipynb")
    for path in BOOK.glob(f"{page}.*.csv*"):
        shutil.copy(path, to / path.name)


def set_glue(notebook, key, text):
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            if (output.get("metadata", {}).get("scrapbook") or {}).get("name") == key:
                output["data"]["text/plain"] = text
    notebook.write_text(json.dumps(nb))


def test_the_published_pages_equal_themselves(tmp_path):
    pages = V.local_pages()
    assert "quickstart" in pages and "corruption" not in pages  # corruption is published at gpu
    for page in pages:
        copy_page(page, tmp_path)
    assert V.compare(pages, tmp_path) == []
    assert V.main(["--compare-only", str(tmp_path)]) == 0


def test_a_moved_glued_value_and_a_moved_csv_cell_are_each_named(tmp_path, capsys):
    copy_page("selective_backprop", tmp_path)
    key = sorted(V.glued_values(BOOK / "selective_backprop.ipynb"))[0]
    set_glue(tmp_path / "selective_backprop.ipynb", key, "'moved'")
    csv = sorted(tmp_path.glob("selective_backprop.*.csv"))[0]
    lines = csv.read_text().splitlines()
    cells = lines[1].split(",")
    cells[-1] = "12345.678"
    lines[1] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    found = V.compare(["selective_backprop"], tmp_path)
    assert [(d.kind, d.name) for d in found] == [("glue", key), ("csv", csv.name)]
    assert found[0].fresh == "'moved'" and "row 0" in found[1].published and "12345.678" in found[1].fresh
    assert V.main(["selective_backprop", "--compare-only", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"glue {key}" in out and csv.name in out and "2 differences" in out


def test_missing_keys_files_and_pages_are_differences(tmp_path):
    copy_page("quickstart", tmp_path)
    nb = json.loads((tmp_path / "quickstart.ipynb").read_text())
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            output.get("metadata", {}).pop("scrapbook", None)
    (tmp_path / "quickstart.ipynb").write_text(json.dumps(nb))
    (tmp_path / "quickstart.history.csv").unlink()
    kinds = [(d.kind, d.fresh) for d in V.compare(["quickstart", "vulnerability"], tmp_path)]
    assert ("glue", "<absent>") in kinds and ("csv", "<absent>") in kinds
    assert ("page", "missing: not executed") in kinds


def test_gzip_csvs_are_compared_by_content_not_by_their_header_time(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for folder, body in ((a, b"x,y\n1,2\n"), (b, b"x,y\n1,2\n")):
        (folder / "p.rows.csv.gz").write_bytes(gzip.compress(body, mtime=time.time() + (folder == b) * 100))
        (folder / "p.ipynb").write_text(json.dumps({"cells": []}))
    assert (a / "p.rows.csv.gz").read_bytes() != (b / "p.rows.csv.gz").read_bytes()
    assert V.compare_page("p", a, b) == []
    (b / "p.rows.csv.gz").write_bytes(gzip.compress(b"x,y\n1,3\n"))
    [d] = V.compare_page("p", a, b)
    assert "row 0 y = 2" in d.published and "row 0 y = 3" in d.fresh


def test_a_page_not_published_at_local_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    from paramstress.book import runner

    monkeypatch.setattr(runner, "main", lambda argv: pytest.fail("a kernel was started"))
    assert V.main(["corruption", "--out", str(tmp_path)]) == 2
    assert "not published at local" in capsys.readouterr().err


def test_wall_time_columns_are_left_out_of_the_csv_comparison(tmp_path):
    copy_page("quickstart", tmp_path)
    csv = tmp_path / "quickstart.history.csv"
    import pandas as pd

    frame = pd.read_csv(csv)
    assert "seconds" in frame.columns  # the epochs' wall times, different on every run that trains
    frame.assign(seconds=frame["seconds"] + 1.5).to_csv(csv, index=False)
    assert V.compare(["quickstart"], tmp_path) == []
    frame.assign(seconds=frame["seconds"] + 1.5, train_loss=frame["train_loss"] + 1e-9).to_csv(csv, index=False)
    [d] = V.compare(["quickstart"], tmp_path)
    assert d.name == "quickstart.history.csv" and "train_loss" in d.published
