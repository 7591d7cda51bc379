"""meta_data="heldout": the meta-nets learn from a held-out batch, the step from the
training batch; BatchNorm statistics see only the training batch; exact resume."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from bnnopt.registry import METHODS

from .conftest import batches, make, step, weights

SMALL = {"expand": 2, "d_state": 4, "d_conv": 2, "hidden": 8, "history": 3}


class FixedBatches:
    """A meta loader: ``epoch(e, start)`` yields fixed batches (tagged by epoch)."""

    def __init__(self, batches):
        self.batches = batches
        self.requests = []

    def __len__(self):
        return len(self.batches)

    def epoch(self, epoch, start=0):
        self.requests.append((epoch, start))
        yield from self.batches[start:]


def _twins(name, meta_batches, n_warm=3):
    """(train-variant, heldout-variant) copies of one warmed-up tiny CNN + method."""
    extra = SMALL if name == "fsg" else {}
    model, method = make(name, cnn=True, **extra)
    for b in batches(n_warm, cnn=True):
        step(model, method, b)
    a = copy.deepcopy((model, method))
    b = copy.deepcopy((model, method))
    b[1].options["meta_data"] = "heldout"
    loader = FixedBatches(meta_batches)
    b[1].set_meta_data(loader, b[0])
    return a, b, loader


def _meta_params(method):
    return [p.detach().clone() for p in method.meta_modules.parameters()]


@pytest.mark.parametrize("name", ["fcgrad", "fsg"])
def test_heldout_on_the_training_batch_equals_the_paper_step(name):
    batch = batches(5, cnn=True, seed=9)[0]
    (ma, train), (mb, heldout), _ = _twins(name, [batch])
    step(ma, train, batch)
    step(mb, heldout, batch)
    for pa, pb in zip(_meta_params(train), _meta_params(heldout)):
        assert torch.allclose(pa, pb, atol=1e-12)
    for wa, wb in zip(weights(train), weights(heldout)):
        assert torch.allclose(wa, wb, atol=1e-12)
    for (ka, ba), (_, bb) in zip(ma.named_buffers(), mb.named_buffers()):
        assert torch.allclose(ba.double(), bb.double(), atol=1e-12), ka


@pytest.mark.parametrize("name", ["fcgrad", "fsg"])
def test_heldout_batch_trains_only_the_meta_nets(name):
    """Another meta batch: the meta-nets move differently, while this step's update of
    the task network (G from the meta-nets before their step) and its BatchNorm running
    statistics are those of the paper step."""
    batch = batches(5, cnn=True, seed=9)[0]
    other = batches(1, cnn=True, seed=77)[0]
    (ma, train), (mb, heldout), _ = _twins(name, [other])
    step(ma, train, batch)
    step(mb, heldout, batch)
    assert not all(torch.allclose(pa, pb) for pa, pb in zip(_meta_params(train),
                                                           _meta_params(heldout)))
    for wa, wb in zip(weights(train), weights(heldout)):
        assert torch.allclose(wa, wb, atol=1e-12)
    for (ka, ba), (_, bb) in zip(ma.named_buffers(), mb.named_buffers()):
        assert torch.equal(ba, bb), ka


def test_heldout_meta_gradient_is_the_heldout_loss_gradient():
    """The meta-nets' gradient equals d L(meta batch at W + Δ(φ)) / dφ computed by hand."""
    import torch.nn.functional as F

    from bnnopt.methods.learned.base import MetaInputs, calibration

    batch = batches(5, cnn=True, seed=9)[0]
    xm, ym = batches(1, cnn=True, seed=77)[0]
    (_, _), (mb, heldout), _ = _twins("fcgrad", [(xm, ym)])
    hand_model, hand = copy.deepcopy((mb, heldout))
    layers = [layer for _, layer in hand.layers]
    lr = float(hand.optimizer.param_groups[0]["lr"])
    c = [calibration(layer.weight_quantizer, layer.weight) for layer in layers]
    deltas, _ = hand.generate(MetaInputs(hand._g, hand._w_hat, c, lr))
    for layer, delta in zip(layers, deltas):
        layer.delta = delta
    params = list(hand.meta_modules.parameters())
    expected = torch.autograd.grad(F.cross_entropy(hand_model(xm), ym), params)
    for layer in layers:
        layer.delta = None
    seen = {}
    for opt in heldout.meta_optimizers.values():  # read .grad just before the meta step
        opt.register_step_pre_hook(lambda o, a, k: seen.update(
            {id(p): p.grad.clone() for g in o.param_groups for p in g["params"]}))
    step(mb, heldout, batch)
    for p, e in zip(heldout.meta_modules.parameters(), expected):
        assert torch.allclose(seen[id(p)], e, atol=1e-12)


