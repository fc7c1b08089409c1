"""What the package's structure promises: the WebUI only inside lib_pinning.webui, and no import circles."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lib_pinning"


def imports(path: Path) -> set[str]:
    """The lib_pinning modules (and `modules`, A1111's) that a file imports, at any depth of the file."""
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                targets = [f"{base}.{node.module}"] if node.module else [f"{base}.{a.name}" for a in node.names]
            else:
                targets = [node.module or ""]
            found.update(targets)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def modules() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        graph[".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = imports(path)
    return graph


def test_only_the_webui_glue_imports_the_webuis_modules():
    for name, imported in modules().items():
        if not name.startswith("lib_pinning.webui"):
            assert not any(i == "modules" or i.startswith("modules.") or i == "gradio" for i in imported), name


def test_the_package_has_no_import_circles():
    graph = modules()
    edges = {name: {i for i in imported if i in graph} for name, imported in graph.items()}
    done, path = set(), []

    def visit(name):
        assert name not in path, " -> ".join(path[path.index(name):] + [name])
        if name in done:
            return
        path.append(name)
        for other in edges[name]:
            visit(other)
        path.pop()
        done.add(name)

    for name in edges:
        visit(name)
