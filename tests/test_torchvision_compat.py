"""The one guarded place that makes torchvision importable on a CPU-only torch."""
import subprocess
import sys

import torch

from paramstress import _torchvision_compat as compat


def test_torchvision_imports_after_paramstress():
    code = ("import paramstress, torchvision, torchvision.models, torchvision.datasets;"
            "from paramstress import _torchvision_compat as c; print(c.STATE)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("native", "shim")


def test_shim_acts_only_when_the_c_ops_fail():
    # In this process paramstress is imported: the state says which branch ran, and it
    # must agree with an independent probe of the compiled extension.
    assert compat.STATE == ("native" if compat._extension_loads_in_subprocess() else "shim")


def test_reference_nms_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 50
    wh = torch.rand(60, 2, generator=g) * 20 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(60, generator=g)
    keep = compat.nms_reference(boxes, scores, 0.3)

    def iou(a, b):
        lt = torch.maximum(a[:2], b[:2]); rb = torch.minimum(a[2:], b[2:])
        inter = (rb - lt).clamp(min=0).prod()
        area = lambda t: (t[2:] - t[:2]).prod()
        return inter / (area(a) + area(b) - inter)

    expected = []
    for i in scores.argsort(descending=True).tolist():
        if all(iou(boxes[i], boxes[j]) <= 0.3 for j in expected):
            expected.append(i)
    assert keep.tolist() == expected
    if compat.STATE == "shim":
        assert torch.ops.torchvision.nms(boxes, scores, 0.3).tolist() == expected
