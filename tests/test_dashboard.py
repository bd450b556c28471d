"""The intro's dashboard, the README's headline and every page's "Re-run this page" box
(issue 27 points 1, 5, 6): generated from one source, pasted from the pages' glued values.

The HTML checks run on the built book named by ``PARAMSTRESS_BOOK_HTML``: ``make html`` runs
them on ``_build/html`` right after the build (CI runs ``make test`` before ``make html``, so
``make test`` skips them; ``tests/browser_check.py`` checks the rendered pages in a browser)."""
from __future__ import annotations

import html as htmllib
import json
import os
import re
from pathlib import Path

import pytest

from paramstress.book import dashboard, profiles, rerun

ROOT = profiles.repo_root()
#: The book's notebook pages, as _toc.yml lists them.
PAGES = [name for name in re.findall(r"file: book/([\w-]+)", (ROOT / "_toc.yml").read_text())
         if (ROOT / "book" / f"{name}.ipynb").exists()]
GLUE = re.compile(r"\{glue:text\}`([\w-]+)\.ipynb::([\w-]+)(?::([^`]*))?`")


def test_intro_dashboard_and_readme_headline_are_what_the_pages_give():
    for path, text in dashboard.targets().items():
        assert path.read_text() == text, (f"{path.name}'s generated block differs from the current pages: "
                                          "run .venv/bin/python -m paramstress.book.dashboard --write")


def test_every_glued_reference_of_the_intro_exists_in_its_page():
    refs = GLUE.findall((ROOT / "book" / "intro.md").read_text())
    assert len(refs) >= 30
    for page, key, _ in refs:
        assert key in dashboard.glued(page), f"intro.md pastes {key!r}, which book/{page}.ipynb does not glue"


def test_the_dashboard_has_a_row_for_every_claim_and_a_verdict_in_each():
    claims = [r.claim for r in dashboard.rows()]
    for prefix in ["Table 1, " + t for t in ("ImageNet", "CIFAR-10", "PTB-LM", "PTB-Parsing", "De-En")] + \
                  ["Table 2, " + t for t in ("Tiny-ImageNet", "CIFAR-10", "PTB-LM", "PTB-Parsing", "De-En")] + \
                  ["Fig. 3", "Theorem 1"]:
        assert sum(c.startswith(prefix) for c in claims) == 1, prefix
    for prefix in ("Fig. 4, image", "Fig. 4, Transformer"):  # the component and the layer observations
        assert sum(c.startswith(prefix) for c in claims) == 2, prefix
    pravin = [r.claim for r in dashboard.rows() if r.paper == dashboard.PRAVIN]
    for word in ("first convolution", "Δφ", "batch normalisation", "selective backpropagation"):
        assert sum(word in c for c in pravin) == 1, word
    for r in dashboard.rows():
        text = dashboard.render(r.verdict, False)
        assert any(v in text for v in dashboard.VERDICTS), (r.claim, text)
        assert ("not tested" in text) == isinstance(r.scale, str), r.claim
        assert ("(derived)" in text) == bool(r.rule), r.claim


def test_values_are_formatted_as_myst_nb_formats_them():
    from myst_nb.core.variables import format_plain_text
    seen = 0
    for r in dashboard.rows():
        for part in [*r.verdict, *r.ours]:
            if isinstance(part, dashboard.Glue):
                raw = dashboard.glued(part.page)[part.key]
                assert part.text() == format_plain_text(raw, part.fmt)
                seen += 1
    assert seen >= 30


def test_a_missing_key_or_marker_fails_naming_it(tmp_path):
    with pytest.raises(KeyError, match="no_such_key"):
        dashboard.Glue("quickstart", "no_such_key", "s").text()
    with pytest.raises(KeyError, match="no_such_key"):
        dashboard.value("quickstart", "no_such_key")
    with pytest.raises(ValueError, match="markers"):
        dashboard._replace("no markers here", dashboard.README_MARKERS, "x", tmp_path / "README.md")


def test_derived_verdict_rules():
    assert dashboard.sign_verdict(5, 5) == "holds" and dashboard.sign_verdict(1, 5) == "does not hold"
    assert dashboard.carryover_verdict(2, 0) == "holds" and dashboard.carryover_verdict(0, 3) == "does not hold"
    assert dashboard.carryover_verdict(2, 6) == "partly holds"
    assert dashboard.gain_verdict([2.3, 0.4], [0.74, 0.53], 0.05) == "does not hold"
    assert dashboard.gain_verdict([2.3, -1.0], [0.01, 0.01], 0.05) == "partly holds"
    assert dashboard.gain_verdict([2.3], [0.01], 0.05) == "holds"


