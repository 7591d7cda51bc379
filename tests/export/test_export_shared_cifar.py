"""Must-show: train -> export -> load_packed -> bnnopt eval on the shared CIFAR-10 subset
gives the accuracy of the run's own checkpoint (ResNet-20, 1 bit, from the FP checkpoint)."""
from __future__ import annotations

import json

from bnnopt.cli.main import main
from bnnopt.train import RunConfig, Trainer


def test_cifar_subset_round_trip_accuracy(shared_dir, tmp_path, capsys):
    cfg = RunConfig(model="resnet20", dataset="cifar10", data_root=str(shared_dir / "data"),
                    init=str(shared_dir / "pretrained" / "resnet20-cifar10-fp.pth"),
                    method="ste", policy={"keep_first": True, "keep_last": True},
                    optim={"name": "adam", "lr": 1e-3}, epochs=1, batch_size=64,
                    schedule="constant", device="cpu", train_limit=64, test_limit=200)
    run = tmp_path / "run"
    Trainer(cfg, run, log=lambda *a, **k: None).run()
    packed = tmp_path / "resnet20.bnnpk"
    assert main(["export", str(run), "--out", str(packed), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["verified_max_abs_diff"] == 0.0
    assert info["compression"] >= 10

    results = []
    for target in (run, packed):
        assert main(["eval", str(target), "--json", "--limit", "200", "--device", "cpu"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    ckpt, pk = results
    assert (ckpt["kind"], pk["kind"]) == ("checkpoint", "packed")
    assert ckpt["images"] == pk["images"] == 200
    assert pk["test_acc"] == ckpt["test_acc"] and pk["test_loss"] == ckpt["test_loss"]
