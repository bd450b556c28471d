"""Parameter scores: fragility, robustness and antifragility (Pravin et al. 2023, §3.2
Defs. 4-6, §4.1.2 Eq. 10, §4.1.3 Eq. 13, §4.2 Eqs. 14-16, §4.3 "Collection of results").

From the rows of :func:`paramstress.filtering.filter_sweep` (one per scope × filter ×
threshold index ``t``):

- the filtering response (§4.2, Eq. 13's ``Ŝ``), with the reference each accuracy is
  divided by a named choice (:data:`REFERENCES`; the paper's results and its text do not
  agree on it, see the book's *method choices* page):

  - ``"own"`` (alias ``"unperturbed"``, the default): the *unfiltered* model's accuracy
    on the same inputs (clean for ``S_clean``, adversarial for ``S_adv``), as the
    paper's text (§4.1.3) says;
  - ``"clean"``: the unfiltered model's *clean* accuracy for both responses, so ``S_adv``
    starts at the attack's accuracy ratio instead of 1;
  - ``"chance"``: chance-corrected, ``(acc − c)/(ref − c)`` with ``ref`` the own
    unfiltered accuracy and ``c`` the chance accuracy: a fully broken network scores 0 on
    both inputs, as the baseline does, instead of ``c/ref`` (which is larger for the
    adversarial response, whose ``ref`` is smaller);
  - ``"first"``: the accuracy at the first threshold, as the official code does;
- the baseline (Eq. 10): ``B_t = 1 − removed_t / N`` with the exact count of nonzero
  weights removed (computed by the sweep);
- the combined response (Eq. 13): the mean of the three filters' responses at each
  threshold index (and the mean of their baselines);
- the scores (Eqs. 14-16), areas by Simpson's rule (``scipy.integrate.simpson``) over
  the threshold axis rescaled to [0, 1] (``λ_t = t/(T−1)``):
  ``φ_clean = ∫ (S_clean − B) dλ``, ``φ_adv = ∫ (S_adv − B) dλ``,
  ``Δφ = ∫ (S_adv − S_clean) dλ`` (the clean response is Δφ's baseline, §4.2.3);
- normalisation to [−0.5, 0.5] (§4.3; not in the official code): the paper normalises
  φ_clean and φ_adv together and Δφ on its own, keeping 0 as the robust mid-point.
  ``method="maxabs"`` (default) divides by twice the largest |score| of the group, so
  the sign — fragile below 0, antifragile above — and the zero are kept;
  ``method="minmax"`` maps [min, max] linearly onto [−0.5, 0.5] (the literal reading,
  which moves the zero);
- labels (Defs. 4-6, not in the code): a score below ``−tolerance`` is *fragile*, above
  ``+tolerance`` *antifragile*, otherwise *robust* (``tolerance = 0``: the strict
  conditions). Labels are computed on the raw areas, whose units (fraction of the
  unfiltered accuracy × threshold range) are the same for every layer and model.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.integrate import simpson

from paramstress.filtering import filters as FL

__all__ = [
    "LABELS",
    "MARKS",
    "SCORES",
    "baseline",
    "combined_response",
    "area",
    "responses",
    "scores",
    "normalise",
    "classify",
    "label_scores",
    "tag_columns",
    "REFERENCES",
    "check_reference",
    "removable_layers",
    "label_counts",
    "reference_grid",
    "sign_pattern",
    "fig6_frame",
    "FILTER_NAMES",
]

LABELS: tuple[str, ...] = ("fragile", "robust", "antifragile")
#: The marks of the paper's Fig. 10.
MARKS: dict[str, str] = {"fragile": "Fr", "robust": "Ro", "antifragile": "Af"}
SCORES: tuple[str, ...] = ("phi_clean", "phi_adv", "delta_phi")
COMBINED = "combined"
#: The references a response may be divided by (see the module docstring); ``"unperturbed"``
#: is the earlier name of ``"own"`` and means the same.
REFERENCES: tuple[str, ...] = ("own", "clean", "chance", "first", "unperturbed")
#: The label of a layer whose whole removal costs (almost) nothing (:func:`removable_layers`).
REMOVABLE = "removable"


def check_reference(reference: Any, chance: Any) -> None:
    """``ValueError`` naming the fix unless ``reference`` is one of :data:`REFERENCES` and
    ``chance`` (the chance accuracy in %) is given exactly when it is ``"chance"``."""
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    if reference == "chance":
        if isinstance(chance, bool) or not isinstance(chance, (int, float)) or not math.isfinite(chance) \
                or not 0 <= chance < 100:
            raise ValueError(f"reference='chance' needs chance=, the chance accuracy in % (100 / classes), "
                             f"got {chance!r}")
    elif chance is not None:
        raise ValueError(f"chance= is only used with reference='chance' (got reference={reference!r})")


def baseline(removed: Any, n: Any) -> np.ndarray:
    """Eq. 10: ``1 − removed / n`` (``removed``: nonzero weights removed at each
    threshold; ``n``: nonzero weights of the layer or network)."""
    removed = np.asarray(removed, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if np.any(n <= 0):
        raise ValueError("n (the number of weights in the scope) must be positive")
    if np.any(removed < 0) or np.any(removed > n):
        raise ValueError("removed must lie in [0, n]")
    return 1.0 - removed / n


def combined_response(*per_filter: Any) -> np.ndarray:
    """Eq. 13: the mean over the filters of their responses at each threshold."""
    if not per_filter:
        raise ValueError("give at least one filter's response")
    arrays = [np.asarray(a, dtype=np.float64) for a in per_filter]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"the filters' responses must have equal lengths, got {[a.shape for a in arrays]}")
    return np.mean(arrays, axis=0)


def area(values: Any, lam: Any | None = None) -> float:
    """Simpson's rule of ``values`` over ``lam`` (default: ``T`` equal steps on [0, 1]),
    the discrete area of Eqs. 4-6 and 14-16."""
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1 or len(y) < 3:
        raise ValueError(f"need a 1-D curve of at least 3 thresholds, got shape {y.shape}")
    x = np.linspace(0.0, 1.0, len(y)) if lam is None else np.asarray(lam, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"lam has shape {x.shape} but values {y.shape}")
    if np.any(np.diff(x) <= 0):
        raise ValueError("lam must be strictly increasing")
    if not np.all(np.isfinite(y)):
        raise ValueError("the curve has non-finite values")
    return float(simpson(y, x=x))


#: Sweep settings that also tell curves apart (two adversarial modes of one layer are two curves).
CURVE_SETTINGS: tuple[str, ...] = ("range", "eps", "adversarial")


def tag_columns(frame: pd.DataFrame) -> list[str]:
    """The columns that identify a curve besides ``layer`` and ``filter``: the ones a
    caller added to a filter-sweep frame (model, dataset, epoch, seed, ...: every column
    that :func:`~paramstress.filtering.filter_sweep` does not produce itself), then the
    sweep settings of :data:`CURVE_SETTINGS` present in the frame."""
    own = set(FL.SWEEP_COLUMNS) | {"S_clean", "S_adv"} | set(SCORES) | {"T"}
    tags = [c for c in frame.columns if c not in own and not c.startswith(tuple(f"{s}_" for s in SCORES))]
    return tags + [c for c in CURVE_SETTINGS if c in frame.columns]


def responses(frame: pd.DataFrame, *, reference: str = "own", chance: float | None = None,
              combine: bool = True) -> pd.DataFrame:
    """The filtering responses of a :func:`~paramstress.filtering.filter_sweep` frame.

    Adds ``S_clean`` and ``S_adv`` (accuracy relative to ``reference``, one of
    :data:`REFERENCES`: the own unfiltered accuracy, the clean unfiltered accuracy for
    both, chance-corrected with ``chance`` the chance accuracy in %, or the first
    threshold) to every row and, with ``combine``, rows with
    ``filter = "combined"`` (Eq. 13) for every curve that has all three filters. Each
    curve (tags, settings, layer, filter) must have every ``t`` in ``0…T−1`` exactly
    once. Where the reference accuracy is 0 (e.g. an early snapshot that the attack
    breaks completely; Def. 8 is only enforced where ε is chosen) the response is
    undefined: NaN, and so are the scores of that curve (with ``"chance"``: where the
    reference is not above chance).
    """
    check_reference(reference, chance)
    need = {"layer", "filter", "t", "T", "lam", "baseline", "clean_accuracy", "adv_accuracy",
            "clean_reference", "adv_reference"}
    missing = sorted(need - set(frame.columns))
    if missing:
        raise ValueError(f"the frame lacks columns {missing}: pass the output of filtering.filter_sweep")
    if frame.empty:
        raise ValueError("the frame is empty")
    tags = tag_columns(frame)
    keys = [*tags, "layer", "filter"]
    out = frame.copy()
    for group, part in out.groupby(keys, sort=False, dropna=False):
        T = int(part["T"].iloc[0])
        ts = sorted(part["t"].astype(int))
        if ts != list(range(T)):
            raise ValueError(f"curve {dict(zip(keys, group))} has thresholds {ts}, expected 0..{T - 1} once each; "
                             "finish or re-run its sweep")
    for kind in ("clean", "adv"):
        acc = out[f"{kind}_accuracy"].astype(float)
        if reference in ("own", "unperturbed"):
            ref = out[f"{kind}_reference"].astype(float)
        elif reference == "clean":
            ref = out["clean_reference"].astype(float)
        elif reference == "chance":
            acc = acc - float(chance)
            ref = out[f"{kind}_reference"].astype(float) - float(chance)
        else:
            at_first = acc.where(out["t"].astype(int) == 0)
            ref = at_first.groupby([out[k] for k in keys], sort=False, dropna=False).transform("max")
        out[f"S_{kind}"] = (acc / ref).where(ref > 0)  # undefined (NaN) where the reference accuracy is 0
    out = out.sort_values([*keys, "t"], kind="stable").reset_index(drop=True)
    if not combine:
        return out
    combined = []
    for group, part in out.groupby([*tags, "layer"], sort=False, dropna=False):
        present = set(part["filter"])
        if not set(FL.FILTERS) <= present:
            continue
        part = part[part["filter"].isin(FL.FILTERS)]
        if part.groupby("filter")["T"].first().nunique() != 1:
            raise ValueError(f"the filters of {group} have different T; Eq. 13 combines equal threshold grids")
        mean = part.groupby("t", sort=True).agg(
            lam=("lam", "first"), T=("T", "first"), baseline=("baseline", "mean"),
            fraction_removed=("fraction_removed", "mean"),
            clean_accuracy=("clean_accuracy", "mean"), adv_accuracy=("adv_accuracy", "mean"),
            clean_reference=("clean_reference", "first"), adv_reference=("adv_reference", "first"),
            S_clean=("S_clean", "mean"), S_adv=("S_adv", "mean")).reset_index()
        first = part.iloc[0]
        for c in [*tags, "layer"]:
            mean[c] = first[c]
        mean["filter"] = COMBINED
        combined.append(mean)
    if combined:
        out = pd.concat([out, *combined], ignore_index=True)
    return out


def scores(frame: pd.DataFrame, *, reference: str = "own", chance: float | None = None) -> pd.DataFrame:
    """φ_clean, φ_adv and Δφ (Eqs. 14-16) per curve (tags, layer, filter incl.
    ``combined``), from a filter-sweep frame (its responses taken with ``reference`` and
    ``chance``, see :func:`responses`) or its :func:`responses`."""
    resp = frame if {"S_clean", "S_adv"} <= set(frame.columns) else responses(frame, reference=reference,
                                                                               chance=chance)
    tags = tag_columns(resp)
    rows = []
    for group, part in resp.groupby([*tags, "layer", "filter"], sort=False, dropna=False):
        part = part.sort_values("t")
        lam = part["lam"].to_numpy(float)
        b = part["baseline"].to_numpy(float)
        sc = part["S_clean"].to_numpy(float)
        sa = part["S_adv"].to_numpy(float)
        row = dict(zip([*tags, "layer", "filter"], group))
        row["T"] = len(part)
        clean_ok, adv_ok = bool(np.isfinite(sc).all()), bool(np.isfinite(sa).all())
        row["phi_clean"] = area(sc - b, lam) if clean_ok else np.nan
        row["phi_adv"] = area(sa - b, lam) if adv_ok else np.nan
        row["delta_phi"] = area(sa - sc, lam) if clean_ok and adv_ok else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def normalise(table: pd.DataFrame, *, by: Sequence[str] | None = None, method: str = "maxabs",
              together: Sequence[Sequence[str]] = (("phi_clean", "phi_adv"), ("delta_phi",))) -> pd.DataFrame:
    """Scores normalised to [−0.5, 0.5] (§4.3), added as ``<score>_norm`` columns.

    Each tuple of ``together`` is normalised with one common scale (the paper: φ_clean
    with φ_adv, Δφ on its own), within each group of ``by`` (e.g. ``["model",
    "dataset"]``; default: the whole table). ``maxabs``: ``v / (2·max|v|)`` (0 stays 0;
    all-zero groups stay 0); ``minmax``: ``(v − min)/(max − min) − 0.5``.
    """
    if method not in ("maxabs", "minmax"):
        raise ValueError(f"method must be 'maxabs' (keeps 0 = robust) or 'minmax', got {method!r}")
    by = list(by or [])
    missing = [c for c in [*by, *[c for cols in together for c in cols]] if c not in table.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the table (columns: {list(table.columns)})")
    out = table.copy()
    groups = [part.index for _, part in out.groupby(by, sort=False, dropna=False)] if by else [out.index]
    for cols in together:
        cols = list(cols)
        for c in cols:
            out[f"{c}_norm"] = np.nan
        for idx in groups:
            values = out.loc[idx, cols].to_numpy(float)
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                continue
            if method == "maxabs":
                scale = 2.0 * np.abs(finite).max()
                normed = values / scale if scale > 0 else np.zeros_like(values)
            else:
                lo, hi = finite.min(), finite.max()
                normed = (values - lo) / (hi - lo) - 0.5 if hi > lo else np.zeros_like(values)
            for k, c in enumerate(cols):
                out.loc[idx, f"{c}_norm"] = normed[:, k]
    return out


def classify(values: Any, tolerance: float) -> np.ndarray:
    """Defs. 4-6: ``"fragile"`` below ``−tolerance``, ``"antifragile"`` above
    ``+tolerance``, ``"robust"`` in between (NaN stays ``""``)."""
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0 and np.isfinite(tolerance)):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    v = np.asarray(values, dtype=np.float64)
    return np.select([np.isnan(v), v < -tolerance, v > tolerance], ["", "fragile", "antifragile"], default="robust")


def label_scores(table: pd.DataFrame, tolerance: float, columns: Sequence[str] = SCORES) -> pd.DataFrame:
    """Adds ``<score>_label`` (fragile / robust / antifragile, :func:`classify`) and
    ``<score>_mark`` (Fr / Ro / Af) for each score column, from the raw areas."""
    out = table.copy()
    for c in columns:
        if c not in out.columns:
            raise ValueError(f"no column {c!r} in the table: compute scores() first")
        out[f"{c}_label"] = classify(out[c].to_numpy(float), tolerance)
        out[f"{c}_mark"] = out[f"{c}_label"].map(lambda s: MARKS.get(s, ""))
    return out


def removable_layers(frame: pd.DataFrame, *, tolerance: float = 1.0) -> pd.DataFrame:
    """The local scopes whose *whole* removal costs (almost) nothing on clean inputs.

    For such a layer (in a residual network: a block whose convolutions are carried past by
    the skip connection and the batch-norm constant, Eq. 17) every filter leaves the
    accuracy near its unfiltered value while the baseline (Eq. 10) falls to 0, so φ
    saturates near its maximum and "antifragile" means "removable". From a
    :func:`~paramstress.filtering.filter_sweep` frame: per curve (tags, layer), the rows
    where every nonzero weight of the layer is removed (``removed == nonzero``; e.g. the
    high-pass filter's last threshold); the layer is removable when the lowest clean
    accuracy among them is at most ``tolerance`` points (accuracy units of the frame) below
    the unfiltered clean accuracy. The global scope is never removable. Returns one row per
    curve: tags, ``layer``, ``full_removal_clean`` and ``full_removal_adv`` (the lowest
    accuracies with the layer removed), ``clean_reference``, ``cost`` (clean points lost)
    and ``removable``; a curve without a full-removal row gets ``removable = False`` and NaN
    accuracies."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) \
            or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number of accuracy points >= 0, got {tolerance!r}")
    need = {"layer", "removed", "nonzero", "clean_accuracy", "adv_accuracy", "clean_reference"}
    missing = sorted(need - set(frame.columns))
    if missing:
        raise ValueError(f"the frame lacks columns {missing}: pass the output of filtering.filter_sweep")
    tags = tag_columns(frame)
    keys = [*tags, "layer"]
    rows = []
    for group, part in frame.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, group))
        full = part[part["removed"].astype(float) >= part["nonzero"].astype(float)]
        ref = float(part["clean_reference"].iloc[0])
        clean = float(full["clean_accuracy"].min()) if len(full) else math.nan
        adv = float(full["adv_accuracy"].min()) if len(full) else math.nan
        cost = ref - clean
        row.update(full_removal_clean=clean, full_removal_adv=adv, clean_reference=ref, cost=cost,
                   removable=bool(row["layer"] != FL.GLOBAL and math.isfinite(cost) and cost <= tolerance))
        rows.append(row)
    return pd.DataFrame(rows)


