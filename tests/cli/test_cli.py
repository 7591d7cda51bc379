"""The command line: each command end to end on tiny data, and bad input."""
import json

import pytest

from bnnopt.cli.main import main

TINY = ["--model", "mlp", "--dataset", "digits", "--set", "model_options.hidden=32",
        "--epochs", "1", "--train-limit", "256", "--test-limit", "128", "--device", "cpu", "--set", "augment=false"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_every_kind(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for name in ("ste", "irnet", "reste", "dorefa", "resnet20", "cifar10", "cifar10-subset", "sgdm"):
        assert f"  {name} " in out


def test_train_eval_report(tmp_path, capsys):
    code, out, err = run(capsys, "train", *TINY, "--method", "ste", "--out", str(tmp_path / "r"))
    assert code == 0, err
    code, out, err = run(capsys, "eval", str(tmp_path / "r"), "--json")
    assert code == 0, err
    result = json.loads(out)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert result["test_acc"] == pytest.approx(summary["final_test_acc"])
    assert result["images"] == 128
    code, out, _ = run(capsys, "report", str(tmp_path / "r"))
    assert code == 0 and "| ste[adam:lr=0.001] | 1 |" in out


def test_compare_writes_table_and_plot(tmp_path, capsys):
    code, out, err = run(capsys, "compare", *TINY, "--methods", "fp,ste", "--seeds", "2",
                         "--out", str(tmp_path / "cmp"))
    assert code == 0, err
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "| fp | 2 |" in report and "| ste | 2 |" in report
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 1000
    assert len(json.loads((tmp_path / "cmp" / "report.json").read_text())["runs"]) == 4


@pytest.mark.parametrize("argv, fragment", [
    (["train", *TINY, "--method", "stee"], "unknown method 'stee'; valid methods:"),
    (["train", *TINY, "--model", "resnet21"], "unknown model 'resnet21'; valid models:"),
    (["train", "--protocol", "cifar-subset"], "unknown protocol 'cifar-subset'; valid protocols:"),
    (["train", *TINY, "--set", "epochs=two"], "invalid value 'two' for 'epochs'"),
    (["train", *TINY, "--set", "lr=0.1"], "unknown config key 'lr'"),
    (["train", *TINY, "--set", "nokey"], "malformed override 'nokey'"),
    (["train", *TINY, "--optimizer", "rmsprop"], "invalid optimizer 'rmsprop'"),
    (["train", *TINY, "--dataset", "mnist", "--data-root", "/nonexistent/dir"], "mnist"),
    (["list", "things"], "unknown kind 'things'"),
    (["eval", "/nonexistent/ckpt.pt"], "no such file"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, fragment):
    out_dir = tmp_path / "run"
    if argv[0] == "train":
        argv = argv + ["--out", str(out_dir)]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("bnnopt: error: ") and err.count("\n") == 1
    assert fragment in err
    assert not out_dir.exists()


def test_malformed_config_file(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('epochs = "ten"\n')
    code, _, err = run(capsys, "train", *TINY, "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert code == 2 and "invalid value 'ten' for 'epochs'" in err
    cfg.write_text('methd = "ste"\n')
    code, _, err = run(capsys, "train", "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert code == 2 and "unknown config key 'methd'" in err
    assert not (tmp_path / "r").exists()


def test_train_refuses_to_overwrite_a_run(tmp_path, capsys):
    assert run(capsys, "train", *TINY, "--method", "fp", "--out", str(tmp_path / "r"))[0] == 0
    code, _, err = run(capsys, "train", *TINY, "--method", "fp", "--out", str(tmp_path / "r"))
    assert code == 2 and "use --resume" in err


def test_summary_reports_32x_for_binarized_resnet20(capsys):
    code, out, err = run(capsys, "summary", "--model", "resnet20", "--json")
    assert code == 0, err
    info = json.loads(out)
    text = json.dumps(info)
    assert "compression" in text
    code, out, _ = run(capsys, "summary", "--model", "resnet20")
    line = out.split("quantized layers:")[1].splitlines()[0]
    ratio = float(line.split("compression")[1].strip().rstrip("x"))
    assert "MACs per 3x32x32 sample: 40,813,184" in out
    assert ratio >= 31.0


def test_demo_runs_offline(tmp_path, capsys):
    code, out, err = run(capsys, "demo", "--out", str(tmp_path / "demo"), "--epochs", "1")
    assert code == 0, err
    assert "| fp | 1 |" in out and "| ste | 1 |" in out
    assert (tmp_path / "demo" / "curves.png").exists()
    assert "![" not in out  # no raw markdown image line on the terminal
    assert "accuracy ceiling" in out and "straight-through" in out and "IR-Net" in out


def test_corrupt_data_file_is_one_line_error(tmp_path, capsys):
    root = tmp_path / "data" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch"]:
        (root / name).write_bytes(b"\x80\x02}q\x00(truncated")
    code, out, err = run(capsys, "train", "--dataset", "cifar10", "--data-root",
                         str(tmp_path / "data"), "--out", str(tmp_path / "r"))
    assert code == 2 and err.startswith("bnnopt: error: ") and err.count("\n") == 1
    assert "data_batch_1" in err
    assert not (tmp_path / "r").exists()


def test_sigkill_between_epochs_then_resume_is_bit_exact(tmp_path):
    """A real process is killed (SIGKILL) once its first checkpoint exists; the resumed
    run ends with exactly the weights of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    args = ["--model", "mlp", "--dataset", "digits", "--set", "model_options.hidden=256",
            "--epochs", "6", "--device", "cpu", "--set", "augment=false", "--threads", "1",
            "--optimizer", "sgdm", "--lr", "0.05", "--seed", "3"]
    env = dict(os.environ, PYTHONPATH=str(__import__("pathlib").Path(__file__).parents[2] / "src"))
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "bnnopt", "train", *args, "--out", str(killed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "run finished before it could be killed"
    assert main(["train", "--resume", str(killed), "--threads", "1"]) == 0
    assert main(["train", *args, "--out", str(tmp_path / "full")]) == 0
    a = torch.load(killed / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 5
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_compare_tune_end_to_end(tmp_path, capsys):
    code, out, err = run(capsys, "compare", *TINY, "--methods", "ste", "--tune", "lr=0.001,0.01",
                         "--seeds", "1", "--out", str(tmp_path / "cmp"))
    assert code == 0, err
    report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert report["base_config"]["val_fraction"] == 0.1  # compare's default validation split
    assert report["tuning"][0]["points"] == ["lr=0.001", "lr=0.01"]
    chosen = report["tuning"][0]["chosen"]
    final = json.loads((tmp_path / "cmp" / "ste" / "s1" / "config.json").read_text())
    assert f"lr={final['optim']['lr']:g}" == chosen
    code, out, err = run(capsys, "compare", *TINY, "--methods", "ste", "--tune", "lr=0.01",
                         "--val-fraction", "0", "--out", str(tmp_path / "cmp2"))
    assert code == 2 and "val_fraction is 0" in err


@pytest.mark.parametrize("extra, message", [
    (["--tune", "lr=0.01", "--tune-metric", "bpc"], "invalid --tune-metric 'bpc'; valid: acc, loss"),
    (["--tune-metric", "loss"], "--tune-metric loss without --tune: nothing is tuned"),
])
def test_compare_tune_metric_refusals(tmp_path, capsys, extra, message):
    out_dir = tmp_path / "cmp"
    code, out, err = run(capsys, "compare", *TINY, "--methods", "ste", *extra,
                         "--out", str(out_dir))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out_dir.exists()


def test_help_says_how_many_methods_the_demo_runs():
    from bnnopt.cli.main import build_parser
    from bnnopt.experiments.demo import DEMO_METHODS

    text = " ".join(build_parser().format_help().split())
    assert "three methods (fp, ste, irnet; fp = float ceiling)" in text
    assert DEMO_METHODS == ("fp", "ste", "irnet")
