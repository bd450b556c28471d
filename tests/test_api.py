"""The public API (paramstress.api) on models the book does not define: what it returns agrees
with the engines it fronts, every model is restored bit-identically, and bad arguments are
rejected before any forward pass with a message naming the fix."""
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import paramstress
from paramstress import api
from paramstress.corruption import operators as C
from paramstress.corruption import sweeps as CS
from paramstress.engine import sweep as S
from paramstress.filtering import filters as FL
from paramstress.filtering import fragility as FR

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


# ----------------------------------------------------------------------------- models
def small_cnn(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, classes))


def image_data(n: int = 48, classes: int = 3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, classes, (n,), generator=g)


def regressor() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 1))


def tabular(n: int = 96):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, 6, generator=g)
    return x, x[:, :2].sum(dim=1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)


class FrozenTied(nn.Module):
    """A frozen embedding, a trainable encoder and an output layer tied to the embedding."""

    def __init__(self, vocab: int = 20, dim: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.frozen = nn.Linear(dim, dim)
        self.frozen.requires_grad_(False)
        self.body = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight  # tied

    def forward(self, x):
        return self.head(torch.tanh(self.body(torch.tanh(self.frozen(self.embed(x).mean(dim=1))))))


def token_data(n: int = 40, vocab: int = 20, length: int = 5):
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, vocab, (n, length), generator=g), torch.randint(0, vocab, (n,), generator=g)