def label_counts(table: pd.DataFrame, *, by: Sequence[str] = (), columns: Sequence[str] = SCORES,
                 removable: str | None = "removable") -> pd.DataFrame:
    """How many curves carry each label, per group of ``by`` and score column, with the
    removable layers (the boolean column ``removable`` of the table, e.g. merged from
    :func:`removable_layers`) counted apart as :data:`REMOVABLE` instead of under their
    label (their "antifragile" means "removable"). ``removable=None``: no such column.
    Columns: the ``by`` keys, ``score``, one per label of :data:`LABELS`, ``removable``,
    ``unscored`` (NaN scores) and ``n``."""
    by = list(by)
    need = [*by, *[f"{c}_label" for c in columns], *([removable] if removable else [])]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the table: label it with label_scores() "
                         f"{'and merge removable_layers() ' if removable in missing else ''}first")
    rows = []
    groups = table.groupby(by, sort=False, dropna=False) if by else [((), table)]
    for group, part in groups:
        group = group if isinstance(group, tuple) else (group,)
        aside = part[removable].astype(bool) if removable else pd.Series(False, index=part.index)
        for c in columns:
            labels = part.loc[~aside, f"{c}_label"]
            row = {**dict(zip(by, group)), "score": c, **{l: int((labels == l).sum()) for l in LABELS},
                   REMOVABLE: int(aside.sum()), "unscored": int((labels == "").sum()), "n": len(part)}
            rows.append(row)
    return pd.DataFrame(rows)


