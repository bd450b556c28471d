"""The text pages' rules and labels, moved from the notebooks into the library, on hand-made rows."""
import types

import pandas as pd

from paramstress import resistant as R
from paramstress import tables
from paramstress import vulnerability as V


def _task(label, metric_label="UAS", higher=True):
    return types.SimpleNamespace(label=label, metric_label=metric_label, higher_is_better=higher)


def test_central_claim_verdicts_pick_the_worst_gradient_where_random_is_harmless():
    claims = pd.DataFrame([
        {"task": "A", "eps": 0.1, "random_harmless": True, "random_drop": 0.1, "random_worst_drop": 0.2, "gradient_drop": 5.0},
        {"task": "A", "eps": 1.0, "random_harmless": True, "random_drop": 0.3, "random_worst_drop": 0.4, "gradient_drop": 40.0},
        {"task": "A", "eps": 10.0, "random_harmless": False, "random_drop": 9.0, "random_worst_drop": 9.5, "gradient_drop": 90.0},
        {"task": "B", "eps": 1.0, "random_harmless": False, "random_drop": 9.0, "random_worst_drop": 9.0, "gradient_drop": 9.0},
    ])
    text, held = tables.central_claim_verdicts(claims, {"a": _task("A"), "b": _task("B")}, {"a": [1, 30], "b": [1, 30]})
    assert held == {"a": "holds"}
    assert "- **A**: at ε = 1 random corruption costs 0.3 UAS (worst trial 0.4), the gradient-based one 40" in text
    assert "- **B**: random corruption changes UAS by at least 1 at every ε of the grid" in text
    _, held = tables.central_claim_verdicts(claims, {"a": _task("A")}, {"a": [1, 50]})
    assert held == {"a": "does not hold"}


def test_short_layer_label():
    assert V.short_layer_label("decoder.layers.1 (block)") == "dec 1"
    assert V.short_layer_label("encoder.embed_tokens (Emb)") == "enc Emb"
    assert V.short_layer_label("output_projection (FC)") == "output_projection (FC)"


def test_damage_frame_signs_by_direction():
    summary = pd.DataFrame({"trainer": ["baseline", "baseline"], "eps": [float("nan"), 2.0], "mean": [5.0, 6.5]})
    damage = R.damage_frame({"lm": summary}, {"lm": _task("PTB-LM", "Log PPL", higher=False)}, {"baseline": "Baseline"})
    ours = damage[damage["model"] == "Baseline, ours"]
    assert list(ours["damage"]) == [1.5]  # lower is better: corrupted − clean
    assert set(damage["model"]) >= {"Baseline, paper", "Proposed, paper"}
