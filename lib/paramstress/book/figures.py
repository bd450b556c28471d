"""The book's figures, each a function of tidy frames: one colour-blind-safe palette
(:data:`PALETTE`), axis labels with units, sized for the book's column. (The pages published
on a GPU still draw some figures inline; :func:`theorem1_panels`, :func:`loss_change`,
:func:`fig10_landscapes` and :func:`fig11_removal` replace those cells at their next GPU run.)
Among them:

- :func:`fig9_greyed`: Pravin et al.'s Fig. 9 (global normalised scores over training, one
  panel per network and data set) with the collapsed runs greyed out and labelled;
- :func:`fig10_greyed`: their Fig. 10 (local landscapes, layers × epochs) for one score, one
  panel per network and data set, the collapsed runs greyed out and labelled.

Both take the tidy score rows of the score-landscape page (columns model, dataset, layer,
epoch, ``<score>_norm``, ``<score>_mark``, position) and a boolean Series of collapsed runs
indexed by (model, dataset) (:func:`paramstress.collapse.collapsed_runs`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from paramstress.book import labels

__all__ = ["PALETTE", "colours", "arm_colours", "log_ticks", "fig9_greyed", "fig10_greyed", "agreement_scatter", "agreement_over_epochs", "selective_heatmap", "fig12_curves",
           "virtual_eps_search", "table2_curves", "flatness_scatter",
           "vulnerability_heatmaps", "table1_damage",
           "image_grid", "confusion",
           "global_delta_phi", "fig6_responses", "modes_delta_phi", "label_heatmaps",
           "text_fig3", "text_vulnerability_heatmaps", "text_damage",
           "theorem1_panels", "loss_change", "fig10_landscapes", "fig11_removal"]

_GREY = "#d9d9d9"

#: The one categorical palette of every figure of the book (seaborn's colour-blind-safe
#: "colorblind", after Okabe and Ito); heatmaps use ColorBrewer's RdBu (diverging) or the
#: perceptually uniform rocket / mako / viridis maps, which are colour-blind safe too.
PALETTE = "colorblind"


def colours(n: int) -> list[tuple[float, float, float]]:
    """The first ``n`` colours of :data:`PALETTE` (it repeats after 10)."""
    return list(sns.color_palette(PALETTE, n))


def arm_colours() -> dict[str, tuple[float, float, float]]:
    """selective backpropagation's arms (``labels.ARMS`` keys) → colours of :data:`PALETTE`:
    selective blue, the same-restarts control orange, uninterrupted regular training grey."""
    cb = colours(10)
    return {"selective": cb[0], "control": cb[1], "regular": cb[7]}


def log_ticks(ax: plt.Axes, values: Sequence[float], *, axis: str = "x", fontsize: float = 10.0) -> list[float]:
    """Readable ticks on a log axis that spans ``values`` (the positive finite values drawn on it):
    decades first, then the 5s and 2s between them, each kept only where its label does not
    run into a neighbour's at the axis's present length (labels are plain numbers, ``:g``; no
    minor labels). A panel within about one decade (where matplotlib shows a single tick) gets
    its 2s and 5s; fewer than two steps in range falls back to the drawn values. Returns the ticks."""
    import matplotlib.ticker as mticker

    v = np.array(sorted({float(x) for x in values if np.isfinite(x) and x > 0}))
    if not len(v):
        return []
    lo, hi = v[0] * (1 - 1e-9), v[-1] * (1 + 1e-9)
    decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
    candidates = [m * 10.0 ** e for m in (1, 5, 2) for e in decades if lo <= m * 10.0 ** e <= hi]
    if len(candidates) < 2:
        candidates = list(v)
    box = ax.get_position()
    fig_w, fig_h = ax.figure.get_size_inches()
    length_in = box.width * fig_w if axis == "x" else box.height * fig_h
    span = max(np.log10(v[-1] / v[0]), 1e-9) * 1.1  # matplotlib's margins: about 5 % each side
    char_in = 0.64 * fontsize / 72  # a digit of DejaVu Sans
    chosen: list[float] = []
    for t in candidates:
        width = (len(f"{t:g}") * char_in if axis == "x" else fontsize / 72) + 0.12
        gap = span * width / max(length_in, 1e-3)
        if all(abs(np.log10(t / c)) >= gap for c in chosen):
            chosen.append(t)
    chosen.sort()
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(mticker.FixedLocator(chosen))
    target.set_major_formatter(mticker.FuncFormatter(lambda x, _: f"{x:g}"))
    target.set_minor_formatter(mticker.NullFormatter())
    return chosen


def _check(scores: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in ("model", "dataset", "layer", "epoch", *columns) if c not in scores.columns]
    if missing:
        raise ValueError(f"the score rows lack columns {missing}: pass score_landscapes.scores.csv")


def _is_collapsed(collapsed: pd.Series, model: str, dataset: str) -> bool:
    return bool(collapsed.get((model, dataset), False))


def _collapse_note(ax: plt.Axes, accuracy: Mapping[tuple[str, str], float] | None, model: str, dataset: str) -> None:
    ax.set_facecolor(_GREY)
    acc = None if accuracy is None else accuracy.get((model, dataset))
    text = "collapsed run" + ("" if acc is None else f"\n(test accuracy {acc:.1f} %)") + "\nnot a result"
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="black",
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "grey"})


def fig9_greyed(scores: pd.DataFrame, collapsed: pd.Series, *, global_layer: str = "global",
                accuracy: Mapping[tuple[str, str], float] | None = None) -> plt.Figure:
    """Fig. 9 from the tidy score rows: per network (rows) and data set (columns) the
    normalised global φ_clean, φ_adv and Δφ over the snapshots; the panels of collapsed runs
    are greyed, their lines grey, and labelled (with ``accuracy[(model, dataset)]`` when given)."""
    cols = [f"{s}_norm" for s in labels.SCORES]
    _check(scores, cols)
    glob = scores[scores["layer"] == global_layer]
    models = list(dict.fromkeys(glob["model"]))
    datasets = list(dict.fromkeys(glob["dataset"]))
    if not models:
        raise ValueError(f"no rows of the global scope {global_layer!r}")
    palette = dict(zip(labels.SCORES, colours(len(labels.SCORES))))
    fig, axes = plt.subplots(len(models), len(datasets), figsize=(3.3 * len(datasets), 2.3 * len(models)),
                             sharex=True, sharey=True, squeeze=False)
    for i, m in enumerate(models):
        for j, d in enumerate(datasets):
            ax = axes[i, j]
            part = glob[(glob["model"] == m) & (glob["dataset"] == d)].sort_values("epoch")
            dead = _is_collapsed(collapsed, m, d)
            for s, marker in zip(labels.SCORES, "os^"):
                ax.plot(part["epoch"], part[f"{s}_norm"], marker=marker, ms=4, lw=1.2,
                        color="grey" if dead else palette[s], label=labels.SCORES[s])
            ax.axhline(0, color="black", lw=0.7)
            ax.set_ylim(-0.55, 0.55)
            if dead:
                _collapse_note(ax, accuracy, m, d)
            if i == 0:
                ax.set_title(labels.label(d))
            if j == 0:
                ax.set_ylabel(f"{labels.label(m, labels.ARCHS)}\nnormalised score")
            if i == len(models) - 1:
                ax.set_xlabel("epoch")
    # the legend from a panel drawn in colour (a collapsed one has grey lines), else the first
    live = next(((i, j) for i, m in enumerate(models) for j, d in enumerate(datasets)
                 if not _is_collapsed(collapsed, m, d)), (0, 0))
    handles, names = axes[live].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=len(names), bbox_to_anchor=(0.5, 1.02))
    fig.suptitle("Fig. 9: global scores of the combined response (normalised; 0 = robust; grey: collapsed run)",
                 y=1.06)
    fig.tight_layout()
    return fig


def fig10_greyed(scores: pd.DataFrame, collapsed: pd.Series, *, score: str = "phi_clean",
                 global_layer: str = "global", accuracy: Mapping[tuple[str, str], float] | None = None
                 ) -> plt.Figure:
    """Fig. 10 for one score from the tidy score rows: per network (rows) and data set
    (columns) a heatmap of the normalised local score, layers (by position) × epochs, with
    the label marks; collapsed runs drawn in greys and labelled."""
    if score not in labels.SCORES:
        raise ValueError(f"score must be one of {list(labels.SCORES)}, got {score!r}")
    _check(scores, [f"{score}_norm", f"{score}_mark", "position"])
    local = scores[scores["layer"] != global_layer]
    models = list(dict.fromkeys(local["model"]))
    datasets = list(dict.fromkeys(local["dataset"]))
    rows = max(int(local[local["model"] == m]["layer"].nunique()) for m in models)
    fig, axes = plt.subplots(len(models), len(datasets), figsize=(3.4 * len(datasets), 0.32 * rows * len(models) + 1.5),
                             squeeze=False)
    for i, m in enumerate(models):
        order = (local[local["model"] == m].drop_duplicates("layer").sort_values("position")["layer"].tolist())
        for j, d in enumerate(datasets):
            ax = axes[i, j]
            sub = local[(local["model"] == m) & (local["dataset"] == d)]
            mat = sub.pivot(index="layer", columns="epoch", values=f"{score}_norm").reindex(order)
            ann = sub.pivot(index="layer", columns="epoch", values=f"{score}_mark").reindex(order).fillna("")
            dead = _is_collapsed(collapsed, m, d)
            cmap = plt.matplotlib.colors.ListedColormap([_GREY]) if dead else "RdBu"
            sns.heatmap(mat.astype(float), ax=ax, cmap=cmap, center=None if dead else 0, vmin=-0.5, vmax=0.5,
                        annot=ann, fmt="", cbar=False, annot_kws={"fontsize": 6, "color": "dimgrey"} if dead
                        else {"fontsize": 6}, linewidths=0.3)
            if dead:
                _collapse_note(ax, accuracy, m, d)
            ax.set_title(f"{labels.label(m, labels.ARCHS)}, {labels.label(d)}", fontsize=9)
            ax.set_xlabel("epoch" if i == len(models) - 1 else "")
            ax.set_ylabel("")
            ax.tick_params(axis="y", labelsize=6)
            if j:
                ax.set_yticklabels([])
    fig.suptitle(f"Fig. 10: local landscapes of {labels.SCORES[score]} (normalised; red fragile, blue antifragile; "
                 "grey: collapsed run)", y=1.0)
    fig.tight_layout()
    return fig


def agreement_scatter(table: pd.DataFrame, *, tasks: Sequence[str], title: str,
                      names: Mapping[str, str] = labels.DATASETS) -> plt.Figure:
    """corruption_vs_filtering's scatter: one point per conv/linear layer, the corruption
    indicator (log x) against −φ_clean, −Δφ and average-case flatness (oriented so that
    larger = more vulnerable, :func:`paramstress.agreement.orient`), a row per data set,
    coloured by depth, marked by seed."""
    import matplotlib.ticker as mticker

    ys = [("phi_clean_vuln", "−φ_clean (removal, clean)"), ("delta_phi_vuln", "−Δφ (removal, adv. − clean)"),
          ("average_flatness_vuln", "average-case flatness")]
    fig, axes = plt.subplots(len(tasks), len(ys), figsize=(4.2 * len(ys), 3.4 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        part = table[table["dataset"] == task]
        for j, (col, ylabel) in enumerate(ys):
            ax = axes[i, j]
            sns.scatterplot(data=part, x="indicator", y=col, hue="position", style="seed", palette="viridis",
                            legend=(i == 0 and j == len(ys) - 1), ax=ax, s=45)
            ax.set(xscale="log", xlabel="corruption indicator ε‖top_n(g_l)‖₁" if i == len(tasks) - 1 else "",
                   ylabel=ylabel, title=f"{labels.label(task, names)}" if j == 0 else "")
            ax.xaxis.set_minor_formatter(mticker.NullFormatter())  # decades only: no overlapping minor labels
            if col != "average_flatness_vuln":
                ax.axhline(0, color="grey", lw=0.8, ls=":")
    if axes[0, -1].get_legend() is not None:
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1), title="depth / seed", fontsize=8)
    fig.suptitle(title, y=1.01)
    fig.tight_layout()
    return fig


def agreement_over_epochs(spearman: pd.DataFrame, *, tasks: Sequence[str], seeds: Sequence[int],
                          epochs: Sequence[int], title: str, names: Mapping[str, str] = labels.DATASETS) -> plt.Figure:
    """corruption_vs_filtering's correlations over training: one panel per pair of measures
    (the ``pair`` column; depth pairs left out), Spearman ρ with its interval at each epoch,
    one line per data set and seed (offset sideways so the intervals do not hide each other)."""
    import math

    over = spearman[~spearman["x"].isin(["position"])].copy()
    over["task"] = over["dataset"].map(lambda t: labels.label(t, names))
    pairs_shown = list(dict.fromkeys(over["pair"]))
    cols = 3
    rows = math.ceil(len(pairs_shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 2.9 * rows), sharey=True, squeeze=False)
    task_labels = [labels.label(t, names) for t in tasks]
    palette = dict(zip(task_labels, colours(len(tasks))))
    offsets = {(labels.label(t, names), s): 0.08 * (i - (len(tasks) * len(seeds) - 1) / 2)
               for i, (t, s) in enumerate([(t, s) for t in tasks for s in seeds])}
    for ax, pair in zip(axes.flat, pairs_shown):
        part = over[over["pair"] == pair]
        for (task, seed), g in part.groupby(["task", "seed"]):
            xpos = g["epoch"] + offsets[task, seed]
            ax.errorbar(xpos, g["statistic"], yerr=[g["statistic"] - g["low"], g["high"] - g["statistic"]], fmt="o-",
                        color=palette[task], capsize=3, lw=1.2, ms=4, label=f"{task}, seed {seed}")
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set(title=pair, xticks=list(epochs), ylim=(-1.05, 1.05), xlabel="epoch")
    for ax in list(axes.flat)[len(pairs_shown):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("Spearman ρ")
    handles, labels_ = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels_, loc="lower center", ncol=len(labels_), bbox_to_anchor=(0.5, -0.03), fontsize=8)
    fig.suptitle(title, y=1.0)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def selective_heatmap(choices: pd.DataFrame, *, layers: Sequence[str], title: str,
                      names: Mapping[str, str] = labels.DATASETS) -> plt.Figure:
    """selective_backprop's Δφ per layer (rows, input → output) at each scoring (columns:
    data set · seed · epoch), diverging around 0, the layers frozen next marked "Fr"."""
    heat = choices.assign(column=choices["dataset"].map(lambda t: labels.label(t, names)) + " · seed "
                          + choices["seed"].astype(str) + " · ep " + choices["epoch"].astype(str))
    order = list(layers)
    values = heat.pivot(index="layer", columns="column", values="delta_phi").reindex(order)
    marks = heat.pivot(index="layer", columns="column", values="fragile").reindex(order).replace({True: "Fr", False: ""})
    limit = float(np.nanmax(np.abs(values.to_numpy()))) or 1.0
    fig, ax = plt.subplots(figsize=(1.5 + 1.35 * values.shape[1], 0.8 + 0.3 * len(order)))
    sns.heatmap(values, annot=marks, fmt="", cmap="RdBu", center=0, vmin=-limit, vmax=limit, linewidths=0.5,
                cbar_kws={"label": "Δφ (combined response)"}, ax=ax)
    ax.set(xlabel="", ylabel="layer (input → output)", title=title)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    return fig


def fig12_curves(fig12: pd.DataFrame, *, chance: Mapping[str, float], title: str, arms: Sequence[str],
                 names: Mapping[str, str] = labels.DATASETS) -> plt.Figure:
    """Pravin et al.'s Fig. 12: test accuracy against the FGSM ε, one panel per data set (rows)
    and epoch (columns), one line per arm: mean ± sd over the seeds as error bars, the arms
    shifted sideways a little so that their bars do not hide each other; chance dotted
    (``chance``: data set → %). Where every arm has the same accuracies (a snapshot taken before
    the first selection, which all arms share) one black line says so instead of three lines
    drawn on top of each other."""
    missing = [c for c in ("dataset", "seed", "arm", "epoch", "eps", "accuracy") if c not in fig12.columns]
    if missing:
        raise ValueError(f"the Fig. 12 rows lack columns {missing}: pass selective_backprop.fig12.csv")
    tasks = list(dict.fromkeys(fig12["dataset"]))
    epochs = sorted(fig12["epoch"].unique())
    shown = [a for a in arms if a in set(fig12["arm"])]
    colour = arm_colours()
    markers = dict(zip(labels.ARMS, "oXs"))
    fig, axes = plt.subplots(len(tasks), len(epochs), figsize=(3.3 * len(epochs) + 0.6, 2.7 * len(tasks) + 1.3),
                             sharey=True, squeeze=False)
    handles: dict[str, Any] = {}
    for i, t in enumerate(tasks):
        for j, e in enumerate(epochs):
            ax = axes[i, j]
            part = fig12[(fig12["dataset"] == t) & (fig12["epoch"] == e)]
            per_arm = {a: part[part["arm"] == a].sort_values(["seed", "eps"])[["seed", "eps", "accuracy"]].to_numpy()
                       for a in shown}
            first = next(iter(per_arm.values()))
            shared = len(shown) > 1 and all(v.shape == first.shape and np.array_equal(v, first)
                                             for v in per_arm.values())
            span = float(part["eps"].max() - part["eps"].min()) or 1.0
            groups = [("shared", part[part["arm"] == shown[0]])] if shared else [(a, part[part["arm"] == a]) for a in shown]
            for k, (a, rows) in enumerate(groups):
                agg = rows.groupby("eps")["accuracy"].agg(["mean", "std"]).reset_index()
                shift = 0.0 if shared else (k - (len(groups) - 1) / 2) * 0.018 * span
                name = "every arm: one shared model (before the first selection)" if shared else labels.ARMS[a]
                h = ax.errorbar(agg["eps"] + shift, agg["mean"], yerr=agg["std"].fillna(0.0),
                                color="black" if shared else colour[a], marker="o" if shared else markers[a],
                                ms=4.5, lw=1.4, capsize=2.5, elinewidth=1.0, label=name)
                handles.setdefault(name, h)
            ax.axhline(chance[t], color="grey", ls=":", lw=1)
            ax.set_ylim(0, 100)
            ax.set_title(f"{labels.label(t, names)}, epoch {e}", fontsize=10)
            ax.set_xlabel("FGSM ε (normalised units)" if i == len(tasks) - 1 else "")
            ax.set_ylabel("test accuracy (%)" if j == 0 else "")
    handles.setdefault("chance", plt.Line2D([], [], color="grey", ls=":", lw=1))
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=2, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.1 + 0.04 * (len(handles) > 4), 1, 1))
    return fig


def virtual_eps_search(search_table: pd.DataFrame, baseline: pd.DataFrame, *, search_eps: Sequence[float],
                       alpha: float, title: str) -> plt.Figure:
    """resistant_training's search: the direct variant's (Eq. 13) clean and mean corrupted
    validation accuracy against the virtual ε (log x), the baseline dashed, the chosen ε
    circled (``search_table`` of :func:`paramstress.resistant.select_virtual`)."""
    curve = pd.concat([
        search_table.assign(what="clean", value=search_table["clean"]),
        search_table.assign(what="mean under corruption (Table 2 grid)", value=search_table["corrupted_mean"]),
    ])
    base_clean = float(baseline.loc[baseline.eps.isna(), "accuracy"].iloc[0])
    base_corr = float(baseline.loc[baseline.eps.notna(), "accuracy"].mean())
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (what, base) in zip(axes, [("clean", base_clean), ("mean under corruption (Table 2 grid)", base_corr)]):
        part = curve[curve.what == what]
        sns.lineplot(data=part, x="virtual_eps", y="value", marker="o", ax=ax, color=colours(2)[1], label="direct (Eq. 13)")
        ax.axhline(base, color="grey", ls="--", lw=1, label="baseline")
        sel = part[part.selected]
        ax.plot(sel["virtual_eps"], sel["value"], "o", ms=12, mfc="none", mec=colours(4)[3], label="chosen")
        ax.set(xscale="log", xlabel=f"virtual ε (α = {alpha})", ylabel="validation accuracy (%)", title=what)
        ax.set_xticks(list(search_eps), [f"{e:g}" for e in search_eps])
        ax.minorticks_off()
        ax.legend(fontsize=8)
    fig.suptitle(title, y=1.03)
    fig.tight_layout()
    return fig


def table2_curves(results: pd.DataFrame, paper: pd.DataFrame, *, title: str) -> plt.Figure:
    """resistant_training's Table 2 as curves: test accuracy against ε (L2, n = k) per trainer
    (band ± sd over seeds), beside the paper's CIFAR-10 / ResNet-34 baseline and proposed rows
    (``paper``: :func:`paramstress.resistant.paper_table2`)."""
    from paramstress.corruption.resistant import TRAINER_LABELS

    plot = results.assign(trainer=results["trainer"].map(TRAINER_LABELS))
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.0), gridspec_kw={"width_ratios": [3, 2]})
    corr = plot[plot.eps.notna()]
    sns.lineplot(data=corr, x="eps", y="accuracy", hue="trainer", style="trainer", markers=True, dashes=False,
                 errorbar="sd", ax=axes[0], hue_order=list(TRAINER_LABELS.values()), palette=PALETTE)
    axes[0].set(xscale="log", ylim=(0, 100), xlabel="ε (L2, n = k)", ylabel="test accuracy (%)", title=title)
    axes[0].legend(fontsize=8)
    pc = paper[paper.eps.notna()]
    axes[1].plot(pc["eps"], pc["baseline"], "o-", color=colours(2)[0], label="Baseline")
    axes[1].plot(pc["eps"], pc["proposed"], "s-", color=colours(2)[1], label="Proposed")
    axes[1].set(xscale="log", ylim=(0, 100), xlabel="ε (L2, n = k)", ylabel="test accuracy (%)",
                title="The paper: CIFAR-10, ResNet-34")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def flatness_scatter(table: pd.DataFrame, *, eps: float, average_xi: float, worst_xi: float) -> plt.Figure:
    """resistant_training's flatness against accuracy: each Table 2 model's average- and
    worst-case loss increase (Stutz et al.) against its test accuracy at ``eps``, by trainer
    (``table``: the Table 2 rows of :func:`paramstress.resistant.flatness_table`)."""
    from paramstress.corruption.resistant import TRAINER_LABELS

    order = list(TRAINER_LABELS.values())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, col, what in [(axes[0], "average_flatness", f"average case (ξ = {average_xi})"),
                          (axes[1], "worst_flatness", f"worst case (ξ = {worst_xi})")]:
        sns.scatterplot(data=table, x=col, y="accuracy", hue="label", style="label", s=70, ax=ax,
                        hue_order=order, style_order=order, palette=PALETTE)
        ax.set(xlabel=f"loss increase, {what}", ylabel=f"test accuracy at ε = {eps:g} (%)")
        ax.legend(fontsize=7)
    fig.suptitle("Flatter models (left in each panel) against accuracy under corruption", y=1.02)
    fig.tight_layout()
    return fig


def _drop_heatmap(ax: plt.Axes, part: pd.DataFrame, columns: Sequence[str], title: str, chosen_eps: float,
                  cbar: bool) -> None:
    table = part.pivot_table(index="eps", columns="group", values="drop", sort=False).reindex(columns=list(columns))
    table.index = [f"{e:g}" for e in table.index]
    sns.heatmap(table, annot=True, fmt=".0f", cmap="rocket_r", vmin=0, vmax=100, ax=ax, cbar=cbar,
                cbar_kws={"label": "accuracy drop (points)"} if cbar else None, annot_kws={"size": 8})
    rows = list(table.index)
    if f"{chosen_eps:g}" in rows:
        ax.add_patch(plt.Rectangle((0, rows.index(f"{chosen_eps:g}")), len(columns), 1, fill=False, lw=2, ec=colours(1)[0]))
    ax.set(title=title, xlabel="", ylabel="ε")


def vulnerability_heatmaps(results: pd.DataFrame, *, kind: str, groups: Mapping[str, Sequence[str]],
                           eps: Mapping[str, float], title: str,
                           group_labels: Mapping[str, str] | None = None) -> plt.Figure:
    """Fig. 4 as heatmaps: the accuracy drop (points) of each group (columns) at each ε (rows)
    for every model (panels; ``groups``: model label → its groups in order), the ε chosen for
    the model boxed (``eps``). ``kind``: ``"component"`` or ``"layer"`` rows of
    :func:`paramstress.vulnerability.probe`; ``group_labels`` relabels the groups (component
    names → labels)."""
    part_all = results[results.group_kind == kind]
    widths = [len(g) for g in groups.values()]
    if kind == "layer":
        fig, axes = plt.subplots(1, len(groups), figsize=(0.65 * sum(widths) + 2.5, 4.2), squeeze=False,
                                 gridspec_kw={"width_ratios": widths})
    else:
        fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups) + 1, 3.4), squeeze=False)
    for j, (model, cols) in enumerate(groups.items()):
        part = part_all[part_all.model == model]
        if group_labels is not None:
            part = part.assign(group=part["group"].map(group_labels))
            cols = [group_labels[c] for c in cols]
        _drop_heatmap(axes[0, j], part, cols, model, eps[model], cbar=j == len(groups) - 1)
        if kind == "layer":
            axes[0, j].tick_params(axis="x", labelrotation=90)
    fig.suptitle(title, y=1.03)
    fig.tight_layout()
    return fig


def table1_damage(damage: pd.DataFrame, paper: pd.DataFrame, *, n: int, title: str) -> Any:
    """Table 1's sparse rows as damage (0: intact, 1: chance, :func:`paramstress.tables.relative_damage`)
    against ε, one line per subspace, Random and Proposed side by side, the paper's CIFAR-10
    ResNet-34 dashed. Returns the seaborn ``FacetGrid``."""
    grid = sns.relplot(data=damage, x="eps", y="damage", hue="subspace", style="subspace", col="approach",
                       col_order=["Random", "Proposed"], kind="line", markers=True, dashes=False, errorbar=None,
                       height=3.4, aspect=1.2)
    paper_line = None
    for ax, approach in zip(grid.axes.flat, ["Random", "Proposed"]):
        ref = paper[paper["approach"] == approach]
        (paper_line,) = ax.plot(ref["eps"], ref["damage"], "k--x", lw=1, label="paper, CIFAR-10 ResNet-34")
        ax.set_title(approach)
    grid.axes.flat[0].legend(handles=[paper_line], fontsize=8, loc="upper left")
    grid.set(xscale="log", ylim=(-0.05, 1.05))
    grid.set_axis_labels(f"ε (L∞, n = {n})", "damage (0: intact, 1: chance)")
    grid.figure.suptitle(title, y=1.06)
    return grid


def image_grid(images: Any, targets: Any, classes: Sequence[str], *, title: str, rows: int = 2,
               cols: int = 8) -> plt.Figure:
    """The first ``rows × cols`` images (``N×C×H×W``, first channel shown in grey) titled with
    their class names."""
    fig, axes = plt.subplots(rows, cols, figsize=(cols, 1.15 * rows))
    for ax, img, target in zip(axes.flat, images[:rows * cols].cpu(), targets[:rows * cols].cpu()):
        ax.imshow(img[0], cmap="gray_r")
        ax.set_title(classes[int(target)], fontsize=9)
        ax.axis("off")
    fig.suptitle(title, y=1.02)
    return fig


def confusion(true: Any, predicted: Any, *, title: str) -> plt.Figure:
    """The confusion matrix (counts; rows: true class, columns: predicted) as an annotated heatmap."""
    table = pd.crosstab(pd.Series(np.asarray(true), name="true"), pd.Series(np.asarray(predicted), name="predicted"))
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    sns.heatmap(table, annot=True, fmt="d", cmap="mako_r", cbar=False, ax=ax, annot_kws={"fontsize": 8})
    ax.set_title(title)
    return fig


def global_delta_phi(frame: pd.DataFrame, *, title: str) -> plt.Figure:
    """method_choices: the global Δφ of each snapshot under each reference (columns ``epoch``,
    ``delta_phi``, ``reference``, ``data set``: labels), 0 marked."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    sns.lineplot(data=frame, x="epoch", y="delta_phi", hue="reference", style="data set", markers=True, ax=ax,
                 palette=PALETTE)
    ax.axhline(0, color="black", lw=0.8)
    ax.set(xlabel="epoch of the snapshot", ylabel="global Δφ (area units)", title=title)
    ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    return fig