def snapshot(model: nn.Module):
    return ({k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
            [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])


def assert_restored(model: nn.Module, before) -> None:
    state, modes, flags = before
    now = model.state_dict(keep_vars=True)
    assert list(now) == list(state)
    for key, value in state.items():
        assert now[key].dtype == value.dtype and torch.equal(now[key].detach(), value), key
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags


# ----------------------------------------------------------------------------- the engines' numbers
def test_indicator_is_eq11_and_the_engine_row():
    net, (x, y) = small_cnn(), image_data()
    net.train()  # the API evaluates in eval mode and gives the flags back
    before = snapshot(net)
    result = paramstress.corruption_indicator(net, (x, y), eps=1e-2, n=50)
    assert_restored(net, before)
    named = C.table1_subspace(net)
    g = C.subspace_gradient(net, named, F.cross_entropy, S.iter_batches(x, y, 256))
    assert result.indicator == pytest.approx(C.indicator(g, 1e-2, math.inf, 50), rel=1e-12)
    assert float(result) == result.indicator and result.k == C.subspace_size(named) and result.n == 50
    row = CS.corruption_sweep(net, named, g, x, y, eps_values=[1e-2], n_values=[50], methods=("gradient",),
                              trials=1).iloc[0]
    assert result.corrupted == row["accuracy"] and result.clean == row["base_accuracy"]
    assert result.drop == row["base_accuracy"] - row["accuracy"]
    assert result.loss_change == pytest.approx(row["delta_loss"], rel=1e-6)
    assert_restored(net, before)


def test_tensors_dataloader_dataset_and_iterable_give_the_same_numbers():
    net, (x, y) = small_cnn(), image_data()
    ref = paramstress.corruption_indicator(net, (x, y), eps=1e-2, n=30)
    for data in (DataLoader(TensorDataset(x, y), batch_size=7), TensorDataset(x, y),
                 [(x[i:i + 10], y[i:i + 10]) for i in range(0, len(y), 10)],
                 ((x[i:i + 16], y[i:i + 16]) for i in range(0, len(y), 16))):
        other = paramstress.corruption_indicator(net, data, eps=1e-2, n=30)
        assert other.corrupted == ref.corrupted and other.clean == ref.clean
        assert other.indicator == pytest.approx(ref.indicator, rel=1e-5)  # batch sums differ in the last bits


def test_corruption_table_is_the_engine_sweep_in_table1_layout():
    net, (x, y) = small_cnn(), image_data()
    before = snapshot(net)
    grid = {None: [1e-3, 1e-1], 20: [1.0]}
    out = paramstress.corruption_table(net, (x, y), eps=grid, trials=2, seed=3, label="cnn")
    assert_restored(net, before)
    named = C.table1_subspace(net)
    g = C.subspace_gradient(net, named, F.cross_entropy, S.iter_batches(x, y, 256))
    k = C.subspace_size(named)
    direct = pd.concat([CS.corruption_sweep(net, named, g, x, y, eps_values=e, n_values=[n], trials=2, seed=3)
                        for n, e in [(k, [1e-3, 1e-1]), (20, [1.0])]], ignore_index=True)
    assert out.rows["accuracy"].tolist() == direct["accuracy"].tolist()
    assert out.rows["seed"].fillna(-1).tolist() == direct["seed"].fillna(-1).tolist()
    assert list(out.table.index) == ["w/o corruption", "n=k, ε=1e-3", "n=k, ε=1e-1", "n=20, ε=1"]
    assert out.table.columns[0] == ("cnn (Acc ↑)", "Random")
    fig = out.plot()
    assert len(fig.axes) >= 2
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_default_table_is_the_papers_grid():
    net, (x, y) = small_cnn(), image_data(16)
    out = paramstress.corruption_table(net, (x, y), trials=1)
    assert sorted(set(out.rows[out.rows.n == 100]["eps"])) == list(api.PAPER_TABLE1_GRID[100])
    assert sorted(set(out.rows[out.rows.n == out.rows.k]["eps"])) == list(api.PAPER_TABLE1_GRID[None])
    assert len(out.table) == 1 + 10


def test_vulnerability_probe_components_and_layers():
    net, (x, y) = small_cnn(), image_data()
    before = snapshot(net)
    out = paramstress.vulnerability_probe(net, (x, y), eps=[0.1, 1.0, 10.0], groups=["components", "layers"])
    assert_restored(net, before)
    frame = out.frame
    assert set(frame.group_kind) == {"component", "layer"}
    assert list(dict.fromkeys(frame[frame.group_kind == "component"].group)) == ["conv", "fc", "batchnorm"]
    assert frame[frame.group_kind == "component"]["n"].max() == 10
    assert frame[frame.group_kind == "layer"]["n"].max() == 100
    assert set(out.best_eps) == {"component", "layer"} and out.best_eps["layer"] in (0.1, 1.0, 10.0)
    assert ((frame["drop"] - (frame["base_accuracy"] - frame["accuracy"])).abs() < 1e-12).all()
    custom = paramstress.vulnerability_probe(net, (x, y), eps=1.0, groups={"first": net[0], "last": ["6.*"]}, n=5)
    assert list(custom.frame.group) == ["first", "last"] and (custom.frame["n"] == 5).all()
    import matplotlib.pyplot as plt

    plt.close(out.plot())


def test_filter_scores_are_the_engines_scores():
    net, (x, y) = small_cnn(), image_data()
    before = snapshot(net)
    out = paramstress.filter_scores(net, (x, y), eps=0.05, T=5)
    assert_restored(net, before)
    sweep = FL.filter_sweep(net, x, y, T=5, eps=0.05, batch_size=256)
    direct = FR.scores(sweep)
    direct = direct[direct["filter"] == "combined"].reset_index(drop=True)
    assert list(out.scores["layer"]) == ["0", "4", "6", "global"]
    for col in FR.SCORES:
        assert out.scores[col].tolist() == direct[col].tolist()
        assert set(out.scores[f"{col}_label"]) <= set(FR.LABELS)
    assert len(out.per_filter) == 3 * 4
    clean_only = paramstress.filter_scores(net, (x, y), attack=None, T=5, layers=["global"])
    assert clean_only.scores["phi_adv"].isna().all() and clean_only.scores["phi_clean"].notna().all()
    import matplotlib.pyplot as plt

    plt.close(out.plot())


def test_the_engine_score_seam_reproduces_the_accuracy_path():
    """filter_sweep's score= with per-example accuracies gives the default path's numbers."""
    net, (x, y) = small_cnn(), image_data(50)
    default = FL.filter_sweep(net, x, y, scopes=["4", "global"], T=4, eps=0.05, batch_size=16)
    seam = FL.filter_sweep(net, x, y, scopes=["4", "global"], T=4, eps=0.05, batch_size=16,
                           score=lambda out, t: (out.argmax(1) == t).double() * 100)
    for col in ("clean_accuracy", "adv_accuracy", "clean_reference", "adv_reference"):
        assert seam[col].tolist() == default[col].tolist()


# ----------------------------------------------------------------------------- other models
def test_mlp_regressor_with_mse_loss_and_metric():
    net, (x, y) = regressor(), tabular()
    before = snapshot(net)
    ind = paramstress.corruption_indicator(net, DataLoader(TensorDataset(x, y), batch_size=32), eps=0.05,
                                           loss=F.mse_loss)
    with torch.no_grad():
        mse = float(F.mse_loss(net(x), y))
    assert ind.metric == "loss" and ind.clean == pytest.approx(mse, rel=1e-5)
    assert ind.drop == ind.corrupted - ind.clean > 0  # lower is better: the damage is the increase
    table = paramstress.corruption_table(net, (x, y), loss=F.mse_loss, eps={None: [1e-2, 1e-1], 50: [1.0]},
                                         trials=2)
    assert table.table.columns[0][0].endswith("(Loss ↓)")
    small = table.rows[(table.rows.method == "gradient") & (table.rows.eps <= 0.1)]
    assert len(small) == 2 and (small["delta_loss"] > 0).all()  # first order: the loss rises
    vul = paramstress.vulnerability_probe(net, (x, y), loss=F.mse_loss, eps=[0.1, 1.0], groups="layers")
    assert list(dict.fromkeys(vul.frame.group)) == ["0 (FC)", "2 (FC)", "4 (FC)"]
    assert list(vul.frame.columns).count("loss") == 1
    mae = paramstress.vulnerability_probe(net, (x, y), loss=F.mse_loss, eps=1.0,
                                          metric=lambda out, t: (out - t).abs().mean(dim=1), higher_is_better=False)
    assert "metric" in mae.frame.columns and (mae.frame["drop"] > 0).all()
    scores = paramstress.filter_scores(net, (x, y), loss=F.mse_loss, eps=0.1, T=5)
    assert list(scores.scores.layer) == ["0", "2", "4", "global"]
    sweep = scores.sweep
    untouched = sweep[sweep.removed == 0]
    assert (untouched["clean_accuracy"] == untouched["clean_reference"]).all()
    assert sweep["clean_reference"].iloc[0] == pytest.approx(mse, rel=1e-5)
    assert scores.scores[["phi_clean", "phi_adv", "delta_phi"]].notna().all().all()
    assert_restored(net, before)


def test_torchvision_mobilenet_built_without_weights():
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(weights=None, num_classes=4)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 4, (8,), generator=g)
    before = snapshot(net)
    ind = paramstress.corruption_indicator(net, (x, y), eps=1e-3, n=100, batch_size=4)
    assert ind.k == sum(p.numel() for p in net.parameters()) and ind.indicator > 0
    vul = paramstress.vulnerability_probe(net, (x, y), eps=1.0, groups="components", batch_size=4)
    assert {"conv", "fc", "batchnorm"} <= set(vul.frame.group)
    layers = FL.filterable_layers(net)
    scores = paramstress.filter_scores(net, (x, y), eps=0.01, T=3, layers=[layers[0], layers[-1]], batch_size=4)
    assert list(scores.scores.layer) == [layers[0], layers[-1]]
    assert_restored(net, before)


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int = 20, dim: int = 16, classes: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=32, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.out = nn.Linear(dim, classes)

    def forward(self, x):
        return self.out(self.encoder(self.embed(x)).mean(dim=1))


