"""bnnopt report over run directories: one row per setting, never across settings."""
import json

from bnnopt.report.runs import report_runs, run_label


def _fake_run(path, seed, lr=1e-3, epochs=8, acc=80.0):
    path.mkdir(parents=True)
    config = {"method": "ste", "method_options": {}, "model": "resnet20", "dataset": "cifar10",
              "seed": seed, "epochs": epochs, "optim": {"name": "sgd", "lr": lr, "momentum": 0.9}}
    summary = {"final_test_acc": acc + seed, "best_test_acc": acc + seed,
               "final_train_loss": 0.5, "seconds_per_epoch": 1.0}
    (path / "config.json").write_text(json.dumps(config))
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "checkpoint.pt").write_bytes(b"stands for a checkpoint")  # not marked as missing
    return path


def test_rows_split_by_learning_rate_and_by_any_other_differing_setting(tmp_path):
    runs = [_fake_run(tmp_path / f"a{s}", s, lr=0.05) for s in (0, 1)]
    runs += [_fake_run(tmp_path / f"b{s}", s, lr=0.1) for s in (0, 1)]
    text = report_runs(runs)
    assert "| ste[sgd:lr=0.05] | 2 | 80.50 ± 0.71 |" in text
    assert "| ste[sgd:lr=0.1] | 2 | 80.50 ± 0.71 |" in text
    runs.append(_fake_run(tmp_path / "c0", 0, lr=0.1, epochs=2, acc=50.0))
    text = report_runs(runs)
    assert "| ste[sgd:lr=0.1] epochs=8 | 2 |" in text
    assert "| ste[sgd:lr=0.1] epochs=2 | 1 | 50.00" in text


def test_label_spells_method_options_and_other_optimizer_settings():
    config = {"method": "fsg", "method_options": {"beta": 0.5, "layout": "flat"},
              "optim": {"name": "sgdm", "lr": 0.05, "momentum": 0.8}}
    assert run_label(config) == "fsg:beta=0.5:layout=flat[sgdm:lr=0.05]"
    assert run_label(config, ("optim",)) == "fsg:beta=0.5:layout=flat[sgdm:lr=0.05] optim=momentum=0.8"


def test_reference_comparison_per_optimizer_across_tuned_learning_rates(tmp_path):
    """fsg at lr 0.05 is compared with ste at lr 0.1 (tuning may choose different lrs), same optimizer."""
    runs = [_fake_run(tmp_path / f"ste{s}", s, lr=0.1, acc=80.0) for s in (0, 1, 2)]
    for s in (0, 1, 2):
        run = _fake_run(tmp_path / f"fsg{s}", s, lr=0.05, acc=90.0)
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps(dict(config, method="fsg")))
    text = report_runs(runs + [tmp_path / f"fsg{s}" for s in (0, 1, 2)])
    # a = 90,91,92 vs b = 80,81,82: d = 10, se = sqrt(2/3), df 4 -> 10 +- 2.27
    assert "| fsg[sgd:lr=0.05] | ste[sgd:lr=0.1] | +10.00 [+7.73, +12.27] better |" in text
    assert "+0.0000 [+0.0000, +0.0000] no difference detected" in text  # equal losses
    assert "Welch" not in report_runs(runs, reference=None)


def test_reference_by_method_spec_among_arms_of_one_method(tmp_path):
    """--reference fsg:fast_form=product: the arm with exactly that spec is the reference."""
    dirs = []
    for name, options, acc in (("plain", {}, 80.0), ("product", {"fast_form": "product"}, 85.0)):
        for s in (0, 1, 2):
            run = _fake_run(tmp_path / f"{name}{s}", s, acc=acc)
            config = json.loads((run / "config.json").read_text())
            (run / "config.json").write_text(json.dumps(dict(config, method="fsg",
                                                             method_options=options)))
            dirs.append(run)
    text = report_runs(dirs, reference="fsg:fast_form=product")
    assert "| fsg[sgd:lr=0.001] | fsg:fast_form=product[sgd:lr=0.001] | -5.00" in text
    text = report_runs(dirs, reference="fsg")  # the bare name: the arm without options
    assert "| fsg:fast_form=product[sgd:lr=0.001] | fsg[sgd:lr=0.001] | +5.00" in text
