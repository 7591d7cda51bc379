"""Every ``bnnopt ...`` command in the ```bash blocks of the docs pages parses with the
real argument parser (the commands are not run: most are hours-long experiments).
Shell variables assigned earlier in the same block (``M="..."``, then ``$M``) are
expanded first, as bash would."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bnnopt.cli.main import build_parser

DOCS = Path(__file__).resolve().parents[2] / "docs"
FENCE = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)
ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def commands() -> list[tuple[str, str]]:
    """(page, command) for every ``bnnopt`` command of every docs page."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        for block in FENCE.findall(page.read_text(encoding="utf-8")):
            variables: dict[str, str] = {}
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].strip()
                assignment = ASSIGN.match(line)
                if assignment:
                    variables[assignment[1]] = shlex.split(assignment[2])[0] if assignment[2] else ""
                    continue
                line = VARIABLE.sub(lambda m, known=variables: known.get(m[1], m[0]), line)
                for part in re.split(r"&&|;|\|", line):
                    part = part.strip()
                    if part.startswith("bnnopt "):
                        found.append((str(page.relative_to(DOCS)), part))
    return found


def test_docs_have_commands_to_check():
    assert len(commands()) >= 20


@pytest.mark.parametrize("page, command", commands())
def test_docs_command_parses(page, command):
    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{page}: command does not parse ({exc.code}): {command}")
