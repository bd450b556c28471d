"""The training loop: learning, determinism, checkpoints (resume, cache, atomic writes),
the config hash, validation, and the objective extension point. Tiny synthetic data, CPU."""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import paramstress  # noqa: F401
from paramstress import models, training
from paramstress.data import ImageData
from paramstress.training import CrossEntropy, TrainConfig, config_hash, train

SIZE = 12
CLASSES = 4


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def make_data(n_train: int = 256, n_test: int = 128, seed: int = 0, checksum: str = "") -> ImageData:
    """Noisy 1×12×12 images; class k brightens the k-th band of 3 rows (learnable, not trivially).

    The bands are symmetric under horizontal flips, so flip augmentation keeps labels valid."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, CLASSES, (n,), generator=g)
        x = torch.randint(0, 140, (n, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
        band = SIZE // CLASSES
        for k in range(CLASSES):
            x[y == k, :, k * band:(k + 1) * band, :] += 60
        return x, y

    train_x, train_y = split(n_train)
    test_x, test_y = split(n_test)
    return ImageData(
        name="synthetic",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        classes=[str(k) for k in range(CLASSES)],
        mean=(0.35,),
        std=(0.25,),
        checksum=checksum,
    )


def tiny_config(**overrides) -> TrainConfig:
    values = dict(
        model="small_cnn", epochs=3, batch_size=32, lr=0.05, weight_decay=5e-4,
        augment=True, crop_padding=1, hflip=True, seed=0,
    )
    values.update(overrides)
    return TrainConfig(**values)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@dataclasses.dataclass
class CountingCE(CrossEntropy):
    """Plain cross-entropy that counts its steps and can simulate a crash at step ``crash_at``."""

    calls: int = 0
    crash_at: int | None = None

    def __call__(self, model, x, y, loss_fn):
        self.calls += 1
        if self.crash_at is not None and self.calls == self.crash_at:
            raise KeyboardInterrupt("simulated interruption")
        return super().__call__(model, x, y, loss_fn)


@training.register_objective("test_noisy_ce")
@dataclasses.dataclass
class NoisyCE(CountingCE):
    """Cross-entropy plus gradient noise from torch's global RNG (which a resume must restore)."""

    name = "test_noisy_ce"
    noise: float = 0.01

    def __call__(self, model, x, y, loss_fn):
        loss = super().__call__(model, x, y, loss_fn)
        with torch.no_grad():
            for p in model.parameters():
                p.grad.add_(torch.randn_like(p.grad), alpha=self.noise)
        return loss


@pytest.fixture(scope="module")
def data() -> ImageData:
    return make_data()


# ----------------------------------------------------------------------------- learning
def test_training_reduces_loss_and_learns(data: ImageData) -> None:
    result = train(None, data, tiny_config(epochs=4), progress=False)
    losses = [record.train_loss for record in result.history]
    assert len(result.history) == 4 and [r.epoch for r in result.history] == [1, 2, 3, 4]
    assert losses[-1] < 0.5 * losses[0]
    assert result.final_test_accuracy == result.history[-1].test_accuracy
    assert result.final_test_accuracy > 0.9  # chance is 0.25
    assert not result.model.training
    assert result.epochs_trained == 4 and not result.from_cache and result.checkpoint_path is None


