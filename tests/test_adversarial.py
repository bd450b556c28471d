"""FGSM on normalised inputs, ε by Defs. 7-9 (line search to a shared target), and the
parameters the adversary targets (Fig. 5)."""
import pickle

import pandas as pd
import pytest
import torch
from torch import nn

from paramstress import adversarial as A

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def linear(weight, bias=None):
    lin = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(bias if bias is not None else torch.zeros(weight.shape[0]))
    return lin


def test_fgsm_direction_on_a_binary_linear_model():
    # logits [w·x, 0]; for label 0 the loss grows along −w, so x_adv = x − ε·sign(w)
    w = torch.tensor([[0.5, -2.0, 1.0, -0.1], [0.0, 0.0, 0.0, 0.0]])
    model = linear(w)
    x = torch.randn(6, 4)
    y = torch.zeros(6, dtype=torch.int64)
    xa = A.fgsm(model, x, y, 0.25)
    assert torch.equal(xa, x - 0.25 * torch.sign(w[0]).expand_as(x))
    # label 1: the opposite direction
    assert torch.equal(A.fgsm(model, x, torch.ones(6, dtype=torch.int64), 0.25), x + 0.25 * torch.sign(w[0]))


def test_fgsm_matches_the_closed_form_gradient_of_cross_entropy():
    torch.manual_seed(0)
    w, b = torch.randn(3, 5), torch.randn(3)
    model = linear(w, b)
    x = torch.randn(20, 5)
    y = torch.randint(0, 3, (20,))
    p = torch.softmax(x.double() @ w.double().T + b.double(), dim=1)
    grad = (p - nn.functional.one_hot(y, 3).double()) @ w.double()  # ∇ₓ CE = Wᵀ(softmax − onehot)
    assert torch.equal(A.fgsm(model, x, y, 0.1), x + 0.1 * grad.sign().float())
    assert torch.equal(A.fgsm(model, x, y, 0.1, batch_size=3), A.fgsm(model, x, y, 0.1))
    assert torch.equal(A.fgsm(model, x, y, 0.0), x)


def test_fgsm_has_no_clamp_and_restores_flags():
    model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model.train()
    model[0].weight.requires_grad_(False)
    x = torch.full((4, 2), 3.0)
    xa = A.fgsm(model, x, torch.tensor([0, 1, 0, 1]), 10.0)
    assert xa.abs().max() > 3.0  # normalised units, no clamp to an image range
    assert model.training and model[1].training
    assert not model[0].weight.requires_grad and model[2].weight.requires_grad
    assert model[2].weight.grad is None  # no parameter gradients were accumulated


def test_fgsm_validates_before_compute():
    model = linear(torch.eye(2))
    x, y = torch.zeros(2, 2), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="eps"):
        A.fgsm(model, x, y, -1.0)
    with pytest.raises(ValueError, match="normalised"):
        A.fgsm(model, x.to(torch.uint8), y, 0.1)
    with pytest.raises(ValueError, match="inference_mode"):
        with torch.inference_mode():
            A.fgsm(model, x, y, 0.1)
    for attack in (lambda **k: A.fgsm(model, x, y, 0.1, **k), lambda **k: A.gradient_sign(model, x, y, **k)):
        with pytest.raises(ValueError, match="loss_fn must be a callable"):
            attack(loss_fn="mse")
        with pytest.raises(ValueError, match="inference_mode"):
            with torch.inference_mode():
                attack()


def threshold_problem():
    """1-D inputs evenly spread on [-1, 1]; the model predicts the sign, so FGSM of size ε
    flips exactly the inputs with |x| < ε: accuracy(ε) ≈ 100·(1 − ε)."""
    x = torch.linspace(-1, 1, 401)
    x = x[x.abs() > 1e-6].unsqueeze(1)
    y = (x[:, 0] > 0).long()
    return linear(torch.tensor([[-1.0], [1.0]])), x, y


def test_epsilon_line_search_hits_a_shared_target():
    model, x, y = threshold_problem()
    assert A.adversarial_accuracy(model, x, y, 0.0) == 100.0
    choice = A.select_epsilon(model, x, y, target_accuracy=60.0, eps_max=1.0, tol=0.5)
    assert abs(choice.accuracy - 60.0) <= 0.5
    assert choice.eps == pytest.approx(0.4, abs=0.01)
    assert choice.def7 and choice.def8 and choice.chance == 50.0 and choice.clean_accuracy == 100.0
    assert choice.flipped == round(len(y) * (100 - choice.accuracy) / 100)
    assert A.adversarial_accuracy(model, x, y, choice.eps) == choice.accuracy
    curve = choice.curve
    assert curve["eps"].is_monotonic_increasing and curve["eps"].iloc[0] == 0.0
    assert curve["accuracy"].is_monotonic_decreasing
    # Def. 9: a second model with a wider margin needs a larger ε for the same accuracy
    wide, xw, yw = threshold_problem()
    choice2 = A.select_epsilon(wide, xw * 2, yw, target_accuracy=60.0, eps_max=4.0)
    assert abs(choice2.accuracy - choice.accuracy) <= 1.0 and choice2.eps == pytest.approx(0.8, abs=0.02)


