"""binarize_ on a ResNet-like CNN, a VGG-like Sequential and a Transformer-like MLP stack.

Checked on every model: the reported names are exactly the layers that became
QLayers; full-precision layers keep their exact outputs; the binarized model's
output equals the float model evaluated with Q(W) substituted for the swapped weights.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bnnopt.nn.convert import NothingSwappedWarning
from bnnopt.nn import (
    QLayer,
    QuantConfig,
    binarize_,
    quantizable_layers,
    quantized_layers,
    set_progress,
)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.layer1 = nn.Sequential(Block(4, 4, 1))
        self.layer2 = nn.Sequential(Block(4, 8, 2))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(x.mean(dim=(2, 3)))


def tiny_vgg():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 32), nn.ReLU(), nn.Linear(32, 10))


class AttnBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        h = self.norm(x)
        a = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / h.shape[-1] ** 0.5, dim=-1)
        x = x + self.o(a @ self.v(h))
        return x + self.mlp(x)


class TinyTransformer(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.embed = nn.Linear(5, d)
        self.blocks = nn.ModuleList([AttnBlock(d), AttnBlock(d)])
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        x = self.embed(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean(dim=1))


def _input(model):
    g = torch.Generator().manual_seed(0)
    if isinstance(model, TinyTransformer):
        return torch.randn(2, 4, 5, generator=g)
    return torch.randn(2, 3, 8, 8, generator=g)


def _check_swap(make, config, expected, filter_fn=None):
    torch.manual_seed(0)
    ref = make().eval()
    model = copy.deepcopy(ref)
    names = binarize_(model, config, filter_fn)
    assert names == expected
    # exactly the reported layers are quantized, and nothing else changed type
    assert [n for n, _ in quantized_layers(model)] == names
    ref_mods, new_mods = dict(ref.named_modules()), dict(model.named_modules())
    assert ref_mods.keys() <= new_mods.keys()
    for n in new_mods.keys() - ref_mods.keys():  # only the quantizers inside swapped layers
        assert any(n.startswith(s + ".") for s in names), n
    for n, m in ref_mods.items():
        if n not in names:
            assert type(new_mods[n]) is type(m), n
    # full-precision layers: identical outputs (captured with hooks)
    x = _input(ref)
    fp_names = [n for n, _ in quantizable_layers(ref) if n not in names]
    got, want = {}, {}
    for store, mdl in ((want, ref), (got, model)):
        hooks = [dict(mdl.named_modules())[n].register_forward_hook(
            lambda _m, _i, o, n=n, store=store: store.__setitem__(n, o)) for n in fp_names]
        out = mdl(x)
        for h in hooks:
            h.remove()
        store["__out__"] = out
    # whole output: the float model with Q(W) substituted for each swapped weight
    sub = copy.deepcopy(ref)
    with torch.no_grad():
        for n in names:
            dict(sub.named_modules())[n].weight.copy_(new_mods[n].quantized_weight())
    torch.testing.assert_close(got["__out__"], sub(x), rtol=1e-5, atol=1e-5)
    if fp_names:
        first = fp_names[0]
        if first == next(iter(quantizable_layers(ref)))[0]:
            assert torch.equal(got[first], want[first])  # upstream of all quantization
    return model


RESNET_ALL = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2",
              "layer2.0.downsample.0", "fc"]


def test_resnet_like_default_keeps_first_and_last():
    model = _check_swap(TinyResNet, QuantConfig(), RESNET_ALL[1:-1])
    assert type(model.conv1) is nn.Conv2d and type(model.fc) is nn.Linear


def test_resnet_like_binarize_all_includes_shortcut():
    _check_swap(TinyResNet, QuantConfig(keep_first=False, keep_last=False), RESNET_ALL)
    _check_swap(TinyResNet, QuantConfig(keep_first=False), RESNET_ALL[:-1])
    _check_swap(TinyResNet, QuantConfig(keep_last=False), RESNET_ALL[1:])


def test_resnet_like_selection_by_regex_and_filter():
    _check_swap(TinyResNet, QuantConfig(include=r"^layer2"), RESNET_ALL[3:6])
    _check_swap(TinyResNet, QuantConfig(exclude=r"downsample"), RESNET_ALL[1:5])
    only_3x3 = lambda name, m: m.kernel_size == (3, 3)  # noqa: E731
    _check_swap(TinyResNet, QuantConfig(keep_first=False, keep_last=False),
                RESNET_ALL[:5], filter_fn=lambda n, m: isinstance(m, nn.Conv2d) and only_3x3(n, m))


def test_vgg_like_sequential():
    _check_swap(tiny_vgg, QuantConfig(), ["2", "5", "9"])
    _check_swap(tiny_vgg, QuantConfig(keep_first=False, keep_last=False,
                                      weight_quantizer="bwn", estimator="clipped_ste"),
                ["0", "2", "5", "9", "11"])


def test_transformer_like_linear_stack():
    all_names = [n for n, _ in quantizable_layers(TinyTransformer())]
    assert all_names[0] == "embed" and all_names[-1] == "head" and len(all_names) == 14
    _check_swap(TinyTransformer, QuantConfig(weight_bits=2), all_names[1:-1])
    _check_swap(TinyTransformer, QuantConfig(include=r"\.(q|k|v)$"),
                [n for n in all_names if n.split(".")[-1] in "qkv"])
    _check_swap(TinyTransformer, QuantConfig(exclude=r"mlp"),
                [n for n in all_names[1:-1] if "mlp" not in n])


def test_multihead_attention_projections_are_swapped():
    # nn.MultiheadAttention reads in_proj_weight / out_proj.weight directly, so binarize_
    # swaps the whole module for a QMultiheadAttention holding its projections as layers.
    from bnnopt.nn import QMultiheadAttention

    model = nn.Sequential(nn.Linear(4, 8), nn.MultiheadAttention(8, 2, batch_first=True),
                          nn.Linear(8, 2))
    assert binarize_(model, QuantConfig(keep_first=False, keep_last=False)) == [
        "0", "1.in_proj", "1.out_proj", "2"]
    assert isinstance(model[1], QMultiheadAttention)
    model = nn.Sequential(nn.Linear(4, 8), nn.MultiheadAttention(8, 2, batch_first=True),
                          nn.Linear(8, 2))
    assert binarize_(model, QuantConfig(keep_first=False, keep_last=False, exclude="out_proj")) == [
        "0", "1.in_proj", "2"]
    assert type(model[1].out_proj) is nn.Linear and isinstance(model[1].in_proj, QLayer)


def test_binarize_twice_is_a_no_op_and_shared_modules():
    model = TinyResNet()
    assert binarize_(model) == RESNET_ALL[1:-1]
    with pytest.warns(NothingSwappedWarning, match="keep_first=True, keep_last=True excluded all"):
        assert binarize_(model) == []  # first/last stay, nothing new to swap
    shared = nn.Linear(4, 4)
    m = nn.Sequential(nn.Linear(4, 4), shared, nn.ReLU(), shared, nn.Linear(4, 4))
    assert binarize_(m) == ["1"]
    assert m[1] is m[3] and isinstance(m[1], QLayer)


def test_preserves_training_flag_dtype_and_requires_grad():
    model = tiny_vgg().double().eval()
    model[2].weight.requires_grad_(False)
    binarize_(model)
    assert not model[2].training and model[2].weight.dtype == torch.float64
    assert not model[2].weight.requires_grad and model[5].weight.requires_grad


def test_set_progress_on_model():
    model = TinyResNet()
    binarize_(model, QuantConfig(weight_quantizer="sign", estimator="ede"))
    set_progress(model, 1.0)
    assert all(layer.weight_quantizer.estimator.t == pytest.approx(10.0)
               for _, layer in quantized_layers(model))


def test_bad_filter_fn():
    with pytest.raises(ValueError, match="filter_fn"):
        binarize_(TinyResNet(), QuantConfig(), filter_fn="conv")


def _zoo(name):
    from bnnopt.registry import MODELS

    try:
        return MODELS.get(name)
    except (ValueError, ImportError) as err:
        pytest.skip(f"model zoo has no {name!r} yet: {err}")


def test_zoo_resnet20_swaps_exactly_what_it_reports():
    make = _zoo("resnet20")
    model = make(num_classes=10)
    all_names = [n for n, _ in quantizable_layers(model)]
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 21  # 19 3x3 convs + 2 1x1 shortcut convs
    _check_swap(lambda: make(num_classes=10), QuantConfig(), all_names[1:-1])
    names = binarize_(make(num_classes=10), QuantConfig(keep_first=False, keep_last=False))
    assert names == all_names and len(names) == 22  # official FSG code: every layer


def test_zoo_vgg_small_swaps_exactly_what_it_reports():
    make = _zoo("vgg_small")
    all_names = [n for n, _ in quantizable_layers(make(num_classes=10))]
    model = make(num_classes=10)
    assert binarize_(model) == all_names[1:-1]
    assert [n for n, _ in quantized_layers(model)] == all_names[1:-1]


def test_binarize_refuses_a_non_module():
    with pytest.raises(ValueError, match="binarize_ expects a torch.nn.Module, got list"):
        binarize_([nn.Linear(2, 2)])


def test_binarize_that_swaps_nothing_warns():
    with pytest.warns(NothingSwappedWarning, match="has no unquantized Conv2d or Linear"):
        assert binarize_(nn.Sequential(nn.ReLU())) == []
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
    with pytest.warns(NothingSwappedWarning, match=r"include='nomatch'.*3 candidate"):
        assert binarize_(model, QuantConfig(include="nomatch")) == []
