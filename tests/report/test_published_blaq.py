"""Published numbers of BLAQ (AAAI 2024): every cell as printed, and matched to the configs."""
from pathlib import Path

from bnnopt.report.published import load_published, matching_rows, papers
from bnnopt.train.config import RunConfig, load_toml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_blaq_file_covers_tables_1_to_6():
    rows = load_published("blaq")
    assert "blaq" in papers()
    assert {r.table for r in rows} == {"1", "2", "3", "4", "5", "6"}
    t4 = [r for r in rows if r.table == "4" and r.method == "blaq"]
    assert len(t4) == 1 and t4[0].value == 99.38 and t4[0].model == "lenet5_alq"


def _table_lines(text: str, table: str) -> list[list[str]]:
    """Tab-separated cells of the lines between the table's header and its caption."""
    end = text.index(f"Table {table}:")
    start = text.rfind("Method", 0, end)
    return [line.split("\t") for line in text[start:end].splitlines()[1:] if "\t" in line]


def test_every_printed_cell_is_in_its_table_of_the_paper(shared_dir):
    text = (shared_dir / "papers" / "blaq.txt").read_text(encoding="utf-8")
    for row in load_published("blaq"):
        lines = _table_lines(text, row.table)
        assert float(row.printed.rstrip("%")) == row.value, row
        if row.table == "1":  # Method | bitwidth | amplitude | frequency, method cell once
            method, bits = row.row.split()
            current, cells = None, None
            for line in lines:
                current = line[0] or current
                if current == method and line[1] == bits:
                    cells = line
            column = 2 if row.metric == "locked_amplitude" else 3
            assert cells is not None and cells[column] == row.printed, row
        else:                 # Method | bitwidth | accuracy; our row label "Method (bitwidth)"
            assert [row.row, row.printed] in [[f"{c[0]} ({c[-2]})", c[-1]] for c in lines], row


def test_each_table_config_finds_its_blaq_row():
    expected = {"blaq_vgg_cifar10": "2", "blaq_mlp_mnist": "3", "blaq_lenet5_mnist": "4",
                "blaq_svhn": "5", "blaq_resnet18_imagenet": "6"}
    for stem, table in expected.items():
        cfg = RunConfig.from_dict(load_toml(CONFIGS / f"{stem}.toml")).to_dict()
        found = [r for r in matching_rows(cfg, ["blaq"], metric="test_acc")]
        assert [r.table for r in found] == [table], stem
