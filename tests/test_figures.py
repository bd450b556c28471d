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
