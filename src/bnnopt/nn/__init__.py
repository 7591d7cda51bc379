"""bnnopt.nn: quantized layers and the model converter.

    from bnnopt.nn import QuantConfig, binarize_, summary
    names = binarize_(model, QuantConfig(weight_quantizer="dorefa", weight_bits=1))
    print(summary(model))

Public API: QuantConfig, QLayer, QConv1d, QConv2d, QConv3d, QLinear, QEmbedding,
QMultiheadAttention, binarize_ (returns a BinarizeResult), quantizable_layers,
quantized_layers, set_progress, attach_quantizers, update_rotations (RBNN), summary
(+ ModelSummary, LayerSummary).
Importing this package also imports bnnopt.quant (registering its entries).
"""
from bnnopt.nn.config import FP_ACT_BITS, QuantConfig
from bnnopt.nn.attention import QMultiheadAttention
from bnnopt.nn.convert import (BinarizeResult, LayerDecision, attach_quantizers, binarize_,
                               quantizable_layers, quantized_layers, set_progress,
                               update_rotations)
from bnnopt.nn.layers import QConv1d, QConv2d, QConv3d, QEmbedding, QLayer, QLinear
from bnnopt.nn.summary import LayerSummary, ModelSummary, summary

__all__ = [
    "QuantConfig", "FP_ACT_BITS", "QLayer", "QConv1d", "QConv2d", "QConv3d", "QLinear",
    "QEmbedding", "QMultiheadAttention", "binarize_", "BinarizeResult", "LayerDecision",
    "quantizable_layers", "quantized_layers", "set_progress", "attach_quantizers",
    "update_rotations", "summary", "ModelSummary",
    "LayerSummary",
]
