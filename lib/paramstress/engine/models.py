"""The model zoo: every network the book trains or attacks, built by name.

:func:`build_model` is the one entry point (``name``, ``num_classes``,
``in_channels``, ``image_size``); :data:`MODEL_NAMES` lists the valid names.

=====================  ======================================================
``small_cnn``          two conv–BN–ReLU–max-pool blocks and a linear head; the
                       quickstart model for MNIST-like 28×28 digits (~98.5 %
                       MNIST test accuracy after one epoch on a CPU)
``resnet18_cifar``     ResNet-18 (BasicBlock, [2, 2, 2, 2]) with a CIFAR stem
``resnet18_cifar_w16`` the same ResNet-18 with base width 16 instead of 64
                       (stages of 16, 32, 64, 128 channels, about 0.7 M
                       parameters): ResNet-style layers that train on a CPU
``resnet34_cifar``     ResNet-34 (BasicBlock, [3, 4, 6, 3]) with a CIFAR stem,
                       the CIFAR-10 model of Sun et al. (2021)
``resnet34_imagenet``  torchvision's ResNet-34 with its ImageNet weights
                       (``ResNet34_Weights.IMAGENET1K_V1``), the ImageNet model
                       of Sun et al. (2021), used by the ``paper`` profile
``airbench_cifar``     K. Jordan's airbench94 network (whitening 2×2 convolution,
                       three conv groups, mirror-and-translate TTA in eval mode;
                       :mod:`paramstress.engine.fast_cifar`): a fast CIFAR-10
                       network for the GPU runs of many trainers and seeds
=====================  ======================================================

The networks of Pravin et al. (2023) are torchvision's untrained ImageNet-style
``resnet18``, ``resnet50``, ``squeezenet1_1``, ``shufflenet_v2_x1_0`` (the paper's
choice) and ``shufflenet_v2_x0_5`` (what its code trains), used unchanged on
28×28 and 32×32 images (see :func:`torchvision_net`; one initialisation choice differs
from torchvision's: SqueezeNet 1.1's classifier bias starts at 1, not 0, without which
the paper's training collapses it to one class).

The CIFAR ResNets are torchvision's own ``ResNet``/``BasicBlock`` with only the
stem changed, so their parameter names (``conv1.weight``, ``layer3.2.bn1.bias``,
``fc.weight``, ...) are the same as those of ``resnet34_imagenet``: per-layer and
per-component analyses (Sun et al., Fig. 4) read both in the same terms.
"""
from __future__ import annotations

import math
import os
import urllib.error
from typing import Any, Callable

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet34_Weights
from torchvision.models.resnet import BasicBlock, ResNet

from paramstress.engine.data import offline
from paramstress.engine.fast_cifar import airbench_cifar

__all__ = [
    "MODEL_NAMES",
    "SQUEEZENET_FINAL_BIAS",
    "INIT_REVISIONS",
    "WeightsUnavailable",
    "build_model",
    "imagenet_weights_path",
    "parameter_shapes",
    "resnet_cifar",
    "resnet34_imagenet",
    "small_cnn",
    "torchvision_net",
]


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are neither in the local cache nor downloadable; the message names the fix."""


# --------------------------------------------------------------------------- small CNN
class SmallCNN(nn.Sequential):
    """Two ``conv3×3 → BN → ReLU → max-pool 2×2`` blocks (``width`` and ``2·width``
    channels) and a linear head.

    With the default ``width=16``, about 21 k parameters on 28×28 inputs. Built for
    the quickstart notebook on a CPU: one epoch of MNIST (batch 256, OneCycle
    SGD, lr 0.1) reaches about 98.5 % test accuracy, two epochs about 99 %
    (``width=32`` gains a few tenths of a percent for four times the compute).
    Built as an ``nn.Sequential`` so that layers have short, stable names
    (``0.weight`` is the first convolution, ``4.weight`` the second, ``9.weight``
    the classifier).
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: int = 16) -> None:
        if image_size < 4:
            raise ValueError(
                f"small_cnn halves the image twice and needs image_size >= 4, got {image_size}; "
                "pass the side length of the (square) input images"
            )
        if width < 1:
            raise ValueError(f"small_cnn width must be >= 1, got {width}")
        side = image_size // 4
        super().__init__(
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * side * side, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def small_cnn(num_classes: int, in_channels: int, image_size: int, *, width: int = 16) -> nn.Module:
    """The quickstart CNN (see :class:`SmallCNN`)."""
    return SmallCNN(num_classes, in_channels, image_size, width)


# --------------------------------------------------------------------------- CIFAR ResNets
_CIFAR_LAYERS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}


