"""The model zoo: shapes, architecture details, seeding, and the ImageNet-weights error path."""
from __future__ import annotations

import os
import urllib.error

import pytest
import torch
from torch import nn

import paramstress  # noqa: F401  (registers the torchvision shim before torchvision is imported)
from paramstress import models

CIFAR_RESNETS = ["resnet18_cifar", "resnet34_cifar"]
# torchvision's ImageNet-style nets of Pravin et al. (2023)
TORCHVISION_NETS = ["resnet18", "resnet50", "squeezenet1_1", "shufflenet_v2_x1_0", "shufflenet_v2_x0_5"]


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.mark.parametrize("name", ["small_cnn", *CIFAR_RESNETS])
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_output_shape(name: str, channels: int, size: int) -> None:
    model = models.build_model(name, 10, channels, size, seed=0).eval()
    with torch.no_grad():
        out = model(torch.randn(1, channels, size, size))
    assert out.shape == (1, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_cifar_stem_keeps_resolution(channels: int, size: int) -> None:
    """No 4× downsampling in the stem: stage 1 sees full resolution, stage 4 ends at 4×4."""
    model = models.build_model("resnet18_cifar", 10, channels, size, seed=0).eval()
    seen: dict[str, tuple[int, ...]] = {}
    for name in ("layer1", "layer4"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape)))
    with torch.no_grad():
        model(torch.randn(1, channels, size, size))
    assert seen["layer1"] == (1, 64, size, size)
    assert seen["layer4"] == (1, 512, 4, 4)


@pytest.mark.parametrize("name,size", [("small_cnn", 28), ("resnet18_cifar", 8)])
def test_every_parameter_gets_a_gradient(name: str, size: int) -> None:
    model = models.build_model(name, 10, 1, size, seed=0)
    model(torch.randn(2, 1, size, size)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("depth,blocks,params", [(18, [2, 2, 2, 2], 11_173_962), (34, [3, 4, 6, 3], 21_282_122)])
def test_cifar_resnet_architecture(depth: int, blocks: list[int], params: int) -> None:
    model = models.build_model(f"resnet{depth}_cifar", 10, 3, 32, seed=0)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == blocks
    assert sum(p.numel() for p in model.parameters()) == params


def test_cifar_resnet_names_match_torchvision() -> None:
    """Parameter names equal torchvision's ResNet-34, so per-layer analyses compare directly."""
    cifar = models.build_model("resnet34_cifar", 1000, 3, 32, seed=0).state_dict()
    imagenet = models.build_model("resnet34_imagenet", 1000, 3, 224, weights=None).state_dict()
    assert cifar.keys() == imagenet.keys()
    assert cifar["conv1.weight"].shape == (64, 3, 3, 3)
    assert imagenet["conv1.weight"].shape == (64, 3, 7, 7)


def test_small_cnn_is_small_and_checks_size() -> None:
    model = models.build_model("small_cnn", 10, 1, 28, seed=0)
    assert sum(p.numel() for p in model.parameters()) < 30_000
    assert model[0].out_channels == 16 and model[4].out_channels == 32
    assert model[9].in_features == 32 * 7 * 7
    wide = models.build_model("small_cnn", 10, 3, 32, width=32)
    assert wide[0].out_channels == 32 and wide[9].in_features == 64 * 8 * 8
    with pytest.raises(ValueError, match="image_size"):
        models.build_model("small_cnn", 10, 1, 2)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        models.build_model("vgg16", 10, 3, 32)
    for name in models.MODEL_NAMES:
        assert name in str(info.value)
    assert set(models.MODEL_NAMES) == {
        "small_cnn", "resnet18_cifar", "resnet18_cifar_w16", "resnet34_cifar", "resnet34_imagenet", "airbench_cifar",
        *TORCHVISION_NETS,
    }


def test_bad_dimensions_raise() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        models.build_model("small_cnn", 0, 1, 28)
    with pytest.raises(ValueError, match="in_channels"):
        models.build_model("small_cnn", 10, 0, 28)


def test_seed_reproducible_and_leaves_global_rng_alone() -> None:
    before = torch.get_rng_state()
    a = models.build_model("small_cnn", 10, 1, 28, seed=1).state_dict()
    b = models.build_model("small_cnn", 10, 1, 28, seed=1).state_dict()
    c = models.build_model("small_cnn", 10, 1, 28, seed=2).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])


@pytest.mark.parametrize("name", list(models.MODEL_NAMES))
def test_parameter_shapes_match_built_model(name: str) -> None:
    options = {"weights": None} if name == "resnet34_imagenet" else {}
    before = torch.get_rng_state()
    shapes = models.parameter_shapes(name, 7, 1, 32)
    assert torch.equal(torch.get_rng_state(), before)
    built = models.build_model(name, 7, 1, 32, seed=0, **options).state_dict()
    assert shapes == {k: tuple(v.shape) for k, v in built.items()}


