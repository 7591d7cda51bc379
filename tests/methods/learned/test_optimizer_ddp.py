"""bnnopt.FSG / FCGrad on a DistributedDataParallel model in the user's own loop
(2 CPU processes, gloo): the ranks stay identical and equal one process on the
global batch (g and ∂L/∂Δ averaged across ranks, each rank's meta work on its share of
the weights, the meta-nets' partial gradients summed)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_dist = _load("bnnopt_test_dist", HERE.parents[1] / "train" / "_dist.py")
identical, max_difference, torchrun = _dist.identical, _dist.max_difference, _dist.torchrun
WORKER = HERE / "ddp_own_loop_worker.py"


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path_factory.mktemp("ddp_own_loop")
    done = torchrun([str(WORKER), str(out)], nproc=2)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("name", ["fsg", "fcgrad", "lstmfc"])
def test_ranks_identical_and_equal_to_one_process(ranks, name):
    worker = _load("bnnopt_ddp_own_loop_worker", WORKER)
    r0, r1 = (torch.load(ranks / f"{name}-rank{r}.pt", weights_only=False) for r in (0, 1))
    assert identical(r0, r1)
    assert r0["split"] and r1["split"]  # each rank ran the meta-nets on its share only
    model, cls, options = worker.build(name)
    opt = cls(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), options)
    for x, y in worker.global_batches(4):
        def closure(x=x, y=y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss
        opt.step(closure)
    assert opt.steps == r0["opt"]["steps"] == 4
    worst, where = max_difference(r0["model"], model.state_dict())
    assert worst < 1e-10, where
    worst, where = max_difference(r0["opt"]["meta_modules"], opt.state_dict()["meta_modules"])
    assert worst < 1e-10, where


def test_grad_scaler_steps_and_skips_alike_on_every_rank(ranks):
    """A non-finite batch on one rank only: every rank skips that step, and the run
    equals one process on the global batches (the split path unscales g before it
    derives ∂L/∂W̃)."""
    worker = _load("bnnopt_ddp_own_loop_worker", WORKER)
    r0, r1 = (torch.load(ranks / f"fsg-scaler-rank{r}.pt", weights_only=False) for r in (0, 1))
    assert identical(r0, r1)
    assert r0["split"]
    model, cls, options = worker.build("fsg")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    opt = cls(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), options,
              scaler=scaler)
    for x, y in worker.scaled_batches():
        worker.run_scaled(opt, scaler, model, x, y)
    assert opt.steps == r0["opt"]["steps"] == 4  # five batches, one skipped
    assert scaler.get_scale() == r0["scale"] < 2.0 ** 10
    worst, where = max_difference(r0["model"], model.state_dict())
    assert worst < 1e-10, where