def resnet_cifar(
    depth: int, num_classes: int, in_channels: int, image_size: int, *, width: int = 64
) -> nn.Module:
    """ResNet-18/34 of He et al. (2016) with a CIFAR-style stem.

    He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition",
    CVPR 2016. The body is the paper's ImageNet design: BasicBlocks (two 3×3
    convolutions with batch norm and an identity or 1×1-projection shortcut) in four
    stages of 64, 128, 256 and 512 channels, [2, 2, 2, 2] blocks for ResNet-18 and
    [3, 4, 6, 3] for ResNet-34, the last three stages starting with stride 2, then
    global average pooling and one linear layer. It is torchvision's implementation.

    Stem changes, and why: the ImageNet stem (a 7×7 convolution with stride 2 followed
    by a 3×3 max-pool with stride 2) reduces the resolution 4× before the first
    residual stage. That suits 224×224 photographs, but a 32×32 CIFAR image would
    enter stage 1 at 8×8 and leave stage 4 at 1×1, throwing away most spatial
    detail. Following the paper's own CIFAR experiments (Sec. 4.2: a first 3×3
    convolution on 32×32 inputs, no pooling before the residual stages), the stem
    here is a single **3×3 convolution with stride 1 and padding 1** (no bias, followed
    by the usual batch norm and ReLU) and the **max-pool is removed** (replaced by an
    identity, so parameter names stay those of torchvision). Feature maps are then
    32→32→16→8→4 for 32×32 inputs and 28→28→14→7→4 for 28×28 inputs; the adaptive
    average pool makes any size from 8×8 upwards work. ``in_channels`` sets the
    stem's input channels (1 for MNIST-like digits, 3 for CIFAR). ``width`` is the
    channel count of the stem and first stage (64 in the paper; the stages have
    ``width``, ``2·width``, ``4·width``, ``8·width`` channels).
    """
    if depth not in _CIFAR_LAYERS:
        raise ValueError(f"resnet_cifar depth must be one of {sorted(_CIFAR_LAYERS)}, got {depth}")
    if image_size < 8:
        raise ValueError(
            f"resnet{depth}_cifar downsamples 8× and needs image_size >= 8, got {image_size}"
        )
    model = ResNet(BasicBlock, _CIFAR_LAYERS[depth], num_classes=num_classes)
    if width != 64:
        _rewidth(model, _CIFAR_LAYERS[depth], width, num_classes)
    model.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def _rewidth(model: ResNet, layers: list[int], width: int, num_classes: int) -> None:
    """Rebuild ``model``'s stages with ``width``, ``2·width``, ``4·width``, ``8·width``
    channels (torchvision hard-codes 64…512), initialised as torchvision initialises a
    ResNet (Kaiming-normal fan-out convolutions, batch norm 1/0, default linear head);
    the parameter names stay torchvision's."""
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"resnet_cifar width must be a positive int, got {width!r}")
    model.inplanes = width
    model.bn1 = nn.BatchNorm2d(width)
    model.layer1 = model._make_layer(BasicBlock, width, layers[0])
    model.layer2 = model._make_layer(BasicBlock, 2 * width, layers[1], stride=2)
    model.layer3 = model._make_layer(BasicBlock, 4 * width, layers[2], stride=2)
    model.layer4 = model._make_layer(BasicBlock, 8 * width, layers[3], stride=2)
    model.fc = nn.Linear(8 * width * BasicBlock.expansion, num_classes)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def resnet18_cifar(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet-18 with the CIFAR stem (see :func:`resnet_cifar`)."""
    return resnet_cifar(18, num_classes, in_channels, image_size)


def resnet18_cifar_w16(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet-18 with the CIFAR stem and base width 16 (stages of 16, 32, 64 and 128
    channels, about 0.7 M parameters; see :func:`resnet_cifar`): the same blocks,
    batch norms and parameter names as ``resnet18_cifar``, small enough to train on a CPU."""
    return resnet_cifar(18, num_classes, in_channels, image_size, width=16)


def resnet34_cifar(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """ResNet-34 with the CIFAR stem (see :func:`resnet_cifar`)."""
    return resnet_cifar(34, num_classes, in_channels, image_size)


# --------------------------------------------------------------------------- ImageNet ResNet-34
_IMAGENET_WEIGHTS = {"IMAGENET1K_V1": ResNet34_Weights.IMAGENET1K_V1}


def imagenet_weights_path(weights: str = "IMAGENET1K_V1") -> str:
    """Where torch's hub cache keeps (or would keep) the file of ``weights``.

    That is ``$TORCH_HOME/hub/checkpoints/<file>`` (``~/.cache/torch`` without
    ``TORCH_HOME``); copy the file there to use the weights on an offline machine.
    """
    url = _IMAGENET_WEIGHTS[weights].url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def resnet34_imagenet(
    num_classes: int = 1000,
    in_channels: int = 3,
    image_size: int = 224,
    *,
    weights: str | None = "IMAGENET1K_V1",
    progress: bool = True,
) -> nn.Module:
    """torchvision's ResNet-34, by default with ``ResNet34_Weights.IMAGENET1K_V1``.

    The weights (83 MB, top-1 73.3 % on ImageNet) come from torch's hub cache
    (:func:`imagenet_weights_path`) or are downloaded into it, with their hash
    checked, exactly as ``torchvision.models.resnet34(weights=...)`` does. When the
    download is impossible (no internet, or ``$PARAMSTRESS_OFFLINE`` set and the
    file not cached) a :class:`WeightsUnavailable` error says where to put the file.
    ``weights=None`` gives the untrained architecture (any ``num_classes`` and
    ``in_channels``; a 1-channel model gets a 1-channel 7×7 stem). ``image_size``
    is not used by the architecture (global average pooling); inputs should be at
    least 32×32, and the pretrained weights expect about 224×224.
    """
    if weights is None:
        model = torchvision.models.resnet34(weights=None, num_classes=num_classes)
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        return model
    if weights not in _IMAGENET_WEIGHTS:
        raise ValueError(
            f"unknown weights {weights!r} for resnet34_imagenet; use one of "
            f"{sorted(_IMAGENET_WEIGHTS)} or weights=None for an untrained model"
        )
    spec = _IMAGENET_WEIGHTS[weights]
    n_categories = len(spec.meta["categories"])
    if num_classes != n_categories or in_channels != 3:
        raise ValueError(
            f"the {weights} weights classify 3-channel images into {n_categories} classes; got "
            f"num_classes={num_classes}, in_channels={in_channels}. Use an ImageNet-style dataset, "
            "or weights=None to build an untrained ResNet-34 of another shape"
        )
    path = imagenet_weights_path(weights)
    fix = (
        f"on a machine with internet run `python -c \"import paramstress.models as m; "
        f"m.build_model('resnet34_imagenet', 1000, 3, 224)\"` (it caches the file), or download "
        f"{spec.url} and copy it to {path} (set $TORCH_HOME to use another cache directory)"
    )
    if offline() and not os.path.exists(path):
        raise WeightsUnavailable(
            f"the ResNet-34 ImageNet weights are not cached at {path} and $PARAMSTRESS_OFFLINE "
            f"forbids downloading them; {fix}"
        )
    try:
        state = torch.hub.load_state_dict_from_url(
            spec.url, progress=progress, check_hash=True, map_location="cpu"
        )
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise WeightsUnavailable(
            f"could not download the ResNet-34 ImageNet weights from {spec.url} ({exc}); {fix}"
        ) from exc
    model = torchvision.models.resnet34(weights=None, num_classes=n_categories)
    model.load_state_dict(state)
    return model


# --------------------------------------------------------------------------- torchvision ImageNet-style nets
#: The bias SqueezeNet 1.1's final (classifier) convolution starts at; torchvision's is 0,
#: which lets the ReLU after it silence every class logit for good under the paper's
#: training (see :func:`torchvision_net`).
SQUEEZENET_FINAL_BIAS = 1.0
#: Models whose initialisation changed after checkpoints of them may have been cached: the
#: revision is part of :func:`paramstress.training.config_hash` for these models only, so a
#: checkpoint trained from the old initialisation is never loaded for the new one (the keys of
#: every other model are unchanged).
INIT_REVISIONS: dict[str, str] = {"squeezenet1_1": f"final_bias={SQUEEZENET_FINAL_BIAS}"}
#: Smallest square input each ImageNet-style net accepts (SqueezeNet's unpadded
#: stride-2 stem and three ceil-mode max-pools leave nothing of a 16×16 image).
_MIN_IMAGE_SIZE = {"squeezenet1_1": 17}
#: Where the first convolution sits in each torchvision architecture.
_FIRST_CONV = {
    "resnet18": "conv1",
    "resnet50": "conv1",
    "squeezenet1_1": "features.0",
    "shufflenet_v2_x1_0": "conv1.0",
    "shufflenet_v2_x0_5": "conv1.0",
}


def torchvision_net(
    name: str, num_classes: int, in_channels: int, image_size: int, *, final_bias: float | None = None
) -> nn.Module:
    """An untrained torchvision ImageNet-style classifier, as Pravin et al. (2023) train it.

    The networks of Pravin et al., "Fragility, robustness and antifragility in deep
    learning" (2023), §4.3 "Experimental set-up" (training of DNNs on clean data):

    * ``resnet18``, ``resnet50``: He, Zhang, Ren and Sun, "Deep Residual Learning
      for Image Recognition", CVPR 2016 (BasicBlock [2, 2, 2, 2]; Bottleneck
      [3, 4, 6, 3]);
    * ``squeezenet1_1``: Iandola, Han et al., "SqueezeNet: AlexNet-level accuracy
      with 50x fewer parameters and <0.5MB model size", arXiv:1602.07360, 2016
      (version 1.1 of the official repository);
    * ``shufflenet_v2_x1_0`` (what the paper names) and ``shufflenet_v2_x0_5``
      (what the official code, SynapFilter/InferLink, actually trains): Ma, Zhang,
      Zheng and Sun, "ShuffleNet V2: Practical Guidelines for Efficient CNN
      Architecture Design", ECCV 2018.

    They are torchvision's implementations with ``weights=None`` and ``num_classes``
    set, with torchvision's own initialisation (except SqueezeNet 1.1's classifier bias,
    below) (as in the official code; the paper's
    text says "Kaiming uniform", which is PyTorch's default for convolutions and
    torchvision's choice for SqueezeNet, while torchvision's ResNets use
    Kaiming-normal), used **unchanged on 28×28/32×32
    inputs** as the official code does: the ImageNet stems (stride-2 convolution and
    max-pool) reduce such images to a few pixels before the first stage, and global
    average pooling absorbs whatever is left. The only change: for
    ``in_channels != 3`` (MNIST-like digits) the first convolution is replaced by
    one with the same out-channels, kernel, stride, padding and bias but
    ``in_channels`` inputs, initialised as torchvision initialises that
    architecture's convolutions (ResNet: Kaiming-normal, fan-out; SqueezeNet:
    Kaiming-uniform, zero bias; ShuffleNet V2: PyTorch's default ``Conv2d`` init).
    Parameter names are torchvision's (``conv1.weight``, ``features.0.weight``,
    ``conv1.0.weight``, ...).

    SqueezeNet 1.1 works on 28×28 unchanged (feature maps 13 → 6 → 3 → 1 through
    its ceil-mode max-pools; 32×32: 15 → 7 → 3 → 1) and needs ``image_size >= 17``
    (checked); the other four accept any size.

    **SqueezeNet 1.1's classifier bias starts at** ``final_bias`` (default
    :data:`SQUEEZENET_FINAL_BIAS` = 1.0; torchvision starts it at 0). Its classifier is
    dropout → 1×1 convolution → **ReLU** → global average pool, so every class logit is
    ``max(0, w·f + b)``. torchvision draws the final convolution's weights from
    N(0, 0.01) and sets ``b = 0``, so about half the logits start at 0 on any input, and
    with Adam at 1e-3 (§4.3) the cross-entropy pushes every class's pre-activation down on
    the other classes' images faster than the class's own images push it up: once it is
    negative on every input its ReLU passes no gradient and the class is never predicted
    again: trained as the paper trains it on 28×28/32×32 images, all ten logits die and
    the network predicts one class. With the bias at 1 every logit starts active on every
    input, each class gets the gradient of its own images from the first steps, and the
    same training learns all ten classes. The measurements behind this (bias 0, 0.1, 0.5, 1;
    other initialisations, learning rates and warm-up, which did not help) are
    ``scripts/squeezenet_collapse.py`` and its docstring. This is an initialisation choice, not an
    architectural one: the layers, the ReLU and the weights' initialisation (torchvision's:
    Kaiming-uniform, N(0, 0.01) for the final convolution) are unchanged, the paper states
    only that weights are Kaiming-uniform, not how biases start, and filtering never touches
    biases. ``final_bias=0.0`` gives torchvision's initialisation exactly (the collapsing
    one); ``final_bias`` is only accepted for ``squeezenet1_1``. The training cache key
    (:func:`paramstress.training.config_hash`) does not see it: a checkpoint trained before
    this default (or with another ``final_bias``) under the same config is read back as is.
    """
    if name not in _FIRST_CONV:
        raise ValueError(f"unknown torchvision net {name!r}; valid: {', '.join(_FIRST_CONV)}")
    if final_bias is not None:
        if name != "squeezenet1_1":
            raise ValueError(f"final_bias is an option of squeezenet1_1 only, not of {name}")
        if not isinstance(final_bias, (int, float)) or isinstance(final_bias, bool) or not math.isfinite(final_bias):
            raise ValueError(f"final_bias must be a finite number, got {final_bias!r}")
    minimum = _MIN_IMAGE_SIZE.get(name, 1)
    if image_size < minimum:
        raise ValueError(
            f"{name} needs image_size >= {minimum}, got {image_size}; use larger images "
            "(resize them) or another model"
        )
    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if in_channels != 3:
        parent_name, _, attr = _FIRST_CONV[name].rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, attr)
        conv = nn.Conv2d(
            in_channels, old.out_channels, kernel_size=old.kernel_size, stride=old.stride,
            padding=old.padding, dilation=old.dilation, groups=old.groups, bias=old.bias is not None,
        )
        if name.startswith("resnet"):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        elif name.startswith("squeezenet"):
            nn.init.kaiming_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        setattr(parent, attr, conv)
    if name == "squeezenet1_1":
        # after every random draw, so the weights are torchvision's for any final_bias
        nn.init.constant_(model.classifier[1].bias, SQUEEZENET_FINAL_BIAS if final_bias is None else final_bias)
    return model


def _torchvision_builder(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int, image_size: int, **options: Any) -> nn.Module:
        return torchvision_net(name, num_classes, in_channels, image_size, **options)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"torchvision's {name} (see :func:`torchvision_net`)."
    return build


# --------------------------------------------------------------------------- factory
_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": small_cnn,
    "resnet18_cifar": resnet18_cifar,
    "resnet18_cifar_w16": resnet18_cifar_w16,
    "resnet34_cifar": resnet34_cifar,
    "resnet34_imagenet": resnet34_imagenet,
    "airbench_cifar": airbench_cifar,
    # torchvision's ImageNet-style nets of Pravin et al. (2023), see torchvision_net
    **{name: _torchvision_builder(name) for name in _FIRST_CONV},
}
#: The valid ``name`` arguments of :func:`build_model`.
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)
# Builders whose default loads pretrained weights; ``weights=None`` builds the bare architecture.
_PRETRAINED = {"resnet34_imagenet"}


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    *,
    seed: int | None = None,
    **options: Any,
) -> nn.Module:
    """Build the model called ``name`` for ``in_channels``×``image_size``² inputs.

    ``seed``, when given, makes the random initialisation reproducible without
    touching the caller's global random state (the init runs in a forked RNG).
    ``options`` go to the builder: ``width`` for ``small_cnn``, ``weights``
    and ``progress`` for ``resnet34_imagenet``, ``final_bias`` for ``squeezenet1_1``
    (see :func:`torchvision_net`). An unknown ``name`` raises ``ValueError``
    listing the valid names.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    builder = _BUILDERS[name]
    if seed is None:
        return builder(num_classes, in_channels, image_size, **options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(num_classes, in_channels, image_size, **options)


def parameter_shapes(
    name: str, num_classes: int, in_channels: int, image_size: int
) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the state dict that :func:`build_model` returns.

    Computed on the ``meta`` device: no memory for the weights, no random
    numbers drawn, no download. Used to check that a model matches a config.
    """
    options: dict[str, Any] = {"weights": None} if name in _PRETRAINED else {}
    with torch.device("meta"):
        model = build_model(name, num_classes, in_channels, image_size, **options)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}