def test_resnet34_imagenet_architecture_without_weights() -> None:
    model = models.build_model("resnet34_imagenet", 1000, 3, 224, weights=None).eval()
    gray = models.build_model("resnet34_imagenet", 10, 1, 64, weights=None).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
        assert gray(torch.randn(1, 1, 64, 64)).shape == (1, 10)
    assert gray.conv1.weight.shape == (64, 1, 7, 7)


def test_resnet34_imagenet_offline_error_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("PARAMSTRESS_OFFLINE", "1")

    def no_network(*args, **kwargs):  # the offline path must not even try
        raise AssertionError("tried to download while PARAMSTRESS_OFFLINE=1")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(models.WeightsUnavailable) as info:
        models.build_model("resnet34_imagenet", 1000, 3, 224)
    message = str(info.value)
    expected = os.path.join(str(tmp_path), "hub", "checkpoints", "resnet34-b627a593.pth")
    assert models.imagenet_weights_path() == expected
    assert expected in message and "TORCH_HOME" in message and "PARAMSTRESS_OFFLINE" in message
    assert "https://download.pytorch.org/models/resnet34-b627a593.pth" in message


def test_resnet34_imagenet_download_failure_is_wrapped(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("PARAMSTRESS_OFFLINE", raising=False)

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", unreachable)
    with pytest.raises(models.WeightsUnavailable, match="could not download") as info:
        models.build_model("resnet34_imagenet", 1000, 3, 224)
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert "resnet34-b627a593.pth" in str(info.value)


def test_resnet34_imagenet_loads_cached_weights_offline(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("PARAMSTRESS_OFFLINE", "1")
    reference = models.build_model("resnet34_imagenet", 1000, 3, 224, seed=3, weights=None).state_dict()
    path = models.imagenet_weights_path()
    os.makedirs(os.path.dirname(path))
    torch.save(reference, path)
    model = models.build_model("resnet34_imagenet", 1000, 3, 224)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_resnet34_imagenet_pretrained_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="weights=None"):
        models.build_model("resnet34_imagenet", 10, 3, 32)
    with pytest.raises(ValueError, match="unknown weights"):
        models.build_model("resnet34_imagenet", 1000, 3, 224, weights="IMAGENET1K_V9")


# ----------------------------------------------------------------------------- torchvision nets (Pravin et al. 2023)
# first convolution of each torchvision architecture, and its torchvision ImageNet shape
_FIRST = {
    "resnet18": ("conv1", (64, 3, 7, 7), 2, 3, False),
    "resnet50": ("conv1", (64, 3, 7, 7), 2, 3, False),
    "squeezenet1_1": ("features.0", (64, 3, 3, 3), 2, 0, True),
    "shufflenet_v2_x1_0": ("conv1.0", (24, 3, 3, 3), 2, 1, False),
    "shufflenet_v2_x0_5": ("conv1.0", (24, 3, 3, 3), 2, 1, False),
}


@pytest.mark.parametrize("name", TORCHVISION_NETS)
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_torchvision_net_builds_and_runs(name: str, channels: int, size: int) -> None:
    model = models.build_model(name, 10, channels, size, seed=0).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    path, shape, stride, padding, bias = _FIRST[name]
    conv = model.get_submodule(path)
    assert isinstance(conv, nn.Conv2d)
    assert tuple(conv.weight.shape) == (shape[0], channels, *shape[2:])
    assert conv.stride == (stride, stride) and conv.padding == (padding, padding)
    assert (conv.bias is not None) == bias
    # exactly one convolution sees the input channels (the stem), the rest is torchvision's
    first_convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == channels]
    assert first_convs[0] is conv


