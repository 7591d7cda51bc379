"""export_packed / load_packed / export_onnx on models outside the zoo: a Conv1d net and a
binarized nn.TransformerEncoder with a quantized embedding (packed round trip exact,
ONNX equal to torch within 1e-5), and the refusals."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bnnopt.export import PackedConv1d, PackedEmbedding, PackedLinear, export_packed, load_packed
from bnnopt.nn import QMultiheadAttention, QuantConfig, binarize_, quantized_layers


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(2, 8, 3, padding=1)
        self.conv2 = nn.Conv1d(8, 8, 3, padding=1, padding_mode="reflect", bias=False)
        self.bn = nn.BatchNorm1d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv2(torch.relu(self.conv1(x))))).mean(-1))


class TokenEncoder(nn.Module):
    def __init__(self, vocab=20, d=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, 3)

    def forward(self, ids):
        return self.head(self.encoder(self.embed(ids)).mean(dim=1))


def _randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.fixture()
def conv1d_model():
    float_model = _randomise(Conv1dNet(), 0)
    model = copy.deepcopy(float_model)
    binarize_(model, QuantConfig(weight_bits=2, keep_first=False))
    return float_model, model.eval(), torch.randn(5, 2, 12, generator=torch.Generator().manual_seed(1))


@pytest.fixture()
def encoder_model():
    float_model = _randomise(TokenEncoder(), 1)
    model = copy.deepcopy(float_model)
    names = binarize_(model, QuantConfig(embedding=True, keep_first=False))
    assert names[0] == "embed" and "encoder.layers.1.self_attn.in_proj" in names
    return float_model, model.eval(), torch.randint(0, 20, (4, 7), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("which", ["conv1d_model", "encoder_model"])
@pytest.mark.parametrize("skeleton", ["float", "binarized"])
def test_packed_round_trip_is_exact_into_a_user_built_model(which, skeleton, request, tmp_path):
    float_model, model, x = request.getfixturevalue(which)
    path = tmp_path / "m.bnnpk"
    info = export_packed(model, path)
    assert info["quantized_layers"] == len(quantized_layers(model))
    target = copy.deepcopy(float_model if skeleton == "float" else model)
    loaded = load_packed(path, skeleton=target)
    assert loaded is target  # filled in place
    with torch.no_grad():
        want = model(x)
        assert torch.equal(loaded(x), want)
        assert (float_model(x) - want).abs().max() > 1e-3  # the quantization matters
    kinds = {type(m) for m in loaded.modules()}
    if which == "conv1d_model":
        assert PackedConv1d in kinds
    else:
        assert {PackedEmbedding, PackedLinear, QMultiheadAttention} <= kinds
        assert not any(isinstance(m, nn.MultiheadAttention) for m in loaded.modules())


def test_load_packed_without_skeleton_names_the_argument(conv1d_model, tmp_path):
    _, model, _ = conv1d_model
    export_packed(model, tmp_path / "m.bnnpk")
    with pytest.raises(ValueError, match=r"does not name a registered model.*load_packed\(path, skeleton=module\)"):
        load_packed(tmp_path / "m.bnnpk")
    with pytest.raises(ValueError, match="does not fit the Sequential architecture"):
        load_packed(tmp_path / "m.bnnpk", skeleton=nn.Sequential(nn.Linear(2, 2)))


onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("which", ["conv1d_model", "encoder_model"])
def test_export_onnx_of_a_binarized_model_matches_torch(which, request, tmp_path):
    from bnnopt.export.onnx_export import export_onnx, run_onnxruntime

    _, model, x = request.getfixturevalue(which)
    out = tmp_path / "m.onnx"
    info = export_onnx(model, out, example_input=x)
    with torch.no_grad():
        want = model(x)
    assert info["quantized_layers"] == len(quantized_layers(model))
    for batch in (x, x[:2]):  # dynamic batch dimension
        with torch.no_grad():
            ref = model(batch)
        got = run_onnxruntime(out, batch)
        assert abs(got - ref.numpy()).max() <= 1e-5 * max(1.0, float(ref.abs().max()))
    assert want.abs().max() > 0.1
    # the file holds the packed (quantized) weights, not the float latent ones
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    for entry in info["layers"].values():
        assert len(set(inits[entry["weight"]].ravel().tolist())) <= 4  # <= 2^2 levels (1 bit: 2)


def test_qonnx_of_a_conv1d_model_carries_bit_widths(conv1d_model, tmp_path):
    from bnnopt.export.onnx_export import export_onnx, qonnx_bit_widths

    _, model, x = conv1d_model
    info = export_onnx(model, tmp_path / "m.qonnx.onnx", example_input=x, qonnx=True)
    widths = qonnx_bit_widths(tmp_path / "m.qonnx.onnx")
    assert len(widths) == info["quantized_layers"] == 2
    assert {w["bits"] for w in widths.values()} == {2}


class Spectrum(nn.Module):
    """|FFT| features: ONNX opset 17 (TorchScript exporter) has no aten::fft_fft."""

    def forward(self, x):
        return torch.fft.fft(x).abs()


class SpectrumNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.spec, self.b = nn.Linear(4, 4), Spectrum(), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(self.spec(self.a(x)))


def test_export_onnx_refusals_are_one_line(tmp_path):
    from bnnopt.export.onnx_export import export_onnx

    model = SpectrumNet()
    binarize_(model, QuantConfig(keep_first=False, keep_last=False))
    with pytest.raises(ValueError, match=r"layer 'spec' \(Spectrum\) cannot be written as ONNX.*fft_fft") as err:
        export_onnx(model, tmp_path / "m.onnx", example_input=torch.randn(2, 4))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(ValueError, match="needs example_input"):
        export_onnx(model, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="has no quantized layer"):
        export_onnx(nn.Linear(2, 2), tmp_path / "m.onnx", example_input=torch.randn(1, 2))
