"""The tree is the architecture: each package says what it holds and may import, and does."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(
    path.parent for path in (ROOT / "app").rglob("__init__.py") if "static" not in path.parts
)


@pytest.mark.parametrize("package", PACKAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_each_package_opens_with_what_it_holds_and_may_import(package):
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
    assert docstring, f"{package.relative_to(ROOT)} has no docstring"
    if package.name != "app":
        assert "May import" in docstring, f"{package.relative_to(ROOT)} does not say"


def test_imports_follow_the_layers_without_a_circle():
    # pyproject.toml's contracts: adapters -> core -> runtime -> operations, the two
    # adapters independent, no import of training from the app, no circle.
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
