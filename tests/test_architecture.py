"""The layout's rules that import-linter does not check: no private name crosses a module.

A name ``_x`` defined in module ``a.b`` is private to it; a private module ``a._m`` is
private to its package ``a``. import-linter (``pyproject.toml``) checks the layers,
the family independence and the absence of cycles.
"""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _package_of(path: Path, src: Path) -> str:
    name = _module_name(path, src)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _resolve(node: ast.ImportFrom, path: Path, src: Path) -> str:
    if not node.level:
        return node.module or ""
    base = _package_of(path, src).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_crossings(src: Path = SRC) -> list[str]:
    found = []
    for path in sorted(src.rglob("*.py")):
        package = _package_of(path, src)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                module = _resolve(node, path, src)
                targets = [(module, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            else:
                continue
            for module, name in targets:
                if not module.startswith("bnnopt"):
                    continue
                parts = module.split(".")
                # a private module may be used only inside the package that holds it
                for i, part in enumerate(parts):
                    owner = ".".join(parts[:i])
                    if _is_private(part) and not (package == owner or package.startswith(owner + ".")):
                        found.append(f"{path.relative_to(src)}:{node.lineno}: private module {module}")
                if name and _is_private(name):
                    as_module = src / Path(*module.split("."), name + ".py")
                    if not (as_module.is_file() and module == package):
                        found.append(f"{path.relative_to(src)}:{node.lineno}: private name {module}.{name}")
    return found


def test_no_private_name_crosses_a_module():
    assert private_crossings() == []


def test_the_check_can_fail(tmp_path):
    pkg = tmp_path / "bnnopt" / "a"
    pkg.mkdir(parents=True)
    (tmp_path / "bnnopt" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "_m.py").write_text("")
    (pkg / "x.py").write_text("def _hidden():\n    pass\n")
    (pkg / "y.py").write_text("from bnnopt.a.x import _hidden\nfrom bnnopt.a import _m\n")
    (tmp_path / "bnnopt" / "z.py").write_text("import bnnopt.a._m\n")
    assert private_crossings(tmp_path) == ["bnnopt/a/y.py:1: private name bnnopt.a.x._hidden",
                                           "bnnopt/z.py:1: private module bnnopt.a._m"]
