"""variant="official" is the official code: a literal transcription of its training step.

The loop below transcribes, line by line and in plain PyTorch, one iteration of
``meta-quantize.py`` of github two-tiger/FSG (a MetaQuant fork) with its layers
(``MetaQuantLinear.forward``: calibration, look-ahead ``meta_weight`` and
``meta_bias``, DoReFa u = tanh/max·0.5+0.5, Q = 2·round(u)-1 with a
straight-through rounding, a hook storing dL/dQ), its gradient generation
(``meta_gradient_generation`` / ``meta_fast_slow_gradient_generation``), its
refining Adam (``meta_utils/adam.py``: ε added to √v, then ``p -= lr·refined``)
and its first iteration (no meta gradient, no update at all). The meta-nets are
built here too, with the official layer structure (per-layer linear maps, the
LSTM run per layer); only the Mamba block is bnnopt's (tested on its own in
test_mamba.py). Everything starts from the same values as bnnopt's run, and after
12 steps every parameter of the task model and of the meta-nets must agree
within 1e-12 (float64).
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnnopt.registry import METHODS
from bnnopt.methods.base import OptimConfig

STEPS = 12
LR = 1e-2


# -- the task model, official style: parameters held by hand -----------------------------------
def float_model() -> nn.Module:
    """Linear(6,8)+bias, BN, ReLU, Linear(8,8) no bias, ReLU, Linear(8,3)+bias: all 3 binarized."""
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Linear(8, 8, bias=False), nn.ReLU(), nn.Linear(8, 3))


class RoundSTE(torch.autograd.Function):
    """utils/quantize.py Function_STE for 1 bit: round(u), gradient gated by |u| <= 1."""

    @staticmethod
    def forward(ctx, u):
        ctx.save_for_backward(u)
        return torch.round(u)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return grad * (u.abs() <= 1).to(grad.dtype)


class OfficialLayer:
    """MetaQuantLinear: weight, bias and what its forward stores."""

    def __init__(self, linear: nn.Linear):
        self.weight = linear.weight.detach().clone().requires_grad_(True)
        self.bias = None if linear.bias is None else linear.bias.detach().clone().requires_grad_(True)
        self.quantized_grads = None
        self.pre_quantized_weight = None
        self.calibration = None

    def forward(self, x, meta_grad, slow_grad, lr, alpha):
        w = self.weight
        t = torch.tanh(w.data)
        self.calibration = 1 / torch.max(torch.abs(t)) * (1 - torch.pow(t, 2)).detach()
        if meta_grad is not None:
            calibrated = meta_grad * self.calibration
            if slow_grad is None:
                meta_weight = w - lr * (calibrated + (w.grad.data - calibrated.data).detach())
            else:
                meta_weight = w - lr * (alpha * slow_grad + (1 - alpha) * calibrated)
        else:
            meta_weight = w * 1.0
        if self.bias is not None:
            meta_bias = self.bias - self.bias.grad.data * lr if meta_grad is not None else self.bias * 1.0
        else:
            meta_bias = None
        temp = torch.tanh(meta_weight)
        self.pre_quantized_weight = (temp / torch.max(torch.abs(temp.data))) * 0.5 + 0.5
        q = 2 * RoundSTE.apply(self.pre_quantized_weight) - 1

        def hook(grad):
            self.quantized_grads = grad
        q.register_hook(hook)
        return F.linear(x, q, meta_bias)


def official_adam_refine(params, state, lr, betas=(0.9, 0.999), eps=1e-8):
    """meta_utils/adam.py get_refine_gradient, then update_parameters (p -= lr * grad)."""
    beta1, beta2 = betas
    for p in params:
        if p.grad is None:
            continue
        st = state.setdefault(id(p), {"step": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)})
        st["step"] += 1
        grad = p.grad.data
        st["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
        st["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = st["v"].sqrt().add_(eps)
        step_size = math.sqrt(1 - beta2 ** st["step"]) / (1 - beta1 ** st["step"])
        p.grad.data = (step_size * (st["m"] / denom)).clone()
    for p in params:
        if p.grad is not None:
            p.data.add_(-lr * p.grad.data)


# -- the official meta-nets ------------------------------------------------------------------
class MultiFC(nn.Module):  # MetaMultiFC / MetaDesignedMultiFC(num_layers=3), no nonlinearity
    def __init__(self, sizes):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class LSTMFC(nn.Module):  # MetaLSTMFC
    def __init__(self, hidden):
        super().__init__()
        self.hidden = hidden
        self.lstm1 = nn.LSTM(input_size=1, hidden_size=hidden, num_layers=1)
        self.fc1 = nn.Linear(hidden, 1)

    def forward(self, x, hidden=None):
        _, (hn, cn) = self.lstm1(x) if hidden is None else self.lstm1(x, hidden)
        return self.fc1(hn.view(-1, self.hidden)), (hn, cn)


class MambaHistory(nn.Module):  # MetaMambaHistory: LRE token, Mamba, drop the token
    def __init__(self, lre: nn.Embedding, mamba: nn.Module):
        super().__init__()
        self.layer_embedding, self.mamba = lre, mamba

    def forward(self, x, idx):
        emb = self.layer_embedding(torch.tensor([[idx]]))
        return self.mamba(torch.cat((emb, x), dim=1))[:, 1:, :]


def official_nets(method, kind):
    """The official meta-nets, holding copies of bnnopt's initial meta-net values."""
    mm = copy.deepcopy(method.meta_modules)

    def multifc(stack):
        net = MultiFC([stack.layers[0].weight.shape[1]]
                      + [layer.weight.shape[0] for layer in stack.layers])
        for mine, theirs in zip(net.layers, stack.layers):
            mine.weight.data.copy_(theirs.weight.data)
        return net.double()

    def lstmfc(cell):
        net = LSTMFC(cell.hidden).double()
        net.lstm1.load_state_dict(cell.lstm.state_dict())
        net.fc1.load_state_dict(cell.fc.state_dict())
        return net

    if kind in ("fcgrad", "multifc"):
        return {"meta": multifc(mm["meta"])}
    if kind == "lstmfc":
        return {"meta": lstmfc(mm["meta"])}
    if kind == "fsg-lstmfc":
        return {"fast": multifc(mm["fast"]), "slow": lstmfc(mm["slow"])}
    return {"fast": multifc(mm["fast"]), "slow": MambaHistory(mm["lre"].embedding, mm["slow"].mamba)}