@pytest.mark.parametrize("schedule,warmup", [("onecycle", 0.25), ("cosine", 0.0), ("cosine", 0.25)])
def test_schedule_ends_where_it_should(data: ImageData, schedule: str, warmup: float) -> None:
    cfg = tiny_config(epochs=2, schedule=schedule, warmup_fraction=warmup)
    result = train(None, data, cfg, progress=False)
    total = 2 * (-(-len(data.train_y) // cfg.batch_size))
    if schedule == "onecycle":  # OneCycleLR ends at lr / div_factor / final_div_factor
        expected = cfg.lr / 25 / 1e4
    else:  # linear warm-up, then cosine to 0 one step after the last
        w = round(warmup * total)
        expected = cfg.lr * 0.5 * (1 + math.cos(math.pi * (total - 1 - w) / (total - w)))
    assert result.history[-1].lr == pytest.approx(expected, rel=1e-6)
    assert result.history[0].lr > result.history[-1].lr


def test_given_model_is_trained_in_place(data: ImageData) -> None:
    model = models.build_model("small_cnn", CLASSES, 1, SIZE, seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(model, data, tiny_config(epochs=1), progress=False)
    assert result.model is model
    assert not torch.equal(model.state_dict()["0.weight"], before["0.weight"])


# ----------------------------------------------------------------------------- determinism
def test_same_seed_gives_bit_identical_weights(data: ImageData) -> None:
    cfg = tiny_config(epochs=2)
    a = train(None, data, cfg, progress=False)
    b = train(None, data, cfg, progress=False)
    c = train(None, data, dataclasses.replace(cfg, seed=1), progress=False)
    assert same_weights(a.model, b.model)
    assert [r.train_loss for r in a.history] == [r.train_loss for r in b.history]
    assert not same_weights(a.model, c.model)


def test_callers_global_rng_is_untouched(data: ImageData) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(None, data, tiny_config(epochs=1), progress=False)
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize(
    "every,crash_epoch,saved_epoch,objective",
    [(1, 2, 1, CountingCE), (2, 3, 2, CountingCE), (1, 3, 2, NoisyCE)],
)
def test_resume_from_partial_checkpoint_is_bit_identical(
    data: ImageData, tmp_path: Path, every: int, crash_epoch: int, saved_epoch: int, objective: type
) -> None:
    cfg = tiny_config(epochs=3, checkpoint_every=every, objective=objective.name)
    steps = -(-len(data.train_y) // cfg.batch_size)
    reference = train(None, data, cfg, checkpoint_dir=tmp_path / "a", progress=False)

    crashing = objective(crash_at=(crash_epoch - 1) * steps + 3)  # mid-way through crash_epoch
    with pytest.raises(KeyboardInterrupt):
        train(None, data, cfg, checkpoint_dir=tmp_path / "b", progress=False, objective=crashing)
    path = tmp_path / "b" / f"{config_hash(cfg, data)}.pt"
    state = training.load_checkpoint(path)
    assert state["epoch"] == saved_epoch and not state["finished"]
    assert os.listdir(tmp_path / "b") == [path.name]

    counter = objective()
    resumed = train(None, data, cfg, checkpoint_dir=tmp_path / "b", progress=False, objective=counter)
    assert resumed.resumed_from_epoch == saved_epoch
    assert resumed.epochs_trained == 3 - saved_epoch
    assert counter.calls == (3 - saved_epoch) * steps
    assert same_weights(resumed.model, reference.model)
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in reference.history]
    assert training.load_checkpoint(path)["finished"]


def test_finished_checkpoint_is_reused_without_training(
    data: ImageData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(epochs=2)
    first = train(None, data, cfg, checkpoint_dir=tmp_path, progress=False)
    assert first.checkpoint_path == tmp_path / f"{first.config_hash}.pt"

    def no_step(self, *args, **kwargs):
        raise AssertionError("optimizer.step() called although a finished checkpoint exists")

    monkeypatch.setattr(torch.optim.SGD, "step", no_step)
    counter = CountingCE()
    other_init = models.build_model("small_cnn", CLASSES, 1, SIZE, seed=99)
    again = train(other_init, data, cfg, checkpoint_dir=tmp_path, progress=False, objective=counter)
    assert counter.calls == 0
    assert again.from_cache and again.epochs_trained == 0
    assert same_weights(again.model, first.model)
    assert again.history == first.history
    assert not again.model.training


def test_different_config_does_not_reuse_checkpoint(data: ImageData, tmp_path: Path) -> None:
    train(None, data, tiny_config(epochs=1), checkpoint_dir=tmp_path, progress=False)
    counter = CountingCE()
    result = train(None, data, tiny_config(epochs=1, lr=0.02), checkpoint_dir=tmp_path, progress=False, objective=counter)
    assert not result.from_cache and counter.calls > 0
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_atomic_write_leaves_no_partial_file(data: ImageData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = torch.save

    def failing_save(obj, handle, *args, **kwargs):
        handle.write(b"PARTIAL")  # half a checkpoint reaches the disk, then the write fails
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        train(None, data, tiny_config(epochs=1), checkpoint_dir=tmp_path, progress=False)
    assert os.listdir(tmp_path) == []

    # Overwriting an existing file: the old content survives a failed write.
    target = tmp_path / "kept.pt"
    monkeypatch.setattr(torch, "save", real_save)
    training.atomic_save({"format": training.CHECKPOINT_FORMAT, "value": 1}, target)
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        training.atomic_save({"format": training.CHECKPOINT_FORMAT, "value": 2}, target)
    assert os.listdir(tmp_path) == ["kept.pt"]
    assert training.load_checkpoint(target)["value"] == 1


def test_default_checkpoint_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(training.CHECKPOINT_DIR_ENV, str(tmp_path / "ckpt"))
    assert training.default_checkpoint_dir() == tmp_path / "ckpt"
    monkeypatch.delenv(training.CHECKPOINT_DIR_ENV)
    assert training.default_checkpoint_dir().name == "checkpoints"
    assert training.default_checkpoint_dir() != tmp_path / "ckpt"


def test_unreadable_checkpoint_names_the_fix(data: ImageData, tmp_path: Path) -> None:
    cfg = tiny_config(epochs=1)
    (tmp_path / f"{config_hash(cfg, data)}.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="delete it"):
        train(None, data, cfg, checkpoint_dir=tmp_path, progress=False)


# ----------------------------------------------------------------------------- config hash
ALTERNATIVES = {
    "model": "resnet18_cifar",
    "epochs": 31,
    "batch_size": 128,
    "lr": 0.2,
    "momentum": 0.8,
    "nesterov": False,
    "weight_decay": 1e-4,
    "schedule": "cosine",
    "warmup_fraction": 0.1,
    "augment": False,
    "crop_padding": 2,
    "hflip": False,
    "cutout": 8,
    "label_smoothing": 0.1,
    "seed": 1,
    "objective": "test_sam_like",
    "objective_params": {"rho": 0.0},
    "train_subset": 100,
    "test_subset": 50,
    "subset_seed": 1,
    "checkpoint_every": 2,
    "eval_batch_size": 512,
    "amp": False,
    "channels_last": False,
    "optimizer": "adam",
    "keep_epochs": (1,),
    "frozen": ("conv1",),
    "init_from": {"config_hash": "0123456789abcdef0123", "epoch": 1},
}


def test_config_hash_changes_with_every_field(data: ImageData) -> None:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(ALTERNATIVES) == fields, "give every TrainConfig field an alternative value here"
    base = TrainConfig()
    hashes = {config_hash(base, data)}
    for name, value in ALTERNATIVES.items():
        if name == "objective_params":
            # cross_entropy takes no parameters: vary them on an objective that has one
            reference = dataclasses.replace(base, objective="test_sam_like")
            changed = dataclasses.replace(reference, objective_params=value)
            assert config_hash(changed, data) != config_hash(reference, data)
        else:
            changed = dataclasses.replace(base, **{name: value})
            assert getattr(changed, name) != getattr(base, name)
        key = config_hash(changed, data)
        assert key not in hashes, f"changing {name} did not change the hash"
        hashes.add(key)


def test_config_hash_is_stable_and_tracks_the_data() -> None:
    cfg = TrainConfig(model="small_cnn")
    first = make_data(checksum="abc")
    key = config_hash(cfg, first)
    assert len(key) == 20 and int(key, 16) >= 0
    assert config_hash(TrainConfig(model="small_cnn"), make_data(checksum="abc")) == key
    assert config_hash(cfg, dataclasses.replace(first, checksum="abd")) != key
    assert config_hash(cfg, dataclasses.replace(first, name="other")) != key
    assert config_hash(cfg, first.subset(train=100)) != key
    assert config_hash(cfg, first.subset(train=100, seed=0)) != config_hash(cfg, first.subset(train=100, seed=1))
    assert config_hash(cfg, first.subset(test=64)) != key
    # Without a published checksum the image content identifies the data.
    assert config_hash(cfg, make_data(seed=0)) == config_hash(cfg, make_data(seed=0))
    assert config_hash(cfg, make_data(seed=0)) != config_hash(cfg, make_data(seed=1))


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"schedule": "step"}, "onecycle, cosine"),
        ({"objective": "nope"}, "cross_entropy"),
        ({"objective_params": {"rho": 0.1}}, "objective_params"),
        ({"model": "vgg16"}, "resnet34_cifar"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": 0.0}, "nesterov"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"warmup_fraction": 0.0}, "warmup_fraction"),
        ({"train_subset": 0}, "train_subset"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"crop_padding": -1}, "crop_padding"),
        ({"cutout": -1}, "cutout"),
        ({"cutout": 2.0}, "cutout"),
        ({"cutout": 4, "augment": False}, "augment=True"),
        ({"augment": "yes"}, "augment"),
    ],
)
def test_bad_config_raises(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_config(**overrides)


def test_train_validates_before_compute(data: ImageData, tmp_path: Path) -> None:
    counter = CountingCE()
    cfg = tiny_config()
    broken = tiny_config()
    object.__setattr__(broken, "epochs", 0)  # bypass the frozen dataclass's own check
    cases = [
        (dict(model=None, cfg=broken), "epochs"),
        (dict(model=models.build_model("resnet18_cifar", CLASSES, 1, SIZE), cfg=cfg), "build_model"),
        (dict(model=models.build_model("small_cnn", CLASSES + 1, 1, SIZE), cfg=cfg), "small_cnn"),
        (dict(model=None, cfg=tiny_config(epochs=1, batch_size=256)), "warm-up"),  # one step: no warm-up
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            train(kwargs["model"], data, kwargs["cfg"], checkpoint_dir=tmp_path, progress=False, objective=counter)
    with pytest.raises(ValueError, match="cfg.objective"):
        train(None, data, tiny_config(objective="test_sam_like"), checkpoint_dir=tmp_path, progress=False, objective=counter)
    bad_data = dataclasses.replace(data, train_x=data.train_x.float())
    with pytest.raises(ValueError, match="uint8"):
        train(None, bad_data, cfg, checkpoint_dir=tmp_path, progress=False, objective=counter)
    assert counter.calls == 0
    assert os.listdir(tmp_path) == []


def test_subsets_from_config(data: ImageData) -> None:
    counter = CountingCE()
    result = train(None, data, tiny_config(epochs=1, train_subset=64, test_subset=32, schedule="cosine"), progress=False, objective=counter)
    assert counter.calls == 2  # 64 images, batches of 32
    assert result.final_test_accuracy * 32 == round(result.final_test_accuracy * 32)


# ----------------------------------------------------------------------------- helpers
def test_augment_batch_crops_and_flips() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (64, 2, 6, 5), generator=g, dtype=torch.uint8)
    assert torch.equal(training.augment_batch(x, 0, False, g), x)

    flipped = training.augment_batch(x, 0, True, g)
    is_flip = [torch.equal(o, i.flip(2)) for o, i in zip(flipped, x)]
    is_same = [torch.equal(o, i) for o, i in zip(flipped, x)]
    assert all(f or s for f, s in zip(is_flip, is_same)) and any(is_flip) and any(is_same)

    pad = 2
    cropped = training.augment_batch(x, pad, False, g)
    assert cropped.shape == x.shape and cropped.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    offsets = []
    for out, src in zip(cropped, padded):
        windows = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if torch.equal(out, src[:, dy:dy + 6, dx:dx + 5])]
        assert windows, "each output must be a window of the padded image"
        offsets.append(windows[0])
    assert len(set(offsets)) > 5  # offsets vary per image

    again = training.augment_batch(x, pad, True, torch.Generator().manual_seed(7))
    assert torch.equal(again, training.augment_batch(x, pad, True, torch.Generator().manual_seed(7)))


def test_cutout_batch_masks_one_clipped_square_per_image() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, 8, 7, generator=g) + 5.0  # no zeros of its own
    assert training.cutout_batch(x, 0, g) is x
    out = training.cutout_batch(x, 4, g)
    assert out.shape == x.shape and out.dtype == x.dtype and not torch.equal(out, x)
    assert torch.equal(x, torch.randn(400, 3, 8, 7, generator=torch.Generator().manual_seed(0)) + 5.0)  # input intact
    zero = out == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # the same pixels in every channel
    kept = ~zero
    assert torch.equal(out[kept], x[kept])
    areas, boxes = [], set()
    for mask in zero[:, 0]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert len(rows) and len(cols)
        # one axis-aligned rectangle of side <= 4: every pixel inside its bounding box is masked
        assert mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
        assert int(mask.sum()) == len(rows) * len(cols) and len(rows) <= 4 and len(cols) <= 4
        areas.append(int(mask.sum()))
        boxes.add((int(rows[0]), int(cols[0]), len(rows), len(cols)))
    assert max(areas) == 16 and min(areas) < 16  # whole squares inside, clipped ones at the border
    assert len(boxes) > 20  # the position varies per image
    again = training.cutout_batch(x, 4, torch.Generator().manual_seed(3))
    assert torch.equal(again, training.cutout_batch(x, 4, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="cutout"):
        training.cutout_batch(x, -1)


def test_cutout_changes_training_and_only_when_set(data: ImageData) -> None:
    """cutout=0 leaves the run (and its cache key) as before the field existed; cutout>0 trains
    on other images, reproducibly."""
    plain = training.train(None, data, tiny_config(epochs=1), device="cpu", progress=False)
    cut = training.train(None, data, tiny_config(epochs=1, cutout=3), device="cpu", progress=False)
    cut_again = training.train(None, data, tiny_config(epochs=1, cutout=3), device="cpu", progress=False)
    assert not same_weights(plain.model, cut.model)
    assert same_weights(cut.model, cut_again.model)
    assert plain.config_hash == training.config_hash(tiny_config(epochs=1), data) != cut.config_hash


def test_batch_loss_autocast_path_returns_float32() -> None:
    """The CUDA precision path (autocast forward, float32 criterion), exercised with CPU bf16."""
    model = nn.Linear(4, 3)
    seen: list[torch.dtype] = []
    model.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    mixed = training.BatchLoss(nn.CrossEntropyLoss(), "cpu", torch.bfloat16)
    loss = mixed(model, x, y)
    assert seen == [torch.bfloat16] and loss.dtype == torch.float32
    loss.backward()
    assert model.weight.grad is not None and model.weight.grad.dtype == torch.float32
    plain = training.BatchLoss(nn.CrossEntropyLoss(), "cpu", None)
    assert plain(model, x, y).dtype == torch.float32 and seen[-1] == torch.float32
    assert torch.allclose(plain(model, x, y), nn.functional.cross_entropy(model(x), y))


class _ReadsLabelFromPixel(nn.Module):
    """Predicts the class written in pixel (0, 0): a model with a known accuracy."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not self.training and not torch.is_grad_enabled()
        return nn.functional.one_hot(x[:, 0, 0, 0].long(), self.classes).float() + self.dummy


def test_evaluate_accuracy_is_exact_and_restores_mode() -> None:
    y = torch.arange(10) % 3
    x = torch.zeros(10, 1, 2, 2, dtype=torch.uint8)
    x[:, 0, 0, 0] = y.to(torch.uint8)
    x[:3, 0, 0, 0] = (y[:3] + 1).remainder(3).to(torch.uint8)  # three wrong predictions
    model = _ReadsLabelFromPixel(3).train()
    accuracy = training.evaluate_accuracy(model, x, y, lambda t: t.float(), batch_size=4)
    assert accuracy == pytest.approx(0.7)
    assert model.training


# ----------------------------------------------------------------------------- extension point
@training.register_objective("test_sam_like")
@dataclasses.dataclass
class SamLike:
    """A two-pass objective: ascend to w + rho·g/‖g‖, take the gradient there, restore w."""

    name = "test_sam_like"
    rho: float = 0.05
    passes: int = 0

    def __call__(self, model, x, y, loss_fn):
        params = [p for p in model.parameters() if p.requires_grad]
        loss = loss_fn(model, x, y)
        loss.backward()
        self.passes += 1
        with torch.no_grad():
            norm = torch.sqrt(sum((p.grad ** 2).sum() for p in params)) + 1e-12
            shifts = [self.rho * p.grad / norm for p in params]
            for p, e in zip(params, shifts):
                p.add_(e)
        model.zero_grad(set_to_none=True)
        loss_fn(model, x, y).backward()
        self.passes += 1
        with torch.no_grad():
            for p, e in zip(params, shifts):
                p.sub_(e)
        return loss.detach()


@training.register_objective("test_grad_norm")
@dataclasses.dataclass
class GradNorm:
    """A double-backward regulariser: L + lam·‖∇L‖₂ (Sun et al. 2021, Eq. 16, p = 2)."""

    name = "test_grad_norm"
    lam: float = 0.1

    def __call__(self, model, x, y, loss_fn):
        params = [p for p in model.parameters() if p.requires_grad]
        loss = loss_fn(model, x, y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        penalty = torch.sqrt(sum((g ** 2).sum() for g in grads))
        (loss + self.lam * penalty).backward()
        return loss.detach()


def test_two_pass_and_double_backward_objectives_plug_in(data: ImageData) -> None:
    base = tiny_config(epochs=2)
    plain = train(None, data, base, progress=False)
    zero_rho = train(None, data, dataclasses.replace(base, objective="test_sam_like", objective_params={"rho": 0.0}), progress=False)
    # rho = 0 gives plain SGD again (parameters only: the second forward pass also
    # updates the batch-norm running statistics, as SAM's second pass does)
    for a, b in zip(plain.model.parameters(), zero_rho.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)

    sam = SamLike(rho=0.05)
    sam_cfg = dataclasses.replace(base, objective="test_sam_like", objective_params={"rho": 0.05})
    sam_result = train(None, data, sam_cfg, progress=False, objective=sam)
    steps = -(-len(data.train_y) // base.batch_size)
    assert sam.passes == 2 * 2 * steps
    assert not same_weights(sam_result.model, plain.model)
    assert sam_result.final_test_accuracy > 0.8

    gn_cfg = dataclasses.replace(base, objective="test_grad_norm", objective_params={"lam": 0.1})
    gn_result = train(None, data, gn_cfg, progress=False)
    assert not same_weights(gn_result.model, plain.model)
    assert gn_result.history[-1].train_loss < gn_result.history[0].train_loss
    assert set(training.objective_names()) >= {"cross_entropy", "test_sam_like", "test_grad_norm"}


def test_objective_registry_rejects_clashes() -> None:
    with pytest.raises(ValueError, match="already registered"):
        @training.register_objective("cross_entropy")
        @dataclasses.dataclass
        class Impostor:
            name = "cross_entropy"

            def __call__(self, model, x, y, loss_fn):
                raise NotImplementedError
    assert isinstance(training.make_objective("cross_entropy"), CrossEntropy)


# ----------------------------------------------------------------------------- Adam, constant schedule, old hashes
# config_hash values computed with the code before optimizer/keep_epochs/frozen/init_from existed:
# cached checkpoints of existing configs must keep their keys.
HASHES_BEFORE_NEW_FIELDS = {
    "default": ("599154d82a58ba635779", {}),
    "small": ("33527b1025bc8e69664e", {"model": "small_cnn"}),
    "small_cos": ("0c171da1022734857cf8",
                  {"model": "small_cnn", "schedule": "cosine", "warmup_fraction": 0.0, "epochs": 3, "lr": 0.05}),
}


@pytest.mark.parametrize("label", sorted(HASHES_BEFORE_NEW_FIELDS))
def test_existing_config_hashes_are_unchanged(label: str) -> None:
    expected, fields = HASHES_BEFORE_NEW_FIELDS[label]
    assert config_hash(TrainConfig(**fields), make_data(checksum="abc")) == expected
    # the same config with the new fields spelled out at their defaults
    explicit = TrainConfig(**fields, optimizer="sgd", keep_epochs=[], frozen=[], init_from=None)
    assert config_hash(explicit, make_data(checksum="abc")) == expected


def test_a_changed_initialisation_changes_only_that_models_key(monkeypatch: pytest.MonkeyPatch) -> None:
    d = make_data(checksum="abc")
    squeeze = TrainConfig(model="squeezenet1_1")
    before = config_hash(squeeze, d)
    monkeypatch.setitem(models.INIT_REVISIONS, "squeezenet1_1", "final_bias=0.0")
    assert config_hash(squeeze, d) != before
    monkeypatch.delitem(models.INIT_REVISIONS, "squeezenet1_1")
    plain = config_hash(squeeze, d)
    assert plain not in (before,)
    assert config_hash(TrainConfig(), d) == HASHES_BEFORE_NEW_FIELDS["default"][0]


def test_adam_ignores_momentum_and_constant_ignores_warmup() -> None:
    d = make_data(checksum="abc")
    adam = TrainConfig(optimizer="adam", momentum=0.0, nesterov=True)  # no complaint: Adam has no momentum
    assert config_hash(adam, d) == config_hash(TrainConfig(optimizer="adam", momentum=0.5, nesterov=False), d)
    assert config_hash(adam, d) != config_hash(TrainConfig(), d)
    const = TrainConfig(schedule="constant", warmup_fraction=0.0)
    assert config_hash(const, d) == config_hash(TrainConfig(schedule="constant", warmup_fraction=0.3), d)
    with pytest.raises(ValueError, match="sgd, adam"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="nesterov"):  # SGD still checks
        TrainConfig(optimizer="sgd", momentum=0.0, nesterov=True)


def test_adam_constant_trains_with_torch_adam(data: ImageData, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[torch.optim.Optimizer] = []
    real_init = torch.optim.Adam.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(torch.optim.Adam, "__init__", spy)
    cfg = tiny_config(epochs=2, optimizer="adam", lr=1e-3, weight_decay=1e-4, schedule="constant",
                      augment=False, batch_size=32)
    result = train(None, data, cfg, progress=False)
    assert len(built) == 1
    group = built[0].param_groups[0]
    assert group["weight_decay"] == 1e-4 and group["betas"] == (0.9, 0.999) and not group["decoupled_weight_decay"]
    assert [r.lr for r in result.history] == [1e-3, 1e-3]
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.final_test_accuracy > 0.5  # chance is 0.25


def test_seeds_differ_in_initialisation_and_data_order(data: ImageData) -> None:
    @dataclasses.dataclass
    class FirstBatch(CrossEntropy):
        batches: list = dataclasses.field(default_factory=list)

        def __call__(self, model, x, y, loss_fn):
            if not self.batches:
                self.batches.append((x.clone(), {k: v.clone() for k, v in model.state_dict().items()}))
            return super().__call__(model, x, y, loss_fn)

    seen = []
    for seed in (0, 1, 0):
        recorder = FirstBatch()
        train(None, data, tiny_config(epochs=1, seed=seed, augment=False), progress=False, objective=recorder)
        seen.append(recorder.batches[0])
    (x0, w0), (x1, w1), (x0_again, w0_again) = seen
    assert not torch.equal(x0, x1), "two seeds saw the same first batch"
    assert not torch.equal(w0["0.weight"], w1["0.weight"]), "two seeds started from the same weights"
    assert torch.equal(x0, x0_again) and all(torch.equal(w0[k], w0_again[k]) for k in w0)


# ----------------------------------------------------------------------------- frozen layers (selective backprop)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_frozen_layers_are_bit_identical_while_others_move(data: ImageData, optimizer: str) -> None:
    """Adam (or SGD momentum) with weight decay: a zeroed gradient alone would still move weights."""
    frozen = ("0", "9.bias")  # the first convolution and the classifier's bias
    model = models.build_model("small_cnn", CLASSES, 1, SIZE, seed=3)
    before = {k: v.clone() for k, v in model.named_parameters()}
    cfg = tiny_config(epochs=2, optimizer=optimizer, lr=1e-2 if optimizer == "adam" else 0.05,
                      weight_decay=0.1, frozen=frozen)
    result = train(model, data, cfg, progress=False)
    after = dict(result.model.named_parameters())
    assert training.frozen_parameter_names(model, frozen) == ["0.weight", "9.bias"]
    for name in before:
        if name in ("0.weight", "9.bias"):
            assert torch.equal(after[name], before[name]), f"frozen {name} moved"
        else:
            assert not torch.equal(after[name], before[name]), f"{name} did not train"
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    # the control: the same config without frozen layers moves them
    free = train(models.build_model("small_cnn", CLASSES, 1, SIZE, seed=3), data,
                 dataclasses.replace(cfg, frozen=()), progress=False)
    assert not torch.equal(dict(free.model.named_parameters())["0.weight"], before["0.weight"])


def test_frozen_survives_a_two_pass_objective(data: ImageData) -> None:
    """A SAM-like objective adds and subtracts a perturbation: (w + e) - e is not w in floats."""
    model = models.build_model("small_cnn", CLASSES, 1, SIZE, seed=0)
    before = model.state_dict()["0.weight"].clone()
    cfg = tiny_config(epochs=1, objective="test_sam_like", objective_params={"rho": 0.5}, frozen=("0",))
    train(model, data, cfg, progress=False)
    assert torch.equal(model.state_dict()["0.weight"], before)


@training.register_objective("test_rogue")
@dataclasses.dataclass
class Rogue(CrossEntropy):
    """Writes to every parameter, requires_grad or not (what an objective must not do)."""

    name = "test_rogue"

    def __call__(self, model, x, y, loss_fn):
        loss = super().__call__(model, x, y, loss_fn)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.999)
        return loss


def test_objective_that_moves_frozen_weights_is_caught(data: ImageData, tmp_path: Path) -> None:
    model = models.build_model("small_cnn", CLASSES, 1, SIZE, seed=0)
    with pytest.raises(RuntimeError, match="frozen parameters"):
        train(model, data, tiny_config(epochs=1, objective="test_rogue", frozen=("0",)),
              checkpoint_dir=tmp_path, progress=False)
    assert os.listdir(tmp_path) == []  # no checkpoint of the broken epoch
    assert model.get_parameter("0.weight").requires_grad


def test_frozen_prefixes_are_module_paths() -> None:
    model = nn.Sequential()
    for i in range(11):
        model.add_module(f"conv{i}", nn.Conv2d(1, 1, 1))
    assert training.frozen_parameter_names(model, ["conv1"]) == ["conv1.weight", "conv1.bias"]
    assert training.frozen_parameter_names(model, ["conv10.bias", "conv1.bias"]) == ["conv1.bias", "conv10.bias"]
    with pytest.raises(ValueError, match="matches no parameter"):
        training.frozen_parameter_names(model, ["conv"])


def test_bad_frozen_fails_before_compute(data: ImageData, tmp_path: Path) -> None:
    counter = CountingCE()
    with pytest.raises(ValueError, match="matches no parameter"):
        train(None, data, tiny_config(frozen=("conv1",)), checkpoint_dir=tmp_path, progress=False, objective=counter)
    with pytest.raises(ValueError, match="every parameter"):
        train(None, data, tiny_config(frozen=("0", "1", "4", "5", "9")), progress=False, objective=counter)
    with pytest.raises(ValueError, match="frozen"):
        tiny_config(frozen=("",))
    assert counter.calls == 0 and os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- snapshots
def test_snapshots_are_written_and_loadable(data: ImageData, tmp_path: Path) -> None:
    cfg = tiny_config(epochs=3, keep_epochs=[2, 0, 2], checkpoint_every=3)
    assert cfg.keep_epochs == (0, 2)
    initial = models.build_model("small_cnn", CLASSES, 1, SIZE, seed=cfg.seed)
    result = train(None, data, cfg, checkpoint_dir=tmp_path, progress=False)
    key = result.config_hash
    assert result.snapshots == {0: tmp_path / f"{key}.epoch0.pt", 2: tmp_path / f"{key}.epoch2.pt"}
    assert sorted(os.listdir(tmp_path)) == sorted([f"{key}.pt", f"{key}.epoch0.pt", f"{key}.epoch2.pt"])
    assert training.snapshot_path(cfg, data, 2, checkpoint_dir=tmp_path) == result.snapshots[2]

    epoch0 = training.load_snapshot(cfg, data, 0, checkpoint_dir=tmp_path)
    assert not epoch0.training and same_weights(epoch0, initial)
    epoch2 = training.load_snapshot(cfg, data, 2, checkpoint_dir=tmp_path)
    state = training.load_checkpoint(result.snapshots[2])
    assert state["epoch"] == 2 and state["test_accuracy"] == result.history[1].test_accuracy
    assert training.evaluate_accuracy(epoch2, data.test_x, data.test_y, data.normalize) == state["test_accuracy"]
    assert not same_weights(epoch2, result.model) and not same_weights(epoch2, epoch0)

    with pytest.raises(ValueError, match="keep_epochs"):
        training.load_snapshot(cfg, data, 1, checkpoint_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint_dir"):
        training.load_snapshot(cfg, data, 2, checkpoint_dir=tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="checkpoint_dir"):
        train(None, data, cfg, progress=False)  # snapshots need a folder
    with pytest.raises(ValueError, match="outside"):
        tiny_config(epochs=3, keep_epochs=(4,))

    # a finished run is reused with its snapshots; a lost snapshot is reported with the fix
    again = train(None, data, cfg, checkpoint_dir=tmp_path, progress=False)
    assert again.from_cache and again.snapshots == result.snapshots
    result.snapshots[0].unlink()
    with pytest.raises(FileNotFoundError, match="delete"):
        train(None, data, cfg, checkpoint_dir=tmp_path, progress=False)


def test_resumed_run_with_snapshots_equals_uninterrupted(data: ImageData, tmp_path: Path) -> None:
    cfg = tiny_config(epochs=4, keep_epochs=(0, 1, 3, 4), checkpoint_every=2, optimizer="adam", lr=1e-3,
                      schedule="constant")
    steps = -(-len(data.train_y) // cfg.batch_size)
    reference = train(None, data, cfg, checkpoint_dir=tmp_path / "a", progress=False)

    crashing = CountingCE(crash_at=3 * steps + 2)  # during epoch 4, after the epoch-2 checkpoint and snapshot 3
    with pytest.raises(KeyboardInterrupt):
        train(None, data, cfg, checkpoint_dir=tmp_path / "b", progress=False, objective=crashing)
    key = config_hash(cfg, data)
    assert training.load_checkpoint(tmp_path / "b" / f"{key}.pt")["epoch"] == 2
    assert sorted(os.listdir(tmp_path / "b")) == sorted(
        [f"{key}.pt"] + [f"{key}.epoch{e}.pt" for e in (0, 1, 3)])
    early = {e: (tmp_path / "b" / f"{key}.epoch{e}.pt").stat().st_mtime_ns for e in (0, 1)}

    resumed = train(None, data, cfg, checkpoint_dir=tmp_path / "b", progress=False)
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_trained == 2
    assert same_weights(resumed.model, reference.model)
    assert set(resumed.snapshots) == {0, 1, 3, 4}
    assert {e: resumed.snapshots[e].stat().st_mtime_ns for e in (0, 1)} == early  # kept, not rewritten
    for epoch in cfg.keep_epochs:
        a = training.load_snapshot(cfg, data, epoch, checkpoint_dir=tmp_path / "a")
        b = training.load_snapshot(cfg, data, epoch, checkpoint_dir=tmp_path / "b")
        assert same_weights(a, b), f"snapshot {epoch} differs after resume"


# ----------------------------------------------------------------------------- init_from (selective backprop chains)
def test_init_from_starts_at_the_snapshot(data: ImageData, tmp_path: Path) -> None:
    parent_cfg = tiny_config(epochs=2, keep_epochs=(1,), optimizer="adam", lr=1e-3, schedule="constant")
    parent = train(None, data, parent_cfg, checkpoint_dir=tmp_path, progress=False)
    start = {"config_hash": parent.config_hash, "epoch": 1}
    child_cfg = dataclasses.replace(parent_cfg, epochs=3, keep_epochs=(1, 3), init_from=start, frozen=("0",))
    child = train(None, data, child_cfg, checkpoint_dir=tmp_path, progress=False)
    assert [r.epoch for r in child.history] == [2, 3]
    assert child.epochs_trained == 2 and child.resumed_from_epoch == 1
    at_start = training.load_snapshot(child_cfg, data, 1, checkpoint_dir=tmp_path)
    assert same_weights(at_start, training.load_snapshot(parent_cfg, data, 1, checkpoint_dir=tmp_path))
    end = training.load_snapshot(child_cfg, data, 3, checkpoint_dir=tmp_path)
    assert torch.equal(end.get_parameter("0.weight"), at_start.get_parameter("0.weight"))
    assert not torch.equal(end.get_parameter("4.weight"), at_start.get_parameter("4.weight"))

    # the control (no frozen layers) and a later start are different cache keys
    control = dataclasses.replace(child_cfg, frozen=())
    later = dataclasses.replace(child_cfg, init_from={**start, "epoch": 2}, keep_epochs=(3,))
    assert len({config_hash(c, data) for c in (child_cfg, control, later)}) == 3
    # a given model's weights are replaced by the snapshot's: same result as model=None
    other = models.build_model("small_cnn", CLASSES, 1, SIZE, seed=42)
    given = train(other, data, control, checkpoint_dir=tmp_path, progress=False)
    assert given.model is other
    (tmp_path / f"{given.config_hash}.pt").unlink()
    built = train(None, data, control, checkpoint_dir=tmp_path, progress=False)
    assert not built.from_cache and same_weights(built.model, other)
    assert not same_weights(built.model, child.model)  # frozen layers make a difference
    with pytest.raises(FileNotFoundError, match="keep_epochs including 2"):
        train(None, data, later, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="epochs > 1"):
        dataclasses.replace(child_cfg, epochs=1, keep_epochs=())
    with pytest.raises(ValueError, match="config_hash"):
        tiny_config(init_from={"hash": "x", "epoch": 1})
    with pytest.raises(ValueError, match="checkpoint_dir"):
        train(None, data, control, progress=False)


def test_pretrained_result_evaluates_without_training() -> None:
    from paramstress import models
    from paramstress.training import pretrained_result

    data = make_data()
    model = models.build_model("small_cnn", CLASSES, 1, SIZE, seed=0).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = pretrained_result(model, data, name="small_cnn")
    assert result.config is None and result.history == [] and result.from_cache and result.epochs_trained == 0
    assert result.config_hash == "pretrained:small_cnn" and not result.model.training
    assert all(torch.equal(before[k], v) for k, v in result.model.state_dict().items())
    assert result.final_test_accuracy == pytest.approx(
        training.evaluate_accuracy(model, data.test_x, data.test_y, data.normalize))
    empty = dataclasses.replace(data, test_x=data.test_x[:0], test_y=data.test_y[:0])
    with pytest.raises(ValueError, match="no test images"):
        pretrained_result(model, empty, name="small_cnn")


def test_gradient_images_choices() -> None:
    data = make_data()
    x, y = data.gradient_images("train-subset", 10, seed=3)
    sub = data.subset(train=10, seed=3)
    assert torch.equal(x, sub.train_x) and torch.equal(y, sub.train_y)
    assert data.gradient_images("train")[1] is data.train_y and data.gradient_images("test")[1] is data.test_y
    tx, ty = data.gradient_images("test-subset", 5, seed=1)
    assert len(ty) == 5 and torch.equal(tx, data.subset(test=5, seed=1).test_x)
    with pytest.raises(ValueError, match="test-subset"):
        dataclasses.replace(data, train_x=data.train_x[:0], train_y=data.train_y[:0]).gradient_images("train")
    with pytest.raises(ValueError, match="grad_samples"):
        data.gradient_images("test-subset", None)
    with pytest.raises(ValueError, match="one of"):
        data.gradient_images("validation")


def test_a_checkpoint_trained_on_other_normalisation_is_refused(data: ImageData, tmp_path: Path) -> None:
    """The cache key names the images, not the statistics computed from them: a checkpoint
    records the mean and std its network saw, and one that differs is stale, not reused."""
    cfg = tiny_config(epochs=2, keep_epochs=(1, 2))
    result = train(None, data, cfg, checkpoint_dir=tmp_path, progress=False)
    state = training.load_checkpoint(result.checkpoint_path)
    assert state["normalization"] == {"mean": [0.35], "std": [0.25]}
    assert training.load_checkpoint(result.snapshots[1])["normalization"] == state["normalization"]
    assert train(None, data, cfg, checkpoint_dir=tmp_path, progress=False).from_cache

    shifted = dataclasses.replace(data, mean=(0.35 + 1e-7,))  # one float32 ulp is enough to change the weights
    assert config_hash(cfg, shifted) == result.config_hash
    with pytest.raises(RuntimeError, match="stale: delete it to retrain"):
        train(None, shifted, cfg, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(RuntimeError, match="normalised with mean"):
        training.load_snapshot(cfg, shifted, 2, checkpoint_dir=tmp_path)
    child = tiny_config(epochs=3, init_from={"config_hash": result.config_hash, "epoch": 1})
    with pytest.raises(RuntimeError, match="stale"):
        train(None, shifted, child, checkpoint_dir=tmp_path, progress=False)

    # a checkpoint written before the statistics were recorded is read as it is
    del state["normalization"]
    torch.save(state, result.checkpoint_path)
    assert train(None, shifted, cfg, checkpoint_dir=tmp_path, progress=False).from_cache