def fig6_responses(frame: pd.DataFrame, *, title: str) -> Any:
    """Pravin et al.'s Fig. 6 from :func:`paramstress.fragility.fig6_frame`: the response against
    the stress λ per filter (columns) and panel (rows), one line per epoch, the unfiltered
    baseline dashed. Returns the seaborn ``FacetGrid``."""
    grid = sns.relplot(data=frame, x="lam", y="response", hue="epoch", col="filter", row="panel", kind="line",
                       palette="viridis", height=2.1, aspect=1.25, facet_kws={"margin_titles": True})
    for (row, col), ax in grid.axes_dict.items():
        base = frame[(frame.panel == row) & (frame["filter"] == col)].groupby("lam")["baseline"].mean()
        ax.plot(base.index, base.values, color="grey", ls="--", lw=1)
    grid.set_axis_labels("stress λ", "response")
    grid.set_titles(row_template="{row_name}", col_template="{col_name}")
    grid.figure.suptitle(title, y=1.02)
    return grid


def modes_delta_phi(frame: pd.DataFrame, *, title: str) -> Any:
    """method_choices: Δφ of every filtered scope (rows) under fixed and regenerated FGSM
    (hue), per reference (columns) and data set (rows of panels), 0 marked."""
    grid = sns.catplot(data=frame, x="delta_phi", y="layer", hue="adversarial", col="reference", row="data set",
                       kind="point", linestyle="none", dodge=0.4, height=3.0, aspect=1.25, palette=PALETTE,
                       margin_titles=True, sharex=False)
    for ax in grid.axes.flat:
        ax.axvline(0, color="black", lw=0.8)
    grid.set_axis_labels("Δφ (area units)", "")
    grid.figure.suptitle(title, y=1.03)
    return grid


