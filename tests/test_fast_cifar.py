"""airbench_cifar (paramstress.engine.fast_cifar): the whitening filters whiten, the eval-mode
TTA is the stated average, train() sets the filters from the training images, and the Table 2
objectives (Eq. 16's double backward, Eq. 13, AWP, SAM/ASAM) train it through the one loop.
Tiny synthetic 3×28×28 data, CPU."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import paramstress  # noqa: F401
from paramstress import models, training
from paramstress.corruption import objectives  # noqa: F401  (registers the Table 2 objectives)
from paramstress.corruption.resistant import trainer_specs
from paramstress.data import ImageData
from paramstress.engine import fast_cifar

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

SIZE = 28
CLASSES = 3


def make_data(n_train: int = 96, n_test: int = 48, seed: int = 0) -> ImageData:
    """Noisy 3×28×28 images; class k brightens channel k (learnable, flip-invariant)."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, CLASSES, (n,), generator=g)
        x = torch.randint(0, 150, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
        for k in range(CLASSES):
            x[y == k, k] += 80
        return x, y

    train_x, train_y = split(n_train)
    test_x, test_y = split(n_test)
    return ImageData(name="synthetic-rgb", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                     classes=[str(k) for k in range(CLASSES)], mean=(0.4, 0.4, 0.4), std=(0.25, 0.25, 0.25))


def test_whitening_filters_whiten_the_patches() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 16, 16, generator=g) * torch.tensor([1.0, 3.0, 0.3]).view(1, 3, 1, 1)
    x[:, 1] += 0.8 * x[:, 0]  # correlated channels
    filters = fast_cifar.whitening_filters(x, chunk=10)
    assert filters.shape == (24, 3, 2, 2)
    assert torch.equal(filters[12:], -filters[:12])

    def covariance(f: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x.double(), f[:12].double()).permute(0, 2, 3, 1).reshape(-1, 12)
        return out.T @ out / out.shape[0]

    # with eps -> 0 the filtered patches have the identity covariance; with the default eps the
    # directions of small variance are damped (eigenvalue / (eigenvalue + 5e-4) < 1)
    exact = fast_cifar.whitening_filters(x, eps=1e-12)
    assert torch.allclose(covariance(exact), torch.eye(12, dtype=torch.float64), atol=1e-4)
    damped = covariance(filters).diagonal()
    assert bool((damped < 1).all()) and bool((damped > 0.9).all()) and bool((damped[:-1] >= damped[1:] - 1e-6).all())
    # chunking does not change the result beyond rounding
    assert torch.allclose(filters, fast_cifar.whitening_filters(x, chunk=64), atol=1e-5)
    with pytest.raises(ValueError, match="N×C×H×W"):
        fast_cifar.whitening_filters(torch.zeros(3, 16, 16))


def test_network_shape_parameters_and_tta() -> None:
    net = models.build_model("airbench_cifar", 10, 3, 32, seed=0)
    assert sum(p.numel() for p in net.parameters()) == 1_971_352
    assert "whiten.weight" not in dict(net.named_parameters())  # fixed filters: a buffer
    assert "whiten.weight" in net.state_dict()
    conv = net.block2.conv1.weight  # Dirac: the first in_channels filters pass their channel through
    assert torch.equal(conv[:64], torch.nn.init.dirac_(torch.empty(64, 64, 3, 3)))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    net.train()
    with torch.no_grad():
        assert torch.equal(net(x), net.logits(x))
    net.eval()
    with torch.no_grad():
        plain = net.logits(x)
        mirror = 0.5 * (plain + net.logits(x.flip(-1)))
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = [padded[..., :32, :32], padded[..., 2:, 2:]]
        translated = sum(0.5 * (net.logits(s) + net.logits(s.flip(-1))) for s in shifted) / 2
        assert torch.allclose(net(x), 0.5 * mirror + 0.5 * translated, atol=1e-6)
        net.tta = 1
        assert torch.allclose(net(x), mirror, atol=1e-6)
        net.tta = 0
        assert torch.equal(net(x), plain)
    with pytest.raises(ValueError, match="tta"):
        fast_cifar.AirbenchNet(10, 3, 32, tta=3)
    with pytest.raises(ValueError, match="image_size"):
        models.build_model("airbench_cifar", 10, 3, 16)


def test_train_sets_the_whitening_filters_from_the_training_images(tmp_path) -> None:
    data = make_data()
    cfg = training.TrainConfig(model="airbench_cifar", epochs=1, batch_size=16, lr=0.2, augment=True,
                               crop_padding=2, hflip=True, seed=0)
    result = training.train(None, data, cfg, device="cpu", checkpoint_dir=tmp_path, progress=False)
    expected = fast_cifar.whitening_filters(data.train_x, transform=data.normalize)
    assert torch.equal(result.model.whiten.weight, expected)
    untrained = models.build_model("airbench_cifar", CLASSES, 3, SIZE, seed=0)
    assert not torch.equal(untrained.whiten.weight, expected)
    # the cached checkpoint holds the filters: a reload gives the same network, bit for bit
    again = training.train(None, data, cfg, device="cpu", checkpoint_dir=tmp_path, progress=False)
    assert again.from_cache
    state, state2 = result.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(state[k], state2[k]) for k in state)
    # and the same seed trains the same weights
    fresh = training.train(None, data, cfg, device="cpu", progress=False)
    assert all(torch.equal(state[k], fresh.model.state_dict()[k]) for k in state)


@pytest.mark.parametrize("trainer", ["baseline", "resistant", "direct", "awp", "sam", "asam"])
def test_table2_objectives_train_the_network_through_the_loop(trainer: str) -> None:
    data = make_data(n_train=32, n_test=16)
    objective, params = trainer_specs(alpha=0.5, eps=0.1)[trainer]
    cfg = training.TrainConfig(model="airbench_cifar", epochs=1, batch_size=16, lr=0.2, schedule="constant",
                               augment=True, crop_padding=2, hflip=True, seed=0, objective=objective,
                               objective_params=params)
    before = models.build_model("airbench_cifar", CLASSES, 3, SIZE, seed=0).state_dict()
    result = training.train(None, data, cfg, device="cpu", progress=False)
    after = result.model.state_dict()
    assert result.history[-1].train_loss == pytest.approx(result.history[-1].train_loss)  # finite
    assert torch.isfinite(torch.tensor(result.history[-1].train_loss))
    moved = [k for k in after if k.endswith(("weight", "bias")) and k != "whiten.weight"
             and not torch.equal(after[k], before[k])]
    assert "head.weight" in moved and "block1.conv1.weight" in moved and "block3.norm2.bias" in moved
