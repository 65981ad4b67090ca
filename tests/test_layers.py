"""DESIGN "Layers": imports point down only, and each outside library has one home.

Walks every module's imports (``ast``, no execution) and checks the table:
container/ and crypto/ are pure (no aiohttp, asyncio, files of the upper
layers); only crypto/ imports cryptography; only packaging/hls.py imports
m3u8; only http/ and license/ import aiohttp; the origin never imports the
licence module's storage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ORIGIN = Path(__file__).resolve().parent.parent / "origin"


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules() -> list[tuple[str, set[str]]]:
    return [(str(p.relative_to(ORIGIN.parent)), imports(p)) for p in sorted(ORIGIN.rglob("*.py"))]


def uses(names: set[str], prefix: str) -> bool:
    return any(n == prefix or n.startswith(prefix + ".") for n in names)


@pytest.mark.parametrize(("module", "names"), modules(), ids=lambda v: v if isinstance(v, str)
                         else "")
def test_module_respects_its_layer(module: str, names: set[str]) -> None:
    layer = module.split("/")[1] if module.count("/") > 1 else "entry"
    if layer in ("container", "crypto"):
        for banned in ("aiohttp", "asyncio", "aiofiles", "origin.http", "origin.packaging",
                       "origin.license", "m3u8"):
            assert not uses(names, banned), f"{module} imports {banned}"
    if layer == "container":
        assert not uses(names, "cryptography"), f"{module}: only crypto/ imports cryptography"
    if layer == "packaging":
        for banned in ("aiohttp", "origin.http", "origin.license", "cryptography"):
            assert not uses(names, banned), f"{module} imports {banned}"
    if layer == "http":
        assert not uses(names, "origin.license"), f"{module} reaches into the licence module"
        assert not uses(names, "sqlite3")
    if uses(names, "m3u8"):
        assert module == "origin/packaging/hls.py"
    if uses(names, "cryptography"):
        assert layer == "crypto", f"{module} imports cryptography"
    if uses(names, "aiohttp"):
        assert layer in ("http", "license", "entry"), f"{module} imports aiohttp"
    if uses(names, "sqlite3"):
        assert layer == "license"
    if module.endswith(("packaging/dash.py",)) or uses(names, "xml"):
        # MPD XML lives in dash.py; licence formats (CPIX, …) are the licence module's own.
        assert module == "origin/packaging/dash.py" or layer == "license", f"{module} does XML"


def test_the_walk_sees_the_tree() -> None:
    found = dict(modules())
    assert "origin/packaging/hls.py" in found and uses(found["origin/packaging/hls.py"], "m3u8")
    assert len(found) > 40
