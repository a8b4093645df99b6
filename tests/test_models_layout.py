"""The model build's modules (models/) import in one direction: no circles.

Lazy imports (inside a function) count: a circle closed at call time is
still two modules that each need the other. models/ may import the
service's package; the service never imports models/.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
MAX_MODULE_LINES = 400


def imported_models(path: Path) -> set[str]:
    """The models/ modules a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("models."))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module == "models":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("models."):
                found.add(node.module.split(".")[1])
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {path.stem for path in MODELS.glob("*.py")}
    return {path.stem: imported_models(path) & modules - {path.stem} for path in MODELS.glob("*.py")}


def test_the_graph_sees_lazy_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from models import a\n\ndef f():\n    from models.b import x\n    import models.c\n")
    assert imported_models(probe) == {"a", "b", "c"}


def test_no_import_circles_in_models():
    graph = import_graph()
    assert {"build", "manifest", "fp32", "reference", "measure"} <= set(graph)
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        raise AssertionError("import circle: " + " -> ".join(reversed(error.args[1]))) from None


def _imports_models(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        if any(name == "models" or name.startswith("models.") for name in names):
            return True
    return False


def test_the_service_never_imports_the_model_build():
    offenders = [str(path.relative_to(ROOT)) for path in (ROOT / "isnet_wsgi").rglob("*.py")
                 if _imports_models(path)]
    assert offenders == []


def test_no_models_module_is_longer_than_a_reader_holds():
    too_long = {path.name: lines for path in MODELS.glob("*.py")
                if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert too_long == {}
