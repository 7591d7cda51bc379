"""binarize_(model, config): swap the weight layers of any nn.Module in place.

In the style of torchao's ``quantize_(model, config, filter_fn)``.

Candidates (``quantizable_layers``), in ``model.named_modules()`` order:

- ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, ``nn.Conv3d`` (subclasses included)
  -> QLinear / QConv1d / QConv2d / QConv3d;
- the projections of ``nn.MultiheadAttention`` ``m``: ``m.in_proj`` (the packed
  [3E, E] in-projection) or ``m.q_proj`` / ``m.k_proj`` / ``m.v_proj`` (when kdim
  or vdim differ from E), and ``m.out_proj``. These names are those of the layers
  after the swap: ``m`` becomes one :class:`QMultiheadAttention` whose selected
  projections are QLinear and the others plain ``nn.Linear``. ``filter_fn``
  receives the attention module itself for its in-projections;
- ``nn.Embedding`` -> QEmbedding, only with ``QuantConfig(embedding=True)``.

A candidate is swapped when all of these hold:

1. it is not the network's input-side layer when ``config.keep_first`` nor its
   output-side layer when ``config.keep_last`` (FSG paper protocol: stem and
   classifier stay full precision; both False = the official FSG code). The
   input-side layer is the first candidate in forward execution order (found by
   forward hooks over ``example_input`` when given, else module registration
   order), *kept only if it is not inside an attention block*; the output-side
   layer likewise with the last candidate. An attention block is an
   ``nn.MultiheadAttention``, an ``nn.Transformer*`` module, a module whose class
   name contains "Attention", or a repeated element of a ModuleList / Sequential
   (two or more children of its class) that contains one of those. So on a
   CNN / MLP the first conv and the classifier stay float; on
   ``nn.TransformerEncoder`` + head only the head stays float (there is no stem:
   the first projection executed is inside the first encoder layer); on a BERT
   classifier the classifier stays float (and the word embedding with
   ``embedding=True``);
2. ``config.include`` is None or ``re.search(include, name)`` matches;
3. ``config.exclude`` is None or does not match;
4. ``filter_fn`` is None or ``filter_fn(name, module)`` is True.

First/last are decided on the candidate list *before* include/exclude/filter_fn.

Unsupported layers: a module that owns a weight matrix binarize_ cannot quantize
(ConvTranspose, RNN / LSTM / GRU and their cells, Bilinear, EmbeddingBag, an
Embedding with max_norm or sparse gradients, any other module owning a floating
parameter named ``weight`` or ``*_weight`` with two or more dimensions, and, when
``example_input`` is given, a candidate whose forward never runs on it, which
means its parent reads ``.weight`` directly and a swap would leave it float)
is skipped with its reason; ``on_unsupported`` decides what else happens:
"warn" (default, one :class:`UnsupportedLayerWarning` listing them), "error"
(ValueError naming the first) or "ignore".

Fast paths: torch's fused ``nn.TransformerEncoderLayer`` / ``nn.TransformerEncoder``
kernels (eval mode under ``no_grad``) read ``linear1.weight`` etc. directly and
would run the float latent weights. After swapping, every TransformerEncoderLayer
holding a quantized layer gets ``activation_relu_or_gelu = 0`` (the flag that
selects the fused kernel; the layer's Python path uses ``activation`` only) and
every TransformerEncoder holding one ``use_nested_tensor = False``; the swapped
attention (QMultiheadAttention) has no fused path and no ``in_proj_weight``.

Return value: a :class:`BinarizeResult`, a ``list`` of the swapped layer names (in
module order; compares equal to a plain list) with ``.decisions`` (one
:class:`LayerDecision` per candidate or unsupported layer), ``.swapped_layers``,
``.kept``, ``.skipped``, ``.unsupported`` and the table ``.report`` (``str()``
and ``repr()`` stay those of the list). With ``verbose=True`` the table is printed. When nothing is swapped a
:class:`NothingSwappedWarning` names the candidates.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from bnnopt.nn.attention import QMultiheadAttention
from bnnopt.nn.config import QuantConfig
from bnnopt.nn.layers import QConv1d, QConv2d, QConv3d, QEmbedding, QLayer, QLinear

__all__ = ["binarize_", "quantizable_layers", "quantized_layers", "set_progress",
           "NothingSwappedWarning", "UnsupportedLayerWarning", "BinarizeResult", "LayerDecision",
           "ON_UNSUPPORTED", "disable_fused_attention"]

ON_UNSUPPORTED = ("warn", "error", "ignore")


class NothingSwappedWarning(UserWarning):
    """binarize_ found no layer to swap (no candidates, or all were filtered out)."""


class UnsupportedLayerWarning(UserWarning):
    """binarize_ left layers with weights it cannot quantize in full precision."""


FilterFn = Callable[[str, nn.Module], bool]

_ATTENTION_TYPES = (nn.MultiheadAttention, QMultiheadAttention, nn.TransformerEncoderLayer,
                    nn.TransformerDecoderLayer, nn.TransformerEncoder, nn.TransformerDecoder,
                    nn.Transformer)
_UNSUPPORTED_TYPES = (nn.modules.conv._ConvTransposeNd, nn.RNNBase, nn.RNNCellBase, nn.Bilinear,
                      nn.EmbeddingBag)


@dataclass(frozen=True)
class LayerDecision:
    """What binarize_ did with one layer: action "swapped", "kept" (first/last),
    "skipped" (selection rules, already quantized) or "unsupported"; ``reason`` says why."""

    name: str
    type: str
    action: str
    reason: str
    new_type: str | None = None


class BinarizeResult(list):
    """Names of the swapped layers (a list) plus the per-layer decisions."""

    def __init__(self, names=(), decisions=()) -> None:
        super().__init__(names)
        self.decisions: list[LayerDecision] = list(decisions)

    def _of(self, action: str) -> list[LayerDecision]:
        return [d for d in self.decisions if d.action == action]

    @property
    def swapped_layers(self) -> list[LayerDecision]:
        return self._of("swapped")

    @property
    def kept(self) -> list[LayerDecision]:
        """Candidates kept in full precision by keep_first / keep_last."""
        return self._of("kept")

    @property
    def skipped(self) -> list[LayerDecision]:
        """Every layer not swapped, with its reason (kept, skipped and unsupported)."""
        return [d for d in self.decisions if d.action != "swapped"]

    @property
    def unsupported(self) -> list[LayerDecision]:
        return self._of("unsupported")

    def table(self) -> str:
        head = ("layer", "type", "action", "reason")
        rows = [(d.name, d.type + (f" -> {d.new_type}" if d.new_type else ""), d.action, d.reason)
                for d in self.decisions]
        widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(head)]

        def fmt(cells):
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

        counts = {a: len(self._of(a)) for a in ("swapped", "kept", "skipped", "unsupported")}
        return "\n".join([fmt(head), "-" * len(fmt(head)), *map(fmt, rows),
                          ", ".join(f"{v} {k}" for k, v in counts.items())])

    @property
    def report(self) -> str:
        """The table: one row per layer (name, type, action, reason) and the counts."""
        return self.table()

    def __reduce__(self):  # pickle / deepcopy keep the decisions
        return (BinarizeResult, (list(self), self.decisions))


# -- candidates ------------------------------------------------------------------------
def _qclass(module: nn.Module, embedding: bool = False) -> type[QLayer] | None:
    if isinstance(module, QLayer) or isinstance(module, NonDynamicallyQuantizableLinear):
        return None
    for float_cls, q_cls in ((nn.Conv1d, QConv1d), (nn.Conv2d, QConv2d), (nn.Conv3d, QConv3d),
                             (nn.Linear, QLinear)):
        if isinstance(module, float_cls):
            return q_cls
    if embedding and isinstance(module, nn.Embedding) and QEmbedding.unsupported_reason(module) is None:
        return QEmbedding
    return None


def _mha_projections(mha: nn.MultiheadAttention) -> tuple[str, ...]:
    ins = ("in_proj",) if mha._qkv_same_embed_dim else ("q_proj", "k_proj", "v_proj")
    return (*ins, "out_proj")


def _candidates(model: nn.Module, embedding: bool) -> list[tuple[str, nn.Module, str]]:
    """(name, module, owner name): owner = the module to swap (the MHA for its projections)."""
    out = []
    for name, module in model.named_modules():
        if not name:
            continue
        if isinstance(module, nn.MultiheadAttention):
            for proj in _mha_projections(module):
                target = module.out_proj if proj == "out_proj" else module
                out.append((f"{name}.{proj}", target, name))
        elif _qclass(module, embedding) is not None:
            out.append((name, module, name))
    return out


def quantizable_layers(model: nn.Module, config: QuantConfig | None = None) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs binarize_ considers, in module order (root excluded).

    An attention module's projections appear as ``<attn>.in_proj`` (or q/k/v_proj)
    with the attention module and ``<attn>.out_proj`` with its output Linear;
    embeddings only when ``config.embedding``.
    """
    embedding = bool(getattr(config, "embedding", False))
    return [(n, m) for n, m, _ in _candidates(model, embedding)]


