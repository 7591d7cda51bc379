"""compare --tune: same grid for every method, chosen on validation only, fresh seeds after."""
import json
from pathlib import Path

import pytest

from bnnopt.experiments.compare import (build_arms, choose_setting, grid_points, parse_tune,
                                  run_compare)
from bnnopt.train.config import RunConfig


def base_config(**changes):
    cfg = RunConfig(model="mlp", dataset="digits", optim={"name": "sgd", "lr": 0.1}, epochs=1,
                    val_fraction=0.1, seed=0)
    return cfg.update(changes)


class FakeTrain:
    """Stands for training: val and test accuracy as chosen functions of (method, lr, seed).

    For every method the best *test* setting is lr=0.1 while the best *validation*
    setting is lr=0.01, so a tuner that peeked at the test split would pick 0.1.
    """

    VAL = {0.01: 90.0, 0.1: 80.0, 1.0: 70.0}
    TEST = {0.01: 85.0, 0.1: 95.0, 1.0: 60.0}

    def __init__(self):
        self.calls = []

    def __call__(self, cfg, run_dir):
        lr = cfg.optim["lr"]
        self.calls.append((cfg.method, lr, cfg.seed, str(run_dir)))
        bonus = 1.0 if cfg.method == "fsg" else 0.0
        summary = {"final_val_acc": self.VAL[lr] + bonus, "final_val_loss": 0.5,
                   "final_test_acc": self.TEST[lr] + bonus + cfg.seed,
                   "best_test_acc": self.TEST[lr], "final_train_loss": 0.1 * cfg.seed,
                   "seconds_per_epoch": 1.0}
        return summary, [{"epoch": 1, "loss": 0.1, "test_acc": summary["final_test_acc"]}]


def test_tuning_picks_by_validation_not_test(tmp_path):
    train = FakeTrain()
    arms = build_arms(["ste", "fsg"], ["sgd"])
    report = run_compare(base_config(), arms, seeds=3, out=tmp_path, log=lambda m: None,
                         tune=parse_tune(["lr=0.01,0.1,1.0"]), train=train)
    assert [t["chosen"] for t in report["tuning"]] == ["lr=0.01", "lr=0.01"]
    # the same grid and budget for every method: 3 tuning runs at seed 0 each
    for method in ("ste", "fsg"):
        tuning = [(lr, s) for m, lr, s, _ in train.calls if m == method and "tune" in _]
        assert tuning == [(0.01, 0), (0.1, 0), (1.0, 0)]
        finals = [(lr, s) for m, lr, s, d in train.calls if m == method and "tune" not in d]
        assert finals == [(0.01, 1), (0.01, 2), (0.01, 3)]  # fresh seeds, chosen lr
    assert report["seeds"] == [1, 2, 3]
    text = (tmp_path / "report.md").read_text()
    assert "grid optim.lr in {0.01, 0.1, 1.0}" in text
    assert "| ste[sgd] | 90.00 % (0.5000) | 80.00 % (0.5000) | 70.00 % (0.5000) | lr=0.01 |" in text
    # test acc fsg 87,88,89 vs ste 86,87,88 (unpaired Welch): d = 1, se = sqrt(2/3), df 4
    # -> 1 +- 2.776 * 0.816 = [-1.27, +3.27]: covers zero
    assert "| fsg[sgd] | ste[sgd] | +1.00 [-1.27, +3.27] no difference detected |" in text
    assert json.loads((tmp_path / "report.json").read_text())["significance"][0]["label"] == "fsg[sgd]"


def test_choose_setting_ties_and_missing_validation():
    rows = [{"final_val_acc": 90, "final_val_loss": 0.3, "final_test_acc": 50},
            {"final_val_acc": 90, "final_val_loss": 0.2, "final_test_acc": 10},
            {"final_val_acc": 80, "final_val_loss": 0.1, "final_test_acc": 99}]
    assert choose_setting(rows) == 1
    with pytest.raises(ValueError, match="validation split"):
        choose_setting([{"final_test_acc": 99}])


