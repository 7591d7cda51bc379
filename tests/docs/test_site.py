"""The built documentation site: equations rendered (MathML), nothing loaded or linked
from other hosts, results headings free of project-history labels.

Builds the site once (about 5 s of CPU) into a temporary directory; skipped when the
``docs`` extra (mkdocs, latex2mathml) is not installed.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("mkdocstrings")
pytest.importorskip("latex2mathml")

ROOT = Path(__file__).resolve().parents[2]
# External hosts a page may link to on purpose (papers, references). None today: the
# papers are cited by title and equation number, and the site links only to itself.
ALLOWED_LINK_HOSTS: frozenset[str] = frozenset()


class Page(HTMLParser):
    """Visible text (outside code, scripts and MathML), links, resources, math, headings."""

    SKIP = {"script", "style", "code", "pre", "math"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.links: list[str] = []
        self.resources: list[str] = []
        self.math = 0
        self.headings: list[str] = []
        self._skip = 0
        self._heading: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "math":
            self.math += 1
        if tag in self.SKIP:
            self._skip += 1
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag in ("script", "img", "iframe") and attrs.get("src"):
            self.resources.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.resources.append(attrs["href"])
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = []

    def handle_endtag(self, tag):
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        if re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading.append(data)
        if not self._skip:
            self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "--site-dir", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def pages(site: Path) -> list[Path]:
    found = sorted(site.rglob("*.html"))
    assert len(found) > 5
    return found


def test_learned_gradients_page_shows_math_not_tex(site):
    page = parse(site / "methods" / "learned" / "index.html")
    text = "".join(page.text)
    assert page.math >= 10  # the page's notation, table and update equations
    for raw in ("\\(", "\\)", "\\[", "\\]", "$$", "\\hat", "\\odot"):
        assert raw not in text, raw
    html = (site / "methods" / "learned" / "index.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' not in html


def test_no_page_shows_raw_tex_delimiters(site):
    for path in pages(site):
        text = "".join(parse(path).text)
        for raw in ("\\(", "\\[", "$$"):
            assert raw not in text, f"{path.relative_to(site)}: {raw}"


def test_nothing_is_loaded_or_linked_from_other_hosts(site):
    for path in pages(site):
        page = parse(path)
        for url in page.resources:
            host = urlparse(url).netloc
            assert not host, f"{path.relative_to(site)} loads {url}"
        for url in page.links:
            parsed = urlparse(url)
            if parsed.scheme in ("http", "https") or parsed.netloc:
                assert parsed.netloc in ALLOWED_LINK_HOSTS, f"{path.relative_to(site)} links {url}"


def test_results_headings_carry_no_history_labels(site):
    page = parse(site / "results" / "index.html")
    assert len(page.headings) >= 6
    pattern = re.compile(r"\b(issue|round|session|update)\b|#\d+|20\d\d-\d\d-\d\d", re.I)
    for heading in page.headings:
        assert not pattern.search(heading), heading