def test_epsilon_constraints_fail_with_the_fix():
    model, x, y = threshold_problem()
    with pytest.raises(ValueError, match="Def. 8"):
        A.select_epsilon(model, x, y, target_accuracy=50.0)
    with pytest.raises(A.TargetUnreachable, match="Def. 7") as info:
        A.select_epsilon(model, x, y, target_accuracy=100.0)
    assert isinstance(info.value, ValueError)
    assert (info.value.clean_accuracy, info.value.target, info.value.chance, info.value.classes_predicted) == \
        (100.0, 100.0, 50.0, 2)
    with pytest.raises(A.TargetUnreachable, match="raise eps_max") as info:
        A.select_epsilon(model, x, y, target_accuracy=60.0, eps_max=0.1)
    assert info.value.clean_accuracy == 100.0 and "FGSM up to ε = 0.1 leaves" in info.value.why
    # the evaluated grid comes with it: ε = 0 and eps_max·k/8 for k = 1..8, all above the target
    curve = info.value.curve
    assert curve["eps"].tolist() == pytest.approx([0.1 * k / 8 for k in range(9)])
    assert (curve["accuracy"].iloc[1:] > 60.0).all() and info.value.summary()["evaluations"] == 8


def test_def8_names_every_offender_and_the_fix():
    A.check_above_chance(34.0, {"three": 3, "ten": 10})
    with pytest.raises(ValueError, match=r"adv_target 25 % is not above chance for three \(33.3 %, 3 classes\), "
                                         r"four \(25.0 %, 4 classes\): .* raise adv_target"):
        A.check_above_chance(25, {"three": 3, "four": 4, "ten": 10}, name="adv_target")
    assert A.chance_level(10) == 10.0


def test_an_unattacked_model_summarises_like_an_attacked_one():
    """study_pair records either summary in one table: the keys must match."""
    model, x, y = threshold_problem()
    attacked = A.select_epsilon(model, x, y, target_accuracy=60.0, eps_max=2.0).summary()
    for target, eps_max, def7, evaluations in ((100.0, 2.0, False, 0), (60.0, 0.1, None, 8)):
        with pytest.raises(A.TargetUnreachable) as info:
            A.select_epsilon(model, x, y, target_accuracy=target, eps_max=eps_max)
        summary = info.value.summary()
        assert set(attacked) <= set(summary) and set(summary) - set(attacked) == {"classes_predicted", "excluded"}
        assert summary["eps"] is None and summary["adv_accuracy"] is None and summary["def8"] is None
        assert summary["def7"] is def7 and summary["evaluations"] == evaluations
        assert summary["excluded"] == info.value.why and summary["clean_accuracy"] == 100.0


def test_an_unreachable_target_names_the_classes_and_survives_pickling():
    """A network collapsed onto one class (all inputs called positive): half right, one class."""
    _, x, y = threshold_problem()
    collapsed = linear(torch.zeros(2, 1), torch.tensor([0.0, 1.0]))
    with pytest.raises(A.TargetUnreachable, match="predicts 1 of 2 classes") as info:
        A.select_epsilon(collapsed, x, y, target_accuracy=60.0)
    back = pickle.loads(pickle.dumps(info.value))  # as a worker process sends it back
    assert type(back) is A.TargetUnreachable and str(back) == str(info.value)
    assert (back.clean_accuracy, back.target, back.chance, back.classes_predicted) == (50.0, 60.0, 50.0, 1)
    assert back.why == info.value.why == "clean accuracy 50.0 % is not above 60 %; predicts 1 of 2 classes"
    assert back.curve.equals(info.value.curve) and back.summary() == info.value.summary()
    info.value.add_note("which network")
    assert pickle.loads(pickle.dumps(info.value)).__notes__ == ["which network"]


def test_targeted_parameters_labels_the_difference():
    resp = pd.DataFrame({"layer": ["a"] * 3, "filter": ["h_c"] * 3, "t": [0, 1, 2],
                         "S_clean": [1.0, 0.9, 0.5], "S_adv": [1.0, 0.6, 0.8]})
    out = A.targeted_parameters(resp, tolerance=0.05)
    assert out["difference"].tolist() == pytest.approx([0.0, -0.3, 0.3])
    assert out["effect"].tolist() == ["invariant", "negative", "positive"]
    with pytest.raises(ValueError, match="fragility.responses"):
        A.targeted_parameters(resp.drop(columns=["S_adv"]))
    with pytest.raises(ValueError, match="eps"):
        A.targeted_parameters(resp.assign(S_adv=float("nan")))