class TinyLSTM(nn.Module):
    def __init__(self, vocab: int = 20, dim: int = 12):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, dim, batch_first=True)
        self.out = nn.Linear(dim, 1)

    def forward(self, x):
        h, _ = self.lstm(self.embed(x))
        return self.out(h[:, -1]).squeeze(1)


def test_transformer_encoder_with_a_custom_loss():
    torch.manual_seed(0)
    net = TinyTransformer()
    net.train()  # dropout on: the API must evaluate in eval mode, deterministically
    x, _ = token_data()
    y = x[:, 0] % 3

    def smoothed(out, t):
        return F.cross_entropy(out, t, label_smoothing=0.1)

    before = snapshot(net)
    a = paramstress.corruption_indicator(net, (x, y), eps=1e-2, n=100, loss=smoothed, metric="accuracy")
    b = paramstress.corruption_indicator(net, (x, y), eps=1e-2, n=100, loss=smoothed, metric="accuracy")
    with torch.no_grad():
        expected = float(smoothed(net.eval()(x), y))
    assert a == b and a.metric == "accuracy" and a.loss == pytest.approx(expected, rel=1e-5)
    net.train()
    vul = paramstress.vulnerability_probe(net, (x, y), eps=[0.1, 1.0], groups=["components", "layers"],
                                          loss=smoothed, metric="accuracy")
    assert {"embedding", "attention", "fc", "layernorm"} <= set(vul.frame.group)
    assert "encoder.layers.0 (block)" in set(vul.frame.group)
    scores = paramstress.filter_scores(net, (x, y), attack=None, T=3, loss=smoothed, metric="accuracy")
    assert "out" in set(scores.scores.layer) and scores.scores["phi_clean"].notna().all()
    with pytest.raises(ValueError, match="attack=None"):
        paramstress.filter_scores(net, (x, y), eps=0.1, T=3, loss=smoothed, metric="accuracy")
    assert_restored(net, before)


