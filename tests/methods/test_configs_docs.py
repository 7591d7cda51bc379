"""The variant x preset table shown in the docs and the fsg docstring is the rendered one."""
import importlib.util
from pathlib import Path

import bnnopt.methods.learned.fsg as fsg_module
from bnnopt.methods.learned.config import FSGConfig, what_runs_rows, what_runs_table

ROOT = Path(__file__).resolve().parents[2]


def load_hook():
    spec = importlib.util.spec_from_file_location("docs_hook", ROOT / "docs/hooks/generated.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_page_table_is_the_rendered_one():
    hook = load_hook()
    page = (ROOT / "docs/methods/learned.md").read_text(encoding="utf-8")
    assert page.count(hook.WHAT_RUNS) == 1
    built = hook.on_page_markdown(page)
    table = what_runs_table("markdown")
    assert table in built and hook.WHAT_RUNS not in built
    # no other (hand-written) copy of the table on the page
    assert built.count("| variant | preset |") == 1


def test_fsg_docstring_table_is_the_rendered_one_and_the_api_page_fills_it():
    assert what_runs_table("rst") in fsg_module.__doc__
    assert "<what-runs-table>" not in fsg_module.__doc__
    hook = load_hook()
    html = hook.on_page_content("<p>before</p>\n<p>&lt;what-runs-table&gt;</p>\n<p>after</p>")
    assert "<table>" in html and "what-runs-table" not in html and html.count("<tr>") == 5


def test_rows_follow_the_presets():
    header, *rows = what_runs_rows()
    assert header[:2] == ["variant", "preset"] and len(rows) == 4
    assert [row[:2] for row in rows] == [["paper", "cpu (*)"], ["paper", "paper"],
                                         ["official", "official (*)"], ["official", "cpu"]]
    expand, layout = header.index("expand"), header.index("layout")
    # a changed preset value shows up in the table: cells are read from the configs
    assert rows[1][expand] == str(FSGConfig.paper().expand)
    assert rows[3][layout] == FSGConfig.of("official", "cpu").layout == "per-weight"
    markdown = what_runs_table("markdown").splitlines()
    assert len(markdown) == 6 and all(line.count("|") == len(header) + 1 for line in markdown)
