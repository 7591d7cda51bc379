"""``bnnopt report RUNS --flip-plot FILE``: the per-layer flip rates of the runs that recorded them."""
import json

import pytest

from bnnopt.cli.main import main
from bnnopt.report.runs import flip_plots

PNG = b"\x89PNG\r\n\x1a\n"


def _run(path, method="ste", flips=True, epochs=3):
    path.mkdir(parents=True)
    config = {"method": method, "method_options": {}, "model": "mlp", "dataset": "digits",
              "seed": 0, "epochs": epochs, "optim": {"name": "adam", "lr": 1e-3}}
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "lr": 1e-3, "loss": 1.0 / e, "train_acc": 50.0, "test_loss": 1.0,
               "test_acc": 50.0 + e, "seconds": 1.0}
        if flips:
            row["flip_rate"] = {"fc1": 0.1 / e, "fc2": 0.05 / e}
        rows.append(row)
    summary = {"final_test_acc": rows[-1]["test_acc"], "best_test_acc": rows[-1]["test_acc"],
               "final_train_loss": rows[-1]["loss"], "seconds_per_epoch": 1.0}
    (path / "config.json").write_text(json.dumps(config))
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "checkpoint.pt").write_bytes(b"stands for a checkpoint")
    return path


def test_one_run_with_flip_rates_is_drawn_to_the_file_others_are_skipped(tmp_path):
    quantized, float_run = _run(tmp_path / "ste"), _run(tmp_path / "fp", method="fp", flips=False)
    warnings = []
    written = flip_plots([quantized, float_run], tmp_path / "flips.png", warn=warnings.append)
    assert written == [tmp_path / "flips.png"]
    assert (tmp_path / "flips.png").read_bytes().startswith(PNG)
    assert len(warnings) == 1 and str(float_run) in warnings[0] and "flip_rate" in warnings[0]


def test_several_runs_get_one_file_each_and_none_is_an_error(tmp_path):
    runs = [_run(tmp_path / name) for name in ("a", "b")]
    written = flip_plots(runs, tmp_path / "out" / "flips.png")
    assert written == [tmp_path / "out" / "flips-a.png", tmp_path / "out" / "flips-b.png"]
    assert all(p.read_bytes().startswith(PNG) for p in written)
    with pytest.raises(ValueError, match="none of the 1 run"):
        flip_plots([_run(tmp_path / "fp", method="fp", flips=False)], tmp_path / "none.png",
                   warn=lambda _: None)
    assert not (tmp_path / "none.png").exists()


def test_cli_report_writes_the_flip_plot(tmp_path, capsys):
    run = _run(tmp_path / "ste")
    assert main(["report", str(run), "--flip-plot", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'f.png'}" in out and "| ste" in out
    assert (tmp_path / "f.png").read_bytes().startswith(PNG)
    fp = _run(tmp_path / "fp", method="fp", flips=False)
    assert main(["report", str(fp), "--flip-plot", str(tmp_path / "g.png")]) == 2
    assert "recorded flip rates" in capsys.readouterr().err
