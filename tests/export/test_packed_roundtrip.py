"""load_packed(export_packed(model)) gives the fake-quantized model's logits exactly (atol=0)."""
from __future__ import annotations

import io

import pytest
import torch

from bnnopt.export import (
    PackedConv2d,
    PackedLinear,
    export_packed,
    load_packed,
    read_manifest,
)
from bnnopt.nn import QLayer, QuantConfig, quantized_layers

ALL = {"keep_first": False, "keep_last": False}
CASES = {
    # name: (model, model options, quant config, input shape)
    "resnet20-1bit": ("resnet20", {}, QuantConfig(), (3, 32, 32)),
    "resnet20-bwn-channel-all": ("resnet20", {}, QuantConfig(
        weight_quantizer="bwn", quantizer_options={"per_channel": True}, **ALL), (3, 32, 32)),
    "mlp-1bit": ("mlp", {"hidden": 128}, QuantConfig(weight_bits=1, **ALL), (1, 28, 28)),
    "mlp-2bit": ("mlp", {"hidden": 128}, QuantConfig(weight_bits=2, **ALL), (1, 28, 28)),
    "mlp-4bit": ("mlp", {"hidden": 128}, QuantConfig(weight_bits=4, **ALL), (1, 28, 28)),
    "mlp-uniform-4bit": ("mlp", {"hidden": 64}, QuantConfig(weight_quantizer="uniform", weight_bits=4), (1, 28, 28)),
    "lenet5-1bit": ("lenet5", {}, QuantConfig(), (1, 28, 28)),
    "lenet5-bwn-W1A1": ("lenet5", {}, QuantConfig(weight_quantizer="bwn", act_quantizer="sign",
                                                  keep_first=False), (1, 28, 28)),
    "lenet5-W4A4": ("lenet5", {}, QuantConfig(weight_bits=4, act_quantizer="dorefa", act_bits=4, **ALL), (1, 28, 28)),
}


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory, quantized):
    """(model, loaded packed model, input shape, file) per (case, seed), built once per module."""
    cache = {}
    root = tmp_path_factory.mktemp("packed")

    def get(case, seed):
        if (case, seed) not in cache:
            name, options, config, shape = CASES[case]
            model = quantized(name, options, config, seed)
            path = root / f"{case}-{seed}.bnnpk"
            export_packed(model, path, {"model": name, "model_options": options, "dataset": "x"})
            cache[case, seed] = (model, load_packed(path), shape, path)
        return cache[case, seed]

    return get


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_logits_equal_exactly(roundtrip, case, seed):
    model, packed, shape, _ = roundtrip(case, seed)
    x = torch.randn(6, *shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(x)
        got = packed(x)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected), f"max |diff| {(got - expected).abs().max()}"


@pytest.mark.parametrize("case", ["resnet20-1bit", "mlp-2bit", "lenet5-bwn-W1A1"])
def test_packed_layers_hold_the_quantized_weights_bitwise(roundtrip, case):
    model, packed, _, path = roundtrip(case, 0)
    packed_modules = dict(packed.named_modules())
    qlayers = quantized_layers(model)
    assert qlayers, "the case must quantize something"
    for name, layer in qlayers:
        new = packed_modules[name]
        assert isinstance(new, PackedConv2d if isinstance(layer, torch.nn.Conv2d) else PackedLinear)
        with torch.no_grad():
            q = layer.quantized_weight()
        assert torch.equal(new.weight.view(torch.int32), q.view(torch.int32)), name
        # only 2^k distinct values, as the codes promise
        assert new.weight.unique().numel() <= 2 ** layer.bits * (q.shape[0] if q.dim() > 1 else 1)
    # everything outside the quantized layers (FP layers, BatchNorm affine parameters,
    # running statistics, num_batches_tracked) comes back bit for bit
    qnames = tuple(n + "." for n, _ in qlayers)
    loaded = packed.state_dict()
    rest = {k: v for k, v in model.state_dict().items() if not k.startswith(qnames)}
    assert any("running_var" in k for k in rest) and any("num_batches_tracked" in k for k in rest)
    for key, value in rest.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
        assert loaded[key].reshape(-1).view(torch.uint8).tolist() == value.reshape(-1).view(torch.uint8).tolist(), key
    # no latent weights or training modules remain; inference state only
    assert not any(isinstance(m, QLayer) for m in packed.modules())
    assert not packed.training
    assert all(not p.requires_grad for p in packed.parameters())
    assert packed.bnnopt_meta == {"dataset": "x"}
    manifest = read_manifest(path)
    assert [e["name"] for e in manifest["qlayers"]] == [n for n, _ in qlayers]


