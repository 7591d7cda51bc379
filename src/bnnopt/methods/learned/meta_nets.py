"""Element-wise meta-networks: the nets that map a weight's (gradient, weight) to a gradient.

Every net here acts on each weight element independently: input (N, d_in),
output (N,) for N weight elements, so all layers of a model can be fed in one
batched call (their flattened tensors concatenated).

* :class:`LinearStack` -- ``depth`` bias-free linear layers, hidden width
  ``hidden``, optional element-wise nonlinearity between them. It is

  - FSG's fast-net (paper: 3 layers, hidden 100, no activation, orthogonal
    initialisation; input (g, Ŵ), so d_in = 2; output the fast gradient F),
  - the official FSG code's fast-net (same stack, default PyTorch
    initialisation, input Ŵ only; its output multiplies g),
  - MetaQuant's "MultiFC" (input Ŵ, output multiplies g) and, with depth 2,
    MetaQuant's "FC-Grad" net (input g, output the meta-gradient).

  Both official codes build these layers without bias; so does this class.
* :class:`LSTMFCNet` -- MetaQuant's "LSTMFC": a one-layer LSTM (input size 1)
  run for ONE time step per training iteration with every weight element as a
  batch item, followed by a linear read-out of the new hidden state. The
  hidden state (h, c), each (1, N, hidden), is carried across iterations by the
  caller (per layer, detached). ``impl="chunked"`` (default) evaluates the step
  with :func:`bnnopt.methods.learned.lstm_step.lstm_step_fc` (same function and gradients,
  no (N, 4H) tensors kept for backward, which recomputes the gates);
  ``impl="saved"`` is the same step keeping the activated gates and tanh(c) for
  backward (N x 5H values: one GEMM and the gate nonlinearities less per step);
  ``impl="torch"`` uses ``nn.LSTM`` itself.
"""
from __future__ import annotations

from torch import Tensor, nn

from bnnopt.methods.learned.lstm_step import lstm_step_fc
from bnnopt.registry import choice

NONLINEAR = ("none", "relu", "tanh")
INITS = ("orthogonal", "default")
LSTM_IMPLS = ("chunked", "saved", "torch")


class LinearStack(nn.Module):
    """``depth`` bias-free linear maps d_in -> hidden -> ... -> 1 (element-wise meta-net).

    forward(x: (N, d_in)) -> (N,). With ``nonlinear="none"`` (the papers' choice) the
    whole net is the linear map x -> x·v, v = (W_depth ... W_1)ᵀ, and is evaluated
    that way (exactly the same function and parameter gradients, up to rounding).
    """

    def __init__(self, in_features: int = 1, hidden: int = 100, depth: int = 3,
                 nonlinear: str = "none", init: str = "default"):
        super().__init__()
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"invalid depth {depth!r}; must be an integer >= 1")
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"invalid hidden size {hidden!r}; must be an integer >= 1")
        if not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"invalid in_features {in_features!r}; must be an integer >= 1")
        self.nonlinear = choice(nonlinear or "none", NONLINEAR, "meta-net nonlinearity")
        choice(init, INITS, "meta-net initialisation")
        sizes = [in_features] + [hidden] * (depth - 1) + [1]
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:])
        )
        if init == "orthogonal":
            for layer in self.layers:
                nn.init.orthogonal_(layer.weight)

    def collapsed(self) -> Tensor:
        """The (1, d_in) matrix W_depth ... W_2 W_1 of the activation-free net."""
        m = self.layers[0].weight
        for layer in self.layers[1:]:
            m = layer.weight @ m
        return m

    def forward(self, x: Tensor) -> Tensor:
        if self.nonlinear == "none":
            # Same linear map, applied as x @ (W_depth...W_1)^T: O(N d_in) work instead of
            # O(N hidden^2) per call; the gradients of every W_j flow through the product.
            return (x @ self.collapsed().t()).squeeze(-1)
        for i, layer in enumerate(self.layers):
            if i > 0 and self.nonlinear == "relu":
                x = x.relu()
            elif i > 0 and self.nonlinear == "tanh":
                x = x.tanh()
            x = layer(x)
        return x.squeeze(-1)


class LSTMFCNet(nn.Module):
    """MetaQuant's LSTMFC: one LSTM step per iteration, every weight element a batch item.

    forward(x: (N,), state: ((1, N, H), (1, N, H)) or None) -> (out (N,), new state).
    out = Linear(H, 1)(h_new). The caller detaches and stores the new state
    (with ``impl="chunked"`` it comes back without gradient already).
    """

    def __init__(self, hidden: int = 100, impl: str = "chunked"):
        super().__init__()
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"invalid hidden size {hidden!r}; must be an integer >= 1")
        self.hidden = hidden
        self.impl = choice(impl, LSTM_IMPLS, "LSTMFC implementation")
        self.lstm = nn.LSTM(input_size=1, hidden_size=hidden, num_layers=1)
        self.fc = nn.Linear(hidden, 1)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None):
        if self.impl in ("chunked", "saved"):
            return lstm_step_fc(x, state, self.lstm, self.fc, save_gates=self.impl == "saved")
        seq = x.reshape(1, -1, 1)  # (time=1, batch=N, feature=1)
        _, (h, c) = self.lstm(seq, state)
        return self.fc(h[0]).squeeze(-1), (h, c)
