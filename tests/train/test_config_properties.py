"""Property-based: the --set parser and the TOML loader give a valid config or one
ValueError line, never another exception (hypothesis; skipped without it)."""
from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bnnopt.train.config import RunConfig, parse_literal, load_toml  # noqa: E402

FAST = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = ["epochs", "batch_size", "seed", "gamma", "lr", "optim.lr", "optim.momentum",
        "optim.betas", "optim.name", "optim.weight_decay", "model_options.hidden",
        "method_options.beta", "policy.keep_first", "policy.include", "device", "schedule",
        "augment", "data_root", "init", "model", "method", "protocol", "val_fraction",
        "zigzag", "nokey", "a.b.c", "", "."]
VALUES = st.one_of(
    st.sampled_from(["abc", "1", "0", "-1", "1e999", "-1e999", "nan", "inf", "none", "null",
                     "true", "false", "[1]", "[0.9, 0.999]", "(1,2,3)", "{}", "{'a': 1}",
                     "[" * 200, "1" * 5000, "cuda:0", "cuda:x", "''", "\"", "\\x00"]),
    st.text(max_size=20),
)


def _assert_one_line(err: ValueError) -> None:
    msg = str(err)
    assert msg and "\n" not in msg.strip(), msg


@FAST
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_set_gives_a_valid_config_or_a_value_error(key, value):
    cfg = RunConfig(model="mlp", dataset="digits", method="ste")
    try:
        cfg.set(f"{key}={value}")
        cfg.validate()
    except ValueError as err:
        _assert_one_line(err)


@FAST
@given(raw=st.text(max_size=40))
def test_parse_literal_never_raises(raw):
    parse_literal(raw)


TOML_LINES = st.sampled_from([
    'epochs = 3', 'epochs = "ten"', 'epochs = 1e400', 'gamma = nan', 'gamma = inf',
    'protocol = "digits"', 'protocol = 3', 'model = "mlp"', 'model = {a = 1}',
    '[optim]\nlr = "abc"', '[optim]\nbetas = 1', '[optim]\nbetas = [0.9, 2]',
    '[model_options]\nhidden = 8', '[model_options]\nfoo = 1', 'model_options = 5',
    'device = "cuda:7"', 'device = "gpu"', 'dataset = "digits"', 'seed = -1',
    'augment = "yes"', 'x = 1', 'date = 1979-05-27', '[policy]\nkeep_first = false',
    '"unterminated', '[[optim]]\nlr = 1', 'epochs = 3\nepochs = 4', '\x00', 'é = 1',
])


@FAST
@given(lines=st.lists(TOML_LINES, max_size=4), junk=st.binary(max_size=8))
def test_toml_loader_gives_a_config_or_a_value_error(tmp_path, lines, junk):
    path = tmp_path / "c.toml"
    path.write_bytes("\n".join(lines).encode() + (b"\n" + junk if junk else b""))
    cfg = RunConfig(model="mlp", dataset="digits", method="ste")
    try:
        data = load_toml(path)
        data.pop("protocol", None)
        cfg.update(data).validate()
    except ValueError as err:
        _assert_one_line(err)