def reference_grid(frame: pd.DataFrame, *, references: Sequence[str] = ("own", "clean", "chance"),
                   chance: Any = None, tolerance: float = 0.05, removable_tolerance: float = 1.0,
                   filter: str = COMBINED) -> pd.DataFrame:
    """The scores of one filter (default: the combined response, Eq. 13) of a filter-sweep
    frame under each response reference of ``references``, stacked with a ``reference``
    column, labelled at ``tolerance`` (:func:`label_scores`) and with the ``removable``
    flag of :func:`removable_layers` merged in. ``chance``: the chance accuracy in % (a
    number, or a mapping from the frame's ``dataset`` values to theirs), needed when
    ``"chance"`` is among the references. Every reference is checked before any score is
    computed. Frames of several adversarial modes (the ``adversarial`` column) are scored
    per mode, since that column is a curve setting."""
    references = list(references)
    if not references:
        raise ValueError("name at least one reference")
    by_dataset = isinstance(chance, dict)
    if "chance" in references:
        if by_dataset:
            if "dataset" not in frame.columns:
                raise ValueError("chance is a mapping by data set but the frame has no `dataset` column")
            lacking = sorted(set(frame["dataset"]) - set(chance))
            if lacking:
                raise ValueError(f"chance has no value for data sets {lacking}: give 100 / classes for each")
            for v in chance.values():
                check_reference("chance", v)
        else:
            check_reference("chance", chance)
    for r in references:
        if r != "chance":
            check_reference(r, None)
    removable = removable_layers(frame, tolerance=removable_tolerance)
    parts = []
    for r in references:
        if r == "chance" and by_dataset:
            table = pd.concat([scores(part, reference=r, chance=float(chance[d]))
                               for d, part in frame.groupby("dataset", sort=False)], ignore_index=True)
        else:
            table = scores(frame, reference=r, chance=float(chance) if r == "chance" else None)
        table = table[table["filter"] == filter]
        parts.append(table.assign(reference=r))
    out = pd.concat(parts, ignore_index=True)
    keys = [c for c in removable.columns if c in out.columns and c not in ("clean_reference",)]
    out = out.merge(removable[[*keys, "removable", "cost"]], on=keys, how="left")
    out["removable"] = out["removable"].fillna(False).astype(bool)
    return label_scores(out, tolerance)