def test_codes_take_k_bits_per_weight(roundtrip):
    for case, bits in [("mlp-1bit", 1), ("mlp-2bit", 2), ("mlp-4bit", 4)]:
        _, _, _, path = roundtrip(case, 0)
        manifest = read_manifest(path)
        for entry in manifest["qlayers"]:
            assert entry["bits"] == bits and entry["codes_from"] == "encode"
            assert entry["group_dim"] is None  # DoReFa: one level table per tensor


def test_per_channel_scale_uses_per_channel_table(roundtrip):
    _, _, _, path = roundtrip("resnet20-bwn-channel-all", 0)
    entries = read_manifest(path)["qlayers"]
    assert len(entries) == 22  # 19 3x3 convs + 2 shortcuts + fc, all binarized
    assert all(e["group_dim"] == 0 for e in entries if e["type"] == "conv2d")


def test_delta_is_part_of_the_exported_weight(tmp_path, quantized):
    name, options, config, shape = CASES["lenet5-1bit"]
    model = quantized(name, options, config, 3)
    for _, layer in quantized_layers(model):
        layer.delta = 0.05 * torch.randn_like(layer.weight)
    path = tmp_path / "delta.bnnpk"
    export_packed(model, path, {"model": name})
    x = torch.randn(4, *shape)
    with torch.no_grad():
        assert torch.equal(load_packed(path)(x), model(x))


def test_full_size_mlp_one_bit(tmp_path, quantized):
    """The paper's 784-2048-2048-2048-10 MLP (10M weights), every layer 1 bit."""
    model = quantized("mlp", {}, QuantConfig(**ALL), 0)
    path = tmp_path / "mlp.bnnpk"
    export_packed(model, path, {"model": "mlp"})
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(load_packed(path)(x), model(x))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    assert path.stat().st_size * 25 < buf.tell()  # ~30x: every weight is 1 bit


def test_custom_skeleton_for_unregistered_model(tmp_path):
    from bnnopt.nn import binarize_

    def make():
        torch.manual_seed(5)
        return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=True),
                                   torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
                                   torch.nn.Linear(4 * 4 * 4, 3))

    model = make()
    binarize_(model, QuantConfig(weight_bits=2, **ALL))
    model.eval()
    path = tmp_path / "custom.bnnpk"
    export_packed(model, path)
    with pytest.raises(ValueError, match="skeleton"):
        load_packed(path)
    packed = load_packed(path, skeleton=make())
    x = torch.randn(3, 2, 8, 8)
    with torch.no_grad():
        assert torch.equal(packed(x), model(x))


def test_shared_layer_stays_shared(tmp_path):
    from bnnopt.nn import binarize_

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(9)
            self.inp = torch.nn.Linear(5, 8)
            self.shared = torch.nn.Linear(8, 8)
            self.again = self.shared
            self.out = torch.nn.Linear(8, 2)

        def forward(self, x):
            return self.out(torch.relu(self.again(torch.relu(self.shared(self.inp(x))))))

    model = Twice()
    assert binarize_(model, QuantConfig(weight_bits=2)) == ["shared"]
    path = tmp_path / "shared.bnnpk"
    export_packed(model, path)
    entry = read_manifest(path)["qlayers"][0]
    assert (entry["name"], entry["aliases"]) == ("shared", ["again"])
    packed = load_packed(path, skeleton=Twice())
    assert packed.shared is packed.again and isinstance(packed.shared, PackedLinear)
    x = torch.randn(4, 5)
    with torch.no_grad():
        assert torch.equal(packed(x), model(x))