def test_observation_flags_read_as_verdict_words():
    from paramstress.corruption import vulnerability
    assert vulnerability.verdict_word(True) == "holds" and vulnerability.verdict_word(False) == "does not hold"
    assert vulnerability.verdict_word(None) == vulnerability.verdict_word(float("nan")) == "not tested"


def test_links_name_a_heading_of_the_page():
    for r in dashboard.rows():
        cells = json.loads(dashboard.notebook_path(r.page).read_text())["cells"]
        headings = {line.lstrip("#").strip() for c in cells if c["cell_type"] == "markdown"
                    for line in "".join(c["source"]).splitlines() if line.startswith("#")}
        assert r.heading in headings, f"{r.page} has no heading {r.heading!r}"


@pytest.mark.parametrize("page", PAGES)
def test_every_page_holds_one_rerun_box(page):
    cells = json.loads(dashboard.notebook_path(page).read_text())["cells"]
    boxes = [c for c in cells if c["cell_type"] == "markdown" and "".join(c["source"]).strip() == rerun.CELL_SOURCE]
    assert len(boxes) == 1, f"book/{page}.ipynb needs one markdown cell {rerun.CELL_SOURCE!r} (after its title)"
    published = profiles.published(page)
    box = rerun.box_markdown(page)
    assert f"make run NB={page} PROFILE={published}" in box and f"make run NB={page} PROFILE=ci" in box
    for f in rerun.data_files(page):
        assert f"{{download}}`{f.name}`" in box
    line = next(l for l in box.splitlines() if l.startswith("papermill "))
    given = json.loads(line.split(" -y ", 1)[1].strip("'"))
    assert {**profiles.parameters(page), **given} == profiles.parameters(page, published)
    assert re.search(rf"`{published}` \(published\) \| .* \| [\d.]+ s on ", box), "the published run's wall time"


def test_every_csv_of_the_book_is_offered_by_a_page():
    offered = {f for page in PAGES for f in rerun.data_files(page)}
    csvs = set((ROOT / "book").glob("*.csv")) | set((ROOT / "book").glob("*.csv.gz"))
    assert csvs and csvs <= offered, sorted(p.name for p in csvs - offered)


def _built() -> Path:
    if "PARAMSTRESS_BOOK_HTML" not in os.environ:  # a stale _build/ must not decide: make html sets it
        pytest.skip("no built book named (make html runs these checks with PARAMSTRESS_BOOK_HTML=_build/html)")
    folder = Path(os.environ["PARAMSTRESS_BOOK_HTML"])
    assert (folder / "book" / "intro.html").exists(), f"PARAMSTRESS_BOOK_HTML={folder} holds no built book"
    return folder


def _text(fragment: str) -> str:
    text = htmllib.unescape(re.sub(r"<[^>]+>", "", fragment)).replace("\u2019", "'")  # Sphinx smart quotes
    return " ".join(text.split())


def test_built_dashboard_shows_the_pages_values():
    page = (_built() / "book" / "intro.html").read_text()
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", page, flags=re.S)
    cells = [[_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.S)] for r in rows]
    cells = [c for c in cells if len(c) == 5]
    expected = sorted(dashboard.rows(), key=lambda r: r.paper != dashboard.SUN)  # one table per paper
    assert len(cells) == len(expected)
    for got, r in zip(cells, expected):
        assert got[0] == " ".join(r.claim.replace("’", "'").split())
        assert got[1].startswith(" ".join(dashboard.render(r.verdict, False).split())), (r.claim, got[1])
        assert got[4] == " ".join(dashboard.render(r.ours, False).split()), (r.claim, got[4])
        assert got[3] == " ".join(dashboard.render(r.paper_number, False).split()), (r.claim, got[3])
    links = re.findall(r'<td[^>]*>\s*<p>\s*<a class="reference internal" href="([\w-]+)\.html#([\w-]+)"', page)
    assert [p for p, _ in links] == [r.page for r in expected]  # each claim links to a section of its page
    for target, anchor in links:
        assert f'id="{anchor}"' in (_built() / "book" / f"{target}.html").read_text(), (target, anchor)


@pytest.mark.parametrize("page", PAGES)
def test_built_page_shows_its_rerun_box_with_downloads(page):
    folder = _built()
    text = (folder / "book" / f"{page}.html").read_text()
    shown = _text(text)  # the code block is highlighted: tags inside the command
    assert "Re-run this page" in shown and f"make run NB={page} PROFILE={profiles.published(page)}" in shown
    for f in rerun.data_files(page):
        links = re.findall(rf'href="(\.\./_downloads/[0-9a-f]+/{re.escape(f.name)})"', text)
        assert links, f"{page}.html has no download link to {f.name}"
        assert (folder / "book" / links[0]).resolve().exists()
