"""Summaries of parameter-corruption sweeps in the layout of Sun et al. (AAAI 2021), Table 1.

Table 1 of the paper ("Comparisons of gradient-based corruption and random corruption
under the corruption constraint (L∞), with further study on the number n of parameters
to be corrupted") has one row per corruption constraint — ``n = k`` (every parameter may
change) with ``ε ∈ {10⁻⁴, …, 1}``, then ``n = 100`` with ``ε ∈ {10⁻², …, 10²}`` —
preceded by a row with the score of the uncorrupted model ("w/o corruption"), and two
columns per task, "Random" (Eq. 5) and "Proposed" (gradient-based, Eq. 10). Each cell
is the corrupted score with its change from the clean score in parentheses,
e.g. ``93.3 (-1.0)``; a ``*`` replaces scores within 0.1 of the clean one. Arrows in
the header say whether a higher (accuracy, BLEU, UAS: ↑) or lower (log perplexity: ↓)
score is better.

What this module adds to the paper's layout (and states here so pages can cite it):

- Random cells are the mean over the random trials ± their sample standard deviation
  (``ddof = 1``); the paper reports one number and does not say how many trials it
  averaged. The ``*`` rule is applied to the mean change: ``|mean − clean| < 0.1``.
- Rows are matched across tasks by ``n`` *relative to the task's own* ``k`` (``n = k``
  means all of that model's parameters), so tasks with models of different sizes share
  rows, as in the paper.

Functions:

- :func:`trial_summary`: tidy mean/std/change per (task, method, n, ε) of any metric of
  :func:`paramstress.corruption.sweeps.corruption_sweep` results.
- :func:`table1`: the paper's layout for our results; :func:`format_table1` the same
  layout for any tidy summary (used for the paper's own numbers).
- :func:`paper_table1`: the paper's Table 1 numbers, all five columns (ResNet-34 on
  ImageNet and CIFAR-10, LSTM PTB-LM, MLP PTB-Parsing, Transformer De-En), transcribed
  from the paper (tidy, or in the layout).
- :func:`central_claim`: at each ε where random corruption costs less than a tolerance
  (1 accuracy point), the cost of the gradient-based corruption (the paper's claim that
  random trials "can hardly induce the worst accuracy degradation").
- :func:`nonfinite_as_uniform`: rows computed under the non-finite rule ``"wrong"`` re-scored
  under ``"uniform"`` (:data:`paramstress.sweep.NONFINITE_RULES`), for the pages published at
  ``gpu`` that cannot be re-executed; :func:`subspace_match`: which parameter subspace
  (:data:`paramstress.corruption.SUBSPACES`) reproduces the paper's sparse (``n = 100``) rows.
- :func:`loss_change_ratio`: mean random loss change over the gradient-based one, per ε
  (Theorem 1: ``O(ε²)`` against ``O(ε)``, so the ratio shrinks like ``ε``), and
  :func:`loss_scaling`: the measured log-log slopes of both changes and of their ratio.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "central_claim_verdicts",
    "METHOD_LABELS",
    "CLEAN_ROW",
    "eps_label",
    "row_label",
    "trial_summary",
    "format_table1",
    "table1",
    "paper_table1",
    "paper_table1_clean",
    "PAPER_TASKS",
    "central_claim",
    "nonfinite_as_uniform",
    "relative_damage",
    "subspace_match",
    "loss_change_ratio",
    "loss_scaling",
]

#: Column labels of the two approaches, as in the paper.
METHOD_LABELS: dict[str, str] = {"random": "Random", "gradient": "Proposed"}
#: Label of the row holding the uncorrupted score.
CLEAN_ROW = "w/o corruption"

_SUMMARY_COLUMNS = ["task", "method", "n_label", "n", "k", "eps", "trials", "mean", "std", "min", "max",
                    "clean", "delta", "close"]


# --------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------

def eps_label(eps: float) -> str:
    """``ε`` as the row labels write it: powers of ten as ``1e-4``, ``1``, ``1e2``;
    anything else with three significant digits (``3e-3`` → ``0.003``, ``0.25``)."""
    eps = float(eps)
    if eps > 0 and math.isfinite(eps):
        exponent = round(math.log10(eps))
        if math.isclose(eps, 10.0 ** exponent, rel_tol=1e-9):
            return "1" if exponent == 0 else f"1e{exponent}"
    return f"{eps:.3g}"


def row_label(n_label: Any, eps: float) -> str:
    """A Table 1 row label, e.g. ``n=k, ε=1e-4`` or ``n=100, ε=1e2``."""
    return f"n={n_label}, ε={eps_label(eps)}"


def _n_label(n: Any, k: Any) -> str:
    if n is None or (isinstance(n, str) and n == "k"):
        return "k"
    n = int(n)
    return "k" if k is not None and not pd.isna(k) and n == int(k) else str(n)


# --------------------------------------------------------------------------------------
# Our results
# --------------------------------------------------------------------------------------

def _with_task(df: pd.DataFrame | Mapping[str, pd.DataFrame], task_col: str) -> pd.DataFrame:
    if isinstance(df, Mapping):
        frames = []
        for task, frame in df.items():
            frame = frame.copy()
            frame[task_col] = task
            frames.append(frame)
        if not frames:
            raise ValueError("no results: the mapping of task → sweep results is empty")
        return pd.concat(frames, ignore_index=True)
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a DataFrame or a mapping task → DataFrame, got {type(df).__name__}")
    df = df.copy()
    if task_col not in df.columns:
        df[task_col] = ""
    return df


def _clean_scores(df: pd.DataFrame, clean: Any, metric: str, task_col: str) -> dict[str, float]:
    tasks = list(dict.fromkeys(df[task_col]))
    if clean is None:
        base = f"base_{metric}"
        if base not in df.columns:
            raise ValueError(f"clean=None takes the clean score from the column {base!r}, which is missing; "
                             "pass clean={task: score}")
        out = {}
        for task in tasks:
            values = df.loc[df[task_col] == task, base].unique()
            if len(values) != 1:
                raise ValueError(f"task {task!r} has {len(values)} different {base} values; pass clean explicitly")
            out[task] = float(values[0])
        return out
    if isinstance(clean, Mapping):
        missing = [t for t in tasks if t not in clean]
        if missing:
            raise ValueError(f"clean has no score for tasks {missing}; it has {list(clean)}")
        return {t: float(clean[t]) for t in tasks}
    if len(tasks) != 1:
        raise ValueError(f"a single clean score was given for {len(tasks)} tasks {tasks}; pass clean={{task: score}}")
    return {tasks[0]: float(clean)}


def trial_summary(
    df: pd.DataFrame | Mapping[str, pd.DataFrame],
    clean: float | Mapping[str, float] | None = None,
    *,
    metric: str = "accuracy",
    task_col: str = "task",
    p: float | None = None,
    close_below: float = 0.1,
) -> pd.DataFrame:
    """Per (task, method, n, ε): the number of trials and the mean, sample standard
    deviation (``ddof = 1``; NaN for one trial), min and max of ``metric`` over them,
    the clean score, ``delta = mean − clean`` and ``close = |delta| < close_below``
    (Table 1's ``*``). When the rows have a ``nonfinite`` column (% of examples with
    non-finite logits, :func:`paramstress.sweep.evaluate`), a last column ``nonfinite``
    holds its mean over the trials.

    ``df``: rows of :func:`paramstress.corruption.sweeps.corruption_sweep` (columns method, p, n,
    k, eps, trial and ``metric``), with a ``task_col`` column for several tasks, or a
    mapping ``task → rows``. ``clean``: the uncorrupted score per task (a mapping, or a
    number for one task); ``None`` takes it from the ``base_<metric>`` column. All rows
    must share one ``p`` unless ``p`` picks one. ``n_label`` is ``"k"`` where ``n = k``.
    Ordered by task (first appearance), method (random, gradient), ``n = k`` first then
    ``n`` descending, ε ascending.
    """
    df = _with_task(df, task_col)
    needed = ["method", "p", "n", "k", "eps", metric]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"results lack columns {missing}; expected corruption_sweep rows with {needed}")
    if p is not None:
        df = df[df["p"].astype(float) == float(p)]
        if df.empty:
            raise ValueError(f"no rows with p = {p}")
    ps = df["p"].astype(float).unique()
    if len(ps) != 1:
        raise ValueError(f"results mix the norms p = {sorted(ps)}; Table 1 is for one p: pass p=")
    unknown = sorted(set(df["method"]) - set(METHOD_LABELS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected {list(METHOD_LABELS)}")
    scores = _clean_scores(df, clean, metric, task_col)
    tasks = list(dict.fromkeys(df[task_col]))
    df = df.assign(n_label=[_n_label(n, k) for n, k in zip(df["n"], df["k"])],
                   eps=df["eps"].astype(float), _value=df[metric].astype(float))
    extra = {}
    if "nonfinite" in df.columns and metric != "nonfinite":
        df = df.assign(_nonfinite=df["nonfinite"].astype(float))
        extra["nonfinite"] = ("_nonfinite", "mean")
    grouped = df.groupby([task_col, "method", "n_label", "eps"], sort=False)
    out = grouped.agg(n=("n", "first"), k=("k", "first"), trials=("_value", "size"), mean=("_value", "mean"),
                      std=("_value", lambda s: s.std(ddof=1) if len(s) > 1 else np.nan),
                      min=("_value", "min"), max=("_value", "max"), **extra).reset_index()
    out = out.rename(columns={task_col: "task"})
    out["clean"] = out["task"].map(scores)
    out["delta"] = out["mean"] - out["clean"]
    out["close"] = out["delta"].abs() < close_below
    out["_task"] = out["task"].map({t: i for i, t in enumerate(tasks)})
    out["_method"] = out["method"].map({m: i for i, m in enumerate(METHOD_LABELS)})
    out["_n"] = [-math.inf if lab == "k" else -float(n) for lab, n in zip(out["n_label"], out["n"])]
    out = out.sort_values(["_task", "_method", "_n", "eps"], kind="stable").reset_index(drop=True)
    return out[_SUMMARY_COLUMNS + list(extra)]


def _number(value: float, decimals: int) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{decimals}f}"


def _cell(row: Mapping[str, Any], decimals: int, star: bool, show_std: bool, show_nonfinite: bool = False) -> str:
    nonfinite = float(row.get("nonfinite", np.nan)) if show_nonfinite else np.nan
    if star and bool(row["close"]) and not nonfinite > 0:
        return "*"
    mean, std, delta = float(row["mean"]), float(row.get("std", np.nan)), float(row["delta"])
    if math.isnan(mean):
        return "—"
    text = _number(mean, decimals)
    if show_std and not math.isnan(std):
        text += f" ± {_number(std, decimals)}"
    if math.isfinite(delta):
        text += f" ({delta:+.{decimals}f})"
    if nonfinite > 0:
        text += f" [{_number(nonfinite, decimals)} % non-finite]"
    return text


def format_table1(
    summary: pd.DataFrame,
    clean: Mapping[str, float],
    *,
    metric_label: str = "Acc",
    higher_is_better: bool = True,
    rows: Sequence[tuple[Any, float]] | None = None,
    task_labels: Mapping[str, str] | None = None,
    decimals: int = 1,
    star: bool = True,
    show_std: bool = True,
    show_nonfinite: bool = False,
) -> pd.DataFrame:
    """Lay out a :func:`trial_summary`-style frame (columns task, method, n_label, eps,
    mean, std, delta, close) as Table 1: index ``w/o corruption`` then one row per
    (n, ε) (``rows`` as ``(n_label, eps)`` pairs, ``n_label`` ``"k"`` or an integer;
    default: all in the summary's order), columns ``(task header, Random|Proposed)``
    with the header ``"<task> (<metric_label> ↑|↓)"``. Cells are strings; an absent
    combination is ``—``. ``show_nonfinite``: cells whose rows had examples with non-finite
    logits (the summary's ``nonfinite`` column, mean % over the trials, must be there) end
    with ``[x % non-finite]``; such a cell is never a ``*``.
    """
    if show_nonfinite and "nonfinite" not in summary.columns:
        raise ValueError("show_nonfinite=True needs the summary's 'nonfinite' column: pass sweep rows that have "
                         "a 'nonfinite' column (paramstress.sweep.evaluate reports it), or show_nonfinite=False")
    arrow = "↑" if higher_is_better else "↓"
    labels = dict(task_labels or {})
    tasks = list(dict.fromkeys(summary["task"]))
    missing = [t for t in tasks if t not in clean]
    if missing:
        raise ValueError(f"clean has no score for tasks {missing}")
    if rows is None:
        keys = list(dict.fromkeys(zip(summary["n_label"].astype(str), summary["eps"].astype(float))))
        # n = k rows first, then n descending; ε ascending within n
        keys.sort(key=lambda key: (-math.inf if key[0] == "k" else -float(key[0]), key[1]))
    else:
        keys = [(_n_label(n, None), float(eps)) for n, eps in rows]
    lookup = {(r["task"], r["method"], str(r["n_label"]), float(r["eps"])): r for r in summary.to_dict("records")}
    columns = pd.MultiIndex.from_tuples(
        [(f"{labels.get(t, t)} ({metric_label} {arrow})", METHOD_LABELS[m]) for t in tasks for m in METHOD_LABELS])
    body = []
    clean_row = []
    for t in tasks:
        clean_row += [_number(float(clean[t]), decimals)] * len(METHOD_LABELS)
    body.append(clean_row)
    for n_label, eps in keys:
        line = []
        for t in tasks:
            for m in METHOD_LABELS:
                r = lookup.get((t, m, n_label, eps))
                line.append("—" if r is None else _cell(r, decimals, star, show_std and m == "random",
                                                        show_nonfinite))
        body.append(line)
    index = pd.Index([CLEAN_ROW] + [row_label(n, e) for n, e in keys], name="")
    return pd.DataFrame(body, index=index, columns=columns)


def table1(
    df: pd.DataFrame | Mapping[str, pd.DataFrame],
    clean: float | Mapping[str, float] | None = None,
    *,
    metric: str = "accuracy",
    metric_label: str = "Acc",
    higher_is_better: bool = True,
    rows: Sequence[tuple[Any, float]] | None = None,
    task_col: str = "task",
    task_labels: Mapping[str, str] | None = None,
    p: float | None = None,
    decimals: int = 1,
    close_below: float = 0.1,
    star: bool = True,
    show_std: bool = True,
    show_nonfinite: bool = False,
) -> pd.DataFrame:
    """Table 1 of Sun et al. (2021) for corruption-sweep results of one or more tasks.

    ``df`` and ``clean`` as in :func:`trial_summary` (``clean``: score without
    corruption per task; ``None``: the sweep's ``base_<metric>``). ``metric`` is the
    column shown (``accuracy`` in %, or e.g. a log perplexity column later) and
    ``higher_is_better`` its direction (the header arrow ↑/↓). ``rows``: the
    ``(n, ε)`` rows to show, ``n`` as ``"k"``/``None`` (all parameters) or an integer;
    by default every combination in ``df``. Random cells: ``mean ± std (Δ)`` over the
    trials; Proposed cells: ``score (Δ)``; ``*`` where ``|Δ| < close_below`` (0.1,
    the paper's rule), ``Δ`` being the change from the clean score. ``show_nonfinite``:
    the share of examples with non-finite logits beside each cell that had any
    (:func:`format_table1`; needs the rows' ``nonfinite`` column).
    """
    if show_nonfinite:
        frame = df if isinstance(df, pd.DataFrame) else pd.concat(list(df.values())) if df else None
        if frame is not None and "nonfinite" not in frame.columns:
            raise ValueError("show_nonfinite=True needs a 'nonfinite' column in the rows "
                             "(paramstress.corruption.sweeps.corruption_sweep writes one); or pass show_nonfinite=False")
    summary = trial_summary(df, clean, metric=metric, task_col=task_col, p=p, close_below=close_below)
    scores = dict(zip(summary["task"], summary["clean"]))
    return format_table1(summary, scores, metric_label=metric_label, higher_is_better=higher_is_better,
                         rows=rows, task_labels=task_labels, decimals=decimals, star=star, show_std=show_std,
                         show_nonfinite=show_nonfinite)


# --------------------------------------------------------------------------------------
# The paper's own numbers
# --------------------------------------------------------------------------------------

#: The paper's clean scores (Table 1, "w/o corruption"): top-1 accuracy (%) of ResNet-34 on
#: ImageNet and CIFAR-10, log perplexity of the LSTM on PTB, UAS (%) of the MLP parser on PTB,
#: BLEU of the fairseq Transformer on IWSLT14 De-En.
_PAPER_CLEAN = {"ImageNet": 72.5, "CIFAR-10": 94.3, "PTB-LM": 4.25, "PTB-Parsing": 87.3, "De-En": 35.33}
#: Per task of the paper's Table 1: (base model, metric label, higher is better, decimals printed).
PAPER_TASKS: dict[str, tuple[str, str, bool, int]] = {
    "ImageNet": ("ResNet-34", "Acc", True, 1),
    "CIFAR-10": ("ResNet-34", "Acc", True, 1),
    "PTB-LM": ("LSTM", "Log PPL", False, 2),
    "PTB-Parsing": ("MLP", "UAS", True, 1),
    "De-En": ("Transformer", "BLEU", True, 2),
}
_STAR = None
#: Sun et al. (2021), Table 1, columns ImageNet and CIFAR-10 (ResNet-34, accuracy %, L∞):
#: (n, ε) → {task: (Random, Proposed)}, each ``(score, change)`` or ``_STAR`` (``*``: within
#: 0.1 of the clean score; the paper gives no number).
_PAPER_TABLE1: dict[tuple[str, float], dict[str, tuple[Any, Any]]] = {
    ("k", 1e-4): {"ImageNet": (_STAR, (62.2, -10.3)), "CIFAR-10": (_STAR, (93.3, -1.0)),
                  "PTB-LM": (_STAR, _STAR), "PTB-Parsing": (_STAR, _STAR), "De-En": (_STAR, (35.21, -0.12))},
    ("k", 1e-3): {"ImageNet": (_STAR, (22.2, -50.3)), "CIFAR-10": (_STAR, (36.1, -58.2)),
                  "PTB-LM": (_STAR, _STAR), "PTB-Parsing": (_STAR, (80.6, -6.7)), "De-En": (_STAR, (33.62, -1.71))},
    ("k", 1e-2): {"ImageNet": ((30.3, -42.2), (0.1, -72.4)), "CIFAR-10": ((75.1, -19.2), (10.0, -84.3)),
                  "PTB-LM": (_STAR, (4.52, 0.27)), "PTB-Parsing": ((79.8, -7.5), (6.1, -81.2)),
                  "De-En": ((34.82, -0.51), (0.17, -35.16))},
    ("k", 1e-1): {"ImageNet": ((0.1, -72.4), (0.1, -72.4)), "CIFAR-10": ((10.0, -84.3), (10.0, -84.3)),
                  "PTB-LM": ((4.43, 0.18), (13.25, 9.00)), "PTB-Parsing": ((0.0, -87.3), (0.0, -87.3)),
                  "De-En": ((0.00, -35.33), (0.00, -35.33))},
    ("k", 1.0): {"ImageNet": ((0.1, -72.4), (0.1, -72.4)), "CIFAR-10": ((10.0, -84.3), (10.0, -84.3)),
                 "PTB-LM": ((32.21, 27.96), (48.92, 44.67)), "PTB-Parsing": ((0.0, -87.3), (0.0, -87.3)),
                 "De-En": ((0.00, -35.33), (0.00, -35.33))},
    ("100", 1e-2): {"ImageNet": (_STAR, _STAR), "CIFAR-10": (_STAR, _STAR),
                    "PTB-LM": (_STAR, _STAR), "PTB-Parsing": (_STAR, (64.6, -22.7)), "De-En": (_STAR, _STAR)},
    ("100", 1e-1): {"ImageNet": (_STAR, (67.5, -5.0)), "CIFAR-10": (_STAR, _STAR),
                    "PTB-LM": (_STAR, _STAR), "PTB-Parsing": (_STAR, (11.0, -76.3)), "De-En": (_STAR, (31.68, -3.65))},
    ("100", 1.0): {"ImageNet": (_STAR, (0.1, -72.4)), "CIFAR-10": (_STAR, _STAR),
                   "PTB-LM": (_STAR, _STAR), "PTB-Parsing": ((87.1, -0.2), (0.0, -87.3)),
                   "De-En": ((35.25, -0.08), (0.00, -35.33))},
    ("100", 10.0): {"ImageNet": ((0.2, -72.3), (0.1, -72.4)), "CIFAR-10": ((77.1, -17.2), (44.8, -49.5)),
                    "PTB-LM": (_STAR, _STAR), "PTB-Parsing": ((31.9, -55.4), (0.0, -87.3)),
                    "De-En": ((11.58, -23.75), (0.00, -35.33))},
    ("100", 100.0): {"ImageNet": ((0.1, -72.4), (0.1, -72.4)), "CIFAR-10": ((10.1, -84.2), (9.6, -84.7)),
                     "PTB-LM": ((16.90, 12.65), (23.55, 19.30)), "PTB-Parsing": ((0.0, -87.3), (0.0, -87.3)),
                     "De-En": ((0.00, -35.33), (0.00, -35.33))},
}


def paper_table1_clean() -> dict[str, float]:
    """The paper's clean scores: ResNet-34 on ImageNet 72.5 % and CIFAR-10 94.3 %, PTB-LM log
    perplexity 4.25, PTB-Parsing UAS 87.3 %, De-En BLEU 35.33."""
    return dict(_PAPER_CLEAN)


def paper_table1(tasks: Sequence[str] = ("ImageNet", "CIFAR-10"), *, layout: bool = False,
                 task_labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The paper's Table 1 (Sun et al. 2021), transcribed from the paper: ResNet-34 on
    ImageNet and CIFAR-10 (accuracy %), the LSTM on PTB-LM (log perplexity, lower is
    better), the MLP parser on PTB-Parsing (UAS %) and the Transformer on De-En (BLEU);
    L∞, ``n = k`` with ε = 1e-4…1 and ``n = 100`` with ε = 1e-2…1e2, the paper's own
    rounding (:data:`PAPER_TASKS` gives each task's model, metric and decimals).

    Tidy by default (the columns of :func:`trial_summary`: ``mean`` is the score,
    ``delta`` the change, both NaN for the paper's ``*`` cells, where ``close`` is
    True; ``trials``/``std`` are unknown: NaN); ``layout=True`` gives the
    :func:`format_table1` layout (task headers default to ``"<task> ResNet-34
    (paper)"``, e.g. ``"PTB-LM LSTM (paper)"``; each task with its own metric, arrow and
    decimals). The paper does not say how many random trials its Random column averages.
    """
    unknown = [t for t in tasks if t not in _PAPER_CLEAN]
    if unknown:
        raise ValueError(f"the paper's Table 1 is transcribed here for {list(_PAPER_CLEAN)}, not {unknown}")
    records = []
    for task in tasks:
        for (n_label, eps), cells in _PAPER_TABLE1.items():
            for method, cell in zip(METHOD_LABELS, cells[task]):
                score, change = (np.nan, np.nan) if cell is _STAR else cell
                records.append({"task": task, "method": method, "n_label": n_label,
                                "n": np.nan if n_label == "k" else int(n_label), "k": np.nan, "eps": eps,
                                "trials": np.nan, "mean": score, "std": np.nan, "min": np.nan, "max": np.nan,
                                "clean": _PAPER_CLEAN[task], "delta": change, "close": cell is _STAR})
    tidy = pd.DataFrame.from_records(records, columns=_SUMMARY_COLUMNS)
    order = {m: i for i, m in enumerate(METHOD_LABELS)}
    tidy = tidy.assign(_t=tidy["task"].map({t: i for i, t in enumerate(tasks)}), _m=tidy["method"].map(order),
                       _n=[-math.inf if lab == "k" else -float(lab) for lab in tidy["n_label"]])
    tidy = tidy.sort_values(["_t", "_m", "_n", "eps"], kind="stable").drop(columns=["_t", "_m", "_n"])
    tidy = tidy.reset_index(drop=True)
    if not layout:
        return tidy
    labels = dict(task_labels or {t: f"{t} {PAPER_TASKS[t][0]} (paper)" for t in tasks})
    return pd.concat([
        format_table1(tidy[tidy.task == t], _PAPER_CLEAN, task_labels=labels, show_std=False,
                      metric_label=PAPER_TASKS[t][1], higher_is_better=PAPER_TASKS[t][2], decimals=PAPER_TASKS[t][3])
        for t in tasks], axis=1)


# --------------------------------------------------------------------------------------
# Checks of the paper's claims on our results
# --------------------------------------------------------------------------------------

def central_claim(
    df: pd.DataFrame | Mapping[str, pd.DataFrame],
    *,
    random_tolerance: float = 1.0,
    gradient_threshold: float = 30.0,
    n: int | str | None = "k",
    task_col: str = "task",
    metric: str = "accuracy",
    higher_is_better: bool = True,
) -> pd.DataFrame:
    """The paper's central claim, ε by ε: where random corruption is harmless, the
    gradient-based corruption of the same size is not.

    ``metric`` is the score (any column of the sweep with its ``base_<metric>``:
    ``accuracy``, or a text task's ``uas``, ``bleu``, ``log_ppl``); a *drop* is the change
    for the worse (``base − score``, or ``score − base`` when lower is better), in the
    metric's units, and so are the two thresholds. The ``base_<metric>`` column of the
    result holds the clean score.

    For each task and ε (rows with ``n = k`` by default; an integer ``n`` selects
    those rows, ``None`` all): ``random_drop`` is the mean accuracy drop (points,
    ``base_accuracy − accuracy``) over the random trials and ``random_worst_drop`` the
    largest; ``gradient_drop`` the drop under the gradient-based corruption.
    ``random_harmless`` is ``random_drop < random_tolerance`` (1 point) and ``holds``
    is ``random_harmless and gradient_drop >= gradient_threshold`` (30 points).
    """
    df = _with_task(df, task_col)
    base_col = f"base_{metric}"
    needed = ["method", "n", "k", "eps", metric, base_col]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"results lack columns {missing}")
    sign = 1.0 if higher_is_better else -1.0
    df = df.assign(n_label=[_n_label(a, b) for a, b in zip(df["n"], df["k"])],
                   drop=sign * (df[base_col].astype(float) - df[metric].astype(float)))
    if n is not None:
        df = df[df["n_label"] == _n_label(n, None)]
    records = []
    for (task, n_label, eps), part in df.groupby([task_col, "n_label", "eps"], sort=False):
        rnd = part.loc[part["method"] == "random", "drop"]
        grd = part.loc[part["method"] == "gradient", "drop"]
        if rnd.empty or grd.empty:
            continue
        random_drop = float(rnd.mean())
        gradient_drop = float(grd.mean())
        harmless = random_drop < random_tolerance
        records.append({"task": task, "n_label": n_label, "eps": float(eps),
                        base_col: float(part[base_col].iloc[0]), "trials": int(len(rnd)),
                        "random_drop": random_drop, "random_worst_drop": float(rnd.max()),
                        "gradient_drop": gradient_drop, "random_harmless": harmless,
                        "holds": bool(harmless and gradient_drop >= gradient_threshold)})
    columns = ["task", "n_label", "eps", base_col, "trials", "random_drop", "random_worst_drop",
               "gradient_drop", "random_harmless", "holds"]
    return _in_task_order(pd.DataFrame.from_records(records, columns=columns), df[task_col])


# --------------------------------------------------------------------------------------
# Method choices: non-finite outputs, the parameter subspace
# --------------------------------------------------------------------------------------

def nonfinite_as_uniform(
    rows: pd.DataFrame,
    num_classes: int | Mapping[str, int],
    *,
    task_col: str = "task",
) -> pd.DataFrame:
    """Rows of :func:`paramstress.corruption.sweeps.corruption_sweep` computed under the non-finite rule
    ``"wrong"`` (an example with non-finite logits is misclassified: every page published
    before issue 30), re-scored under ``"uniform"`` (such an example is a uniform guess,
    1/C of a correct answer).

    Under ``"wrong"`` the ``nonfinite`` % of examples with non-finite logits are all counted
    wrong and the others are scored by their argmax, so the ``"uniform"`` accuracy is exactly
    ``accuracy + nonfinite / C`` — the float :func:`paramstress.sweep.evaluate` computes under
    ``"uniform"``, so a re-scored row equals a re-run one bit for bit. The clean model is
    taken to have finite logits (``base_accuracy`` is kept; the sweep does not record its
    non-finite share); ``delta_accuracy`` is recomputed as ``accuracy − base_accuracy``.

    ``num_classes``: ``C``, one int, or ``{task: C}`` with a ``task_col`` column.
    Returns a copy with ``accuracy`` (and ``delta_accuracy`` when present) re-scored, the
    original in ``accuracy_wrong`` and ``nonfinite_rule = "uniform"``. Rejects, before
    computing anything: missing columns, ``C < 2``, a ``nonfinite`` outside [0, 100],
    ``accuracy + nonfinite > 100`` (rows not computed under ``"wrong"``) and rows already
    marked ``"uniform"``.
    """
    if not isinstance(rows, pd.DataFrame):
        raise TypeError(f"rows must be a DataFrame of corruption_sweep rows, got {type(rows).__name__}")
    missing = [c for c in ("accuracy", "nonfinite") if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack columns {missing}; they need 'accuracy' and 'nonfinite' "
                         "(as paramstress.corruption.sweeps.corruption_sweep writes them)")
    if "nonfinite_rule" in rows.columns and (rows["nonfinite_rule"].fillna("wrong") != "wrong").any():
        raise ValueError(f"rows are marked nonfinite_rule {sorted(set(rows['nonfinite_rule'].dropna()))}; only rows "
                         "computed under 'wrong' can be re-scored")
    if isinstance(num_classes, Mapping):
        if task_col not in rows.columns:
            raise ValueError(f"num_classes per task needs a {task_col!r} column; or pass one int")
        absent = sorted(set(rows[task_col]) - set(num_classes))
        if absent:
            raise ValueError(f"num_classes has no entry for tasks {absent}; it has {list(num_classes)}")
        classes = rows[task_col].map(dict(num_classes))
        values = list(num_classes.values())
    else:
        classes = num_classes
        values = [num_classes]
    for c in values:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 2:
            raise ValueError(f"num_classes must be an integer >= 2 (the number of classes C), got {c!r}")
    acc = rows["accuracy"].astype(float)
    nf = rows["nonfinite"].astype(float)
    if bool(((nf < 0) | (nf > 100) | nf.isna()).any()):
        raise ValueError("nonfinite must be a percentage in [0, 100] on every row")
    if bool((acc + nf > 100.0 + 1e-9).any()):
        raise ValueError("some rows have accuracy + nonfinite > 100 %: their non-finite examples were not all "
                         "counted wrong, so these rows were not computed under the rule 'wrong'")
    out = rows.copy()
    out["accuracy_wrong"] = acc
    out["accuracy"] = acc + nf / classes
    if "delta_accuracy" in out.columns and "base_accuracy" in out.columns:
        out["delta_accuracy"] = out["accuracy"] - out["base_accuracy"].astype(float)
    out["nonfinite_rule"] = "uniform"
    return out


def relative_damage(score: Any, clean: Any, chance: Any) -> Any:
    """The share of the way from the clean score to chance that a corruption goes:
    ``(clean − score) / (clean − chance)``, clipped to [0, 1] (0: intact, 1: at chance or
    below). It lets networks with different clean accuracies be compared (a paper's ``*``
    cell, a change under 0.1 point, is 0). Works on numbers and on array-likes."""
    clean_a, chance_a = np.asarray(clean, dtype=float), np.asarray(chance, dtype=float)
    if bool(np.any(clean_a <= chance_a)):
        raise ValueError("the clean score must be above chance for the damage to be defined")
    out = np.clip((clean_a - np.asarray(score, dtype=float)) / (clean_a - chance_a), 0.0, 1.0)
    return float(out) if out.ndim == 0 else out


def subspace_match(
    rows: pd.DataFrame,
    num_classes: int,
    *,
    paper_task: str = "CIFAR-10",
    n: int = 100,
    subspace_col: str = "subspace",
    intact_below: float = 0.05,
    tie_below: float = 0.05,
) -> pd.DataFrame:
    """Which parameter subspace reproduces the paper's sparse rows of Table 1.

    ``rows``: corruption-sweep rows (method, n, eps, accuracy, base_accuracy) for one network
    with a ``subspace_col`` column (e.g. from
    :func:`paramstress.vulnerability.table1_subspaces`). For every (method, ε) of the
    ``n = 100`` rows that both the rows and the paper's ``paper_task`` column have, both
    scores are turned into :func:`relative_damage` (clean → chance = ``100/num_classes`` for
    ours, the paper's clean score and its task's chance, 10 % for CIFAR-10 and 0.1 % for
    ImageNet; the paper's ``*`` cells are 0), the random cells as the mean over the trials.
    One row per subspace: ``cells`` compared, ``mean_abs_diff`` (the mean |ours − paper|
    of the damage), ``agree`` (cells where both are intact, damage < ``intact_below``, or
    both are not), ``best`` (True for the smallest ``mean_abs_diff``; ties go to the
    first subspace in the rows' order) and ``decided``: the best is ahead of the runner-up
    by at least ``tie_below`` (False for every row otherwise, and with one subspace: the
    numbers do not tell the subspaces apart). The ε scale belongs to each network, so this
    is a comparison of patterns, not of numbers.
    """
    needed = [subspace_col, "method", "n", "eps", "accuracy", "base_accuracy"]
    missing = [c for c in needed if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack columns {missing}; expected corruption_sweep rows with a {subspace_col!r} column")
    if paper_task not in ("CIFAR-10", "ImageNet"):
        raise ValueError(f"paper_task must be 'CIFAR-10' or 'ImageNet' (the paper's accuracy columns), got {paper_task!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    paper = paper_table1([paper_task])
    paper = paper[paper["n_label"] == str(n)]
    if paper.empty:
        raise ValueError(f"the paper's Table 1 has no n = {n} rows; it has n = 100")
    paper_chance = {"CIFAR-10": 10.0, "ImageNet": 0.1}[paper_task]
    paper_damage = {(r["method"], float(r["eps"])): 0.0 if bool(r["close"])
                    else relative_damage(r["mean"], r["clean"], paper_chance) for _, r in paper.iterrows()}
    part = rows[rows["n"].astype(int) == int(n)]
    if part.empty:
        raise ValueError(f"rows have no n = {n} rows")
    chance = 100.0 / int(num_classes)
    records = []
    for subspace, sub in part.groupby(subspace_col, sort=False):
        cells = sub.groupby(["method", "eps"], sort=False).agg(acc=("accuracy", "mean"), clean=("base_accuracy", "first"))
        diffs, agree = [], 0
        for (method, eps), cell in cells.iterrows():
            key = (method, float(eps))
            if key not in paper_damage:
                continue
            ours = relative_damage(cell["acc"], cell["clean"], chance)
            theirs = paper_damage[key]
            diffs.append(abs(ours - theirs))
            agree += int((ours < intact_below) == (theirs < intact_below))
        if not diffs:
            raise ValueError(f"subspace {subspace!r} has no (method, eps) cell in common with the paper's n = {n} rows "
                             f"(ε {sorted({e for _, e in paper_damage})})")
        records.append({"subspace": subspace, "cells": len(diffs), "mean_abs_diff": float(np.mean(diffs)),
                        "agree": agree})
    out = pd.DataFrame.from_records(records)
    out["best"] = False
    out.loc[out["mean_abs_diff"].idxmin(), "best"] = True
    ranked = sorted(out["mean_abs_diff"])
    out["decided"] = len(ranked) >= 2 and ranked[1] - ranked[0] >= tie_below
    return out


def loss_change_ratio(
    df: pd.DataFrame | Mapping[str, pd.DataFrame],
    *,
    n: int | str | None = "k",
    task_col: str = "task",
) -> pd.DataFrame:
    """Mean random loss change over the gradient-based one, per task and ε (Theorem 1).

    Columns: ``random_delta_loss`` (mean over trials of ``delta_loss``),
    ``random_se`` (its standard error, ``std/√trials``), ``gradient_delta_loss``,
    ``ratio = random_delta_loss / gradient_delta_loss`` and ``ratio_se = random_se /
    |gradient_delta_loss|``; ``resolved`` is ``|random_delta_loss| > t·random_se`` with
    ``t`` the two-sided 95 % quantile of Student's t with ``trials − 1`` degrees of
    freedom (the mean random change differs from zero at the 5 % level; ``t ≈ 2.78`` for
    5 trials, 12.7 for 2). Theorem 1: the expected random change is
    ``O(ε²)`` while the gradient-based one is ``Θ(ε)`` (Eq. 6/11), so for small ε the
    ratio shrinks in proportion to ε; a finite number of trials adds a first-order
    noise term ``~ ε‖g‖₂/√trials`` that sets a floor under the resolvable ratio.
    Non-finite losses give NaN ratios.
    """
    df = _with_task(df, task_col)
    needed = ["method", "n", "k", "eps", "delta_loss"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"results lack columns {missing}")
    df = df.assign(n_label=[_n_label(a, b) for a, b in zip(df["n"], df["k"])])
    if n is not None:
        df = df[df["n_label"] == _n_label(n, None)]
    records = []
    for (task, n_label, eps), part in df.groupby([task_col, "n_label", "eps"], sort=False):
        rnd = part.loc[part["method"] == "random", "delta_loss"].astype(float)
        grd = part.loc[part["method"] == "gradient", "delta_loss"].astype(float)
        if rnd.empty or grd.empty:
            continue
        mean = float(rnd.mean())
        se = float(rnd.std(ddof=1) / math.sqrt(len(rnd))) if len(rnd) > 1 else math.nan
        g = float(grd.mean())
        finite = math.isfinite(mean) and math.isfinite(g) and g != 0
        ratio = mean / g if finite else math.nan
        ratio_se = se / abs(g) if finite else math.nan
        t_crit = float(stats.t.ppf(0.975, len(rnd) - 1)) if len(rnd) > 1 else math.inf
        records.append({"task": task, "n_label": n_label, "eps": float(eps), "trials": int(len(rnd)),
                        "random_delta_loss": mean, "random_se": se, "gradient_delta_loss": g,
                        "ratio": ratio, "ratio_se": ratio_se,
                        "resolved": bool(finite and math.isfinite(se) and abs(mean) > t_crit * se)})
    columns = ["task", "n_label", "eps", "trials", "random_delta_loss", "random_se", "gradient_delta_loss",
               "ratio", "ratio_se", "resolved"]
    return _in_task_order(pd.DataFrame.from_records(records, columns=columns), df[task_col])


def _in_task_order(out: pd.DataFrame, tasks: pd.Series) -> pd.DataFrame:
    """Sort result rows by task (in first-seen order of ``tasks``), then n, then ε."""
    order = {t: i for i, t in enumerate(dict.fromkeys(tasks))}
    return out.assign(_t=out["task"].map(order)).sort_values(["_t", "n_label", "eps"], kind="stable") \
        .drop(columns="_t").reset_index(drop=True)


def _loglog_fit(eps: Sequence[float], values: Sequence[float]) -> float:
    x = np.log10(np.asarray(eps, dtype=float))
    y = np.log10(np.asarray(values, dtype=float))
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else math.nan


def loss_scaling(
    df: pd.DataFrame | Mapping[str, pd.DataFrame],
    *,
    intact_drop: float = 1.0,
    n: int | str | None = "k",
    task_col: str = "task",
) -> pd.DataFrame:
    """How the loss changes grow with ε, against Theorem 1 (one row per task).

    Theorem 1 (Sun et al. 2021): the expected loss change of random corruption is
    ``O(ε²)`` (log-log slope 2), the gradient-based one is first order, ``ε‖g‖_{p*}``
    (slope 1), so their ratio grows like ``ε`` (slope 1) as ``ε → 0``. Both are
    statements about the Taylor regime, so only ε where the model is still *intact*
    (mean accuracy drop below ``intact_drop`` points for that method) are used:

    - ``random_eps``/``random_slope``: the ε where random corruption is intact and the
      mean random change is positive and resolved (:func:`loss_change_ratio`: a t-test
      at the 5 % level), taken downwards from the largest intact ε up to the first
      unresolved one (the ``ε²`` signal shrinks faster than the first-order noise of
      the trial mean, so smaller ε are noise-dominated); the least-squares slope of
      ``log ΔL`` on ``log ε`` there.
      ``random_c2`` is the median of ``ΔL/ε²`` over those ε (the constant of the
      ``O(ε²)``; ``≈ tr(H)/2`` for L∞).
    - ``gradient_eps``/``gradient_slope``: ε where the gradient-based corruption is
      intact and its change positive; ``gradient_c1 = ΔL/ε`` at the smallest of them
      (the first-order constant).
    - ``ratio_eps``/``ratio_slope``: ε in both sets.
    - ``predicted_ratio_per_eps = random_c2 / gradient_c1``: Theorem 1's ratio is
      about this times ε.

    Slopes need two ε; otherwise NaN.
    """
    df = _with_task(df, task_col)
    ratio = loss_change_ratio(df, n=n, task_col=task_col)
    claim = central_claim(df, n=n, task_col=task_col, random_tolerance=intact_drop)
    merged = ratio.merge(claim[["task", "n_label", "eps", "random_drop", "gradient_drop"]],
                         on=["task", "n_label", "eps"], how="left")
    records = []
    for task, part in merged.groupby("task", sort=False):
        part = part.sort_values("eps")
        # The ε² signal grows against the first-order noise of the trial mean (∝ ε) with ε: walk down
        # from the largest intact ε and stop at the first unresolved one (isolated "resolved" points
        # below it are the false positives of many tests).
        rnd_rows = []
        for _, row in part[part["random_drop"] < intact_drop].sort_values("eps", ascending=False).iterrows():
            if not (row["resolved"] and row["random_delta_loss"] > 0):
                break
            rnd_rows.append(row)
        rnd = pd.DataFrame(rnd_rows, columns=part.columns).sort_values("eps")
        grd = part[(part["gradient_delta_loss"] > 0) & (part["gradient_drop"] < intact_drop)]
        both = rnd[rnd["eps"].isin(grd["eps"])]
        c2 = float(np.median(rnd["random_delta_loss"] / rnd["eps"] ** 2)) if len(rnd) else math.nan
        c1 = float(grd["gradient_delta_loss"].iloc[0] / grd["eps"].iloc[0]) if len(grd) else math.nan
        records.append({
            "task": task,
            "random_eps": list(rnd["eps"]), "random_slope": _loglog_fit(rnd["eps"], rnd["random_delta_loss"]),
            "random_c2": c2,
            "gradient_eps": list(grd["eps"]),
            "gradient_slope": _loglog_fit(grd["eps"], grd["gradient_delta_loss"]), "gradient_c1": c1,
            "ratio_eps": list(both["eps"]), "ratio_slope": _loglog_fit(both["eps"], both["ratio"]),
            "predicted_ratio_per_eps": c2 / c1 if c1 and not math.isnan(c1) else math.nan,
        })
    columns = ["task", "random_eps", "random_slope", "random_c2", "gradient_eps", "gradient_slope",
               "gradient_c1", "ratio_eps", "ratio_slope", "predicted_ratio_per_eps"]
    return pd.DataFrame.from_records(records, columns=columns)


def central_claim_verdicts(claims: pd.DataFrame, tasks: Mapping[str, Any],
                           claim: Mapping[str, Sequence[float]]) -> tuple[str, dict[str, str]]:
    """The text page's verdict on Sun et al.'s central claim, one Markdown bullet per task,
    and ``{key: "holds" | "does not hold"}`` for the tasks where it can be checked.

    ``claims``: :func:`central_claim` rows with a ``task`` column (the task's label);
    ``tasks``: ``{key: Task}`` (its ``label`` and ``metric_label``); ``claim[key] =
    (random_tolerance, gradient_threshold)``. Rule: among the ε where random corruption is
    harmless (within the tolerance), take the one where the gradient-based corruption does
    the most damage; the claim holds when that damage reaches the threshold. No ε with a
    harmless random corruption: the claim cannot be checked on the grid (no verdict)."""
    lines, held = [], {}
    for key, task in tasks.items():
        if key not in claim:
            raise ValueError(f"claim has no entry for {key!r}: give [random_tolerance, gradient_threshold]")
        part = claims[(claims.task == task.label) & claims.random_harmless]
        tol, thr = claim[key]
        if part.empty:
            lines.append(f"- **{task.label}**: random corruption changes {task.metric_label} by at least "
                         f"{tol} at every ε of the grid; the claim cannot be checked on this grid.")
            continue
        best = part.loc[part["gradient_drop"].idxmax()]
        holds = bool(best["gradient_drop"] >= thr)
        held[key] = "holds" if holds else "does not hold"
        lines.append(
            f"- **{task.label}**: at ε = {eps_label(best['eps'])} random corruption costs "
            f"{best['random_drop']:.3g} {task.metric_label} (worst trial {best['random_worst_drop']:.3g}), "
            f"the gradient-based one {best['gradient_drop']:.3g}: the claim (≥ {thr}) "
            f"**{'holds' if holds else 'does not hold'}** here.")
    return "\n".join(lines), held
