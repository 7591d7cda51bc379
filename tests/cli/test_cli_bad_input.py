"""Every CLI command with a table of bad inputs: exit 2, one line on stderr naming the
problem (an argument argparse refuses: plus one line of hint), no traceback, and no
file or directory left behind; ``report`` skips damaged runs with a warning."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bnnopt.cli.main import main

TINY = ["--model", "mlp", "--dataset", "digits", "--set", "model_options.hidden=16",
        "--epochs", "1", "--train-limit", "128", "--test-limit", "64", "--device", "cpu",
        "--set", "augment=false"]
NO_SUCH_CUDA = "cuda:0" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 | array.ndim  # unsigned byte data
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A finished tiny run, a fake MNIST root, a plain file, random bytes."""
    root = tmp_path_factory.mktemp("bad_input")
    assert main(["train", *TINY, "--method", "ste", "--out", str(root / "good")]) == 0
    mnist = root / "mnist_root" / "mnist"
    mnist.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        _write_idx(mnist / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(mnist / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)))
    (root / "afile").write_text("not a directory\n")
    (root / "random.pt").write_bytes(np.random.default_rng(1).bytes(4096))
    (root / "proto.toml").write_text('protocol = "digits"\n')
    (root / "badproto.toml").write_text('protocol = "no-such-protocol"\n')
    (root / "adir").mkdir()
    damaged = root / "damaged"
    damaged.mkdir()
    for name in ("config.json", "summary.json", "metrics.jsonl", "checkpoint.pt"):
        (damaged / name).write_bytes((root / "good" / name).read_bytes())
    (damaged / "config.json").write_text('{"method": "ste", "model": ')  # cut off mid-write
    return root


