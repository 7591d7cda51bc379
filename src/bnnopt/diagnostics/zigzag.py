"""Zig-zag diagnostics: oscillation of latent weights and flips of quantized weights.

BLAQ (Ma et al., Table 1) measures the zig-zagging of loss-aware training by the
oscillation amplitude of the full-precision weights and the number of flips of
the quantized weights. This tracker measures both for ANY method on a fixed
random sample of weights of the model's quantized layers (every module with a
``weight`` and a ``weight_quantizer``: QConv2d / QLinear).

A *record* is taken at construction and then, with ``every="step"`` (default),
after every ``after_step``, or, with ``every="epoch"``, once at each
``end_epoch`` (``after_step`` does nothing). Per-epoch sampling is what BLAQ's
Table 1 counts ("the last 150 epochs"); per-step sampling also sees the
oscillation inside an epoch and so counts more (e.g. 988 flips per step vs 358
per epoch on one MNIST run). For a tracked weight with
records w_0, w_1, ... (latent value ``layer.weight``) and codes c_0, c_1, ...
(the quantizer's integer code, i.e. its quantization level):

* turning point: record k is a turning point when the last non-zero increment
  before it and the first non-zero increment after it have opposite signs
  (zero increments are skipped), i.e. the trajectory reverses direction there;
* oscillation amplitude (peak-to-peak): ``|w_{tau_j+1} - w_{tau_j}|`` for two
  consecutive turning points tau_j < tau_{j+1} -- the length of one swing of a
  zig-zag. A monotone trajectory has none (amplitude 0); a swing is counted in
  the epoch in which its second turning point is detected;
* flip: ``c_k != c_{k-1}`` -- a sign flip at 1 bit, a change of level at m bits
  (changes of the scale alpha alone are not flips).

Per epoch (``end_epoch``) and over the last K epochs (``summary(K)``) it
reports: ``max_amplitude`` (largest swing of any tracked weight),
``mean_amplitude`` (mean over tracked weights of each one's largest swing, 0 if
none), ``flips`` (total over tracked weights), ``flips_per_weight``,
``flipped_fraction`` (share of tracked weights that flipped at least once),
``reversals`` (turning points) and ``records``; and per-weight statistics, the
numbers that can stand beside BLAQ Table 1 (which reports ONE weight):
``amplitude_median`` / ``amplitude_max`` and ``flips_median`` / ``flips_max``
(median and max over the tracked weights of each weight's largest swing / number
of flips in the window), and ``locked_amplitude`` / ``locked_flips`` of one
*locked* weight (``lock``: its position in the sorted sample, default 0; with the
same model, seed and sample size every method locks the same weight, as Table 1
does for LAQ and BLAQ), whose place is ``locked`` = "layer[index]".

Codes come from ``weight_quantizer.encode(W)["codes"]`` of the latent weight W
(a learned-gradient method's look-ahead ``delta`` is ignored); a quantizer
without ``encode`` falls back to the sign of its output. Cost per record: one
no-grad encode of each layer that holds a tracked weight.

Wiring (the Trainer)::

    tracker = ZigZagTracker(model, num_weights=256, seed=seed, every="epoch")  # after prepare()
    ... after each method.train_step(...):  tracker.after_step(model)
    ... at the end of each epoch:           row["zigzag"] = tracker.end_epoch(epoch, model)

Options from a run config: ``zigzag = N`` (weights) and the table
``zigzag_options = {every = "epoch", last_k = 150, lock = 0}`` (CLI:
``--zigzag N --zigzag-every epoch --set zigzag_options.last_k=150``).
    checkpoint["zigzag"] = tracker.state_dict(); tracker.load_state_dict(...) on resume
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["ZigZagTracker", "ZigZagStream", "sequence_stats", "stats", "tracked_layers",
           "EVERY", "OPTION_KEYS", "check_options", "REPORT_KEYS"]

EVERY = ("step", "epoch")
OPTION_KEYS = ("every", "last_k", "lock")
# the columns `bnnopt report` shows (Table-1 comparable first)
REPORT_KEYS = ("epochs", "records", "flips_median", "flips_max", "amplitude_median",
               "amplitude_max", "locked", "locked_flips", "locked_amplitude", "flips",
               "flipped_fraction")


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Validate a ``zigzag_options`` table (ValueError naming the bad key or value)."""
    if not isinstance(options, dict):
        raise ValueError(f"invalid zigzag_options {options!r}; must be a table with keys "
                         f"{', '.join(OPTION_KEYS)}")
    unknown = set(options) - set(OPTION_KEYS)
    if unknown:
        raise ValueError(f"unknown zigzag_options key {sorted(unknown)[0]!r}; valid keys: "
                         f"{', '.join(OPTION_KEYS)}")
    if "every" in options and options["every"] not in EVERY:
        raise ValueError(f"invalid zigzag every {options['every']!r}; valid: {', '.join(EVERY)}")
    for key, low in (("last_k", 1), ("lock", 0)):
        value = options.get(key, low)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"invalid zigzag {key} {value!r}; must be an integer >= {low}")
    return options


