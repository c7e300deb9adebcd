"""The test suite's layout: shared code lives in tests/support (or a conftest.py fixture), so no
module imports a test module, and product code never imports the tests."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ["api", "core", "workflows", "activities", "cli.py", "worker.py"]


def python_files(*names: str) -> Iterator[Path]:
    for name in names:
        path = ROOT / name
        if path.is_file():
            yield path
        else:
            yield from sorted(p for p in path.rglob("*.py") if "migrations" not in p.parts)


def imported_modules(path: Path) -> Iterator[str]:
    """Every module `path` imports, at any depth (imports inside functions count too)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            # `from tests.e2e import test_setup` imports a test module too.
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_no_module_imports_a_test_module() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in python_files("tests", "bench")
        for module in imported_modules(path)
        if module.split(".")[0] == "tests" and module.rsplit(".", 1)[-1].startswith("test_")
    ]
    assert offenders == [], "move what is shared to tests/support or a conftest.py fixture"


def test_no_module_imports_a_conftest() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in python_files("tests", "bench")
        for module in imported_modules(path)
        if module.split(".")[0] == "tests" and module.rsplit(".", 1)[-1] == "conftest"
    ]
    assert offenders == [], "pytest loads conftest.py itself; shared code goes to tests/support"


def test_bench_imports_only_the_test_support() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in python_files("bench")
        for module in imported_modules(path)
        if module.split(".")[0] == "tests" and not module.startswith(("tests.support", "tests.support."))
    ]
    assert offenders == []


def test_product_code_never_imports_the_tests() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in python_files(*PRODUCT)
        for module in imported_modules(path)
        if module.split(".")[0] == "tests"
    ]
    assert offenders == []


def test_every_test_folder_is_a_package() -> None:
    """Test files share basenames across folders (tests/setup/test_pages.py,
    tests/reset/test_pages.py), which pytest allows only inside packages."""
    folders = {p.parent for p in (ROOT / "tests").rglob("*.py") if "__pycache__" not in p.parts}
    assert sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists()) == []


def test_the_layout_check_sees_an_offender(tmp_path: Path) -> None:
    """The import scan itself: a test-module import, plain or nested in a function, is seen."""
    module = tmp_path / "example.py"
    module.write_text(
        "from tests.e2e import test_setup\ndef f():\n    from tests.setup.test_pages import Browser\n",
        encoding="utf-8",
    )
    assert {"tests.e2e.test_setup", "tests.setup.test_pages"} <= set(imported_modules(module))
