"""The pre-layout import paths keep working for one release, with a DeprecationWarning."""
import importlib
import sys

import pytest


@pytest.mark.parametrize("old, new, names", [
    ("bnnopt.hyper", "bnnopt.methods.learned", ["FSG", "FCGrad", "LSTMFC", "HistoryBuffer"]),
    ("bnnopt.optim", "bnnopt.methods.lossaware", ["LAQ", "BLAQ", "LossAwareQuantizer", "solve"]),
])
def test_old_package_warns_and_hands_on_the_new_names(old, new, names):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    target = importlib.import_module(new)
    for name in names:
        assert getattr(module, name) is getattr(target, name)


def test_mamba_moved_to_ssm():
    sys.modules.pop("bnnopt.hyper", None)
    with pytest.warns(DeprecationWarning, match="bnnopt.ssm"):
        module = importlib.import_module("bnnopt.hyper")
    from bnnopt.ssm import Mamba, selective_scan
    assert module.Mamba is Mamba and module.selective_scan is selective_scan
