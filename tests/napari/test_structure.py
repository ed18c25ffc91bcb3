"""The napari package's structure: every module says its role in an opening docstring, and no napari module
imports another that (directly or through others) imports it back (run-time imports at module level or inside
functions; imports only for type checking left out)."""

from __future__ import annotations

import ast
from pathlib import Path

import napari_seg_explain

ROOT = Path(napari_seg_explain.__file__).parent
PACKAGE = "napari_seg_explain"
NAPARI = ROOT / "napari"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports at run time (at module level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                out.update(a.name for a in child.names if a.name.startswith(PACKAGE))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    mod = f"{base}.{child.module}" if child.module else base
                else:
                    mod = child.module or ""
                if not mod.startswith(PACKAGE):
                    continue
                for a in child.names:  # 'from . import inputs' imports a submodule
                    out.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod)
            visit(child)

    visit(tree)
    return {m for m in out if m in known and m != here}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    known = set(files)
    return {name: _imports(path, known) for name, path in files.items()}


def test_every_napari_module_opens_with_a_docstring():
    missing = [str(p.relative_to(ROOT)) for p in NAPARI.rglob("*.py")
               if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert not missing, f"modules without an opening docstring: {missing}"


def test_no_import_cycles_in_the_napari_package():
    napari_package = f"{PACKAGE}.napari"
    graph = {m: {n for n in deps if n.startswith(napari_package)} for m, deps in _graph().items()
             if m.startswith(napari_package)}
    cycles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    stack: list[str] = []

    def walk(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                walk(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_napari_modules_reach_explainers_only_through_the_registry():
    """No napari module imports a method's module: methods are found through the registry."""
    graph = _graph()
    methods = {f"{PACKAGE}.core.explainers.{m}" for m in ("pdcr", "misure")}
    used = {m: graph[m] & methods for m in graph if m.startswith(f"{PACKAGE}.napari")}
    assert not {m: u for m, u in used.items() if u}
