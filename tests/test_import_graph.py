"""The import graph of adapterkit has no cycle: every `import` / `from ... import` of an
adapterkit module, at the top of a file or inside a function, is an edge. (Registries load their
built-in plugins by module name: transfer algorithms, CLI command groups, compositions.)"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "adapterkit"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _module_of(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the adapterkit modules it imports (the most specific module each import names)."""
    modules, graph = _modules(), {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {_module_of(a.name, modules) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                edges |= {_module_of(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base, modules)
                          for a in node.names}
        graph[name] = {e for e in edges if e and e != name and e.startswith("adapterkit")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    colour, stack = {}, []

    def visit(node: str) -> list[str] | None:
        colour[node] = "grey"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == "grey":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in colour and (found := visit(nxt)):
                return found
        colour[node] = "black"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in colour and (found := visit(node)):
            return found
    return None


def test_the_checker_finds_a_cycle_through_function_level_imports():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    assert "adapterkit.transfer.kd_losses" in graph["adapterkit.transfer.kd"]  # a top-level import
    assert "adapterkit.transfer.metakd" in graph["adapterkit.transfer.distill"]  # one inside a function


def test_adapterkit_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_moved_modules_answer_to_their_old_names():
    """sites.py moved into sharing/ and the GLUE metrics into data/: the old import paths give the same modules."""
    import adapterkit.data.metrics
    import adapterkit.metrics
    import adapterkit.sharing.sites
    import adapterkit.sites
    from adapterkit.sites import find_sites

    assert adapterkit.sites is adapterkit.sharing.sites and adapterkit.metrics is adapterkit.data.metrics
    assert find_sites is adapterkit.sharing.sites.find_sites
