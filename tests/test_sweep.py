"""Tests of paramstress.sweep: evaluation, the resumable sweep, the corruption sweep."""
from __future__ import annotations

import contextlib
import math
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from paramstress.corruption import operators as C
from paramstress import sweep as S
from paramstress.data import ImageData


# --------------------------------------------------------------------------------------
# Fixtures: a tiny image classifier on synthetic uint8 data
# --------------------------------------------------------------------------------------

class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)
        self.forward_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_calls += 1
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


@pytest.fixture
def data() -> ImageData:
    return _synthetic()


def _synthetic() -> ImageData:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (60, 1, 4, 4), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 3, (60,), generator=gen)
    return ImageData("synthetic", x[:40], y[:40], x[40:], y[40:], classes=["a", "b", "c"],
                     mean=(0.5,), std=(0.25,))


@pytest.fixture(scope="module")
def trained_state() -> dict[str, torch.Tensor]:
    data = _synthetic()
    torch.manual_seed(0)
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(model(data.normalize(data.train_x)), data.train_y).backward()
        opt.step()
    return model.state_dict()


@pytest.fixture
def trained(trained_state: dict[str, torch.Tensor]) -> TinyNet:
    model = TinyNet()
    model.load_state_dict(trained_state)
    return model


def _bits(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone().view(torch.uint8) for name, t in model.state_dict().items()
            if t.is_floating_point()}


def _same_bits(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [7, 20, 1000])
def test_evaluate_matches_a_direct_computation(trained: TinyNet, data: ImageData, batch_size: int) -> None:
    trained.train()
    res = S.evaluate(trained, data.test_x, data.test_y, batch_size=batch_size, transform=data.normalize)
    assert trained.training  # mode restored
    trained.eval()
    with torch.no_grad():
        logits = trained(data.normalize(data.test_x))
    assert res["accuracy"] == pytest.approx(100.0 * float((logits.argmax(1) == data.test_y).float().mean()))
    assert res["loss"] == pytest.approx(float(F.cross_entropy(logits, data.test_y)), rel=1e-6)
    assert res["nonfinite"] == 0.0
    assert trained.forward_calls == 1 + math.ceil(20 / batch_size)


def test_evaluate_metric_selection_and_errors(trained: TinyNet, data: ImageData) -> None:
    res = S.evaluate(trained, data.test_x, data.test_y, batch_size=8, transform=data.normalize, metrics=["loss"])
    assert list(res) == ["loss"]
    trained.forward_calls = 0
    with pytest.raises(ValueError, match="unknown metrics"):
        S.evaluate(trained, data.test_x, data.test_y, batch_size=8, metrics=["f1"])
    with pytest.raises(ValueError, match="batch_size"):
        S.evaluate(trained, data.test_x, data.test_y, batch_size=0)
    with pytest.raises(ValueError, match="examples"):
        S.evaluate(trained, data.test_x, data.test_y[:3], batch_size=8)
    assert trained.forward_calls == 0


def test_evaluate_counts_non_finite_logits_as_wrong() -> None:
    class Fixed(nn.Module):
        def forward(self, x):
            out = torch.zeros(len(x), 2)
            out[:, 0] = 1.0  # predicts class 0
            out[0, 1] = float("nan")
            return out

    y = torch.zeros(4, dtype=torch.long)
    res = S.evaluate(Fixed(), torch.zeros(4, 1), y, batch_size=4)
    assert res["accuracy"] == 75.0 and res["nonfinite"] == 25.0 and math.isnan(res["loss"])


def test_evaluate_runs_under_inference_mode() -> None:
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(torch.is_inference_mode_enabled())
            return torch.zeros(len(x), 2)

    S.evaluate(Probe(), torch.zeros(3, 1), torch.zeros(3, dtype=torch.long), batch_size=2)
    assert seen == [True, True]


# --------------------------------------------------------------------------------------
# The generic sweep
# --------------------------------------------------------------------------------------

class Counter:
    """A fake perturbation: records apply() calls and fails on request."""

    def __init__(self, fail_at: float | None = None) -> None:
        self.applied: list[dict] = []
        self.fail_at = fail_at

    @contextlib.contextmanager
    def apply(self, point):
        self.applied.append(dict(point))
        yield {"extra": point["x"] * 10}

    def evaluate(self, point):
        if self.fail_at is not None and point["x"] == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        return {"value": point["x"] ** 2 + 0.1, "name": f"pt{point['x']}"}


