"""Bad arguments to the public API are rejected before any forward pass, with a message that
names the fix; the model is untouched."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import paramstress

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


class WithFrozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 3))
        self.frozen_extra = nn.Linear(3, 3)
        self.frozen_extra.requires_grad_(False)

    def forward(self, x):
        return self.frozen_extra(self.body(x))


def model_and_data():
    torch.manual_seed(0)
    net = WithFrozen()
    g = torch.Generator().manual_seed(0)
    return net, torch.randn(30, 6, generator=g), torch.randint(0, 3, (30,), generator=g)


F_IND, F_TAB, F_VUL, F_PHI = (paramstress.corruption_indicator, paramstress.corruption_table,
                              paramstress.vulnerability_probe, paramstress.filter_scores)

CASES = [
    # (function, kwargs beside model and data, data override or None, the fix the message names)
    (F_IND, dict(eps=-1.0), None, r"eps"),
    (F_IND, dict(eps=0.1, p=0.5), None, r"p >= 1|p must"),
    (F_IND, dict(eps=0.1, n=0), None, r"n must be >= 1"),
    (F_IND, dict(eps=0.1, n=10 ** 6), None, r"use n <= k"),
    (F_IND, dict(eps=0.1, metric="f1"), None, r"choose one of \['accuracy', 'loss'\]"),
    (F_IND, dict(eps=0.1, metric=lambda o, t: o.sum()), None, r"higher_is_better=True or False"),
    (F_IND, dict(eps=0.1, loss="mse"), None, r"torch.nn.functional.mse_loss"),
    (F_IND, dict(eps=0.1, subspace="biases"), None, r"choose one of \['all', 'no-norm', 'weights'\]"),
    (F_IND, dict(eps=0.1, subspace=["frozen_extra.*"]), None, r"requires_grad"),
    (F_IND, dict(eps=0.1, subspace=["nope.*"]), None, r"no parameter name matches"),
    (F_IND, dict(eps=0.1, batch_size=0), None, r"batch_size must be a positive integer"),
    (F_IND, dict(eps=0.1, device="cuda:7" if torch.cuda.is_available() else "cuda"), None, r"device"),
    (F_IND, dict(eps=0.1, device="gpu"), None, r"'cpu', 'cuda'"),
    (F_IND, dict(eps=0.1), "one tensor", r"pass \(inputs, targets\)"),
    (F_IND, dict(eps=0.1), "empty", r"empty"),
    (F_IND, dict(eps=0.1), "mismatch", r"one entry per example"),
    (F_IND, dict(eps=0.1), "dicts", r"TensorDataset"),
    (F_IND, dict(eps=0.1), "float targets", r"loss=torch.nn.functional.mse_loss"),
    (F_TAB, dict(trials=0), None, r"trials must be a positive integer"),
    (F_TAB, dict(eps=[0.1], n=[500]), None, r"use n <= k"),
    (F_TAB, dict(n=[7]), None, r"pass eps=\[...\]"),
    (F_TAB, dict(eps=[]), None, r"empty"),
    (F_TAB, dict(seed=-1), None, r"seed must be an integer >= 0"),
    (F_VUL, dict(eps=[]), None, r"eps=\[0.1, 1.0\]"),
    (F_VUL, dict(eps=1.0, groups="blocks"), None, r"'components', 'layers'"),
    (F_VUL, dict(eps=1.0, groups={"x": []}), None, r"selects no parameter|empty"),
    (F_VUL, dict(eps=1.0, groups={"f": "frozen_extra.*"}), None, r"trainable parameters of the model only"),
    (F_VUL, dict(eps=1.0, n=0), None, r"positive int"),
    (F_PHI, dict(attack="pgd"), None, r"'fgsm' or None"),
    (F_PHI, dict(), None, r"needs eps="),
    (F_PHI, dict(attack=None, eps=0.1), None, r"give attack='fgsm'"),
    (F_PHI, dict(eps=0.1, T=2), None, r"T must be >= 3"),
    (F_PHI, dict(eps=0.1, layers=["nope"]), None, r"conv/linear layers"),
    (F_PHI, dict(eps=0.1, filters=["h_z"]), None, r"choose from"),
    (F_PHI, dict(eps=0.1, reference="chance"), None, r"another reference"),
    (F_PHI, dict(eps=0.1, tolerance=-1), None, r"tolerance must be"),
    (F_PHI, dict(eps=0.1, adversarial="sometimes"), None, r"'fixed', 'regenerate'"),
    (F_PHI, dict(eps=0.1), "token ids", r"attack=None"),
]


def _data(kind, x, y):
    if kind is None:
        return (x, y)
    return {
        "one tensor": x,
        "empty": [],
        "mismatch": (x, y[:-1]),
        "dicts": [{"x": x, "y": y}],
        "float targets": (x, y.float()),
        "token ids": (torch.zeros(30, 6, dtype=torch.long), y),
    }[kind]


@pytest.mark.parametrize("fn, kwargs, data, fix", CASES,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_fails_before_any_forward_pass(fn, kwargs, data, fix):
    net, x, y = model_and_data()
    if data == "token ids":
        net = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(24, 3))
    calls = []
    net.register_forward_pre_hook(lambda *_: calls.append(1))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=fix):
        fn(net, _data(data, x, y), **kwargs)
    assert calls == [], "a forward pass ran before the argument was rejected"
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


def test_not_a_module_and_no_parameters():
    with pytest.raises(ValueError, match="torch.nn.Module"):
        paramstress.corruption_indicator(lambda x: x, (torch.zeros(2, 2), torch.zeros(2)), eps=0.1)
    with pytest.raises(ValueError, match="no parameters"):
        paramstress.filter_scores(nn.ReLU(), (torch.zeros(2, 2), torch.zeros(2)), attack=None)


def test_a_loss_that_is_not_a_batch_mean_is_named():
    net, x, y = model_and_data()
    with pytest.raises(ValueError, match="batch mean|scalar"):
        paramstress.corruption_indicator(net, (x, y), eps=0.1, loss=lambda o, t: F.cross_entropy(o, t, reduction="none"))