def run_official(model0, method, kind, data, alpha=0.9, length=5):
    """``STEPS`` iterations of meta-quantize.py with Adam; returns (layers, model, nets)."""
    model = copy.deepcopy(model0)
    layers = [OfficialLayer(model[i]) for i in (0, 3, 5)]
    bn = model[1]
    nets = official_nets(method, kind)
    if "fast" in nets:
        meta_opts = [torch.optim.Adam(nets["fast"].parameters(), lr=1e-2),
                     torch.optim.Adam(nets["slow"].parameters(), lr=1e-3)]
    else:
        meta_opts = [torch.optim.Adam(nets["meta"].parameters(), lr=1e-3)]
    params = [layers[0].weight, layers[0].bias, bn.weight, bn.bias, layers[1].weight,
              layers[2].weight, layers[2].bias]
    adam_state: dict = {}
    hidden: dict = {}
    history: dict = {}
    for it, (x, y) in enumerate(data):
        for opt in meta_opts:
            opt.zero_grad()
        fast_grads, slow_grads = [None] * 3, [None] * 3
        if it > 0:
            for idx, layer in enumerate(layers):
                grad = layer.quantized_grads.data
                u = layer.pre_quantized_weight.data
                if kind == "fcgrad":
                    meta = nets["meta"](grad.view(-1, 1))
                elif kind == "multifc":
                    meta = grad.view(-1, 1) * nets["meta"](u.view(-1, 1))
                elif kind == "lstmfc":
                    out, h = nets["meta"](u.view(1, -1, 1), hidden.get(idx))
                    hidden[idx] = tuple(t.detach() for t in h)
                    meta = grad.view(1, -1, 1) * out
                else:  # FSG: fast = g * MultiFC(u); slow over the history or LSTMFC(u)
                    fast = grad.view(-1, 1) * nets["fast"](u.view(-1, 1))
                    if kind == "fsg-lstmfc":
                        out, h = nets["slow"](u.view(1, -1, 1), hidden.get(idx))
                        hidden[idx] = tuple(t.detach() for t in h)
                        slow = grad.view(1, -1, 1) * out
                    else:
                        grad_in = grad.view(1, -1, 1)
                        n = grad_in.shape[1]
                        his = history.get(idx)
                        if his is None:
                            his = grad_in
                        elif his.shape[1] / n == length:
                            his = torch.cat((his[:, -int(n * (length - 1)):, :], grad_in), 1)
                        else:
                            his = torch.cat((his, grad_in), 1)
                        history[idx] = his
                        slow = nets["slow"](his, idx)[:, -n:, :].view(1, -1, 1)
                    slow_grads[idx] = slow.reshape(grad.shape)
                    meta = fast
                fast_grads[idx] = meta.reshape(grad.shape)
        h = layers[0].forward(x, fast_grads[0], slow_grads[0], LR, alpha)
        h = torch.relu(F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                    True, bn.momentum, bn.eps))
        h = torch.relu(layers[1].forward(h, fast_grads[1], slow_grads[1], LR, alpha))
        out = layers[2].forward(h, fast_grads[2], slow_grads[2], LR, alpha)
        for p in params:  # optimizee.zero_grad()
            p.grad = None
        F.cross_entropy(out, y).backward()
        for opt in meta_opts:
            opt.step()
        if it > 0:
            for layer, meta in zip(layers, fast_grads):
                layer.weight.grad.data = layer.calibration * meta.data
            official_adam_refine(params, adam_state, LR)
    return layers, bn, nets


