"""Every registered method: the public API in a hand-written loop equals ``bnnopt train``.

For each name in ``METHODS.names()`` the Trainer runs a RunConfig (protocol-sized
'digits' run: MLP with one hidden layer of 16, fp64, seed 0, 2 epochs of 3 batches,
cosine schedule, every layer quantized), and a loop written the way a user would
write it (``bnnopt.data`` loaders, ``bnnopt.MODELS``, ``binarize_`` + a torch
optimizer + ``EstimatorSchedule``, ``bnnopt.FSG`` ..., ``bnnopt.LAQ(model, ...)``,
``bnnopt.Bop(model, ...)``) trains the same model on the same batches. The final
weights (``model.state_dict()``: latent weights, quantizer parameters and buffers,
BatchNorm statistics) must be equal bit for bit, also when the user's loop is saved
in the middle of an epoch and resumed on freshly built objects from the state dicts.
"""
from __future__ import annotations

import io
import itertools
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnnopt
from bnnopt.methods.estimator_config import EstimatorConfig, RBNNConfig

SEED, EPOCHS, BATCH, TRAIN_LIMIT, TEST_LIMIT = 0, 2, 64, 192, 64   # 3 batches per epoch
POLICY = {"keep_first": False, "keep_last": False}
MODEL_OPTIONS = {"hidden": 16, "hidden_layers": 1}
SGD_LR, ADAM_LR = 0.05, 0.01      # sgdm for every family but the loss-aware one (Adam-style)
#: options that keep the learned family's meta-nets small; laq at 2 bits (the m-bit solver)
OPTIONS: dict[str, dict[str, Any]] = {"fsg": {"history": 2}, "lstmfc": {"hidden": 8},
                                      "laq": {"bits": 2}}
#: the estimator methods whose surrogate gradient changes with the training progress
ANNEALED = {"irnet", "reste", "rbnn"}
LEARNED = {"fsg": "FSG", "fcgrad": "FCGrad", "multifc": "MultiFC", "lstmfc": "LSTMFC"}
LOSS_AWARE = {"lab": "LAB", "laq": "LAQ", "blaq": "BLAQ"}
NAMES = bnnopt.METHODS.names()


def family(name: str) -> str:
    return bnnopt.METHODS.get(name).family


def cosine_lr(base: float, epoch: int) -> float:
    """The run's ``schedule = "cosine"``: lr_e = lr_0 (1 + cos(pi e / E)) / 2."""
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / EPOCHS))


# -- bnnopt train -------------------------------------------------------------------------
_TRAINED: dict[str, nn.Module] = {}


def trainer_model(name: str, tmp_path_factory) -> nn.Module:
    """The model after ``bnnopt train`` of ``name`` (one Trainer run per method and module)."""
    if name not in _TRAINED:
        from bnnopt.train import RunConfig, Trainer

        lossaware = family(name) == "loss-aware"
        cfg = RunConfig(model="mlp", dataset="digits", method=name,
                        method_options=OPTIONS.get(name, {}), seed=SEED, epochs=EPOCHS,
                        batch_size=BATCH, model_options=MODEL_OPTIONS, schedule="cosine",
                        optim={"name": "adam", "lr": ADAM_LR} if lossaware
                        else {"name": "sgdm", "lr": SGD_LR},
                        augment=False, device="cpu", precision="fp64", train_limit=TRAIN_LIMIT,
                        test_limit=TEST_LIMIT, policy=POLICY)
        trainer = Trainer(cfg, tmp_path_factory.mktemp(name) / "run")
        trainer.run()
        _TRAINED[name] = trainer.model
    return _TRAINED[name]


# -- the user's loop ----------------------------------------------------------------------
def user_data():
    from bnnopt.data import load_dataset, make_loaders

    data = load_dataset("digits").take(TRAIN_LIMIT, TEST_LIMIT)
    train, _ = make_loaders(data, BATCH, seed=SEED, augment=False, dtype=torch.float64)
    return data, train