def test_lstm_regressor_on_token_ids():
    torch.manual_seed(0)
    net = TinyLSTM()
    x, _ = token_data()
    y = x.float().mean(dim=1) / 10
    before = snapshot(net)
    huber = nn.HuberLoss()
    ind = paramstress.corruption_indicator(net, (x, y), eps=1e-2, loss=huber)
    assert ind.metric == "loss" and ind.drop > 0
    vul = paramstress.vulnerability_probe(net, (x, y), eps=0.5, groups="components", loss=huber)
    assert list(vul.frame.group) == ["fc", "embedding", "other"]  # the LSTM's weights are "other"
    scores = paramstress.filter_scores(net, (x, y), attack=None, T=3, loss=huber)
    assert list(scores.scores.layer) == ["out", "global"]
    assert_restored(net, before)


def test_frozen_and_tied_parameters():
    net = FrozenTied()
    x, y = token_data()
    before = snapshot(net)
    ind = paramstress.corruption_indicator(net, (x, y), eps=1e-2)
    trainable = [p for p in net.parameters() if p.requires_grad]  # the tied weight once, frozen ones out
    assert ind.k == sum(p.numel() for p in trainable) == 20 * 8 + 8 * 8 + 8
    vul = paramstress.vulnerability_probe(net, (x, y), eps=[0.1, 1.0], groups="layers")
    assert not any(g.startswith("frozen") for g in vul.frame.group)
    with pytest.raises(ValueError, match="requires_grad"):
        paramstress.corruption_indicator(net, (x, y), eps=1e-2, subspace=["frozen.*"])
    with pytest.raises(ValueError, match="frozen"):
        paramstress.vulnerability_probe(net, (x, y), eps=1.0, groups={"f": net.frozen})
    # synaptic filtering filters every linear weight, the frozen one and the tied one too
    scores = paramstress.filter_scores(net, (x, y), attack=None, T=5)
    assert list(scores.scores.layer) == ["frozen", "body", "head", "global"]
    assert_restored(net, before)
    assert net.head.weight is net.embed.weight and not net.frozen.weight.requires_grad


