"""Graph passes on an exported ONNX model: inline Identity, fold BatchNorm into quantized layers.

BatchNorm folding (``fold_batchnorm``): a ``BatchNormalization`` node (inference
form) whose input is produced only by a ``Conv`` / ``Gemm`` of a quantized layer
is replaced by a per-channel scale and bias::

    BN(y) = gamma (y - mu) / sqrt(var + eps) + beta = s * y + t,
    s = gamma / sqrt(var + eps),   t = beta - s * mu   (+ s * b if the layer has a bias b)

and, for a 1-bit weight with levels {-a_c, +a_c} (per tensor or per output
channel c), the magnitude moves into the scale as well, so the weight tensor
holds the binary codes themselves::

    y = conv(x, a ⊙ B) = a ⊙ conv(x, B),   B = sign(Q) in {-1, +1}
    folded:  Mul(conv(x, B), s * a) -> Add(t)

(in QONNX the weight then goes through ``BipolarQuant(B, 1)``, which QONNX
reads as the BIPOLAR data type). ``s`` and ``t`` are computed in float64 and
stored as float32; the result equals the unfolded graph up to float32
rounding. k-bit weights keep their values; only the BatchNorm is folded.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bnnopt.export.onnx_layers import QONNX_DOMAIN


def _graph_maps(graph) -> tuple[dict, dict, dict[str, list]]:
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return inits, producer, consumers


def inline_identities(model) -> int:
    """Replace ``Identity(initializer)`` outputs by the initializer itself (the
    TorchScript exporter emits these for de-duplicated equal parameters).
    Returns the number of nodes removed."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    rename = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    if not rename:
        return 0
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)
    return len(rename)


def remove_unused_initializers(model) -> None:
    graph = model.graph
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _attr(node, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def weight_source(node, producer: dict, is_init) -> tuple[str, Any, bool] | None:
    """Where the weight input of a Conv / Gemm / MatMul comes from: ``(initializer name,
    QONNX quantization node or None, transposed)``, looking through one
    ``Transpose(perm=[1, 0])`` (how a bias-free Linear is exported) and one QONNX
    ``Quant`` / ``BipolarQuant``; None if the weight is computed some other way."""
    if len(node.input) < 2:
        return None
    name, transposed, quant = node.input[1], False, None
    prev = producer.get(name)
    if prev is not None and prev.op_type == "Transpose" and list(_attr(prev, "perm", [])) == [1, 0]:
        name, transposed = prev.input[0], True
        prev = producer.get(name)
    if not is_init(name):
        if prev is None or prev.domain != QONNX_DOMAIN or prev.op_type not in ("BipolarQuant", "Quant"):
            return None
        quant, name = prev, prev.input[0]
        if not is_init(name):
            return None
    return name, quant, transposed


class _Inits:
    """Read / write initializers, giving a node a private copy of a shared one."""

    def __init__(self, model) -> None:
        self.graph = model.graph
        self.serial = 0

    def get(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        for t in self.graph.initializer:
            if t.name == name:
                return numpy_helper.to_array(t)
        raise KeyError(name)

    def has(self, name: str) -> bool:
        return any(t.name == name for t in self.graph.initializer)

    def add(self, base: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        names = {t.name for t in self.graph.initializer}
        name = base
        while name in names:
            self.serial += 1
            name = f"{base}_{self.serial}"
        self.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def replace_input(self, node, index: int, value: np.ndarray, base: str) -> None:
        """Point ``node.input[index]`` at a new initializer holding ``value``."""
        node.input[index] = self.add(base, value)


def fold_batchnorm(model, quantized_weights: set[str], bits: dict[str, int]) -> list[str]:
    """Fold every BatchNormalization that follows a quantized Conv / Gemm (see module
    docstring). ``quantized_weights``: initializer names of the quantized layers'
    weights; ``bits``: their bits. Returns the names of the folded BN nodes' inputs'
    layers (the weight initializer names)."""
    from onnx import helper

    graph = model.graph
    inits = _Inits(model)
    folded = []
    new_nodes = []
    _, producer, consumers = _graph_maps(graph)
    outputs = {o.name for o in graph.output}
    replaced: dict[int, list] = {}
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1:
            continue
        y = bn.input[0]
        layer = producer.get(y)
        if layer is None or layer.op_type not in ("Conv", "Gemm", "MatMul") or y in outputs \
                or len(consumers.get(y, [])) != 1:
            continue
        if layer.op_type == "Gemm" and (_attr(layer, "transA", 0) != 0 or _attr(layer, "transB", 0) != 1
                                        or _attr(layer, "alpha", 1.0) != 1.0 or _attr(layer, "beta", 1.0) != 1.0):
            continue
        source = weight_source(layer, producer, inits.has)
        if source is None or (layer.op_type == "MatMul") != source[2]:
            continue  # MatMul must read W^T of a [out, in] weight, Conv / Gemm W itself
        w_in, quant = source[0], source[1]
        if w_in not in quantized_weights or not all(inits.has(n) for n in bn.input[1:5]):
            continue
        gamma, beta, mean, var = (inits.get(n).astype(np.float64) for n in bn.input[1:5])
        eps = float(_attr(bn, "epsilon", 1e-5))
        s = gamma / np.sqrt(var + eps)
        t = beta - s * mean
        if len(layer.input) > 2 and layer.input[2]:
            t = t + s * inits.get(layer.input[2]).astype(np.float64)
            del layer.input[2]
        q = inits.get(w_in)
        dtype = q.dtype
        rows = q.reshape(q.shape[0], -1).astype(np.float64)
        a = np.abs(rows).max(axis=1)
        binary_symmetric = bits.get(w_in) == 1 and bool((np.abs(rows) == a[:, None]).all()) and bool((a > 0).all())
        if binary_symmetric and (quant is None or quant.op_type == "BipolarQuant"):
            s = s * a
            codes = np.where(q >= 0, 1.0, -1.0).astype(dtype)
            if quant is not None:  # the node that reads the weight initializer itself
                holder, index = quant, 0
            elif source[2]:
                holder, index = producer[layer.input[1]], 0
            else:
                holder, index = layer, 1
            inits.replace_input(holder, index, codes, f"{w_in}_codes")
            if quant is not None:
                inits.replace_input(quant, 1, np.array(1.0, dtype=dtype), f"{w_in}_unit_scale")
        shape = [-1] + [1] * (len(q.shape) - 2) if layer.op_type == "Conv" else [-1]  # [N, C, ...] or [N, C]
        base = bn.output[0]
        s_name = inits.add(f"{base}_fold_scale", s.astype(dtype).reshape(shape))
        t_name = inits.add(f"{base}_fold_bias", t.astype(dtype).reshape(shape))
        mul = helper.make_node("Mul", [y, s_name], [f"{base}_scaled"], name=f"{bn.name or base}_fold_mul")
        add = helper.make_node("Add", [f"{base}_scaled", t_name], [bn.output[0]], name=f"{bn.name or base}_fold_add")
        replaced[id(bn)] = [mul, add]
        folded.append(w_in)
    for node in graph.node:
        new_nodes.extend(replaced.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(new_nodes)
    remove_unused_initializers(model)
    return folded
