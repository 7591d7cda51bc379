"""Output shapes, parameter counts (closed form) and layer naming of every model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bnnopt.models import (
    CifarResNet, create_model, lenet5, lenet5_alq, mlp, resnet18, resnet20, svhn_net, vgg_lab, vgg_small,
)
from bnnopt.models.blocks import BasicBlock
from bnnopt.registry import MODELS

# name -> (constructor options, input shape of one sample)
CASES = {
    # ResNets pool globally, so 16x16 inputs keep the tests fast
    "resnet20": ({}, (3, 16, 16)),
    "resnet32": ({}, (3, 16, 16)),
    "resnet44": ({}, (3, 16, 16)),
    "resnet56": ({}, (3, 16, 16)),
    "resnet110": ({}, (3, 16, 16)),
    "resnet18": ({"input_size": 16}, (3, 16, 16)),
    # the VGGs' shapes do not depend on the width; their default sizes are
    # checked in the parameter-count tests
    "vgg_small": ({"width": 16}, (3, 32, 32)),
    "vgg_lab": ({"width": 16}, (3, 32, 32)),
    "svhn_net": ({"width": 16}, (3, 32, 32)),
    "lenet5": ({}, (1, 28, 28)),
    "lenet5_alq": ({}, (1, 28, 28)),
    "mlp": ({"hidden": 64}, (1, 28, 28)),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_registered_model_has_a_case():
    assert set(MODELS.names()) >= set(CASES)
    models = {e.name for e in MODELS.entries() if e.name in CASES}
    assert models == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_shape_train_and_eval(name):
    torch.manual_seed(0)
    options, shape = CASES[name]
    num_classes = 7
    model = create_model(name, num_classes=num_classes, **options)
    x = torch.randn(2, *shape)
    model.train()
    out = model(x)
    assert out.shape == (2, num_classes)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, num_classes)


@pytest.mark.parametrize("name", sorted(CASES))
def test_only_plain_float_layers(name):
    """No quantization inside: every Conv2d/Linear is exactly torch's class (binarize_ swaps them)."""
    options, _ = CASES[name]
    model = create_model(name, **options)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(type(m) in (nn.Conv2d, nn.Linear) for m in layers)


def _bn(c: int) -> int:
    return 2 * c


def cifar_resnet_params(depth: int, num_classes: int = 10, c_in: int = 3) -> int:
    """Closed form: stem + 3 stages of n blocks (two 3x3 convs + BNs, 1x1+BN projection) + fc."""
    n = (depth - 2) // 6
    total = c_in * 16 * 9 + _bn(16)
    cin = 16
    for w in (16, 32, 64):
        for _ in range(n):
            total += cin * w * 9 + w * w * 9 + 2 * _bn(w)
            if cin != w:
                total += cin * w + _bn(w)
            cin = w
    return total + 64 * num_classes + num_classes


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_resnet_param_counts(depth):
    model = create_model(f"resnet{depth}")
    assert n_params(model) == cifar_resnet_params(depth)
    assert n_params(CifarResNet(depth, num_classes=100, in_channels=1)) == cifar_resnet_params(depth, 100, 1)


def test_resnet20_is_about_027m():
    assert 0.26e6 < n_params(resnet20()) < 0.28e6  # He et al. 2016 Table 6: 0.27M


def test_resnet18_matches_torchvision_count_and_names():
    model = resnet18()
    assert n_params(model) == 11_689_512  # torchvision resnet18, 1000 classes
    keys = set(model.state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv2.weight",
                "layer2.0.downsample.0.weight", "layer4.1.bn2.num_batches_tracked",
                "fc.weight", "fc.bias"):
        assert key in keys
    assert "layer1.0.downsample.0.weight" not in keys
    assert model.conv1.kernel_size == (7, 7) and isinstance(model.maxpool, nn.MaxPool2d)


