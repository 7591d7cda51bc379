"""Welch interval against hand-computed cases (t quantiles from a printed t table)."""
import math

import pytest

from bnnopt.report.stats import (NO_DIFFERENCE, reference_pairs, significance_markdown,
                                 significance_rows, welch_interval)

T_975_DF4 = 2.776445  # two-sided 95 % t quantile, 4 degrees of freedom (t table)


def test_equal_variances_integer_df():
    # a = 1,2,3 and b = 3,4,5: means 2, 4; variances 1, 1; se = sqrt(2/3);
    # Welch df = (2/3)^2 / (2 * (1/3)^2 / 2) = 4; half width = 2.776445 * 0.816497 = 2.266958
    iv = welch_interval([1, 2, 3], [3, 4, 5])
    assert iv.diff == pytest.approx(-2.0)
    assert iv.df == pytest.approx(4.0)
    half = T_975_DF4 * math.sqrt(2 / 3)
    assert half == pytest.approx(2.266958, abs=1e-6)
    assert (iv.low, iv.high) == (pytest.approx(-2 - half, abs=1e-5), pytest.approx(-2 + half, abs=1e-5))
    assert iv.covers_zero and iv.verdict() == NO_DIFFERENCE
    iv = welch_interval([5, 6, 7], [1, 2, 3])  # d = 4: [1.733, 6.267] excludes 0
    assert iv.low == pytest.approx(4 - half, abs=1e-5) and not iv.covers_zero
    assert iv.verdict(higher_is_better=True) == "better"
    assert iv.verdict(higher_is_better=False) == "worse"


def test_unequal_variances():
    # a = 1,2,3 (var 1), b = 4,6,8 (var 4): se^2 = 1/3 + 4/3 = 5/3;
    # df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 50/17 = 2.941
    iv = welch_interval([1, 2, 3], [4, 6, 8])
    assert iv.diff == pytest.approx(-4.0)
    assert iv.df == pytest.approx(50 / 17)
    # the t quantile lies between the table's df 2 (4.302653) and df 3 (3.182446) values
    half = iv.high - iv.diff
    assert 3.182446 * math.sqrt(5 / 3) < half < 4.302653 * math.sqrt(5 / 3)


def test_degenerate_cases():
    assert welch_interval([1.0], [1.0, 2.0]) is None
    iv = welch_interval([2.0, 2.0], [1.0, 1.0])  # no spread: the point difference
    assert (iv.low, iv.diff, iv.high) == (1.0, 1.0, 1.0) and not iv.covers_zero
    with pytest.raises(ValueError, match="confidence"):
        welch_interval([1, 2], [1, 2], confidence=1.5)


def test_rows_pairs_and_markdown():
    meta = {"ste[adam]": ("ste", "adam"), "fsg[adam]": ("fsg", "adam"),
            "fsg[sgd]": ("fsg", "sgd"), "ste[sgd]": ("ste", "sgd")}
    pairs = reference_pairs(meta, "ste")
    assert pairs == [("fsg[adam]", "ste[adam]"), ("fsg[sgd]", "ste[sgd]")]
    # a method spec as reference: only the arm with exactly that spec, not its siblings
    forms = {"fsg[adam]": ("fsg", "[adam]"), "fsg:fast_form=product[adam]": ("fsg", "[adam]"),
             "ste[adam]": ("ste", "[adam]")}
    assert reference_pairs(forms, "fsg") == [("fsg:fast_form=product[adam]", "fsg[adam]"),
                                             ("ste[adam]", "fsg[adam]")]
    assert reference_pairs(forms, "fsg:fast_form=product") == [
        ("fsg[adam]", "fsg:fast_form=product[adam]"), ("ste[adam]", "fsg:fast_form=product[adam]")]
    groups = {"fsg[adam]": [{"final_test_acc": 5, "final_train_loss": 1},
                            {"final_test_acc": 6, "final_train_loss": 2},
                            {"final_test_acc": 7, "final_train_loss": 3}],
              "ste[adam]": [{"final_test_acc": 1, "final_train_loss": 3},
                            {"final_test_acc": 2, "final_train_loss": 4},
                            {"final_test_acc": 3, "final_train_loss": 5}]}
    rows = significance_rows(groups, pairs[:1])
    assert rows[0]["final_test_acc"]["verdict"] == "better"
    assert rows[0]["final_train_loss"]["diff"] == pytest.approx(-2.0)
    assert rows[0]["final_train_loss"]["verdict"] == NO_DIFFERENCE  # [-4.27, 0.27]
    text = significance_markdown(rows)
    assert "| fsg[adam] | ste[adam] | +4.00 [+1.73, +6.27] better |" in text
