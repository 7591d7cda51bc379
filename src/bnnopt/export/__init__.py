"""bnnopt.export: ship a trained binary / low-bit network as packed bits.

    from bnnopt.export import export_packed, load_packed, packed_summary
    export_packed(model, "net.bnnpk", meta={"model": "resnet20", "model_options": {}})
    net = load_packed("net.bnnpk")          # eval-mode nn.Module, same logits (atol=0)
    packed_summary("net.bnnpk")             # file size vs the float32 state dict

Every quantized layer is stored as k-bit codes (1 bit per weight for binary)
plus a small table of level values; full-precision layers and BatchNorm as they
are. The file format (magic, version, JSON manifest, blobs, SHA-256) is in
docs/export_format.md and :mod:`bnnopt.export.container`. Unreadable files raise
:class:`ExportFormatError` (a ValueError).
"""
from bnnopt.export.bits import pack_codes, packed_nbytes, unpack_codes
from bnnopt.export.from_run import export_checkpoint
from bnnopt.export.container import FORMAT_VERSION, ExportFormatError
from bnnopt.export.layers import (PackedConv1d, PackedConv2d, PackedConv3d, PackedEmbedding,
                                   PackedLinear)
from bnnopt.export.reader import float_state_dict, is_packed, load_packed, read_manifest
from bnnopt.export.summary import describe_packed, packed_summary
from bnnopt.export.writer import export_packed

__all__ = [
    "FORMAT_VERSION",
    "ExportFormatError",
    "PackedConv1d",
    "PackedConv2d",
    "PackedConv3d",
    "PackedEmbedding",
    "PackedLinear",
    "describe_packed",
    "export_checkpoint",
    "export_packed",
    "float_state_dict",
    "is_packed",
    "load_packed",
    "pack_codes",
    "packed_nbytes",
    "packed_summary",
    "read_manifest",
    "unpack_codes",
]
