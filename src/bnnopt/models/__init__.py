"""bnnopt.models: plain nn.Module model zoo (no quantization inside), registered in MODELS.

Every constructor takes ``num_classes``, ``in_channels`` and ``input_size`` plus
model-specific options, and validates them (ValueError naming the bad value)::

    from bnnopt.models import resnet20, load_pretrained
    model = load_pretrained(resnet20(), "shared/pretrained/resnet20-cifar10-fp.pth")
    MODELS.get("resnet20")(num_classes=10)        # the same constructor, by name
    create_model("vgg_small", num_classes=100)    # shorthand for the line above

Registered names: resnet20/32/44/56/110 (CIFAR), resnet18, vgg_small, vgg_lab,
svhn_net, lenet5, lenet5_alq, mlp. Inputs are expected normalised; the official FSG
checkpoints use CIFAR10_MEAN / CIFAR10_STD below.
"""
from __future__ import annotations

from typing import Any

from torch import nn

# Importing the modules registers their constructors in MODELS.
from bnnopt.models.gpt import GPT, GPT_POLICY, gpt_base, gpt_small, gpt_tiny  # noqa: F401
from bnnopt.models.cifar_resnet import (  # noqa: F401
    CifarResNet,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
)
from bnnopt.models.lenet import LeNet5, LeNet5ALQ, lenet5, lenet5_alq  # noqa: F401
from bnnopt.models.mlp import MLP, mlp  # noqa: F401
from bnnopt.models.pretrained import extract_state_dict, load_pretrained  # noqa: F401
from bnnopt.models.resnet18 import ResNet18, resnet18  # noqa: F401
from bnnopt.models.vgg import BinaryConnectVGG, svhn_net, vgg_lab, vgg_small  # noqa: F401
from bnnopt.registry import MODELS

#: Per-channel normalisation of the official FSG / MetaQuant CIFAR-10 pipeline
#: (utils/dataset.py there); with it the shared FP checkpoints reach their
#: published accuracy. (0.2023, 0.1994, 0.2010) is the widely copied "std",
#: not the true pixel std (0.2470, 0.2435, 0.2616) - use these for the checkpoints.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


def create_model(name: str, **options: Any) -> nn.Module:
    """``MODELS.get(name)(**options)``: build a registered model (ValueError on unknown name)."""
    return MODELS.get(name)(**options)


__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "create_model", "load_pretrained", "extract_state_dict",
    "CifarResNet", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "ResNet18", "resnet18", "BinaryConnectVGG", "vgg_small", "vgg_lab", "svhn_net",
    "LeNet5", "lenet5", "LeNet5ALQ", "lenet5_alq", "MLP", "mlp",
]