# -- first / last ------------------------------------------------------------------------
def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, _ATTENTION_TYPES) or "attention" in type(module).__name__.lower()


def _attention_blocks(model: nn.Module) -> set[str]:
    """Names of the modules that are attention blocks (see the module docstring)."""
    blocks = set()
    for name, module in model.named_modules():
        if name and _is_attention(module):
            blocks.add(name)
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, (nn.ModuleList, nn.Sequential)):
            continue
        children = [(k, c) for k, c in parent._modules.items() if c is not None]
        for key, child in children:
            same = sum(type(c) is type(child) for _, c in children)
            if same >= 2 and any(_is_attention(m) for m in child.modules()):
                blocks.add(f"{parent_name}.{key}" if parent_name else key)
    return blocks


def _inside(name: str, owner: str, blocks: set[str]) -> bool:
    """True if layer ``name`` (swapped as part of ``owner``) lies in an attention block."""
    parts = owner.split(".")
    prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    if owner == name:  # the layer itself is not its own block
        prefixes.discard(name)
    return bool(prefixes & blocks)


@torch.no_grad()
def _execution_order(model: nn.Module, owners: list[str], example_input: Any) -> list[str]:
    """Owner module names in the order of their first forward call on ``example_input``
    (eval mode, torch's fused attention paths off, every mode restored)."""
    modules = dict(model.named_modules())
    order: list[str] = []
    handles = []
    for owner in dict.fromkeys(owners):
        def hook(_mod, _inputs, owner=owner):
            if owner not in order:
                order.append(owner)
        handles.append(modules[owner].register_forward_pre_hook(hook))
    modes = {m: m.training for m in model.modules()}
    fast = torch.backends.mha.get_fastpath_enabled()
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        model.eval()
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        model(*args)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return order


