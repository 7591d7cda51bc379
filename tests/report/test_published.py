"""Published numbers as package data: the FSG file is the paper's text, and report prints it."""
import json

import pytest

from bnnopt.cli.main import main
from bnnopt.report.published import load_published, matching_rows, papers, published_table
from bnnopt.report.runs import report_runs


def test_fsg_file_loads_and_covers_tables_1_to_5():
    rows = load_published("fsg")
    assert "fsg" in papers()
    assert {r.table for r in rows} == {"1", "2", "3", "4", "5"}
    t1 = [r for r in rows if r.table == "1" and r.model == "resnet20" and r.method == "fsg"
          and r.optimizer == "adam" and r.metric == "test_acc"]
    assert len(t1) == 1 and (t1[0].value, t1[0].std) == (91.00, 0.804)


def test_every_printed_cell_is_in_the_paper_text(shared_dir):
    text = (shared_dir / "papers" / "fsg-aaai2025.txt").read_text(encoding="utf-8")
    for row in load_published("fsg"):
        assert row.printed and row.printed in text, row
        assert float(row.printed.split(" ± ")[0]) == row.value


def test_matching_rows_needs_model_dataset_method_optimizer_and_match_options():
    cfg = {"model": "resnet44", "dataset": "cifar10", "method": "fsg",
           "method_options": {"slow_net": "lstm"}, "optim": {"name": "sgd"}}
    found = {(r.table, r.metric) for r in matching_rows(cfg, ["fsg"])}
    assert ("3", "test_acc") in found and ("1", "test_acc") in found  # table 3 LSTM row, table 1 SGD
    assert not [r for r in matching_rows(cfg, ["fsg"]) if r.match.get("slow_net") == "mamba"]
    cfg["optim"]["name"] = "sgdm"  # no table uses SGD with momentum: only rows without optimizer
    assert {r.optimizer for r in matching_rows(cfg, ["fsg"])} == {""}
    with pytest.raises(ValueError, match="no published numbers for paper 'nope'; valid: "):
        load_published("nope")
    with pytest.raises(ValueError, match="has no table '9'"):
        published_table("fsg", "9")


def test_report_prints_published_beside_measured(tmp_path, capsys):
    run = tmp_path / "r0"
    run.mkdir()
    config = {"method": "fsg", "method_options": {}, "model": "resnet20", "dataset": "cifar10",
              "seed": 0, "epochs": 1, "optim": {"name": "adam", "lr": 1e-3}}
    summary = {"final_test_acc": 12.5, "best_test_acc": 12.5, "final_train_loss": 2.0,
               "seconds_per_epoch": 1.0}
    (run / "config.json").write_text(json.dumps(config))
    (run / "summary.json").write_text(json.dumps(summary))
    text = report_runs([run], published=["fsg"])
    assert "| ResNet-20 / DoReFa / Adam / FSG(ours) | test_acc | 91.00 ± 0.804 | 12.50 |" in text
    assert main(["report", "--published", "fsg", "--table", "5"]) == 0
    assert "196.47" in capsys.readouterr().out
    assert main(["report", "--published", "nope"]) == 2
    assert main(["report"]) == 2
