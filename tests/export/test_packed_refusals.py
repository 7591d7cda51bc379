"""Damaged, foreign, too-new or mismatched files are refused; failed exports leave nothing."""
from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch

from bnnopt.export import (
    ExportFormatError,
    export_packed,
    is_packed,
    load_packed,
    packed_summary,
)
from bnnopt.export.container import write_container
from bnnopt.nn import QuantConfig, quantized_layers


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory, quantized):
    path = tmp_path_factory.mktemp("refuse") / "lenet.bnnpk"
    export_packed(quantized("lenet5", {}, QuantConfig(), 0), path, {"model": "lenet5"})
    return path


def _rewrite(path, data: bytes):
    path.write_bytes(data)
    return path


def test_corrupt_payload_refused(tmp_path, lenet_file):
    data = bytearray(lenet_file.read_bytes())
    for pos in (3, 20, 100, len(data) // 2, len(data) - 40, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(ExportFormatError):
            load_packed(_rewrite(tmp_path / "bad.bnnpk", bytes(bad)))
    bad = bytearray(data)
    bad[len(data) // 2] ^= 0x10
    with pytest.raises(ExportFormatError, match=r"corrupt \(SHA-256 checksum mismatch\)"):
        load_packed(_rewrite(tmp_path / "bad.bnnpk", bytes(bad)))


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.5, 0.999])
def test_truncated_file_refused(tmp_path, lenet_file, fraction):
    data = lenet_file.read_bytes()
    cut = _rewrite(tmp_path / "cut.bnnpk", data[: int(len(data) * fraction)])
    with pytest.raises(ExportFormatError, match="truncated"):
        load_packed(cut)


def test_foreign_files_refused(tmp_path, quantized):
    state = tmp_path / "state.pt"
    torch.save(quantized("lenet5", {}, QuantConfig(), 0).state_dict(), state)
    text = _rewrite(tmp_path / "notes.txt", b"not a model at all\n" * 10)
    for path in (state, text):
        assert not is_packed(path)
        with pytest.raises(ExportFormatError, match="not a bnnopt packed model"):
            load_packed(path)
        with pytest.raises(ExportFormatError, match="not a bnnopt packed model"):
            packed_summary(path)


def test_container_of_another_kind_refused(tmp_path):
    path = tmp_path / "other.bnnpk"
    write_container(path, {"format": "something-else"}, {"x": torch.ones(2)})
    assert is_packed(path)
    with pytest.raises(ExportFormatError, match="not a packed model"):
        load_packed(path)


def test_newer_version_refused_by_name(tmp_path, lenet_file):
    data = bytearray(lenet_file.read_bytes())
    struct.pack_into("<I", data, 8, 3)
    body = bytes(data[:-32])
    newer = _rewrite(tmp_path / "v3.bnnpk", body + hashlib.sha256(body).digest())
    with pytest.raises(ExportFormatError, match="file format version 3 is newer than this reader's 1; upgrade bnnopt"):
        load_packed(newer)


def test_wrong_architecture_refused(tmp_path, lenet_file):
    with pytest.raises(ValueError, match="does not fit the LeNet5 architecture"):
        load_packed(lenet_file, skeleton=__import__("bnnopt.models").models.lenet5(channels=(6, 8)))
    with pytest.raises(ValueError, match="does not fit"):
        load_packed(lenet_file, skeleton=torch.nn.Sequential(torch.nn.Linear(3, 3)))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such packed model file"):
        load_packed(tmp_path / "nope.bnnpk")


def test_export_that_fails_leaves_no_file(tmp_path, quantized):
    model = quantized("lenet5", {}, QuantConfig(), 0)
    path = tmp_path / "out.bnnpk"
    # meta that is not JSON-serialisable: refused before anything is written
    with pytest.raises(ValueError, match="JSON-serialisable"):
        export_packed(model, path, {"model": "lenet5", "x": object()})
    # a "quantizer" whose output is not k-bit: refused while packing
    name, layer = quantized_layers(model)[0]
    real = layer.weight_quantizer

    class NotQuantized(torch.nn.Module):
        bits = 1

        def forward(self, w):
            return w * 1.0

    layer.weight_quantizer = NotQuantized()
    with pytest.raises(ValueError, match=rf"layer '{name}'.*1-bit codes"):
        export_packed(model, path, {"model": "lenet5"})
    assert list(tmp_path.iterdir()) == []
    # an existing file survives a failed overwrite, byte for byte
    layer.weight_quantizer = real
    export_packed(model, path, {"model": "lenet5"})
    before = path.read_bytes()
    layer.weight_quantizer = NotQuantized()
    with pytest.raises(ValueError):
        export_packed(model, path, {"model": "lenet5"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.bnnpk"]


def test_resnet20_file_is_over_10x_smaller_than_float_state_dict(tmp_path, quantized):
    from bnnopt.models import resnet20

    model = quantized("resnet20", {}, QuantConfig(), 0)  # paper protocol: first conv, last fc FP
    packed = tmp_path / "r20.bnnpk"
    export_packed(model, packed, {"model": "resnet20"})
    fp = tmp_path / "r20-fp32.pt"
    torch.save(resnet20().state_dict(), fp)
    ratio = fp.stat().st_size / packed.stat().st_size
    assert ratio >= 10, ratio
    info = packed_summary(packed)
    assert info["file_bytes"] == packed.stat().st_size
    # the summary's float32 state dict is the same model serialised the same way
    assert abs(info["float32_state_dict_bytes"] - fp.stat().st_size) < 0.01 * fp.stat().st_size
    expected_codes = sum((layer.weight.numel() * layer.bits + 7) // 8 for _, layer in quantized_layers(model))
    assert info["packed_code_bytes"] == expected_codes
    assert info["quantized_weights"] == sum(layer.weight.numel() for _, layer in quantized_layers(model))
    assert info["weight_bits"] == "1" and info["quantized_layers"] == 20
    json.dumps(info)