def label_heatmaps(frame: pd.DataFrame, *, layers: Sequence[str], references: Sequence[str], title: str,
                   names: Mapping[str, str] = labels.DATASETS) -> plt.Figure:
    """method_choices: the Δφ label of every layer (rows) under each reference (columns), one
    panel per data set; ``frame`` has ``dataset``, ``layer``, ``reference`` and ``Δφ label``
    (fragile / robust / antifragile / removable, :data:`paramstress.fragility.REMOVABLE`)."""
    from paramstress.filtering.fragility import REMOVABLE

    order = list(layers)
    codes = {"fragile": -1, "robust": 0, "antifragile": 1, REMOVABLE: 2}
    fig, axes = plt.subplots(1, len(frame["dataset"].unique()), figsize=(12, 0.28 * len(order) + 1.6), sharey=True)
    cmap = plt.matplotlib.colors.ListedColormap(["#0072B2", "#F0E442", "#D55E00", "#BBBBBB"])
    for ax, (d, sub) in zip(np.atleast_1d(axes), frame.groupby("dataset", sort=False)):
        mat = sub.pivot(index="layer", columns="reference", values="Δφ label").reindex(order)[list(references)]
        sns.heatmap(mat.replace(codes).astype(float), cmap=cmap, vmin=-1.5, vmax=2.5, cbar=False, ax=ax,
                    annot=mat.replace({"fragile": "Fr", "robust": "Ro", "antifragile": "Af", REMOVABLE: "rm"}),
                    fmt="", linewidths=0.5)
        ax.set(title=labels.label(d, names), xlabel="reference", ylabel="")
    fig.suptitle(title, y=1.0)
    plt.tight_layout()
    return fig


