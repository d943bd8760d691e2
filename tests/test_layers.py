"""The package's layers point down: the library (core modules, ``data/``, ``evaluation/``,
``runtime/``, ``callbacks/``) never imports the command line (``cli/``), and no two modules
import each other, not even through an import inside a function (a cycle a lazy import hides
still breaks whoever imports the other module first)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vae_lightning"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every vae_lightning module ``path`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from vae_lightning.cli import study` imports the module vae_lightning.cli.study
            found.update(f"{node.module}.{a.name}" for a in node.names)
            found.add(node.module)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_the_library_never_imports_the_command_line():
    offenders = {
        module: sorted(n for n in imported if n == "vae_lightning.cli" or n.startswith("vae_lightning.cli."))
        for module, imported in graph().items()
        if not module.startswith("vae_lightning.cli") and module != "vae_lightning.__main__"
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_no_two_modules_import_each_other():
    g = graph()
    # a package imports its own submodules by re-exporting them; that is not a cycle of layers
    edges = {
        (a, b) for a, bs in g.items() for b in bs if a != b and not b.startswith(a + ".") and not a.startswith(b + ".")
    }
    cycles = []
    for a, b in sorted(edges):
        seen, stack = set(), [b]
        while stack:
            node = stack.pop()
            if node == a:
                cycles.append((a, b))
                break
            if node not in seen:
                seen.add(node)
                stack.extend(n for x, n in edges if x == node)
    assert cycles == []


def test_the_walk_sees_lazy_imports(tmp_path):
    # the detector itself: an import inside a function counts
    (tmp_path / "m.py").write_text("def f():\n    from vae_lightning.cli import slurm\n")
    found = {
        n
        for node in ast.walk(ast.parse((tmp_path / "m.py").read_text()))
        if isinstance(node, ast.ImportFrom)
        for n in [node.module]
    }
    assert found == {"vae_lightning.cli"}


def imported_test_files(path: Path) -> set[str]:
    """The test files (``test_*``) that ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
    return {name for name in found if name.split(".")[-1].startswith("test_")}


def test_no_test_file_imports_another(tmp_path):
    """Test files share code through helpers.py and conftest.py only."""
    tests = Path(__file__).parent
    offenders = {p.name: sorted(imported_test_files(p)) for p in tests.glob("test_*.py")}
    assert not {name: found for name, found in offenders.items() if found}
    (tmp_path / "test_a.py").write_text("from test_b import x\nimport tests.test_c\nfrom tests import test_d\n")
    assert imported_test_files(tmp_path / "test_a.py") == {"test_b", "tests.test_c", "tests.test_d"}
