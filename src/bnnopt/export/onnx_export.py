"""ONNX and QONNX export of a packed model, and running the result.

    from bnnopt.export import load_packed
    from bnnopt.export.onnx_export import export_onnx, run_onnxruntime
    info = export_onnx("net.bnnpk", "net.onnx")                 # standard ONNX
    info = export_onnx("net.bnnpk", "net.qonnx.onnx", qonnx=True, fold_bn=True)
    info = export_onnx(model, "net.onnx", example_input=x)     # any binarized model

``source`` is a packed file (its model rebuilt by ``load_packed``: a registered
model, or ``skeleton``), a binarized model (bnnopt QLayers; exported to packed
bits in memory and loaded back into a copy of itself, so the graph holds exactly
the packed weights) or a module returned by ``load_packed``.

The packed model (``load_packed``) is rewritten by
:func:`bnnopt.export.onnx_layers.onnx_ready` and traced by PyTorch's TorchScript
ONNX exporter (``torch.onnx.export(..., dynamo=False)``, opset 17): it runs
offline, needs no onnxscript, exports a model in about a second, and emits
QONNX's custom ops from ``autograd.Function.symbolic``. The exporter is told to
keep BatchNorm as its own node (``training=PRESERVE`` on an eval-mode model,
no constant folding), so every quantized weight stays an initializer named
``<layer>.weight`` with exactly the values ``load_packed`` uses. Optionally
(``fold_bn``) BatchNorm is then folded (:mod:`bnnopt.export.onnx_fold`).

Graph interface: one input ``input`` (for the zoo's image models [batch, C, H, W],
the *normalised* image ``(x - mean) / std`` with the constants stored in the
metadata; for a model given with ``example_input``, that tensor's shape and
dtype), one output ``logits``; dimension 0 is dynamic. A GPT
(:class:`bnnopt.models.gpt.GPT`) takes int64 token ids [batch, tokens] and gives
logits [batch, tokens, vocab], both dimensions dynamic (tokens <= block_size;
the default example is random tokens [2, block_size]). The metadata
property ``bnnopt`` holds JSON with the model name, per-layer bits, input shape,
normalisation and whether BatchNorm was folded.

Needs the ``onnx`` extra (``pip install "bnnopt[onnx]"``: onnx, onnxruntime;
qonnx to execute QONNX graphs).
"""
from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bnnopt.extras import require
from bnnopt.export.onnx_layers import QONNX_DOMAIN, onnx_ready

OPSET = 17


def _onnx():
    return require("onnx", "onnx", "ONNX export")


