"""Make ``import torchvision`` work on a CPU-only torch (the one guarded place).

PyPI's torchvision wheels are linked against CUDA. On a machine whose torch is the
CPU build, torchvision's C++ extension (``torchvision/_C*.so``) fails to load, its
custom ops are never defined, and ``import torchvision`` then dies inside
``torchvision/_meta_registrations.py`` with::

    RuntimeError: operator torchvision::nms does not exist

This module probes the extension *before* torchvision is imported. Only when the
extension really cannot be loaded does it define ``torchvision::nms`` and
``torchvision::qnms`` with a pure-PyTorch implementation (greedy non-maximum
suppression, the algorithm of torchvision's own CPU kernel), so that the import
succeeds and the rest of torchvision (datasets, models, transforms, IO) works.
``torch.ops.torchvision.nms`` then runs the shim; torchvision's Python wrappers of
its detection ops still refuse (they check the extension), and paramstress uses none.

Call :func:`ensure_torchvision_importable` (``paramstress`` does it on import).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

import torch

#: Set by :func:`ensure_torchvision_importable`: ``None`` (not yet checked),
#: ``"native"`` (the C++ ops loaded) or ``"shim"`` (pure-PyTorch ops registered).
STATE: str | None = None
_LIBRARY = None  # keeps the torch.library.Library alive


def _extension_path() -> str | None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = list(spec.submodule_search_locations)[0]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = os.path.join(folder, "_C" + suffix)
        if os.path.exists(candidate):
            return candidate
    return None


def native_ops_load() -> bool:
    """True when torchvision's compiled ops are (or can be) loaded."""
    if _op_defined("nms"):
        return True
    path = _extension_path()
    if path is None:
        return False
    try:
        torch.ops.load_library(path)
    except (OSError, ImportError, RuntimeError):
        return False
    return _op_defined("nms")


def _op_defined(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of kept boxes (x1, y1, x2, y2), by decreasing score."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    boxes = boxes.float()
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort(descending=True, stable=True)
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for pos in range(len(order)):
        if suppressed[pos]:
            continue
        i = order[pos]
        keep.append(i)
        rest = order[pos + 1:]
        xx1 = torch.maximum(x1[i], x1[rest])
        yy1 = torch.maximum(y1[i], y1[rest])
        xx2 = torch.minimum(x2[i], x2[rest])
        yy2 = torch.minimum(y2[i], y2[rest])
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[pos + 1:] |= iou > iou_threshold
    return torch.stack(keep).long()


def _register_shim() -> None:
    global _LIBRARY
    lib = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        if not _op_defined(name):
            lib.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.impl(name, nms_reference, "CompositeExplicitAutograd")
    _LIBRARY = lib


def ensure_torchvision_importable() -> str:
    """Probe torchvision's C++ ops; register the pure-PyTorch shim only if they fail."""
    global STATE
    if STATE is not None:
        return STATE
    if "torchvision" in sys.modules or native_ops_load():
        STATE = "native"  # already imported (so it worked) or the C++ ops loaded
    else:
        _register_shim()
        STATE = "shim"
    return STATE


def _extension_loads_in_subprocess() -> bool:
    """Independent probe (a fresh interpreter, no shim): can torchvision's ``_C`` load?"""
    import subprocess

    path = _extension_path()
    if path is None:
        return False
    code = f"import torch; torch.ops.load_library({path!r})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300).returncode == 0
