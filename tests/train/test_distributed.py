"""Two gloo processes under torchrun vs one process on the concatenated global batch.

One torchrun launch trains every case (8 steps each, global batch 16 = 2 x 8) and
saves each rank's model, method state (optimizers, meta-nets, HGS, LAQ codes) and
metrics; the tests then check (a) both ranks bit-identical and (b) equal to one
process trained with the same global batch: within 1e-9 in float64 (the ranks sum in
another order than one process), for models without and with BatchNorm (--sync-bn);
in float32, within 1e-5 after one step. Over several float32 steps a binarized
network does not stay close: a latent weight that lands within rounding of 0 flips
its sign on one side only (measured: 0.2 apart after 8 Adam steps of ste with BN),
so float32 runs of many steps are compared bit for bit between ranks, not against
one process. A learned-gradient run with the synchronisation switched off must
diverge, so the check can fail. A final global batch smaller than two images per rank
(one image for rank 0 and none for rank 1, or two and one) is trained as in one
process, without BatchNorm and with synchronised BatchNorm.
"""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from bnnopt.train import RunConfig, Trainer
from bnnopt.nn.sync_batchnorm import convert_sync_batchnorm
from bnnopt.train.distributed import SINGLE, min_shard_images


def _load_helpers():
    spec = importlib.util.spec_from_file_location("bnnopt_test_dist", Path(__file__).with_name("_dist.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_dist = _load_helpers()
identical, max_difference, torchrun = _dist.identical, _dist.max_difference, _dist.torchrun
WORKER = Path(__file__).with_name("dist_worker.py")
METHODS = ["ste", "irnet", "laq", "blaq", "fcgrad", "multifc", "lstmfc", "fsg"]
LEARNED = ("fcgrad", "multifc", "lstmfc", "fsg")


def config(method: str, bn: bool = False, **changes) -> dict:
    cfg = RunConfig(model="mlp", dataset="digits", method=method, epochs=1, batch_size=16,
                    model_options={"hidden": 16, "hidden_layers": 2, "batch_norm": bn},
                    optim={"name": "adam", "lr": 1e-2}, augment=False, device="cpu",
                    train_limit=128, test_limit=64, precision="fp32" if bn else "fp64",
                    sync_bn=bn)
    return cfg.update(changes).to_dict()


CASES = {f"{m}-fp64": {"config": config(m)} for m in METHODS}
# With BatchNorm the gradient of a first-layer weight on a constant input pixel (the
# digits' blank corners) is a sum that is zero up to rounding; Adam's first steps turn
# that noise into +-lr, so the BatchNorm cases of the estimator and learned-gradient
# families use SGD-M (BLAQ is Adam-style by design and is compared in float64 only).
SGDM = {"name": "sgdm", "lr": 0.05}
CASES.update({f"{m}-bn64": {"config": config(m, bn=True, precision="fp64",
                                              **({} if m == "blaq" else {"optim": SGDM}))}
              for m in ("ste", "blaq", "fsg")})
CASES.update({f"{m}-bn32-1step": {"config": config(m, bn=True, train_limit=16, optim=SGDM)}
              for m in ("ste", "fsg")})
CASES["fsg-bn32"] = {"config": config("fsg", bn=True)}  # ranks identical over 8 float32 steps
CASES["fsg-nosync"] = {"config": config("fsg"), "sync_learned": False}
# the learned methods split their per-weight meta work across the ranks by default
# (the *-fp64 cases above); the unsplit path, and post-processing of the gathered
# (Δ, G) (per-layer STE norms, the optimizer look-ahead) with the split on
CASES["fsg-nosplit-fp64"] = {"config": config("fsg"), "meta_split": False}
CASES["lstmfc-nosplit-fp64"] = {"config": config("lstmfc"), "meta_split": False}
# fcgrad and multifc split only when asked (their meta work is cheaper than the gather)
CASES["fcgrad-split-fp64"] = {"config": config("fcgrad"), "meta_split": True}
CASES["multifc-split-fp64"] = {"config": config("multifc"), "meta_split": True}
# each rank's share in chunks of the meta work, recomputed in the backward
CASES["fsg-chunk-fp64"] = {"config": config("fsg", method_options={"meta_chunk": 37})}
CASES["fsg-stenorm-fp64"] = {"config": config("fsg", method_options={
    "grad_norm": "ste", "lookahead": "optimizer"})}
# each rank derives ∂L/∂W̃ from the averaged g through the weight quantizer: quantizers
# whose scale couples a layer's elements (BitNet's mean|W|, b1.58's ternary levels)
CASES["fsg-bitnet-fp64"] = {"config": config("fsg", method_options={"quantizer": "bitnet"})}
CASES["fcgrad-split-b158-fp64"] = {"config": config("fcgrad", method_options={
    "quantizer": "bitnet_b158", "bits": 2}), "meta_split": True}
CASES["fcgrad-official-fp64"] = {"config": config("fcgrad", method_options={"variant": "official"},
                                                  optim={"name": "sgdm", "lr": 0.05})}
CASES["fsg-heldout-fp64"] = {"config": config(  # the meta split is sharded like the train one
    "fsg", method_options={"meta_data": "heldout", "meta_fraction": 0.25})}
CASES["ste-sgdm-uneven"] = {"config": config("ste", optim={"name": "sgdm", "lr": 0.05},
                                             train_limit=120)}  # last global batch 8 = 2 x 4
# A last global batch smaller than two images per rank is trained on uneven shares:
# 115 = 7 x 16 + 3 (rank 0 gets 2 images, rank 1 one), 113 = 7 x 16 + 1 (rank 1 none).
for _m in ("ste", "fsg", "blaq"):
    CASES[f"{_m}-last3-fp64"] = {"config": config(_m, train_limit=115)}
CASES["ste-last1-fp64"] = {"config": config("ste", train_limit=113)}
CASES["fsg-last1-fp64"] = {"config": config("fsg", train_limit=113)}
CASES["fsg-last3-bn64"] = {"config": config("fsg", bn=True, precision="fp64", optim=SGDM,
                                            train_limit=115)}  # synced BN, 2 + 1 images
# BatchNorm over each rank's own shard: that final batch is dropped on both ranks (the
# ranks agree, one process differs anyway: it normalises over the whole batch)
LOCAL_BN = "ste-last3-localbn64"
CASES[LOCAL_BN] = {"config": config("ste", bn=True, precision="fp64", optim=SGDM, sync_bn=False,
                                    train_limit=115)}


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    (out / "cases.json").write_text(json.dumps(CASES))
    proc = torchrun([str(WORKER), str(out / "cases.json"), str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {name: [torch.load(out / f"{name}-rank{r}.pt", weights_only=False) for r in (0, 1)]
            for name in CASES}


def single(name: str, tmp_path):
    trainer = Trainer(RunConfig.from_dict(CASES[name]["config"]), tmp_path / name, dist=SINGLE)
    rows = [trainer.train_epoch(0)]
    return {"model": trainer.model.state_dict(), "method": trainer.method.state_dict(),
            "rows": rows}


def _without_seconds(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds")} for r in rows]


@pytest.mark.parametrize("name", [n for n in CASES if n != "fsg-nosync"])
def test_ranks_hold_identical_state(ddp, name):
    r0, r1 = ddp[name]
    assert identical(r0["model"], r1["model"]), max_difference(r0["model"], r1["model"])
    assert identical(r0["method"], r1["method"]), max_difference(r0["method"], r1["method"])
    assert _without_seconds(r0["rows"]) == _without_seconds(r1["rows"])  # sharded eval, all-reduced


@pytest.mark.parametrize("name", [n for n in CASES if n not in ("fsg-nosync", "fsg-bn32", LOCAL_BN)])
def test_two_ranks_equal_one_process_on_the_global_batch(ddp, name, tmp_path):
    ref = single(name, tmp_path)
    tol = 1e-5 if "bn32" in name else 1e-9
    got = ddp[name][0]
    for part in ("model", "method"):
        diff, where = max_difference(got[part], ref[part])
        assert diff <= tol, f"{name} {part}: {diff:.3g} at {where}"
    assert got["rows"][0]["test_acc"] == ref["rows"][0]["test_acc"]
    assert got["rows"][0]["loss"] == pytest.approx(ref["rows"][0]["loss"], rel=1e-5)


@pytest.mark.parametrize("name", [n for n in CASES if n.split("-")[0] in LEARNED])
def test_meta_work_is_split_where_it_can_be(ddp, name):
    """Split by default for lstmfc and fsg, when asked for fcgrad and multifc; not with
    meta_split off, without sync or with a held-out meta loss."""
    method = name.split("-")[0]
    expected = (not any(k in name for k in ("nosplit", "nosync", "heldout"))
                and (method in ("lstmfc", "fsg") or "-split" in name))
    assert [rank["split"] for rank in ddp[name]] == [expected, expected]


def test_learned_gradient_without_sync_diverges(ddp):
    r0, r1 = ddp["fsg-nosync"]
    diff, where = max_difference(r0["model"], r1["model"])
    assert diff > 1e-4, "ranks stayed equal without the learned-gradient all-reduce"


def test_only_an_unsynchronised_batchnorm_asks_for_two_images_per_rank():
    def mlp(bn):
        layers = [torch.nn.Linear(4, 4)] + ([torch.nn.BatchNorm1d(4)] if bn else [])
        return torch.nn.Sequential(*layers, torch.nn.Linear(4, 2))

    assert min_shard_images(mlp(bn=False), 2) == 0
    assert min_shard_images(mlp(bn=True), 1) == 0
    assert min_shard_images(mlp(bn=True), 2) == 2
    synced = mlp(bn=True)
    assert convert_sync_batchnorm(synced, torch.device("cpu")) == 1
    assert min_shard_images(synced, 2) == 0


@pytest.mark.parametrize("name, batches, dropped", [("fsg-last3-fp64", 8, 0), ("ste-last1-fp64", 8, 0),
                                                    ("fsg-last3-bn64", 8, 0), (LOCAL_BN, 7, 3)])
def test_final_batch_is_trained_unless_batchnorm_is_per_rank(ddp, name, batches, dropped):
    for rank in ddp[name]:
        assert (rank["batches"], rank["dropped"]) == (batches, dropped)
