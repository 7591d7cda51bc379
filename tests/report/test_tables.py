import math

from bnnopt.report.tables import aggregate, markdown_table, mean_std


def test_mean_std_sample():
    assert mean_std([1.0, 3.0]) == (2.0, math.sqrt(2.0))
    assert mean_std([5.0]) == (5.0, 0.0)
    assert all(math.isnan(v) for v in mean_std([]))


def test_aggregate_groups_by_label():
    runs = [
        {"label": "ste", "final_test_acc": 80.0, "best_test_acc": 81.0, "final_train_loss": 0.5,
         "seconds_per_epoch": 2.0},
        {"label": "ste", "final_test_acc": 82.0, "best_test_acc": 83.0, "final_train_loss": 0.3,
         "seconds_per_epoch": 4.0},
        {"label": "fp", "final_test_acc": 90.0, "best_test_acc": 90.0, "final_train_loss": 0.1,
         "seconds_per_epoch": 1.0},
    ]
    rows = aggregate(runs)
    assert [r["label"] for r in rows] == ["ste", "fp"]
    assert rows[0]["seeds"] == 2 and rows[0]["final_test_acc"][0] == 81.0
    table = markdown_table(rows)
    assert "| ste | 2 | 81.00 ± 1.41 |" in table
    assert table.count("\n") == 4


def test_zigzag_columns_use_last_k_statistics():
    base = {"final_test_acc": 90.0, "best_test_acc": 90.0, "final_train_loss": 0.1,
            "seconds_per_epoch": 1.0}
    runs = [dict(base, label="laq", zigzag={"flips": 99, "max_amplitude": 9.0,
                                            "last_k": {"flips": 10, "max_amplitude": 0.5}}),
            dict(base, label="laq", zigzag={"last_k": {"flips": 20, "max_amplitude": 0.25}})]
    rows = aggregate(runs)
    assert rows[0]["flips"][0] == 15.0 and rows[0]["amplitude"][0] == 0.375
    assert "| sign flips | max amplitude |" in markdown_table(rows)


def test_cpu_seconds_column_only_when_recorded():
    from bnnopt.report.tables import columns_for

    old = {"label": "ste", "final_test_acc": 80.0, "best_test_acc": 81.0,
           "final_train_loss": 0.5, "seconds_per_epoch": 9.0}
    new = dict(old, label="fsg", cpu_seconds_per_epoch=3.0)
    assert "CPU s/epoch" not in markdown_table(aggregate([old], columns_for([old])),
                                               columns_for([old]))
    columns = columns_for([old, new])
    table = markdown_table(aggregate([old, new], columns), columns)
    assert "| CPU s/epoch |" in table and "| 3.0 ± 0.0 |" in table


def test_bits_per_character_columns_for_language_models():
    from bnnopt.report.tables import columns_for

    image = {"label": "ste", "final_test_acc": 80.0, "best_test_acc": 81.0,
             "final_train_loss": 0.5, "seconds_per_epoch": 9.0}
    assert "bits/char" not in markdown_table(aggregate([image], columns_for([image])),
                                             columns_for([image]))
    lm = [dict(image, label="b158", final_test_bpc=b, best_val_bpc=b + 0.1) for b in (3.9, 4.1)]
    columns = columns_for(lm)
    table = markdown_table(aggregate(lm, columns), columns)
    assert "| final test bits/char |" in table and "| 4.000 ± 0.141 |" in table
