"""The one training loop's phases (training.TrainingLoop): prepare, restore, one epoch, save,
each on its own against a hand-written step, and that train() and tasks.train_task() both run
through them and share one checkpoint layout (older task checkpoints still load)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from paramstress import tasks as T
from paramstress import training
from paramstress.training import TrainConfig, TrainingLoop, read_checkpoint, seeded_generator

from test_tasks import ToySequenceTask
from test_training import CountingCE, make_data, same_weights, tiny_config

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

CFG = TrainConfig(model="small_cnn", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3, schedule="cosine",
                  warmup_fraction=0.25)
#: What every checkpoint holds besides the caller's identity (TrainingLoop.checkpoint's contract).
LAYOUT = {"format", "epoch", "finished", "history", "model", "optimizer", "scheduler", "generator", "rng_cpu",
          "rng_cuda", "objective", "torch_version", "device"}


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Dropout(0.2), nn.Linear(5, 2))


def ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def fixed_batches(n: int = 4, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(seed)
    sizes = [6, 6, 6, 3][:n]
    return [(torch.randn(b, 3, generator=g), torch.randint(0, 2, (b,), generator=g), b) for b in sizes]


def drawn_batches(generator: torch.Generator):
    """An epoch whose order comes from the loop's generator (what a resume must restore)."""
    data = fixed_batches()
    for i in torch.randperm(len(data), generator=generator).tolist():
        yield data[i]


def make_loop(model: nn.Module, *, total_steps: int = 8, seed: int = 0, **kwargs) -> TrainingLoop:
    return TrainingLoop.prepare(model, CFG, total_steps=total_steps, objective=training.CrossEntropy(), loss_fn=ce,
                                generator=seeded_generator(seed), **kwargs)


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- prepare
def test_seeded_generator_seeds_the_global_generator_too() -> None:
    torch.manual_seed(1)
    g = seeded_generator(7)
    expected = torch.rand(6, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.rand(6), expected)
    assert torch.equal(torch.rand(6, generator=g), expected)


def test_prepare_builds_optimizer_and_schedule_over_the_trainable_params() -> None:
    model = net()
    model[0].bias.requires_grad_(False)
    loop = make_loop(model, total_steps=8, start_epoch=3, label="Toy")
    ids = {id(p) for p in loop.optimizer.param_groups[0]["params"]}
    assert ids == {id(model[0].weight), id(model[2].weight), id(model[2].bias)}
    assert [id(p) for p in loop.params] == [id(model[0].weight), id(model[2].weight), id(model[2].bias)]
    assert isinstance(loop.optimizer, torch.optim.SGD) and loop.optimizer.defaults["nesterov"]
    assert (loop.epoch, loop.history, loop.frozen, loop.device) == (3, [], {}, torch.device("cpu"))
    for _ in range(8):  # the cosine schedule spans total_steps: warm-up over 2 steps, 0 at the end
        loop.optimizer.step()
        loop.scheduler.step()
    assert loop.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
    adam = TrainingLoop.prepare(net(), dataclasses.replace(CFG, optimizer="adam"), total_steps=8,
                                objective=training.CrossEntropy(), loss_fn=ce, generator=torch.Generator())
    assert isinstance(adam.optimizer, torch.optim.Adam)
    with pytest.raises(ValueError, match="no parameter to train"):
        make_loop(net(), params=[])


# ----------------------------------------------------------------------------- one epoch
def reference_epoch(model: nn.Module, batches, *, clip: float, frozen: set[str], total_steps: int = 8):
    """The documented step, written out: zero_grad, objective, frozen grads dropped, clip, step, schedule."""
    params = [p for n, p in model.named_parameters() if n not in frozen]
    optimizer = training.make_optimizer(params, CFG)
    scheduler = training.make_scheduler(optimizer, CFG, total_steps)
    model.train()
    total, lrs = torch.zeros((), dtype=torch.float64), []
    for x, y, w in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = ce(model, x, y)
        loss.backward()
        for n, p in model.named_parameters():
            if n in frozen:
                p.grad = None
        if clip:
            nn.utils.clip_grad_norm_(params, clip)
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        total += loss.detach().double() * w
    return total, lrs


