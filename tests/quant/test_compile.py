"""torch.compile of binarized models: no graph breaks, and compiled == eager (forward + backward).

Graph breaks are counted with torch._dynamo.explain. The equality check compiles with
the "aot_eager" backend (dynamo + AOTAutograd, which traces the estimators' autograd
Functions; no C++ toolchain needed), so the tests stay fast on CPU.
"""
import pytest
import torch
import torch._dynamo as dynamo
from torch import nn

from bnnopt.nn import set_progress
from bnnopt.registry import METHODS


def _cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 4))


CASES = {"cnn": (_cnn, (4, 3, 4, 4)), "mlp": (_mlp, (4, 16))}
# (method, method options, policy): W1A32 and W1A1 with an annealed activation estimator
METHOD_CASES = [
    ("ste", {}, {}),
    ("irnet", {}, {}),
    ("irnet", {}, {"act_quantizer": "sign", "act_estimator": "ede"}),
    ("reste", {}, {"act_quantizer": "sign", "act_estimator": "reste"}),
    ("rbnn", {}, {}),
    ("rbnn", {"act_path": "official"}, {"act_quantizer": "sign"}),
]


def _model(kind, method, options, policy, seed=0):
    build, shape = CASES[kind]
    torch.manual_seed(seed)
    model = build().double()
    m = METHODS.get(method)(**options)
    m.prepare(model, {"keep_first": False, "keep_last": False, **policy})
    m.on_epoch_start(1, 4)  # a progress strictly inside (0, 1)
    return model, torch.randn(*shape, dtype=torch.float64)


BREAK_CASES = [("cnn", *METHOD_CASES[0]), ("mlp", *METHOD_CASES[0]), ("cnn", *METHOD_CASES[1]),
               ("cnn", *METHOD_CASES[2]), ("mlp", *METHOD_CASES[2]), ("mlp", *METHOD_CASES[3]),
               ("mlp", *METHOD_CASES[4]), ("cnn", *METHOD_CASES[5])]


@pytest.mark.parametrize("kind, method, options, policy", BREAK_CASES)
def test_no_graph_breaks(kind, method, options, policy):
    model, x = _model(kind, method, options, policy)
    dynamo.reset()
    report = dynamo.explain(model)(x)
    assert report.graph_break_count == 0, [str(b.reason)[:200] for b in report.break_reasons]
    assert report.graph_count == 1


@pytest.mark.parametrize("kind, method, options, policy, progresses", [
    ("cnn", *METHOD_CASES[2], (0.25, 0.75)), ("mlp", *METHOD_CASES[5], (0.5,))])
def test_compiled_forward_and_backward_equal_eager(kind, method, options, policy, progresses):
    eager, x = _model(kind, method, options, policy)
    compiled_model, _ = _model(kind, method, options, policy)
    compiled_model.load_state_dict(eager.state_dict())
    dynamo.reset()
    compiled = torch.compile(compiled_model, backend="aot_eager")
    grads = []
    for p in progresses:  # a changed progress reaches the compiled model
        set_progress(eager, p)
        set_progress(compiled_model, p)
        out, ref = compiled(x), eager(x)
        assert torch.allclose(out, ref, rtol=1e-6, atol=1e-6)
        g = torch.autograd.grad(out.square().sum(), list(compiled_model.parameters()))
        g_ref = torch.autograd.grad(ref.square().sum(), list(eager.parameters()))
        for a, b in zip(g, g_ref):
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-6)
        assert any(a.abs().sum() > 0 for a in g)
        grads.append(torch.cat([a.flatten() for a in g]))
    if len(grads) == 2:
        assert not torch.allclose(grads[0], grads[1])  # the surrogate followed the progress