def test_resnet18_small_input_stem():
    small = resnet18(num_classes=10, small_input=True)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    assert resnet18(input_size=32).small_input and not resnet18(input_size=224).small_input
    assert not resnet18(input_size=32, small_input=False).small_input
    # ImageNet stem on 40x40 -> layer4 is 2x2; still classifies
    assert resnet18(num_classes=5, small_input=False).eval()(torch.randn(1, 3, 40, 40)).shape == (1, 5)


def vgg_params(width: int, hidden: tuple, out_bn: bool, num_classes: int = 10) -> int:
    widths = (width, width, 2 * width, 2 * width, 4 * width, 4 * width)
    total, c = 0, 3
    for w in widths:
        total += c * w * 9 + _bn(w)
        c = w
    f = c * 4 * 4
    for h in hidden:
        total += f * h + _bn(h)
        f = h
    return total + f * num_classes + (_bn(num_classes) if out_bn else num_classes)


def test_vgg_param_counts():
    assert n_params(vgg_small()) == vgg_params(128, (), False) == 4_660_106
    assert n_params(vgg_lab()) == vgg_params(128, (1024, 1024), True)
    assert n_params(svhn_net()) == vgg_params(64, (1024, 1024), True)
    assert n_params(vgg_small(width=8, hidden=(16,))) == vgg_params(8, (16,), False)


def test_mlp_param_count_and_flat_inputs():
    full = mlp()
    expected = 784 * 2048 + _bn(2048) + 2 * (2048 * 2048 + _bn(2048)) + 2048 * 10 + _bn(10)
    assert n_params(full) == expected
    digits = mlp(in_features=64, hidden=32, hidden_layers=2).eval()
    assert digits(torch.randn(4, 64)).shape == (4, 10)
    assert digits(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    plain = mlp(hidden=16, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in plain.modules())
    assert n_params(plain) == 784 * 16 + 16 + 2 * (16 * 16 + 16) + 16 * 10 + 10
    with pytest.raises(ValueError, match="784"):
        full(torch.randn(2, 3, 28, 28))


def test_lenet5_param_count():
    # classic 1998 sizes without BN: 61,706 parameters
    assert n_params(lenet5(batch_norm=False)) == (6 * 25 + 6) + (16 * 6 * 25 + 16) + (400 * 120 + 120) \
        + (120 * 84 + 84) + (84 * 10 + 10) == 61_706
    assert lenet5(in_channels=3, input_size=32).eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_lenet5_alq_is_alqs_network():
    """ALQ's LeNet-5 (BLAQ Table 4): 20C5-MP-50C5-MP-500-10 with biases, no BN."""
    model = lenet5_alq()
    assert n_params(model) == (20 * 25 + 20) + (50 * 20 * 25 + 50) + (800 * 500 + 500) \
        + (500 * 10 + 10) == 431_080
    kinds = [type(m).__name__ for m in model.modules() if not isinstance(m, nn.Sequential)]
    assert "BatchNorm2d" not in kinds and "BatchNorm1d" not in kinds
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.padding for c in convs] == [(0, 0), (0, 0)]
    assert model.classifier[1].in_features == 800
    bn = lenet5_alq(batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 2
    with pytest.raises(ValueError, match="input_size.*15"):
        lenet5_alq(input_size=15)


def test_basic_block_closed_form():
    """With BN2 zeroed the residual branch vanishes: y = relu(shortcut(x))."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5)
    same = BasicBlock(4, 4).eval()
    nn.init.zeros_(same.bn2.weight)
    assert same.downsample is None
    assert torch.equal(same(x), torch.relu(x))
    down = BasicBlock(4, 8, stride=2).eval()
    nn.init.zeros_(down.bn2.weight)
    conv, bn = down.downsample
    expected = torch.relu(bn(nn.functional.conv2d(x, conv.weight, stride=2)))
    torch.testing.assert_close(down(x), expected)
    assert down(x).shape == (2, 8, 3, 3)  # ceil(5 / 2)


def test_construction_is_deterministic_under_seed():
    torch.manual_seed(3)
    a = resnet20().state_dict()
    torch.manual_seed(3)
    b = resnet20().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
