"""ONNX / QONNX export: onnxruntime (and qonnx) logits equal load_packed's, bit widths, BN folding."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from bnnopt.export import export_packed, load_packed  # noqa: E402
from bnnopt.export.onnx_export import (  # noqa: E402
    example_input,
    export_onnx,
    qonnx_bit_widths,
    run_onnxruntime,
)
from bnnopt.nn import QuantConfig  # noqa: E402

TOL = 1e-5

CASES = {  # name: (model, options, QuantConfig, input shape [C, H, W])
    "resnet20_w1": ("resnet20", {}, QuantConfig(weight_quantizer="dorefa", weight_bits=1), [3, 32, 32]),
    "mlp_w2": ("mlp", {"hidden": 64}, QuantConfig(weight_quantizer="dorefa", weight_bits=2), [1, 28, 28]),
    "mlp_w4": ("mlp", {"hidden": 64}, QuantConfig(weight_quantizer="dorefa", weight_bits=4), [1, 28, 28]),
    "lenet5_w1a1": ("lenet5", {}, QuantConfig(weight_quantizer="dorefa", weight_bits=1, act_quantizer="sign",
                                               keep_first=False, keep_last=False), [1, 28, 28]),
}


@pytest.fixture(scope="module")
def packed_files(tmp_path_factory, quantized, calibrated):
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for key, (name, options, config, shape) in CASES.items():
        model = calibrated(quantized(name, options, config, seed=3), shape)
        path = root / f"{key}.bnnpk"
        export_packed(model, path, {"model": name, "model_options": options,
                                    "data": {"in_channels": shape[0], "image_size": shape[1:]}})
        out[key] = path
    return out


def _logits(path, shape, batch=5):
    x = example_input(shape, batch=batch, seed=11)
    with torch.no_grad():
        return x, load_packed(path)(x)


@pytest.mark.parametrize("key", list(CASES))
def test_onnxruntime_logits_equal_load_packed(packed_files, key, tmp_path):
    shape = CASES[key][3]
    out = tmp_path / f"{key}.onnx"
    info = export_onnx(packed_files[key], out)
    x, ref = _logits(packed_files[key], shape)
    got = run_onnxruntime(out, x)
    assert ref.abs().max() > 0.1  # a real signal, not all zeros
    assert got.shape == tuple(ref.shape)
    assert abs(got - ref.numpy()).max() <= TOL
    assert info["quantized_layers"] >= 1 and info["folded_bn"] == 0


def test_onnx_weights_are_the_exact_quantized_values(packed_files, tmp_path):
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "w4.onnx"
    info = export_onnx(packed_files["mlp_w4"], out)
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    packed = load_packed(packed_files["mlp_w4"])
    modules = dict(packed.named_modules())
    for name, entry in info["layers"].items():
        w = modules[name].weight.numpy()
        assert (inits[entry["weight"]] == w).all()
        assert len(set(w.ravel().tolist())) <= 2 ** 4


@pytest.mark.parametrize("key", ["resnet20_w1", "mlp_w2"])
def test_folded_bn_equals_unfolded(packed_files, key, tmp_path):
    shape = CASES[key][3]
    plain, folded = tmp_path / "plain.onnx", tmp_path / "folded.onnx"
    export_onnx(packed_files[key], plain)
    info = export_onnx(packed_files[key], folded, fold_bn=True)
    assert info["folded_bn"] == info["quantized_layers"]  # every quantized layer is followed by a BN
    x = example_input(shape, batch=5, seed=2)
    a, b = run_onnxruntime(plain, x), run_onnxruntime(folded, x)
    assert abs(a - b).max() <= TOL

    import onnx

    ops = [n.op_type for n in onnx.load(folded).graph.node]
    assert ops.count("BatchNormalization") == [n.op_type for n in onnx.load(plain).graph.node].count(
        "BatchNormalization") - info["folded_bn"]


def test_folded_binary_weights_are_plus_minus_one_codes(packed_files, tmp_path):
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "folded.onnx"
    info = export_onnx(packed_files["resnet20_w1"], out, fold_bn=True)
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    for entry in info["layers"].values():
        codes = inits[entry["weight"] + "_codes"]
        assert set(codes.ravel().tolist()) <= {-1.0, 1.0}


@pytest.mark.parametrize("fold", [False, True])
def test_qonnx_carries_bit_width_one_on_every_binary_weight(packed_files, tmp_path, fold):
    out = tmp_path / "r20.qonnx.onnx"
    info = export_onnx(packed_files["resnet20_w1"], out, qonnx=True, fold_bn=fold)
    widths = qonnx_bit_widths(out)
    assert len(widths) == info["quantized_layers"] == 20  # 18 block convs + 2 shortcut convs
    assert all(w["bits"] == 1 and w["op"] == "BipolarQuant" for w in widths.values())


def test_qonnx_k_bit_weights_use_quant_with_their_bit_width(packed_files, tmp_path):
    out = tmp_path / "mlp2.qonnx.onnx"
    info = export_onnx(packed_files["mlp_w2"], out, qonnx=True)
    widths = qonnx_bit_widths(out)
    assert len(widths) == info["quantized_layers"]
    assert {(w["op"], w["bits"]) for w in widths.values()} == {("Quant", 2)}


@pytest.mark.parametrize("key", ["lenet5_w1a1", "mlp_w2"])
def test_qonnx_executor_logits_equal_load_packed(packed_files, key, tmp_path):
    pytest.importorskip("qonnx")
    from bnnopt.export.onnx_export import run_qonnx

    out = tmp_path / f"{key}.qonnx.onnx"
    export_onnx(packed_files[key], out, qonnx=True)
    x, ref = _logits(packed_files[key], CASES[key][3], batch=3)
    assert abs(run_qonnx(out, x) - ref.numpy()).max() <= TOL


def test_qonnx_refuses_non_uniform_levels(quantized, tmp_path):
    from bnnopt.registry import METHODS

    torch.manual_seed(0)
    from bnnopt.models import create_model

    model = create_model("mlp", hidden=16, hidden_layers=1)
    METHODS.get("laq")(bits=4, levels="log").prepare(model, {"keep_first": False, "keep_last": False})
    path = tmp_path / "laq.bnnpk"
    export_packed(model.eval(), path, {"model": "mlp", "model_options": {"hidden": 16, "hidden_layers": 1}})
    export_onnx(path, tmp_path / "ok.onnx")  # standard ONNX holds any levels
    with pytest.raises(ValueError, match="not equally spaced.*--format onnx"):
        export_onnx(path, tmp_path / "laq.qonnx.onnx", qonnx=True)
    assert not (tmp_path / "laq.qonnx.onnx").exists()


def test_qonnx_binary_activations_use_bipolar_quant(packed_files, tmp_path):
    import onnx

    out = tmp_path / "lenet.qonnx.onnx"
    info = export_onnx(packed_files["lenet5_w1a1"], out, qonnx=True)
    graph = onnx.load(out).graph
    inits = {t.name for t in graph.initializer}
    on_activations = [n for n in graph.node if n.op_type == "BipolarQuant" and n.input[0] not in inits]
    assert len(on_activations) == info["quantized_layers"] == 5  # every layer's input is binarized
    assert all(n.domain == "qonnx.custom_op.general" for n in on_activations)
