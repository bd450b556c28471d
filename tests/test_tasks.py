"""The task abstraction: one loop, one gradient, one sweep for every text task (toy task here)."""
import math

import pytest
import torch
from torch import nn

from paramstress import corruption as C
from paramstress import tasks as T
from paramstress import training


class ToySequenceTask(T.Task):
    """Token-level classification of random sequences: the label of a token is a fixed
    function of the token, so a tiny model can learn it. Batches are (tokens, labels)."""

    key = "toy"
    label = "Toy"
    metric = "token_accuracy"
    metric_label = "Acc"
    higher_is_better = True

    def __init__(self, n=48, length=7, vocab=11, batch=8):
        g = torch.Generator().manual_seed(123)
        self.device = torch.device("cpu")
        self.x = torch.randint(0, vocab, (n, length), generator=g)
        self.y = (self.x * 3) % 4
        self.vocab, self.batch = vocab, batch

    def build_model(self, seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Embedding(self.vocab, 8), nn.Dropout(0.1), nn.Linear(8, 4))

    def train_batches(self, generator):
        order = torch.randperm(len(self.x), generator=generator)
        for i in range(0, len(order), self.batch):
            idx = order[i:i + self.batch]
            yield self.x[idx], self.y[idx]

    def loss(self, model, x, y):
        return nn.functional.cross_entropy(model(x).reshape(-1, 4), y.reshape(-1))

    def gradient_batches(self):
        for i in range(0, len(self.x), 20):  # uneven last batch: weights must be by count
            x, y = self.x[i:i + 20], self.y[i:i + 20]
            yield x, y, y.numel()

    def evaluate(self, model):
        was = model.training
        model.eval()
        with torch.inference_mode():
            logits = model(self.x).reshape(-1, 4)
            loss = nn.functional.cross_entropy(logits, self.y.reshape(-1)).item()
            acc = 100.0 * (logits.argmax(1) == self.y.reshape(-1)).float().mean().item()
        model.train(was)
        return {"token_accuracy": acc, "loss": loss}

    def identity(self):
        return {"n": len(self.x), "vocab": self.vocab, "digest": int(self.x.sum())}

    def provenance(self):
        return {"dataset": "toy", "source": "synthetic", "checksum": ""}


@pytest.fixture
def task():
    return ToySequenceTask()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_config_is_validated_before_compute():
    with pytest.raises(ValueError, match="optimizer must be"):
        T.TaskTrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="unknown objective"):
        T.TaskTrainConfig(objective="nope")
    with pytest.raises(ValueError, match="epochs must be"):
        T.TaskTrainConfig(epochs=0)


def test_train_learns_caches_and_reloads(task, tmp_path):
    cfg = T.TaskTrainConfig(epochs=6, lr=0.05, clip_norm=1.0, eval_every=2)
    first = T.train_task(task, cfg, checkpoint_dir=tmp_path)
    assert not first.loaded and first.final["token_accuracy"] > 90
    assert [row["epoch"] for row in first.history] == list(range(1, 7))
    assert sum("eval_loss" in row for row in first.history) == 3
    again = T.train_task(task, cfg, checkpoint_dir=tmp_path)
    assert again.loaded and again.config_hash == first.config_hash
    for (k, a), b in zip(first.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), k
    other = T.task_config_hash(T.TaskTrainConfig(epochs=6, lr=0.05, clip_norm=1.0, eval_every=2, seed=1), task)
    assert other != first.config_hash


def test_resumed_run_equals_uninterrupted(task, tmp_path, monkeypatch):
    cfg = T.TaskTrainConfig(epochs=4, lr=0.05, schedule="cosine", checkpoint_every=1)

    class Stop(Exception):
        pass

    real = task.train_batches
    calls = []

    def stopping(generator):  # call 1 counts the steps; calls 2-3 are epochs 1-2; stop in epoch 3
        calls.append(1)
        if len(calls) == 4:
            raise Stop
        return real(generator)

    monkeypatch.setattr(task, "train_batches", stopping)
    with pytest.raises(Stop):
        T.train_task(task, cfg, checkpoint_dir=tmp_path / "cut")
    monkeypatch.setattr(task, "train_batches", real)
    cut = torch.load(tmp_path / "cut" / f"task-{T.task_config_hash(cfg, task)}.pt", weights_only=False)
    assert cut["epoch"] == 2
    resumed = T.train_task(task, cfg, checkpoint_dir=tmp_path / "cut")
    uninterrupted = T.train_task(task, cfg, checkpoint_dir=tmp_path / "full")
    assert not resumed.loaded and len(resumed.history) == 4
    for a, b in zip(resumed.model.state_dict().values(), uninterrupted.model.state_dict().values()):
        assert torch.equal(a, b)


def test_shared_objectives_run_on_tasks(task, tmp_path):
    for name, params in [("sam", {"rho": 0.05}), ("corruption_resistant", {"alpha": 0.5, "eps": 0.1, "p": 2}),
                         ("corruption_direct", {"alpha": 0.5, "eps": 0.1, "p": 2})]:
        cfg = T.TaskTrainConfig(epochs=2, lr=0.05, objective=name, objective_params=params)
        result = T.train_task(task, cfg, checkpoint_dir=tmp_path)
        assert math.isfinite(result.history[-1]["train_loss"]), name


def test_task_gradient_is_the_mean_over_units(task):
    model = task.build_model(0)
    named = C.select_parameters(model)
    g = T.task_gradient(task, model, named)
    model.eval()
    loss = task.loss(model, task.x, task.y)
    expected = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, [p for _, p in named])])
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-7)
    model.train()
    T.task_gradient(task, model)
    assert model.training


