"""What every executed notebook states about its own run (issue #2, item 6).

A notebook opens a :class:`Run` right after its parameters cell and calls
:meth:`Run.report` in its last cell. The report shows the profile (and any
parameter that differs from it), all parameters, the data sets used with their
source and checksum, the device, package versions, the git commit and the wall time.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
import time
from typing import Any

import torch

from paramstress.book import profiles

PACKAGES = ("paramstress", "torch", "torchvision", "numpy", "pandas", "scipy", "seaborn",
            "matplotlib", "papermill", "nbval", "jupyter-book", "myst-nb", "fairseq-fixed", "nltk", "sacrebleu",
            "sentencepiece")


def device_description(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {os.cpu_count()} cores"


GIT_COMMIT_ENV = "PARAMSTRESS_GIT_COMMIT"


def git_commit() -> str:
    """The checkout's commit (``+ uncommitted changes`` if code differs from it).

    ``$PARAMSTRESS_GIT_COMMIT``, when set, names the commit of a copied tree and takes
    precedence: a copy sent to a remote GPU machine may carry no ``.git``, or a stale one,
    whose git would name an older commit "+ uncommitted changes" for a clean, newer tree."""
    copied = os.environ.get(GIT_COMMIT_ENV, "").strip()
    if copied:
        return f"{copied} (copied tree; commit named by ${GIT_COMMIT_ENV})"
    try:
        root = profiles.repo_root()
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        # executed notebooks and their CSVs in book/ are outputs of runs (a `make book` rewrites
        # them one after another), not changes to the code that produced this run
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)book/*.ipynb", ":(exclude)book/*.csv"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError, profiles.ProfileError):
        return "unknown (not a git checkout)"
    if not commit:
        return "unknown (not a git checkout)"
    return commit + (" + uncommitted changes" if dirty else "")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def pick_device(choice: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is passed to torch."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} requested but CUDA is not available; use device='auto' or 'cpu'")
    return device


class Run:
    """Collects what a notebook run must state about itself.

    ``Run("quickstart", globals())`` takes the notebook's parameters (the keys of its
    profile file) out of the notebook's namespace and starts the clock.
    """

    def __init__(self, notebook: str, namespace: dict[str, Any]):
        keys = profiles.parameters(notebook, profiles.DEFAULT_PROFILE).keys()
        missing = [k for k in keys if k not in namespace]
        if missing:
            raise profiles.ProfileError(f"{notebook}: parameters {missing} are not set in the notebook")
        self.notebook = notebook
        self.parameters = {k: namespace[k] for k in keys}
        self.profile = str(self.parameters.get("profile", "?"))
        self.datasets: list[dict[str, Any]] = []
        self.device: torch.device | None = None
        self.started = time.perf_counter()
        self.started_at = _dt.datetime.now(_dt.timezone.utc)

    def use_data(self, data) -> None:
        """Record a dataset (anything with ``provenance()``) used by the run."""
        entry = data.provenance()
        if entry not in self.datasets:
            self.datasets.append(entry)

    def use_device(self, device: torch.device) -> torch.device:
        self.device = torch.device(device)
        return self.device

    def record(self) -> dict[str, Any]:
        return {
            "notebook": self.notebook,
            "profile": self.profile,
            "modified_from_profile": profiles.differences(self.notebook, self.profile, self.parameters),
            "parameters": self.parameters,
            "data": self.datasets,
            "device": device_description(self.device or torch.device("cpu")),
            "packages": package_versions(),
            "git_commit": git_commit(),
            "started_utc": self.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            "wall_time_s": round(time.perf_counter() - self.started, 1),
        }

    def markdown(self) -> str:
        r = self.record()
        changed = r["modified_from_profile"]
        profile = r["profile"] + (
            " (modified: " + ", ".join(f"{k}={b!r} instead of {a!r}" for k, (a, b) in changed.items()) + ")"
            if changed else "")
        rows = [("profile", profile),
                ("parameters", ", ".join(f"{k}={v!r}" for k, v in r["parameters"].items() if k != "profile"))]
        for d in r["data"]:
            sizes = [f"{v:,} {k}" for k, v in d.items()
                     if k not in ("dataset", "source", "checksum") and isinstance(v, int) and not isinstance(v, bool)]
            rows.append((f"data: {d['dataset']}", " · ".join([str(d.get("source", "?")), f"MD5 {d.get('checksum', '')}"]
                                                              + ([" / ".join(sizes)] if sizes else []))))
        rows += [("device", r["device"]),
                 ("packages", ", ".join(f"{k} {v}" for k, v in r["packages"].items())),
                 ("git commit", r["git_commit"]),
                 ("started (UTC)", r["started_utc"]),
                 ("wall time", f"{r['wall_time_s']:.1f} s")]
        lines = ["**Provenance of this run**", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
        return "\n".join(lines)

    def report(self):
        """Display the provenance table (call in the notebook's last cell)."""
        from IPython.display import Markdown

        return Markdown(self.markdown())


def published_table(notebook: str, contains: str) -> "pd.DataFrame":
    """The table a committed executed page printed: the HTML output of the one code cell of
    ``book/<notebook>.ipynb`` whose source contains ``contains``, read by
    :func:`pandas.read_html`, a two-row pivot header flattened to one name per column (the
    index names, then the column values as text). For pages that were
    executed elsewhere (a GPU) and whose CSVs lack a quantity their tables show. Fails, naming
    the cells, when no cell or more than one matches or the cell printed no table."""
    import io
    import json

    import pandas as pd

    path = profiles.repo_root() / "book" / f"{notebook}.ipynb"
    if not path.exists():
        raise FileNotFoundError(f"no executed page {path}")
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    hits = [c for c in cells if contains in "".join(c["source"])]
    if len(hits) != 1:
        raise ValueError(f"{len(hits)} code cells of {path.name} contain {contains!r}; give a text that "
                         "names exactly one")
    html = [o["data"]["text/html"] for o in hits[0].get("outputs", []) if "text/html" in o.get("data", {})]
    if not html:
        raise ValueError(f"the cell of {path.name} containing {contains!r} printed no table")
    text = html[-1] if isinstance(html[-1], str) else "".join(html[-1])
    table = pd.read_html(io.StringIO(text))[0]
    if isinstance(table.columns, pd.MultiIndex):  # a pivot's header: index names below, column values above
        table.columns = [[str(x) for x in col if not str(x).startswith("Unnamed")][-1] for col in table.columns]
    return table