def sign_pattern(grid: pd.DataFrame, *, mnist: str = "mnist", cifar: str = "cifar10-jpeg",
                 by: Sequence[str] = ("adversarial", "reference")) -> pd.DataFrame:
    """Pravin et al.'s sign pattern of Δφ (§5: "Δφ < 0 for MNIST, suggesting that the clean
    dataset response is consistently greater than the adversarial", CIFAR-10 and Tiny
    ImageNet "comparable"), checked on the *global* scores of a :func:`reference_grid`
    for each combination of ``by``:

    - ``mnist_negative``: snapshots (epoch × seed) of the network on ``mnist`` whose global
      Δφ is below 0, of ``mnist_n``;
    - ``cifar_closer``: at the last epoch, the mean |global Δφ| over seeds on ``cifar`` is
      smaller than on ``mnist`` (NaN when either is missing);
    - ``mnist_local_negative``: the share of MNIST's non-removable local scopes at the
      last epoch with Δφ below 0;
    - ``reproduces``: every MNIST snapshot negative and ``cifar_closer`` true (a count over
      snapshots of one training run, not a statistical test: the runs are too few for one).
    """
    by = list(by)
    need = {*by, "dataset", "layer", "epoch", "delta_phi", "removable"}
    missing = sorted(need - set(grid.columns))
    if missing:
        raise ValueError(f"the grid lacks columns {missing}: pass the output of reference_grid()")
    rows = []
    for group, part in grid.groupby(by, sort=False, dropna=False):
        group = group if isinstance(group, tuple) else (group,)
        glob = part[part["layer"] == FL.GLOBAL]
        m = glob[glob["dataset"] == mnist]
        c = glob[glob["dataset"] == cifar]
        m_neg = int((m["delta_phi"] < 0).sum())
        last = part["epoch"].max()
        m_last = m[m["epoch"] == last]["delta_phi"].abs().mean()
        c_last = c[c["epoch"] == c["epoch"].max()]["delta_phi"].abs().mean() if len(c) else math.nan
        closer = bool(c_last < m_last) if np.isfinite(m_last) and np.isfinite(c_last) else math.nan
        local = part[(part["dataset"] == mnist) & (part["layer"] != FL.GLOBAL) & (part["epoch"] == last)
                     & ~part["removable"].astype(bool)]
        rows.append({**dict(zip(by, group)), "mnist_negative": m_neg, "mnist_n": len(m),
                     "mnist_last_delta_phi": float(m[m["epoch"] == last]["delta_phi"].mean()) if len(m) else math.nan,
                     "cifar_last_delta_phi": float(c[c["epoch"] == c["epoch"].max()]["delta_phi"].mean())
                     if len(c) else math.nan,
                     "cifar_closer": closer,
                     "mnist_local_negative": float((local["delta_phi"] < 0).mean()) if len(local) else math.nan,
                     "reproduces": bool(len(m) > 0 and m_neg == len(m) and closer is True)})
    return pd.DataFrame(rows)