def test_run_epoch_is_the_documented_step() -> None:
    batches = fixed_batches()
    expected = net()
    torch.manual_seed(5)  # dropout draws from the global generator
    total, lrs = reference_epoch(expected, batches, clip=0.05, frozen={"0.bias"})
    unclipped = net()
    torch.manual_seed(5)
    reference_epoch(unclipped, batches, clip=0.0, frozen={"0.bias"})
    assert not same_weights(expected, unclipped)  # the clip matters here, so the test can see it

    model = net()
    bias0 = model[0].bias.detach().clone()
    named = dict(model.named_parameters())
    steps = []
    loop = make_loop(model, params=[p for n, p in named.items() if n != "0.bias"], frozen={"0.bias": named["0.bias"]},
                     clip_norm=0.05)
    torch.manual_seed(5)
    result = loop.run_epoch(batches, on_step=lambda: steps.append(model[0].bias.requires_grad))
    assert same_weights(model, expected)
    assert torch.equal(model[0].bias, bias0) and model[0].bias.requires_grad  # frozen, flag restored
    assert steps == [False] * 4  # off while the epoch ran
    assert (result.epoch, result.steps, result.weight, loop.epoch) == (1, 4, 21, 1)
    assert result.loss_sum.dtype == torch.float64 and torch.equal(result.loss_sum, total)
    assert result.last_lr == lrs[-1]
    assert model.training


def test_run_epoch_refuses_what_would_corrupt_the_run() -> None:
    loop = make_loop(net())
    with pytest.raises(RuntimeError, match="epoch 1 had 4 batches, the first had 5"):
        loop.run_epoch(fixed_batches(), expected_steps=5)
    nan_batches = [(torch.full((2, 3), float("nan")), torch.tensor([0, 1]), 2)]
    loop = make_loop(net(), label="Toy", fix="lower lr")
    with pytest.raises(FloatingPointError, match="Toy: the training loss of epoch 1 is nan; lower lr"):
        loop.run_epoch(nan_batches)
    assert loop.epoch == 0 and loop.history == []

    class Meddling(training.CrossEntropy):
        def __call__(self, model, x, y, loss_fn):
            with torch.no_grad():
                model[0].bias.add_(1.0)
            return super().__call__(model, x, y, loss_fn)

    model = net()
    named = dict(model.named_parameters())
    loop = TrainingLoop.prepare(model, CFG, total_steps=8, objective=Meddling(), loss_fn=ce,
                                generator=torch.Generator(), params=[p for n, p in named.items() if n != "0.bias"],
                                frozen={"0.bias": named["0.bias"]})
    with pytest.raises(RuntimeError, match=r"frozen parameters \['0.bias'\] changed during epoch 1"):
        loop.run_epoch(fixed_batches())
    assert model[0].bias.requires_grad


# ----------------------------------------------------------------------------- save, read, restore
def test_checkpoint_restore_continues_bit_identically(tmp_path) -> None:
    path = tmp_path / "run.pt"
    identity = {"config_hash": "k" * 20, "note": "toy"}
    a = make_loop(net(), total_steps=8, seed=3)
    a.run_epoch(drawn_batches(a.generator))
    a.history.append({"epoch": 1, "value": 0.5})
    a.save(path, identity, finished=False)
    state = torch.load(path, weights_only=True)
    assert set(state) == LAYOUT | set(identity)
    assert (state["epoch"], state["finished"], state["rng_cuda"]) == (1, False, None)
    assert state["history"] == [{"epoch": 1, "value": 0.5}]
    a.run_epoch(drawn_batches(a.generator))
    after_two = state_of(a.model)
    rng_after_two = torch.get_rng_state()

    b = make_loop(net(seed=99), total_steps=8, seed=123)  # another start, other generators
    torch.manual_seed(4)
    read = read_checkpoint(path, "k" * 20)
    b.restore(read)
    assert (b.epoch, b.history) == (1, [{"epoch": 1, "value": 0.5}])
    assert torch.equal(b.generator.get_state(), state["generator"])
    assert torch.equal(torch.get_rng_state(), state["rng_cpu"])
    b.run_epoch(drawn_batches(b.generator))
    assert same_weights(b.model, a.model) and all(torch.equal(v, after_two[k]) for k, v in b.model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng_after_two)
    assert b.optimizer.state_dict()["state"].keys() == a.optimizer.state_dict()["state"].keys()

    assert read_checkpoint(tmp_path / "missing.pt", "k" * 20) is None and read_checkpoint(None, "k" * 20) is None
    with pytest.raises(RuntimeError, match="holds config kkkk"):
        read_checkpoint(path, "j" * 20)
    upgraded = read_checkpoint(path, "j" * 20, upgrade=lambda s: {**s, "config_hash": "j" * 20})
    assert upgraded["epoch"] == 1


