"""The public learned-gradient optimizers (bnnopt.FSG, FCGrad, MultiFC, LSTMFC) in a
hand-written loop: same numbers as the Trainer's methods, exact resume, accumulation,
schedulers, any model output, GradScaler, held-out meta closure, dtype changes."""
from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnnopt
from bnnopt.methods.learned import OfficialEpsAdam

from .conftest import ALL_LAYERS, batches, make, step, tiny_cnn, tiny_mlp

CASES = [
    ("fcgrad", {}), ("multifc", {}), ("lstmfc", {"hidden": 8}),
    ("fsg", {"history": 3}), ("fsg", {"variant": "official", "history": 2, "expand": 2}),
]
OPTIMIZERS = {"fsg": bnnopt.FSG, "fcgrad": bnnopt.FCGrad, "multifc": bnnopt.MultiFC,
              "lstmfc": bnnopt.LSTMFC}
IDS = ["fcgrad", "multifc", "lstmfc", "fsg", "fsg-official"]


def own(name: str, options: dict, *, cnn: bool = False, seed: int = 0, lr: float = 0.05,
        momentum: float = 0.9, **kw):
    """(model, optimizer): a tiny float64 model quantized and optimized by the public API."""
    torch.manual_seed(seed)
    model = (tiny_cnn() if cnn else tiny_mlp()).double()
    cls = OPTIMIZERS[name]
    bnnopt.binarize_(model, cls.quant_config(options, **ALL_LAYERS))
    base = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    return model, cls(model, base, options, **kw)


def closure_for(model, opt, batch):
    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(batch[0]), batch[1])
        loss.backward()
        return loss
    return closure


def assert_same(a: nn.Module, b: nn.Module, exact: bool = True) -> None:
    for (key, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        if exact:
            assert torch.equal(p, q), key
        else:
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=key)


@pytest.mark.parametrize("name, options", CASES, ids=IDS)
def test_own_loop_equals_the_trainer_method_bit_for_bit(name, options):
    data = batches(6)
    model_m, method = make(name, optim="sgdm", **options)
    model_o, opt = own(name, options)
    for batch in data:
        step(model_m, method, batch)
        loss = opt.step(closure_for(model_o, opt, batch))
        assert torch.isfinite(loss) and loss.ndim == 0  # the closure's own loss comes back
    assert method.steps == opt.steps == 6
    assert_same(model_m, model_o)
    for p, q in zip(method.meta_modules.parameters(), opt.meta_modules.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, q) for p, q in   # the meta-nets did train
               zip(method.meta_modules.parameters(), own(name, options)[1].meta_modules.parameters()))


