"""A fast CIFAR-10 network: the design of Keller Jordan's *airbench94*, on the book's one loop.

Why: Table 2 of Sun et al. (2021) on CIFAR-10 needs six trainers (the baseline, Eq. 16,
Eq. 13, AWP, SAM, ASAM), three of them two-pass and one double-backward, times several
seeds, and a GPU command of this project lasts at most 10 minutes. The paper's ResNet-34
takes about 4 s per epoch on an H200 (params/corruption.yml), so even one seed of the six
trainers at a useful number of epochs does not fit. Jordan's network reaches 94 % on
CIFAR-10 in under 10 epochs of about 0.4 s each on an A100.

Source of the design: K. Jordan, "94 % on CIFAR-10 in 3.29 seconds on a single GPU"
(arXiv:2404.00498, 2024) and https://github.com/KellerJordan/cifar10-airbench
(``airbench94.py``: 94.01 % mean test accuracy over 1,000 runs in 3.83 s on an A100), which
descends from tysam-code's hlb-CIFAR10 and D. Page's "How to train your ResNet" (Myrtle.ai,
2018). The facts taken from it (this code is written here, not copied):

* **Network** (:class:`AirbenchNet`): a 2×2 convolution without padding from 3 to
  ``2·3·2² = 24`` channels whose filters are fixed (the *whitening* layer, below) and whose
  bias is trained, GELU; then three *conv groups* of 64, 256 and 256 channels, each
  ``conv3×3 → max-pool 2×2 → BN → GELU → conv3×3 → BN → GELU`` (convolutions without
  bias, "same" padding); max-pool 3×3; a linear layer without bias to the classes; the
  logits multiplied by 1/9. The batch norms have no trained scale (it stays 1), only a
  trained shift, ``eps = 1e-12`` and a fast running-statistics momentum (airbench's 0.6 is
  PyTorch's ``momentum = 0.4``). About 1.97 M parameters.
* **Whitening initialisation** (:meth:`AirbenchNet.init_from_data`, after Page 2018): the
  first layer's 24 filters are the 12 eigenvectors of the covariance of all 2×2×3 patches of
  (some of) the normalised training images, each divided by ``sqrt(eigenvalue + 5e-4)``,
  and their negatives. :func:`paramstress.training.train` calls it on every network it
  builds that has this method, with the first :data:`WHITENING_IMAGES` training images.
  The filters are a buffer, not a parameter: they are fixed preprocessing computed from the
  data, so the optimizer, the corruptions of Sun et al. (which perturb parameters) and the
  synaptic filters leave them alone (airbench, too, never trains them).
* **Identity (Dirac) initialisation**: the first ``in_channels`` filters of every 3×3
  convolution pass their input channel through unchanged (``nn.init.dirac_``); the others
  keep PyTorch's default initialisation.
* **Test-time augmentation** (``tta``): in eval mode the network returns the mean logits of
  the image and its mirror image (``tta=1``), and with ``tta=2`` (airbench's level 2, the
  default) half of that plus a quarter each of the same pair translated by one pixel up-left
  and down-right (reflect padding). Part of the network's function, so every evaluation
  of the book (accuracy, gradients for the corruption, flatness) sees the same function;
  training mode is one plain forward pass. Six forward passes per evaluated image.

What is *not* taken, and why: the book trains every model through one loop
(:class:`paramstress.training.TrainingLoop`: its objectives, checkpoints, resumption and
cache keys), with data on the device, random crops with zero padding and random flips
(:func:`paramstress.training.augment_batch`), SGD with Nesterov momentum and a per-step
schedule. Airbench's optimizer tricks live outside a network and would each need a new
seam in that loop: *lookahead* (every 5 steps the weights are replaced by an exponential
average; hlb-CIFAR10's), a 64× learning rate for the batch-norm shifts, freezing the
whitening bias after 3 epochs, alternating instead of random flips, translation by 2 pixels
with reflect padding, label smoothing 0.2 and a summed loss. Jordan's own ablation
(cifar10-zoo, ``airbench_ablations``) puts the network with flip TTA at 94 % in 35 epochs
with standard initialisation, 21 with whitening, 18 with whitening and Dirac
initialisation, 13.5 with the batch-norm learning-rate scaling and 12 with lookahead. This
module keeps the three network-level features (whitening, Dirac, TTA, which composes the
network with the Table 2 objectives: Eq. 13, AWP and SAM/ASAM are two passes through it
and Eq. 16 a double backward, all in training mode) and pays for the rest in epochs: what
it reaches on the CIFAR-10 JPEG copy is measured on the page that uses it, not claimed here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AirbenchNet", "WHITENING_IMAGES", "airbench_cifar", "whitening_filters"]

#: Training images whose 2×2 patches give the whitening filters (airbench: 5,000).
WHITENING_IMAGES = 5000
#: Added to each eigenvalue before the square root (airbench's ``eps``).
WHITENING_EPS = 5e-4


def whitening_filters(x: torch.Tensor, kernel_size: int = 2, eps: float = WHITENING_EPS, *,
                      transform=None, chunk: int = 500) -> torch.Tensor:
    """The ``2·C·k²`` whitening filters (``2CK²×C×k×k``) of the images ``x`` (``N×C×H×W``,
    normalised, or made so by ``transform`` chunk by chunk): the eigenvectors of the
    (uncentred) covariance of all ``k×k`` patches, largest eigenvalue first, each divided by
    ``sqrt(eigenvalue + eps)``, then the same filters negated. The covariance is summed in
    float64 over chunks of ``chunk`` images on ``x``'s device; returned as float32 (CPU)."""
    if x.dim() != 4 or x.shape[0] < 1:
        raise ValueError(f"whitening_filters needs a non-empty N×C×H×W batch, got shape {tuple(x.shape)}")
    c = x.shape[1]
    d = c * kernel_size * kernel_size
    covariance = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    count = 0
    for start in range(0, x.shape[0], chunk):
        xb = x[start:start + chunk]
        xb = (transform(xb) if transform is not None else xb).double()
        patches = xb.unfold(2, kernel_size, 1).unfold(3, kernel_size, 1)  # n×C×H'×W'×k×k
        flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, d)
        covariance += flat.T @ flat
        count += flat.shape[0]
    eigenvalues, eigenvectors = torch.linalg.eigh((covariance / count).cpu())  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    filters = eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]
    filters = filters.reshape(-1, c, kernel_size, kernel_size)
    return torch.cat((filters, -filters)).float()