def test_a_stateful_objective_is_checkpointed(tmp_path) -> None:
    @dataclasses.dataclass
    class Counting(training.CrossEntropy):
        calls: int = 0

        def __call__(self, model, x, y, loss_fn):
            self.calls += 1
            return super().__call__(model, x, y, loss_fn)

        def state_dict(self):
            return {"calls": self.calls}

        def load_state_dict(self, state):
            self.calls = state["calls"]

    a = TrainingLoop.prepare(net(), CFG, total_steps=8, objective=Counting(), loss_fn=ce, generator=torch.Generator())
    a.run_epoch(fixed_batches())
    a.save(tmp_path / "c.pt", {"config_hash": "c" * 20}, finished=False)
    b = TrainingLoop.prepare(net(), CFG, total_steps=8, objective=Counting(), loss_fn=ce, generator=torch.Generator())
    b.restore(read_checkpoint(tmp_path / "c.pt", "c" * 20))
    assert b.objective.calls == 4


def test_run_evaluates_records_and_saves_when_due(tmp_path, monkeypatch) -> None:
    saved = []
    real_save = TrainingLoop.save
    monkeypatch.setattr(TrainingLoop, "save", lambda self, path, identity, *, finished: (
        saved.append((self.epoch, finished)), real_save(self, path, identity, finished=finished)))
    cases = [(2, [(2, False), (4, False), (5, True)]), (0, [(5, True)]), (1, [(e, e == 5) for e in range(1, 6)])]
    for every, expected in cases:
        saved.clear()
        events = []
        loop = make_loop(net(), total_steps=20)
        loop.run(5, drawn_batches, checkpoint=tmp_path / f"r{every}.pt", identity={"config_hash": "r" * 20},
                 checkpoint_every=every, expected_steps=4,
                 record=lambda r: events.append(("record", r.epoch, r.steps)) or {"epoch": r.epoch},
                 after_epoch=lambda row: events.append(("after", row["epoch"])))
        assert saved == expected
        assert events == [e for k in range(1, 6) for e in (("record", k, 4), ("after", k))]
        assert loop.history == [{"epoch": k} for k in range(1, 6)] and loop.epoch == 5
        final = read_checkpoint(tmp_path / f"r{every}.pt", "r" * 20)
        assert final["finished"] and final["epoch"] == 5 and same_weights(loop.model, _loaded(final))
    saved.clear()
    loop.run(5, drawn_batches, record=lambda r: {}, checkpoint=tmp_path / "r1.pt")  # done: nothing runs
    assert saved == []


def _loaded(state) -> nn.Module:
    model = net()
    model.load_state_dict(state["model"])
    return model


# ----------------------------------------------------------------------------- both loops go through it
@pytest.fixture
def spy(monkeypatch):
    calls = {"prepare": 0, "restore": 0, "run_epoch": 0, "save": 0}
    for name in calls:
        real = getattr(TrainingLoop, name)
        if name == "prepare":
            real = real.__func__

            def wrapper(cls, *args, _real=real, **kwargs):
                calls["prepare"] += 1
                return _real(cls, *args, **kwargs)

            monkeypatch.setattr(TrainingLoop, name, classmethod(wrapper))
        else:
            def wrapper(self, *args, _real=real, _name=name, **kwargs):
                calls[_name] += 1
                return _real(self, *args, **kwargs)

            monkeypatch.setattr(TrainingLoop, name, wrapper)
    return calls