def batches(n, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 6, generator=g, dtype=torch.float64),
             torch.randint(0, 3, (6,), generator=g)) for _ in range(n)]


CASES = [("fsg", {"variant": "official"}, "fsg"),
         ("fsg", {"variant": "official", "slow_net": "lstmfc"}, "fsg-lstmfc"),
         ("fcgrad", {"variant": "official"}, "fcgrad"),
         ("multifc", {"variant": "official"}, "multifc"),
         ("lstmfc", {"variant": "official", "impl": "torch"}, "lstmfc"),
         ("lstmfc", {"variant": "official"}, "lstmfc")]


@pytest.mark.parametrize("name,options,kind", CASES, ids=[c[2] + str(i) for i, c in enumerate(CASES)])
def test_official_variant_equals_transcribed_official_step(name, options, kind):
    torch.manual_seed(0)
    model0 = float_model().double()
    model = copy.deepcopy(model0)
    method = METHODS.get(name)(**options)
    method.prepare(model, {"keep_first": False, "keep_last": False})
    method.build(model, OptimConfig(name="adam", lr=LR))
    data = batches(STEPS)
    official_layers, official_bn, nets = run_official(model0, method, kind, data)
    for x, y in data:
        method.train_step(model, x, y, F.cross_entropy)
    mine = [model[0], model[3], model[5]]
    for a, b in zip(mine, official_layers):
        assert (a.weight.detach() - b.weight.detach()).abs().max() < 1e-12
        if b.bias is not None:
            assert (a.bias.detach() - b.bias.detach()).abs().max() < 1e-12
    assert (model[1].weight.detach() - official_bn.weight.detach()).abs().max() < 1e-12
    assert (model[1].bias.detach() - official_bn.bias.detach()).abs().max() < 1e-12
    # the meta-nets were trained identically (compare the nets' linear maps / LSTM weights)
    theirs = [p for net in nets.values() for p in net.parameters()]
    ours = [p for key in ("meta", "fast", "slow", "lre") if key in method.meta_modules
            for p in method.meta_modules[key].parameters()]
    assert sum(p.numel() for p in theirs) == sum(p.numel() for p in ours)
    their_sum = sum(p.detach().double().pow(2).sum() for p in theirs)
    our_sum = sum(p.detach().double().pow(2).sum() for p in ours)
    assert abs(float(their_sum - our_sum)) < 1e-10
    # and the weights did move: the comparison is not between two idle runs
    assert (model[0].weight.detach() - model0[0].weight.detach()).abs().max() > 1e-4