def _first_last(model: nn.Module, config: QuantConfig, candidates, example_input
                ) -> tuple[dict[str, str], set[str]]:
    """({kept name: reason}, owners never called on example_input)."""
    if not candidates:
        return {}, set()
    names = [n for n, _, _ in candidates]
    owner_of = {n: o for n, _, o in candidates}
    uncalled: set[str] = set()
    if example_input is not None:
        owners = _execution_order(model, [o for _, _, o in candidates], example_input)
        rank = {o: i for i, o in enumerate(owners)}
        uncalled = {o for o in owner_of.values() if o not in rank}
        called = [n for n in names if owner_of[n] in rank]
        # stable: by first call of the owner, then module order within one owner
        names = sorted(called, key=lambda n: rank[owner_of[n]])
    blocks = _attention_blocks(model)
    keep = {}
    order = "execution order" if example_input is not None else "module order"
    if names and config.keep_first and not _inside(names[0], owner_of[names[0]], blocks):
        keep[names[0]] = f"keep_first: the input-side layer (first in {order})"
    if names and config.keep_last and not _inside(names[-1], owner_of[names[-1]], blocks):
        keep[names[-1]] = f"keep_last: the output-side layer (last in {order})"
    return keep, uncalled


# -- unsupported -------------------------------------------------------------------------
def _unsupported(model: nn.Module, embedding: bool, claimed: set[int]) -> list[tuple[str, nn.Module, str]]:
    out = []
    for name, module in model.named_modules():
        if not name or id(module) in claimed or isinstance(module, (QLayer, QMultiheadAttention)) \
                or _qclass(module) is not None or isinstance(module, NonDynamicallyQuantizableLinear):
            continue  # candidates are decided by the selection rules
        if isinstance(module, nn.Embedding) and not isinstance(module, nn.EmbeddingBag):
            reason = QEmbedding.unsupported_reason(module)
            if embedding and reason is not None:
                out.append((name, module, reason))
            continue
        if isinstance(module, _UNSUPPORTED_TYPES):
            out.append((name, module, f"{type(module).__name__} has no quantized layer"))
            continue
        mats = [k for k, p in module.named_parameters(recurse=False)
                if p.is_floating_point() and p.dim() >= 2 and (k == "weight" or k.endswith("_weight"))]
        if mats and not isinstance(module, nn.MultiheadAttention):
            out.append((name, module, f"owns the {'/'.join(mats)} matrix of an unknown layer type"))
    return out