def tracked_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module with a ``weight`` and a ``weight_quantizer``."""
    return [(n, m) for n, m in model.named_modules()
            if getattr(m, "weight_quantizer", None) is not None
            and isinstance(getattr(m, "weight", None), torch.Tensor)]


def _codes(layer: nn.Module, w: torch.Tensor) -> torch.Tensor:
    quantizer = layer.weight_quantizer
    if hasattr(quantizer, "encode"):
        return quantizer.encode(w)["codes"]
    return (quantizer(w) >= 0).to(torch.uint8)


class ZigZagStream:
    """The streaming state of the definitions above for ``n`` weights (no model needed).

    ``record(w, codes)`` adds one record; ``close()`` returns and resets the per-weight
    largest swing [n], flips [n], reversals and record count since the last close.
    """

    def __init__(self, w0: torch.Tensor, codes0: torch.Tensor):
        self.prev_w, self.prev_c = w0.float().clone(), codes0.long().clone()
        self.n = self.prev_w.numel()
        self.direction = torch.zeros(self.n)             # sign of the last non-zero increment
        self.turn = torch.full((self.n,), float("nan"))  # value at the last turning point
        self._reset()

    def _reset(self) -> None:
        self.swing = torch.zeros(self.n)
        self.flips = torch.zeros(self.n, dtype=torch.long)
        self.reversals = 0
        self.records = 0

    def record(self, w: torch.Tensor, codes: torch.Tensor) -> None:
        w, codes = w.float().flatten(), codes.long().flatten()
        new_dir = torch.sign(w - self.prev_w)
        moved = new_dir != 0
        turning = moved & (self.direction != 0) & (new_dir != self.direction)
        counted = turning & ~torch.isnan(self.turn)
        swing = (self.prev_w - self.turn).abs()
        self.swing = torch.where(counted, torch.maximum(self.swing, swing), self.swing)
        self.turn = torch.where(turning, self.prev_w, self.turn)
        self.reversals += int(turning.sum())
        self.direction = torch.where(moved, new_dir, self.direction)
        self.flips += (codes != self.prev_c).long()
        self.prev_w, self.prev_c = w, codes
        self.records += 1

    def close(self) -> dict[str, Any]:
        out = {"swing": self.swing.tolist(), "flips": self.flips.tolist(),
               "reversals": self.reversals, "records": self.records}
        self._reset()
        return out

    _KEYS = ("prev_w", "prev_c", "direction", "turn", "swing", "flips")

    def state_dict(self) -> dict[str, Any]:
        state = {k: getattr(self, k).clone() for k in self._KEYS}
        return {**state, "reversals": self.reversals, "records": self.records}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in self._KEYS:
            setattr(self, key, state[key].clone())
        self.reversals, self.records = int(state["reversals"]), int(state["records"])


def _median(x: torch.Tensor) -> float:
    """The median (mean of the two middle values for an even count; 0 if empty)."""
    if not x.numel():
        return 0.0
    v = x.double().sort().values
    k = v.numel()
    return float((v[(k - 1) // 2] + v[k // 2]) / 2)


def stats(swing: torch.Tensor, flips: torch.Tensor, reversals: int, records: int,
          lock: int | None = None) -> dict[str, Any]:
    """The reported numbers from per-weight largest swings [n] and flip counts [n];
    ``lock``: position of the locked weight (None: no locked-weight entries)."""
    n = swing.numel()
    out = {"max_amplitude": float(swing.max()) if n else 0.0,
           "mean_amplitude": float(swing.mean()) if n else 0.0,
           "flips": int(flips.sum()), "flips_per_weight": float(flips.sum()) / max(n, 1),
           "flipped_fraction": float((flips > 0).float().mean()) if n else 0.0,
           "reversals": int(reversals), "records": int(records), "tracked": int(n),
           "amplitude_median": _median(swing), "amplitude_max": float(swing.max()) if n else 0.0,
           "flips_median": _median(flips), "flips_max": int(flips.max()) if n else 0}
    if lock is not None and 0 <= lock < n:
        out["locked_amplitude"] = float(swing[lock])
        out["locked_flips"] = int(flips[lock])
    return out


def sequence_stats(values: torch.Tensor, codes: torch.Tensor) -> dict[str, Any]:
    """Stats of whole trajectories: ``values`` and ``codes`` [T, n] (row 0 = the start)."""
    stream = ZigZagStream(values[0], codes[0])
    for w, c in zip(values[1:], codes[1:]):
        stream.record(w, c)
    out = stream.close()
    return stats(torch.tensor(out["swing"]), torch.tensor(out["flips"]), out["reversals"],
                 out["records"])


class ZigZagTracker:
    """Track ``num_weights`` weights sampled uniformly (seeded) over all quantized layers.

    ``last_k``: the window of the summary that ``end_epoch`` attaches (key "last_k").
    ``every``: "step" (record after every step) or "epoch" (once per epoch).
    ``lock``: position in the sorted sample of the locked weight (< num_weights).
    """

    def __init__(self, model: nn.Module, num_weights: int = 256, seed: int = 0,
                 last_k: int = 5, every: str = "step", lock: int = 0):
        if num_weights < 1:
            raise ValueError(f"invalid num_weights {num_weights!r}; must be >= 1")
        check_options({"last_k": last_k, "every": every, "lock": lock})
        self.every = every
        layers = tracked_layers(model)
        if not layers:
            raise ValueError("model has no quantized layer (no module with a weight_quantizer)"
                             " to track")
        self.last_k = int(last_k)
        self.names = [n for n, _ in layers]
        sizes = torch.tensor([m.weight.numel() for _, m in layers])
        ends = torch.cumsum(sizes, 0)
        gen = torch.Generator().manual_seed(int(seed))
        flat = torch.randperm(int(ends[-1]), generator=gen)[:num_weights].sort().values
        layer_of = torch.searchsorted(ends, flat, right=True)
        self.index = [(int(li), int(fi - (ends[li] - sizes[li]))) for li, fi in zip(layer_of, flat)]
        self.groups = {li: torch.tensor([fi for l2, fi in self.index if l2 == li])
                       for li in sorted({li for li, _ in self.index})}
        self.n = len(self.index)
        if lock >= self.n:
            raise ValueError(f"invalid zigzag lock {lock!r}; must be < the {self.n} tracked "
                             "weights")
        self.lock = int(lock)
        li, fi = self.index[self.lock]
        self.locked = f"{self.names[li]}[{fi}]"
        self.history: list[dict[str, Any]] = []
        self.stream = ZigZagStream(*self._read(model))

    @torch.no_grad()
    def _read(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        layers = dict(tracked_layers(model))
        ws, cs = [], []
        for li, idx in self.groups.items():
            layer = layers[self.names[li]]
            w = layer.weight.detach()
            idx = idx.to(w.device)
            ws.append(w.flatten()[idx].float().cpu())
            cs.append(_codes(layer, w).flatten()[idx].long().cpu())
        return torch.cat(ws), torch.cat(cs)

    def record(self, w: torch.Tensor, codes: torch.Tensor) -> None:
        """Add one record (values ``w`` [n] and codes [n] of the tracked weights)."""
        self.stream.record(w, codes)

    def after_step(self, model: nn.Module) -> None:
        """Record the tracked weights of ``model`` now (call after every train step;
        does nothing when sampling per epoch)."""
        if self.every == "step":
            self.stream.record(*self._read(model))

    # -- reports -----------------------------------------------------------------------
    def end_epoch(self, epoch: int, model: nn.Module | None = None) -> dict[str, Any]:
        """Close epoch ``epoch`` (0-based); returns its stats plus ``last_k``'s summary.

        With ``every="epoch"`` the epoch's one record is taken here, from ``model``
        (required then).
        """
        if self.every == "epoch":
            if model is None:
                raise ValueError("end_epoch needs the model when sampling once per epoch")
            self.stream.record(*self._read(model))
        closed = {"epoch": int(epoch), **self.stream.close()}
        self.history.append(closed)
        out = {"epoch": int(epoch) + 1, "every": self.every, "locked": self.locked,
               **stats(torch.tensor(closed["swing"]), torch.tensor(closed["flips"]),
                       closed["reversals"], closed["records"], self.lock)}
        out["last_k"] = self.summary(self.last_k)
        return out

    def summary(self, last_k: int | None = None) -> dict[str, Any]:
        """Stats over the last ``last_k`` closed epochs (all if None); JSON-serialisable.

        A weight's amplitude over the window is its largest swing in any of them;
        its flips are summed.
        """
        window = self.history if last_k is None else self.history[-int(last_k):]
        if not window:
            return {"epochs": 0, "every": self.every,
                    **stats(torch.zeros(0), torch.zeros(0, dtype=torch.long), 0, 0)}
        swing = torch.tensor([h["swing"] for h in window]).max(0).values
        flips = torch.tensor([h["flips"] for h in window]).sum(0)
        out = stats(swing, flips, sum(h["reversals"] for h in window),
                    sum(h["records"] for h in window), self.lock)
        return {"epochs": len(window), "first_epoch": window[0]["epoch"] + 1,
                "every": self.every, "locked": self.locked, **out}

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "index": list(self.index), "last_k": self.last_k,
                "every": self.every, "lock": self.lock,
                "history": [dict(h) for h in self.history], "stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["names"]) != self.names or [tuple(i) for i in state["index"]] != self.index:
            raise ValueError("zig-zag tracker state is for a different model or sample "
                             "(layer names / sampled indices differ)")
        self.history = [dict(h) for h in state["history"]]
        self.stream.load_state_dict(state["stream"])
        self.last_k = int(state["last_k"])
        if state.get("every", "step") != self.every:
            raise ValueError(f"zig-zag tracker state samples every {state.get('every', 'step')!r},"
                             f" this run every {self.every!r}")