def test_grid_parsing():
    grid = parse_tune(["lr=0.01,0.1", "optim.momentum=0.8,0.9"])
    assert grid == [("optim.lr", ["0.01", "0.1"]), ("optim.momentum", ["0.8", "0.9"])]
    assert len(grid_points(grid)) == 4 and grid_points([]) == [[]]
    for bad, msg in ((["lr"], "malformed --tune"), (["lr="], "malformed --tune"),
                     (["lr=1", "optim.lr=2"], "twice")):
        with pytest.raises(ValueError, match=msg):
            parse_tune(bad)


def test_tuning_without_validation_is_refused(tmp_path):
    with pytest.raises(ValueError, match="val_fraction is 0"):
        run_compare(base_config(val_fraction=0.0), build_arms(["ste"]), 1, tmp_path,
                    tune=parse_tune(["lr=0.1"]), train=FakeTrain())
    with pytest.raises(ValueError, match="unknown config key 'nokey'"):
        run_compare(base_config(), build_arms(["ste"]), 1, tmp_path,
                    tune=parse_tune(["nokey=1"]), train=FakeTrain())
    assert not any(tmp_path.iterdir())


class SeedNoisyTrain(FakeTrain):
    """Validation accuracy with seed noise: at seed 0 alone lr=0.1 looks best (a lucky
    split), while over seeds 0-2 lr=0.01 is better on average."""

    VAL_BY_SEED = {0.01: [80.0, 90.0, 91.0], 0.1: [85.0, 82.0, 83.0], 1.0: [70.0, 70.0, 70.0]}

    def __call__(self, cfg, run_dir):
        summary, metrics = super().__call__(cfg, run_dir)
        lr = cfg.optim["lr"]
        if "tune" in run_dir.parts:
            summary["final_val_acc"] = self.VAL_BY_SEED[lr][cfg.seed]
            summary["final_val_loss"] = 0.1 * (cfg.seed + 1)
        return summary, metrics


def test_tune_seeds_choose_on_the_mean_over_seeds(tmp_path):
    grid = parse_tune(["lr=0.01,0.1,1.0"])
    one = run_compare(base_config(), build_arms(["ste"]), seeds=2, out=tmp_path / "one",
                      log=lambda m: None, tune=grid, train=SeedNoisyTrain())
    assert one["tuning"][0]["chosen"] == "lr=0.1"  # seed 0 alone: the lucky split wins
    train = SeedNoisyTrain()
    three = run_compare(base_config(), build_arms(["ste"]), seeds=2, out=tmp_path / "three",
                        log=lambda m: None, tune=grid, train=train, tune_seeds=3)
    tuning = three["tuning"][0]
    assert tuning["chosen"] == "lr=0.01"  # means 87.0, 83.33, 70.0
    assert tuning["seeds"] == [0, 1, 2] and three["tune_seeds"] == [0, 1, 2]
    assert tuning["val_acc"] == pytest.approx([87.0, 250 / 3, 70.0])
    assert tuning["val_acc_per_seed"][0] == [80.0, 90.0, 91.0]
    assert tuning["val_loss"] == pytest.approx([0.2, 0.2, 0.2])
    calls = [(lr, s, Path(d)) for _, lr, s, d in train.calls]
    tuned = sorted((lr, s) for lr, s, d in calls if "tune" in d.parts)
    assert tuned == [(lr, s) for lr in (0.01, 0.1, 1.0) for s in (0, 1, 2)]
    # every tuning seed has its own run directory, and the reported seeds come after them
    assert {d.name for _, _, d in calls if "tune" in d.parts} == {"s0", "s1", "s2"}
    assert [(lr, s) for lr, s, d in calls if "tune" not in d.parts] == [(0.01, 3), (0.01, 4)]
    assert three["seeds"] == [3, 4]
    text = (tmp_path / "three" / "report.md").read_text()
    assert "trained with seeds 0, 1, 2 (each its own validation split)" in text
    assert "chosen by mean final validation accuracy" in text
    assert "| ste | 87.00 % (0.2000) | 83.33 % (0.2000) | 70.00 % (0.2000) | lr=0.01 |" in text


