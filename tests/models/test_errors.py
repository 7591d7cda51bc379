"""Bad names and sizes raise a ValueError that names the bad value."""
from __future__ import annotations

import pytest

from bnnopt.models import CifarResNet, create_model
from bnnopt.registry import MODELS


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match=r"resnet2'.*resnet20.*vgg_small"):
        MODELS.get("resnet2")
    with pytest.raises(ValueError, match="nope"):
        create_model("nope")


ALL = ["resnet20", "resnet110", "resnet18", "vgg_small", "vgg_lab", "svhn_net", "lenet5", "lenet5_alq",
       "mlp"]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("arg", ["num_classes", "in_channels", "input_size"])
@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_bad_common_sizes(name, arg, value):
    with pytest.raises(ValueError, match=f"{arg}.*{value!r}"):
        create_model(name, **{arg: value})


@pytest.mark.parametrize("name, options, text", [
    ("vgg_small", {"width": 0}, "width.*0"),
    ("vgg_small", {"hidden": (16, -1)}, r"hidden.*-1"),
    ("vgg_small", {"hidden": 16}, "hidden.*16"),
    ("vgg_small", {"input_size": 4}, "input_size.*4"),
    ("svhn_net", {"width": -2}, "width.*-2"),
    ("lenet5", {"channels": (6,)}, r"channels.*\(6,\)"),
    ("lenet5", {"hidden": (0,)}, r"hidden.*\(0,\)"),
    ("lenet5", {"input_size": 8}, "input_size.*8"),
    ("mlp", {"hidden": 0}, "hidden.*0"),
    ("mlp", {"hidden_layers": -1}, "hidden_layers.*-1"),
    ("mlp", {"in_features": 0}, "in_features.*0"),
    ("resnet20", {"width": 0}, "width.*0"),
])
def test_bad_model_options(name, options, text):
    with pytest.raises(ValueError, match=text):
        create_model(name, **options)


@pytest.mark.parametrize("depth", [21, 2, 0, -4])
def test_cifar_resnet_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ValueError, match=f"{depth}"):
        CifarResNet(depth)


def test_valid_other_depth():
    assert CifarResNet(8).depth == 8