class UserRun:
    """A model and everything that optimizes it, built with the public API only."""

    def __init__(self, name: str, seed: int = SEED):
        self.name, self.fam = name, family(name)
        torch.manual_seed(seed)
        data, self.train = user_data()
        model = bnnopt.MODELS.get("mlp")(num_classes=data.num_classes, in_channels=data.in_channels,
                                         input_size=data.image_size[0], **MODEL_OPTIONS)
        self.schedule = None
        options = OPTIONS.get(name, {})
        if self.fam == "loss-aware":
            # the optimizer swaps the layers itself (every layer: LAB's policy)
            self.opt = getattr(bnnopt, LOSS_AWARE[name])(model, lr=ADAM_LR, **options)
            model.double()
        elif self.fam == "learned-gradient":
            cls = getattr(bnnopt, LEARNED[name])
            bnnopt.binarize_(model, cls.quant_config(options, **POLICY))
            model.double()
            base = torch.optim.SGD(model.parameters(), lr=SGD_LR, momentum=0.9)
            self.opt = cls(model, base, options, meta_seed=seed)
        elif self.fam == "bop":
            bnnopt.binarize_(model, bnnopt.nn.QuantConfig(weight_quantizer="sign", estimator="ste",
                                                           **POLICY))
            model.double()
            from bnnopt.methods.bop import split_params

            _, real = split_params(model)
            self.opt = bnnopt.Bop(model, base=torch.optim.SGD(real, lr=SGD_LR, momentum=0.9))
        else:
            if name != "fp":
                est = RBNNConfig() if name == "rbnn" else EstimatorConfig.preset(name)
                bnnopt.binarize_(model, bnnopt.QuantConfig(
                    weight_quantizer=est.quantizer, weight_bits=est.bits, estimator=est.estimator,
                    **POLICY))
            model.double()
            self.opt = torch.optim.SGD(model.parameters(), lr=SGD_LR, momentum=0.9)
            if name in ANNEALED:   # p = 0 now; RBNN's public schedule is p = epoch / epochs
                self.schedule = bnnopt.EstimatorSchedule(model, total_epochs=EPOCHS,
                                                         endpoint=name != "rbnn")
        self.model = model.train()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        model, opt = self.model, self.opt

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        if self.fam in ("learned-gradient", "bop") or self.name == "blaq":
            opt.step(closure)
        else:
            closure()
            opt.step()

    def epoch(self, epoch: int, start: int = 0, stop: int | None = None,
              anneal: bool = True) -> None:
        """Batches [start, stop) of ``epoch``; the epoch's set-up when start == 0."""
        base = ADAM_LR if self.fam == "loss-aware" else SGD_LR
        # Bop's own groups hold the binary weights (gamma, tau, no lr): the schedule drives
        # the optimizer of the real-valued parameters, opt.base
        groups = self.opt.base.param_groups if self.fam == "bop" else self.opt.param_groups
        for group in groups:
            group["lr"] = cosine_lr(base, epoch)
        if start == 0 and self.name == "rbnn":   # RBNN: new rotations at every epoch start
            bnnopt.nn.update_rotations(self.model)
        for x, y in itertools.islice(self.train.epoch(epoch), start, stop):
            self.step(x, y)
        if stop is None and self.schedule is not None and anneal:
            self.schedule.step()

    def state_dict(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict()}
        if self.schedule is not None:
            state["schedule"] = self.schedule.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        if self.schedule is not None:
            self.schedule.load_state_dict(state["schedule"])


def assert_same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_every_registered_method_is_covered():
    assert set(NAMES) == {"fp"} | set(LEARNED) | set(LOSS_AWARE) | {"bop"} | set(
        n for n in NAMES if family(n) == "estimator")
    assert {family(n) for n in NAMES} == {"estimator", "learned-gradient", "loss-aware", "bop"}


@pytest.mark.parametrize("name", NAMES)
def test_own_loop_equals_bnnopt_train_bit_for_bit(name, tmp_path_factory):
    run = UserRun(name)
    start = {k: v.clone() for k, v in run.model.state_dict().items()}
    for epoch in range(EPOCHS):
        run.epoch(epoch)
    trained = trainer_model(name, tmp_path_factory)
    assert_same(trained, run.model)
    changed = [k for k, v in run.model.state_dict().items() if not torch.equal(v, start[k])]
    assert any(k.endswith("weight") for k in changed)   # it did train


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_mid_epoch_resumes_exactly(name, tmp_path_factory):
    first = UserRun(name)
    first.epoch(0)
    first.epoch(1, stop=1)            # step 4 of 6, inside the second epoch
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed = UserRun(name, seed=SEED + 7)   # other initial weights (and meta-nets, rotations)
    assert not all(torch.equal(v, saved["model"][k]) for k, v in resumed.model.state_dict().items())
    resumed.load_state_dict(saved)
    resumed.epoch(1, start=1)
    assert_same(trainer_model(name, tmp_path_factory), resumed.model)


@pytest.mark.parametrize("name", sorted(ANNEALED))
def test_the_annealing_schedule_matters(name, tmp_path_factory):
    """Without ``schedule.step()`` the second epoch runs at p = 0: the weights differ."""
    run = UserRun(name)
    for epoch in range(EPOCHS):
        run.epoch(epoch, anneal=False)
    trained = trainer_model(name, tmp_path_factory)
    assert any(not torch.equal(p, q) for p, q in zip(trained.state_dict().values(),
                                                      run.model.state_dict().values()))
