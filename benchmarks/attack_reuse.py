"""FGSM work shared, side by side with the work done anew: the regenerate-mode filter sweep
and Fig. 12's curves (issue 28, "no work done twice").

Usage::

    OMP_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2 \\
      PARAMSTRESS_DATA_MIRROR=../shared/data python benchmarks/attack_reuse.py [--quick]

What is measured
----------------
1. **Regenerate-mode filter sweep** (:func:`paramstress.filtering.filter_sweep`, as the Δφ
   scorings of selective_backprop, corruption_vs_filtering and method_choices run it): every
   threshold of a layer crafts FGSM anew against the filtered network. The sweep now runs the
   part of the network before the filtered layer (the head) once per layer with gradients and
   keeps its graph; each threshold runs only the tail, with gradients, whose logits give the
   clean accuracy and whose input gradient (through the kept head graph) gives FGSM. Against
   ``reuse_activations=False``: every threshold runs the whole network for the clean score, for
   FGSM and for the adversarial score.
2. **Fig. 12's curves** (:func:`paramstress.selective.fgsm_curve`): the accuracy under FGSM at
   each ε of a grid now comes from one input gradient (its sign does not depend on ε), against
   one :func:`paramstress.adversarial.adversarial_accuracy` call per ε (a gradient each).

The network (``--model``, default ResNet-18 on MNIST, as the local pages) is seeded and briefly
trained (``--train-steps`` Adam steps, untimed). The paths take turns ``--repeats`` times; each
path's best time counts. The script exits 1 if any number differs between the two paths (they
must be equal, not close) or if the weights are not bit-identical afterwards.
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd
import torch

from _helpers import best_of, bits, trained

from paramstress import data
from paramstress.filtering import adversarial, filters, selective


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="two layers, T = 3, one repeat (under a minute)")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--train-steps", type=int, default=100, help="Adam steps before timing (default 100)")
    ap.add_argument("--layers", type=int, default=5, help="filtered layers of the sweep, evenly spaced (default 5)")
    ap.add_argument("--T", type=int, default=5, help="thresholds per filter (default 5, as the local pages)")
    ap.add_argument("--images", type=int, default=100, help="test images (default 100, as the local pages)")
    ap.add_argument("--eps-points", type=int, default=5, help="points of the FGSM curve, 0 included (default 5)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.quick:
        args.layers, args.T, args.repeats = 2, 3, 1
    torch.set_num_threads(1)
    ds = data.load("mnist")
    model = trained(args.model, ds, args.train_steps)
    before = bits(model)
    x, y = ds.test_x[:args.images], ds.test_y[:args.images]
    layers = filters.filterable_layers(model)
    scopes = [layers[round(i * (len(layers) - 1) / max(1, args.layers - 1))] for i in range(args.layers)]
    eps = 0.2
    print(f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, 1 thread; "
          f"{args.model} on MNIST ({args.train_steps} Adam steps), {len(y)} test images, ε = {eps}")

    def sweep(reuse: bool) -> pd.DataFrame:
        return filters.filter_sweep(model, x, y, scopes=scopes, T=args.T, eps=eps, adversarial="regenerate",
                                    transform=ds.normalize, batch_size=500, reuse_activations=reuse)

    times, out = best_of({"whole network": lambda: sweep(False), "kept head": lambda: sweep(True)}, args.repeats)
    same = out["whole network"].equals(out["kept head"])
    stats = out["kept head"].attrs["stats"]
    print(f"regenerate-mode sweep, {len(scopes)} layers x 3 filters x T = {args.T} ({len(out['kept head'])} rows, "
          f"{stats['evaluations']} evaluated): whole network {times['whole network']:.1f} s, kept head "
          f"{times['kept head']:.1f} s, {times['whole network'] / times['kept head']:.2f}x; rows identical: {same}")

    xn = ds.normalize(x)
    grid = selective.eps_grid(eps, args.eps_points)

    def per_eps() -> list[float]:
        return [adversarial.adversarial_accuracy(model, xn, y, e, batch_size=500) for e in grid]

    def one_gradient() -> list[float]:
        return selective.fgsm_curve(model, xn, y, grid, batch_size=500)["accuracy"].tolist()

    ctimes, cout = best_of({"per eps": per_eps, "one gradient": one_gradient}, args.repeats + 1)
    curve_same = cout["per eps"] == cout["one gradient"]
    print(f"Fig. 12 curve, {len(grid)} points ({len(y)} images): a gradient per ε {ctimes['per eps']:.2f} s, one "
          f"gradient {ctimes['one gradient']:.2f} s, {ctimes['per eps'] / ctimes['one gradient']:.2f}x; "
          f"accuracies identical: {curve_same}")
    restored = all(torch.equal(before[k], v) for k, v in bits(model).items())
    if not restored:
        print("the weights changed")
    return 0 if same and curve_same and restored else 1


if __name__ == "__main__":
    sys.exit(main())