def _snapshot(root: Path) -> dict[str, float | None]:
    """Every path, with its modification time for files (a directory's own time changes
    when a run's lock file comes and goes)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.stat().st_mtime
            for p in sorted(root.rglob("*"))}


# (command line, fragment of the one-line error); W = workspace, G = finished run
CASES = [
    (["list", "things"], "unknown kind 'things'"),
    (["summary", "W/nope.pt"], "nope.pt"),
    (["summary", "--model", "resnet21"], "unknown model 'resnet21'"),
    (["train", *TINY, "--set", "model_options.foo=1", "--out", "W/n"],
     "unknown model_options key 'foo' for model 'mlp'; valid:"),
    (["train", *TINY, "--set", "model_options.hidden=abc", "--out", "W/n"], "hidden"),
    (["train", *TINY, "--set", "method_options.foo=1", "--out", "W/n"], "unknown option 'foo'"),
    (["train", *TINY, "--set", "optim.lr=abc", "--out", "W/n"],
     "invalid value 'abc' for 'optim.lr'; expected a finite number"),
    (["train", *TINY, "--set", "optim.momentum=abc", "--out", "W/n"],
     "invalid value 'abc' for 'optim.momentum'"),
    (["train", *TINY, "--set", "optim.betas=1", "--out", "W/n"],
     "invalid value 1 for 'optim.betas'; expected two numbers"),
    (["train", *TINY, "--lr", "inf", "--out", "W/n"], "invalid value inf for 'optim.lr'"),
    (["train", *TINY, "--set", "gamma=1e999", "--out", "W/n"], "invalid value inf for 'gamma'"),
    (["train", *TINY, "--set", "gamma=nan", "--out", "W/n"], "for 'gamma'; expected a finite number"),
    (["train", *TINY, "--device", "foo", "--out", "W/n"],
     "invalid device 'foo'; valid: auto, cpu, cuda, cuda:N"),
    (["train", *TINY, "--device", NO_SUCH_CUDA, "--out", "W/n"], f"device '{NO_SUCH_CUDA}'"),
    (["train", *TINY, "--out", "W/afile"], "is an existing file, not a directory"),
    (["train", *TINY, "--out", "W/afile/sub"], "afile is a file, not a directory"),
    (["train", *TINY, "--set", "policy.include=nomatch", "--out", "W/n"],
     "would quantize no layer"),
    (["train", *TINY, "--set", "protocol=digits", "--out", "W/n"], "choose a protocol with --protocol"),
    (["train", "--protocol", "mnist-subset", "--config", "W/proto.toml", "--out", "W/n"],
     "--protocol mnist-subset conflicts with protocol = 'digits'"),
    (["train", "--config", "W/badproto.toml", "--out", "W/n"], "unknown protocol 'no-such-protocol'"),
    (["train", "--resume", "G/checkpoint.pt"], "--resume takes a run directory, not the file"),
    (["train", "--resume", "W/nope"], "no such run directory"),
    (["train", "--resume", "G", "--lr", "0.1"], "--resume continues a run with its own config; --lr"),
    (["train", "--resume", "G", "--epochs", "0"], "has already finished 1 epoch(s)"),
    (["train", "--out", "G", *TINY], "already holds a run; use --resume"),
    (["train", "--resume", "G", "--overwrite"], "cannot be changed"),
    (["train", *TINY, "--out", ""], "invalid --out ''; give a directory or file path"),
    (["train", *TINY, "--out", "  "], "invalid --out '  '"),
    (["train", *TINY, "--epochs", "1.5", "--out", "W/n"],
     "argument --epochs: invalid int value: '1.5'"),
    (["train", *TINY, "--no-such-flag", "--out", "W/n"], "unrecognized arguments: --no-such-flag"),
    (["train", "--protocol", "lm-tiny", "--set", "dataset=shakespeare_embedded", "--method", "ste",
      "--val-fraction", "0.1", "--out", "W/n"], "its validation split is fixed; valid: 0"),
    (["compare", "--protocol", "lm-tiny", "--set", "dataset=shakespeare_embedded", "--methods",
      "fp,ste", "--val-fraction", "0.1", "--out", "W/c"], "its validation split is fixed; valid: 0"),
    (["train", "--config", "W/adir", "--out", "W/n"], "adir is a directory; give a TOML file"),
    (["train", "--config", "W/nope.toml", "--out", "W/n"], "nope.toml"),
    (["eval", "G", "--dataset", "mnist", "--data-root", "W/mnist_root"],
     "was trained on digits (1x8x8 images, 10 classes); dataset mnist has 1x28x28"),
    (["eval", "G", "--device", NO_SUCH_CUDA], f"device '{NO_SUCH_CUDA}'"),
    (["eval", "G", "--device", "foo"], "invalid device 'foo'"),
    (["eval", "W/random.pt"], "is not a checkpoint"),
    (["eval", "W/random.pt", "--model", "mlp"], "is not a checkpoint"),
    (["eval", "W/nope.pt"], "no such file"),
    (["compare", *TINY, "--methods", "", "--out", "W/n"], "--methods lists no method"),
    (["compare", *TINY, "--methods", "ste", "--out", ""], "invalid --out ''"),
    (["compare", *TINY, "--out", "W/n"], "the following arguments are required: --methods"),
    (["compare", *TINY, "--methods", "ste", "--seeds", "two", "--out", "W/n"],
     "argument --seeds: invalid int value: 'two'"),
    (["compare", *TINY, "--methods", ",", "--out", "W/n"], "--methods lists no method"),
    (["compare", *TINY, "--methods", "ste", "--out", "W/afile"], "is an existing file"),
    (["compare", *TINY, "--methods", "ste", "--seeds", "0", "--out", "W/n"], "invalid --seeds 0"),
    (["compare", *TINY, "--methods", "ste", "--jobs", "0", "--out", "W/n"], "invalid --jobs 0"),
    (["compare", *TINY, "--methods", "ste", "--tune", "lr=0.1", "--tune-seeds", "0",
      "--out", "W/n"], "invalid --tune-seeds 0"),
    (["compare", *TINY, "--methods", "ste", "--tune-seeds", "2", "--out", "W/n"],
     "--tune-seeds 2 without --tune"),
    (["compare", *TINY, "--methods", "fsg:meta_data=heldout:meta_fraction=1.5", "--out", "W/n"],
     "invalid meta_fraction 1.5 for method 'fsg'; valid: a number in (0, 1)"),
    (["compare", *TINY, "--methods", "fsg:meta_data=val", "--out", "W/n"],
     "meta_data 'val'; valid: train, heldout"),
    (["compare", *TINY, "--methods", "ste,fsg", "--reference", "fsg:beta=0.5", "--out", "W/n"],
     "--reference 'fsg:beta=0.5' matches no compared method; valid: fsg, ste, none"),
    (["report", "W/nope"], "nope"),
    (["report", "W/damaged"], "damaged/config.json is not JSON"),
    (["report", "G", "--out", ""], "invalid --out ''"),
    (["demo", "--out", ""], "invalid --out ''"),
    (["toy", "--out", " "], "invalid --out ' '"),
    (["export", "G", "--out", ""], "invalid --out ''"),
    (["report", "G", "--reference", "fsg", "--out", "W/r.md"],
     "--reference 'fsg' matches no compared method; valid: ste, none"),
    (["report", "G", "--out", "W/afile/r.md"], "afile is a file, not a directory"),
    (["demo", "--out", "W/afile"], "is an existing file"),
    (["toy", "--out", "W/afile/sub"], "afile is a file, not a directory"),
    (["toy", "--steps", "1", "--out", "W/n"], "invalid steps/last"),
    (["export", "W/nope", "--out", "W/n.bnnpk"], "nope"),
    (["export", "G", "--out", "W/afile/x.bnnpk"], "afile"),
]


def _resolve(arg: str, ws: Path) -> str:
    if arg == "G":
        return str(ws / "good")
    if arg.startswith("G/"):
        return str(ws / "good" / arg[2:])
    if arg.startswith("W/"):
        return str(ws / arg[2:])
    return arg


@pytest.mark.parametrize("argv, fragment", CASES, ids=[" ".join(c[0])[:70] for c in CASES])
def test_bad_input_exit_2_one_line_nothing_left(ws, capsys, monkeypatch, argv, fragment):
    argv = [_resolve(a, ws) for a in argv]
    monkeypatch.chdir(ws)
    before = _snapshot(ws)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    lines = err.splitlines()
    assert err.startswith("bnnopt: error: ") and err.endswith("\n"), err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("bnnopt: hint: ")), err
    assert "Traceback" not in err
    assert fragment in err, err
    assert _snapshot(ws) == before, "a file was left behind or changed"


def test_bnnopt_shared_pointing_nowhere_is_an_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BNNOPT_SHARED", str(tmp_path / "nowhere"))
    code = main(["train", "--protocol", "mnist-subset", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and f"BNNOPT_SHARED={tmp_path / 'nowhere'} has no data/ directory" in err
    assert not (tmp_path / "r").exists()


def test_read_only_location_is_checked_before_data_setup(tmp_path, capsys, monkeypatch):
    """The writability probe fails -> exit 2 before any data is loaded or model built."""
    import bnnopt.train.data_setup as data_setup
    import bnnopt.runs.io as io

    def no_data(*a, **k):
        raise AssertionError("data setup ran before the output location was checked")

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(data_setup, "load_split_loaders", no_data)
    monkeypatch.setattr(io.tempfile, "TemporaryFile", read_only)
    code = main(["train", *TINY, "--out", str(tmp_path / "ro" / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "is not writable" in err and "Permission denied" in err
    assert not (tmp_path / "ro").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores directory permissions")
def test_read_only_directory_for_real(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code = main(["train", *TINY, "--out", str(ro / "r")])
    finally:
        ro.chmod(0o755)
    assert code == 2 and "is not writable" in capsys.readouterr().err
    assert list(ro.iterdir()) == []


def test_no_traceback_from_the_real_process(ws):
    """A subprocess, as a user runs it: stderr is exactly one line."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    for argv in (["eval", str(ws / "random.pt")],):
        proc = subprocess.run([sys.executable, "-m", "bnnopt", *argv], capture_output=True,
                              text=True, env=env, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_report_skips_damaged_runs_names_the_files_and_marks_missing_checkpoints(ws, tmp_path,
                                                                                capsys):
    """A damaged config.json or metrics.jsonl line: that run is skipped with a warning
    naming the file; the others are reported; an empty or missing checkpoint is marked."""
    good = ws / "good"
    runs = {}
    for name in ("log", "empty", "nockpt"):
        runs[name] = tmp_path / name
        runs[name].mkdir()
        for f in ("config.json", "summary.json", "metrics.jsonl", "checkpoint.pt"):
            (runs[name] / f).write_bytes((good / f).read_bytes())
    lines = (runs["log"] / "metrics.jsonl").read_text().splitlines()
    (runs["log"] / "metrics.jsonl").write_text("\n".join(lines[:-1] + [lines[-1][:20]]) + "\n")
    (runs["empty"] / "checkpoint.pt").write_bytes(b"")
    (runs["nockpt"] / "checkpoint.pt").unlink()
    capsys.readouterr()
    code = main(["report", str(good), str(ws / "damaged"), str(runs["log"]), str(runs["empty"]),
                 str(runs["nockpt"]), "--reference", "none"])
    out, err = capsys.readouterr()
    assert code == 0, err
    warnings = err.splitlines()
    assert len(warnings) == 2 and all(w.startswith("bnnopt: warning: skipping ") for w in warnings)
    assert f"{ws / 'damaged' / 'config.json'} is not JSON" in warnings[0]
    assert f"{runs['log'] / 'metrics.jsonl'} line {len(lines)} is not JSON" in warnings[1]
    assert "Traceback" not in err
    table = [line for line in out.splitlines() if line.startswith("| ste")]
    assert len(table) == 1 and "†" in table[0] and "| 3 |" in table[0].replace("  ", " ")
    assert f"{runs['empty']} (checkpoint.pt is empty (0 bytes))" in out
    assert f"{runs['nockpt']} (no checkpoint.pt)" in out
