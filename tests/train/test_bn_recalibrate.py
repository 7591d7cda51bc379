"""bn_recalibrate: the config key round-trips, bad values are refused, the CLI flag
sets it, and the Trainer re-estimates BatchNorm statistics before evaluating."""
import pytest
import torch

from bnnopt.cli.main import build_parser, resolve_config
from bnnopt.nn.batchnorm import recalibrate_bn_
from bnnopt.train import RunConfig, Trainer


def tiny_config(**changes) -> RunConfig:
    cfg = RunConfig(model="mlp", dataset="digits", method="ste", epochs=1, batch_size=64,
                    model_options={"hidden": 32}, optim={"name": "adam", "lr": 1e-2},
                    augment=False, device="cpu", train_limit=256, test_limit=128)
    return cfg.update(changes)


def test_config_round_trips_and_defaults_to_off():
    assert RunConfig().bn_recalibrate is None
    cfg = tiny_config(bn_recalibrate=4).validate()
    again = RunConfig.from_dict(cfg.to_dict()).validate()
    assert again.bn_recalibrate == 4 and again.to_dict() == cfg.to_dict()
    assert RunConfig().set("bn_recalibrate=8").bn_recalibrate == 8
    assert RunConfig().set("bn_recalibrate=none").bn_recalibrate is None
    # a config written before the key existed reads as "off"
    old = {k: v for k, v in cfg.to_dict().items() if k != "bn_recalibrate"}
    assert RunConfig.from_dict(old).validate().bn_recalibrate is None


@pytest.mark.parametrize("bad", [-1, 2.5, True, "four"])
def test_bad_values_are_refused(bad):
    with pytest.raises(ValueError, match="bn_recalibrate"):
        tiny_config(bn_recalibrate=bad).validate()


def test_cli_flag_sets_the_key():
    args = build_parser().parse_args(["train", "--protocol", "digits", "--bn-recalibrate", "3"])
    assert resolve_config(args).bn_recalibrate == 3
    args = build_parser().parse_args(["train", "--protocol", "digits"])
    assert resolve_config(args).bn_recalibrate is None


def test_trainer_evaluates_with_statistics_of_the_final_weights(tmp_path):
    trainer = Trainer(tiny_config(bn_recalibrate=2), tmp_path / "run")
    trainer.run()
    stored = {k: v.clone() for k, v in trainer.model.state_dict().items() if "running" in k}
    assert stored
    # the same pass by hand, over the epoch's first 2 training batches, gives the same stats
    recalibrate_bn_(trainer.model, trainer.train_loader.epoch(0), 2)
    for key, value in trainer.model.state_dict().items():
        if "running" in key:
            torch.testing.assert_close(value, stored[key], rtol=0, atol=0)


def test_trainer_without_the_option_keeps_momentum_statistics(tmp_path):
    trainer = Trainer(tiny_config(), tmp_path / "run")
    trainer.run()
    stored = {k: v.clone() for k, v in trainer.model.state_dict().items() if "running_mean" in k}
    recalibrate_bn_(trainer.model, trainer.train_loader.epoch(0), 2)
    changed = [k for k, v in trainer.model.state_dict().items()
               if "running_mean" in k and not torch.equal(v, stored[k])]
    assert changed  # so the test above is not passing trivially


def test_trainer_warns_when_the_test_number_cannot_be_meaningful(tmp_path):
    # stale statistics on purpose: every BatchNorm starts from a far-off running mean
    logged = []
    trainer = Trainer(tiny_config(train_limit=128), tmp_path / "run", log=logged.append)
    for module in trainer.model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.fill_(50.0)
    trainer.run()
    row = trainer.metrics[-1]
    assert row["test_acc"] < 0.5 * row["train_acc"]
    assert any("--bn-recalibrate" in line for line in logged)
    logged.clear()
    fixed = Trainer(tiny_config(train_limit=128, bn_recalibrate=2), tmp_path / "fixed",
                    log=logged.append)
    for module in fixed.model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.fill_(50.0)
    fixed.run()
    assert not any("--bn-recalibrate" in line for line in logged)
    assert fixed.metrics[-1]["test_acc"] > row["test_acc"]