def test_train_runs_through_the_loop(spy, tmp_path) -> None:
    data = make_data()
    cfg = tiny_config(epochs=3, checkpoint_every=1)
    steps = -(-len(data.train_y) // cfg.batch_size)
    with pytest.raises(KeyboardInterrupt):
        training.train(None, data, cfg, checkpoint_dir=tmp_path, progress=False,
                       objective=CountingCE(crash_at=2 * steps + 1))
    assert spy == {"prepare": 1, "restore": 0, "run_epoch": 3, "save": 2}
    result = training.train(None, data, cfg, checkpoint_dir=tmp_path, progress=False)
    assert spy == {"prepare": 2, "restore": 1, "run_epoch": 4, "save": 3}
    assert result.resumed_from_epoch == 2 and [r.epoch for r in result.history] == [1, 2, 3]
    state = training.load_checkpoint(result.checkpoint_path)
    assert set(state) == LAYOUT | {"config_hash", "config", "data", "normalization"}
    assert training.train(None, data, cfg, checkpoint_dir=tmp_path, progress=False).from_cache
    assert spy["prepare"] == 2  # a finished checkpoint is loaded, no loop


def interrupt_after(monkeypatch, epochs_done: int):
    """Make TrainingLoop.run_epoch raise KeyboardInterrupt once ``epochs_done`` epochs are done;
    returns the real method (to put back)."""
    real = TrainingLoop.run_epoch

    def run_epoch(self, *args, **kwargs):
        if self.epoch == epochs_done:
            raise KeyboardInterrupt("simulated interruption")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TrainingLoop, "run_epoch", run_epoch)
    return real


def test_train_task_runs_through_the_loop(spy, tmp_path, monkeypatch) -> None:
    task = ToySequenceTask()
    cfg = T.TaskTrainConfig(epochs=3, lr=0.05, clip_norm=1.0, eval_every=2)
    real = interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        T.train_task(task, cfg, checkpoint_dir=tmp_path)
    assert spy == {"prepare": 1, "restore": 0, "run_epoch": 2, "save": 2}
    monkeypatch.setattr(TrainingLoop, "run_epoch", real)
    result = T.train_task(task, cfg, checkpoint_dir=tmp_path)
    assert (spy["prepare"], spy["restore"], spy["run_epoch"], spy["save"]) == (2, 1, 3, 3)
    evaluated = ["epoch", "train_loss", "lr", "token_accuracy", "eval_loss", "seconds"]
    assert [list(row) for row in result.history] == [["epoch", "train_loss", "lr", "seconds"], evaluated, evaluated]
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    state = training.load_checkpoint(result.checkpoint)
    assert set(state) == LAYOUT | {"config_hash", "config", "identity"}
    assert state["config_hash"] == result.config_hash and state["identity"] == task.identity()
    assert T.train_task(task, cfg, checkpoint_dir=tmp_path).loaded and spy["prepare"] == 2


def as_task_layout_of_before(state: dict) -> dict:
    """A shared-layout task checkpoint written as task checkpoints were before train_task shared the loop."""
    return {"format": state["format"], "config": state["config"], "identity": state["identity"],
            "epoch": state["epoch"], "model": state["model"], "optimizer": state["optimizer"],
            "scheduler": state["scheduler"], "rng": {"torch": state["rng_cpu"], "generator": state["generator"]},
            "history": state["history"]}


def test_task_checkpoints_in_the_earlier_layout_load_and_resume(tmp_path, monkeypatch) -> None:
    task = ToySequenceTask()
    cfg = T.TaskTrainConfig(epochs=4, lr=0.05, schedule="cosine", clip_norm=1.0)
    full = T.train_task(task, cfg, checkpoint_dir=tmp_path / "full")
    key = full.config_hash
    # a finished checkpoint in the earlier layout is loaded as it is
    old = tmp_path / "old"
    old.mkdir()
    torch.save(as_task_layout_of_before(torch.load(full.checkpoint, weights_only=True)), old / f"task-{key}.pt")
    loaded = T.train_task(task, cfg, checkpoint_dir=old)
    assert loaded.loaded and same_weights(loaded.model, full.model) and loaded.history == full.history
    # a partial one is resumed to the same weights as the uninterrupted run
    real = interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        T.train_task(task, cfg, checkpoint_dir=tmp_path / "cut")
    monkeypatch.setattr(TrainingLoop, "run_epoch", real)
    partial = tmp_path / "cut" / f"task-{key}.pt"
    torch.save(as_task_layout_of_before(torch.load(partial, weights_only=True)), partial)
    resumed = T.train_task(task, cfg, checkpoint_dir=tmp_path / "cut")
    assert not resumed.loaded and same_weights(resumed.model, full.model)
    assert [row["train_loss"] for row in resumed.history] == [row["train_loss"] for row in full.history]
    assert set(torch.load(partial, weights_only=True)) == LAYOUT | {"config_hash", "config", "identity"}