@pytest.mark.parametrize("name", TORCHVISION_NETS)
def test_torchvision_net_three_channels_is_torchvision_unchanged(name: str) -> None:
    """torchvision's model and init, bit for bit, except SqueezeNet 1.1's classifier bias (1, not 0)."""
    import torchvision

    ours = models.build_model(name, 7, 3, 32, seed=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        reference = getattr(torchvision.models, name)(weights=None, num_classes=7)
    a, b = ours.state_dict(), reference.state_dict()
    changed = {"classifier.1.bias"} if name == "squeezenet1_1" else set()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if k not in changed)
    for k in changed:
        assert torch.equal(b[k], torch.zeros(7)) and torch.equal(a[k], torch.ones(7))


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_squeezenet_classifier_init(channels: int, size: int) -> None:
    """The final 1×1 convolution keeps torchvision's N(0, 0.01) weights; its bias starts at
    SQUEEZENET_FINAL_BIAS = 1 (every class logit active at the start); final_bias=0 gives
    torchvision's init exactly, weights included."""
    model = models.build_model("squeezenet1_1", 10, channels, size, seed=3)
    final = model.classifier[1]
    assert isinstance(final, nn.Conv2d) and final.kernel_size == (1, 1) and tuple(final.weight.shape) == (10, 512, 1, 1)
    assert isinstance(model.classifier[2], nn.ReLU)  # the architecture is unchanged
    assert models.SQUEEZENET_FINAL_BIAS == 1.0
    assert torch.equal(final.bias.detach(), torch.ones(10))
    w = final.weight.detach()
    assert 0.008 < float(w.std()) < 0.012 and abs(float(w.mean())) < 0.002
    # the other convolutions: torchvision's Kaiming-uniform (bound sqrt(6 / fan_in)), zero bias
    fire = model.features[3].squeeze
    assert float(fire.weight.detach().abs().max()) <= (6 / (64 * 1 * 1)) ** 0.5
    assert torch.equal(fire.bias.detach(), torch.zeros(16))
    torchvision_init = models.build_model("squeezenet1_1", 10, channels, size, seed=3, final_bias=0.0)
    a, b = model.state_dict(), torchvision_init.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k != "classifier.1.bias")
    assert torch.equal(b["classifier.1.bias"], torch.zeros(10))
    assert torch.equal(
        models.build_model("squeezenet1_1", 10, channels, size, seed=3, final_bias=0.25).classifier[1].bias.detach(),
        torch.full((10,), 0.25),
    )


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_squeezenet_logits_start_active(channels: int, size: int) -> None:
    """With the bias at 1 every class logit is positive on (nearly) every input at the start;
    with torchvision's 0 about half of them are silenced by the classifier's ReLU."""
    x = torch.randn(64, channels, size, size)
    with torch.no_grad():
        ours = models.build_model("squeezenet1_1", 10, channels, size, seed=0).eval()(x)
        tv = models.build_model("squeezenet1_1", 10, channels, size, seed=0, final_bias=0.0).eval()(x)
    assert float((ours > 0).float().mean()) > 0.95
    assert 0.2 < float((tv > 0).float().mean()) < 0.8


@pytest.mark.parametrize("channels,size,sides", [(1, 28, [13, 6, 3, 1]), (3, 32, [15, 7, 3, 1])])
def test_squeezenet_feature_map_sizes(channels: int, size: int, sides: list[int]) -> None:
    """Spatial sides after the stem and the three ceil-mode max-pools: never 0, 1×1 at the end."""
    model = models.build_model("squeezenet1_1", 10, channels, size, seed=0).eval()
    seen = []
    for i in (0, 2, 5, 8):
        model.features[i].register_forward_hook(lambda m, inp, out: seen.append(out.shape[-1]))
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert seen == sides and out.shape == (2, 10)


def test_final_bias_is_a_squeezenet_option() -> None:
    with pytest.raises(ValueError, match="squeezenet1_1 only"):
        models.build_model("resnet18", 10, 1, 28, final_bias=1.0)
    with pytest.raises(ValueError, match="finite number"):
        models.build_model("squeezenet1_1", 10, 1, 28, final_bias=float("nan"))
    assert models.build_model("resnet18", 10, 1, 28, seed=0) is not None  # no option: fine


@pytest.mark.parametrize("name", TORCHVISION_NETS)
def test_torchvision_net_gray_stem_is_initialised(name: str) -> None:
    """The replaced 1-channel stem is a fresh, non-degenerate init, and seeds differ."""
    path = _FIRST[name][0]
    a = models.build_model(name, 10, 1, 28, seed=0).get_submodule(path)
    b = models.build_model(name, 10, 1, 28, seed=1).get_submodule(path)
    assert a.weight.std() > 0 and not torch.equal(a.weight, b.weight)
    if a.bias is not None:
        assert torch.equal(a.bias, torch.zeros_like(a.bias))  # SqueezeNet inits biases to 0


def test_squeezenet_needs_17_pixels_and_works_on_28() -> None:
    model = models.build_model("squeezenet1_1", 10, 1, 17, seed=0).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 17, 17)).shape == (1, 10)
    with pytest.raises(ValueError, match="image_size >= 17"):
        models.build_model("squeezenet1_1", 10, 1, 16)


def test_shufflenet_widths_differ() -> None:
    small = sum(p.numel() for p in models.build_model("shufflenet_v2_x0_5", 10, 3, 32).parameters())
    large = sum(p.numel() for p in models.build_model("shufflenet_v2_x1_0", 10, 3, 32).parameters())
    assert small == 352_042 and large == 1_263_854
