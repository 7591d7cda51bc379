import pytest

from bnnopt.train.config import RunConfig, load_toml
from bnnopt.train.schedule import lr_at


def test_set_overrides_scalars_and_tables():
    cfg = RunConfig()
    cfg.set("epochs=3")
    cfg.set("optim.lr=0.05")
    cfg.set("method_options.beta=0.5")
    cfg.set("init=none")
    assert cfg.epochs == 3 and cfg.optim == {"name": "adam", "lr": 0.05}
    assert cfg.method_options == {"beta": 0.5} and cfg.init is None


def test_float_field_accepts_int():
    cfg = RunConfig()
    cfg.set("gamma=1")
    assert cfg.gamma == 1.0 and isinstance(cfg.gamma, float)


@pytest.mark.parametrize("assignment, fragment", [
    ("epochs", "malformed override"),
    ("epoch=3", "unknown config key 'epoch'"),
    ("epochs=three", "invalid value 'three' for 'epochs'"),
    ("augment=3", "expected true or false"),
    ("optim=3", "must be a table"),
])
def test_bad_overrides(assignment, fragment):
    with pytest.raises(ValueError, match=fragment):
        RunConfig().set(assignment)


@pytest.mark.parametrize("changes, fragment", [
    ({"epochs": 0}, "invalid epochs 0"),
    ({"batch_size": -4}, "invalid batch_size -4"),
    ({"schedule": "linear"}, "invalid schedule 'linear'; valid: step, cosine, constant"),
    ({"optim": {"name": "rmsprop"}}, "invalid optimizer 'rmsprop'; valid: adam, sgd, sgdm"),
    ({"optim": {"lr": -1.0}}, "invalid lr"),
    ({"optim": {"momentun": 0.9}}, "unknown optim key 'momentun'"),
])
def test_validate_names_bad_value(changes, fragment):
    cfg = RunConfig(model="mlp", dataset="digits", method="fp")
    cfg.update(changes)
    with pytest.raises(ValueError, match=fragment):
        cfg.validate()


def test_unknown_registered_names():
    with pytest.raises(ValueError, match="unknown model 'resnet21'; valid models: .*resnet20"):
        RunConfig(model="resnet21").validate()
    with pytest.raises(ValueError, match="unknown method 'stee'; valid methods: .*ste"):
        RunConfig(method="stee", dataset="digits", model="mlp").validate()


def test_toml_round_trip(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('model = "mlp"\nepochs = 2\n[optim]\nname = "sgd"\nlr = 0.1\n')
    cfg = RunConfig().update(load_toml(path))
    assert cfg.model == "mlp" and cfg.optim == {"name": "sgd", "lr": 0.1}
    path.write_text("model = \n")
    with pytest.raises(ValueError, match="malformed config file"):
        load_toml(path)
    with pytest.raises(ValueError, match="config file not found"):
        load_toml(tmp_path / "missing.toml")


def test_schedules():
    assert lr_at(0, 0.1, 90) == 0.1
    assert lr_at(29, 0.1, 90) == 0.1
    assert lr_at(30, 0.1, 90) == pytest.approx(0.01)
    assert lr_at(65, 0.1, 90) == pytest.approx(0.001)
    assert lr_at(0, 1.0, 10, "cosine") == 1.0
    assert lr_at(5, 1.0, 10, "cosine") == pytest.approx(0.5)
    assert lr_at(7, 0.3, 10, "constant") == 0.3


def test_toml_protocol_key_is_honoured(tmp_path):
    """protocol = "digits" in a file applies the protocol beneath the file's own keys."""
    from types import SimpleNamespace

    from bnnopt.cli.main import resolve_config

    path = tmp_path / "c.toml"
    path.write_text('protocol = "digits"\nepochs = 2\n')
    args = SimpleNamespace(config=str(path), set=[])
    cfg = resolve_config(args)
    assert cfg.protocol == "digits" and cfg.model == "mlp" and cfg.dataset == "digits"
    assert cfg.model_options == {"hidden": 256} and cfg.epochs == 2


def test_device_names(monkeypatch):
    import torch

    from bnnopt.train.config import check_device_name
    from bnnopt.train.trainer import resolve_device

    for ok in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert check_device_name(ok) == ok
    for bad in ("gpu", "cuda:", "cuda:-1", "cuda:01", "cpu:0", "", None, 0):
        with pytest.raises(ValueError, match="valid: auto, cpu, cuda, cuda:N"):
            check_device_name(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"'cuda:2' does not exist \(2 CUDA device\(s\)\); "
                                         r"valid here: auto, cpu, cuda, cuda:0, cuda:1"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match="CUDA is not available; valid here: auto, cpu"):
        resolve_device("cuda:0")