def test_hugging_face_model_from_a_config():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    net = transformers.BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 30, (24, 8), generator=g), torch.randint(0, 3, (24,), generator=g)
    before = snapshot(net)
    ind = paramstress.corruption_indicator(net, (x, y), eps=1e-2, n=100)  # .logits picked by default
    assert ind.metric == "accuracy" and ind.indicator > 0 and 0 <= ind.corrupted <= 100
    vul = paramstress.vulnerability_probe(net, (x, y), eps=1.0, groups="components")
    assert {"embedding", "fc", "layernorm"} <= set(vul.frame.group)
    scores = paramstress.filter_scores(net, (x, y), attack=None, T=3, layers=["classifier", "global"])
    assert list(scores.scores.layer) == ["classifier", "global"]
    assert_restored(net, before)


def test_output_picks_the_tensor():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(x), x.sum()

    torch.manual_seed(0)
    net = Pair()
    x, _ = tabular()
    y = torch.arange(len(x)) % 3
    ind = paramstress.corruption_indicator(net, (x, y), eps=1e-2, output=lambda out: out[0], metric="accuracy")
    plain = paramstress.corruption_indicator(net.fc, (x, y), eps=1e-2)
    assert ind.corrupted == plain.corrupted and ind.indicator == pytest.approx(plain.indicator, rel=1e-6)
    assert not net._forward_hooks  # the hook is removed
    with pytest.raises(ValueError, match="output="):
        paramstress.corruption_indicator(net, (x, y), eps=1e-2, metric="accuracy", loss=F.cross_entropy)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_moves_the_model_there_and_back():
    net, (x, y) = small_cnn(), image_data()
    before = snapshot(net)
    on_gpu = paramstress.corruption_indicator(net, (x, y), eps=1e-2, n=50, device="cuda")
    on_cpu = paramstress.corruption_indicator(net, (x, y), eps=1e-2, n=50)
    assert next(net.parameters()).device.type == "cpu"
    assert_restored(net, before)
    assert on_gpu.indicator == pytest.approx(on_cpu.indicator, rel=1e-4)
    scores = paramstress.filter_scores(net, (x, y), eps=0.05, T=3, device="cuda")
    assert len(scores.scores) == 4
    assert_restored(net, before)


def test_the_readme_example_runs_as_written(capsys):
    """README's "Use the library" example, executed verbatim: a newcomer gets the indicator."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Use the library", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(block.strip().splitlines()) <= 12
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"indicator \d+\.\d{4}: accuracy \d+\.\d -> \d+\.\d %", out)
    assert "Proposed" in out and "phi_clean" in out


def test_import_paramstress_stays_light():
    """The API is reached as paramstress.<name> but loaded on first use: a bare import loads no
    engine (nor pandas), and the old flat module name paramstress.vulnerability is still the module."""
    import subprocess
    import sys

    code = ("import sys, paramstress; assert 'paramstress.api' not in sys.modules and 'pandas' not in sys.modules; "
            "f = paramstress.corruption_indicator; assert 'paramstress.api' in sys.modules; "
            "import paramstress.vulnerability as v; assert v.__name__ == 'paramstress.corruption.vulnerability'; "
            "assert set(paramstress.API) <= set(dir(paramstress))")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError):
        paramstress.no_such_name


def test_fgsm_loss_fn_seam():
    """fgsm(loss_fn=) follows the given loss: the summed cross-entropy gives the default's
    examples exactly, and a regressor's MSE moves each input along sign(∂MSE/∂x)."""
    from paramstress.filtering import adversarial as A

    net, (x, y) = small_cnn(), image_data(20)
    default = A.fgsm(net, x, y, 0.1, batch_size=8)
    same = A.fgsm(net, x, y, 0.1, batch_size=8, loss_fn=lambda o, t: F.cross_entropy(o, t, reduction="sum"))
    assert torch.equal(default, same)
    reg, (xr, yr) = regressor(), tabular(12)
    adv = A.fgsm(reg, xr, yr, 0.05, batch_size=5, loss_fn=F.mse_loss)
    xg = xr.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.mse_loss(reg(xg), yr, reduction="sum"), xg)
    assert torch.equal(adv, xr + 0.05 * grad.sign())
    with pytest.raises(ValueError, match="scalar"):
        A.fgsm(reg, xr, yr, 0.05, loss_fn=lambda o, t: (o - t) ** 2)
