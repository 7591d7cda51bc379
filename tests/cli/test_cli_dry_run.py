"""bnnopt train --dry-run: the fully resolved config, nothing run, nothing written."""
import json

from bnnopt.cli.main import main


def test_dry_run_prints_resolved_method_options_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    code = main(["train", "--method", "fsg", "--set", "method_options.variant=official",
                 "--set", "method_options.history=3", "--optimizer", "adam", "--lr", "0.01",
                 "--out", str(out), "--dry-run"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    opts = printed["config"]["method_options"]
    # the official variant's own preset and details, the explicit option kept
    assert (opts["preset"], opts["layout"], opts["expand"], opts["d_state"], opts["d_conv"]) == \
        ("official", "flat", 100, 16, 8)
    assert (opts["history"], opts["beta"], opts["fast_lr"]) == (3, 0.9, 1e-2)
    assert (opts["first_step"], opts["adam_eps"], opts["bias_lookahead"]) == ("skip", "official", True)
    assert printed["config"]["optim"]["betas"] == [0.9, 0.999]
    assert printed["config"]["policy"]["keep_first"] is True
    assert list(tmp_path.iterdir()) == []  # no run directory, no runs/


def test_dry_run_of_paper_default_and_an_estimator_method(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--method", "fsg", "--dry-run"]) == 0
    opts = json.loads(capsys.readouterr().out)["config"]["method_options"]
    assert (opts["preset"], opts["layout"], opts["expand"], opts["first_step"]) == \
        ("cpu", "per-weight", 1, "ste")
    assert main(["train", "--method", "irnet", "--dry-run"]) == 0
    opts = json.loads(capsys.readouterr().out)["config"]["method_options"]
    assert opts["estimator"] == "ede"
    assert main(["train", "--method", "fsg", "--set", "method_options.preset=bad", "--dry-run"]) == 2
    assert list(tmp_path.iterdir()) == []


def test_dry_run_prints_the_policy_that_runs_for_the_loss_aware_family(tmp_path, monkeypatch, capsys):
    """lab/laq/blaq quantize every layer unless the policy says otherwise; --dry-run says so."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--method", "blaq", "--dry-run"]) == 0
    policy = json.loads(capsys.readouterr().out)["config"]["policy"]
    assert (policy["keep_first"], policy["keep_last"]) == (False, False)
    assert main(["train", "--method", "laq", "--set", "policy.keep_last=true", "--dry-run"]) == 0
    policy = json.loads(capsys.readouterr().out)["config"]["policy"]
    assert (policy["keep_first"], policy["keep_last"]) == (False, True)
    assert main(["train", "--method", "ste", "--dry-run"]) == 0
    policy = json.loads(capsys.readouterr().out)["config"]["policy"]
    assert (policy["keep_first"], policy["keep_last"]) == (True, True)