def packed_codes(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Layer name -> integer codes (weight shape) of every quantized layer of a packed file."""
    from bnnopt.export.bits import unpack_codes
    from bnnopt.export.reader import read_packed

    manifest, tensors = read_packed(path)
    out = {}
    for entry in manifest["qlayers"]:
        shape = [int(s) for s in entry["weight_shape"]]
        codes = unpack_codes(tensors[entry["codes"]].numpy(), int(entry["bits"]), int(np.prod(shape)))
        for name in [entry["name"], *entry.get("aliases", [])]:
            out[name] = torch.from_numpy(codes.astype(np.int64)).reshape(shape)
    return out


def packed_input_shape(path: str | os.PathLike) -> list[int]:
    """[C, H, W] of one input of a packed file's model: from its data info, else from the
    registered model's options / defaults (``in_channels``, ``input_size``)."""
    from bnnopt.export.reader import read_manifest
    from bnnopt.nn.summary import default_input_shape

    manifest = read_manifest(path)
    name, options = manifest["model"].get("name"), manifest["model"].get("options") or {}
    data = (manifest.get("meta") or {}).get("data")
    if not name and not (data and data.get("in_channels") and data.get("image_size")):
        raise ValueError(f"{path} names neither a registered model nor its input size; pass shape=[C, H, W]")
    return default_input_shape(name, options, data)


def example_input(shape: list[int], batch: int = 2, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn([batch, *shape], generator=gen).to(dtype)


_random_batch = example_input  # export_onnx's keyword argument shadows the name


def example_tokens(shape: list[int], vocab_size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Seeded random int64 token ids [batch, *shape] in [0, vocab_size)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, int(vocab_size), [batch, *shape], generator=gen)


def is_token_model(model: torch.nn.Module) -> bool:
    """True for a language model taking int64 token ids [B, T] (bnnopt's GPT)."""
    from bnnopt.models.gpt import GPT

    return isinstance(model, GPT)


def _uses_qonnx_ops(layers: dict[str, dict[str, Any]]) -> bool:
    """True if some rewritten layer emits a QONNX op (weight grid or quantized input)."""
    return any(e["grid"] is not None or e["act_bits"] < 32 for e in layers.values())


def _packed_module(source: Any, skeleton: torch.nn.Module | None
                   ) -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict[str, Any]]:
    """(load_packed-style module, layer codes, manifest model info) of ``source``."""
    import copy
    import tempfile

    from bnnopt.export.layers import PACKED_LAYERS
    from bnnopt.export.reader import load_packed, read_manifest
    from bnnopt.export.writer import codes_from_values, export_packed
    from bnnopt.nn import QLayer

    if not isinstance(source, torch.nn.Module):
        model = load_packed(source, skeleton=None if skeleton is None else copy.deepcopy(skeleton))
        return model, packed_codes(source), read_manifest(source)["model"]
    if any(isinstance(m, QLayer) for m in source.modules()):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.bnnpk"
            export_packed(source, path)
            model = load_packed(path, skeleton=copy.deepcopy(skeleton if skeleton is not None else source))
            return model, packed_codes(path), read_manifest(path)["model"]
    packed = tuple(PACKED_LAYERS.values())
    codes = {}
    for name, module in source.named_modules(remove_duplicate=False):
        if isinstance(module, packed):
            found = codes_from_values(module.weight, module.bits)
            if found is not None:
                codes[name] = found
    if not codes and not any(isinstance(m, packed) for m in source.modules()):
        raise ValueError(f"export_onnx: {type(source).__name__} has no quantized layer; valid: a packed file, "
                         "a model binarized with bnnopt.nn.binarize_, or a load_packed module")
    return source, codes, {"name": None}


def export_onnx(source: str | os.PathLike | torch.nn.Module, out: str | os.PathLike, *, qonnx: bool = False,
                fold_bn: bool = False, shape: list[int] | None = None, opset: int = OPSET,
                example_input: torch.Tensor | None = None,
                skeleton: torch.nn.Module | None = None) -> dict[str, Any]:
    """Write ``source`` (packed file, binarized model or load_packed module) as an
    ONNX (or QONNX) model to ``out`` (atomically).

    ``example_input``: one input batch to trace with (required for a module unless
    ``shape`` is given; a packed file of a registered model defaults to a random
    image of its input shape). ``skeleton``: the architecture of a packed file of an
    unregistered model (see ``load_packed``; a copy is filled). A layer or op the
    exporter cannot write raises a one-line ValueError naming it.
    Returns ``{"file", "format", "file_bytes", "nodes", "quantized_layers",
    "folded_bn", "input_shape", "layers"}``; ``layers`` maps each quantized layer
    to its weight initializer, bits and (QONNX) op.
    """
    onnx = _onnx()
    from bnnopt.export.onnx_fold import fold_batchnorm, inline_identities, remove_unused_initializers
    from bnnopt.runs.io import atomic_path

    model, codes, model_info = _packed_module(source, skeleton)
    meta = dict(getattr(model, "bnnopt_meta", {}) or {})
    tokens = is_token_model(model)
    dtype = next((b.dtype for b in model.buffers() if b.is_floating_point()), torch.float32)
    if example_input is not None:
        if not isinstance(example_input, torch.Tensor):
            raise ValueError(f"invalid example_input {type(example_input).__name__}; valid: one torch.Tensor")
        if tokens and (example_input.dim() != 2 or example_input.dtype != torch.int64):
            raise ValueError(f"invalid example_input {example_input.dtype} {tuple(example_input.shape)} "
                             "for a token model; valid: int64 token ids [B, T]")
        x = example_input
        shape = list(x.shape[1:])
    elif tokens:
        shape = [int(model.block_size)]
        x = example_tokens(shape, model.vocab_size)
    else:
        if shape is None and isinstance(source, torch.nn.Module):
            raise ValueError("export_onnx of a module needs example_input=<one input batch> (or shape=[...])")
        shape = list(shape) if shape is not None else packed_input_shape(source)
        x = _random_batch(shape, dtype=dtype)
    ready, layers = onnx_ready(model, codes if qonnx else None, qonnx=qonnx)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(
                ready, (x,), buf, dynamo=False, opset_version=opset,
                input_names=["input"], output_names=["logits"],
                dynamic_axes=({"input": {0: "batch", 1: "tokens"}, "logits": {0: "batch", 1: "tokens"}}
                              if tokens else {"input": {0: "batch"}, "logits": {0: "batch"}}),
                training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                custom_opsets={QONNX_DOMAIN: 1} if qonnx and _uses_qonnx_ops(layers) else None)
    except Exception as err:  # the exporter's errors are long; give one line naming the layer
        where = _layer_calling(ready, x, _unsupported_op(err))
        raise ValueError(f"export_onnx: {where or type(ready).__name__} cannot be written as ONNX opset "
                         f"{opset}: {_first_line(err)}") from None
    proto = onnx.load_from_string(buf.getvalue())
    inline_identities(proto)
    remove_unused_initializers(proto)
    inits = {t.name for t in proto.graph.initializer}
    # The exporter keeps one initializer for bit-identical weights (e.g. the copies
    # nn.TransformerEncoder makes of its layer): point such layers at the kept one.
    mods = dict(ready.named_modules())
    for name, e in layers.items():
        if e["weight"] not in inits:
            twin = next((k for k, o in layers.items() if o["weight"] in inits and o["grid"] == e["grid"]
                         and torch.equal(mods[k].weight, mods[name].weight)), None)
            if twin is not None:
                e["weight"] = layers[twin]["weight"]
    missing = [n for n, e in layers.items() if e["weight"] not in inits]
    if missing:  # pragma: no cover - would mean the exporter renamed a weight
        raise ValueError(f"ONNX export lost the weight initializer of layer(s) {missing[:3]}; "
                         "please report this as a bnnopt bug")
    folded = []
    if fold_bn:
        weights = {e["weight"]: e["bits"] for e in layers.values()}
        folded = fold_batchnorm(proto, set(weights), weights)
    info_meta = {
        "producer": "bnnopt", "format": "qonnx" if qonnx else "onnx", "model": model_info.get("name"),
        "input_shape": ["batch", "tokens"] if tokens else ["batch", *shape],
        "input": ("int64 token ids [batch, tokens], tokens <= block_size" if tokens else
                  "normalised image (x - mean) / std" if example_input is None else "example_input's layout"),
        "mean": (meta.get("data") or {}).get("mean"), "std": (meta.get("data") or {}).get("std"),
        "folded_batchnorm": len(folded),
        "layers": {n: {"bits": e["bits"], "act_bits": e["act_bits"]} for n, e in layers.items()},
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = "bnnopt", json.dumps(info_meta)
    proto.producer_name = "bnnopt"
    onnx.checker.check_model(proto)
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    return {"file": str(out), "format": info_meta["format"], "file_bytes": out.stat().st_size,
            "nodes": len(proto.graph.node), "quantized_layers": len(layers), "folded_bn": len(folded),
            "input_shape": shape, "layers": layers}


def _unsupported_op(err: BaseException) -> str | None:
    """'fft_fft' from the exporter's "Exporting the operator 'aten::fft_fft' ... is not supported"."""
    import re

    found = re.search(r"operator '(?:\w+::)?([\w.]+)'", str(err))
    return found.group(1) if found else None


@torch.no_grad()
def _layer_calling(model: torch.nn.Module, x: torch.Tensor, op: str | None) -> str | None:
    """'layer <name> (<Type>)' of the innermost module that first calls torch function
    ``op`` during one forward pass of ``model`` on ``x`` (None if not found)."""
    if op is None:
        return None
    from torch.overrides import TorchFunctionMode

    stack: list[tuple[str, torch.nn.Module]] = []
    found: list[tuple[str, torch.nn.Module]] = []

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if not found and stack and getattr(func, "__name__", None) == op:
                found.append(stack[-1])
            return func(*args, **(kwargs or {}))

    def enter(module, _args, name):
        stack.append((name, module))

    def leave(_module, _args, _out):
        stack.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda m, a, name=name: enter(m, a, name)))
        handles.append(module.register_forward_hook(leave))
    try:
        with Spy():
            model(x)
    except Exception:  # noqa: BLE001 - best effort: the export error is raised anyway
        return None
    finally:
        for h in handles:
            h.remove()
    if not found:
        return None
    name, module = found[0]
    return f"layer {name or '(root)'!r} ({type(module).__name__})"


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split("\n")[0].split())
    return text[:300] or type(err).__name__