def test_sweep_restores_weights_and_reports_task_metrics(task, tmp_path):
    model = T.train_task(task, T.TaskTrainConfig(epochs=3, lr=0.05), checkpoint_dir=tmp_path).model
    before = _state(model)
    named = C.select_parameters(model)
    g = T.task_gradient(task, model, named)
    rows = T.task_corruption_sweep(task, model, named, g, eps_values=[1e-3, 1.0], n_values=[None, 5],
                                   trials=2, csv_path=tmp_path / "s.csv")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert {"token_accuracy", "base_token_accuracy", "delta_token_accuracy", "delta_loss", "indicator"} <= set(rows)
    assert len(rows) == 2 * 2 * (2 + 1)
    big = rows[(rows.method == "gradient") & (rows.eps == 1.0) & (rows.n == C.subspace_size(named))]
    assert float(big["delta_loss"].iloc[0]) > 0
    scores = T.task_corrupted_scores(task, model, eps_values=[0.1, 1.0])
    assert math.isnan(scores["eps"].iloc[0]) and len(scores) == 3
    assert scores["token_accuracy"].iloc[0] == pytest.approx(task.evaluate(model)["token_accuracy"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_build_task_rejects_unknown_names_before_loading():
    with pytest.raises(ValueError, match="unknown task 'ptb'; choose from ptb-lm, ptb-parsing, de-en"):
        T.build_task("ptb")
    with pytest.raises(ValueError, match="takes no parameter"):
        T.build_task("ptb-lm", hidden_sise=10)


class ToyHeldOut(ToySequenceTask):
    """The toy task scoring another draw of sequences (a validation split): same training data."""

    def __init__(self, eval_seed):
        super().__init__()
        g = torch.Generator().manual_seed(eval_seed)
        self.ex = torch.randint(0, self.vocab, (40, 7), generator=g)
        self.ey = (self.ex * 3) % 4

    def evaluate(self, model):
        x, y = self.x, self.y
        self.x, self.y = self.ex, self.ey
        try:
            return super().evaluate(model)
        finally:
            self.x, self.y = x, y


def test_task_table2_searches_on_validation_and_reports_the_evaluation_split(tmp_path):
    from paramstress import resistant as R

    task, val = ToyHeldOut(1), ToyHeldOut(2)
    out = R.task_table2(task, val, {"epochs": 3, "lr": 0.05}, virtual_eps=[0.05, 0.5], eval_eps=[0.1, 1.0],
                        seeds=[0, 1], checkpoint_dir=tmp_path)
    res = out.results
    assert len(res) == 2 * 2 * 3 and set(res.trainer) == {"baseline", "resistant"}
    assert set(res.loc[res.trainer == "resistant", "virtual_eps"]) == {out.chosen}
    assert out.chosen in (0.05, 0.5) and out.selection["selected"].sum() == 1
    chosen, _ = R.select_virtual(out.search[out.search.trainer == "resistant"],
                                 out.search[out.search.trainer == "baseline"], metric="token_accuracy")
    assert chosen == out.chosen
    # validation rows score the validation split, result rows the evaluation split
    clean = res[(res.trainer == "baseline") & (res.seed == 0) & res.eps.isna()]["token_accuracy"].item()
    base_model = out.models[("baseline", 0)]
    assert clean == pytest.approx(task.evaluate(base_model)["token_accuracy"])
    val_clean = out.search[(out.search.trainer == "baseline") & out.search.eps.isna()]["token_accuracy"].item()
    assert val_clean == pytest.approx(val.evaluate(base_model)["token_accuracy"])
    # weights are those of the checkpoint after every corruption; the trainers differ
    for (trainer, seed), model in out.models.items():
        objective = {} if trainer == "baseline" else {
            "objective": "corruption_direct", "objective_params": {"alpha": 0.5, "eps": out.chosen, "p": 2}}
        again = T.train_task(task, T.TaskTrainConfig(epochs=3, lr=0.05, seed=seed, **objective), checkpoint_dir=tmp_path)
        assert again.loaded
        for k, v in model.state_dict().items():
            assert torch.equal(v, again.model.state_dict()[k]), (trainer, seed, k)
    assert not torch.equal(out.models[("baseline", 0)][2].weight, out.models[("resistant", 0)][2].weight)
    assert out.seconds["training"] > 0


def test_task_table2_fails_before_training(tmp_path):
    from paramstress import resistant as R

    task = ToyHeldOut(1)
    other = ToyHeldOut(2)
    other.x = other.x[:40]
    cases = [
        ((task, other), {}, "different data"),
        ((task, ToyHeldOut(2)), {"p": 0.5}, "p must be"),
        ((task, ToyHeldOut(2)), {"alpha": 2.0}, "alpha"),
        ((task, ToyHeldOut(2)), {"virtual_eps": []}, "virtual_eps is empty"),
        ((task, ToyHeldOut(2)), {"eval_eps": []}, "eval_eps is empty"),
    ]
    for tasks, extra, message in cases:
        kwargs = {"virtual_eps": [0.1], "eval_eps": [0.1], "checkpoint_dir": tmp_path, **extra}
        with pytest.raises(ValueError, match=message):
            R.task_table2(*tasks, {"epochs": 1, "lr": 0.05}, **kwargs)
    assert not list(tmp_path.iterdir())
