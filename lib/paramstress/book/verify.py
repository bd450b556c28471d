"""Does a fresh run give the published numbers? ``make verify``.

    python -m paramstress.book.verify                      # every page published at `local`
    python -m paramstress.book.verify quickstart vulnerability --out /tmp/verify
    python -m paramstress.book.verify --jobs 2                  # two pages at a time, as make book
    python -m paramstress.book.verify --compare-only /tmp/verify   # a folder already executed

Each page published at ``local`` is executed by the runner at that profile into a scratch
folder (never into ``book/``), and then compared with the committed page:

- every glued value (the ``{glue}`` keys the book and its dashboard paste), in every
  representation it was recorded in (the plain text myst-nb pastes among them; a difference
  prints that text), and the set of keys;
- every tidy CSV the page writes (``book/<page>.*.csv`` and ``.csv.gz``), by content (a
  gzip file's header holds its write time, so the decompressed bytes are compared); a CSV
  that differs is read back to name the first differing cells. Columns that hold wall times
  (:data:`TIMING_COLUMNS`, e.g. the seconds of each training epoch in quickstart's history)
  differ on every run that trains, so they are left out of the comparison; every other cell
  must be equal.

Each difference is printed; the exit status is 1 if there is any, 2 if a run failed. Run it
pinned as ``make book`` is (``make verify`` does: ``REPRO`` in the Makefile), otherwise a
machine's thread count or instruction set can move the last bits of a trained model.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from paramstress.book import profiles
from paramstress.book.dashboard import RECORD, glue_outputs

#: CSV columns holding wall times, left out of the comparison (they differ on every fresh run).
TIMING_COLUMNS = ("seconds",)

__all__ = ["TIMING_COLUMNS", "Difference", "glued_values", "page_tables", "compare_page", "compare", "main"]


@dataclass(frozen=True)
class Difference:
    """One way a fresh run differs from the published page."""

    page: str
    kind: str  # "glue" or "csv"
    name: str  # the glue key, or the CSV's file name
    published: str
    fresh: str

    def __str__(self) -> str:
        return f"{self.page}: {self.kind} {self.name}: published {self.published} -> fresh {self.fresh}"


def glued_values(notebook: Path) -> dict[str, dict]:
    """The values a notebook glues, ``{key: the output's data}``: every representation it was
    recorded in (:func:`paramstress.book.dashboard.glue_outputs`), all of which must match."""
    return glue_outputs(json.loads(Path(notebook).read_text())["cells"])


def _shown(data: dict | None) -> str:
    """A glued value as a difference prints it: its plain text (the text the book pastes)."""
    if data is None:
        return "<absent>"
    for mime in ("text/plain", RECORD):
        if mime in data:
            value = data[mime]
            return _short("".join(value) if isinstance(value, list) else str(value))
    return _short(json.dumps(data, sort_keys=True))


def page_tables(folder: Path, page: str) -> dict[str, bytes]:
    """The page's tidy CSVs in ``folder``, ``{file name: content}`` (gzip files decompressed)."""
    found = {}
    for path in sorted(Path(folder).glob(f"{page}.*.csv")) + sorted(Path(folder).glob(f"{page}.*.csv.gz")):
        found[path.name] = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return found


def _short(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _csv_difference(published: bytes, fresh: bytes) -> tuple[str, str]:
    """Where two CSVs differ: their shapes, or the first differing cells."""
    import io

    import pandas as pd

    try:
        a, b = pd.read_csv(io.BytesIO(published)), pd.read_csv(io.BytesIO(fresh))
    except Exception:  # not a table pandas reads: say only that the bytes differ
        return f"{len(published)} bytes", f"{len(fresh)} bytes"
    if a.shape != b.shape or list(a.columns) != list(b.columns):
        return f"shape {a.shape} {list(a.columns)[:6]}", f"shape {b.shape} {list(b.columns)[:6]}"
    cells = [(i, c) for c in a.columns for i in a.index
             if not (a.at[i, c] == b.at[i, c] or (pd.isna(a.at[i, c]) and pd.isna(b.at[i, c])))]
    if not cells:  # equal as read (e.g. the same numbers written differently)
        return "same values, other text", "same values, other text"
    shown = cells[:3]
    more = f" (+{len(cells) - 3} more cells)" if len(cells) > 3 else ""
    return ("; ".join(f"row {i} {c} = {a.at[i, c]}" for i, c in shown),
            "; ".join(f"row {i} {c} = {b.at[i, c]}" for i, c in shown) + more)


def _equal_but_timings(published: bytes, fresh: bytes) -> bool:
    """Two CSVs with the same columns whose cells are equal outside :data:`TIMING_COLUMNS`."""
    import io

    import pandas as pd

    try:
        a, b = pd.read_csv(io.BytesIO(published)), pd.read_csv(io.BytesIO(fresh))
    except Exception:
        return False
    timing = [c for c in TIMING_COLUMNS if c in a.columns]
    if not timing or list(a.columns) != list(b.columns):
        return False
    return a.drop(columns=timing).equals(b.drop(columns=timing))


def compare_page(page: str, published_dir: Path, fresh_dir: Path) -> list[Difference]:
    """Every difference between ``published_dir``'s and ``fresh_dir``'s executed ``page``."""
    published_nb, fresh_nb = Path(published_dir) / f"{page}.ipynb", Path(fresh_dir) / f"{page}.ipynb"
    if not fresh_nb.exists():
        return [Difference(page, "page", f"{page}.ipynb", "executed", "missing: not executed")]
    out = []
    old, new = glued_values(published_nb), glued_values(fresh_nb)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(Difference(page, "glue", key, _shown(old.get(key)), _shown(new.get(key))))
    old_t, new_t = page_tables(published_dir, page), page_tables(fresh_dir, page)
    for name in sorted(set(old_t) | set(new_t)):
        if name not in old_t or name not in new_t:
            out.append(Difference(page, "csv", name, "present" if name in old_t else "<absent>",
                                  "present" if name in new_t else "<absent>"))
        elif old_t[name] != new_t[name] and not _equal_but_timings(old_t[name], new_t[name]):
            out.append(Difference(page, "csv", name, *_csv_difference(old_t[name], new_t[name])))
    return out


def compare(pages: list[str], fresh_dir: Path, published_dir: Path | None = None) -> list[Difference]:
    published_dir = Path(published_dir) if published_dir else profiles.repo_root() / "book"
    return [d for page in pages for d in compare_page(page, published_dir, Path(fresh_dir))]


def local_pages() -> list[str]:
    """The pages published at ``local``: what ``make book`` executes and ``make verify`` checks."""
    return [name for name in profiles.notebooks() if profiles.published(name) == "local"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="paramstress-verify", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pages", nargs="*", help="pages to check (default: every page published at local)")
    ap.add_argument("--out", default=None, help="scratch folder for the fresh runs (default: a new temporary one)")
    ap.add_argument("--compare-only", metavar="DIR", default=None,
                    help="execute nothing: compare the pages already executed in DIR")
    ap.add_argument("--jobs", "-j", default=1, type=int,
                    help="pages executed side by side (the runner's --jobs); the numbers do not depend on it")
    ap.add_argument("--order", choices=("chain", "given"), default="chain",
                    help="the runner's --order: which ready page starts first")
    args = ap.parse_args(argv)
    everything = local_pages()
    pages = args.pages or everything
    unknown = [p for p in pages if p not in everything]
    if unknown:  # before any kernel starts
        print(f"error: {unknown} not published at local; make verify checks {everything}", file=sys.stderr)
        return 2
    if args.compare_only:
        fresh = Path(args.compare_only)
    else:
        from paramstress.book import runner

        fresh = Path(args.out or tempfile.mkdtemp(prefix="paramstress-verify."))
        started = time.perf_counter()
        status = runner.main([*pages, "--profile", "local", "--out", str(fresh), "--jobs", str(args.jobs), "--order", args.order])
        print(f"executed {len(pages)} pages into {fresh} in {time.perf_counter() - started:.0f} s", flush=True)
        if status != 0:
            return 2
    differences = compare(pages, fresh)
    for d in differences:
        print(d)
    counts = {p: sum(d.page == p for d in differences) for p in pages}
    width = max(map(len, pages))
    print(f"\n{'page':<{width}}  glued  csvs  differences")
    for p in pages:
        print(f"{p:<{width}}  {len(glued_values(profiles.repo_root() / 'book' / f'{p}.ipynb')):>5}  "
              f"{len(page_tables(profiles.repo_root() / 'book', p)):>4}  {counts[p]:>11}")
    print(f"{len(differences)} differences against the published pages" if differences
          else "0 differences: every glued value and CSV equals the published pages'")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
