"""Collapsed training runs: networks that did not learn a classifier.

A network whose training collapsed (SqueezeNet 1.1 at score_landscapes' ``gpu`` sizes, before
:func:`paramstress.models.torchvision_net` initialised its classifier bias to 1: every class
logit silenced by the ReLU after its last convolution, one class predicted for every input)
still gets filtering scores, but they describe a constant function, not a classifier: its
response to filtering is flat, so its φ scores measure only the baseline. A page that draws
such runs beside working ones must mark them (grey them out, label them) rather than read them
as results.

Rule (:func:`collapsed`): a run (or one snapshot of it) is *collapsed* when

- its test accuracy is within ``margin`` of chance, ``accuracy <= 1/num_classes + margin``
  (``margin`` 0.05 by default, in accuracy units: 5 percentage points; a network that predicts
  one class scores that class's share of the test images, 1/num_classes up to sampling, e.g.
  10.4 % on the published page's 1,000 MNIST and CIFAR-10 test images), or
- it predicts fewer than ``min_predicted`` distinct classes on the test images (default 2:
  one predicted class), when that count is known.

Accuracies are fractions in [0, 1] unless ``percent=True`` (the notebooks' tables print
percentages). :func:`flag_collapsed` applies the rule to every row of a frame of per-run (or
per-snapshot) accuracies and :func:`collapsed_runs` reduces it to one flag per run.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["DEFAULT_MARGIN", "chance_accuracy", "collapsed", "flag_collapsed", "collapsed_runs"]

#: Default distance from chance (accuracy units, i.e. 0.05 = 5 percentage points) within
#: which a run counts as collapsed.
DEFAULT_MARGIN = 0.05


def chance_accuracy(num_classes: int) -> float:
    """The accuracy of a uniform guess over ``num_classes`` classes, ``1/num_classes``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return 1.0 / int(num_classes)


def _check_margin(margin: float) -> float:
    margin = float(margin)
    if not math.isfinite(margin) or not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1) (accuracy units, 0.05 = 5 points), got {margin!r}")
    return margin


def collapsed(accuracy: float, num_classes: int, *, predicted_classes: int | None = None,
              margin: float = DEFAULT_MARGIN, min_predicted: int = 2, percent: bool = False) -> bool:
    """Whether a run with test ``accuracy`` on a ``num_classes``-class task collapsed.

    True when ``accuracy <= 1/num_classes + margin`` or, if ``predicted_classes`` (the number
    of distinct classes the network predicts on the test images) is given, when it is below
    ``min_predicted``. ``accuracy`` is a fraction in [0, 1], or a percentage with
    ``percent=True``; ``margin`` is always in fraction units. A non-finite accuracy (a
    network whose outputs are not numbers) counts as collapsed.

    >>> collapsed(0.104, 10), collapsed(0.391, 10), collapsed(99.0, 10, percent=True)
    (True, False, False)
    >>> collapsed(0.60, 10, predicted_classes=1)
    True
    """
    chance = chance_accuracy(num_classes)
    margin = _check_margin(margin)
    acc = float(accuracy) / (100.0 if percent else 1.0)
    if math.isfinite(acc) and not -1e-9 <= acc <= 1.0 + 1e-9:
        hint = "" if percent else " (a percentage? pass percent=True)"
        raise ValueError(f"accuracy must be in [0, 1]{hint}, got {accuracy!r}")
    if predicted_classes is not None:
        if int(predicted_classes) != predicted_classes or predicted_classes < 0:
            raise ValueError(f"predicted_classes must be a count >= 0, got {predicted_classes!r}")
        if predicted_classes < min_predicted:
            return True
    return (not math.isfinite(acc)) or acc <= chance + margin


def flag_collapsed(frame: pd.DataFrame, num_classes: int | Mapping[str, int] | str, *,
                   accuracy: str = "accuracy", dataset: str = "dataset", predicted: str | None = None,
                   margin: float = DEFAULT_MARGIN, min_predicted: int = 2,
                   percent: bool = False) -> pd.Series:
    """:func:`collapsed` for every row of ``frame``: a boolean Series on ``frame``'s index.

    ``frame`` holds one accuracy per row (a run, or one snapshot of a run) in the column
    ``accuracy``. ``num_classes`` is one int for every row, a mapping from the values of the
    column ``dataset`` to their class counts, or the name of a column holding them.
    ``predicted`` names an optional column of distinct predicted classes (missing values:
    unknown, only the accuracy decides).
    """
    if accuracy not in frame:
        raise KeyError(f"no accuracy column {accuracy!r} in the frame (columns: {list(frame.columns)})")
    if isinstance(num_classes, str):
        classes = frame[num_classes]
    elif isinstance(num_classes, Mapping):
        if dataset not in frame:
            raise KeyError(f"num_classes is a mapping but the frame has no {dataset!r} column")
        missing = sorted(set(frame[dataset]) - set(num_classes))
        if missing:
            raise KeyError(f"no class count for data sets {missing}; add them to num_classes")
        classes = frame[dataset].map(num_classes)
    else:
        classes = pd.Series(num_classes, index=frame.index)
    counts = frame[predicted] if predicted is not None else pd.Series(np.nan, index=frame.index)
    flags = [collapsed(a, int(k), predicted_classes=None if pd.isna(p) else int(p), margin=margin,
                       min_predicted=min_predicted, percent=percent)
             for a, k, p in zip(frame[accuracy], classes, counts)]
    return pd.Series(flags, index=frame.index, dtype=bool, name="collapsed")


def collapsed_runs(frame: pd.DataFrame, num_classes: int | Mapping[str, int] | str, *,
                   by: Sequence[str] = ("model", "dataset", "seed"), how: str = "any",
                   order: str | None = "epoch", **options) -> pd.Series:
    """One flag per run: the rows of ``frame`` flagged by :func:`flag_collapsed` (``options``
    go to it), grouped by the columns ``by`` (those present) and reduced with ``how``:
    ``"any"`` (a run is collapsed if any of its snapshots is; the default, which greys out
    the most), ``"all"`` (every snapshot) or ``"last"`` (its last row after sorting by the
    column ``order``, e.g. the last snapshot epoch). Returns a boolean Series indexed by ``by``.
    """
    if how not in ("any", "all", "last"):
        raise ValueError(f"how must be 'any', 'all' or 'last', got {how!r}")
    keys = [c for c in by if c in frame]
    if not keys:
        raise KeyError(f"none of the run columns {list(by)} is in the frame (columns: {list(frame.columns)})")
    flags = frame[keys].assign(collapsed=flag_collapsed(frame, num_classes, **options))
    if how == "last":
        if order is not None and order in frame:
            flags = flags.assign(_order=frame[order]).sort_values("_order", kind="stable")
        return flags.groupby(keys, sort=False)["collapsed"].last()
    return flags.groupby(keys, sort=False)["collapsed"].agg(how)
