"""The greyed Figs. 9-10 on hand-made score rows."""
import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from paramstress import figures  # noqa: E402


def rows():
    out = []
    for m in ("resnet18", "squeezenet1_1"):
        for d in ("mnist", "cifar10-jpeg"):
            for e in (2, 4):
                for pos, layer in enumerate(("conv1", "fc", "global")):
                    v = 0.1 * (pos + 1) * (1 if m == "resnet18" else -1)
                    out.append({"model": m, "dataset": d, "layer": layer, "epoch": e, "position": pos,
                                **{f"{s}_norm": v for s in ("phi_clean", "phi_adv", "delta_phi")},
                                **{f"{s}_mark": "Af" if v > 0 else "Fr" for s in ("phi_clean", "phi_adv", "delta_phi")}})
    return pd.DataFrame(out)


def test_collapsed_panels_are_grey_and_labelled():
    collapsed = pd.Series({("resnet18", "mnist"): False, ("resnet18", "cifar10-jpeg"): False,
                           ("squeezenet1_1", "mnist"): True, ("squeezenet1_1", "cifar10-jpeg"): False})
    fig = figures.fig9_greyed(rows(), collapsed, accuracy={("squeezenet1_1", "mnist"): 10.4})
    axes = fig.axes
    assert len(axes) == 4
    grey = matplotlib.colors.to_rgb(figures._GREY)
    shaded = [ax for ax in axes if ax.get_facecolor()[:3] == pytest.approx(grey)]
    assert len(shaded) == 1 and "10.4 %" in " ".join(t.get_text() for t in shaded[0].texts)
    assert shaded[0] is axes[2]  # row squeezenet1_1, column mnist
    fig10 = figures.fig10_greyed(rows(), collapsed, score="delta_phi")
    notes = [ax for ax in fig10.axes if any("collapsed" in t.get_text() for t in ax.texts)]
    assert len(notes) == 1
    with pytest.raises(ValueError, match="score must be"):
        figures.fig10_greyed(rows(), collapsed, score="phi")
    with pytest.raises(ValueError, match="lack columns"):
        figures.fig9_greyed(rows().drop(columns="epoch"), collapsed)


def _tick_boxes(fig, ax):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]


def test_log_ticks_label_a_panel_within_one_decade_without_overlap():
    import matplotlib.pyplot as plt

    for values in ([2, 5, 10, 20, 50], [0.005, 0.01, 0.05, 0.1, 0.2], [0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.6]):
        fig, ax = plt.subplots(figsize=(3.0, 3.0))
        ax.plot(values, range(len(values)))
        ax.set_xscale("log")
        ticks = figures.log_ticks(ax, values)
        assert len(ticks) >= 2, values
        boxes = sorted(_tick_boxes(fig, ax), key=lambda b: b.x0)
        assert len(boxes) == len(ticks)
        assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), f"tick labels overlap for {values}"
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(3.0, 3.0))
    ax.set_xscale("log")
    assert len(figures.log_ticks(ax, [2, 5, 10, 20, 50])) >= 3  # matplotlib alone labels only 10 here
    plt.close(fig)


def fig12_rows():
    out = []
    for d in ("mnist", "fashion-mnist"):
        for seed in (0, 1, 2):
            for arm in ("selective", "control", "regular"):
                for epoch in (2, 3):
                    for k, eps in enumerate((0.0, 0.05, 0.1)):
                        shared = 80 - 10 * k + seed  # epoch 2: one snapshot shared by every arm
                        acc = shared if epoch == 2 else shared + {"selective": 3, "control": -2, "regular": 5}[arm]
                        out.append({"dataset": d, "seed": seed, "arm": arm, "epoch": epoch, "eps": eps,
                                    "accuracy": float(acc)})
    return pd.DataFrame(out)


def test_fig12_draws_a_shared_snapshot_once_and_separates_the_arms():
    rows = fig12_rows()
    fig = figures.fig12_curves(rows, chance={"mnist": 10.0, "fashion-mnist": 10.0}, title="t",
                               arms=["selective", "control", "regular"])
    axes = fig.axes
    assert len(axes) == 4
    early, late = axes[0], axes[1]  # mnist, epochs 2 and 3
    assert [c.get_label() for c in early.containers] == ["every arm: one shared model (before the first selection)"]
    assert len(late.containers) == 3
    xs = [c.lines[0].get_xdata() for c in late.containers]
    assert not any(np_equal(xs[0], x) for x in xs[1:])  # the arms are shifted apart
    colours = {tuple(c.lines[0].get_color()) if not isinstance(c.lines[0].get_color(), str) else c.lines[0].get_color()
               for c in late.containers}
    assert len(colours) == 3
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "selective backprop" in legend and "chance" in legend
    changed = rows.assign(accuracy=rows["accuracy"] + (rows["arm"] == "control") * 1.0)
    fig = figures.fig12_curves(changed, chance={"mnist": 10.0, "fashion-mnist": 10.0}, title="t",
                               arms=["selective", "control", "regular"])
    assert len(fig.axes[0].containers) == 3  # arms that differ are never merged
    with pytest.raises(ValueError, match="lack columns"):
        figures.fig12_curves(rows.drop(columns="eps"), chance={}, title="t", arms=["selective"])


def np_equal(a, b):
    import numpy as np

    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def test_text_damage_labels_every_panel_and_uses_the_palette():
    from types import SimpleNamespace

    tasks = {"lm": SimpleNamespace(label="PTB-LM", metric_label="Log PPL"),
             "mt": SimpleNamespace(label="De-En", metric_label="BLEU")}
    rows = [{"task": t, "eps": e, "damage": e * (1 + k), "model": m}
            for t, grid in (("PTB-LM", (2, 5, 10, 20, 50)), ("De-En", (0.1, 0.25, 0.5, 1.0)))
            for e in grid for k, m in enumerate(["Baseline, ours", "Proposed (Eq. 13), ours", "Baseline, paper",
                                                 "Proposed, paper"])]
    fig = figures.text_damage(pd.DataFrame(rows), tasks)
    for ax in fig.axes:
        assert len([t for t in ax.get_xticklabels() if t.get_text()]) >= 3
        assert ax.get_xlabel() and ax.get_ylabel()
    lines = fig.axes[0].get_lines()
    assert matplotlib.colors.to_rgb(lines[0].get_color()) == pytest.approx(figures.colours(1)[0])
    assert len(fig.legends[0].get_texts()) == 4
