"""The tiny GPT under torchrun: two gloo processes vs one process on the global batch.

One torchrun launch trains, per method, two steps of a ``gpt_tiny`` (block size 16,
width 32) on the embedded Shakespeare slice in float64 with a global batch of 8
sequences (2 x 4), and a third, uneven step (5 sequences: 3 + 2) for one method.
Each rank's loss is its shard's summed per-token cross-entropy scaled by
world / (global sequences x T) (``bnnopt.train.lm.sharded_token_criterion``), so the
averaged gradient is that of the global batch's mean per-token loss; evaluation
sums are all-reduced. The tests check (a) both ranks bit-identical and (b) equal to
one process within 1e-9 in model and method state (the ranks add in another order
than one process), with the same per-token accuracy and bits per character, for one
method of each family: ``ste`` (estimator), ``fsg`` (learned gradient), ``blaq`` at
2 bits (loss-aware) and ``bop`` (binary optimizer). Both sides run one torch thread
(torchrun's workers by OMP_NUM_THREADS=1, pytest by tests/conftest.py): with a
multi-threaded reference, FSG's meta-net weights move the thread-order rounding of
the summed gradients up to ~1e-6 (measured) within two steps.
"""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from bnnopt.train import RunConfig, Trainer
from bnnopt.train.distributed import SINGLE


def _load_helpers():
    spec = importlib.util.spec_from_file_location("bnnopt_test_dist", Path(__file__).with_name("_dist.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_dist = _load_helpers()
identical, max_difference, torchrun = _dist.identical, _dist.max_difference, _dist.torchrun
WORKER = Path(__file__).with_name("dist_lm_worker.py")


def config(method: str, **changes) -> dict:
    cfg = RunConfig(model="gpt_tiny", dataset="shakespeare_embedded", method=method, epochs=1,
                    batch_size=8, model_options={"block_size": 16, "d_model": 32},
                    policy={"keep_first": False, "keep_last": True}, schedule="constant",
                    optim={"name": "adam", "lr": 1e-2}, augment=False, device="cpu",
                    train_limit=16, test_limit=4, precision="fp64")
    return cfg.update(changes).to_dict()


CASES = {
    "ste": {"config": config("ste")},
    "fsg": {"config": config("fsg")},
    "blaq2": {"config": config("blaq", method_options={"bits": 2})},
    "bop": {"config": config("bop", method_options={"tau": 1e-6})},
    "ste-uneven": {"config": config("ste", train_limit=21)},  # 8 + 8 + 5 (3 + 2) sequences
}


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_lm")
    (out / "cases.json").write_text(json.dumps(CASES))
    proc = torchrun([str(WORKER), str(out / "cases.json"), str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {name: [torch.load(out / f"{name}-rank{r}.pt", weights_only=False) for r in (0, 1)]
            for name in CASES}


def single(name: str, tmp_path):
    trainer = Trainer(RunConfig.from_dict(CASES[name]["config"]), tmp_path / name, dist=SINGLE)
    row = trainer.train_epoch(0)
    return {"model": trainer.model.state_dict(), "method": trainer.method.state_dict(),
            "row": row, "batches": len(trainer.train_loader)}


def _without_seconds(row):
    return {k: v for k, v in row.items() if k not in ("seconds", "cpu_seconds")}


@pytest.mark.parametrize("name", list(CASES))
def test_lm_ranks_hold_identical_state(ddp, name):
    r0, r1 = ddp[name]
    assert identical(r0["model"], r1["model"]), max_difference(r0["model"], r1["model"])
    assert identical(r0["method"], r1["method"]), max_difference(r0["method"], r1["method"])
    assert _without_seconds(r0["row"]) == _without_seconds(r1["row"])


@pytest.mark.parametrize("name", list(CASES))
def test_lm_two_ranks_equal_one_process(ddp, name, tmp_path):
    ref = single(name, tmp_path)
    got = ddp[name][0]
    assert got["batches"] == ref["batches"] == (3 if "uneven" in name else 2)
    for part in ("model", "method"):
        diff, where = max_difference(got[part], ref[part])
        assert diff <= 1e-9, f"{name} {part}: {diff:.3g} at {where}"
    # the training changed the weights (so equality is not that of two untouched models)
    init = Trainer(RunConfig.from_dict(CASES[name]["config"]), tmp_path / "init", dist=SINGLE)
    assert max_difference(got["model"], init.model.state_dict())[0] > 1e-6
    for key in ("test_acc", "val_acc", "train_acc"):
        assert got["row"][key] == pytest.approx(ref["row"][key], abs=1e-9), key
    for key in ("loss", "test_bpc", "val_bpc", "train_bpc"):
        assert got["row"][key] == pytest.approx(ref["row"][key], rel=1e-9), key
    assert got["row"]["test_bpc"] == pytest.approx(got["row"]["test_loss"] / math.log(2))
