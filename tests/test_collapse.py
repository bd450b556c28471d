"""Collapsed runs (paramstress.collapse): hand-made cases of the rule and of the frame helpers."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from paramstress import collapse as C


def test_chance_accuracy() -> None:
    assert C.chance_accuracy(10) == 0.1 and C.chance_accuracy(200) == 0.005
    for bad in (1, 0, 2.0, True):
        with pytest.raises(ValueError, match="num_classes"):
            C.chance_accuracy(bad)


@pytest.mark.parametrize("accuracy,expected", [
    (0.104, True),    # one class predicted on 1,000 test images (the published SqueezeNet runs)
    (0.10, True),     # exactly chance
    (0.0, True),      # below chance
    (0.149, True),    # inside the default 5-point margin
    (0.151, False),   # just outside it
    (0.391, False),   # SqueezeNet on Fashion-MNIST: poor, but a classifier
    (0.99, False),
])
def test_accuracy_rule_ten_classes(accuracy: float, expected: bool) -> None:
    assert C.collapsed(accuracy, 10) is expected
    assert C.collapsed(100 * accuracy, 10, percent=True) is expected


def test_margin_and_class_count_move_the_threshold() -> None:
    assert C.collapsed(0.12, 10, margin=0.01) is False   # 0.12 > 0.10 + 0.01
    assert C.collapsed(0.11, 10, margin=0.01) is True
    assert C.collapsed(0.104, 10, margin=0.0) is False    # strictly above chance, no margin
    assert C.collapsed(0.30, 2) is True                   # below chance of a binary task
    assert C.collapsed(0.56, 2) is False                  # 0.56 > 0.5 + 0.05
    assert C.collapsed(0.54, 2) is True


def test_one_predicted_class_is_collapsed_whatever_the_accuracy() -> None:
    assert C.collapsed(0.60, 10, predicted_classes=1) is True
    assert C.collapsed(0.60, 10, predicted_classes=0) is True
    assert C.collapsed(0.60, 10, predicted_classes=2) is False
    assert C.collapsed(0.60, 10, predicted_classes=3, min_predicted=5) is True
    assert C.collapsed(0.104, 10, predicted_classes=10) is True  # the accuracy still decides


def test_non_finite_accuracy_is_collapsed_and_bad_inputs_raise() -> None:
    assert C.collapsed(math.nan, 10) is True
    with pytest.raises(ValueError, match="percent=True"):
        C.collapsed(41.8, 10)                  # a percentage passed as a fraction
    with pytest.raises(ValueError, match="margin"):
        C.collapsed(0.5, 10, margin=-0.1)
    with pytest.raises(ValueError, match="predicted_classes"):
        C.collapsed(0.5, 10, predicted_classes=-1)


def _published() -> pd.DataFrame:
    """The published score_landscapes accuracy table (gpu profile), two networks, in percent."""
    rows = []
    table = {
        ("squeezenet1_1", "mnist"): [10.4, 10.4, 10.4, 10.4, 10.4],
        ("squeezenet1_1", "fashion-mnist"): [28.3, 37.3, 39.5, 36.2, 39.1],
        ("squeezenet1_1", "cifar10-jpeg"): [10.4, 10.4, 10.4, 10.4, 10.4],
        ("resnet18", "cifar10-jpeg"): [61.2, 67.6, 70.4, 70.4, 70.7],
    }
    for (model, dataset), accs in table.items():
        for epoch, acc in zip([2, 4, 6, 8, 10], accs):
            rows.append({"model": model, "dataset": dataset, "seed": 0, "epoch": epoch, "accuracy": acc})
    return pd.DataFrame(rows)


def test_flag_collapsed_rows_with_int_mapping_or_column() -> None:
    frame = _published()
    flags = C.flag_collapsed(frame, 10, percent=True)
    assert flags.dtype == bool and flags.index.equals(frame.index)
    assert flags.sum() == 10  # the five snapshots of SqueezeNet on MNIST and on CIFAR-10
    assert set(frame.loc[flags, "dataset"]) == {"mnist", "cifar10-jpeg"}
    assert set(frame.loc[flags, "model"]) == {"squeezenet1_1"}
    by_map = C.flag_collapsed(frame, {"mnist": 10, "fashion-mnist": 10, "cifar10-jpeg": 10}, percent=True)
    assert by_map.equals(flags)
    by_col = C.flag_collapsed(frame.assign(k=10), "k", percent=True)
    assert by_col.equals(flags)
    with pytest.raises(KeyError, match="class count"):
        C.flag_collapsed(frame, {"mnist": 10}, percent=True)
    with pytest.raises(KeyError, match="accuracy column"):
        C.flag_collapsed(frame, 10, accuracy="test accuracy (%)")


def test_flag_collapsed_uses_predicted_classes_where_known() -> None:
    frame = pd.DataFrame({"dataset": ["a", "a", "a"], "accuracy": [0.6, 0.6, 0.6], "predicted": [1, None, 10]})
    assert C.flag_collapsed(frame, 10, predicted="predicted").tolist() == [True, False, False]


def test_collapsed_runs_any_all_last() -> None:
    frame = _published()
    runs = C.collapsed_runs(frame, 10, percent=True)
    assert runs.index.names == ["model", "dataset", "seed"]
    assert runs.to_dict() == {
        ("squeezenet1_1", "mnist", 0): True,
        ("squeezenet1_1", "fashion-mnist", 0): False,
        ("squeezenet1_1", "cifar10-jpeg", 0): True,
        ("resnet18", "cifar10-jpeg", 0): False,
    }
    # a run that recovers: collapsed at its first snapshot only
    late = pd.DataFrame({"model": "m", "dataset": "d", "seed": 0, "epoch": [4, 2], "accuracy": [0.80, 0.10]})
    assert bool(C.collapsed_runs(late, 10, how="any").iloc[0]) is True
    assert bool(C.collapsed_runs(late, 10, how="all").iloc[0]) is False
    assert bool(C.collapsed_runs(late, 10, how="last").iloc[0]) is False  # sorted by epoch: 4 is last
    assert bool(C.collapsed_runs(late, 10, how="last", order=None).iloc[0]) is True  # row order: 0.10 last
    with pytest.raises(ValueError, match="how"):
        C.collapsed_runs(late, 10, how="mean")
    with pytest.raises(KeyError, match="run columns"):
        C.collapsed_runs(late, 10, by=["network"])
