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


def test_fig10_landscapes_explains_an_empty_panel():
    import numpy as np

    frame = rows()
    dead = (frame["model"] == "squeezenet1_1") & (frame["dataset"] == "mnist")
    for s in ("phi_adv", "delta_phi"):  # a network that was not attacked: only clean scores
        frame.loc[dead, f"{s}_norm"] = np.nan
        frame.loc[dead, f"{s}_mark"] = np.nan
    fig = figures.fig10_landscapes(frame, "squeezenet1_1", reasons={("squeezenet1_1", "mnist"): "accuracy at chance"})
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 6  # 2 data sets × 3 scores (+ the colour bar)
    notes = {ax.get_title(): " ".join(t.get_text() for t in ax.texts).replace("\n", " ") for ax in panels}
    empty = [title for title, text in notes.items() if "not attacked" in text]
    assert sorted(empty) == ["MNIST: Δφ", "MNIST: φ_adv"]
    assert "accuracy at chance" in notes["MNIST: Δφ"]
    assert not any("not attacked" in t for title, t in notes.items() if title not in empty)
    with pytest.raises(ValueError, match="no local score rows"):
        figures.fig10_landscapes(frame, "vgg11")


def test_fig11_removal_draws_the_removed_points_above_the_error_bars():
    import numpy as np

    carry = pd.DataFrame({"layer": ["conv1", "layer1.0.conv1"], "acc_unfiltered": [99.0, 99.0],
                          "acc_removed": [10.0, 95.0], "acc_removed_no_carry": [9.0, 90.0]})
    c = np.linspace(-0.3, 0.05, 16)
    channels = pd.DataFrame({"predicted": c, "measured_mean": c, "unfiltered_mean": c + 0.01,
                             "unfiltered_std": np.full(16, 0.8)})
    fig = figures.fig11_removal(carry, channels, layer="conv1", bn="bn1", chance=10.0, title="t")
    ax = fig.axes[1]
    points = [col for col in ax.collections if col.get_label() == "layer removed: mean"]
    bars = [col for col in ax.collections if col not in points]
    assert len(points) == 1 and bars
    assert points[0].get_zorder() > max(b.get_zorder() for b in bars)
    assert ax.get_xlabel() and ax.get_ylabel() == "bn1 output per channel"
    with pytest.raises(ValueError, match="lacks columns"):
        figures.fig11_removal(carry, channels.drop(columns="unfiltered_std"), layer="conv1", bn="bn1", chance=10.0,
                              title="t")


def test_theorem1_panels_wrap_and_scale_small_eta():
    import numpy as np

    from paramstress.corruption import theory

    rng = np.random.default_rng(0)
    eta = {f"k = {k:,}": (k, theory.quantile(rng.uniform(size=200), k)) for k in (3, 10, 100, 1000, 10**4, 10**5)}
    eta["model g, k = 21,282,122"] = (21282122, theory.quantile(rng.uniform(size=200), 21282122))
    fig = figures.theorem1_panels(eta, title="t", cols=4)
    assert fig.get_size_inches()[0] <= 10.5  # fits the book's column
    last = [ax for ax in fig.axes if ax.get_xlabel().startswith("η")][-1]
    assert last.get_xlabel() == "η (×10⁻⁴)"
    fig.canvas.draw()
    labels_ = [t for t in last.get_xticklabels() if t.get_text()]
    assert 2 <= len(labels_) <= 4 and all(len(t.get_text()) <= 4 for t in labels_)
    with pytest.raises(ValueError, match="eta is empty"):
        figures.theorem1_panels({}, title="t")


def test_loss_change_caps_blown_up_losses():
    import numpy as np

    eps = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    ratio = pd.DataFrame({"task": "cifar10-jpeg", "eps": eps, "trials": 5,
                          "random_delta_loss": [1e-8, 1e-6, 1e-4, 1.0, 1e26],
                          "gradient_delta_loss": [0.02, 0.2, 2.0, 1e23, np.nan],
                          "ratio_se": [1e-7, 1e-6, 1e-5, 1e-20, np.nan], "resolved": [False, True, True, True, False]})
    ratio["ratio"] = ratio["random_delta_loss"] / ratio["gradient_delta_loss"]
    scaling = pd.DataFrame({"task": ["cifar10-jpeg"], "random_c2": [1.0], "gradient_c1": [2e3],
                            "predicted_ratio_per_eps": [5e-4], "gradient_eps": [[1e-5, 1e-4]]})
    fig = figures.loss_change(ratio, scaling, eps=eps, cap=1e3)
    left, right = fig.axes[:2]
    assert left.get_ylim()[1] == pytest.approx(1e3)  # not 1e26
    assert right.get_ylim()[0] >= 1e-9  # not 1e-23
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "off scale" in legend and "Random" in legend
    assert left.get_xlabel() == "ε (L∞, n = k)" and "nats" in left.get_ylabel()
    with pytest.raises(ValueError, match="lack columns"):
        figures.loss_change(ratio.drop(columns="resolved"), scaling, eps=eps)