def text_fig3(fig3: pd.DataFrame, tasks: Mapping[str, Any], clean: Mapping[str, float]) -> Any:
    """Fig. 3 for the text tasks: each task's score against ε (L∞, n = k), random (± sd over the
    trials) and gradient-based corruption, the clean score dashed (``clean[key]``). ``fig3``:
    sweep rows with ``task`` (label), ``score``, ``approach`` (Random / Proposed). Returns the
    seaborn ``FacetGrid``."""
    grid = sns.relplot(data=fig3, x="eps", y="score", hue="approach", style="approach", col="task",
                       hue_order=["Random", "Proposed"], style_order=["Random", "Proposed"], kind="line",
                       errorbar="sd", markers=True, dashes=False, height=3.4, aspect=1.2, palette=PALETTE,
                       facet_kws={"sharey": False})
    for ax, (key, task) in zip(grid.axes.flat, tasks.items()):
        ax.axhline(clean[key], color="grey", ls="--", lw=1)
        ax.set(xscale="log", xlabel="ε (L∞, n = k)", ylabel=task.metric_label,
               title=f"{task.label} ({'lower' if not task.higher_is_better else 'higher'} is better)")
    return grid


def text_vulnerability_heatmaps(rows: pd.DataFrame, *, task: Any, components: Sequence[str], layers: Sequence[str],
                                eps: float, clean: float, n_component: int, n_layer: int) -> plt.Figure:
    """Fig. 4 for one text task: the damage of each component (left) and each layer position
    (right, :func:`paramstress.vulnerability.short_layer_label`) at each ε, the chosen ε boxed;
    the colour scale ends at the clean score when higher is better."""
    from paramstress.corruption.vulnerability import COMPONENT_LABELS, short_layer_label

    def heat(ax: plt.Axes, part: pd.DataFrame, columns: Sequence[str], title: str, vmax: float | None,
             cbar: bool) -> None:
        table = part.pivot_table(index="eps", columns="group", values="drop", sort=False).reindex(columns=list(columns))
        table.index = [f"{e:g}" for e in table.index]
        sns.heatmap(table, annot=True, fmt=".1f", cmap="rocket_r", vmin=0, vmax=vmax, ax=ax, cbar=cbar,
                    cbar_kws={"label": f"{task.metric_label} lost"}, annot_kws={"size": 8})
        index = list(table.index)
        if f"{eps:g}" in index:
            ax.add_patch(plt.Rectangle((0, index.index(f"{eps:g}")), len(columns), 1, fill=False, lw=2, ec=colours(1)[0]))
        ax.set(title=title, xlabel="", ylabel="ε (L∞)")

    vmax = clean if task.higher_is_better else None
    comp = rows[rows.group_kind == "component"]
    comp = comp.assign(group=comp["group"].map(COMPONENT_LABELS))
    layer = rows[rows.group_kind == "layer"]
    layer = layer.assign(group=layer["group"].map(short_layer_label))
    fig, axes = plt.subplots(1, 2, figsize=(4.0 + 0.9 * len(layers), 3.6),
                             gridspec_kw={"width_ratios": [len(components), len(layers)]})
    heat(axes[0], comp, [COMPONENT_LABELS[c] for c in components], f"{task.label}: components (n = {n_component})",
         vmax, cbar=False)
    heat(axes[1], layer, [short_layer_label(g) for g in layers], f"{task.label}: layers (n = {n_layer})", vmax, True)
    fig.tight_layout()
    return fig