POINTS = [{"method": m, "x": x, "eps": e} for m in ("a", "b") for x in (1, 2, 3) for e in (1e-4, math.inf)]


def test_sweep_without_csv() -> None:
    c = Counter()
    df = S.sweep(POINTS, c.apply, c.evaluate)
    assert len(df) == len(POINTS) == len(c.applied)
    assert list(df.columns) == ["method", "x", "eps", "extra", "value", "name"]
    assert df["value"].tolist() == [p["x"] ** 2 + 0.1 for p in POINTS]


def test_sweep_resumes_after_interruption(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "rows.csv"
    first = Counter(fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        S.sweep(POINTS, first.apply, first.evaluate, path)
    written = pd.read_csv(path)
    assert len(written) == 4 == len(first.applied) - 1  # rows before the failing point

    second = Counter()
    df = S.sweep(POINTS, second.apply, second.evaluate, path)
    assert len(second.applied) == len(POINTS) - 4  # done rows were skipped
    assert all(p not in second.applied for p in POINTS[:4])
    reference = S.sweep(POINTS, Counter().apply, Counter().evaluate, tmp_path / "ref.csv")
    pd.testing.assert_frame_equal(df, reference)
    assert df["eps"].tolist() == [p["eps"] for p in POINTS]  # floats round-trip exactly

    third = Counter()
    S.sweep(POINTS, third.apply, third.evaluate, path)
    assert third.applied == []  # everything done
    again = Counter()
    S.sweep(POINTS, again.apply, again.evaluate, path, resume=False)
    assert len(again.applied) == len(POINTS) and len(pd.read_csv(path)) == len(POINTS)


def test_sweep_drops_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    S.sweep(POINTS[:3], Counter().apply, Counter().evaluate, path)
    with open(path, "a") as fh:
        fh.write("a,1,inf,10,1.")  # an interrupted write: no newline
    c = Counter()
    df = S.sweep(POINTS, c.apply, c.evaluate, path)
    assert len(c.applied) == len(POINTS) - 3
    assert len(df) == len(POINTS) and not df.isna().any().any()
    assert len(pd.read_csv(path)) == len(POINTS)


def test_sweep_returns_only_the_requested_points_in_order(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    S.sweep(POINTS, Counter().apply, Counter().evaluate, path)
    subset = list(reversed(POINTS[2:5]))
    c = Counter()
    df = S.sweep(subset, c.apply, c.evaluate, path)
    assert c.applied == []
    assert df[["method", "x", "eps"]].to_dict("records") == subset


def test_sweep_widens_the_csv_header_when_rows_gain_columns(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"

    @contextlib.contextmanager
    def apply(point):
        yield {"late": 1.5} if point["x"] == 2 else None

    df = S.sweep([{"x": 1}, {"x": 2}, {"x": 3}], apply, lambda p: {"v": p["x"]}, path)
    assert list(df.columns) == ["x", "v", "late"]
    assert df["late"].isna().tolist() == [True, False, True]


def test_sweep_appends_without_rereading_the_csv(tmp_path: Path, monkeypatch) -> None:
    """Appending a row must not re-read the rows already written (the sweep was quadratic
    in its rows: 1,800 rows of a tiny model took 18.9 s instead of 0.9 s), and rows are
    fsynced at most once per FSYNC_INTERVAL plus once at the end, not once per row."""
    path = tmp_path / "rows.csv"
    reads, syncs = [], []
    real_read, real_fsync = S._read_rows, S.os.fsync
    monkeypatch.setattr(S, "_read_rows", lambda p: reads.append(p) or real_read(p))
    monkeypatch.setattr(S.os, "fsync", lambda fd: syncs.append(fd) or real_fsync(fd))
    monkeypatch.setattr(S, "FSYNC_INTERVAL", 3600.0, raising=False)
    points = [{"x": i} for i in range(40)]
    df = S.sweep(points, Counter().apply, lambda p: {"v": p["x"] + 0.5}, path)
    assert reads == []  # a fresh file: nothing to read back while appending
    assert len(syncs) == 2  # the header line, and the close at the end
    assert df["v"].tolist() == [i + 0.5 for i in range(40)] and len(pd.read_csv(path)) == 40

    c = Counter()
    S.sweep([{"x": i} for i in range(50)], c.apply, lambda p: {"v": p["x"] + 0.5}, path)
    assert len(c.applied) == 10 and len(reads) == 1  # resume reads the file once, appends read nothing
    assert len(pd.read_csv(path)) == 50


def test_sweep_rejects_bad_grids() -> None:
    c = Counter()
    with pytest.raises(ValueError, match="duplicate grid point"):
        S.sweep([{"x": 1}, {"x": 1.0}], c.apply, c.evaluate)
    with pytest.raises(ValueError, match="lacks keys"):
        S.sweep([{"x": 1, "y": 2}, {"x": 2}], c.apply, c.evaluate)
    with pytest.raises(ValueError, match="produced twice"):
        S.sweep([{"x": 1, "extra": 0}], c.apply, c.evaluate)
    assert len(c.applied) == 1  # the clash is found after the first evaluation only


def test_sweep_progress_bar_runs(capsys) -> None:
    c = Counter()
    S.sweep(POINTS[:2], c.apply, c.evaluate, progress=True, desc="test")
    assert len(c.applied) == 2


# --------------------------------------------------------------------------------------
# Parameter corruption
# --------------------------------------------------------------------------------------

def test_corruption_grid() -> None:
    pts = S.corruption_grid([1e-3, 1e-2], [1, None], trials=3, p=2, k=10)
    assert len(pts) == 2 * 2 * 3 + 2 * 2
    assert {p["n"] for p in pts} == {1, 10}
    assert all(p["trial"] == 0 for p in pts if p["method"] == "gradient")
    assert sorted(p["trial"] for p in pts if p["method"] == "random" and p["n"] == 1 and p["eps"] == 1e-3) == [0, 1, 2]
    assert list(pts[0]) == ["method", "p", "n", "eps", "trial"]
    assert S.corruption_grid([1.0], [3], methods=["gradient"])[0]["p"] == math.inf
    with pytest.raises(ValueError, match="eps must be a positive"):
        S.corruption_grid([0.0], [1])
    with pytest.raises(ValueError, match="exceeds"):
        S.corruption_grid([1.0], [11], k=10)
    with pytest.raises(ValueError, match="pass k"):
        S.corruption_grid([1.0], [None])
    with pytest.raises(ValueError, match="unknown corruption methods"):
        S.corruption_grid([1.0], [1], methods=["adversarial"])
    with pytest.raises(ValueError, match="trials"):
        S.corruption_grid([1.0], [1], trials=0)


def test_derive_seed() -> None:
    seeds = {S.derive_seed(0, e, n, t) for e in (1e-3, 1e-2) for n in (1, 5) for t in range(4)}
    assert len(seeds) == 16
    assert S.derive_seed(0, 1e-3, 5, 2) == S.derive_seed(0, 0.001, 5, 2)
    assert S.derive_seed(0, 1e-3, 5, 2) != S.derive_seed(1, 1e-3, 5, 2)
    assert all(0 <= s < 2**48 for s in seeds)


def _setup(trained: TinyNet, data: ImageData):
    params = C.select_parameters(trained, module_types=(nn.Conv2d, nn.BatchNorm2d, nn.Linear))
    batches = S.iter_batches(data.train_x, data.train_y, 16)
    grad = C.subspace_gradient(trained, params, F.cross_entropy, batches, transform=data.normalize)
    return params, grad


def test_corruption_sweep_rows_and_bit_identical_weights(trained: TinyNet, data: ImageData, tmp_path: Path) -> None:
    params, grad = _setup(trained, data)
    k = C.subspace_size(params)
    before = _bits(trained)
    kwargs = dict(eps_values=[1e-2, 0.5], n_values=[5, None], p=math.inf, trials=2, seed=7,
                  batch_size=8, transform=data.normalize)
    df = S.corruption_sweep(trained, params, grad, data.test_x, data.test_y, csv_path=tmp_path / "c.csv", **kwargs)
    assert _same_bits(before, _bits(trained))

    assert len(df) == 2 * 2 * (2 + 1)
    assert list(df.columns[:11]) == ["method", "p", "n", "eps", "trial", "k", "seed", "accuracy", "loss",
                                     "delta_loss", "indicator"]
    assert set(df["n"]) == {5, k} and (df["k"] == k).all() and (df["p"] == math.inf).all()
    base = S.evaluate(trained, data.test_x, data.test_y, batch_size=8, transform=data.normalize)
    assert (df["base_loss"] == base["loss"]).all()
    assert df["delta_loss"].tolist() == pytest.approx((df["loss"] - base["loss"]).tolist())

    grad_rows = df[df.method == "gradient"]
    assert grad_rows["seed"].isna().all()
    for row in grad_rows.itertuples():
        assert row.indicator == pytest.approx(C.indicator(grad, row.eps, math.inf, row.n), rel=1e-12)
        # the row's metrics are those of the model corrupted by Eq. 10
        with C.corrupted(params, C.gradient_corruption(grad.double(), row.eps, math.inf, row.n)):
            m = S.evaluate(trained, data.test_x, data.test_y, batch_size=8, transform=data.normalize)
        assert m["loss"] == row.loss and m["accuracy"] == row.accuracy

    rand_rows = df[df.method == "random"]
    for row in rand_rows.itertuples():
        assert row.seed == S.derive_seed(7, row.eps, row.n, row.trial)
        a = C.random_corruption(k, row.eps, math.inf, row.n, torch.Generator().manual_seed(int(row.seed)),
                                dtype=torch.float64)
        assert row.indicator == pytest.approx(C.first_order_change(a, grad), rel=1e-9, abs=1e-15)
        with C.corrupted(params, a):
            m = S.evaluate(trained, data.test_x, data.test_y, batch_size=8, transform=data.normalize)
        assert m["loss"] == row.loss
    assert _same_bits(before, _bits(trained))

    # the gradient direction is the worse one to first order, at every (eps, n)
    for (eps, n), grp in df.groupby(["eps", "n"]):
        g_ind = float(grp[grp.method == "gradient"]["indicator"].iloc[0])
        assert (grp[grp.method == "random"]["indicator"] <= g_ind + 1e-12).all()

    # rerunning with the same seed reproduces every row (without the CSV)
    again = S.corruption_sweep(trained, params, grad, data.test_x, data.test_y, **kwargs)
    pd.testing.assert_frame_equal(again[df.columns].astype(df.dtypes.to_dict()), df, check_exact=True)
    assert _same_bits(before, _bits(trained))


def test_corruption_sweep_resume_skips_done_rows(trained: TinyNet, data: ImageData, tmp_path: Path) -> None:
    params, grad = _setup(trained, data)
    path = tmp_path / "c.csv"
    kwargs = dict(eps_values=[0.1], n_values=[3], p=2, trials=3, seed=1, batch_size=64,
                  transform=data.normalize, csv_path=path)
    full = S.corruption_sweep(trained, params, grad, data.test_x, data.test_y, **kwargs)
    assert len(full) == 4
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3]) + "\n")  # keep the header and 2 rows
    trained.forward_calls = 0
    resumed = S.corruption_sweep(trained, params, grad, data.test_x, data.test_y, **kwargs)
    assert trained.forward_calls == 1 + 2  # the baseline and the two missing rows
    pd.testing.assert_frame_equal(resumed, full)


def test_corruption_sweep_validates_before_any_forward_pass(trained: TinyNet, data: ImageData) -> None:
    params, grad = _setup(trained, data)
    trained.forward_calls = 0
    x, y = data.test_x, data.test_y
    common = dict(batch_size=8, transform=data.normalize)
    with pytest.raises(ValueError, match="eps must be a positive"):
        S.corruption_sweep(trained, params, grad, x, y, eps_values=[0.1, -1], n_values=[1], **common)
    with pytest.raises(ValueError, match="p must be in"):
        S.corruption_sweep(trained, params, grad, x, y, eps_values=[0.1], n_values=[1], p=0.5, **common)
    with pytest.raises(ValueError, match="n must be >= 1"):
        S.corruption_sweep(trained, params, grad, x, y, eps_values=[0.1], n_values=[0], **common)
    with pytest.raises(ValueError, match="exceeds the subspace size"):
        S.corruption_sweep(trained, params, grad, x, y, eps_values=[0.1], n_values=[10**6], **common)
    with pytest.raises(ValueError, match="k ="):
        S.corruption_sweep(trained, params, grad[:-1], x, y, eps_values=[0.1], n_values=[1], **common)
    with pytest.raises(C.ZeroDirectionError):
        S.corruption_sweep(trained, params, torch.zeros_like(grad), x, y, eps_values=[0.1], n_values=[1], **common)
    with pytest.raises(ValueError, match="non-finite"):
        S.corruption_sweep(trained, params, grad * float("nan"), x, y, eps_values=[0.1], n_values=[1], **common)
    assert trained.forward_calls == 0


def _fail_on_forward(model: nn.Module, call: int) -> None:
    """Make ``model``'s ``call``-th forward pass (counting from 1) raise "device lost"."""
    calls = {"n": 0}
    original_forward = model.forward

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == call:
            raise RuntimeError("device lost")
        return original_forward(x)

    model.forward = flaky  # type: ignore[method-assign]


def test_corruption_sweep_restores_weights_when_evaluation_fails(trained: TinyNet, data: ImageData) -> None:
    params, grad = _setup(trained, data)
    before = _bits(trained)
    _fail_on_forward(trained, 3)  # inside the second corrupted evaluation
    with pytest.raises(RuntimeError, match="device lost"):
        S.corruption_sweep(trained, params, grad, data.test_x, data.test_y, eps_values=[1.0], n_values=[4],
                           trials=2, batch_size=64, transform=data.normalize)
    assert _same_bits(before, _bits(trained))
    assert not [t for t in threading.enumerate() if t.name.startswith("paramstress-draw")]  # the draw ahead stopped


def _draw_threads(monkeypatch) -> list[str]:
    names: list[str] = []
    real = C.random_draw

    def spy(k, generator=None):
        names.append(threading.current_thread().name)
        return real(k, generator)

    monkeypatch.setattr(C, "random_draw", spy)
    return names


def test_corruption_sweep_draws_the_next_random_row_ahead(trained: TinyNet, data: ImageData, tmp_path: Path,
                                                          monkeypatch) -> None:
    """prefetch: every random draw after the first is made in the background thread, while
    the row before is evaluated; the rows (CSV included) equal those drawn in turn, also on
    resume, and no draw thread outlives the sweep."""
    params, grad = _setup(trained, data)
    kwargs = dict(eps_values=[1e-2, 0.5], n_values=[5, None], p=math.inf, trials=3, seed=3,
                  batch_size=16, transform=data.normalize)
    names = _draw_threads(monkeypatch)
    ahead = S.corruption_sweep(trained, params, grad, data.test_x, data.test_y, csv_path=tmp_path / "a.csv",
                               **kwargs)
    assert len(names) == 4 * 3 and names[0] == threading.main_thread().name
    assert all(name.startswith("paramstress-draw") for name in names[1:])
    names.clear()
    in_turn = S.corruption_sweep(trained, params, grad, data.test_x, data.test_y, csv_path=tmp_path / "b.csv",
                                 prefetch=False, **kwargs)
    assert names == [threading.main_thread().name] * 12
    pd.testing.assert_frame_equal(ahead, in_turn)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    # resume with rows missing here and there: drawn out of turn, same rows
    lines = (tmp_path / "a.csv").read_text().splitlines()
    (tmp_path / "a.csv").write_text("\n".join(lines[0:1] + lines[2:5] + lines[7:]) + "\n")
    resumed = S.corruption_sweep(trained, params, grad, data.test_x, data.test_y, csv_path=tmp_path / "a.csv",
                                 **kwargs)
    pd.testing.assert_frame_equal(resumed, in_turn)
    assert not [t for t in threading.enumerate() if t.name.startswith("paramstress-draw")]


# --------------------------------------------------------------------------------------
# The non-finite rule (issue 30, point 4)
# --------------------------------------------------------------------------------------

class _HalfNaN(nn.Module):
    """4 classes; predicts class 0 with finite logits, except examples 0-2, whose logits have a NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = torch.zeros(len(x), 4)
        out[:, 0] = 1.0
        out[x[:, 0] < 3, 2] = float("nan")
        return out


def test_evaluate_uniform_rule_counts_a_non_finite_example_as_one_over_c() -> None:
    x = torch.arange(8, dtype=torch.float32).unsqueeze(1)  # examples 0-2 non-finite
    y = torch.tensor([0, 1, 2, 0, 0, 1, 3, 0])
    # finite examples 3-7 predict 0: correct at 3, 4, 7 → 3 of 8; non-finite: 3 of 8
    wrong = S.evaluate(_HalfNaN(), x, y, batch_size=3)
    uniform = S.evaluate(_HalfNaN(), x, y, batch_size=3, nonfinite="uniform")
    assert wrong["accuracy"] == 37.5 and wrong["nonfinite"] == 37.5
    assert uniform["accuracy"] == 37.5 + 37.5 / 4 == 46.875  # 3 + 3/4 correct answers of 8
    assert uniform["nonfinite"] == 37.5 and math.isnan(uniform["loss"])


def test_evaluate_rejects_an_unknown_rule_before_any_forward_pass() -> None:
    net = _HalfNaN()
    with pytest.raises(ValueError, match=r"unknown non-finite rule nonfinite='chance'; choose one of \['wrong', 'uniform'\]"):
        S.evaluate(net, torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), nonfinite="chance")
    assert net.calls == 0


def test_corruption_sweep_applies_the_rule_and_rejects_it_with_an_evaluator(trained: TinyNet, data: ImageData) -> None:
    params = C.select_parameters(trained)
    g = torch.ones(C.subspace_size(params))
    before = _bits(trained)
    args = dict(eps_values=[1e30], n_values=[None], methods=["gradient"], batch_size=8, transform=data.normalize)
    wrong = S.corruption_sweep(trained, params, g, data.test_x, data.test_y, **args)
    uniform = S.corruption_sweep(trained, params, g, data.test_x, data.test_y, nonfinite="uniform", **args)
    assert _same_bits(before, _bits(trained))
    assert float(wrong["nonfinite"].iloc[0]) > 0  # eps = 1e30 overflows the tiny network
    assert float(uniform["accuracy"].iloc[0]) == float(wrong["accuracy"].iloc[0]) + float(wrong["nonfinite"].iloc[0]) / 3
    trained.forward_calls = 0
    with pytest.raises(ValueError, match="unknown non-finite rule"):
        S.corruption_sweep(trained, params, g, data.test_x, data.test_y, nonfinite="nan", **args)
    with pytest.raises(ValueError, match="leave nonfinite at 'wrong'"):
        S.corruption_sweep(trained, params, g, evaluator=lambda: {"accuracy": 1.0, "loss": 0.0},
                           nonfinite="uniform", **{k: v for k, v in args.items() if k not in ("batch_size", "transform")})
    assert trained.forward_calls == 0


def test_corruption_sweep_marks_uniform_rows_and_does_not_resume_across_rules(trained: TinyNet, data: ImageData,
                                                                             tmp_path: Path) -> None:
    params = C.select_parameters(trained)
    g = torch.ones(C.subspace_size(params))
    args = dict(eps_values=[0.1], n_values=[None], methods=["gradient"], batch_size=8, transform=data.normalize)
    wrong_csv, uniform_csv = tmp_path / "wrong.csv", tmp_path / "uniform.csv"
    wrong = S.corruption_sweep(trained, params, g, data.test_x, data.test_y, csv_path=wrong_csv, **args)
    assert "nonfinite_rule" not in wrong.columns  # the published layout is unchanged under the default
    uniform = S.corruption_sweep(trained, params, g, data.test_x, data.test_y, csv_path=uniform_csv,
                                 nonfinite="uniform", **args)
    assert list(uniform["nonfinite_rule"]) == ["uniform"]
    trained.forward_calls = 0
    with pytest.raises(ValueError, match=r"computed under the non-finite rule \['wrong'\], not 'uniform': pass resume=False"):
        S.corruption_sweep(trained, params, g, data.test_x, data.test_y, csv_path=wrong_csv, nonfinite="uniform", **args)
    with pytest.raises(ValueError, match=r"rule \['uniform'\], not 'wrong'"):
        S.corruption_sweep(trained, params, g, data.test_x, data.test_y, csv_path=uniform_csv, **args)
    assert trained.forward_calls == 0
    again = S.corruption_sweep(trained, params, g, data.test_x, data.test_y, csv_path=wrong_csv, nonfinite="uniform",
                               resume=False, **args)
    assert list(again["nonfinite_rule"]) == ["uniform"]


def test_evaluate_outcomes_per_example_by_hand() -> None:
    x = torch.arange(8, dtype=torch.float32).unsqueeze(1)  # examples 0-2 non-finite
    y = torch.tensor([0, 1, 2, 0, 0, 1, 3, 0])
    for rule in S.NONFINITE_RULES:
        values, correct, finite = S.evaluate_outcomes(_HalfNaN(), x, y, batch_size=3, nonfinite=rule)
        plain = S.evaluate(_HalfNaN(), x, y, batch_size=3, nonfinite=rule)  # the same floats
        assert list(values) == list(plain) and math.isnan(values["loss"]) and math.isnan(plain["loss"])
        assert (values["accuracy"], values["nonfinite"]) == (plain["accuracy"], plain["nonfinite"])
        # example 0 has label 0 = the argmax, but non-finite logits: never correct in the outcomes
        assert correct.tolist() == [False, False, False, True, True, False, False, True]
        assert finite.tolist() == [False, False, False, True, True, True, True, True]
    assert 100.0 * correct.sum() / len(y) == S.evaluate(_HalfNaN(), x, y, nonfinite="wrong")["accuracy"]
    net = _HalfNaN()
    with pytest.raises(ValueError, match="unknown non-finite rule"):
        S.evaluate_outcomes(net, x, y, nonfinite="chance")
    with pytest.raises(ValueError, match="empty"):
        S.evaluate_outcomes(net, x[:0], y[:0])
    assert net.calls == 0


def test_sweep_recomputes_rows_that_lack_a_required_column(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    S.sweep(POINTS, Counter().apply, Counter().evaluate, path)  # rows without "extra2"

    class Wider(Counter):
        def evaluate(self, point):
            return {**super().evaluate(point), "extra2": f"x{point['x']}"}

    c = Wider()
    df = S.sweep(POINTS, c.apply, c.evaluate, path, require=["extra2"])
    assert len(c.applied) == len(POINTS)  # none counted as done
    assert df["extra2"].tolist() == [f"x{p['x']}" for p in POINTS] and len(df) == len(POINTS)
    again = Wider()
    S.sweep(POINTS, again.apply, again.evaluate, path, require=["extra2"])
    assert again.applied == []  # now every row has it


def test_predict_is_the_argmax_of_evaluate_in_batches():
    from paramstress.engine.sweep import evaluate, predict
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).train()
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    pred = predict(model, x, batch_size=3)
    assert torch.equal(pred, model(x).argmax(1)) and model.training  # eval mode restored
    assert evaluate(model, x, y, batch_size=3)["accuracy"] == 100.0 * int((pred == y).sum()) / 10
    with pytest.raises(ValueError, match="batch_size"):
        predict(model, x, batch_size=0)


def test_evaluation_convolves_channels_last_copies_and_leaves_the_model_alone(trained: TinyNet,
                                                                            data: ImageData) -> None:
    seen = []
    hook = trained.conv.register_forward_pre_hook(lambda mod, args: seen.append(mod.weight.stride()))
    storage = {name: p.data_ptr() for name, p in trained.named_parameters()}
    strides = {name: p.stride() for name, p in trained.named_parameters()}
    before = _bits(trained)
    res = S.evaluate(trained, data.test_x, data.test_y, batch_size=8, transform=data.normalize)
    hook.remove()
    # the convolution read a channels-last copy (canonical strides, also for one input channel) ...
    assert seen and all(s == torch.empty(4, 1, 3, 3, memory_format=torch.channels_last).stride() for s in seen)
    assert seen[0] != strides["conv.weight"]
    # ... and the model kept its own storage, layout and bits
    assert {n: p.data_ptr() for n, p in trained.named_parameters()} == storage
    assert {n: p.stride() for n, p in trained.named_parameters()} == strides
    assert _same_bits(before, _bits(trained))
    trained.eval()
    with torch.no_grad():
        logits = trained(data.normalize(data.test_x))
    assert res["accuracy"] == pytest.approx(100.0 * float((logits.argmax(1) == data.test_y).float().mean()))
    assert res["loss"] == pytest.approx(float(F.cross_entropy(logits, data.test_y)), rel=1e-5)
    # a weight changed in place before the call is what the copies hold
    with torch.no_grad():
        trained.conv.weight.zero_()
        trained.conv.bias.zero_()
    zeroed = S.predict(trained, data.test_x, transform=data.normalize)
    with torch.no_grad():
        expected = trained(data.normalize(data.test_x)).argmax(1)
    assert torch.equal(zeroed, expected)