# -- binarize_ ---------------------------------------------------------------------------
def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for parent in list(model.modules()):
        for key, sub in list(parent._modules.items()):
            if sub is old:
                setattr(parent, key, new)


def _runs_quantized(module: nn.Module) -> bool:
    """A quantized layer, a quantized attention, or a packed inference layer (``packed_info``)."""
    return isinstance(module, (QLayer, QMultiheadAttention)) or hasattr(module, "packed_info")


def disable_fused_attention(model: nn.Module) -> list[str]:
    """Turn off torch's fused Transformer kernels wherever a quantized layer lives.

    ``nn.TransformerEncoderLayer``'s fused kernel (eval mode, no grad) reads
    ``linear1.weight``, ``self_attn.in_proj_weight``, ... directly, bypassing the
    layers' forward; it is selected only when ``activation_relu_or_gelu`` is
    non-zero, a flag the Python path does not use (it calls ``activation``), so it
    is set to 0. ``nn.TransformerEncoder``'s nested-tensor path is turned off with
    ``use_nested_tensor = False``. Returns the names of the modules changed.
    """
    changed = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerEncoder)) and any(
                _runs_quantized(m) for m in module.modules()):
            if isinstance(module, nn.TransformerEncoderLayer):
                module.activation_relu_or_gelu = 0
            else:
                module.use_nested_tensor = False
            changed.append(name)
    return changed