def text_damage(damage: pd.DataFrame, tasks: Mapping[str, Any]) -> plt.Figure:
    """Table 2's text columns as damage against ε (L2, n = k): ours (solid) beside the paper's
    (dashed), baseline and proposed, one panel per task (``damage``:
    :func:`paramstress.resistant.damage_frame`), the legend below the panels. Each log ε axis
    is labelled at readable steps (:func:`log_ticks`), so a panel within about one decade (PTB-LM)
    shows more than one tick."""
    order = ["Baseline, ours", "Proposed (Eq. 13), ours", "Baseline, paper", "Proposed, paper"]
    cb = colours(2)
    style = {"Baseline, ours": (cb[0], "-", "o"), "Proposed (Eq. 13), ours": (cb[1], "-", "X"),
             "Baseline, paper": (cb[0], "--", "s"), "Proposed, paper": (cb[1], "--", "P")}
    keys = list(tasks)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.1 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        task = tasks[key]
        part = damage[damage["task"] == task.label]
        for model in order:
            line = part[part["model"] == model].groupby("eps", as_index=False)["damage"].mean()
            if len(line):
                c, ls, m = style[model]
                ax.plot(line["eps"], line["damage"], color=c, ls=ls, marker=m, ms=5, lw=1.5, label=model)
        ax.set(xscale="log", xlabel="ε (L2, n = k)", ylabel=f"damage ({task.metric_label})", title=task.label)
        log_ticks(ax, part["eps"])
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _scaled_ticks(ax: plt.Axes, high: float, *, nbins: int = 3) -> str:
    """At most ``nbins`` + 1 x ticks; when the axis ends below 0.05 its labels count in units of a
    power of ten (0.00025 … 0.00075 as 2.5 … 7.5), returned as a suffix for the axis label
    (" (×10⁻⁴)"; "" otherwise), so that long labels cannot collide and no offset text sits on the label."""
    import matplotlib.ticker as mticker

    power = int(np.floor(np.log10(high))) if 0 < high < 0.05 else 0
    ax.xaxis.set_major_locator(mticker.MaxNLocator(nbins, min_n_ticks=2))
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda x, _: f"{x / 10.0 ** power:.3g}"))
    return f" (×10{str(power).translate(_SUPERSCRIPT)})" if power else ""


