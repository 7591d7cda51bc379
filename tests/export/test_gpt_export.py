"""A quantized GPT through the packed format and ONNX: 1-bit and 2-bit (b1.58 ternary)
codes round trip exactly; the ONNX graph (int64 token ids in, logits [B, T, V] out, standard
ops only) gives onnxruntime logits within 1e-5 of torch's."""
from __future__ import annotations

import pytest
import torch

from bnnopt.export import export_packed, load_packed, packed_summary
from bnnopt.export.onnx_export import compare_logits, export_onnx, run_onnxruntime, verify_graph
from bnnopt.models.gpt import GPT_POLICY
from bnnopt.nn import QuantConfig, binarize_, quantized_layers
from bnnopt.registry import MODELS

OPTIONS = {"num_classes": 256, "block_size": 16, "d_model": 32}
LAYERS = [f"blocks.{i}.{name}" for i in range(2)
          for name in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")]


def quantized_gpt(config: QuantConfig, tie: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    model = MODELS.get("gpt_tiny")(**OPTIONS, tie_weights=tie)
    with torch.no_grad():   # trained-looking LayerNorms (not the identity)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1)
    assert binarize_(model, config) == LAYERS
    return model.eval()


CASES = {
    "dorefa-1bit": (QuantConfig(weight_quantizer="dorefa", weight_bits=1, **GPT_POLICY), 1, 2),
    "bitnet-1bit": (QuantConfig(weight_quantizer="bitnet", weight_bits=1, **GPT_POLICY), 1, 2),
    "sign-1bit (bop)": (QuantConfig(weight_quantizer="sign", weight_bits=1, **GPT_POLICY), 1, 2),
    "scaled_sign-1bit (bop, learned scale)": (QuantConfig(weight_quantizer="scaled_sign",
                                                          weight_bits=1, **GPT_POLICY), 1, 2),
    "bitnet_b158-2bit": (QuantConfig(weight_quantizer="bitnet_b158", weight_bits=2, **GPT_POLICY),
                         2, 3),
    "b158-2bit-absmax_ln": (QuantConfig(weight_quantizer="bitnet_b158", weight_bits=2,
                                        act_quantizer="absmax_ln", act_bits=8, **GPT_POLICY), 2, 3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_packed_gpt_round_trips_exactly(tmp_path, case):
    config, bits, levels = CASES[case]
    model = quantized_gpt(config)
    path = tmp_path / "gpt.bnnpk"
    info = export_packed(model, path, {"model": "gpt_tiny", "model_options": OPTIONS})
    assert info["quantized_layers"] == len(LAYERS)
    packed = load_packed(path)
    x = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), packed(x))
    # every quantized weight decodes to exactly the fake-quantized one, with 2^bits codes at most
    modules = dict(packed.named_modules())
    for name, layer in quantized_layers(model):
        with torch.no_grad():
            q = layer.quantized_weight()
        assert torch.equal(modules[name].weight, q), name
        if "learned scale" in case:  # one scale per output channel: 2 levels per row
            assert max(row.unique().numel() for row in q.reshape(q.shape[0], -1)) <= levels
        else:
            assert q.unique().numel() <= levels
    summary = packed_summary(path)
    # 0.14M-parameter model: the float embeddings and head dominate, the projections shrink
    assert summary["file_bytes"] < summary["float32_bytes"]


def test_ternary_codes_are_stored_in_two_bits(tmp_path):
    config, _, _ = CASES["bitnet_b158-2bit"]
    model = quantized_gpt(config)
    export_packed(model, tmp_path / "g2.bnnpk", {"model": "gpt_tiny", "model_options": OPTIONS})
    model1 = quantized_gpt(CASES["bitnet-1bit"][0])
    export_packed(model1, tmp_path / "g1.bnnpk", {"model": "gpt_tiny", "model_options": OPTIONS})
    n = sum(layer.weight.numel() for _, layer in quantized_layers(model))
    size2 = (tmp_path / "g2.bnnpk").stat().st_size
    size1 = (tmp_path / "g1.bnnpk").stat().st_size
    # the quantized projections cost n / 8 bytes more at 2 bits than at 1 (same float parts)
    assert size2 - size1 == pytest.approx(n / 8, abs=512)


@pytest.mark.parametrize("case", ["bitnet-1bit", "bitnet_b158-2bit", "b158-2bit-absmax_ln",
                                  "scaled_sign-1bit (bop, learned scale)"])
def test_onnx_graph_of_a_quantized_gpt_matches_torch(tmp_path, case):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = quantized_gpt(CASES[case][0])
    x = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(3))
    info = export_onnx(model, tmp_path / "gpt.onnx", example_input=x)
    assert info["quantized_layers"] == len(LAYERS) and sorted(info["layers"]) == sorted(LAYERS)
    proto = onnx.load(tmp_path / "gpt.onnx")
    assert [i.type.tensor_type.elem_type for i in proto.graph.input] == [onnx.TensorProto.INT64]
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}   # standard ops only
    ops = {n.op_type for n in proto.graph.node}
    assert {"Gather", "MatMul", "Softmax"} <= ops
    assert "LayerNormalization" in ops or "ReduceMean" in ops
    # every quantized projection's initializer holds exactly its quantized weight
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    for name, layer in quantized_layers(model):
        with torch.no_grad():
            q = layer.quantized_weight()
        assert torch.equal(torch.from_numpy(inits[info["layers"][name]["weight"]].copy()), q), name
    # logits (B, T, V) equal torch's, also for another batch size and a shorter context
    for tokens in (x, torch.randint(0, 256, (5, 7), generator=torch.Generator().manual_seed(4))):
        with torch.no_grad():
            ref = model(tokens)
        got = run_onnxruntime(tmp_path / "gpt.onnx", tokens)
        assert got.shape == tuple(ref.shape) == (tokens.shape[0], tokens.shape[1], 256)
        assert compare_logits(ref, got, case, tol=1e-5) <= 1e-5 * max(1.0, float(ref.abs().max()))


