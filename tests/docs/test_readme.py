"""README.md cannot drift from the code: every ```python block runs, and every
``bnnopt ...`` command of its ```bash blocks parses with the real argument parser;
each ``bnnopt train`` that starts a new run is also resolved with ``--dry-run``
(protocol, config keys, method options), which writes nothing."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest

from bnnopt.cli.main import build_parser, main

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def blocks(language: str) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(README.read_text(encoding="utf-8"))
            if m.group(1) == language]


def bnnopt_commands() -> list[str]:
    """Every ``bnnopt ...`` command of the bash blocks: continuation lines joined,
    comments dropped, ``a && b`` split."""
    found = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("#"):
                continue
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("bnnopt "):
                    found.append(part)
    return found


def test_readme_has_code_to_check():
    assert len(blocks("python")) >= 2
    assert len(bnnopt_commands()) >= 8


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a block writes stays in the test's directory
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks("python")[index], f"README.md python block {index}", "exec"), {})
    assert out.getvalue().strip()  # every block shows its result


@pytest.mark.parametrize("command", bnnopt_commands())
def test_bnnopt_command_parses(command, tmp_path, monkeypatch, capsys):
    argv = shlex.split(command)[1:]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's own refusal: name the command
        pytest.fail(f"README command does not parse ({exc.code}): {command}")
    if argv[0] == "train" and not args.resume:
        from bnnopt.experiments.protocols import find_shared

        if args.protocol and args.protocol != "digits":
            try:
                monkeypatch.setenv("BNNOPT_SHARED", str(find_shared()))
            except ValueError:
                pytest.skip("the shared data directory is absent: parsed, not resolved")
        monkeypatch.chdir(tmp_path)
        if not args.dry_run:
            argv = [*argv, "--dry-run"]
        assert main(argv) == 0, capsys.readouterr().err
        resolved = json.loads(capsys.readouterr().out)
        assert resolved["dry_run"] is True
        assert not any(tmp_path.iterdir())  # a dry run writes nothing