def test_tune_seeds_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="invalid --tune-seeds 0"):
        run_compare(base_config(), build_arms(["ste"]), 1, tmp_path,
                    tune=parse_tune(["lr=0.1"]), train=FakeTrain(), tune_seeds=0)


def test_text_corpora_tune_on_their_own_validation_split(tmp_path, capsys):
    """A text corpus has a fixed validation split: compare's default val_fraction stays 0
    for it (any other is refused by the loaders) and --tune chooses on that split."""
    from bnnopt import DATASETS
    from bnnopt.cli.main import main
    from bnnopt.data.text import TEXT_DATASETS, has_fixed_validation

    registered_here = {e.name for e in DATASETS.entries() if e.obj.__module__ == "bnnopt.data.text"}
    assert TEXT_DATASETS == registered_here
    assert has_fixed_validation("shakespeare_embedded") and not has_fixed_validation("digits")
    out = tmp_path / "lm"
    assert main(["compare", "--protocol", "lm-tiny", "--set", "dataset=shakespeare_embedded",
                 "--set", "model_options.block_size=16", "--methods", "ste", "--tune",
                 "lr=0.0001,0.01", "--seeds", "1", "--epochs", "1", "--train-limit", "32",
                 "--test-limit", "32", "--batch-size", "16", "--threads", "1",
                 "--reference", "none", "--out", str(out)]) == 0
    (tuning,) = json.loads((out / "report.json").read_text())["tuning"]
    assert tuning["points"] == ["lr=0.0001", "lr=0.01"]
    best = max(range(2), key=lambda i: (tuning["val_acc"][i], -tuning["val_loss"][i]))
    assert tuning["chosen"] == tuning["points"][best]
    assert "the dataset's own validation split" in (out / "report.md").read_text()
    for config in out.rglob("config.json"):
        assert json.loads(config.read_text())["val_fraction"] == 0


class LossTrain(FakeTrain):
    """Validation accuracy favours lr=0.01 while validation loss favours lr=0.1 (as for a
    language model whose next-token accuracy and bits per character disagree)."""

    VAL_LOSS = {0.01: 2.5, 0.1: 2.4, 1.0: 2.9}

    def __call__(self, cfg, run_dir):
        summary, metrics = super().__call__(cfg, run_dir)
        summary["final_val_loss"] = self.VAL_LOSS[cfg.optim["lr"]]
        return summary, metrics


def test_tune_metric_loss_chooses_the_lowest_validation_loss(tmp_path):
    grid = parse_tune(["lr=0.01,0.1,1.0"])
    by_acc = run_compare(base_config(), build_arms(["ste"]), seeds=1, out=tmp_path / "acc",
                         log=lambda m: None, tune=grid, train=LossTrain())
    assert by_acc["tuning"][0]["chosen"] == "lr=0.01" and by_acc["tune_metric"] == "acc"
    by_loss = run_compare(base_config(), build_arms(["ste"]), seeds=1, out=tmp_path / "loss",
                          log=lambda m: None, tune=grid, train=LossTrain(), tune_metric="loss")
    assert by_loss["tuning"][0]["chosen"] == "lr=0.1" and by_loss["tune_metric"] == "loss"
    text = (tmp_path / "loss" / "report.md").read_text()
    assert "chosen by final validation loss (ties: validation accuracy)" in text
    rows = [{"final_val_acc": 80, "final_val_loss": 0.2}, {"final_val_acc": 90, "final_val_loss": 0.2},
            {"final_val_acc": 99, "final_val_loss": 0.3}]
    assert choose_setting(rows, "loss") == 1  # tie on loss: the higher accuracy
    with pytest.raises(ValueError, match="invalid tune metric 'bpc'; valid: acc, loss"):
        run_compare(base_config(), build_arms(["ste"]), 1, tmp_path / "bad",
                    tune=grid, train=LossTrain(), tune_metric="bpc")
