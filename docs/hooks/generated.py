"""MkDocs hook: pages generated from the code at build time, so they cannot drift from it.

- ``<!-- bnnopt-help COMMAND -->`` becomes ``bnnopt COMMAND --help`` (``<!-- bnnopt-help -->``:
  the top-level help), from the argparse parser;
- ``<!-- bnnopt-configs -->`` becomes a table of ``configs/*.toml`` with each file's header
  comment (what it reproduces and how);
- ``<!-- bnnopt-fsg-what-runs -->`` becomes FSG's variant x preset table, rendered from the
  presets (:func:`bnnopt.methods.learned.config.what_runs_table`); the same table's
  placeholder in the fsg module docstring (``<what-runs-table>``, filled in at import)
  is filled in on the API page.
"""
from __future__ import annotations

import re

from pathlib import Path

MARKER = re.compile(r"<!-- bnnopt-help ?([a-z-]*) -->")
CONFIGS = "<!-- bnnopt-configs -->"
WHAT_RUNS = "<!-- bnnopt-fsg-what-runs -->"
DOCSTRING_WHAT_RUNS = ("<what-runs-table>", "&lt;what-runs-table&gt;")
ROOT = Path(__file__).resolve().parents[2]


def _help(command: str) -> str:
    import os

    from bnnopt.cli.main import build_parser

    os.environ.setdefault("COLUMNS", "100")  # stable line width, whatever the terminal
    parser = build_parser()
    if not command:
        return parser.format_help()
    for action in parser._subparsers._group_actions:  # noqa: SLF001 - argparse has no public accessor
        if command in action.choices:
            return action.choices[command].format_help()
    raise ValueError(f"docs: unknown bnnopt command {command!r} in a bnnopt-help marker")


def on_page_markdown(markdown: str, **kwargs) -> str:  # noqa: ARG001 - mkdocs hook signature
    def replace(match: re.Match) -> str:
        return "```text\n" + _help(match.group(1)).rstrip() + "\n```"

    markdown = MARKER.sub(replace, markdown)
    if CONFIGS in markdown:
        markdown = markdown.replace(CONFIGS, _configs())
    if WHAT_RUNS in markdown:
        markdown = markdown.replace(WHAT_RUNS, _what_runs())
    return markdown


def on_page_content(html: str, **kwargs) -> str:  # noqa: ARG001 - mkdocs hook signature
    """The fsg docstring's table placeholder (read statically by mkdocstrings) as a table."""
    if not any(p in html for p in DOCSTRING_WHAT_RUNS):
        return html
    import markdown as md

    table = md.markdown(_what_runs(), extensions=["tables"])
    for placeholder in DOCSTRING_WHAT_RUNS:
        html = html.replace(f"<p>{placeholder}</p>", table).replace(placeholder, table)
    return html


def _what_runs() -> str:
    from bnnopt.methods.learned.config import what_runs_table

    return what_runs_table("markdown")


def _configs() -> str:
    rows, sections = ["| file | what |", "|---|---|"], []
    for path in sorted((ROOT / "configs").glob("*.toml")):
        header = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            header.append(line.lstrip("#").strip())
        first = header[0] if header else ""
        rows.append(f"| [`{path.name}`](#{path.stem.replace('_', '-')}) | {first} |")
        sections.append(f"### {path.stem.replace('_', '-')}\n\n`configs/{path.name}`\n\n"
                        + ("```text\n" + "\n".join(header) + "\n```" if header else ""))
    return "\n".join(rows) + "\n\n" + "\n\n".join(sections)
