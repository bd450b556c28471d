"""The "Re-run this page" box of every book page (issue 27 point 5), from one source.

:func:`box_markdown` writes, for one notebook: the ``make run`` lines and the plain
``papermill`` line of its published profile, each profile's changes from the defaults
(``params/<page>.yml``) with its measured cost (the wall time and device in the provenance
table of the executed copy: ``book/<page>.ipynb`` for the published profile,
``tests/notebooks/<page>.ipynb`` for ``ci``; a profile with no executed copy says so), and a
download link for each of the page's CSVs. Nothing in it is typed per page, so a re-executed
page's box shows its new time at the next build.

It is a Sphinx extension (``_config.yml``: ``extra_extensions``): a markdown cell holding
only the directive ``{rerun-page}`` renders the box of the page it is in.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from paramstress.book import profiles
from paramstress.book.dashboard import provenance

DIRECTIVE = "rerun-page"
#: The source of the markdown cell every page holds (tests/test_dashboard.py checks it).
CELL_SOURCE = f"```{{{DIRECTIVE}}}\n```"


def data_files(page: str) -> list[Path]:
    """The CSVs a page wrote beside itself (``book/<page>.csv``, ``book/<page>.*.csv[.gz]``)."""
    book = profiles.repo_root() / "book"
    found = {p for pattern in (f"{page}.csv", f"{page}.*.csv", f"{page}.csv.gz", f"{page}.*.csv.gz")
             for p in book.glob(pattern)}
    return sorted(found)


def changes(page: str, profile: str) -> dict[str, Any]:
    """What ``profile`` changes from the notebook's defaults (its parameters cell)."""
    base = profiles.parameters(page, profiles.DEFAULT_PROFILE)
    values = profiles.parameters(page, profile)
    return {k: v for k, v in values.items() if k != "profile" and base.get(k) != v}


def _short(v: Any, width: int = 60) -> str:
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
    return text if len(text) <= width else text[: width - 1] + "…"


def measured(page: str, profile: str) -> str:
    """The wall time and device of the executed copy of ``page`` at ``profile``, if the repository
    holds one (the published page, or the ``ci`` copy nbval re-runs)."""
    published = profiles.published(page)
    copies = [(False, "this page")] if profile == published else []
    copies += [(True, "its nbval copy, tests/notebooks/")] if profile == "ci" else []
    for ci, where in copies:
        p = provenance(page, ci)
        if p.get("profile", "").split(" ")[0] == profile and "wall time" in p:
            return f"{p['wall time']} on {p.get('device', '?')} ({where}, {p.get('started (UTC)', '?')[:10]})"
    return "not measured in this repository"


def papermill_line(page: str, profile: str, out: str) -> str:
    values = {"profile": profile, **changes(page, profile)}
    return f"papermill book/{page}.ipynb {out} -y '{json.dumps(values)}'"


def box_markdown(page: str) -> str:
    """The box of ``page`` as MyST markdown (a folded admonition)."""
    published = profiles.published(page)
    where = "a GPU" if published == "gpu" else "a CPU"
    lines = [":::{admonition} Re-run this page", ":class: dropdown tip", "",
             f"This page is published at the `{published}` profile. From the repository root:", "",
             "```bash",
             f"make run NB={page} PROFILE=ci     # a small check → runs/ci/{page}.ipynb",
             f"make run NB={page} PROFILE={published}  # this page's run, on {where} → book/{page}.ipynb",
             f"# the same run with plain papermill (the runner also checks the data first):",
             papermill_line(page, published, f"/tmp/{page}.ipynb"),
             "```", "",
             "| profile | changes from the defaults | measured cost |", "| --- | --- | --- |"]
    for profile in profiles.PROFILES:
        diff = changes(page, profile)
        text = ", ".join(f"`{k}={_short(v)}`" for k, v in diff.items()) or "none (the defaults)"
        lines.append(f"| `{profile}`{' (published)' if profile == published else ''} | "
                     f"{text.replace('|', '/')} | {measured(page, profile)} |")
    lines += ["", f"Every parameter and profile: `params/{page}.yml`. A measured cost is the wall time in the "
                  "provenance table of the executed copy: the notebook's own clock, from its first cell to its last, "
                  "with the trained models and sweeps it found cached (a cold run trains them too). GPU runs, data and the book's build times: "
                  "[Running the book](running.md).", ""]
    files = data_files(page)
    if files:
        lines.append("Download this page's data: " + ", ".join(f"{{download}}`{f.name}`" for f in files) + ".")
    else:
        lines.append("This page writes no CSV.")
    lines.append(":::")
    return "\n".join(lines)


def setup(app):  # the Sphinx extension
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective

    class RerunPage(SphinxDirective):
        has_content = False

        def run(self):
            page = Path(self.env.docname).name
            root = profiles.repo_root()
            for dep in (root / "params" / f"{page}.yml", root / "tests" / "notebooks" / f"{page}.ipynb"):
                if dep.exists():
                    self.env.note_dependency(str(dep))
            holder = nodes.container()
            self.state.nested_parse(StringList(box_markdown(page).splitlines(), source=self.env.docname),
                                    self.content_offset, holder)
            return holder.children

    app.add_directive(DIRECTIVE, RerunPage)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
