"""The package's layout is its architecture: an upload's data flows down it.

Each module may import only from its own layer or the layers below it, no two
modules import each other (directly or round a circle, lazy imports
included), and no module grows past what one reader holds in mind.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "isnet_wsgi"

# Bottom to top. A module imports from its own layer or one listed before it.
LAYERS = (
    ("__init__", "runtime", "numerals", "file_names"),
    ("config",),
    ("image",),
    ("model",),
    ("options",),
    ("pipeline",),
    ("web", "cli"),
    ("server", "service"),
    ("wsgi", "__main__"),
)
MAX_MODULE_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every isnet_wsgi module this file imports, at the top or inside a function."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("isnet_wsgi"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("isnet_wsgi"):
                base = node.module
            else:
                continue
            found.add(base)
            # "from .runtime import memory" imports the module runtime.memory.
            found.update(f"{base}.{alias.name}" for alias in node.names
                         if (PACKAGE.parent / f"{base}.{alias.name}".replace(".", "/")).with_suffix(".py").exists()
                         or (PACKAGE.parent / f"{base}.{alias.name}".replace(".", "/")).is_dir())
    return found


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for index, layer in enumerate(LAYERS):
        if top in layer:
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_layout.py; add it where it belongs")


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {imported for imported in imported_modules(path)
                   if imported in modules and imported != name}
            for name, path in modules.items()}


def test_every_import_points_down_the_layers():
    upward = [f"{module} imports {imported}"
              for module, imports in import_graph().items()
              for imported in imports if layer_of(imported) > layer_of(module)]
    assert upward == []


def test_no_import_circles():
    graph = import_graph()
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        if module in trail:
            raise AssertionError("import circle: " + " -> ".join(trail[trail.index(module):] + (module,)))
        if module in done:
            return
        for imported in graph[module]:
            visit(imported, trail + (module,))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_no_module_is_longer_than_a_reader_holds():
    too_long = {str(path.relative_to(PACKAGE)): lines for path in PACKAGE.rglob("*.py")
                if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert too_long == {}