class _ShiftNorm(nn.Module):
    """Batch norm with a fixed scale of 1 and a trained shift (``bias``)."""

    def __init__(self, channels: int, momentum: float = 0.4, eps: float = 1e-12) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, eps=eps, momentum=momentum, affine=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) + self.bias.view(1, -1, 1, 1).to(x.dtype)


class _ConvGroup(nn.Module):
    """``conv3×3 → max-pool 2×2 → BN → GELU → conv3×3 → BN → GELU``."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding="same", bias=False)
        self.norm1 = _ShiftNorm(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding="same", bias=False)
        self.norm2 = _ShiftNorm(channels_out)
        for conv in (self.conv1, self.conv2):
            nn.init.dirac_(conv.weight.data[:conv.in_channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class _Whiten(nn.Module):
    """The first layer: a 2×2 convolution with fixed filters (a buffer) and a trained bias."""

    def __init__(self, in_channels: int, kernel_size: int = 2) -> None:
        super().__init__()
        width = 2 * in_channels * kernel_size ** 2
        default = nn.Conv2d(in_channels, width, kernel_size)  # PyTorch's init until data init replaces it
        self.register_buffer("weight", default.weight.detach().clone())
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


class AirbenchNet(nn.Module):
    """Jordan's airbench94 network (module docstring): whitening 2×2 convolution, three conv
    groups, max-pool 3×3, a linear head without bias, logits × ``scale``.

    Parameter names: ``whiten.bias``; ``block{1,2,3}.conv{1,2}.weight``,
    ``block{1,2,3}.norm{1,2}.bias``; ``head.weight``. Buffers: ``whiten.weight`` (the
    whitening filters) and the batch norms' running statistics. ``tta`` is the eval-mode
    test-time augmentation (0 none, 1 mirror, 2 mirror and translate).
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int, *,
                 widths: tuple[int, int, int] = (64, 256, 256), scale: float = 1 / 9, tta: int = 2) -> None:
        super().__init__()
        if tta not in (0, 1, 2):
            raise ValueError(f"tta must be 0 (none), 1 (mirror) or 2 (mirror and translate), got {tta!r}")
        side = image_size - 1
        for _ in range(3):
            side //= 2
        if side < 3:
            raise ValueError(f"airbench_cifar pools 8× after a 2×2 convolution and needs image_size >= 25, "
                             f"got {image_size}")
        self.tta = tta
        self.scale = scale
        self.whiten = _Whiten(in_channels)
        width_in = self.whiten.bias.numel()
        self.block1 = _ConvGroup(width_in, widths[0])
        self.block2 = _ConvGroup(widths[0], widths[1])
        self.block3 = _ConvGroup(widths[1], widths[2])
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, transform=None) -> None:
        """Set the whitening filters from the first :data:`WHITENING_IMAGES` training images
        ``x`` (N×C×H×W), normalised by ``transform`` (:func:`whitening_filters`)."""
        filters = whitening_filters(x[:WHITENING_IMAGES], transform=transform)
        self.whiten.weight.copy_(filters.to(self.whiten.weight.device))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """One plain forward pass (no test-time augmentation)."""
        x = F.gelu(self.whiten(x))
        x = self.block3(self.block2(self.block1(x)))
        x = F.max_pool2d(x, 3).flatten(1)
        return self.head(x) * self.scale

    def _mirrored(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.logits(x) + self.logits(x.flip(-1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.tta == 0:
            return self.logits(x)
        if self.tta == 1:
            return self._mirrored(x)
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        translated = 0.5 * (self._mirrored(padded[..., :h, :w]) + self._mirrored(padded[..., 2:, 2:]))
        return 0.5 * self._mirrored(x) + 0.5 * translated


def airbench_cifar(num_classes: int, in_channels: int, image_size: int, *, tta: int = 2) -> nn.Module:
    """Jordan's airbench94 network with mirror-and-translate TTA (see :class:`AirbenchNet`)."""
    return AirbenchNet(num_classes, in_channels, image_size, tta=tta)
