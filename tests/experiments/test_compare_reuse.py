"""compare / demo reuse a run only when its resolved config equals the requested one."""
import json

from bnnopt.experiments.compare import build_arms, config_difference, run_compare
from bnnopt.train.config import RunConfig


def base(**changes) -> RunConfig:
    return RunConfig(model="mlp", dataset="digits", epochs=1, batch_size=128,
                     model_options={"hidden": 16}, optim={"name": "adam", "lr": 3e-3},
                     augment=False, device="cpu", train_limit=128, test_limit=32).update(changes)


def test_reuse_only_with_an_equal_config(tmp_path):
    logs = []
    run_compare(base(), build_arms(["ste"]), 1, tmp_path, log=logs.append)
    first = json.loads((tmp_path / "ste" / "s0" / "summary.json").read_text())
    assert first["epochs"] == 1

    logs.clear()  # same request: reused, not retrained
    run_compare(base(), build_arms(["ste"]), 1, tmp_path, log=logs.append)
    assert any("[compare] reuse" in m for m in logs)

    logs.clear()  # other epochs and lr: trained again, header and table agree
    report = run_compare(base(epochs=2, optim={"name": "adam", "lr": 1e-4}), build_arms(["ste"]),
                         1, tmp_path, log=logs.append)
    assert any("holds a run of another config" in m and "epochs 1 -> 2" in m for m in logs)
    assert report["runs"][0]["epochs"] == 2
    stored = json.loads((tmp_path / "ste" / "s0" / "config.json").read_text())
    assert stored["epochs"] == 2 and stored["optim"]["lr"] == 1e-4
    assert "2 epochs" in (tmp_path / "report.md").read_text()


def test_config_difference_names_keys():
    a, b = base().to_dict(), base(epochs=3, optim={"lr": 1e-4}).to_dict()
    assert config_difference(a, b) == ["epochs 1 -> 3", "optim.lr 0.003 -> 0.0001"]
    assert config_difference(a, base().to_dict()) == []


def test_compare_locks_its_output_and_removes_orphans(tmp_path):
    import os
    import socket

    import pytest

    from bnnopt.runs.lock import LOCK_NAME

    out = tmp_path / "cmp"
    out.mkdir()
    (out / ".report.md.abc12345.tmp").write_text("half")
    (out / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(ValueError, match="in use by process"):
        run_compare(base(), build_arms(["fp"]), 1, out, log=lambda m: None)
    (out / LOCK_NAME).unlink()
    run_compare(base(), build_arms(["fp"]), 1, out, log=lambda m: None)
    assert not (out / ".report.md.abc12345.tmp").exists() and not (out / LOCK_NAME).exists()


def test_a_run_made_under_another_default_is_trained_again(tmp_path, monkeypatch):
    """The resolved method options are stored; a changed default makes the run stale."""
    from bnnopt.registry import METHODS

    SteMethod = METHODS.get("ste")
    run_compare(base(), build_arms(["ste"]), 1, tmp_path, log=lambda m: None)
    argv = json.loads((tmp_path / "ste" / "s0" / "argv.json").read_text())
    assert argv["method_options"] == SteMethod().resolved_options()

    real = SteMethod.resolved_options
    monkeypatch.setattr(SteMethod, "resolved_options",  # as if the code's default had changed
                        lambda self: {**real(self), "estimator": "clipped"})
    logs = []
    run_compare(base(), build_arms(["ste"]), 1, tmp_path, log=logs.append)
    stale = [m for m in logs if "holds a run of another config" in m]
    assert stale and "method option estimator 'ste' -> 'clipped'" in stale[0]
    argv = json.loads((tmp_path / "ste" / "s0" / "argv.json").read_text())
    assert argv["method_options"]["estimator"] == "clipped"

    logs.clear()  # a run from before the options were stored: judged by its config alone
    del argv["method_options"]
    (tmp_path / "ste" / "s0" / "argv.json").write_text(json.dumps(argv))
    monkeypatch.setattr(SteMethod, "resolved_options", real)
    run_compare(base(), build_arms(["ste"]), 1, tmp_path, log=logs.append)
    assert any("[compare] reuse" in m for m in logs)


def test_a_run_that_predates_an_added_option_counts_as_its_old_value(tmp_path):
    """meta_data / meta_fraction were added after runs stored their options: a stored run
    without them is reused for meta_data 'train' (what it ran) and not for 'heldout'."""
    run_compare(base(), build_arms(["fcgrad"]), 1, tmp_path, log=lambda m: None)
    argv_path = tmp_path / "fcgrad" / "s0" / "argv.json"
    argv = json.loads(argv_path.read_text())
    for key in ("meta_data", "meta_fraction"):
        del argv["method_options"][key]
    argv_path.write_text(json.dumps(argv))
    logs = []
    run_compare(base(), build_arms(["fcgrad"]), 1, tmp_path, log=logs.append)
    assert any("[compare] reuse" in m for m in logs)
    from bnnopt.experiments.compare import option_difference

    cfg = base(method="fcgrad", method_options={"meta_data": "heldout"})
    assert option_difference(tmp_path / "fcgrad" / "s0", cfg) == [
        "method option meta_data 'train' -> 'heldout'"]
