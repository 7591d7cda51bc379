"""Optional dependencies: a missing one is a one-line ValueError naming the extra."""
from __future__ import annotations

import pytest

from bnnopt.extras import MissingExtraError, available, require


def test_missing_module_names_the_extra():
    with pytest.raises(MissingExtraError, match=r'pip install "bnnopt\[onnx\]"') as err:
        require("bnnopt_no_such_module_xyz", "onnx", "ONNX export")
    assert isinstance(err.value, ValueError) and "ONNX export" in str(err.value)
    assert not available("bnnopt_no_such_module_xyz") and available("json")


def test_cli_reports_a_missing_extra_in_one_line(monkeypatch, tmp_path, capsys):
    import sys

    from bnnopt.cli.main import main

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    code = main(["train", "--protocol", "digits", "--method", "ste", "--epochs", "1", "--train-limit", "64",
                 "--test-limit", "32", "--out", str(tmp_path / "r"), "--log", "tensorboard", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and 'bnnopt[tensorboard]' in err
    assert not (tmp_path / "r").exists()  # nothing written