# -- running and checking ---------------------------------------------------------------
def run_onnxruntime(path: str | os.PathLike, x: torch.Tensor | np.ndarray, threads: int | None = None) -> np.ndarray:
    """Logits of ONNX file ``path`` on ``x`` with onnxruntime's CPU provider."""
    ort = require("onnxruntime", "onnx", "running an ONNX model")
    session = ort_session(path, threads, ort)
    return session.run(None, {"input": _np(x)})[0]


def ort_session(path: str | os.PathLike, threads: int | None = None, ort=None):
    """An onnxruntime CPU InferenceSession of ``path`` (``threads`` intra-op threads)."""
    ort = ort or require("onnxruntime", "onnx", "running an ONNX model")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])


def run_qonnx(path: str | os.PathLike, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Logits of QONNX file ``path`` on ``x`` with the qonnx package's own executor."""
    require("qonnx", "onnx", "executing a QONNX model")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    x = _np(x)
    proto = _onnx().load(os.fspath(path))
    for value in (*proto.graph.input, *proto.graph.output):  # its executor wants fixed sizes
        for i, dim in enumerate(value.type.tensor_type.shape.dim):   # batch (and a GPT's tokens)
            if dim.dim_param and i < x.ndim:
                dim.dim_value = x.shape[i]
    model = ModelWrapper(proto).transform(InferShapes())
    return np.asarray(execute_onnx(model, {"input": x})["logits"])


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def qonnx_bit_widths(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """For each Conv / Gemm / MatMul whose weight input comes from a QONNX quantization
    op: ``{weight initializer: {"op", "bits", "node"}}`` (BipolarQuant counts as 1 bit;
    Quant's bit width is read from its initializer)."""
    onnx = _onnx()
    from onnx import numpy_helper

    from bnnopt.export.onnx_fold import weight_source

    proto = onnx.load(os.fspath(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producer = {out: node for node in proto.graph.node for out in node.output}
    found = {}
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        source = weight_source(node, producer, inits.__contains__)
        if source is None or source[1] is None:
            continue
        q = source[1]
        if q.op_type == "BipolarQuant":
            bits = 1
        else:
            bits = int(inits[q.input[3]])
        found[q.input[0]] = {"op": q.op_type, "bits": bits, "node": node.name}
    return found


def compare_logits(reference: torch.Tensor, other: np.ndarray, what: str, tol: float = 1e-5) -> float:
    """Max |reference - other|; ValueError if above ``tol`` * max(1, max |reference|)."""
    ref = reference.detach().cpu().numpy()
    if ref.shape != other.shape:
        raise ValueError(f"{what}: logits shape {list(other.shape)} differs from the packed model's {list(ref.shape)}")
    diff = float(np.abs(ref - other).max()) if ref.size else 0.0
    limit = tol * max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
    if not diff <= limit:
        raise ValueError(f"{what}: logits differ from the packed model's by {diff:.3g} (limit {limit:.3g}); "
                         "please report this as a bnnopt bug")
    return diff


@torch.no_grad()
def verify_graph(packed: str | os.PathLike, graph: str | os.PathLike, info: dict[str, Any], *,
                 qonnx: bool, batch: int = 4, tol: float = 1e-5) -> dict[str, Any]:
    """Compare the exported graph's logits with ``load_packed``'s on a seeded random batch.

    ONNX: onnxruntime. QONNX: every quantized weight must pass through a QONNX op
    with its layer's bit width; then the qonnx package's executor if it is installed,
    else the check is structural only (said so in ``verified_with``).
    Returns ``{"verified_with", "verified_max_abs_diff"}``; ValueError on a mismatch.
    """
    from bnnopt.extras import available
    from bnnopt.export.reader import load_packed

    model = load_packed(packed)
    dtype = next((b.dtype for b in model.buffers() if b.is_floating_point()), torch.float32)
    if is_token_model(model):
        x = example_tokens([int(model.block_size)], model.vocab_size, batch=batch, seed=1)
    else:
        x = example_input(info["input_shape"], batch=batch, seed=1, dtype=dtype)
    ref = model(x)
    scale = f"max |logit| {float(ref.abs().max()):.3g}"
    if not qonnx:
        diff = compare_logits(ref, run_onnxruntime(graph, x), "onnxruntime", tol)
        return {"verified_with": f"onnxruntime logits equal load_packed's (max |diff| {diff:.2g}, {scale})",
                "verified_max_abs_diff": diff}
    widths = qonnx_bit_widths(graph)
    for name, entry in info["layers"].items():
        got = widths.get(entry["weight"]) or next(
            (w for k, w in widths.items() if k.startswith(entry["weight"] + "_")), None)
        if got is None or got["bits"] != entry["bits"]:
            raise ValueError(f"QONNX graph: layer {name!r} weight has bit width "
                             f"{None if got is None else got['bits']}, expected {entry['bits']}; "
                             "please report this as a bnnopt bug")
    if not available("qonnx"):
        return {"verified_with": "structure only (qonnx not installed): onnx.checker passed and every "
                                 "quantized weight goes through Quant/BipolarQuant with its bit width",
                "verified_max_abs_diff": None}
    diff = compare_logits(ref, run_qonnx(graph, x), "qonnx executor", tol)
    return {"verified_with": f"qonnx executor logits equal load_packed's (max |diff| {diff:.2g}, {scale}); "
                             "bit width of every quantized weight checked",
            "verified_max_abs_diff": diff}