def binarize_(model: nn.Module, config: QuantConfig | None = None,
              filter_fn: FilterFn | None = None, *, example_input: Any = None,
              on_unsupported: str | None = None, verbose: bool = False) -> BinarizeResult:
    """Replace the selected weight layers of ``model`` by quantized layers, in place.

    Each new layer copies the float layer's weight and bias (same device/dtype,
    requires_grad and training mode) and gets fresh quantizers built from
    ``config`` (validated first; default ``QuantConfig()`` = 1-bit DoReFa weights,
    identity STE, first/last kept). A module shared under several names is swapped
    once, under its first name, and every reference to it is replaced.

    ``example_input``: a tensor (or tuple of positional inputs) run once through
    ``model`` (eval mode, no grad, state restored) to order the candidates by
    execution for keep_first / keep_last and to find layers whose forward never
    runs. ``on_unsupported``: "warn" | "error" | "ignore" (default
    ``config.on_unsupported``). ``verbose``: print the report table.
    Returns a :class:`BinarizeResult` (a list of the swapped names); see the module
    docstring for the selection rules.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"binarize_ expects a torch.nn.Module, got {type(model).__name__}")
    config = (config or QuantConfig()).validate()
    policy = config.on_unsupported if on_unsupported is None else on_unsupported
    if policy not in ON_UNSUPPORTED:
        raise ValueError(f"invalid on_unsupported {policy!r}; valid: {', '.join(ON_UNSUPPORTED)}")
    if filter_fn is not None and not callable(filter_fn):
        raise ValueError(f"invalid filter_fn {filter_fn!r}; must be callable(name, module) -> bool")

    candidates = _candidates(model, config.embedding)
    keep, uncalled = _first_last(model, config, candidates, example_input)
    inc = re.compile(config.include) if config.include is not None else None
    exc = re.compile(config.exclude) if config.exclude is not None else None

    modules = dict(model.named_modules())
    decisions: dict[str, LayerDecision] = {}
    chosen: dict[str, list[str]] = {}  # owner -> selected names
    for name, module, owner in candidates:
        kind = (type(module).__name__ if owner == name
                else f"{type(modules[owner]).__name__}.{name.rsplit('.', 1)[1]}")
        if owner in uncalled:
            decisions[name] = LayerDecision(name, kind, "unsupported",
                                            "its forward never runs on example_input (the parent reads "
                                            ".weight directly, or the layer is unused)")
        elif name in keep:
            decisions[name] = LayerDecision(name, kind, "kept", keep[name])
        elif inc is not None and not inc.search(name):
            decisions[name] = LayerDecision(name, kind, "skipped", f"does not match include={config.include!r}")
        elif exc is not None and exc.search(name):
            decisions[name] = LayerDecision(name, kind, "skipped", f"matches exclude={config.exclude!r}")
        elif filter_fn is not None and not filter_fn(name, module):
            decisions[name] = LayerDecision(name, kind, "skipped", "filter_fn returned False")
        else:
            chosen.setdefault(owner, []).append(name)
            decisions[name] = LayerDecision(name, kind, "swapped", "selected", None)

    for owner, names in chosen.items():
        module = modules[owner]
        if isinstance(module, nn.MultiheadAttention):
            new = QMultiheadAttention.from_float(module, config, [n.rsplit(".", 1)[1] for n in names])
        else:
            new = _qclass(module, config.embedding).from_float(module, config)
        _replace(model, module, new)
        for n in names:
            layer = new if n == owner else getattr(new, n.rsplit(".", 1)[1])
            decisions[n] = LayerDecision(n, decisions[n].type, "swapped", "selected", type(layer).__name__)
    disable_fused_attention(model)
    attach_quantizers(model)

    claimed = {id(m) for _, m, _ in candidates} | {id(modules[o]) for _, _, o in candidates}
    for name, module, reason in _unsupported(model, config.embedding, claimed):
        decisions[name] = LayerDecision(name, type(module).__name__, "unsupported", reason)
    if not config.embedding:
        for name, module in model.named_modules():
            if isinstance(module, nn.Embedding) and not isinstance(module, QLayer):
                decisions[name] = LayerDecision(name, type(module).__name__, "skipped",
                                                "embeddings are quantized only with embedding=True")
    for name, module in model.named_modules():
        if name and isinstance(module, QLayer) and name not in decisions and not any(
                name.startswith(o + ".") for o in chosen):
            decisions[name] = LayerDecision(name, type(module).__name__, "skipped", "already quantized")

    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    swapped = [n for n, _, _ in candidates if decisions[n].action == "swapped"]
    ordered = sorted(decisions.values(), key=lambda d: order.get(d.name, order.get(d.name.rsplit(".", 1)[0], 0)))
    result = BinarizeResult(swapped, ordered)

    bad = result.unsupported
    if bad and policy == "error":
        d = bad[0]
        raise ValueError(f"binarize_ cannot quantize layer {d.name!r} ({d.type}): {d.reason}; "
                         f"valid: on_unsupported='warn' or 'ignore' to leave it in full precision")
    if bad and policy == "warn":
        listed = "; ".join(f"{d.name} ({d.type}): {d.reason}" for d in bad[:4])
        warnings.warn(f"binarize_ left {len(bad)} layer(s) with weights in full precision: {listed}"
                      + (" ..." if len(bad) > 4 else ""), UnsupportedLayerWarning, stacklevel=2)
    if not swapped:
        warnings.warn(nothing_swapped_message(model, config, [(n, m) for n, m, _ in candidates], filter_fn),
                      NothingSwappedWarning, stacklevel=2)
    if verbose:
        print(result.table())
    return result


def nothing_swapped_message(model: nn.Module, config: QuantConfig,
                            candidates: list[tuple[str, nn.Module]],
                            filter_fn: FilterFn | None = None) -> str:
    if not candidates:
        return (f"binarize_ swapped no layer: {type(model).__name__} has no unquantized "
                "Conv2d or Linear module (nor Conv1d, Conv3d, attention"
                + (" or Embedding)" if config.embedding else "; Embedding needs embedding=True)"))
    names = ", ".join(n for n, _ in candidates[:6]) + (" ..." if len(candidates) > 6 else "")
    rules = [f"{k}={getattr(config, k)!r}" for k in ("keep_first", "keep_last", "include", "exclude")
             if getattr(config, k, None) not in (None, False)]
    if filter_fn is not None:
        rules.append("filter_fn")
    return (f"binarize_ swapped no layer: {', '.join(rules) or 'the selection'} excluded all "
            f"{len(candidates)} candidate(s) ({names})")


def quantized_layers(model: nn.Module) -> list[tuple[str, QLayer]]:
    """All (name, QLayer) pairs of ``model`` in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QLayer)]


