"""MkDocs hook: every equation becomes MathML when the site is built.

``pymdownx.arithmatex`` (generic mode) protects ``$...$`` and ``$$...$$`` from the
Markdown parser and leaves them as ``<span class="arithmatex">\\(...\\)</span>`` and
``<div class="arithmatex">\\[...\\]</div>``. This hook converts each one with
``latex2mathml`` into a ``<math>`` element, which browsers render natively
(MathML Core: Chromium, Firefox, Safari). The built site therefore needs no script
and no network to show its equations. An equation that cannot be converted stops
the build with its page and source, instead of reaching the reader as raw TeX.
"""
from __future__ import annotations

import html
import re

MATH = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.DOTALL)
DELIMITERS = {"span": (r"\(", r"\)", "inline"), "div": (r"\[", r"\]", "block")}


def to_mathml(tex: str, display: str) -> str:
    """One TeX expression (no delimiters) -> a ``<math>`` element."""
    from latex2mathml.converter import convert

    return convert(tex.strip(), display=display)


def render(content: str, where: str = "page") -> str:
    """Replace every arithmatex element of ``content`` (HTML) by MathML."""

    def replace(match: re.Match) -> str:
        tag, body = match.group(1), html.unescape(match.group(2)).strip()
        start, end, display = DELIMITERS[tag]
        if not (body.startswith(start) and body.endswith(end)):
            raise ValueError(f"docs: {where}: unexpected math markup {match.group(0)[:120]!r}")
        tex = body[len(start):-len(end)]
        try:
            mathml = to_mathml(tex, display)
        except Exception as err:  # noqa: BLE001 - any converter failure names the equation
            raise ValueError(f"docs: {where}: cannot convert the equation {tex!r} to MathML: "
                             f"{err}") from None
        if display == "block":
            return f'<div class="math-block">{mathml}</div>'
        return mathml

    return MATH.sub(replace, content)


def on_page_content(html_text: str, page, **kwargs) -> str:  # noqa: ARG001 - mkdocs hook signature
    return render(html_text, page.file.src_path)
