"""The official FSG/MetaQuant CIFAR ResNet as options: BatchNorm1d before fc, all layers binarized."""
import pytest
import torch

from bnnopt.models import load_pretrained, resnet20
from bnnopt.nn import QuantConfig, binarize_


def test_fc_bn_normalises_the_pooled_features_before_fc():
    torch.manual_seed(0)
    model = resnet20(fc_bn=True).eval()
    model.bn2.running_mean.fill_(3.0)
    seen = {}
    model.avgpool.register_forward_hook(lambda m, i, o: seen.setdefault("pooled", o.flatten(1)))
    model.fc.register_forward_hook(lambda m, i, o: seen.setdefault("fc_in", i[0]))
    model(torch.randn(2, 3, 32, 32))
    expected = (seen["pooled"] - 3.0) / (1 + model.bn2.eps) ** 0.5
    assert torch.allclose(seen["fc_in"], expected, atol=1e-6)
    assert "bn2.weight" in model.state_dict() and "bn2.weight" not in resnet20().state_dict()
    with pytest.raises(ValueError, match="invalid fc_bn 'yes'"):
        resnet20(fc_bn="yes")


def test_official_policy_binarizes_conv1_fc_and_shortcuts():
    model = resnet20(fc_bn=True)
    names = binarize_(model, QuantConfig(keep_first=False, keep_last=False))
    # the official code's layer_name_list for ResNet-20: conv1, fc, 18 block convs, 2 shortcuts
    assert len(names) == 22
    assert {"conv1", "fc", "layer2.0.downsample.0", "layer3.0.downsample.0"} <= set(names)


def test_fp_checkpoint_loads_without_bn2(shared_dir):
    model = load_pretrained(resnet20(fc_bn=True), shared_dir / "pretrained" / "resnet20-cifar10-fp.pth")
    assert torch.equal(model.bn2.weight, torch.ones(64))
    with pytest.raises(ValueError, match="missing keys"):  # every other key is still required
        state = torch.load(shared_dir / "pretrained" / "resnet20-cifar10-fp.pth", map_location="cpu")
        state.pop("fc.bias")
        load_pretrained(resnet20(fc_bn=True), state)
