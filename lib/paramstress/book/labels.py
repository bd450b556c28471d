"""Display labels of the book's data sets, networks and scores, in one place (the pages used
to carry their own copies), and the way back from a label to its name."""
from __future__ import annotations

from collections.abc import Mapping

__all__ = ["DATASETS", "ARCHS", "SCORES", "ARMS", "ARM_COLOURS", "REFERENCES", "label", "name_of"]

#: paramstress.data names → labels.
DATASETS: dict[str, str] = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
                            "cifar10-jpeg": "CIFAR-10 (JPEG)", "tiny-imagenet": "Tiny ImageNet",
                            "tiny-imagenet-80-20": "Tiny ImageNet (80/20)"}
#: paramstress.models names of the filtering pages' networks → labels.
ARCHS: dict[str, str] = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "squeezenet1_1": "SqueezeNet 1.1",
                         "shufflenet_v2_x1_0": "ShuffleNet V2 x1.0", "shufflenet_v2_x0_5": "ShuffleNet V2 x0.5"}
#: selective backpropagation's arms (paramstress.selective.ARMS) → labels, and their colours.
ARMS: dict[str, str] = {"selective": "selective backprop", "control": "regular backprop (same restarts)",
                        "regular": "regular backprop (uninterrupted)"}
ARM_COLOURS: dict[str, str] = {"selective": "#1b9e9e", "control": "#f28e2b", "regular": "#9c9c9c"}
#: Δφ's references (paramstress.fragility.REFERENCES) → labels.
REFERENCES: dict[str, str] = {"own": "own (paper's text)", "clean": "clean for both", "chance": "chance-corrected",
                              "first": "first threshold"}
#: Pravin et al.'s scores → labels.
SCORES: dict[str, str] = {"phi_clean": "φ_clean", "phi_adv": "φ_adv", "delta_phi": "Δφ"}


def label(name: str, table: Mapping[str, str] = DATASETS) -> str:
    """The label of ``name`` in ``table`` (the name itself when it has none)."""
    return table.get(name, name)


def name_of(text: str, table: Mapping[str, str]) -> str:
    """The name whose label is ``text`` (or ``text`` itself when it is a name of ``table``);
    ``KeyError`` naming the known labels otherwise."""
    if text in table:
        return text
    back = {v: k for k, v in table.items()}
    if text not in back:
        raise KeyError(f"{text!r} is neither a name nor a label of {sorted(table)} / {sorted(back)}")
    return back[text]