def test_packed_gpt_exports_and_verifies_through_the_cli(tmp_path):
    pytest.importorskip("onnxruntime")
    model = quantized_gpt(CASES["bitnet_b158-2bit"][0])
    path = tmp_path / "gpt.bnnpk"
    export_packed(model, path, {"model": "gpt_tiny", "model_options": OPTIONS})
    info = export_onnx(path, tmp_path / "direct.onnx")   # no example: tokens [2, block_size]
    assert info["input_shape"] == [16]
    checked = verify_graph(path, tmp_path / "direct.onnx", info, qonnx=False)
    assert checked["verified_max_abs_diff"] <= 1e-5
    from bnnopt.cli.main import main

    assert main(["export", str(path), "--format", "onnx", "--out", str(tmp_path / "g.onnx")]) == 0
    assert (tmp_path / "g.onnx").exists()


@pytest.mark.parametrize("case", ["bitnet-1bit", "bitnet_b158-2bit", "scaled_sign-1bit (bop, learned scale)"])
def test_qonnx_graph_of_a_quantized_gpt_runs_in_the_qonnx_executor(tmp_path, case):
    pytest.importorskip("qonnx")
    model = quantized_gpt(CASES[case][0])
    path = tmp_path / "gpt.bnnpk"
    export_packed(model, path, {"model": "gpt_tiny", "model_options": OPTIONS})
    info = export_onnx(path, tmp_path / "gpt.qonnx.onnx", qonnx=True)
    checked = verify_graph(path, tmp_path / "gpt.qonnx.onnx", info, qonnx=True)
    assert checked["verified_with"].startswith("qonnx executor")
    assert checked["verified_max_abs_diff"] <= 1e-5


def test_onnx_refuses_bad_token_input_and_an_unwritable_layer_in_one_line(tmp_path):
    pytest.importorskip("onnx")
    model = quantized_gpt(CASES["bitnet-1bit"][0])
    with pytest.raises(ValueError, match=r"int64 token ids \[B, T\]"):
        export_onnx(model, tmp_path / "g.onnx", example_input=torch.randn(2, 16))
    # QONNX has no per-token absmax activation op: refused naming the first such layer
    model = quantized_gpt(CASES["b158-2bit-absmax_ln"][0])
    with pytest.raises(ValueError, match="layer 'blocks.0.attn.qkv' .*absmax_ln") as err:
        export_onnx(model, tmp_path / "g.qonnx.onnx", qonnx=True,
                    example_input=torch.randint(0, 256, (2, 16)))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "g.onnx").exists() and not (tmp_path / "g.qonnx.onnx").exists()


def test_tied_head_round_trips(tmp_path):
    model = quantized_gpt(CASES["bitnet_b158-2bit"][0], tie=True)
    options = {**OPTIONS, "tie_weights": True}
    export_packed(model, tmp_path / "tied.bnnpk", {"model": "gpt_tiny", "model_options": options})
    packed = load_packed(tmp_path / "tied.bnnpk")
    assert packed.head.weight is packed.tok_emb.weight
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(x), packed(x))
