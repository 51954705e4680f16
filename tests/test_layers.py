"""The layers' imports: the upstream and runtime layers know nothing of Flask or of the web and ops layers;
errors, config and jsontext know nothing of the layers above them."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "flaskapp"

# layer -> the flaskapp subpackages/modules it may not import
FORBIDDEN = {
    "upstream": ("web", "ops"),
    "runtime": ("web", "ops", "upstream"),
    "errors.py": ("web", "ops", "upstream", "runtime"),
    "config.py": ("web", "ops", "upstream", "runtime"),
    "jsontext.py": ("web", "ops", "upstream", "runtime"),
}


def test_upstream_and_runtime_import_no_framework():
    modules = [f"flaskapp.{layer}.{path.stem}" for layer in ("upstream", "runtime")
               for path in sorted((PACKAGE / layer).glob("*.py")) if path.stem != "__init__"]
    code = ("import sys\n" + "".join(f"import {name}\n" for name in modules)
            + "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"{out.stdout.strip()} imported by {modules}"


def _flaskapp_imports(path: pathlib.Path) -> set[str]:
    """The flaskapp modules a file imports, absolute or relative, as dotted names under flaskapp."""
    package = list(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])  # e.g. ["flaskapp", "upstream"]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("flaskapp")}


def _files(layer: str) -> list[pathlib.Path]:
    target = PACKAGE / layer
    return sorted(target.glob("*.py")) if target.is_dir() else [target]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_from_the_layers_above_it(layer):
    bad = [f"{path.name}: {name}" for path in _files(layer) for name in sorted(_flaskapp_imports(path))
           if any(name == f"flaskapp.{above}" or name.startswith(f"flaskapp.{above}.")
                  for above in FORBIDDEN[layer])]
    assert not bad


def test_the_check_sees_relative_imports():
    imports = _flaskapp_imports(PACKAGE / "upstream" / "client.py")
    assert "flaskapp.errors" in imports and "flaskapp.runtime.guard" in imports