def theorem1_panels(eta: Mapping[str, tuple[int, Any]], *, title: str, cols: int = 4) -> plt.Figure:
    """corruption's Theorem 1 figure: for every ``label → (k, η samples)`` the measured density
    of η = |aᵀg| / (ε‖g‖₂) against Eq. 8 and its ECDF against Eq. 9
    (:mod:`paramstress.corruption.theory`), wrapped ``cols`` panels to a row (each panel pair: the
    density above its ECDF), so that seven k fit the book's width; at most four tick labels per
    axis, counted in a power of ten named in the axis label where η is small (η ~ 1e-4 at k of millions)."""
    import math

    from paramstress.corruption import theory

    panels = list(eta.items())
    if not panels:
        raise ValueError("eta is empty: pass label → (k, samples) for at least one k")
    cols = max(1, min(cols, len(panels)))
    blocks = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(2.45 * cols + 0.4, 4.3 * blocks + 0.5), squeeze=False)
    measured, predicted = colours(4)[0], colours(4)[3]
    for j, (label, (k, samples)) in enumerate(panels):
        top, bottom = axes[2 * (j // cols), j % cols], axes[2 * (j // cols) + 1, j % cols]
        hi = float(min(1.0, theory.quantile(0.9995, k)))
        x = np.linspace(0, hi, 400)
        sns.histplot(np.asarray(samples), bins=np.linspace(0, hi, 31), stat="density", color=measured, alpha=0.45,
                     ax=top, label="measured")
        top.plot(x, theory.density(x, k), color=predicted, lw=1.8, label="Eq. 8")
        top.set(title=label, xlabel="", ylabel="density" if j % cols == 0 else "", xlim=(0, hi))
        sns.ecdfplot(np.asarray(samples), ax=bottom, color=measured, label="measured")
        bottom.plot(x, theory.cdf(x, k), color=predicted, ls="--", lw=1.5, label="Eq. 9")
        unit = [_scaled_ticks(ax, hi) for ax in (top, bottom)][0]
        top.tick_params(labelbottom=False)  # the same η axis as the ECDF below, labelled there
        bottom.set(xlabel=f"η{unit}", ylabel="P(η ≤ x)" if j % cols == 0 else "", xlim=(0, hi))
        top.yaxis.set_major_locator(plt.MaxNLocator(4))
        top.yaxis.set_major_formatter(plt.matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        top.title.set_fontsize(10)
    for j in range(len(panels), blocks * cols):
        axes[2 * (j // cols), j % cols].axis("off")
        axes[2 * (j // cols) + 1, j % cols].axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=measured, alpha=0.45), plt.Line2D([], [], color=measured),
               plt.Line2D([], [], color=predicted), plt.Line2D([], [], color=predicted, ls="--")]
    fig.legend(handles, ["measured (histogram)", "measured (ECDF)", "Theorem 1, Eq. 8 (density)",
                         "Theorem 1, Eq. 9 (CDF)"], loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05 / blocks, 1, 1))
    return fig


def _off_scale(ax: plt.Axes, x: Any, y: Any, *, low: float, high: float, colour: Any) -> int:
    """Draws the points of ``y`` outside [low, high] as triangles on the edge they pass
    (▲ at ``high``, ▼ at ``low``); returns how many."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    above, below = y > high, (y < low) & (y > 0)
    ax.plot(x[above], np.full(above.sum(), high), "^", color=colour, ms=8, clip_on=False, zorder=4)
    ax.plot(x[below], np.full(below.sum(), low), "v", color=colour, ms=8, clip_on=False, zorder=4)
    return int(above.sum() + below.sum())


def loss_change(ratio: pd.DataFrame, scaling: pd.DataFrame, *, eps: Sequence[float], title: str = "",
                names: Mapping[str, str] = labels.DATASETS, cap: float = 1e3) -> plt.Figure:
    """corruption's loss-change figure (Theorem 1: random corruption second order, gradient-based
    first order). Left: |mean random ΔL| and |gradient-based ΔL| against ε with the fitted c₂ε²
    (dotted) and c₁ε (dashed) of ``scaling`` (:func:`paramstress.tables.loss_scaling`); right:
    |ratio| of the two with its 95 % interval (``ratio``: :func:`paramstress.tables.loss_change_ratio`),
    hollow where the mean random change is not resolved, and Theorem 1's (c₂/c₁) ε where the
    gradient-based corruption leaves the model intact.

    A loss change above ``cap`` (nats; default 10³, far beyond a chance-level network's loss)
    means the network's outputs have blown up: it is drawn as ▲ on the top edge rather than
    stretching the axis to 1e25; the ratio at such an ε (the gradient-based change blown up, the
    comparison outside the theorem's regime) as ▼ on the bottom edge. The legend sits below the
    panels."""
    import math

    from scipy import stats as st

    need = ["task", "eps", "random_delta_loss", "gradient_delta_loss", "ratio", "ratio_se", "resolved", "trials"]
    missing = [c for c in need if c not in ratio.columns]
    if missing:
        raise ValueError(f"the ratio rows lack columns {missing}: pass tables.loss_change_ratio(...)")
    tasks = list(dict.fromkeys(ratio["task"]))
    palette = dict(zip(tasks, colours(len(tasks))))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    e = np.array(sorted(eps), dtype=float)
    lo_all: list[float] = []
    scale = scaling.set_index("task")
    off = 0
    for t in tasks:
        part = ratio[ratio["task"] == t].sort_values("eps")
        for col, marker, what in (("random_delta_loss", "o", "Random (mean)"), ("gradient_delta_loss", "X", "Proposed")):
            y = part[col].abs().to_numpy(dtype=float)
            ok = np.isfinite(y) & (y > 0) & (y <= cap)
            axes[0].plot(part["eps"].to_numpy()[ok], y[ok], marker=marker, ms=6, lw=1.4, color=palette[t])
            off += _off_scale(axes[0], part["eps"][np.isfinite(y)], y[np.isfinite(y)], low=0, high=cap,
                              colour=palette[t])
            lo_all += list(y[ok])
            neg = part[(part[col] < 0) & (part[col].abs() <= cap)]
            axes[0].plot(neg["eps"], neg[col].abs(), "o", mfc="white", mec="black", ms=6, zorder=3)
        if t in scale.index:
            row = scale.loc[t]
            if not math.isnan(row["random_c2"]):
                axes[0].plot(e, row["random_c2"] * e ** 2, color=palette[t], ls=":", lw=1.2)
            if not math.isnan(row["gradient_c1"]):
                axes[0].plot(e, row["gradient_c1"] * e, color=palette[t], ls="--", lw=1.2)
    low = 10 ** np.floor(np.log10(min(lo_all))) if lo_all else 1e-8
    axes[0].set(xscale="log", yscale="log", ylim=(low, cap), xlabel="ε (L∞, n = k)", ylabel="|loss change| (nats)",
                title="Loss change")
    off_ratio = 0
    shown_ratios: list[float] = []
    for t in tasks:
        part = ratio[ratio["task"] == t].assign(abs_ratio=lambda f: f["ratio"].abs()).sort_values("eps")
        blown = ~(part["gradient_delta_loss"].abs() <= cap)  # non-finite or above the cap
        inside = part[~blown & np.isfinite(part["abs_ratio"]) & (part["abs_ratio"] > 0)]
        half = st.t.ppf(0.975, inside["trials"] - 1) * inside["ratio_se"]
        axes[1].errorbar(inside["eps"], inside["abs_ratio"], yerr=[np.minimum(half, 0.9 * inside["abs_ratio"]), half],
                         fmt="none", ecolor=palette[t], alpha=0.6, lw=1.0, capsize=2, zorder=1)
        res, unres = inside[inside["resolved"]], inside[~inside["resolved"]]
        axes[1].plot(res["eps"], res["abs_ratio"], "o", color=palette[t], ms=6, zorder=3)
        axes[1].plot(unres["eps"], unres["abs_ratio"], "o", mfc="white", color=palette[t], ms=6, zorder=3)
        shown_ratios += list((inside["abs_ratio"] - np.minimum(half, 0.9 * inside["abs_ratio"])).to_numpy(dtype=float))
        gone = part[blown & np.isfinite(part["random_delta_loss"])]
        if len(gone):
            axes[1].plot(gone["eps"], np.zeros(len(gone)), "v", color=palette[t], ms=8, clip_on=False, zorder=4)
            off_ratio += len(gone)
        if t in scale.index:
            c = scale.loc[t, "predicted_ratio_per_eps"]
            taylor = e[e <= max(scale.loc[t, "gradient_eps"], default=0)]
            if not math.isnan(c) and len(taylor):
                axes[1].plot(taylor, c * taylor, color=palette[t], ls="--", lw=1.5)
                shown_ratios += list(c * taylor)
    floor = 10 ** np.floor(np.log10(min(shown_ratios))) if shown_ratios else 1e-8
    for line in axes[1].get_lines():  # the ▼ of blown-up ε sit on the bottom edge
        if line.get_marker() == "v":
            line.set_ydata(np.full(len(line.get_xdata()), floor))
    top = max(1.0, float(np.nanmax(ratio["ratio"].abs().to_numpy(dtype=float), initial=0)) * 10)
    axes[1].set(xscale="log", yscale="log", ylim=(floor, top), xlabel="ε (L∞, n = k)",
                ylabel="|mean ΔL random| / ΔL gradient", title="Ratio of the loss changes")
    for ax in axes:
        ax.xaxis.set_major_locator(plt.matplotlib.ticker.LogLocator(numticks=4))
        ax.yaxis.set_major_locator(plt.matplotlib.ticker.LogLocator(numticks=7))
        ax.yaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
        ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
    grey = "dimgrey"
    handles = [plt.Line2D([], [], color=grey, marker="o", lw=1.4), plt.Line2D([], [], color=grey, marker="X", lw=1.4),
               plt.Line2D([], [], color=grey, ls=":"), plt.Line2D([], [], color=grey, ls="--"),
               plt.Line2D([], [], ls="none", marker="o", mfc="white", mec="black"),
               plt.Line2D([], [], ls="none", marker="o", mfc="white", mec=grey),
               plt.Line2D([], [], ls="none", marker="|", color=grey, ms=10)]
    names_ = ["Random (mean of the trials)", "Proposed (gradient-based)", "fit c₂ε² (random, Theorem 1)",
              "fit c₁ε (gradient, first order); right: (c₂/c₁) ε", "negative mean (|ΔL| drawn)",
              "right: ratio not resolved (t-test, 5 %)", "right: 95 % interval of the ratio"]
    if off or off_ratio:
        handles.append(plt.Line2D([], [], ls="none", marker="^", color=grey, ms=8))
        names_.append(f"▲ off scale: |ΔL| > {cap:g} nats (network blown up); ▼ ratio there")
    if len(tasks) > 1:
        handles += [plt.Line2D([], [], color=palette[t], lw=3) for t in tasks]
        names_ += [labels.label(t, names) for t in tasks]
    fig.legend(handles, names_, loc="lower center", ncol=2, fontsize=8.5, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    rows = math.ceil(len(names_) / 2)
    fig.set_size_inches(10, 4.2 + 0.22 * rows)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.9 if title else 0.93, bottom=(0.75 + 0.22 * rows) / (4.2 + 0.22 * rows),
                        wspace=0.3)
    return fig


def _empty_panel(ax: plt.Axes, text: str) -> None:
    """A panel with nothing to draw says why, on grey, instead of staying blank."""
    ax.set_facecolor(_GREY)
    ax.grid(False)
    import textwrap

    text = "\n".join(textwrap.fill(line, 30) for line in text.split("\n"))
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8.5,
            bbox={"facecolor": "white", "alpha": 0.9, "edgecolor": "grey"})


def fig10_landscapes(scores: pd.DataFrame, model: str, *, global_layer: str = "global",
                     reasons: Mapping[tuple[str, str], str] | None = None,
                     names: Mapping[str, str] = labels.DATASETS) -> plt.Figure:
    """score_landscapes' Fig. 10 for one network: a heatmap per data set (rows) and score
    (columns: :data:`labels.SCORES`), layers (by ``position``, input at the top) × epochs, coloured
    by the normalised score (RdBu, −0.5 … 0.5, one colour bar) and marked with the labels.

    A panel whose scores are all missing is not left blank: it is greyed and says why. A run
    that was not attacked (``unreachable="clean-only"`` in :func:`paramstress.landscape.study`:
    FGSM cannot bring it to the shared adversarial accuracy) has no φ_adv and no Δφ;
    ``reasons[(model, dataset)]`` (the study's ``eps[...]["excluded"]``) is quoted when given."""
    score_names = list(labels.SCORES)
    _check(scores, [f"{s}_norm" for s in score_names] + [f"{s}_mark" for s in score_names] + ["position"])
    local = scores[(scores["model"] == model) & (scores["layer"] != global_layer)]
    if local.empty:
        raise ValueError(f"no local score rows of {model!r}: pass score_landscapes.scores.csv and one of "
                         f"{sorted(set(scores['model']))}")
    datasets = list(dict.fromkeys(local["dataset"]))
    order = local.drop_duplicates("layer").sort_values("position")["layer"].tolist()
    fig, axes = plt.subplots(len(datasets), len(score_names),
                             figsize=(3.0 * len(score_names) + 2.2, 0.34 * len(order) * len(datasets) + 1.0 * len(datasets) + 0.6),
                             squeeze=False)
    cmap = plt.get_cmap("RdBu")
    for i, d in enumerate(datasets):
        sub = local[local["dataset"] == d]
        for j, s in enumerate(score_names):
            ax = axes[i, j]
            mat = sub.pivot(index="layer", columns="epoch", values=f"{s}_norm").reindex(order).astype(float)
            ann = sub.pivot(index="layer", columns="epoch", values=f"{s}_mark").reindex(order).fillna("")
            title = f"{labels.label(d, names)}: {labels.SCORES[s]}"
            if mat.isna().all().all():
                ax.set(xticks=[], yticks=[])
                why = None if reasons is None else reasons.get((model, d))
                _empty_panel(ax, f"no {labels.SCORES[s]}: the network was not attacked (only clean scores)"
                                 + (f"\n{why}" if why else ""))
            else:
                sns.heatmap(mat, ax=ax, cmap=cmap, center=0, vmin=-0.5, vmax=0.5, annot=ann, fmt="", cbar=False,
                            annot_kws={"fontsize": 7}, linewidths=0.3)
                ax.set_xlabel("epoch" if i == len(datasets) - 1 else "")
                if j:
                    ax.set_yticklabels([])
                ax.tick_params(axis="y", labelsize=8)
            ax.set_title(title, fontsize=9.5)
            ax.set_ylabel("layer (input → output)" if j == 0 else "")
    fig.tight_layout(rect=(0, 0, 0.92, 0.96))
    bar = fig.add_axes((0.93, 0.25, 0.015, 0.5))
    fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(-0.5, 0.5), cmap=cmap), cax=bar,
                 label="normalised score\n(red fragile, blue antifragile)")
    fig.suptitle(f"Fig. 10: local score landscapes of {labels.label(model, labels.ARCHS)} (marks: labels)",
                 fontsize=11)
    return fig


def fig11_removal(carry: pd.DataFrame, channels: pd.DataFrame, *, layer: str, bn: str, chance: float,
                  title: str) -> plt.Figure:
    """synaptic_filtering's Fig. 11: left, the clean accuracy with each layer removed, with and
    without the following batch norm's carried constant (``carry``:
    :func:`paramstress.batchnorm.carryover_table`), chance dotted; right, for one removed ``layer``
    (``channels``: :attr:`paramstress.batchnorm.Carryover.channels`) each channel's batch-norm
    output against the predicted constant c (Eq. 17): with the layer removed (points on top, the
    diagonal is Eq. 17 holding) and unfiltered (mean as a small grey mark, its ± sd as a thin
    light bar drawn underneath), so that the spread of the unfiltered outputs cannot hide the
    points the figure is about."""
    need = ["layer", "acc_unfiltered", "acc_removed", "acc_removed_no_carry"]
    missing = [c for c in need if c not in carry.columns]
    missing += [c for c in ("predicted", "measured_mean", "unfiltered_mean", "unfiltered_std") if c not in channels.columns]
    if missing:
        raise ValueError(f"Fig. 11 lacks columns {missing}: pass carryover_table(...) and Carryover.channels")
    names_ = {"acc_unfiltered": "unfiltered", "acc_removed": "layer removed (batch norm carries c)",
              "acc_removed_no_carry": "layer removed, batch-norm output zeroed"}
    bars = carry.melt(id_vars="layer", value_vars=list(names_), var_name="network", value_name="accuracy")
    bars["network"] = bars["network"].map(names_)
    cb = colours(8)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), gridspec_kw={"width_ratios": [2.2, 1]})
    sns.barplot(data=bars, x="layer", y="accuracy", hue="network", ax=axes[0], palette=[cb[7], cb[0], cb[1]],
                hue_order=list(names_.values()))
    axes[0].axhline(chance, color="black", ls=":", lw=1)
    axes[0].tick_params(axis="x", rotation=90, labelsize=8)
    axes[0].set(ylabel="clean accuracy (%)", xlabel="", ylim=(0, 100))
    axes[0].legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    ax = axes[1]
    ax.errorbar(channels["predicted"], channels["unfiltered_mean"], yerr=channels["unfiltered_std"], fmt="none",
                ecolor=cb[7], alpha=0.35, lw=0.8, zorder=1)
    ax.plot(channels["predicted"], channels["unfiltered_mean"], "_", color="dimgrey", ms=5, zorder=2,
            label="unfiltered: mean (bar: ± sd)")
    ax.scatter(channels["predicted"], channels["measured_mean"], s=22, color=cb[0], edgecolor="white", linewidth=0.5,
               zorder=3, label="layer removed: mean")
    values = channels[["predicted", "measured_mean"]].to_numpy(dtype=float)
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    pad = 0.1 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8, zorder=2, label="Eq. 17 (output = c)")
    ax.set_xlim(lo - pad, hi + pad)
    ax.xaxis.set_major_locator(plt.MaxNLocator(4))
    ax.set(xlabel="predicted constant c (Eq. 17)", ylabel=f"{bn} output per channel", title=f"{layer} → {bn}")
    ax.legend(fontsize=7.5, loc="lower right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
