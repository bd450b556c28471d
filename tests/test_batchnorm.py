"""Batch norm carries a constant feature forward when a whole layer is filtered
(Pravin et al. 2023, Eq. 17, Fig. 11)."""
import pytest
import torch
from torch import nn

from paramstress import batchnorm as B
from paramstress import filtering as FL

from test_filtering import data, same_state, state_bits, tiny

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def test_following_batchnorm_by_graph():
    model = tiny()
    assert B.following_batchnorm(model, "conv1") == "bn1"
    assert B.following_batchnorm(model, "block.conv2") == "block.bn2"
    assert B.following_batchnorm(model, "fc") is None
    with pytest.raises(ValueError, match="unknown layer"):
        B.following_batchnorm(model, "bn1")


def test_carried_constant_eq17_by_hand():
    bn = nn.BatchNorm2d(2)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25]))
        bn.weight.copy_(torch.tensor([3.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.1, 0.2]))
    eps = bn.eps
    want = [0.1 + 3.0 * (0 - 1.0) / (4.0 + eps) ** 0.5, 0.2 + 0.5 * (0 + 2.0) / (0.25 + eps) ** 0.5]
    assert B.carried_constant(bn).tolist() == pytest.approx(want)
    with_bias = [0.1 + 3.0 * (1.5 - 1.0) / (4.0 + eps) ** 0.5, 0.2 + 0.5 * (-1.0 + 2.0) / (0.25 + eps) ** 0.5]
    assert B.carried_constant(bn, torch.tensor([1.5, -1.0])).tolist() == pytest.approx(with_bias)
    with pytest.raises(ValueError, match="running statistics"):
        B.carried_constant(nn.BatchNorm2d(2, track_running_stats=False))


def test_removed_layer_leaves_the_predicted_constant_and_everything_is_restored():
    model = tiny()
    model.train()
    saved = state_bits(model)
    x, y = data()
    r = B.batchnorm_carryover(model, "block.conv1", x, y, batch_size=16)
    assert r.bn == "block.bn1"
    assert r.max_error < 1e-5 and r.max_spread < 1e-5  # a constant, equal to Eq. 17's
    assert r.channels["unfiltered_std"].min() > 1e-3  # unfiltered, the features vary
    assert set(r.accuracy) == {"unfiltered", "removed", "removed_no_carry"}
    assert same_state(model, saved) and model.training
    assert not model.block.bn1._forward_hooks
    # zeroing the batch-norm output is what the next layer would see without the constant:
    # with the layer removed and the constant zeroed, the block input passes through the skip only
    with torch.inference_mode():
        model.eval()
        scope = FL.make_scope(model, "block.conv1")
        with FL.filtered(scope, FL.Window("h_a", 0, 1.0, 0.0, -float("inf"), float("inf"))):
            out = model.block.bn1(model.block.conv1(model.bn1(model.conv1(x))))
    assert torch.allclose(out[0, :, 0, 0], B.carried_constant(model.block.bn1).float(), atol=1e-6)


def test_layers_without_batch_norm_are_refused_and_the_table_covers_the_rest():
    model = tiny()
    x, y = data()
    with pytest.raises(ValueError, match="no batch norm"):
        B.batchnorm_carryover(model, "fc", x, y)
    table = B.carryover_table(model, x, y, batch_size=16)
    assert table["layer"].tolist() == ["conv1", "block.conv1", "block.conv2"]
    assert (table["max_error"] < 1e-5).all()
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    with pytest.raises(ValueError, match="no conv layer"):
        B.carryover_table(plain, x, y)