@pytest.mark.parametrize("name, options", CASES, ids=IDS)
def test_state_dict_round_trip_mid_loop_resumes_exactly(name, options):
    data = batches(6, seed=3)
    full, opt = own(name, options)
    for batch in data:
        opt.step(closure_for(full, opt, batch))
    first, opt1 = own(name, options)
    for batch in data[:3]:
        opt1.step(closure_for(first, opt1, batch))
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt1.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    resumed, opt2 = own(name, options, seed=7)  # other initial weights and meta-nets
    resumed.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    for batch in data[3:]:
        opt2.step(closure_for(resumed, opt2, batch))
    assert_same(full, resumed)
    for p, q in zip(opt.meta_modules.parameters(), opt2.meta_modules.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name, options", CASES, ids=IDS)
def test_two_micro_batches_equal_one_batch_of_their_union(name, options):
    data = batches(8, seed=5)
    whole = [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(data[::2], data[1::2])]
    model_a, opt_a = own(name, options)
    model_b, opt_b = own(name, options)
    for i, batch in enumerate(whole):
        opt_a.step(closure_for(model_a, opt_a, batch))
        opt_b.zero_grad()
        with opt_b.lookahead():
            for xb, yb in data[2 * i: 2 * i + 2]:
                (F.cross_entropy(model_b(xb), yb) / 2).backward()
        opt_b.step()
    assert opt_b.steps == 4
    assert_same(model_a, model_b, exact=False)


def test_an_lr_scheduler_drives_the_lr_of_the_step():
    data = batches(4)
    model, opt = own("fsg", {"history": 2})
    assert opt.param_groups is opt.base.param_groups
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    seen = []
    for batch in data:
        opt.step(closure_for(model, opt, batch))
        seen.append(opt.method._prev_lr)
        sched.step()
    assert seen == [0.05, 0.025, 0.0125, 0.00625]
    # the same as setting the lr by hand
    manual, opt_m = own("fsg", {"history": 2})
    for batch, lr in zip(data, seen):
        for group in opt_m.param_groups:
            group["lr"] = lr
        opt_m.step(closure_for(manual, opt_m, batch))
    assert_same(model, manual)


@dataclass
class Output:
    logits: torch.Tensor
    hidden: torch.Tensor


class DictModel(nn.Module):
    """A model whose forward returns a dict (as an HF model returns an output object)."""

    def __init__(self, inner: nn.Module, kind: str):
        super().__init__()
        self.inner, self.kind = inner, kind

    def forward(self, x):
        logits = self.inner(x)
        if self.kind == "dict":
            return {"logits": logits, "aux": logits.detach()}
        return Output(logits=logits, hidden=x)


@pytest.mark.parametrize("kind", ["dict", "dataclass"])
def test_a_model_returning_a_dict_or_dataclass_works_through_the_closure(kind):
    data = batches(4)
    plain, opt_p = own("fsg", {"history": 2})
    torch.manual_seed(0)
    inner = tiny_mlp().double()
    wrapped = DictModel(inner, kind)
    bnnopt.binarize_(wrapped, bnnopt.FSG.quant_config({"history": 2}, **ALL_LAYERS))
    opt = bnnopt.FSG(wrapped, torch.optim.SGD(wrapped.parameters(), lr=0.05, momentum=0.9),
                     history=2)
    for batch in data:
        opt_p.step(closure_for(plain, opt_p, batch))

        def closure(batch=batch):
            opt.zero_grad()
            out = wrapped(batch[0])
            logits = out["logits"] if kind == "dict" else out.logits
            loss = F.cross_entropy(logits, batch[1])
            loss.backward()
            return loss
        opt.step(closure)
    assert_same(plain, wrapped.inner)


def test_grad_scaler_two_phase_equals_the_unscaled_step_and_skips_non_finite():
    data = batches(4, seed=2)
    model_a, opt_a = own("fsg", {"history": 2})
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    model_b, opt_b = own("fsg", {"history": 2}, scaler=scaler)
    for batch in data:
        opt_a.step(closure_for(model_a, opt_a, batch))
        opt_b.zero_grad()
        with opt_b.lookahead():
            scaler.scale(F.cross_entropy(model_b(batch[0]), batch[1])).backward()
        scaler.step(opt_b)
        scaler.update()
    assert_same(model_a, model_b, exact=False)
    with pytest.raises(ValueError, match="two-phase form"):
        opt_b.step(closure_for(model_b, opt_b, data[0]))
    before = [p.detach().clone() for p in model_b.parameters()]
    opt_b.zero_grad()
    with opt_b.lookahead():
        scaler.scale(F.cross_entropy(model_b(data[0][0]), data[0][1]) * float("inf")).backward()
    scaler.step(opt_b)
    scaler.update()
    assert opt_b.steps == 4 and scaler.get_scale() < 2.0 ** 10
    assert all(torch.equal(p, q) for p, q in zip(before, model_b.parameters()))
    opt_b.zero_grad()
    with opt_b.lookahead():   # the next step works again (the skipped look-ahead is dropped)
        scaler.scale(F.cross_entropy(model_b(data[1][0]), data[1][1])).backward()
    scaler.step(opt_b)
    assert opt_b.steps == 5


class ListLoader:
    """The Trainer's meta-loader interface (len, epoch(e, start)) over fixed batches."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def epoch(self, e, start=0):
        return iter(self.data[start:])


@pytest.mark.parametrize("name", ["fcgrad", "fsg"])
def test_heldout_meta_closure_equals_the_trainer_method(name):
    data, meta = batches(5, cnn=True), batches(3, cnn=True, seed=9)
    options = {"meta_data": "heldout", **({"history": 2} if name == "fsg" else {})}
    model_m, method = make(name, cnn=True, optim="sgdm", **options)
    method.set_meta_data(ListLoader(meta), model_m)
    model_o, opt = own(name, options, cnn=True)
    for k, batch in enumerate(data):
        step(model_m, method, batch)
        x_meta, y_meta = meta[(k - 1) % 3]  # the first step has no meta-nets: no meta batch
        buffers = [b.clone() for b in model_o.buffers()]

        def meta_closure(x=x_meta, y=y_meta):
            return F.cross_entropy(model_o(x), y)
        if k == 0:
            opt.step(closure_for(model_o, opt, batch))
        elif k % 2 == 0:   # the closure form
            opt.step(closure_for(model_o, opt, batch), meta_closure=meta_closure)
            # the training forward updates the BatchNorm statistics (only the meta one is undone)
            assert not all(torch.equal(a, b) for a, b in zip(buffers, model_o.buffers()))
        else:              # the two-phase form
            with opt.lookahead(meta_closure=meta_closure):
                assert all(torch.equal(a, b) for a, b in zip(buffers, model_o.buffers()))
                closure_for(model_o, opt, batch)()
            opt.step()
    assert_same(model_m, model_o)
    with pytest.raises(ValueError, match="needs a meta_closure"):
        opt.step(closure_for(model_o, opt, data[0]))


@pytest.mark.parametrize("name, options", CASES, ids=IDS)
def test_the_meta_nets_follow_the_model_to_another_dtype(name, options):
    torch.manual_seed(0)
    model = tiny_mlp()
    cls = OPTIMIZERS[name]
    bnnopt.binarize_(model, cls.quant_config(options, **ALL_LAYERS))
    opt = cls(model, torch.optim.SGD(model.parameters(), lr=0.05), options)
    data = [(x.float(), y) for x, y in batches(4)]
    for batch in data[:2]:
        opt.step(closure_for(model, opt, batch))
    model.to(torch.bfloat16)
    opt.base.state.clear()
    for batch in data[2:]:
        loss = opt.step(closure_for(model, opt, (batch[0].bfloat16(), batch[1])))
        assert torch.isfinite(loss)
    assert {p.dtype for p in opt.meta_modules.parameters()} == {torch.bfloat16}
    assert opt.method._g[0].dtype == torch.bfloat16


def test_construction_checks_and_config_objects():
    class Config:  # anything with to_options(), e.g. a typed dataclass config
        def to_options(self):
            return {"history": 2, "beta": 0.5}

    torch.manual_seed(0)
    model = tiny_mlp().double()
    with pytest.raises(ValueError, match="has none: call bnnopt.binarize_"):
        bnnopt.FSG(model, torch.optim.SGD(model.parameters(), lr=0.1))
    bnnopt.binarize_(model, bnnopt.FSG.quant_config(**ALL_LAYERS))
    with pytest.raises(ValueError, match="does not hold the weight of quantized layer '0'"):
        bnnopt.FSG(model, torch.optim.SGD(list(model.parameters())[2:], lr=0.1))
    opt = bnnopt.FSG(model, torch.optim.SGD(model.parameters(), lr=0.1), Config(), beta=0.4)
    assert isinstance(opt, torch.optim.Optimizer)
    assert (opt.method.options["history"], opt.method.options["beta"]) == (2, 0.4)
    with pytest.raises(ValueError, match="invalid config 3"):
        bnnopt.FSG(model, torch.optim.SGD(model.parameters(), lr=0.1), 3)
    with pytest.raises(ValueError, match="unknown option 'histroy'"):
        bnnopt.FSG(model, torch.optim.SGD(model.parameters(), lr=0.1), histroy=2)
    with pytest.raises(ValueError, match="needs base=bnnopt.methods.learned.OfficialEpsAdam"):
        bnnopt.FCGrad(model, torch.optim.Adam(model.parameters()), variant="official")
    bnnopt.FCGrad(model, OfficialEpsAdam(model.parameters()), variant="official")
    with pytest.raises(RuntimeError, match="no look-ahead to finish"):
        opt.step()


@pytest.mark.parametrize("options", [{"history": 2}, {"variant": "official", "history": 2,
                                                      "expand": 2}], ids=["fsg", "fsg-official"])
def test_own_loop_equals_a_trainer_run_on_digits(tmp_path, options):
    """bnnopt train (Trainer, fp64) and the public optimizer on the Trainer's own batches."""
    import copy

    from bnnopt.train import RunConfig, Trainer
    from bnnopt.train.schedule import lr_at

    cfg = RunConfig(model="mlp", dataset="digits", method="fsg", method_options=options,
                    epochs=3, batch_size=64, model_options={"hidden": 16}, schedule="cosine",
                    optim={"name": "sgdm", "lr": 0.05}, augment=False, device="cpu",
                    precision="fp64", train_limit=128, test_limit=64, policy=ALL_LAYERS)
    trainer = Trainer(cfg, tmp_path / "run")
    seed = torch.initial_seed()
    model = copy.deepcopy(trainer.model)   # quantized, float64, the Trainer's initial weights
    opt = bnnopt.FSG(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                     options, meta_seed=seed)
    trainer.run()
    model.train()
    for epoch in range(cfg.epochs):
        for group in opt.param_groups:
            group["lr"] = lr_at(epoch, 0.05, cfg.epochs, cfg.schedule, cfg.step_size, cfg.gamma)
        for x, y in trainer.train_loader.epoch(epoch):
            opt.step(closure_for(model, opt, (x, y)))
    assert opt.steps == trainer.method.steps == 6
    assert_same(trainer.model, model)