#: Display names of the filters in figures.
FILTER_NAMES: dict[str, str] = {"h_a": "h_a high-pass", "h_b": "h_b low-pass", "h_c": "h_c pulse",
                                COMBINED: "combined (Eq. 13)"}


def fig6_frame(frame: pd.DataFrame, *, dataset: str, layer: str, references: Sequence[str] = ("own",),
               chance: float | None = None) -> pd.DataFrame:
    """The long frame of Pravin et al.'s Fig. 6 for one data set and layer of a
    filter-sweep frame: the clean and adversarial responses of the three filters and their
    combination (Eq. 13) at every threshold, averaged over seeds, under each reference of
    ``references`` (``chance`` for ``"chance"``, see :func:`responses`). Columns: epoch,
    filter (display name, :data:`FILTER_NAMES`), lam, baseline, ``panel`` ("clean, own",
    "adversarial, chance", ...) and response."""
    for c in ("dataset", "layer", "epoch"):
        if c not in frame.columns:
            raise ValueError(f"the frame has no `{c}` column: pass filter-sweep rows tagged with dataset and epoch")
    part = frame[(frame["dataset"] == dataset) & (frame["layer"] == layer)]
    if part.empty:
        raise ValueError(f"no rows for data set {dataset!r} and layer {layer!r}; the frame has data sets "
                         f"{sorted(frame['dataset'].unique())} and layers {list(dict.fromkeys(frame['layer']))[:8]}...")
    out = []
    for r in references:
        resp = responses(part, reference=r, chance=chance if r == "chance" else None)
        mean = resp.groupby(["epoch", "filter", "t"], sort=False).agg(
            lam=("lam", "first"), baseline=("baseline", "mean"), clean=("S_clean", "mean"),
            adversarial=("S_adv", "mean")).reset_index()
        long = mean.melt(id_vars=["epoch", "filter", "t", "lam", "baseline"], value_vars=["clean", "adversarial"],
                         var_name="input", value_name="response")
        long["panel"] = long["input"] + ", " + r
        out.append(long)
    result = pd.concat(out, ignore_index=True)
    result["filter"] = result["filter"].map(FILTER_NAMES)
    return result