def test_meta_batches_cycle_and_resume_exactly():
    data = batches(3, cnn=True, seed=5)
    (_, _), (mb, heldout), loader = _twins("fcgrad", data)
    for b in batches(4, cnn=True, seed=6):
        step(mb, heldout, b)
    assert heldout.meta_batches == 4
    assert loader.requests == [(0, 0), (1, 0)]  # batches 0, 1, 2 of epoch 0, then epoch 1
    state = heldout.state_dict()
    assert state["meta_batches"] == 4
    step(mb, heldout, batches(1, cnn=True, seed=8)[0])  # moves the counter on ...
    heldout.load_state_dict(state)                       # ... and back
    loader.requests.clear()
    step(mb, heldout, batches(1, cnn=True, seed=8)[0])
    assert loader.requests == [(1, 1)]  # batch 4 = epoch 1, position 1


def test_bad_meta_options():
    with pytest.raises(ValueError, match="meta_data 'val'; valid: train, heldout"):
        METHODS.get("fsg")(meta_data="val")
    for bad in (0, 1.0, 1.5, True, "0.1"):
        with pytest.raises(ValueError, match="invalid meta_fraction"):
            METHODS.get("lstmfc")(meta_data="heldout", meta_fraction=bad)
    assert METHODS.get("fsg").held_out_fraction({"meta_data": "heldout"}) == 0.1
    assert METHODS.get("fsg").held_out_fraction({}) == 0.0
    assert METHODS.get("ste").held_out_fraction({}) == 0.0


def test_heldout_without_a_meta_split_is_refused():
    model, method = make("fcgrad", cnn=True, meta_data="heldout")
    step(model, method, batches(1, cnn=True)[0])  # the first step has no meta-nets yet
    with pytest.raises(ValueError, match="needs the Trainer's meta split"):
        step(model, method, batches(1, cnn=True)[0])


def _trainer_config(**changes):
    from bnnopt.train import RunConfig

    cfg = RunConfig(model="mlp", dataset="digits", method="fcgrad", epochs=2, batch_size=32,
                    model_options={"hidden": 16}, optim={"name": "adam", "lr": 1e-2},
                    augment=False, device="cpu", train_limit=384, test_limit=128,
                    val_fraction=0.2, method_options={"meta_data": "heldout",
                                                      "meta_fraction": 0.4})
    return cfg.update(changes)


def test_trainer_holds_out_a_disjoint_meta_split_and_resumes_exactly(tmp_path, full_and_killed):
    from bnnopt.train import Trainer
    from bnnopt.train.data_setup import load_run_loaders

    cfg = _trainer_config()
    full, _ = full_and_killed(cfg, tmp_path / "full", tmp_path / "killed")
    info = full.data_info
    # 384 -> 77 validation; of the 307 left, 123 meta images and 184 training images
    assert (info["val_images"], info["meta_images"], info["train_images"]) == (77, 123, 184)
    assert len(full.meta_loader) == 123 // 32  # full batches only
    assert full.method.meta_batches > len(full.meta_loader)  # it went round more than once
    train, val, _, _, meta = load_run_loaders("digits", batch_size=32, augment=False, seed=0,
                                              train_limit=384, val_fraction=0.2,
                                              meta_fraction=0.4)
    rows = [{tuple(r.tolist()) for r in torch.cat([x for x, _ in loader.eval()]).flatten(1)}
            for loader in (train, val.loader, meta)]
    assert len(rows[2] & rows[0]) <= 2 and len(rows[2] & rows[1]) <= 2  # digits repeats a few
    resumed = Trainer.resume(tmp_path / "killed")
    resumed.run()
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    losses = [[json.loads(line)["loss"] for line in (d / "metrics.jsonl").read_text().splitlines()]
              for d in (tmp_path / "full", tmp_path / "killed")]
    assert losses[0] == losses[1]
    assert resumed.method.meta_batches == full.method.meta_batches


def test_a_meta_split_smaller_than_a_batch_is_refused():
    from bnnopt.train.data_setup import load_run_loaders

    with pytest.raises(ValueError, match="fewer than one batch of 64"):
        load_run_loaders("digits", batch_size=64, augment=False, seed=0, train_limit=384,
                         meta_fraction=0.1)