def attach_quantizers(model: nn.Module) -> int:
    """Create the shape-dependent state of every quantized layer's weight quantizer now.

    A weight quantizer with an ``attach(weight)`` method and ``attached`` False (RBNN's:
    rotations R1, R2 as buffers, alpha and theta as parameters, :mod:`bnnopt.quant.rbnn`)
    would otherwise create that state at its first forward, after the user's optimizer
    was built over ``model.parameters()``, which would then never train alpha and theta.
    :func:`binarize_` calls this after swapping, in :func:`quantized_layers` order (R1 and
    R2 are drawn from the global torch RNG). Returns how many quantizers it attached.
    """
    count = 0
    for _, layer in quantized_layers(model):
        quantizer = getattr(layer, "weight_quantizer", None)
        if callable(getattr(quantizer, "attach", None)) and not getattr(quantizer, "attached", True):
            quantizer.attach(layer.weight)
            count += 1
    return count


def update_rotations(model: nn.Module) -> int:
    """RBNN's alternating rotation update (Lin et al. 2020, Sec. 3.2) on every quantized layer
    whose weight quantizer has rotations (``update_rotation``, :mod:`bnnopt.quant.rbnn`).

    For each such layer with weight W (C_out channels viewed as a x b matrices X_i),
    ``rotation_iters`` rounds of B_i = sign(R1^T X_i R2); R1 <- V1 U1^T from
    svd(sum_i B_i R2^T X_i^T); R2 <- U2 V2^T from svd(sum_i X_i^T R1 B_i). In a
    hand-written loop call it at the start of every epoch (before its first batch), as
    the ``rbnn`` method does every ``rotation_update`` epochs (1 in the public code)::

        for epoch in range(epochs):
            update_rotations(model)
            ...train one epoch...; schedule.step()

    Returns how many layers were updated (0 for a model without RBNN layers).
    """
    count = 0
    for _, layer in quantized_layers(model):
        quantizer = getattr(layer, "weight_quantizer", None)
        if callable(getattr(quantizer, "update_rotation", None)):
            quantizer.update_rotation(layer.weight)
            count += 1
    return count


def set_progress(model: nn.Module, p: float) -> None:
    """Set training progress p in [0, 1] on every quantized layer (anneals EDE / ReSTE).

    Same as :func:`bnnopt.quant.set_estimator_progress`; see
    :class:`bnnopt.quant.EstimatorSchedule` for the scheduler object.
    """
    from bnnopt.quant import set_estimator_progress

    set_estimator_progress(model, p)
